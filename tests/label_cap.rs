//! More label sets than `Tracker::max_label_sets`: the sets past the cap
//! share one overflow set (`leakscope=other`), and the books still balance.

use std::hint::black_box;

mod common;

const CAP: usize = 8;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system()
    .sample_interval(1)
    .max_label_sets(CAP);

const SETS: usize = 40;
const BLOCK: usize = 512;

#[inline(never)]
fn labelled_block() -> Vec<u8> {
    black_box(vec![0x11_u8; BLOCK])
}

#[test]
fn sets_past_the_cap_go_to_the_overflow_set_and_the_books_balance() {
    // A recorded allocation first, so the tracker's cap is known.
    drop(black_box(vec![1u8; 8]));
    let tracker_before = leakscope::snapshot().tracker_bytes();
    let mut kept = Vec::with_capacity(SETS);
    for i in 0..SETS {
        let id = format!("req-{i}");
        kept.push(leakscope::with_labels(
            &[("req", id.as_str())],
            labelled_block,
        ));
    }
    let snap = leakscope::snapshot();
    let sites: Vec<_> = common::sites_through(&snap, "labelled_block").collect();
    let other = [("leakscope".to_string(), "other".to_string())];
    let own: Vec<_> = sites.iter().filter(|s| s.labels() != other).collect();
    let overflow: Vec<_> = sites.iter().filter(|s| s.labels() == other).collect();
    // At most CAP distinct sets (other tests' sets count too, none here).
    assert_eq!(
        own.len(),
        CAP,
        "{:?}",
        sites.iter().map(|s| s.labels()).collect::<Vec<_>>()
    );
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].live_bytes(), ((SETS - CAP) * BLOCK) as u64);
    // Books balance: every block is in exactly one site.
    let total: u64 = sites.iter().map(|s| s.live_bytes()).sum();
    assert_eq!(total, (SETS * BLOCK) as u64);
    let by_req = snap.by_label("req");
    let labelled: u64 = by_req
        .iter()
        .filter(|(v, _)| !v.is_empty())
        .map(|x| x.1)
        .sum();
    assert_eq!(labelled, (CAP * BLOCK) as u64, "{by_req:?}");
    assert_eq!(by_req.iter().map(|x| x.1).sum::<u64>(), snap.live_bytes());
    // The overflowed memory is under the `leakscope` key.
    let ls = snap.by_label("leakscope");
    assert_eq!(
        ls.iter().find(|(v, _)| v == "other").map(|x| x.1),
        Some(((SETS - CAP) * BLOCK) as u64)
    );
    // Interned sets are counted in the tracker's own memory.
    assert!(snap.tracker_bytes() > tracker_before);
    // Freed under the overflow set, the books go back to zero.
    drop(kept);
    let after = leakscope::snapshot();
    let left: u64 = common::sites_through(&after, "labelled_block")
        .map(|s| s.live_bytes())
        .sum();
    assert_eq!(left, 0);
}
