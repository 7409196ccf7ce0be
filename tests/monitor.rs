//! The growth monitor and allocation age, in exact mode.
//!
//! Tests that start a monitor run one at a time (`serial()`): each monitor
//! sees the whole process, and the thread-count test must not see another
//! test's monitor thread. Growth is paced by the monitor's own summaries
//! (`wait_for_summary`), not by sleeping, so each interval sees exactly the
//! steps the test made in it, however loaded the machine is.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use leakscope::{Error, Frame, Monitor, MonitorConfig, Suspect};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

const MIB: usize = 1 << 20;
const INTERVAL: Duration = Duration::from_millis(50);
const WINDOW: usize = 6;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn config() -> MonitorConfig {
    MonitorConfig::default()
        .interval(INTERVAL)
        .window(WINDOW)
        .min_growth_bytes(MIB as u64)
}

fn mentions(frames: &[Frame], name: &str) -> bool {
    frames.iter().any(|f| f.function().contains(name))
}

fn suspect_at(monitor: &Monitor, name: &str) -> Option<Suspect> {
    monitor
        .suspects()
        .into_iter()
        .find(|s| mentions(s.frames(), name))
}

/// Waits until the monitor has taken a summary after `since`. A summary reads
/// its time before the counters, so that summary saw everything done before
/// `since`.
fn wait_for_summary(monitor: &Monitor, since: Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !monitor
        .history()
        .iter()
        .any(|h| h.points().last().is_some_and(|&(t, _)| t > since))
    {
        assert!(
            Instant::now() < deadline,
            "the monitor took no summary for 60 s"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// The leak: 1 MiB more every call, kept.
#[inline(never)]
fn grow_step(store: &mut Vec<Box<[u8]>>) {
    store.push(vec![1u8; MIB].into_boxed_slice());
}

/// Log records the monitor emitted, for the warning test.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record<'_>) {
        if r.level() == log::Level::Warn {
            LOGGED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r.args().to_string());
        }
    }

    fn flush(&self) {}
}

static LOGGER: CaptureLogger = CaptureLogger;

#[test]
fn steady_growth_becomes_a_suspect_within_the_window() {
    let _s = serial();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Warn);
    let called: Arc<Mutex<Vec<(u32, i64)>>> = Arc::default();
    let monitor = Monitor::start(config().on_suspect({
        let called = called.clone();
        move |s| called.lock().unwrap().push((s.id(), s.growth_bytes()))
    }))
    .unwrap();
    // One call site for every step: the caller's line is part of the stack,
    // so a second loop would grow a second site.
    let mut store = Vec::with_capacity(64);
    let mut found: Option<(usize, Suspect)> = None;
    for step in 0.. {
        grow_step(&mut store);
        wait_for_summary(&monitor, Instant::now());
        let now = suspect_at(&monitor, "grow_step");
        match &found {
            None if now.is_some() => found = now.map(|s| (step, s)),
            // `step + 1` intervals of growth so far.
            None => assert!(
                step + 1 < WINDOW,
                "a site growing 1 MiB per interval was not a suspect within {WINDOW} intervals"
            ),
            // Keep growing two more steps: still a suspect, announced once.
            Some((at, _)) => {
                assert!(
                    now.is_some(),
                    "the leak stopped being a suspect while still growing"
                );
                if step == at + 2 {
                    break;
                }
            }
        }
    }
    let (at, s) = found.unwrap();
    let kept_then = ((at + 1) * MIB) as u64;
    // Exact mode: the site holds exactly what the test kept.
    assert_eq!(s.live_bytes(), kept_then);
    assert!(
        s.growth_bytes() >= 2 * MIB as i64,
        "growth {}",
        s.growth_bytes()
    );
    assert_eq!(
        s.growth_bytes() % MIB as i64,
        0,
        "growth {}",
        s.growth_bytes()
    );
    assert!(s.growth_bytes() <= s.live_bytes() as i64);
    assert!(s.growth_rate() > 0.0 && s.score() > 0.0);
    assert_eq!(
        monitor.suspects()[0].id(),
        s.id(),
        "the leak is the top suspect"
    );

    // The history agrees: aligned points, the latest one is the live bytes.
    let history = monitor.history();
    let h = history
        .iter()
        .find(|h| h.id() == s.id())
        .expect("history of the suspect");
    assert!(mentions(h.frames(), "grow_step"));
    assert!(h.points().len() >= 3 && h.points().len() <= WINDOW);
    assert_eq!(h.live_bytes(), (store.len() * MIB) as u64);
    assert!(
        h.points()
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
    );

    monitor.stop();
    let calls: Vec<_> = called
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.0 == s.id())
        .copied()
        .collect();
    assert_eq!(calls.len(), 1, "callback calls for the leak: {calls:?}");
    assert!(calls[0].1 >= 2 * MIB as i64);
    let logged = LOGGED.lock().unwrap();
    let site = format!("(site {})", s.id());
    let warnings: Vec<&String> = logged.iter().filter(|m| m.contains(&site)).collect();
    assert_eq!(warnings.len(), 1, "{logged:?}");
    let w = warnings[0];
    assert!(
        w.contains("leak suspect") && w.contains("/s") && w.contains("grow_step"),
        "{w}"
    );
    drop(store);
}

