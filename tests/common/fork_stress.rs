//! The fork stress harness shared by `fork_exact.rs` and `fork_sampled.rs`
//! (each installs its own tracker): forks while two threads allocate at new
//! stacks, a third takes and prints snapshots; each child allocates, frees
//! blocks the parent's other threads allocated, takes a snapshot and prints
//! it, then exits. A child that has not exited within its deadline is hung:
//! it is killed and counted.
//!
//! The child touches no lock of this harness (the blocks it frees are in
//! atomic slots) and never panics or prints, so a hang can only be the
//! tracker's (or the C library's, or a sanitizer runtime's: AddressSanitizer
//! does not hold its quarantine's lock across `fork`, which is why
//! scripts/sanitizers.sh runs these tests without ASan's quarantine).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

const SLOTS: usize = 256;
static SLOT: [AtomicPtr<Vec<u8>>; SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
static STOP: AtomicBool = AtomicBool::new(false);

/// One of `2^depth` distinct stacks, picked by the bits of `path`: each level
/// calls `step` from one of two functions, so every path has its own return
/// addresses. `black_box` after the call keeps it from being a tail call.
#[inline(never)]
fn step(path: u64, depth: u32, size: usize) -> Vec<u8> {
    if depth == 0 {
        return black_box(vec![1u8; size]);
    }
    if path & 1 == 0 {
        left(path >> 1, depth - 1, size)
    } else {
        right(path >> 1, depth - 1, size)
    }
}

#[inline(never)]
fn left(path: u64, depth: u32, size: usize) -> Vec<u8> {
    black_box(step(path, depth, size))
}

#[inline(never)]
fn right(path: u64, depth: u32, size: usize) -> Vec<u8> {
    black_box(step(path, depth, size))
}

/// A parent thread: allocates at ever new stacks (4096 of them, then again)
/// into the slots, freeing what it replaces.
fn churn(seed: u64) {
    let mut i = seed;
    while !STOP.load(Relaxed) {
        i = i.wrapping_add(1);
        let v = Box::new(step(i.wrapping_mul(2654435761), 12, 8 + (i % 200) as usize));
        let slot = (i as usize * 7) % SLOTS;
        let old = SLOT[slot].swap(Box::into_raw(v), AcqRel);
        if !old.is_null() {
            // SAFETY: every non-null slot holds a `Box<Vec<u8>>` from `into_raw`,
            // and `swap` gave this thread sole ownership of it.
            drop(unsafe { Box::from_raw(old) });
        }
        // Short-lived blocks too.
        black_box(step(i, 6, 64));
    }
}

/// What a child does; returns its exit code (0 = all fine).
fn child_work(round: usize) -> i32 {
    // Allocates and frees its own memory, at new stacks too.
    let mine: Vec<Vec<u8>> = (0..200)
        .map(|i| step((round * 1000 + i) as u64, 10, 32 + i))
        .collect();
    // Frees blocks the parent's other threads allocated.
    for slot in &SLOT {
        let p = slot.swap(std::ptr::null_mut(), AcqRel);
        if !p.is_null() {
            // SAFETY: as in `churn`.
            drop(unsafe { Box::from_raw(p) });
        }
    }
    // Takes a snapshot, and (every fourth child) symbolizes it.
    let snap = leakscope::snapshot();
    if round.is_multiple_of(4) {
        let text = snap.to_string();
        if !text.starts_with("Heap:") {
            return 2;
        }
    }
    if snap
        .sites()
        .iter()
        .any(|s| s.live_bytes() > s.total_bytes())
    {
        return 3;
    }
    drop(mine);
    0
}

/// Forks `forks` times while three parent threads work; returns the number
/// of hung children and of children that exited with an error.
pub fn run(forks: usize, deadline: Duration) -> (usize, usize) {
    // A slower build (scripts/sanitizers.sh's AddressSanitizer run: debug,
    // instrumented, on a loaded machine) may set a longer deadline; a child
    // that deadlocked stays hung however long it is given.
    let deadline = std::env::var("LEAKSCOPE_FORK_DEADLINE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(deadline, Duration::from_secs);
    STOP.store(false, Relaxed);
    let workers: Vec<_> = (0..2u64)
        .map(|t| std::thread::spawn(move || churn(t << 40)))
        .collect();
    let reporter = std::thread::spawn(|| {
        while !STOP.load(Relaxed) {
            black_box(leakscope::snapshot().to_string().len());
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    static DONE: AtomicUsize = AtomicUsize::new(0);
    let (mut hung, mut failed) = (0, 0);
    for round in 0..forks {
        // SAFETY: the child runs only `child_work` (allocation, frees, a
        // snapshot: what the tracker promises a forked child may do) and
        // leaves with `_exit`, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = child_work(round);
            // SAFETY: ends the child at once, running no atexit handlers.
            unsafe { libc::_exit(code) };
        }
        let start = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: polls the child just forked.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                // Slow children are worth seeing: a deadline set too short
                // for this machine looks like a hang.
                if start.elapsed() > Duration::from_secs(1) {
                    eprintln!("child {round}: exited after {:?}", start.elapsed());
                }
                if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                    eprintln!("child {round}: status {status:#x}");
                    failed += 1;
                }
                break;
            }
            if start.elapsed() > deadline {
                eprintln!("child {round}: hung, killed");
                hung += 1;
                // SAFETY: kills and reaps our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        DONE.fetch_add(1, Relaxed);
    }
    STOP.store(true, Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    reporter.join().unwrap();
    (hung, failed)
}
