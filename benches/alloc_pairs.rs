//! The cost of each allocator path: alloc+free pairs of 16 B, 256 B and
//! 64 KiB, and realloc growth (16 B doubling to 64 KiB, then the free), on 1
//! and 2 threads.
//!
//! The global allocator is a static, so the variants are compared by calling
//! the `GlobalAlloc` methods of several `static` allocators directly, in one
//! process: `System`; `Tracker` with the default interval; `Tracker` exact
//! (R = 1) with each unwinder. Criterion measures each variant on its own;
//! after it, `cargo bench --bench alloc_pairs` also runs the variants
//! interleaved (A B C D, A B C D, ...) and prints a table of median ns per
//! pair and the ratio to `System`, which is the fairer view on a noisy
//! machine.
//!
//! ```text
//! cargo bench --bench alloc_pairs                   # criterion + interleaved table
//! cargo bench --bench alloc_pairs -- --table-only   # the interleaved table alone
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use leakscope::{Tracker, Unwinder};

static SYSTEM: System = System;
static DEFAULT: Tracker = Tracker::system();
static EXACT_BT: Tracker = Tracker::system().sample_interval(1);
static EXACT_FP: Tracker = Tracker::system()
    .sample_interval(1)
    .unwinder(Unwinder::FramePointers);

/// The allocators under test.
#[derive(Clone, Copy)]
enum Variant {
    System,
    Default,
    ExactBacktrace,
    ExactFramePointers,
}

const VARIANTS: [(&str, Variant); 4] = [
    ("System", Variant::System),
    ("Tracker default", Variant::Default),
    ("Tracker R=1 backtrace", Variant::ExactBacktrace),
    ("Tracker R=1 frame pointers", Variant::ExactFramePointers),
];

/// One alloc+free pair of `size` bytes. Inlined into [`Op::run`] with a
/// static allocator, as `__rust_alloc` inlines the global allocator, so the
/// tracker's configuration folds to constants as it does in real use.
#[inline(always)]
fn pair<A: GlobalAlloc>(a: &A, size: usize) {
    let layout = Layout::from_size_align(size, 8).expect("valid layout");
    // SAFETY: non-zero size; the block is freed with the layout it was
    // allocated with, by the allocator that returned it.
    unsafe {
        let p = a.alloc(layout);
        assert!(!p.is_null());
        // Touch the block as a real caller would.
        p.write_volatile(1);
        a.dealloc(black_box(p), layout);
    }
}

/// A block grown by `realloc` from 16 B to 64 KiB (doubling), then freed.
#[inline(always)]
fn growth<A: GlobalAlloc>(a: &A) {
    let mut layout = Layout::from_size_align(16, 8).expect("valid layout");
    // SAFETY: each `realloc` gets the block's current layout and a non-zero
    // new size; the final free uses the final layout.
    unsafe {
        let mut p = a.alloc(layout);
        assert!(!p.is_null());
        while layout.size() < 64 * 1024 {
            let new_size = layout.size() * 2;
            p = a.realloc(p, layout, new_size);
            assert!(!p.is_null());
            p.write_volatile(1);
            layout = Layout::from_size_align(new_size, 8).expect("valid layout");
        }
        a.dealloc(black_box(p), layout);
    }
}

/// What one step of a benchmark does.
#[derive(Clone, Copy)]
enum Op {
    Pair(usize),
    Growth,
}

impl Op {
    fn name(self) -> String {
        match self {
            Op::Pair(16) => "16 B".into(),
            Op::Pair(256) => "256 B".into(),
            Op::Pair(65536) => "64 KiB".into(),
            Op::Pair(n) => format!("{n} B"),
            Op::Growth => "realloc 16 B..64 KiB".into(),
        }
    }

    /// One step with one allocator. `#[inline(never)]` gives every variant
    /// the same call stack shape (and the exact trackers one site per step).
    #[inline(never)]
    fn run(self, v: Variant) {
        fn step<A: GlobalAlloc>(a: &A, op: Op) {
            match op {
                Op::Pair(size) => pair(a, size),
                Op::Growth => growth(a),
            }
        }
        match v {
            Variant::System => step(&SYSTEM, self),
            Variant::Default => step(&DEFAULT, self),
            Variant::ExactBacktrace => step(&EXACT_BT, self),
            Variant::ExactFramePointers => step(&EXACT_FP, self),
        }
    }
}

const OPS: [Op; 4] = [Op::Pair(16), Op::Pair(256), Op::Pair(65536), Op::Growth];

/// Wall time of `iters` steps on each of `threads` threads at once, divided
/// by `iters` (so the per-step time a thread sees).
fn timed(a: Variant, op: Op, threads: usize, iters: u64) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        for _ in 0..iters {
            op.run(a);
        }
        return start.elapsed();
    }
    let barrier = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        op.run(a);
                    }
                    start.elapsed()
                })
            })
            .collect();
        barrier.wait();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn criterion_benches(c: &mut Criterion) {
    for threads in [1, 2] {
        for op in OPS {
            let mut group = c.benchmark_group(format!("{} x{threads}", op.name()));
            group.measurement_time(Duration::from_secs(2));
            group.warm_up_time(Duration::from_millis(300));
            for (name, a) in VARIANTS {
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter_custom(|iters| timed(a, op, threads, iters))
                });
            }
            group.finish();
        }
    }
}

/// Runs the variants interleaved, `rounds` times, and prints median ns per
/// step and the ratio to `System` as a Markdown table.
fn interleaved_table(rounds: usize) {
    println!("\nInterleaved medians of {rounds} rounds (ns per step, ratio to System):\n");
    print!("| threads | step |");
    for (name, _) in VARIANTS {
        print!(" {name} |");
    }
    println!();
    println!("|---|---|{}", "---|".repeat(VARIANTS.len()));
    for threads in [1, 2] {
        for op in OPS {
            let mut samples = vec![Vec::new(); VARIANTS.len()];
            for _ in 0..rounds {
                for (i, (_, a)) in VARIANTS.into_iter().enumerate() {
                    // About 20 ms per sample, sized by a short probe.
                    let probe = timed(a, op, threads, 64).as_nanos().max(1) as u64 / 64;
                    let iters = (20_000_000 / probe.max(1)).clamp(64, 2_000_000);
                    let t = timed(a, op, threads, iters);
                    samples[i].push(t.as_nanos() as f64 / iters as f64);
                }
            }
            let medians: Vec<f64> = samples
                .iter_mut()
                .map(|s| {
                    s.sort_by(f64::total_cmp);
                    s[s.len() / 2]
                })
                .collect();
            print!("| {threads} | {} |", op.name());
            for m in &medians {
                print!(" {m:.1} ({:.2}x) |", m / medians[0]);
            }
            println!();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let table_only = args.iter().any(|a| a == "--table-only");
    if !table_only {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c);
        c.final_summary();
    }
    // Not under `cargo test --benches`, which runs each bench once as a test.
    if bench_mode || table_only {
        interleaved_table(7);
    }
}