/// A cache of `cap` entries of 256 KiB: evicts the oldest when full.
#[inline(never)]
fn cache_insert(cache: &mut VecDeque<Box<[u8]>>, cap: usize, key: usize) {
    if cache.len() == cap {
        cache.pop_front();
    }
    cache.push_back(vec![key as u8; 256 * 1024].into_boxed_slice());
}

#[test]
fn a_bounded_cache_is_never_a_suspect() {
    let _s = serial();
    let monitor = Monitor::start(config()).unwrap();
    let cap = 16; // 4 MiB, well above min_growth_bytes
    let mut cache = VecDeque::with_capacity(cap);
    // Fill at once (after the first summary, so the window sees the jump),
    // then churn for two windows: four new entries (and four evictions) per
    // interval. One call site, as in a real program.
    wait_for_summary(&monitor, Instant::now());
    let mut key = 0;
    for step in 0..=2 * WINDOW {
        for _ in 0..if step == 0 { cap } else { 4 } {
            cache_insert(&mut cache, cap, key);
            key += 1;
        }
        wait_for_summary(&monitor, Instant::now());
        if let Some(s) = suspect_at(&monitor, "cache_insert") {
            panic!("the bounded cache became a suspect at step {step}:\n{s:#}");
        }
    }
    // The monitor did see the cache, at its constant size.
    let history = monitor.history();
    let h = history
        .iter()
        .find(|h| mentions(h.frames(), "cache_insert"))
        .expect("the cache is in the history");
    assert_eq!(h.live_bytes(), (cap * 256 * 1024) as u64);
    monitor.stop();
}

/// A temporary 8 MiB buffer.
#[inline(never)]
fn spike_buffer() -> Vec<u8> {
    vec![2u8; 8 * MIB]
}

/// A burst of many small temporary blocks: 4 MiB in 64 KiB pieces.
#[inline(never)]
fn burst() -> Vec<Box<[u8]>> {
    (0..64)
        .map(|i| vec![i as u8; 64 * 1024].into_boxed_slice())
        .collect()
}

#[test]
fn freed_spikes_are_never_suspects() {
    let _s = serial();
    let monitor = Monitor::start(config()).unwrap();
    let mut spike: Option<Vec<u8>> = None;
    let mut pieces: Vec<Box<[u8]>> = Vec::new();
    // Spikes held across 0, 1 or 2 summaries, and ending windows on a spike.
    let pattern = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 0, 1];
    for (step, &held) in pattern.iter().enumerate() {
        spike = if held == 1 {
            Some(spike.take().unwrap_or_else(spike_buffer))
        } else {
            None
        };
        pieces = if step % 3 == 1 { burst() } else { Vec::new() };
        wait_for_summary(&monitor, Instant::now());
        for name in ["spike_buffer", "burst"] {
            if let Some(s) = suspect_at(&monitor, name) {
                panic!("temporary memory became a suspect at step {step}:\n{s:#}");
            }
        }
    }
    // Both were seen by the monitor: the last summary caught the spike held.
    let history = monitor.history();
    let h = history
        .iter()
        .find(|h| mentions(h.frames(), "spike_buffer"))
        .expect("the spike is in the history");
    assert_eq!(h.live_bytes(), 8 * MIB as u64);
    assert!(
        history
            .iter()
            .any(|h| mentions(h.frames(), "monitor::burst"))
    );
    monitor.stop();
    black_box((spike, pieces));
}

