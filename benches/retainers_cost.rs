//! What a retainer scan costs with a big heap in exact mode: 1.2M recorded
//! blocks of 512 bytes (about 600 MiB), a quarter of them held by a static
//! through a `Vec`, some in linked chains, some leaked; while a thread keeps
//! allocating and freeing all the time.
//!
//! ```text
//! cargo bench --bench retainers_cost             # 1.2M blocks
//! cargo bench --bench retainers_cost -- 200000   # fewer
//! ```
//!
//! Prints, for a few scans: the whole call's time, the parent's pause (the
//! fork), the child's scan time and rate, its peak memory, and the worst
//! stall of the allocating thread during the scans (and without scans, for
//! comparison). Measurements, not assertions.

use std::hint::black_box;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system()
    .sample_interval(1)
    .unwinder(leakscope::Unwinder::FramePointers);

/// What the static holds.
#[allow(clippy::vec_box)] // one heap block per element is the point
static HELD: Mutex<Vec<Box<[u8; 512]>>> = Mutex::new(Vec::new());

const SCANS: usize = 3;

/// Worst alloc+free pair (in ns) seen by the allocating thread.
fn churn(stop: &AtomicBool, worst: &AtomicU64) {
    let mut local = 0u64;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        black_box(vec![0u8; 64]);
        let now = Instant::now();
        local = local.max(now.duration_since(last).as_nanos() as u64);
        last = now;
    }
    worst.fetch_max(local, Ordering::Relaxed);
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_200_000);
    let t = Instant::now();
    {
        let mut held = HELD.lock().unwrap();
        held.reserve_exact(n / 2);
        for i in 0..n / 2 {
            held.push(Box::new([i as u8; 512]));
        }
    }
    #[allow(clippy::vec_box)]
    let mut kept: Vec<Box<[u8; 512]>> = Vec::with_capacity(n / 2);
    for i in 0..n / 2 - n / 100 {
        kept.push(Box::new([i as u8; 512]));
    }
    for _ in 0..n / 100 {
        std::mem::forget(Box::new([1u8; 512]));
    }
    println!("{} blocks of 512 B built in {:.1?}", n, t.elapsed());

    for with_scans in [false, true] {
        let stop = AtomicBool::new(false);
        let worst = AtomicU64::new(0);
        let mut rows = Vec::new();
        std::thread::scope(|s| {
            s.spawn(|| churn(&stop, &worst));
            std::thread::sleep(Duration::from_millis(200));
            if with_scans {
                for _ in 0..SCANS {
                    let opts = leakscope::RetainerOptions::new().min_age(Duration::ZERO);
                    let r = leakscope::retainers_with(opts).expect("scan");
                    rows.push((
                        r.wall_time(),
                        r.pause(),
                        r.scan_time(),
                        r.bytes_scanned(),
                        r.child_peak_bytes(),
                        r.unreachable_bytes(),
                        r.blocks(),
                    ));
                }
            } else {
                std::thread::sleep(Duration::from_secs(2));
            }
            stop.store(true, Ordering::Relaxed);
        });
        if with_scans {
            println!(
                "scan  whole call  fork pause  child scan  scanned     rate        child peak  unreachable  blocks"
            );
            for (i, (wall, pause, scan, bytes, peak, unreachable, blocks)) in
                rows.iter().enumerate()
            {
                println!(
                    "{i:>4}  {wall:>10.1?}  {pause:>10.1?}  {scan:>10.1?}  {:>7.0} MiB  {:>6.0} MiB/s  {:>6.0} MiB  {:>8.1} MiB  {blocks}",
                    *bytes as f64 / 1048576.0,
                    *bytes as f64 / 1048576.0 / scan.as_secs_f64(),
                    *peak as f64 / 1048576.0,
                    *unreachable as f64 / 1048576.0,
                );
            }
        }
        println!(
            "allocating thread's worst gap between two alloc+free pairs {} scans: {:.1?}",
            if with_scans { "during" } else { "without" },
            Duration::from_nanos(worst.load(Ordering::Relaxed))
        );
    }
    black_box(&kept);
}
