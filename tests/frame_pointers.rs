//! The frame-pointer unwinder in exact mode: sites name the allocating
//! function, the walk stays bounded and never crashes, and the books balance,
//! in every build: without frame pointers the tracker falls back to
//! `backtrace` (and says so in the report header).
//!
//! The repository's `.cargo/config.toml` builds with
//! `-C force-frame-pointers=yes`; a `RUSTFLAGS` variable replaces that, so the
//! test checks at run time whether frame pointers are in effect to know
//! whether the fallback must have happened.

mod common;

use std::hint::black_box;

use common::settle;
use leakscope::{Tracker, Unwinder};

#[global_allocator]
static GLOBAL: Tracker = Tracker::system()
    .sample_interval(1)
    .unwinder(Unwinder::FramePointers);

/// A size nothing else in the process allocates.
const MARK: usize = 4093;

#[inline(never)]
fn allocate_marked(n: usize) -> Vec<Box<[u8]>> {
    // Never a zero fill: `vec![0; n]` takes the `alloc_zeroed` path, another site.
    (0..n)
        .map(|i| black_box(vec![i as u8 | 1; MARK].into_boxed_slice()))
        .collect()
}

#[inline(never)]
fn recurse_then_allocate(depth: usize) -> Box<[u8]> {
    if depth == 0 {
        black_box(vec![7u8; MARK + 1].into_boxed_slice())
    } else {
        black_box(recurse_then_allocate(black_box(depth - 1)))
    }
}

/// Whether this test binary maintains frame pointers: a callee's frame
/// pointer must point into its caller's frame with a return address into the
/// caller's code. Reads only the live stack between the current stack pointer
/// and a local of the caller.
#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_os = "linux"
))]
fn frame_pointers_in_use() -> bool {
    #[inline(never)]
    fn caller() -> bool {
        let local = black_box(0u64);
        black_box(callee(black_box(&local as *const u64 as usize)))
    }
    #[inline(never)]
    fn callee(caller_local: usize) -> bool {
        let (fp, sp): (usize, usize);
        // SAFETY: copies two registers; no memory access.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::asm!("mov {}, rbp", "mov {}, rsp", out(reg) fp, out(reg) sp, options(nomem, nostack));
        }
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        unsafe {
            std::arch::asm!("mov {}, x29", "mov {}, sp", out(reg) fp, out(reg) sp, options(nomem, nostack));
        }
        if fp < sp || fp % 8 != 0 || fp + 16 > caller_local {
            return false;
        }
        // SAFETY: `fp .. fp + 16` lies between the stack pointer and a live
        // local of our caller: mapped stack memory of this thread.
        let ret = unsafe { std::ptr::read_volatile((fp + 8) as *const usize) };
        let start = caller as *const () as usize;
        ret > start && ret < start + 4096
    }
    caller()
}

#[cfg(not(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_os = "linux"
)))]
fn frame_pointers_in_use() -> bool {
    // The unwinder falls back to `backtrace` here, which always names frames.
    true
}

fn names(frames: &[leakscope::Frame]) -> Vec<String> {
    frames.iter().map(|f| f.function().to_string()).collect()
}

/// Allocates `n` marked blocks, checks that the books balance exactly, and
/// returns the frames of the site holding the blocks.
fn marked_site_frames(n: usize) -> Vec<String> {
    let before = leakscope::snapshot();
    let blocks = allocate_marked(n);
    let during = leakscope::snapshot();
    drop(blocks);
    let after = leakscope::snapshot();
    // Symbolization and the checks below allocate: only after the last
    // snapshot.
    let grown = during.diff(&before);
    // Exact mode: the marked blocks plus their `Vec` (n boxes of two words).
    let vec_bytes = (n * std::mem::size_of::<Box<[u8]>>()) as i64;
    assert_eq!(
        grown.live_bytes_delta(),
        (n * MARK) as i64 + vec_bytes,
        "{grown}"
    );
    let left = after.diff(&before);
    assert_eq!(
        left.live_bytes_delta(),
        0,
        "the books balance after the free:\n{left}"
    );
    let site = grown
        .sites()
        .iter()
        .find(|s| s.live_bytes_delta() == (n * MARK) as i64)
        .unwrap_or_else(|| panic!("no site holds exactly the marked bytes:\n{grown}"));
    assert_eq!(site.live_allocs_delta(), n as i64);
    names(site.frames())
}

/// One test function, so libtest runs no other thread that allocates while
/// the checks below diff whole-process snapshots.
#[test]
fn frame_pointer_unwinder() {
    settle();
    sites_name_the_allocating_function();
    spawned_threads_walk_their_own_stack();
    deep_stacks_are_capped();
    the_walk_is_trusted_exactly_when_frame_pointers_are_in_use();
}

/// The check of the first stacks against `backtrace` (see
/// `Unwinder::FramePointers`) keeps the walk in a build with frame pointers,
/// and gives it up without them; the report header says which.
/// (tests/release_builds.rs checks a release build without them.)
fn the_walk_is_trusted_exactly_when_frame_pointers_are_in_use() {
    let report = leakscope::snapshot().to_string();
    let header: Vec<&str> = report
        .lines()
        .take_while(|l| !l.trim_start().starts_with("live"))
        .collect();
    let fell_back = header
        .iter()
        .any(|l| l.starts_with("Note: built without frame pointers"));
    assert_eq!(fell_back, !frame_pointers_in_use(), "{header:#?}");
}

fn sites_name_the_allocating_function() {
    let frames = marked_site_frames(100);
    assert!(
        frames.iter().any(|f| f.contains("allocate_marked")),
        "{frames:#?}"
    );
    assert!(
        frames.iter().any(|f| f.contains("marked_site_frames")),
        "the caller is found too: {frames:#?}"
    );
}

fn spawned_threads_walk_their_own_stack() {
    let frames = std::thread::spawn(|| marked_site_frames(10))
        .join()
        .unwrap();
    assert!(
        frames.iter().any(|f| f.contains("allocate_marked")),
        "{frames:#?}"
    );
}

fn deep_stacks_are_capped() {
    let before = leakscope::snapshot();
    let block = recurse_then_allocate(500);
    let after = leakscope::snapshot();
    let diff = after.diff(&before);
    let site = diff
        .sites()
        .iter()
        .find(|s| s.live_bytes_delta() == (MARK + 1) as i64)
        .unwrap_or_else(|| panic!("no site for the deep block:\n{diff}"));
    let frames = names(site.frames());
    drop(block);
    let recursive = frames
        .iter()
        .filter(|f| f.contains("recurse_then_allocate"))
        .count();
    // The raw stack holds at most 64 return addresses.
    assert!(recursive <= 64, "{recursive} recursive frames kept");
    assert!(recursive >= 32, "the walk went deep: {recursive}");
}
