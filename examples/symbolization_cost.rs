//! What the first and later symbolizations cost a process: resident memory
//! (`VmRSS`) and latency of a snapshot with its text report and pprof
//! export, first on a fresh process, then again (cached frames), then after
//! new call stacks appeared. Measured in a release build with the README's
//! profile (`debug = "line-tables-only"`):
//!
//! ```sh
//! cargo run --release --example symbolization_cost            # queried from main
//! cargo run --release --example symbolization_cost -- thread  # from a thread of its own
//! cargo run --release --features http --example symbolization_cost -- serve
//! ```
//!
//! `serve` keeps churning and serves the endpoint on 127.0.0.1:6066, for
//! `curl -w '%{time_total}' http://127.0.0.1:6066/debug/pprof/heap` and
//! `grep VmRSS /proc/<pid>/status` from outside.
//!
//! Linux only (it reads `/proc/self/status`). Figures in BENCHMARKS.md.

use std::time::Instant;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Allocation churn from a few call sites, keeping one string in seven.
#[inline(never)]
fn churn(n: usize, keep: &mut Vec<String>) {
    for i in 0..n {
        let s = format!("request {i} {}", "x".repeat(i % 300));
        if i % 7 == 0 {
            keep.push(s);
        }
    }
}

fn query(label: &str) -> Result<(), leakscope::Error> {
    let t = Instant::now();
    let snap = leakscope::snapshot();
    let text = format!("{snap:#}");
    let mut pprof = Vec::new();
    snap.write_pprof(&mut pprof)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let rss = rss_kib();
    let tracker = leakscope::snapshot().tracker_bytes();
    println!(
        "{label:<24} {ms:7.1} ms  rss {rss:6} KiB  tracker_bytes {:5} KiB  ({} sites, {} B of text, {} B of pprof)",
        tracker / 1024,
        snap.sites().len(),
        text.len(),
        pprof.len()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut keep = Vec::new();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let mut k = Vec::new();
                churn(300_000, &mut k);
                k.len()
            })
        })
        .collect();
    churn(300_000, &mut keep);
    for w in workers {
        let _ = w.join();
    }
    println!("{:<24}             rss {:6} KiB", "before", rss_kib());
    #[cfg(feature = "http")]
    if std::env::args().nth(1).as_deref() == Some("serve") {
        let _server = leakscope::http::serve("127.0.0.1:6066")?;
        println!("serving on 127.0.0.1:6066, pid {}", std::process::id());
        loop {
            churn(20_000, &mut keep);
            keep.truncate(1000);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    if std::env::args().nth(1).as_deref() == Some("thread") {
        std::thread::spawn(|| -> Result<(), leakscope::Error> {
            query("first (own thread)")?;
            query("again (own thread)")
        })
        .join()
        .map_err(|_| "the query thread panicked")??;
    } else {
        query("first")?;
        query("again")?;
    }
    churn(100_000, &mut keep);
    query("after new stacks")?;
    std::hint::black_box(&keep);
    Ok(())
}