#[test]
fn the_monitor_thread_is_never_recorded() {
    let _s = serial();
    let before = leakscope::snapshot();
    let monitor = Monitor::start(
        config()
            .interval(Duration::from_millis(10))
            .window(4)
            .min_growth_bytes(1)
            .on_suspect(|s| {
                // Allocates on the monitor thread, under its guard.
                let text = format!("{s:#}");
                black_box(text);
            }),
    )
    .unwrap();
    // Give it growth to judge, suspects to announce and frames to symbolize.
    let mut store = Vec::with_capacity(16);
    for _ in 0..6 {
        grow_step(&mut store);
        wait_for_summary(&monitor, Instant::now());
    }
    assert!(suspect_at(&monitor, "grow_step").is_some());
    monitor.stop();
    let after = leakscope::snapshot();
    // Reported frames have the tracker's own frames trimmed off the top, so
    // look at the raw stacks of every site that allocated meanwhile.
    let mut checked = 0;
    for d in after
        .diff(&before)
        .sites()
        .iter()
        .filter(|d| d.total_allocs_delta() > 0)
    {
        let mut names = Vec::new();
        for &addr in d.addresses() {
            backtrace::resolve(addr as *mut std::ffi::c_void, |sym| {
                names.push(sym.name().map(|n| format!("{n:#}")).unwrap_or_default());
            });
        }
        let monitor_frames: Vec<&String> = names
            .iter()
            .filter(|n| n.contains("leakscope::monitor"))
            .collect();
        assert!(
            monitor_frames.is_empty(),
            "site {} was allocated by the monitor: {monitor_frames:?}",
            d.id()
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "the test's own growth is recorded, so some site must have been checked"
    );
    drop(store);
}

/// Monitor threads alive in this process (by the name they are given).
fn monitor_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("leakscope-mon"))
        .count()
}

