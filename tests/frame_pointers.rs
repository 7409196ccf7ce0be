//! The frame-pointer unwinder in exact mode: sites name the allocating
//! function when the build has frame pointers, and in every build the walk
//! stays bounded, never crashes, and the books balance.
//!
//! The repository's `.cargo/config.toml` builds with
//! `-C force-frame-pointers=yes`; a `RUSTFLAGS` variable replaces that, so the
//! test checks at run time whether frame pointers are in effect and only then
//! insists on function names.

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
/// returns the frames of the site holding the blocks (only looked for when
/// frame pointers are in use: without them, every stack is the same short
/// one and all blocks share a site with their `Vec`).
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
    if !frame_pointers_in_use() {
        return Vec::new();
    }
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
}

fn sites_name_the_allocating_function() {
    let frames = marked_site_frames(100);
    if frame_pointers_in_use() {
        assert!(
            frames.iter().any(|f| f.contains("allocate_marked")),
            "{frames:#?}"
        );
        assert!(
            frames.iter().any(|f| f.contains("marked_site_frames")),
            "the caller is found too: {frames:#?}"
        );
    } else {
        eprintln!("built without frame pointers: only bounds and balance are checked");
    }
}

fn spawned_threads_walk_their_own_stack() {
    let frames = std::thread::spawn(|| marked_site_frames(10))
        .join()
        .unwrap();
    if frame_pointers_in_use() {
        assert!(
            frames.iter().any(|f| f.contains("allocate_marked")),
            "{frames:#?}"
        );
    }
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
    if frame_pointers_in_use() {
        assert!(recursive >= 32, "the walk went deep: {recursive}");
    }
}
