//! The growth monitor's horizons under sampling, with real threads and real
//! time: a `Vec<u64>` growing by doublings and a slow leak are named, a buffer
//! that doubled up to its size at once never is, and the monitor says "not
//! judged yet" until its first verdict.
//!
//! The tests run in parallel (their wall time is that of the longest); each
//! monitor sees the whole process, so each test looks only for its own
//! functions' sites.

use std::hint::black_box;
use std::thread;
use std::time::{Duration, Instant};

use leakscope::{Frame, Monitor, MonitorConfig, Suspect};

mod common;

/// Sampled, at a small interval so that a test-sized slow leak (128 KiB/s)
/// is beyond sampling noise within seconds.
#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(64 * 1024);

const MIB: usize = 1 << 20;

fn mentions(frames: &[Frame], name: &str) -> bool {
    frames.iter().any(|f| f.function().contains(name))
}

fn find(suspects: &[Suspect], name: &str) -> Option<Suspect> {
    suspects
        .iter()
        .find(|s| mentions(s.frames(), name))
        .cloned()
}

/// 4096 u64 (32 KiB) more in one `Vec`: its capacity, the live bytes, grows
/// only by doublings.
#[inline(never)]
fn doubling_vec_push(v: &mut Vec<u64>) {
    for i in 0..4096 {
        v.push(black_box(i));
    }
}

/// 16 KiB more, kept, in small blocks.
#[inline(never)]
fn slow_leak_step(store: &mut Vec<Box<[u8]>>) {
    for _ in 0..4 {
        store.push(vec![1u8; 4096].into_boxed_slice());
    }
}

/// A buffer grown by doublings from 64 KiB to 16 MiB, at once.
#[inline(never)]
fn warm_buffer() -> Vec<u8> {
    let mut b: Vec<u8> = Vec::with_capacity(64 * 1024);
    let chunk = [7u8; 4096];
    while b.len() < 16 * MIB {
        b.extend_from_slice(&chunk);
    }
    b
}

/// Doubling `Vec<u64>` at 256 KiB/s, slow leak at 128 KiB/s (below
/// `min_growth_bytes` over the finest window of 0.9 s, so only a coarser
/// level can name it), warmed buffer: monitor at 100 ms x 10.
#[test]
fn a_doubling_vec_and_a_slow_leak_are_named_a_warmed_buffer_never() {
    let monitor = Monitor::start(
        MonitorConfig::default()
            .interval(Duration::from_millis(100))
            .window(10)
            .min_growth_bytes(MIB as u64),
    )
    .unwrap();
    let start = Instant::now();
    let mut vec: Vec<u64> = Vec::new();
    // Reserved up front: the store's own growth is not the leak.
    let mut store: Vec<Box<[u8]>> = Vec::with_capacity(8192);
    let mut buffer: Option<Vec<u8>> = None;
    let (mut doubling, mut slow) = (None, None);
    let mut tick = 0u64;
    // Until both are named, and for 30 s at least: the buffer's step stays in
    // level 1's windows for 9 s and reaches level 2's at 10 s and 20 s (the
    // other tests take 40 s anyway).
    while start.elapsed() < Duration::from_secs(45)
        && (doubling.is_none() || slow.is_none() || start.elapsed() < Duration::from_secs(30))
    {
        tick += 1;
        doubling_vec_push(&mut vec);
        leakscope::with_labels(&[("tenant", "acme")], || slow_leak_step(&mut store));
        if buffer.is_none() && start.elapsed() > Duration::from_millis(1050) {
            buffer = Some(warm_buffer());
        }
        let suspects = monitor.suspects();
        if let Some(b) = find(&suspects, "warm_buffer") {
            panic!("the warmed buffer was named at {:?}: {b}", start.elapsed());
        }
        if doubling.is_none() {
            doubling = find(&suspects, "doubling_vec_push").map(|s| (start.elapsed(), s));
        }
        if slow.is_none() {
            slow = find(&suspects, "slow_leak_step").map(|s| (start.elapsed(), s));
        }
        // 32 KiB / 0.125 s = 256 KiB/s; 16 KiB / 0.125 s = 128 KiB/s.
        thread::sleep(Duration::from_millis(125));
    }
    let (t, s) = doubling.expect("the doubling Vec<u64> named within 45 s");
    eprintln!(
        "doubling Vec named after {t:?} ({tick} ticks) at level {}:\n{s}",
        s.level()
    );
    let (t, s) = slow.expect("the slow leak named within 45 s");
    eprintln!("slow leak named after {t:?} at level {}:\n{s}", s.level());
    assert!(
        s.level() >= 1,
        "level 0's window cannot hold 1 MiB of it: {s}"
    );
    let text = s.to_string();
    assert!(text.contains("tenant=acme"), "{text}");
    assert!(text.contains(" ± "), "sampled, so an interval: {text}");
    assert!(s.samples() > 0 && text.contains(" samples)"), "{text}");
    let (low, high) = s.growth_interval();
    assert!(low < s.growth_bytes() as f64 && (s.growth_bytes() as f64) < high);
    black_box((&vec, &store, &buffer));
}

