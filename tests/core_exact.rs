//! Exact mode (sample interval 1): every figure must equal the truth.

mod common;

use std::hint::black_box;
use std::sync::Mutex;

use common::*;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

/// Serialises the tests of this file: they compare global totals.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[inline(never)]
fn make_block(size: usize) -> Vec<u8> {
    black_box(Vec::with_capacity(size))
}

#[inline(never)]
fn other_block(size: usize) -> Box<[u64]> {
    black_box(vec![7u64; size].into_boxed_slice())
}

#[test]
fn live_bytes_per_site_equal_the_truth() {
    let _s = serial();
    let start = leakscope::snapshot();
    let sizes: Vec<usize> = (1..=200).map(|i| i * 37 % 1000 + 1).collect();
    let mut kept = Vec::new();
    let mut kept_other = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let b = make_block(n);
        if i % 3 != 0 {
            kept.push(b); // a third are freed right away
        }
        kept_other.push(other_block(n % 17 + 1));
    }
    let snap = leakscope::snapshot();
    let truth: u64 = kept.iter().map(|v| v.capacity() as u64).sum();
    assert_eq!(live_bytes_through(&snap, "make_block"), truth);
    assert_eq!(live_allocs_through(&snap, "make_block"), kept.len() as u64);
    let truth_other: u64 = kept_other.iter().map(|b| (b.len() * 8) as u64).sum();
    assert_eq!(live_bytes_through(&snap, "other_block"), truth_other);
    // Totals count the freed third too.
    let grown = snap.diff(&start);
    let total: i64 = grown
        .sites()
        .iter()
        .filter(|d| site_has(d.frames(), "make_block"))
        .map(|d| d.total_bytes_delta())
        .sum();
    assert_eq!(total as u64, sizes.iter().map(|&n| n as u64).sum::<u64>());
    drop(kept);
    drop(kept_other);
    let after = leakscope::snapshot();
    assert_eq!(live_bytes_through(&after, "make_block"), 0);
    assert_eq!(live_bytes_through(&after, "other_block"), 0);
    let diff = after.diff(&snap);
    let shrink: i64 = diff
        .sites()
        .iter()
        .filter(|d| site_has(d.frames(), "make_block"))
        .map(|d| d.live_bytes_delta())
        .sum();
    assert_eq!(shrink, -(truth as i64));
}

#[inline(never)]
fn grow_vec(target: usize) -> Vec<u8> {
    let mut v = Vec::new();
    while v.len() < target {
        v.push(1u8); // grows by realloc, charged to this stack
    }
    v
}

#[test]
fn realloc_growth_to_64_mib_is_charged_to_the_pushing_code() {
    let _s = serial();
    let v = grow_vec(64 << 20);
    let snap = leakscope::snapshot();
    assert_eq!(live_bytes_through(&snap, "grow_vec"), v.capacity() as u64);
    assert_eq!(live_allocs_through(&snap, "grow_vec"), 1);
    // Every realloc was an allocation of the new block at its own stack.
    let allocs: u64 = sites_through(&snap, "grow_vec")
        .map(|s| s.total_allocs())
        .sum();
    assert!(
        allocs >= 20,
        "doubling from 8 to 64 MiB takes >= 20 reallocs, saw {allocs}"
    );
    drop(v);
    assert_eq!(live_bytes_through(&leakscope::snapshot(), "grow_vec"), 0);
}

#[inline(never)]
fn shrink_then_keep() -> Vec<u32> {
    let mut v: Vec<u32> = (0..10_000).collect();
    v.truncate(10);
    v.shrink_to_fit();
    v
}

#[test]
fn shrinking_realloc_is_exact() {
    let _s = serial();
    let v = shrink_then_keep();
    let snap = leakscope::snapshot();
    assert_eq!(
        live_bytes_through(&snap, "shrink_then_keep"),
        (v.capacity() * 4) as u64
    );
}

#[inline(never)]
fn zeroed_block(n: usize) -> Vec<u64> {
    vec![0u64; n]
}

#[test]
fn alloc_zeroed_is_recorded_and_zeroed() {
    let _s = serial();
    let v = zeroed_block(5000);
    assert!(v.iter().all(|&x| x == 0));
    let snap = leakscope::snapshot();
    assert_eq!(live_bytes_through(&snap, "zeroed_block"), 40_000);
}

#[test]
fn frames_are_trimmed_and_symbolized() {
    let _s = serial();
    let b = make_block(4321);
    let snap = leakscope::snapshot();
    let site = sites_through(&snap, "make_block")
        .find(|s| s.live_bytes() == 4321)
        .expect("site of make_block");
    let frames = site.frames();
    let top = &frames[0];
    assert!(
        !top.function().contains("leakscope"),
        "tracker frames trimmed: {frames:#?}"
    );
    assert!(
        !top.function().contains("__rust_alloc"),
        "shims trimmed: {frames:#?}"
    );
    assert!(
        !top.function().contains("::h"),
        "hash stripped: {}",
        top.function()
    );
    let user = frames.iter().find(|f| !f.is_std_library()).unwrap();
    assert!(user.function().ends_with("make_block"), "{frames:#?}");
    assert!(
        user.file().is_some_and(|f| f.ends_with("core_exact.rs")),
        "{:?}",
        user.file()
    );
    assert!(user.line().is_some());
    let last = frames.last().unwrap();
    assert!(
        !last.function().contains("lang_start")
            && !last.function().contains("__rust_begin_short_backtrace"),
        "{frames:#?}"
    );
    // The report names it.
    let text = snap.to_string();
    assert!(text.contains("make_block"), "{text}");
    drop(b);
}

#[test]
fn tracker_allocations_never_show_up() {
    let _s = serial();
    // Snapshots, symbolization and diffs allocate; none of it may be a site,
    // and none of it may recurse.
    let mut snaps = Vec::new();
    for _ in 0..5 {
        let s = leakscope::snapshot();
        for site in s.sites() {
            let _ = site.frames();
        }
        let _ = s.to_string();
        snaps.push(s);
    }
    let last = leakscope::snapshot();
    for site in last.sites() {
        for f in site.frames() {
            assert!(
                !f.function().starts_with("leakscope::"),
                "tracker site: {:#?}",
                site.frames()
            );
        }
    }
    assert!(last.tracker_bytes() > 0);
}

#[test]
fn unrecorded_blocks_are_ignored_when_freed() {
    let _s = serial();
    // Blocks allocated while sampling is effectively off are not recorded;
    // freeing them after exact mode is back must change nothing.
    leakscope::set_sample_interval(1 << 62).unwrap();
    let blocks: Vec<Vec<u8>> = (0..100).map(|i| make_block(100 + i)).collect();
    leakscope::set_sample_interval(1).unwrap();
    let before = live_bytes_through(&leakscope::snapshot(), "make_block");
    drop(blocks);
    let after = live_bytes_through(&leakscope::snapshot(), "make_block");
    assert_eq!(before, after);
}

#[test]
fn zero_interval_is_an_error() {
    let err = leakscope::set_sample_interval(0).unwrap_err();
    assert!(err.to_string().contains("interval"));
    let _: &dyn std::error::Error = &err;
}
