//! Consistent snapshots under load: four threads allocate (keeping the
//! blocks of 2048 sites, and handing others to the next thread to free)
//! while two more take snapshots. In no snapshot may a site
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

/// `stress_block` at one of `2^depth` distinct stacks picked by `path`, so
/// that sites keep appearing: a fresh site holds about as much live as it
/// ever allocated, where a snapshot that reads its counters and its live
/// blocks out of order shows live > total.
#[inline(never)]
fn fresh(path: u64, depth: u32, n: usize) -> Vec<u8> {
    if depth == 0 {
        return stress_block(n);
    }
    if path & 1 == 0 {
        fresh_l(path >> 1, depth - 1, n)
    } else {
        fresh_r(path >> 1, depth - 1, n)
    }
}

#[inline(never)]
fn fresh_l(path: u64, depth: u32, n: usize) -> Vec<u8> {
    black_box(fresh(path, depth, n))
}

#[inline(never)]
fn fresh_r(path: u64, depth: u32, n: usize) -> Vec<u8> {
    black_box(fresh(path, depth, n))
}

static SNAPS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn no_snapshot_shows_live_above_total() {
    static STOP: AtomicBool = AtomicBool::new(false);
    static BAD: AtomicUsize = AtomicUsize::new(0);
    // A ring of four workers: each sends blocks to the next, which frees them.
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel::<Vec<u8>>()).unzip();
    let mut rxs: Vec<Option<mpsc::Receiver<Vec<u8>>>> = rxs.into_iter().map(Some).collect();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let tx = txs[(t + 1) % 4].clone();
            let rx = rxs[t].take().unwrap();
            thread::spawn(move || {
                let mut kept = Vec::new();
                // At least 20 000 rounds, and on until the checkers have
                // taken enough snapshots (a snapshot that symbolizes new
                // stacks is slow in a debug build).
                let mut i = 0usize;
                while i < 20_000 || (SNAPS.load(Relaxed) < 12 && i < 2_000_000) {
                    // Kept (the first 20 000; later ones replace them): each
                    // of these sites holds most of what it ever allocated,
                    // so any block a snapshot sees but did not count shows
                    // as live > total.
                    let b = fresh((t * 512 + i % 512) as u64, 11, 8 + (i * 13 + t) % 300);
                    if kept.len() < 20_000 {
                        kept.push(b);
                    } else {
                        kept[i % 20_000] = b;
                    }
                    i += 1;
                    // Freed on the next thread.
                    let _ = tx.send(stress_block(8 + (i * 7 + t) % 500));
                    while let Ok(v) = rx.try_recv() {
                        drop(v);
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
    assert!(snaps > 5, "only {snaps} snapshots taken");
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
}
