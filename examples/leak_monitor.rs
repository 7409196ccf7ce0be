//! A toy server loop with two memory users: a bounded LRU cache of rendered
//! pages (healthy: fills, then churns at a constant size) and an audit log
//! that every request appends to and nothing ever trims (the leak). The
//! growth monitor, started next to the loop, names the audit log and not the
//! cache.
//!
//! ```text
//! cargo run --release --example leak_monitor
//! ```
//!
//! Runs for at most about 10 seconds and prints the suspects, the cache's
//! series, and where the memory held for over a second sits.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use leakscope::{Monitor, MonitorConfig, Suspect};

// Sampled, as in production, with a small interval so that a toy workload
// of a few hundred KiB per interval is seen in every interval.
#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(16 * 1024);

/// The leak: one record per request, kept forever.
static AUDIT_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A least-recently-used cache of at most `cap` pages.
struct Lru {
    cap: usize,
    tick: u64,
    pages: HashMap<u64, (Vec<u8>, u64)>,
    /// Last use -> key, oldest first.
    by_use: BTreeMap<u64, u64>,
}

impl Lru {
    fn new(cap: usize) -> Lru {
        Lru {
            cap,
            tick: 0,
            pages: HashMap::with_capacity(cap + 1),
            by_use: BTreeMap::new(),
        }
    }

    fn get_or_render(&mut self, key: u64) -> usize {
        self.tick += 1;
        if let Some((page, used)) = self.pages.get_mut(&key) {
            self.by_use.remove(used);
            *used = self.tick;
            self.by_use.insert(self.tick, key);
            return page.len();
        }
        if self.pages.len() == self.cap {
            if let Some((_, oldest)) = self.by_use.pop_first() {
                self.pages.remove(&oldest);
            }
        }
        let page = render_page(key);
        let len = page.len();
        self.pages.insert(key, (page, self.tick));
        self.by_use.insert(self.tick, key);
        len
    }
}

/// A 4 KiB page: what the cache holds.
#[inline(never)]
fn render_page(key: u64) -> Vec<u8> {
    let mut page = Vec::with_capacity(4096);
    while page.len() < 4096 {
        let line = format!("<p>item {key}</p>");
        // Never past the capacity: a page is one 4 KiB block, never moved.
        let n = line.len().min(4096 - page.len());
        page.extend_from_slice(&line.as_bytes()[..n]);
    }
    page
}

/// The bug: a ~500-byte record per request, appended and never trimmed.
#[inline(never)]
fn audit(request: u64, key: u64) {
    let record = format!("request {request} asked for key {key}; {}", "x".repeat(450));
    AUDIT_LOG
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(record);
}

/// Temporary per-request work, freed before the request ends.
#[inline(never)]
fn parse_request(request: u64) -> u64 {
    let headers: Vec<String> = (0..8).map(|i| format!("x-header-{i}: {request}")).collect();
    headers.iter().map(|h| h.len() as u64).sum::<u64>() ^ request
}

fn handle_request(cache: &mut Lru, request: u64) -> usize {
    let key = parse_request(request).wrapping_mul(0x9e37_79b9_7f4a_7c15) % 2048;
    audit(request, key);
    cache.get_or_render(key)
}

fn is_at(s: &Suspect, name: &str) -> bool {
    s.frames().iter().any(|f| f.function().contains(name))
}

/// Prints warnings (the monitor's announcements) to stderr.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{}] {}", r.level(), r.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn main() -> Result<(), leakscope::Error> {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Warn);

    let monitor = Monitor::start(
        MonitorConfig::default()
            .interval(Duration::from_millis(200))
            .window(10)
            .min_growth_bytes(512 * 1024)
            .on_suspect(|s| {
                eprintln!(
                    "on_suspect: site {} is growing at {:.0} KiB/s",
                    s.id(),
                    s.growth_rate() / 1024.0
                )
            }),
    )?;

    // The first verdict comes once the window is full (10 summaries, 1.8 s).
    // Serve for at least two windows, and until the leak is named; at most
    // 9 seconds.
    let started = Instant::now();
    let mut cache = Lru::new(256);
    let mut served = 0u64;
    let mut bytes = 0usize;
    let mut named_at = None;
    while started.elapsed() < Duration::from_secs(9) {
        for _ in 0..20 {
            bytes += handle_request(&mut cache, served);
            served += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
        if named_at.is_none() && monitor.suspects().iter().any(|s| is_at(s, "audit")) {
            named_at = Some(started.elapsed());
        }
        if named_at.is_some() && started.elapsed() >= Duration::from_secs(4) {
            break;
        }
    }
    black_box(bytes);

    println!(
        "\nserved {served} requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    match named_at {
        Some(t) => println!(
            "the audit log was named a leak suspect after {:.1} s",
            t.as_secs_f64()
        ),
        None => println!("the audit log was NOT named within 9 s"),
    }
    let suspects = monitor.suspects();
    println!("\n{} suspect(s), most suspicious first:", suspects.len());
    for s in &suspects {
        println!("{s}");
    }
    let cache_named = suspects.iter().any(|s| is_at(s, "render_page"));
    println!(
        "the cache is {}a suspect",
        if cache_named { "" } else { "not " }
    );

    // The cache's retained series: flat around its full size.
    let history = monitor.history();
    if let Some(h) = history.iter().find(|h| {
        h.frames()
            .iter()
            .any(|f| f.function().contains("render_page"))
    }) {
        let kib: Vec<u64> = h.points().iter().map(|&(_, b)| b / 1024).collect();
        println!("\ncache pages, KiB per summary (estimates): {kib:?}");
    }
    monitor.stop();

    // Memory held for over a second: the audit records dominate.
    let old = leakscope::snapshot().live_older_than(Duration::from_secs(1));
    println!("\nheld for over 1 s (estimates):");
    for site in old.sites().iter().take(3) {
        let owner = site
            .frames()
            .iter()
            .find(|f| !f.is_std_library())
            .map_or("?", |f| f.function());
        println!("{:>10} KiB  {owner}", site.live_bytes() / 1024);
    }
    Ok(())
}
