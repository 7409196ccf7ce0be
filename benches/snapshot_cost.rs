//! What a snapshot costs with a big heap: about 130 000 sites holding 1M live
//! recorded blocks (exact mode, frame-pointer unwinder), and how long a
//! thread that keeps allocating is held up while snapshots are taken.
//!
//! ```text
//! cargo bench --bench snapshot_cost
//! ```
//!
//! Prints the time of the first snapshot (which symbolizes every raw stack
//! once, to merge raw stacks into source-level sites), the median and worst
//! time of the repeated snapshots after it (which only sum: every raw stack's
//! site is cached), and the worst alloc+free pair on the thread that owns all
//! those blocks, with and without snapshots running on another thread.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use leakscope::{Tracker, Unwinder};

/// The live blocks: each its own heap allocation, which is the point.
type Blocks = Vec<Box<[u8; 16]>>;

#[global_allocator]
static GLOBAL: Tracker = Tracker::system()
    .sample_interval(1)
    .unwinder(Unwinder::FramePointers)
    .max_sites(1 << 20);

/// Levels of the call tree (each level below the top picks one of two
/// functions): 2^17 = 131 072 distinct stacks.
const LEVELS: u32 = 18;
/// Blocks kept per leaf call: 4 x 2^18 calls (each stack is reached twice,
/// the top level calling `left` either way) = 1 048 576 live blocks.
const PER_LEAF: usize = 4;
const SNAPSHOTS: usize = 7;

// Two functions that call each other (or themselves) on each level, chosen
// by one bit of `path`, so every path is a different chain of return
// addresses. The work after each call keeps the calls out of tail position
// (a tail call would reuse the frame), and the different constants keep the
// two bodies from being merged into one.
#[inline(never)]
fn left(level: u32, path: u32, out: &mut Blocks) -> usize {
    let n = step(level, path, out);
    black_box(n ^ 0x5a)
}

#[inline(never)]
fn right(level: u32, path: u32, out: &mut Blocks) -> usize {
    let n = step(level, path, out);
    black_box(n ^ 0xa5)
}

#[inline(always)]
fn step(level: u32, path: u32, out: &mut Blocks) -> usize {
    if level == 0 {
        // Not unrolled: one call site, so one site per stack.
        for _ in 0..black_box(PER_LEAF) {
            out.push(black_box(Box::new([path as u8; 16])));
        }
        return out.len();
    }
    if path & 1 == 0 {
        left(level - 1, path >> 1, out)
    } else {
        right(level - 1, path >> 1, out)
    }
}

/// The worst alloc+free pair seen on this thread while `until` is false.
fn worst_pair(until: &AtomicBool, at_least: Duration) -> (Duration, u64) {
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut pairs = 0u64;
    while !until.load(Ordering::Relaxed) || start.elapsed() < at_least {
        let t = Instant::now();
        black_box(Box::new([7u8; 16]));
        worst = worst.max(t.elapsed());
        pairs += 1;
    }
    (worst, pairs)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` asks harness-less benches for their tests.
        return;
    }
    let t = Instant::now();
    let mut blocks = Vec::with_capacity(PER_LEAF << LEVELS);
    for path in 0..1u32 << LEVELS {
        left(LEVELS - 1, path, &mut blocks);
    }
    let built = t.elapsed();

    // First snapshot: symbolizes and merges every raw stack.
    let t = Instant::now();
    let snap = leakscope::snapshot();
    let first = t.elapsed();
    let sites = snap.sites().len();
    let live = snap.live_allocs();
    drop(snap);

    // Worst pair with nothing else going on.
    let quiet = AtomicBool::new(true);
    let (quiet_worst, _) = worst_pair(&quiet, Duration::from_millis(500));

    // Snapshots on another thread while this thread (which owns the 1M
    // blocks' list) keeps allocating and freeing.
    let done = AtomicBool::new(false);
    let (times, (busy_worst, pairs)) = std::thread::scope(|s| {
        let snapper = s.spawn(|| {
            let mut times = Vec::new();
            for _ in 0..SNAPSHOTS {
                let t = Instant::now();
                let snap = leakscope::snapshot();
                times.push(t.elapsed());
                black_box(snap.live_bytes());
                drop(snap);
            }
            done.store(true, Ordering::Relaxed);
            times
        });
        let busy = worst_pair(&done, Duration::ZERO);
        (snapper.join().expect("snapshot thread"), busy)
    });
    let mut sorted = times.clone();
    sorted.sort();
    println!("snapshot_cost: {sites} sites, {live} live blocks (built in {built:.2?})");
    println!("first snapshot (symbolizes and merges every raw stack): {first:.1?}");
    println!(
        "repeated snapshot time: median {:.1?}, worst {:.1?} ({} snapshots)",
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        sorted.len()
    );
    println!(
        "worst alloc+free pair on the owning thread: {quiet_worst:.1?} alone, {busy_worst:.1?} while snapshots ran ({pairs} pairs)"
    );
    drop(blocks);
}
