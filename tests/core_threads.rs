//! Threads: frees on other threads, threads that exit while holding tracked
//! memory, several threads at once. The books must balance exactly.

mod common;

use std::hint::black_box;
use std::sync::mpsc;
use std::thread;

use common::*;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

#[inline(never)]
fn produce(n: usize) -> Vec<u8> {
    black_box(vec![3u8; n])
}

#[test]
fn allocated_here_freed_there_and_exited_threads() {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let producer = thread::spawn(move || {
        for i in 0..5000 {
            tx.send(produce(64 + i % 100)).unwrap();
        }
        // This thread exits still holding nothing; its blocks live on elsewhere.
    });
    let mut kept = Vec::new();
    for (i, v) in rx.iter().enumerate() {
        if i % 2 == 0 {
            kept.push(v);
        } // the other half is freed on this thread
    }
    producer.join().unwrap();
    // A thread that exits while its blocks are still live.
    let leaked_by_exited: Vec<Vec<u8>> =
        thread::spawn(|| (0..100).map(|_| produce(1000)).collect())
            .join()
            .unwrap();

    let snap = leakscope::snapshot();
    let truth: u64 = kept
        .iter()
        .chain(&leaked_by_exited)
        .map(|v| v.capacity() as u64)
        .sum();
    assert_eq!(live_bytes_through(&snap, "produce"), truth);
    assert_eq!(
        live_allocs_through(&snap, "produce"),
        (kept.len() + leaked_by_exited.len()) as u64
    );
    drop(kept);
    drop(leaked_by_exited);
    assert_eq!(live_bytes_through(&leakscope::snapshot(), "produce"), 0);
}

#[inline(never)]
fn worker_block(n: usize) -> Box<[u8]> {
    black_box(vec![5u8; n].into_boxed_slice())
}

#[test]
fn four_threads_at_once_balance_and_do_not_deadlock() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut keep = Vec::new();
                let mut kept_bytes = 0u64;
                for i in 0..20_000usize {
                    let b = worker_block(16 + (i * 7 + t) % 300);
                    if i % 10 == 0 {
                        kept_bytes += b.len() as u64;
                        keep.push(b);
                    }
                    if i % 1000 == 0 {
                        // Snapshots while others allocate.
                        black_box(leakscope::snapshot().live_bytes());
                    }
                }
                (keep, kept_bytes)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let truth: u64 = results.iter().map(|r| r.1).sum();
    let snap = leakscope::snapshot();
    assert_eq!(live_bytes_through(&snap, "worker_block"), truth);
    drop(results);
    assert_eq!(
        live_bytes_through(&leakscope::snapshot(), "worker_block"),
        0
    );
}

#[test]
fn many_short_threads_reuse_books() {
    let before = leakscope::snapshot().tracker_bytes();
    for _ in 0..200 {
        thread::spawn(|| black_box(produce(10))).join().unwrap();
    }
    let after = leakscope::snapshot().tracker_bytes();
    // Books are pooled: 200 sequential threads must not take 200 books.
    assert!(
        after < before + 4 * 1024 * 1024,
        "tracker grew from {before} to {after}"
    );
}
