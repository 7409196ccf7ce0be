//! Exact mode against an independent counting oracle: a counting layer
//! *outside* the tracker sees exactly what the program asks for.

mod common;

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use common::*;

struct Counting(leakscope::Tracker);

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Set while a call is inside the tracker: allocations that come back in
    /// from there are the tracker's own (interning a new stack, say), which
    /// the program did not ask for, so the oracle does not count them.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

fn on() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false) && !INSIDE.try_with(Cell::get).unwrap_or(true)
}

fn inside<R>(f: impl FnOnce() -> R) -> R {
    let was = INSIDE.with(|i| i.replace(true));
    let r = f();
    INSIDE.with(|i| i.set(was));
    r
}

// SAFETY: forwards every call unchanged to the tracker.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if on() {
            ALLOCS.fetch_add(1, Relaxed);
            BYTES.fetch_add(l.size() as u64, Relaxed);
        }
        // SAFETY: caller's contract.
        inside(|| unsafe { self.0.alloc(l) })
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if on() {
            FREED_BYTES.fetch_add(l.size() as u64, Relaxed);
        }
        // SAFETY: caller's contract.
        inside(|| unsafe { self.0.dealloc(p, l) })
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if on() {
            ALLOCS.fetch_add(1, Relaxed);
            BYTES.fetch_add(n as u64, Relaxed);
            FREED_BYTES.fetch_add(l.size() as u64, Relaxed);
        }
        // SAFETY: caller's contract.
        inside(|| unsafe { self.0.realloc(p, l, n) })
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting(leakscope::Tracker::system().sample_interval(1));

#[inline(never)]
fn workload(seed: u64) -> HashMap<String, Vec<u64>> {
    let mut m = HashMap::new();
    for i in 0..2000u64 {
        let k = format!("key-{}", (i * 7919 + seed) % 500);
        m.entry(k).or_insert_with(Vec::new).push(i);
        if i % 3 == 0 {
            m.remove(&format!("key-{}", (i * 31) % 500));
        }
    }
    black_box(m)
}

#[test]
fn totals_equal_an_independent_counting_oracle() {
    // Warm-up: intern every stack of the workload once, so the measured pass
    // makes no tracker-internal allocations.
    drop(workload(1));
    let kept_warm = workload(2);
    drop(kept_warm);

    let before = leakscope::snapshot();
    ALLOCS.store(0, Relaxed);
    BYTES.store(0, Relaxed);
    FREED_BYTES.store(0, Relaxed);
    COUNTING.with(|c| c.set(true));
    let kept = workload(1);
    COUNTING.with(|c| c.set(false));
    let after = leakscope::snapshot();

    let diff = after.diff(&before);
    let through: Vec<_> = diff
        .sites()
        .iter()
        .filter(|d| site_has(d.frames(), "workload"))
        .collect();
    let allocs: i64 = through.iter().map(|d| d.total_allocs_delta()).sum();
    let bytes: i64 = through.iter().map(|d| d.total_bytes_delta()).sum();
    let live: i64 = through.iter().map(|d| d.live_bytes_delta()).sum();
    assert_eq!(allocs as u64, ALLOCS.load(Relaxed), "allocations");
    assert_eq!(bytes as u64, BYTES.load(Relaxed), "bytes");
    assert_eq!(
        live as u64,
        BYTES.load(Relaxed) - FREED_BYTES.load(Relaxed),
        "live bytes"
    );
    drop(kept);
}
