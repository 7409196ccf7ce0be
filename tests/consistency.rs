//! Consistent snapshots under load: four threads allocate and free each
//! other's blocks while two more take snapshots. In no snapshot may a site
//! hold more live bytes or allocations than it ever allocated; the sites sum
//! to the totals; a diff of a snapshot with itself is empty; and once every
//! block is freed the books balance.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::mpsc;
use std::thread;

use common::*;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

#[inline(never)]
fn stress_block(n: usize) -> Vec<u8> {
    black_box(vec![9u8; n])
}

#[test]
fn no_snapshot_shows_live_above_total() {
    static STOP: AtomicBool = AtomicBool::new(false);
    static BAD: AtomicUsize = AtomicUsize::new(0);
    static SNAPS: AtomicUsize = AtomicUsize::new(0);
    // A ring of four workers: each sends blocks to the next, which frees them.
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel::<Vec<u8>>()).unzip();
    let mut rxs: Vec<Option<mpsc::Receiver<Vec<u8>>>> = rxs.into_iter().map(Some).collect();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let tx = txs[(t + 1) % 4].clone();
            let rx = rxs[t].take().unwrap();
            thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0..30_000usize {
                    let b = stress_block(8 + (i * 13 + t) % 500);
                    if i % 3 == 0 {
                        let _ = tx.send(b);
                    } else if i % 7 == 0 {
                        kept.push(b);
                    }
                    while let Ok(v) = rx.try_recv() {
                        drop(v);
                    }
                    if kept.len() > 200 {
                        kept.drain(..100);
                    }
                }
                drop(tx);
                (rx, kept)
            })
        })
        .collect();
    drop(txs);
    let checkers: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(|| {
                while !STOP.load(Relaxed) {
                    let s = leakscope::snapshot();
                    SNAPS.fetch_add(1, Relaxed);
                    let over = s.sites().iter().any(|x| {
                        x.live_bytes() > x.total_bytes() || x.live_allocs() > x.total_allocs()
                    });
                    let sum_live: u64 = s.sites().iter().map(|x| x.live_bytes()).sum();
                    let sum_total: u64 = s.sites().iter().map(|x| x.total_bytes()).sum();
                    let self_diff = s.diff(&s);
                    if over
                        || sum_live != s.live_bytes()
                        || sum_total != s.total_bytes()
                        || !self_diff.sites().is_empty()
                        || self_diff.live_bytes_delta() != 0
                    {
                        BAD.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    let results: Vec<_> = workers.into_iter().map(|h| h.join().unwrap()).collect();
    STOP.store(true, Relaxed);
    for c in checkers {
        c.join().unwrap();
    }
    let snaps = SNAPS.load(Relaxed);
    assert!(snaps > 20, "only {snaps} snapshots taken");
    assert_eq!(BAD.load(Relaxed), 0, "inconsistent snapshots of {snaps}");
    // Drain what is still in flight, free everything: the books balance.
    for (rx, kept) in results {
        drop(kept);
        while let Ok(v) = rx.try_recv() {
            drop(v);
        }
    }
    let end = leakscope::snapshot();
    assert_eq!(live_bytes_through(&end, "stress_block"), 0);
    assert_eq!(live_allocs_through(&end, "stress_block"), 0);
    assert!(sites_through(&end, "stress_block").all(|s| s.total_allocs() >= 120_000 / 4));
}