/// Waits for `monitor_threads()` to reach `n` (a thread appears in /proc a
/// moment before it names itself, and leaves it a moment after `join`).
fn wait_for_monitor_threads(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while monitor_threads() != n {
        assert!(
            Instant::now() < deadline,
            "expected {n} monitor threads, found {}",
            monitor_threads()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn stop_and_drop_leave_no_thread_behind() {
    let _s = serial();
    let base = monitor_threads();
    // An interval of an hour: stop must wake the thread, not wait it out.
    let slow = config().interval(Duration::from_secs(3600));
    let monitor = Monitor::start(slow.clone()).unwrap();
    wait_for_monitor_threads(base + 1);
    monitor.stop();
    assert!(monitor_threads() <= base + 1);
    wait_for_monitor_threads(base);

    let a = Monitor::start(slow.clone()).unwrap();
    let b = Monitor::start(slow).unwrap();
    wait_for_monitor_threads(base + 2);
    drop(a);
    wait_for_monitor_threads(base + 1);
    drop(b);
    wait_for_monitor_threads(base);
}

#[test]
fn invalid_configs_are_errors() {
    for bad in [
        config().interval(Duration::ZERO),
        config().window(0),
        config().window(2),
    ] {
        match Monitor::start(bad.clone()) {
            Err(Error::InvalidConfig(msg)) => {
                assert!(msg.contains("interval") || msg.contains("window"), "{msg}")
            }
            other => panic!("{bad:?} gave {other:?}"),
        }
    }
    Monitor::start(config().window(3)).unwrap().stop();
}

/// Keeps `n` blocks of `size` bytes.
#[inline(never)]
fn keep_mixed(into: &mut Vec<Box<[u8]>>, n: usize, size: usize) {
    for _ in 0..n {
        into.push(vec![4u8; size].into_boxed_slice());
    }
}

#[inline(never)]
fn keep_early(n: usize) -> Vec<Box<[u8]>> {
    (0..n).map(|_| vec![5u8; 1000].into_boxed_slice()).collect()
}

#[inline(never)]
fn keep_recent(n: usize) -> Vec<Box<[u8]>> {
    (0..n).map(|_| vec![6u8; 3000].into_boxed_slice()).collect()
}

#[test]
fn live_older_than_separates_early_from_recent_blocks() {
    let mut mixed = Vec::with_capacity(20);
    let early = keep_early(7);
    let pause = Duration::from_millis(200);
    let mut recent = Vec::new();
    // Two rounds through one call site: a site with blocks of both ages.
    for round in 0..2 {
        if round == 1 {
            thread::sleep(pause);
            recent = keep_recent(3);
        }
        keep_mixed(&mut mixed, [5, 4][round], 777);
    }

    let snap = leakscope::snapshot();
    let site = |s: &leakscope::Snapshot, name: &str| {
        s.sites()
            .iter()
            .find(|x| mentions(x.frames(), name))
            .cloned()
    };
    let e = site(&snap, "keep_early").expect("early site");
    let r = site(&snap, "keep_recent").expect("recent site");
    let m = site(&snap, "keep_mixed").expect("mixed site");
    assert_eq!((e.live_allocs(), e.live_bytes()), (7, 7000));
    assert_eq!((r.live_allocs(), r.live_bytes()), (3, 9000));
    assert_eq!((m.live_allocs(), m.live_bytes()), (9, 9 * 777));

    // The early blocks were born before the pause, the recent ones after it.
    // (Births may be read from a clock that lags by up to one kernel tick,
    // so differences between ages are compared with half a pause to spare.)
    let (e_age, r_age, m_age) = (
        e.oldest_age().unwrap(),
        r.oldest_age().unwrap(),
        m.oldest_age().unwrap(),
    );
    assert!(e_age >= pause, "{e_age:?}");
    assert!(m_age >= pause, "{m_age:?}");
    assert!(
        e_age > r_age + pause / 2,
        "early {e_age:?} recent {r_age:?}"
    );

    // Any age between the two groups splits them, within the same snapshot.
    let cut = r_age + pause / 2;
    let old = snap.live_older_than(cut);
    let (oe, om) = (
        site(&old, "keep_early").expect("early blocks are old"),
        site(&old, "keep_mixed").expect("mixed"),
    );
    assert_eq!((oe.live_allocs(), oe.live_bytes()), (7, 7000));
    assert_eq!(
        (om.live_allocs(), om.live_bytes()),
        (5, 5 * 777),
        "only the mixed site's early blocks"
    );
    assert!(
        site(&old, "keep_recent").is_none(),
        "recent blocks are not old"
    );
    assert_eq!(old.sample_interval(), 1);
    // Ages inside the restriction are those of the kept blocks.
    assert_eq!(om.oldest_age(), m.oldest_age());

    // Age zero keeps everything; an age beyond the process's life, nothing.
    assert_eq!(
        snap.live_older_than(Duration::ZERO).live_bytes(),
        snap.live_bytes()
    );
    assert_eq!(
        snap.live_older_than(Duration::from_secs(1 << 40))
            .live_bytes(),
        0
    );
    drop((early, recent, mixed));
}

/// Exact mode: every figure is exact, so no interval, no sample column, no
/// "noise" marks; the intervals collapse to the figures.
#[test]
fn exact_mode_shows_no_sampling_error() {
    let base = leakscope::snapshot();
    let kept: Vec<Box<[u8]>> = (0..16)
        .map(|_| vec![1u8; 4096].into_boxed_slice())
        .collect();
    let snap = leakscope::snapshot();
    for s in snap.sites() {
        assert_eq!(s.live_bytes_interval(), (s.live_bytes(), s.live_bytes()));
    }
    let diff = snap.diff(&base);
    for d in diff.sites() {
        let (low, high) = d.live_bytes_delta_interval();
        assert_eq!((low, high), (d.live_bytes_delta(), d.live_bytes_delta()));
        assert_eq!(d.within_noise(), d.live_bytes_delta() == 0);
    }
    let text = format!("{snap}\n{diff}");
    assert!(
        !text.contains('±') && !text.contains("samples") && !text.contains("noise"),
        "{text}"
    );
    black_box(kept);
}
