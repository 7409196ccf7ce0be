//! What every export costs at half a million sites: time and peak memory.
//!
//! ```text
//! cargo bench --bench export_cost            # 2^19 sites, 2^20 blocks (a few minutes)
//! cargo bench --bench export_cost -- 16      # 2^15 sites
//! ```
//!
//! Exact mode with the frame-pointer unwinder and `max_sites(1 << 20)`; a
//! call tree of `2^(levels - 1)` distinct call chains (the top level always
//! enters through `left`), `2^levels` live blocks. Prints the
//! first snapshot (which symbolizes and merges every raw stack), a repeated
//! one, then each export written to `std::io::sink()`: its wall time and the
//! growth of the process's peak RSS while it ran (the peak is reset before
//! each through `/proc/self/clear_refs`, so each figure is that export's own
//! high-water mark above the memory already held).

use std::hint::black_box;
use std::io::{Write, sink};
use std::time::Instant;

use leakscope::{Tracker, Unwinder};

#[global_allocator]
static GLOBAL: Tracker = Tracker::system()
    .sample_interval(1)
    .unwinder(Unwinder::FramePointers)
    .max_sites(1 << 20);

type Blocks = Vec<Box<[u8; 16]>>;

// Two functions per level, picked by one bit of `path`, so that every path
// is its own chain of return addresses and its own source-level stack. The
// work after each call keeps it out of tail position, and the constants keep
// the two bodies apart.
#[inline(never)]
fn left(level: u32, path: u32, out: &mut Blocks) -> usize {
    black_box(step(level, path, out) ^ 0x5a)
}

#[inline(never)]
fn right(level: u32, path: u32, out: &mut Blocks) -> usize {
    black_box(step(level, path, out) ^ 0xa5)
}

#[inline(always)]
fn step(level: u32, path: u32, out: &mut Blocks) -> usize {
    if level == 0 {
        out.push(black_box(Box::new([path as u8; 16])));
        return out.len();
    }
    if path & 1 == 0 {
        left(level - 1, path >> 1, out)
    } else {
        right(level - 1, path >> 1, out)
    }
}

/// `VmHWM` and `VmRSS` of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Runs `f`, then prints its time and how far the peak RSS rose above the
/// RSS before it.
fn measure(name: &str, f: impl FnOnce()) {
    // "5" resets the peak RSS to the current RSS (Linux 4.0 and later).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let (_, before) = memory_kib();
    let t = Instant::now();
    f();
    let took = t.elapsed();
    let (peak, _) = memory_kib();
    let peak = if reset {
        format!("{:.1} MiB", peak.saturating_sub(before) as f64 / 1024.0)
    } else {
        "n/a".to_string()
    };
    println!("| {name} | {:.2} s | {peak} |", took.as_secs_f64());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list`
    }
    let levels: u32 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(20)
        .clamp(4, 20);
    let mut blocks: Blocks = Vec::with_capacity(1 << levels);
    let t = Instant::now();
    for path in 0..1u32 << levels {
        left(levels - 1, path, &mut blocks);
    }
    println!(
        "export_cost: {} live blocks from {} distinct call chains, built in {:.1?}",
        blocks.len(),
        1u32 << (levels - 1),
        t.elapsed()
    );
    println!();
    println!("| step | time | peak RSS above the RSS before it |");
    println!("|---|---:|---:|");
    let mut snap = None;
    measure("first snapshot (symbolizes and merges every stack)", || {
        snap = Some(leakscope::snapshot());
    });
    let snap = snap.expect("snapshot");
    let mut again = None;
    measure("repeated snapshot", || again = Some(leakscope::snapshot()));
    let diff = snap.diff(&leakscope::snapshot());
    drop(again);
    measure("Display (top 20)", || {
        write!(sink(), "{snap}").expect("display");
    });
    measure("write_pprof", || snap.write_pprof(sink()).expect("pprof"));
    measure("write_collapsed", || {
        snap.write_collapsed(sink()).expect("collapsed")
    });
    measure("write_flamegraph", || {
        snap.write_flamegraph(sink()).expect("flamegraph")
    });
    measure("write_json", || snap.write_json(sink()).expect("json"));
    measure("write_dhat", || snap.write_dhat(sink()).expect("dhat"));
    measure("diff write_pprof", || {
        diff.write_pprof(sink()).expect("pprof")
    });
    let (_, rss) = memory_kib();
    println!();
    println!(
        "{} sites in the snapshot; tracker_bytes {:.1} MiB; RSS at the end {:.1} MiB",
        snap.sites().len(),
        snap.tracker_bytes() as f64 / (1 << 20) as f64,
        rss as f64 / 1024.0
    );
    drop(blocks);
}
