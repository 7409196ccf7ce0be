//! A full site table: `max_sites(1000)` and thousands to a million distinct
//! stacks. At most 1001 sites (the cap and `[other]`), the folded stacks
//! counted approximately, the books balanced, and the process does not grow
//! with the number of stacks past the cap.

mod common;

use std::hint::black_box;

use common::*;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system()
    .sample_interval(1)
    .max_sites(1000)
    .unwinder(leakscope::Unwinder::FramePointers);

/// One of `2^depth` distinct stacks, picked by the bits of `path` (see
/// `common/fork_stress.rs`); allocates and returns a block there.
#[inline(never)]
fn mx_step(path: u64, depth: u32) -> Vec<u8> {
    if depth == 0 {
        return black_box(vec![7u8; 24]);
    }
    if path & 1 == 0 {
        mx_left(path >> 1, depth - 1)
    } else {
        mx_right(path >> 1, depth - 1)
    }
}

#[inline(never)]
fn mx_left(path: u64, depth: u32) -> Vec<u8> {
    black_box(mx_step(path, depth))
}

#[inline(never)]
fn mx_right(path: u64, depth: u32) -> Vec<u8> {
    black_box(mx_step(path, depth))
}

fn other_site(snap: &leakscope::Snapshot) -> Option<&leakscope::Site> {
    snap.sites().iter().find(|s| {
        s.frames()
            .first()
            .is_some_and(|f| f.function() == "[other]")
    })
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[test]
fn a_full_table_folds_new_stacks_into_other_and_stops_growing() {
    settle();
    let base = leakscope::snapshot();
    let base_other = other_site(&base).map_or(0, |s| s.live_bytes());
    // 4096 distinct stacks, all live at once.
    let kept: Vec<Vec<u8>> = (0..4096u64).map(|p| mx_step(p, 12)).collect();
    let full = leakscope::snapshot();
    assert!(full.sites().len() <= 1001, "{} sites", full.sites().len());
    let other = other_site(&full).expect("an [other] site");
    assert!(
        other.live_allocs() >= 3000,
        "[other] holds {} blocks",
        other.live_allocs()
    );
    let folded = full.folded_stacks();
    assert!((2800..=4600).contains(&folded), "folded estimate {folded}");
    assert!(full.to_string().contains("charged to [other]"), "{full}");
    drop(kept);
    settle();
    let after = leakscope::snapshot();
    assert_eq!(live_bytes_through(&after, "mx_step"), 0);
    assert_eq!(other_site(&after).map_or(0, |s| s.live_bytes()), base_other);

    // A million more distinct stacks: nothing past the cap may grow.
    let (rss0, tracker0) = (rss(), after.tracker_bytes());
    for p in 0..(1u64 << 20) {
        black_box(mx_step(p, 20));
    }
    let end = leakscope::snapshot();
    let (rss1, tracker1) = (rss(), end.tracker_bytes());
    let grew = rss1.saturating_sub(rss0);
    eprintln!(
        "after 2^20 more stacks: RSS +{} KiB, tracker_bytes +{} KiB, folded ~{}",
        grew / 1024,
        tracker1.saturating_sub(tracker0) / 1024,
        end.folded_stacks()
    );
    assert!(grew < 4 << 20, "RSS grew by {grew} bytes past the cap");
    assert!(end.sites().len() <= 1001);
    assert!(
        end.folded_stacks() > 500_000,
        "folded estimate {}",
        end.folded_stacks()
    );
}
