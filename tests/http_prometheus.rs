//! `/metrics` scraped by a real Prometheus server: the leaking site's
//! `leakscope_site_live_bytes` series arrives, and a program with thousands
//! of sites never has more than N + 1 of those series. A labelled leak's
//! site and suspect series carry its labels (`tenant="acme"`).

#![cfg(feature = "http")]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::http::{get, require, temp_dir};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

/// Top sites exposed.
const TOP: usize = 10;
/// Distinct sites made by `fan_out` (12 binary choices: up to 4096).
const SITES: u32 = 3000;
const DEPTH: u32 = 12;

static KEPT: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

#[inline(never)]
fn leak_big() {
    let mut k = KEPT.lock().unwrap();
    for _ in 0..256 {
        k.push(std::hint::black_box(vec![0x11u8; 128 * 1024]).into_boxed_slice());
    }
}

// Two functions calling each other by the bits of `path`: each `path` is a
// different call stack, so a different site.
#[inline(never)]
fn left(path: u32, depth: u32) {
    step(path, depth);
    std::hint::black_box(());
}

#[inline(never)]
fn right(path: u32, depth: u32) {
    step(path, depth);
    std::hint::black_box(());
}

#[inline(never)]
fn step(path: u32, depth: u32) {
    if depth == 0 {
        let block = std::hint::black_box(vec![0x22u8; 8 * 1024]).into_boxed_slice();
        KEPT.lock().unwrap().push(block);
        return;
    }
    if path >> (depth - 1) & 1 == 0 {
        left(path, depth - 1);
    } else {
        right(path, depth - 1);
    }
}

/// A labelled leak, growing until `STOP`: 64 KiB every 20 ms (3.2 MiB/s).
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[inline(never)]
fn grow_acme() {
    let mut kept: Vec<Box<[u8]>> = Vec::with_capacity(2048);
    while !STOP.load(std::sync::atomic::Ordering::Relaxed) && kept.len() < 2000 {
        leakscope::with_labels(&[("tenant", "acme")], || {
            kept.push(std::hint::black_box(vec![0x33u8; 64 * 1024]).into_boxed_slice())
        });
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls Prometheus for `query` until a series has `tenant="acme"`.
fn wait_for_acme(api: std::net::SocketAddr, query: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let r = get(api, &format!("/api/v1/query?query={query}"));
        last = r.text();
        if r.status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("query API JSON");
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            if result
                .iter()
                .any(|s| s["metric"]["tenant"].as_str() == Some("acme"))
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("no {query} series with tenant=\"acme\" within 30 s; last answer:\n{last}");
}

fn fan_out() {
    for path in 0..SITES {
        step(path, DEPTH);
    }
}

/// The Prometheus child process, killed (by its own handle) on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn prometheus_scrapes_bounded_site_series() {
    require("prometheus", "prometheus");
    KEPT.lock().unwrap().reserve(SITES as usize + 512);
    fan_out();
    leak_big();
    // Symbolizes the thousands of stacks once, before the first scrape.
    let snap = leakscope::snapshot();
    assert!(
        snap.sites().len() >= SITES as usize,
        "only {} sites",
        snap.sites().len()
    );
    drop(snap);
    let monitor = leakscope::Monitor::start(
        leakscope::MonitorConfig::default()
            .interval(Duration::from_millis(100))
            .window(5),
    )
    .unwrap();
    let acme = std::thread::spawn(grow_acme);

    let server = leakscope::http::serve_with(
        "127.0.0.1:0",
        leakscope::http::Options::default().top_sites(TOP),
    )
    .unwrap();
    let target = server.local_addr();

    // Our own exposition first: bounded, with the leak named.
    let direct = get(target, "/metrics");
    assert_eq!(direct.status, 200);
    assert!(
        direct
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        direct.headers
    );
    let text = direct.text();
    let series = text
        .lines()
        .filter(|l| l.starts_with("leakscope_site_live_bytes{"))
        .count();
    assert_eq!(series, TOP + 1, "{text}");

    let dir = temp_dir("prometheus");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: leakscope\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _prometheus = Prometheus(child);
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut polls_with_data = 0;
    let mut saw_leak = false;
    let mut last = String::new();
    while Instant::now() < deadline && polls_with_data < 3 {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(stream) = std::net::TcpStream::connect(api) else {
            continue; // not listening yet
        };
        drop(stream);
        let r = get(api, "/api/v1/query?query=leakscope_site_live_bytes");
        last = r.text();
        if r.status != 200 {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("query API JSON");
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if result.is_empty() {
            continue;
        }
        polls_with_data += 1;
        assert!(
            result.len() <= TOP + 1,
            "{} leakscope_site_live_bytes series (at most {}):\n{last}",
            result.len(),
            TOP + 1
        );
        saw_leak |= result.iter().any(|s| {
            s["metric"]["function"]
                .as_str()
                .is_some_and(|f| f.ends_with("leak_big"))
                && s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 16.0 * 1024.0 * 1024.0)
        });
        assert!(
            result
                .iter()
                .any(|s| s["metric"]["site"].as_str() == Some("other")),
            "no site=\"other\" series:\n{last}"
        );
    }
    assert!(
        polls_with_data > 0,
        "Prometheus returned no leakscope_site_live_bytes within 30 s; last answer:\n{last}"
    );
    assert!(saw_leak, "no series names leak_big:\n{last}");
    // The totals arrived too.
    let r = get(api, "/api/v1/query?query=leakscope_allocated_bytes_total");
    assert!(r.text().contains("\"result\":[{"), "{}", r.text());
    // The labelled leak: both series carry its label.
    wait_for_acme(api, "leakscope_site_live_bytes");
    wait_for_acme(api, "leakscope_suspect_growth_bytes_per_second");
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    acme.join().unwrap();
    monitor.stop();
    server.stop();
}
