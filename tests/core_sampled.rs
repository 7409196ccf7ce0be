//! Default sampling (512 KiB mean interval): estimates must be unbiased.

mod common;

use std::hint::black_box;

use common::*;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

const GIB: usize = 1 << 30;

/// The tests change the global sample interval, so they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[inline(never)]
fn leak_256() -> Box<[u8; 256]> {
    black_box(Box::new([1u8; 256]))
}

#[inline(never)]
fn churn_256() -> Box<[u8; 256]> {
    black_box(Box::new([2u8; 256]))
}

#[test]
fn a_1_gib_leak_of_256_byte_blocks_is_estimated_within_10_percent() {
    let _s = serial();
    assert_eq!(
        leakscope::snapshot().sample_interval(),
        leakscope::DEFAULT_SAMPLE_INTERVAL
    );
    let n = GIB / 256;
    let mut kept = Vec::with_capacity(n);
    for i in 0..n {
        kept.push(leak_256());
        // The same volume at another site, all freed: should read ~0 live.
        let t = churn_256();
        if i % 2 == 0 {
            black_box(&t);
        }
    }
    let snap = leakscope::snapshot();
    let est = live_bytes_through(&snap, "leak_256") as f64;
    let rel = (est - GIB as f64) / GIB as f64;
    assert!(
        rel.abs() < 0.10,
        "estimate {est} is {:.1}% off",
        rel * 100.0
    );
    let est_allocs = live_allocs_through(&snap, "leak_256") as f64;
    let rel_n = (est_allocs - n as f64) / n as f64;
    assert!(
        rel_n.abs() < 0.10,
        "allocation estimate {est_allocs} is {:.1}% off",
        rel_n * 100.0
    );

    let churn_live = live_bytes_through(&snap, "churn_256");
    let churn_total: u64 = sites_through(&snap, "churn_256")
        .map(|s| s.total_bytes())
        .sum();
    assert!(
        churn_live < (GIB / 100) as u64,
        "freed site shows {churn_live} live"
    );
    let rel_t = (churn_total as f64 - GIB as f64) / GIB as f64;
    assert!(
        rel_t.abs() < 0.10,
        "churn total {churn_total} is {:.1}% off",
        rel_t * 100.0
    );

    drop(kept);
    let after = leakscope::snapshot();
    assert_eq!(
        live_bytes_through(&after, "leak_256"),
        0,
        "every sampled block was released"
    );
    // The tracker's own memory stays small next to the 1 GiB it watched.
    assert!(
        snap.tracker_bytes() < (GIB / 100) as u64,
        "tracker holds {}",
        snap.tracker_bytes()
    );
}

#[inline(never)]
fn big_block(n: usize) -> Vec<u8> {
    black_box(Vec::with_capacity(n))
}

#[test]
fn changing_the_interval_keeps_old_blocks_balanced() {
    let _s = serial();
    // Blocks recorded under one interval are released correctly under another.
    // Blocks of 8x the interval are sampled with probability 1 - e^-8, so the
    // estimate below is all but exact and the test does not flake.
    let a: Vec<Vec<u8>> = (0..16).map(|_| big_block(4 << 20)).collect();
    leakscope::set_sample_interval(4096).unwrap();
    let b: Vec<Vec<u8>> = (0..64).map(|_| big_block(1 << 16)).collect();
    let mid = live_bytes_through(&leakscope::snapshot(), "big_block");
    let truth = (16u64 * (4 << 20)) + (64u64 << 16);
    let rel = (mid as f64 - truth as f64) / truth as f64;
    assert!(rel.abs() < 0.10, "{mid} vs {truth}");
    leakscope::set_sample_interval(leakscope::DEFAULT_SAMPLE_INTERVAL).unwrap();
    drop(a);
    drop(b);
    assert_eq!(live_bytes_through(&leakscope::snapshot(), "big_block"), 0);
}

#[inline(never)]
fn worker_box_100() -> Box<[u8; 100]> {
    black_box(Box::new([5u8; 100]))
}

#[test]
fn an_interval_change_reaches_a_running_thread_at_its_next_allocation() {
    let _s = serial();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // Allocate a little, so this thread has drawn a countdown under the
        // default interval (about 512 KiB to go), then wait.
        let warm: Vec<Box<[u8; 64]>> = (0..16).map(|_| black_box(Box::new([0u8; 64]))).collect();
        drop(warm);
        ready_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        // Under interval 1 this block must be recorded, with its exact size.
        // Had the change waited for this thread's countdown to run out, it
        // would be recorded only with probability of about 100 / 512 KiB.
        worker_box_100()
    });
    ready_rx.recv().unwrap();
    leakscope::set_sample_interval(1).unwrap();
    go_tx.send(()).unwrap();
    let kept = worker.join().unwrap();
    let snap = leakscope::snapshot();
    leakscope::set_sample_interval(leakscope::DEFAULT_SAMPLE_INTERVAL).unwrap();
    assert_eq!(live_bytes_through(&snap, "worker_box_100"), 100);
    assert_eq!(live_allocs_through(&snap, "worker_box_100"), 1);
    drop(kept);
}
