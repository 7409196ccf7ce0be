//! Slow readers of a large answer (`/debug/leakscope/snapshot.json` of a
//! program with thousands of sites) do not hold up the server: sixteen of
//! them connected and reading nothing share one copy of the answer (the
//! process's RSS grows by a few copies at most, not sixteen), a
//! well-behaved client still gets `/metrics`, and `Server::stop()` returns
//! within a second.

#![cfg(all(feature = "http", target_os = "linux"))]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::http::get;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

/// Distinct sites made by `fan_out` (12 binary choices).
const SITES: u32 = 4096;
const DEPTH: u32 = 12;
const SLOW: usize = 16;

static KEPT: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

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
        let block = std::hint::black_box(vec![0x22u8; 64]).into_boxed_slice();
        KEPT.lock().unwrap().push(block);
        return;
    }
    if path >> (depth - 1) & 1 == 0 {
        left(path, depth - 1);
    } else {
        right(path, depth - 1);
    }
}

/// The process's resident set, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A client that asks for `path` and then reads nothing.
fn slow_reader(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    s
}

#[test]
fn slow_readers_of_a_large_answer_neither_starve_metrics_nor_delay_stop() {
    for path in 0..SITES {
        step(path, DEPTH);
    }
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let whole = get(addr, "/debug/leakscope/snapshot.json");
    assert_eq!(whole.status, 200);
    // Larger than what loopback's socket buffers take, so a reader that
    // reads nothing leaves the server's write blocked.
    assert!(
        whole.body.len() > 16 << 20,
        "snapshot.json is only {} B",
        whole.body.len()
    );
    let before = rss();
    let slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| slow_reader(addr, "/debug/leakscope/snapshot.json"))
        .collect();
    // Each reads the first bytes (the answer is built: the server is
    // writing), then nothing more.
    for mut s in &slow {
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut first = [0u8; 1024];
        s.read_exact(&mut first).unwrap();
        assert!(first.starts_with(b"HTTP/1.1 200"));
    }
    // Let the server fill their socket buffers.
    std::thread::sleep(Duration::from_millis(500));
    let grown = rss().saturating_sub(before);
    eprintln!(
        "RSS +{} MiB with {SLOW} slow readers of a {} MiB answer",
        grown >> 20,
        whole.body.len() >> 20
    );
    assert!(
        grown < 4 * whole.body.len() as u64,
        "RSS grew by {} MiB with {SLOW} slow readers of a {} MiB answer",
        grown >> 20,
        whole.body.len() >> 20
    );
    let t = Instant::now();
    let m = get(addr, "/metrics");
    assert_eq!(m.status, 200);
    let took = t.elapsed();
    eprintln!("/metrics with {SLOW} slow readers: {took:?}");
    assert!(took < Duration::from_secs(1), "/metrics took {took:?}");

    let t = Instant::now();
    server.stop();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    // The slow readers were cut off, not served to the end.
    for mut s in slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        assert!(out.len() < whole.body.len(), "a slow reader got it all");
    }
    drop(KEPT.lock().unwrap().drain(..));
}