/// The status before and after the first verdict, at 100 ms x 10 (the first
/// verdict after 4 intervals) and at the README's settings.
#[test]
fn the_status_says_not_judged_yet_until_the_first_verdict() {
    let readme = Monitor::start(MonitorConfig::default()).unwrap();
    let status = readme.status();
    assert!(!status.judged());
    assert_eq!(status.to_string(), "not judged yet: first verdict in 40 s");
    assert_eq!(status.suspects(), 0);
    drop(readme);

    let monitor = Monitor::start(
        MonitorConfig::default()
            .interval(Duration::from_millis(100))
            .window(10),
    )
    .unwrap();
    let status = monitor.status();
    assert!(!status.judged(), "{status}");
    let left = status.first_verdict_in().unwrap();
    assert!(
        left <= Duration::from_millis(400) && left > Duration::ZERO,
        "{left:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !monitor.status().judged() {
        assert!(Instant::now() < deadline, "no verdict after 30 s");
        thread::sleep(Duration::from_millis(20));
    }
    let status = monitor.status();
    assert_eq!(status.first_verdict_in(), None);
    assert!(status.horizon() >= Duration::from_millis(350), "{status:?}");
    assert!(
        status.to_string().starts_with("judged over the last "),
        "{status}"
    );
}

/// 1 MiB/s, kept.
#[inline(never)]
fn fast_leak_step(store: &mut Vec<Box<[u8]>>) {
    store.push(vec![1u8; 64 * 1024].into_boxed_slice());
}

/// At the README's settings (10 s x 30, >= 1 MiB), a leak of 1 MiB/s is named
/// within 60 s of start: at the first verdict, 40 s in.
#[test]
fn a_fast_leak_is_named_within_a_minute_at_the_default_settings() {
    let monitor = Monitor::start(MonitorConfig::default()).unwrap();
    let start = Instant::now();
    let mut store: Vec<Box<[u8]>> = Vec::with_capacity(4096);
    let named = loop {
        fast_leak_step(&mut store);
        if let Some(s) = find(&monitor.suspects(), "fast_leak_step") {
            break (start.elapsed(), s);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not named within 60 s"
        );
        thread::sleep(Duration::from_micros(62_500));
    };
    eprintln!("1 MiB/s leak named after {:?}:\n{}", named.0, named.1);
    black_box(&store);
}

/// 5 MiB more, kept: at one call per 100 ms, 50 MiB/s.
#[inline(never)]
#[cfg(feature = "pprof")]
fn dump_leak_step(store: &mut Vec<Box<[u8]>>) {
    for _ in 0..5 {
        store.push(vec![3u8; MIB].into_boxed_slice());
    }
}

/// The black box: a leak of 50 MiB/s with a dump at every 32 MiB new high
/// and `max_dumps(4)` leaves 2 to 4 complete dumps (each with its text
/// report, no temporary file), each read by `go tool pprof` with the leak on
/// top.
// Dumps are pprof profiles (without the feature, `dump_dir` is an error:
// `leaks::dump`'s unit tests).
#[test]
#[cfg(feature = "pprof")]
fn dumps_on_new_highs_are_complete_and_bounded() {
    let scratch = common::http::temp_dir("dumps");
    let dir = scratch.path();
    // Bad settings are errors, not silent no-ops.
    let bad = |c: MonitorConfig| Monitor::start(c).unwrap_err().to_string();
    assert!(
        bad(MonitorConfig::default()
            .dump_dir(dir)
            .dump_near_limit(&[1.5])
            .memory_limit(1 << 30))
        .contains("(0, 1]")
    );
    assert!(bad(MonitorConfig::default().dump_on_new_high(1)).contains("dump_dir"));
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    assert!(
        bad(MonitorConfig::default()
            .dump_dir(file.join("sub"))
            .dump_on_new_high(1))
        .contains("I/O")
    );

    let monitor = Monitor::start(
        MonitorConfig::default()
            .interval(Duration::from_millis(100))
            .window(10)
            .dump_dir(dir)
            .dump_on_new_high(32 * MIB as u64)
            .max_dumps(4),
    )
    .unwrap();
    let mut store: Vec<Box<[u8]>> = Vec::with_capacity(256);
    for _ in 0..30 {
        dump_leak_step(&mut store);
        thread::sleep(Duration::from_millis(100));
    }
    // Let the monitor see the last step, then stop it (joins its thread:
    // no dump is being written after this).
    thread::sleep(Duration::from_millis(250));
    monitor.stop();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let dumps: Vec<&String> = names.iter().filter(|n| n.ends_with(".pb.gz")).collect();
    assert!((2..=4).contains(&dumps.len()), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    for d in &dumps {
        assert!(d.starts_with("heap-") && d.contains("-new-high"), "{d}");
        let txt = format!("{}.txt", d.trim_end_matches(".pb.gz"));
        assert!(names.contains(&txt), "no {txt} beside {d}: {names:?}");
        let text = std::fs::read_to_string(dir.join(&txt)).unwrap();
        assert!(text.contains("dump_leak_step"), "{text}");
        let top = common::go::pprof_file(&["-top", "-sample_index=inuse_space"], &dir.join(d));
        let first = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .unwrap_or_default();
        assert!(first.contains("dump_leak_step"), "{d}: not on top:\n{top}");
    }
    black_box(&store);
}
