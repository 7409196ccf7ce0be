//! The pprof endpoint, checked with the client it is for: `go tool pprof`
//! fetching from the built-in server names the leaking function on top,
//! and `?seconds=1` gives the growth of that second. Also the headers Go
//! sends, and the profile's metadata as pprof reads it (`-raw`).

#![cfg(feature = "http")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use common::http::{get, require, temp_dir};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

/// 48 MiB in 768 blocks: far above anything else this process holds.
const BLOCKS: usize = 768;
const BLOCK: usize = 64 * 1024;

static LEAK: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn leak_here() {
    let mut slots = LEAK.lock().unwrap();
    slots.reserve_exact(BLOCKS);
    for _ in 0..BLOCKS {
        slots.push(std::hint::black_box(vec![0xab; BLOCK]));
    }
}

fn leak() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(leak_here);
}

/// One test at a time: the delta test's growth must not land in the other
/// test's profile.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `go tool pprof ARGS` (see `common::go`).
fn pprof(args: &[&str]) -> String {
    require("go", "golang-go");
    common::go::pprof(args)
}

/// The function of each row of `go tool pprof -top`, in order.
fn top_functions(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 6).then(|| cols[5..].join(" "))
        })
        .collect()
}

#[test]
fn go_tool_pprof_names_the_leak_on_top() {
    let _s = serial();
    leak();
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let url = format!("http://{}/debug/pprof/heap", server.local_addr());
    let out = pprof(&["-top", &url]);
    let top = top_functions(&out);
    assert!(
        top.first().is_some_and(|f| f.ends_with("leak_here")),
        "the top entry is not leak_here:\n{out}"
    );
    // The allocs profile: same data, alloc_space by default.
    let url = format!("http://{}/debug/pprof/allocs", server.local_addr());
    let out = pprof(&["-top", &url]);
    assert!(out.contains("Type: alloc_space"), "{out}");
    server.stop();
}

#[inline(never)]
fn grow_here(stop: &AtomicBool, kept: &Mutex<Vec<Vec<u8>>>) {
    while !stop.load(Ordering::Relaxed) {
        kept.lock()
            .unwrap()
            .push(std::hint::black_box(vec![0xcd; 256 * 1024]));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn seconds_gives_the_growth_of_that_second() {
    let _s = serial();
    leak();
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let kept: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::with_capacity(4096));
    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| grow_here(&stop, &kept));
        let url = format!("http://{}/debug/pprof/heap?seconds=1", server.local_addr());
        let out = pprof(&["-top", &url]);
        stop.store(true, Ordering::Relaxed);
        out
    });
    let top = top_functions(&out);
    assert!(
        top.first().is_some_and(|f| f.ends_with("grow_here")),
        "the delta's top entry is not grow_here:\n{out}"
    );
    // The big leak did not change during the second: not in the delta.
    assert!(
        !top.iter().any(|f| f.ends_with("leak_here")),
        "leak_here is in the delta:\n{out}"
    );
    drop(kept);
    server.stop();
}

#[test]
fn profiles_carry_gos_headers_and_metadata() {
    let _s = serial();
    leak();
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let dir = temp_dir("pprof-raw");
    for (path, filename, default) in [
        ("/debug/pprof/heap", "heap", "inuse_space"),
        ("/debug/pprof/allocs", "allocs", "alloc_space"),
        ("/debug/pprof/heap?seconds=1", "heap-delta", "inuse_space"),
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
        assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(
            r.header("Content-Disposition"),
            Some(format!("attachment; filename=\"{filename}\"").as_str()),
            "{path}"
        );
        let file = dir.path().join(filename);
        std::fs::write(&file, &r.body).unwrap();
        let raw = pprof(&["-raw", file.to_str().unwrap()]);
        // Go's four sample types, in Go's order, default marked with [dflt].
        let types = raw.lines().find(|l| l.starts_with("Samples:")).map(|_| {
            raw.lines()
                .skip_while(|l| !l.starts_with("Samples:"))
                .nth(1)
                .unwrap_or("")
                .to_string()
        });
        let types = types.unwrap_or_default();
        let names: Vec<&str> = types.split_whitespace().collect();
        assert_eq!(
            names
                .iter()
                .map(|n| n.trim_end_matches("[dflt]"))
                .collect::<Vec<_>>(),
            [
                "alloc_objects/count",
                "alloc_space/bytes",
                "inuse_objects/count",
                "inuse_space/bytes"
            ],
            "{path}:\n{raw}"
        );
        assert!(
            names.iter().any(|n| *n == format!("{default}/bytes[dflt]")),
            "{path}: default sample type is not {default}:\n{types}"
        );
        // A snapshot has no duration (Parca reads one as a delta); the
        // delta's is the second it covers.
        let duration = raw.lines().find_map(|l| l.strip_prefix("Duration: "));
        if filename == "heap-delta" {
            let d = duration.unwrap_or_else(|| panic!("no duration in the delta:\n{raw}"));
            assert!(d.starts_with("1.") || d == "1s", "delta duration {d}");
        } else {
            assert_eq!(duration, None, "{path} has a duration:\n{raw}");
        }
    }
    server.stop();
}
