//! The inner allocator's side of the contract: it always gets back exactly
//! the layout it handed a block out with; realloc and alloc_zeroed reach it
//! as such; its failures pass through and are not recorded.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use common::*;

/// An inner allocator that stores each block's layout in a hidden prefix and
/// checks it on every free and realloc; it can be told to fail.
struct Checked;

const PREFIX: usize = 64;
static MISMATCHES: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static ZEROED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static FAIL: Cell<bool> = const { Cell::new(false) };
}

/// Fails only large requests, so the tracker's own small allocations made
/// on the same thread (interning a new stack) still succeed.
fn failing_for(size: usize) -> bool {
    size >= 100_000 && FAIL.try_with(Cell::get).unwrap_or(false)
}

/// The prefix in front of a block of this alignment (keeps the alignment).
fn prefix(align: usize) -> usize {
    PREFIX.max(align)
}

fn outer(l: Layout) -> Layout {
    Layout::from_size_align(l.size() + prefix(l.align()), l.align().max(16)).unwrap()
}

/// # Safety
/// `p` must come from `Checked` with the layout `l` claimed by the caller.
unsafe fn check(p: *mut u8, l: Layout) -> *mut u8 {
    // SAFETY: every block has `prefix(align)` bytes of ours in front.
    let base = unsafe { p.sub(prefix(l.align())) };
    // SAFETY: as above; written in `stamp`.
    let (size, align) = unsafe { *(base as *const (usize, usize)) };
    if size != l.size() || align != l.align() {
        MISMATCHES.fetch_add(1, Relaxed);
    }
    base
}

/// # Safety
/// `base` must be a fresh outer block for `l`.
unsafe fn stamp(base: *mut u8, l: Layout) -> *mut u8 {
    if base.is_null() {
        return base;
    }
    // SAFETY: the outer block has PREFIX >= 16 bytes in front, aligned to 16.
    unsafe {
        *(base as *mut (usize, usize)) = (l.size(), l.align());
        base.add(prefix(l.align()))
    }
}

// SAFETY: a thin wrapper over System with a prefix; layouts are checked.
unsafe impl GlobalAlloc for Checked {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if failing_for(l.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: non-zero outer layout.
        unsafe { stamp(System.alloc(outer(l)), l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if failing_for(l.size()) {
            return std::ptr::null_mut();
        }
        ZEROED.fetch_add(1, Relaxed);
        // SAFETY: non-zero outer layout.
        unsafe { stamp(System.alloc_zeroed(outer(l)), l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: caller's contract.
        unsafe { System.dealloc(check(p, l), outer(l)) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if failing_for(n) {
            return std::ptr::null_mut();
        }
        REALLOCS.fetch_add(1, Relaxed);
        let new = Layout::from_size_align(n, l.align()).unwrap();
        // SAFETY: caller's contract; the prefix moves with the data.
        unsafe {
            stamp(
                System.realloc(check(p, l), outer(l), outer(new).size()),
                new,
            )
        }
    }
}

#[global_allocator]
static GLOBAL: leakscope::Tracker<Checked> = leakscope::Tracker::new(Checked).sample_interval(1);

static SERIAL: Mutex<()> = Mutex::new(());

#[inline(never)]
fn mixed_work() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..3000usize {
        let mut v: Vec<u8> = Vec::with_capacity(i % 50 + 1);
        v.extend(std::iter::repeat_n(1u8, i % 200)); // realloc growth
        if i % 5 == 0 {
            v.shrink_to_fit();
        }
        out.push(v);
    }
    // Over-aligned blocks, including one we never record (page alignment).
    for align in [32usize, 64, 256, 2048, 4096, 8192] {
        let l = Layout::from_size_align(100, align).unwrap();
        // SAFETY: non-zero layout; freed with the same layout.
        unsafe {
            let p = std::alloc::alloc(l);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            let p = std::alloc::realloc(p, l, 5000);
            assert_eq!(p as usize % align, 0);
            std::alloc::dealloc(p, Layout::from_size_align(5000, align).unwrap());
        }
    }
    out
}

#[test]
fn inner_gets_back_exactly_its_layouts_across_interval_changes() {
    let _s = SERIAL.lock().unwrap();
    let a = black_box(mixed_work());
    leakscope::set_sample_interval(1000).unwrap();
    let b = black_box(mixed_work());
    drop(a); // recorded exactly, freed under sampling
    leakscope::set_sample_interval(1).unwrap();
    drop(b); // mostly unrecorded, freed in exact mode
    let c = black_box(mixed_work());
    drop(c);
    assert_eq!(MISMATCHES.load(Relaxed), 0);
}

#[inline(never)]
fn zeroed_here(n: usize) -> Vec<u32> {
    vec![0u32; n]
}

#[test]
fn alloc_zeroed_and_realloc_reach_the_inner_allocator() {
    let _s = SERIAL.lock().unwrap();
    let z0 = ZEROED.load(Relaxed);
    let v = zeroed_here(1000);
    assert!(ZEROED.load(Relaxed) > z0);
    assert!(v.iter().all(|&x| x == 0));
    assert_eq!(
        live_bytes_through(&leakscope::snapshot(), "zeroed_here"),
        4000
    );

    // Realloc of an unrecorded, unsampled block is one inner realloc, no detour.
    leakscope::set_sample_interval(1 << 62).unwrap();
    let mut w: Vec<u8> = Vec::with_capacity(10);
    w.push(1);
    let r0 = REALLOCS.load(Relaxed);
    w.reserve_exact(100_000);
    assert_eq!(REALLOCS.load(Relaxed), r0 + 1);
    leakscope::set_sample_interval(1).unwrap();
    drop(w);
    drop(v);
}

#[inline(never)]
fn doomed(n: usize) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    Some(v)
}

#[test]
fn inner_failures_pass_through_and_are_not_recorded() {
    let _s = SERIAL.lock().unwrap();
    FAIL.with(|f| f.set(true));
    let r = doomed(123_456);
    FAIL.with(|f| f.set(false));
    assert!(r.is_none());
    let snap = leakscope::snapshot();
    assert_eq!(live_bytes_through(&snap, "doomed"), 0);
    assert_eq!(
        sites_through(&snap, "doomed")
            .map(|s| s.total_allocs())
            .sum::<u64>(),
        0
    );

    // A failed realloc of a recorded block keeps the old record.
    let mut v = doomed(1000).unwrap();
    v.push(1);
    let before = live_bytes_through(&leakscope::snapshot(), "doomed");
    assert_eq!(before, 1000);
    FAIL.with(|f| f.set(true));
    let grew = v.try_reserve_exact(1 << 20);
    FAIL.with(|f| f.set(false));
    assert!(grew.is_err());
    assert_eq!(live_bytes_through(&leakscope::snapshot(), "doomed"), 1000);
    drop(v);
    assert_eq!(live_bytes_through(&leakscope::snapshot(), "doomed"), 0);
    assert_eq!(MISMATCHES.load(Relaxed), 0);
}
