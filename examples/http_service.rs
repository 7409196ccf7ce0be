//! A small service that leaks slowly, with a growth monitor and the HTTP
//! endpoint on 127.0.0.1:6060. While it runs:
//!
//! ```text
//! go tool pprof -top http://127.0.0.1:6060/debug/pprof/heap
//! go tool pprof -top 'http://127.0.0.1:6060/debug/pprof/heap?seconds=10'
//! curl -s http://127.0.0.1:6060/metrics
//! open http://127.0.0.1:6060/debug/leakscope in a browser
//! ```
//!
//! `cargo run --release --example http_service --features http [-- SECONDS]`
//! (runs until stopped, or for SECONDS).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use leakscope::{Monitor, MonitorConfig};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

/// The leak: every request's session is remembered, none is ever evicted.
static SESSIONS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[inline(never)]
fn remember_session(id: u64) {
    let session = format!("session-{id}:{}", "x".repeat(8 * 1024));
    SESSIONS.lock().unwrap().push(session);
}

/// Healthy: a bounded cache that fills and then stays flat.
#[inline(never)]
fn cache_lookup(cache: &mut HashMap<u64, Vec<u8>>, id: u64) {
    cache.entry(id % 512).or_insert_with(|| vec![0u8; 4096]);
}

/// Healthy: a response built and dropped.
#[inline(never)]
fn handle_request(cache: &mut HashMap<u64, Vec<u8>>, id: u64) -> usize {
    cache_lookup(cache, id);
    remember_session(id);
    let body: Vec<u8> = (0..2048).map(|i| (i ^ id) as u8).collect();
    body.len()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run_for = std::env::args()
        .nth(1)
        .map(|s| s.parse::<u64>().map(Duration::from_secs))
        .transpose()?;
    let monitor = Monitor::start(
        MonitorConfig::default()
            .interval(Duration::from_secs(2))
            .window(15)
            .on_suspect(|s| eprintln!("{s}")),
    )?;
    let server = leakscope::http::serve("127.0.0.1:6060")?;
    println!("dashboard: http://{}/debug/leakscope", server.local_addr());
    println!(
        "profiles:  go tool pprof -top http://{}/debug/pprof/heap",
        server.local_addr()
    );

    let start = Instant::now();
    let mut cache = HashMap::new();
    let mut id = 0u64;
    while run_for.is_none_or(|d| start.elapsed() < d) {
        for _ in 0..50 {
            id += 1;
            std::hint::black_box(handle_request(&mut cache, id));
        }
        std::thread::sleep(Duration::from_millis(100)); // ~4 MiB a second leaked
    }
    server.stop();
    monitor.stop();
    Ok(())
}
