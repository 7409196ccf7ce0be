//! The growth monitor: a background thread that keeps a short history of
//! per-site live bytes and flags the sites that keep growing (leak suspects).
//!
//! Each interval the thread reads the per-site counters (no walk of the live
//! lists, see `snapshot::summary`) and appends one point per site to the
//! history's levels (see `window.rs`). Memory is bounded by (sites live in
//! the retained history) x `LEVELS` x `window` points; a site whose live
//! bytes were zero at every retained point is forgotten.
//!
//! **The thread holds the reentrancy guard for its whole life**, so nothing
//! it allocates (the window, the summaries, symbolization, the `log` call and
//! the user's callback) is recorded: the monitor never reports itself. The
//! price is that the user's callback is not recorded either.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::dump::{DEFAULT_MAX_DUMPS, DumpConfig, Dumper};
use super::running::{self, View};
use super::status::MonitorStatus;
use super::suspect::{SiteHistory, Suspect};
use super::window::{Window, min_points};
use crate::Error;
use crate::profile;
use crate::recorder::Guard;

type Callback = Arc<dyn Fn(&Suspect) + Send + Sync + 'static>;

/// Settings of a [`Monitor`]: how often it looks, how far back, and how much
/// growth counts.
///
/// The defaults suit a long-running server: a summary every 10 s, a window of
/// 30 summaries (5 minutes), at least 1 MiB of growth over the window.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leakscope::MonitorConfig;
///
/// let config = MonitorConfig::default()
///     .interval(Duration::from_secs(5))
///     .window(60)
///     .min_growth_bytes(4 << 20)
///     .on_suspect(|s| eprintln!("{s}"));
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct MonitorConfig {
    interval: Duration,
    window: usize,
    min_growth_bytes: u64,
    on_suspect: Option<Callback>,
    dumps: DumpConfig,
    retainers: bool,
}

impl MonitorConfig {
    /// The default configuration (see the type docs); `const`, so it can
    /// initialise a `static`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// static CONFIG: leakscope::MonitorConfig =
    ///     leakscope::MonitorConfig::new().interval(Duration::from_secs(30));
    /// # let _ = &CONFIG;
    /// ```
    pub const fn new() -> MonitorConfig {
        MonitorConfig {
            interval: Duration::from_secs(10),
            window: 30,
            min_growth_bytes: 1 << 20,
            on_suspect: None,
            dumps: DumpConfig {
                dir: None,
                on_new_high: None,
                near_limit: Vec::new(),
                memory_limit: None,
                max_dumps: None,
            },
            retainers: false,
        }
    }

    /// Whether to find each new suspect's top holder ([`Suspect::holder`],
    /// and "held by static app::AUDIT_LOG" in the warning) with a retainer
    /// scan ([`retainers`](crate::retainers), a fork) when suspects are
    /// first announced. Off by default.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = leakscope::MonitorConfig::new().retainers(true);
    /// # let _ = config;
    /// ```
    pub const fn retainers(mut self, on: bool) -> MonitorConfig {
        self.retainers = on;
        self
    }

    /// Time between two summaries. Must not be zero.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = leakscope::MonitorConfig::default().interval(Duration::from_millis(500));
    /// # let _ = config;
    /// ```
    pub const fn interval(mut self, interval: Duration) -> MonitorConfig {
        self.interval = interval;
        self
    }

    /// Summaries kept, and so judged together; at least 3. Growth is
    /// measured over `window - 1` intervals.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = leakscope::MonitorConfig::default().window(12);
    /// # let _ = config;
    /// ```
    pub const fn window(mut self, summaries: usize) -> MonitorConfig {
        self.window = summaries;
        self
    }

    /// Least growth of a site's live bytes over the window for it to be a
    /// suspect (0 is taken as 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = leakscope::MonitorConfig::default().min_growth_bytes(64 << 20);
    /// # let _ = config;
    /// ```
    pub const fn min_growth_bytes(mut self, bytes: u64) -> MonitorConfig {
        self.min_growth_bytes = bytes;
        self
    }

    /// Called on the monitor thread when a site becomes a suspect for the
    /// first time (after the warning is logged).
    ///
    /// The callback runs with the tracker's reentrancy guard held, like all
    /// of the monitor thread: what it allocates is not recorded. It should
    /// return quickly (the next summary waits for it); a panic in it is
    /// caught and logged, and the monitor carries on.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = leakscope::MonitorConfig::default().on_suspect(|s| {
    ///     eprintln!("leak suspect, growing {:.0} B/s:\n{s:#}", s.growth_rate());
    /// });
    /// # let _ = config;
    /// ```
    pub fn on_suspect(mut self, f: impl Fn(&Suspect) + Send + Sync + 'static) -> MonitorConfig {
        // Under the guard, like everything else the monitor allocates.
        self.on_suspect = Some(Guard::run(|| Arc::new(f) as Callback));
        self
    }

    /// Turns on heap dumps (the black box): the monitor's thread writes a
    /// pprof profile (`.pb.gz`, for `go tool pprof`) and the text report
    /// beside it (`.txt`) into `dir` on the triggers set with
    /// [`dump_on_new_high`](MonitorConfig::dump_on_new_high) and
    /// [`dump_near_limit`](MonitorConfig::dump_near_limit); with neither,
    /// near the memory limit, at 80% and 90% of it. Names carry the time and the reason:
    /// `heap-<UTC time>-<seq>-<reason>.pb.gz`, such as
    /// `heap-20261204T221530.123Z-0001-new-high.pb.gz`, so they sort by time.
    /// Each file is written to a temporary name and renamed, so a kill mid-write (the OOM killer)
    /// leaves no torn dump. The directory is created if needed; one that
    /// cannot be created or written makes [`Monitor::start`] fail. Needs the
    /// `pprof` feature.
    ///
    /// # Examples
    ///
    /// ```
    /// let dir = std::env::temp_dir().join("leakscope-doc-dumps");
    /// let config = leakscope::MonitorConfig::default()
    ///     .dump_dir(&dir)
    ///     .dump_on_new_high(256 << 20)
    ///     .dump_near_limit(&[0.8, 0.9])
    ///     .memory_limit(4 << 30)
    ///     .max_dumps(8);
    /// let monitor = leakscope::Monitor::start(config)?;
    /// # drop(monitor);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn dump_dir(mut self, dir: impl Into<std::path::PathBuf>) -> MonitorConfig {
        self.dumps.dir = Some(dir.into());
        self
    }

    /// Dumps each time the live heap (the sum of the sites' estimates)
    /// passes its previous high by `bytes`: the first summary sets the high,
    /// each dump raises it to the live heap then. Must not be zero.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = leakscope::MonitorConfig::default().dump_dir("dumps").dump_on_new_high(64 << 20);
    /// # let _ = config;
    /// ```
    pub fn dump_on_new_high(mut self, bytes: u64) -> MonitorConfig {
        self.dumps.on_new_high = Some(bytes);
        self
    }

    /// Dumps once per rise of the resident size past each of these
    /// fractions of the memory limit (each in (0, 1]; a fraction re-arms
    /// when the resident size falls below it again). The limit is
    /// [`memory_limit`](MonitorConfig::memory_limit) when set, else the
    /// process's own cgroup's (v2 `memory.max`, v1
    /// `memory.limit_in_bytes`), and with neither, the machine's memory
    /// (`MemTotal`), which also caps a cgroup limit above it: the same
    /// binary dumps near its container's limit in production and near the
    /// machine's on a laptop.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = leakscope::MonitorConfig::default()
    ///     .dump_dir("dumps")
    ///     .dump_near_limit(&[0.75, 0.9, 0.97])
    ///     .memory_limit(2 << 30);
    /// # let _ = config;
    /// ```
    pub fn dump_near_limit(mut self, fractions: &[f64]) -> MonitorConfig {
        self.dumps.near_limit = fractions.to_vec();
        self
    }

    /// The memory limit that [`dump_near_limit`](MonitorConfig::dump_near_limit)
    /// measures against, instead of the cgroup's or the machine's.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = leakscope::MonitorConfig::default().memory_limit(512 << 20);
    /// # let _ = config;
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> MonitorConfig {
        self.dumps.memory_limit = Some(bytes);
        self
    }

    /// Dumps kept in the directory (16 by default): past `n`, the oldest
    /// (by the time in their names, earlier runs' included) are deleted with
    /// their text reports. At least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = leakscope::MonitorConfig::default().dump_dir("dumps").max_dumps(4);
    /// # let _ = config;
    /// ```
    pub fn max_dumps(mut self, n: usize) -> MonitorConfig {
        self.dumps.max_dumps = Some(n);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.interval.is_zero() {
            return Err(Error::InvalidConfig(
                "monitor interval must be greater than zero".to_string(),
            ));
        }
        if self.window < 3 {
            return Err(Error::InvalidConfig(format!(
                "monitor window must hold at least 3 summaries, got {}",
                self.window
            )));
        }
        Ok(())
    }
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        MonitorConfig::new()
    }
}

impl fmt::Debug for MonitorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorConfig")
            .field("interval", &self.interval)
            .field("window", &self.window)
            .field("min_growth_bytes", &self.min_growth_bytes)
            .field(
                "on_suspect",
                &self.on_suspect.as_ref().map(|_| "Fn(&Suspect)"),
            )
            .field("dump_dir", &self.dumps.dir)
            .field("dump_on_new_high", &self.dumps.on_new_high)
            .field("dump_near_limit", &self.dumps.near_limit)
            .field("memory_limit", &self.dumps.memory_limit)
            .field(
                "max_dumps",
                &self.dumps.max_dumps.unwrap_or(DEFAULT_MAX_DUMPS),
            )
            .field("retainers", &self.retainers)
            .finish()
    }
}

/// A running growth monitor: a background thread that summarises per-site
/// live bytes every interval and flags the sites that keep growing.
///
/// # What it keeps
///
/// One point per site per summary at the finest level, and coarser levels
/// each `window` times coarser than the one below (4 levels: at the defaults
/// of 10 s x 30, windows of 5 minutes, 2.5 hours, 3 days and 3 months), each
/// holding its last `window` points. Every level is judged once it has
/// `min(window, 5)` points, so the first verdict comes `min(window, 5) - 1`
/// intervals after start (40 s at the defaults), on a partial window;
/// [`status`](Monitor::status) says so until then. Memory is bounded: 4 x
/// `window` points (24 bytes each) per site that held live bytes at some
/// retained point.
///
/// # The suspect rule
///
/// On one level, let `v[0..n]` be a site's live bytes at its points,
/// `G = v[n-1] - v[0]`, `mid = (n-1)/2` and `k = ceil((n-1)/3)`. A change is
/// *clear* when it exceeds twice its sampling standard deviation (below).
/// The site is a suspect when all of these hold:
///
/// 1. **enough growth**: `G >= min_growth_bytes`, and clear;
/// 2. **not a burst that came back down**: the last value is within `G/4`
///    of the window's maximum;
/// 3. **sustained, smooth or step-wise**: a clear new high in the first half
///    (over `v[0]`) and another in the second half (over the first half's
///    maximum). A `Vec` growing by doublings (flat for ever longer stretches
///    between steps) passes on the level whose window holds two steps; a
///    buffer that doubled up to its size within one interval and stayed there
///    (one step) never does, nor does a sawtooth whose peaks do not rise;
/// 4. **not a plateau**: over the last `k` intervals it grew clearly, at no
///    less than a quarter of its average rate over the window.
///
/// A site named by any level is a suspect; its figures come from the finest
/// level naming it ([`Suspect::level`]). The score is `G`; suspects are
/// sorted by score, highest first.
///
/// # Sampling noise
///
/// Under sampling (interval `R`), the change of a site's estimate between two
/// points has a standard deviation of at most
/// `sqrt(min(R x churned bytes, 0.65 x R² x churned blocks))`, where
/// "churned" is what the site allocated plus freed between the two points:
/// a block of `s` bytes, sampled with probability `p = 1 - exp(-s/R)` and
/// weighted `1/p`, adds `s² / (exp(s/R) - 1)` to the variance, which is at
/// most `R·s` and at most `0.65·R²`. Blocks live at both points cancel
/// exactly. Exact mode has no noise. So a small cache churning many
/// megabytes needs a larger real growth to be named than a leak that only
/// allocates.
///
/// # What it cannot see
///
/// A cache still filling looks like a leak until it stops (rule 4 clears it
/// once its last third is flat); a leak slower than `min_growth_bytes` over
/// the coarsest window judged so far is not named yet; under sampling, a
/// site growing by less than a few sample intervals (512 KiB by default)
/// over a window is within noise. Live bytes only: memory freed late (at
/// shutdown) or held outside the global allocator (mmap, C libraries) is
/// not seen.
///
/// When a site becomes a suspect for the first time, the monitor logs a
/// warning through the `log` crate (target `leakscope::monitor`) with its
/// top frames and growth rate, then calls the
/// [`on_suspect`](MonitorConfig::on_suspect) callback.
///
/// Stopping ([`stop`](Monitor::stop) or dropping) wakes the thread at once
/// and joins it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leakscope::{Monitor, MonitorConfig};
///
/// let monitor = Monitor::start(MonitorConfig::default().interval(Duration::from_millis(20)))?;
/// std::thread::sleep(Duration::from_millis(100));
/// for suspect in monitor.suspects() {
///     println!("{suspect}");
/// }
/// monitor.stop();
/// # Ok::<(), leakscope::Error>(())
/// ```
pub struct Monitor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    interval: Duration,
    window: usize,
    min_growth_bytes: u64,
}

/// What the monitor thread and the `Monitor` handle share.
struct Shared {
    state: Mutex<State>,
    /// When the monitor started (the first summary), for `status`.
    started: Instant,
    interval: Duration,
    /// Points the finest level needs for a verdict.
    min_points: usize,
    /// Signalled by `stop`, so the thread does not sleep out its interval.
    wake: Condvar,
}

struct State {
    stop: bool,
    window: Window,
    /// The verdict on the latest window, sorted.
    suspects: Vec<Suspect>,
}

impl View for Shared {
    fn suspects(&self) -> Vec<Suspect> {
        lock(&self.state).suspects.clone()
    }

    fn history(&self) -> Vec<SiteHistory> {
        lock(&self.state).window.history()
    }

    fn status(&self) -> MonitorStatus {
        let state = lock(&self.state);
        let first_verdict_in = (!state.window.judged()).then(|| {
            let due = self
                .interval
                .checked_mul(self.min_points.saturating_sub(1) as u32)
                .unwrap_or(Duration::MAX);
            due.saturating_sub(self.started.elapsed())
        });
        MonitorStatus {
            first_verdict_in,
            horizon: state.window.horizon(),
            suspects: state.suspects.len(),
        }
    }

    fn stopped(&self) -> bool {
        lock(&self.state).stop
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state stays consistent at every unlock, so a panic elsewhere while
    // it was held does not make it unusable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Monitor {
    /// Starts the monitor thread; the first summary is taken at once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a zero interval, a window below 3, or a
    /// bad dump setting (see [`MonitorConfig::dump_dir`]: a fraction outside
    /// (0, 1], dump triggers without a directory, `dump_near_limit` with no
    /// limit known); [`Error::Io`] if the dump directory cannot be created
    /// or written, or the thread cannot be spawned.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use leakscope::{Error, Monitor, MonitorConfig};
    ///
    /// let bad = Monitor::start(MonitorConfig::default().window(2));
    /// assert!(matches!(bad, Err(Error::InvalidConfig(_))));
    ///
    /// let monitor = Monitor::start(MonitorConfig::default().interval(Duration::from_secs(1)))?;
    /// drop(monitor); // stops and joins the thread
    /// # Ok::<(), Error>(())
    /// ```
    pub fn start(config: MonitorConfig) -> Result<Monitor, Error> {
        Guard::run(|| config.validate())?;
        let dumper = Guard::run(|| Dumper::new(&config.dumps))?;
        // Under the guard: the shared state and the thread's own bookkeeping
        // (its handle, name, closure) belong to the monitor, not to the
        // program being profiled.
        Guard::run(|| {
            let shared = Arc::new(Shared {
                state: Mutex::new(State {
                    stop: false,
                    window: Window::new(config.window),
                    suspects: Vec::new(),
                }),
                started: Instant::now(),
                interval: config.interval,
                min_points: min_points(config.window),
                wake: Condvar::new(),
            });
            // So `/metrics` and the dashboard find this monitor.
            let view: Arc<dyn View> = shared.clone();
            running::register(Arc::downgrade(&view));
            let (interval, window, min_growth_bytes) =
                (config.interval, config.window, config.min_growth_bytes);
            let thread = std::thread::Builder::new()
                .name("leakscope-monitor".to_string())
                .spawn({
                    let shared = shared.clone();
                    move || run(&shared, &config, dumper)
                })?;
            Ok(Monitor {
                shared,
                thread: Some(thread),
                interval,
                window,
                min_growth_bytes,
            })
        })
    }

    /// The current leak suspects, most suspicious (highest score) first.
    /// Evaluated on every level of the history at the latest summary; empty
    /// before the first verdict (see [`status`](Monitor::status), which
    /// tells "not judged yet" from "no suspects").
    ///
    /// # Examples
    ///
    /// ```
    /// # let monitor = leakscope::Monitor::start(Default::default())?;
    /// if let Some(top) = monitor.suspects().first() {
    ///     eprintln!("{:.0} B/s at {}", top.growth_rate(), top.frames().first().map_or("?", |f| f.function()));
    /// }
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn suspects(&self) -> Vec<Suspect> {
        Guard::run(|| View::suspects(&*self.shared))
    }

    /// Whether the monitor has judged yet (and if not, when it will), how far
    /// back it looks, and how many suspects it has: what to show instead of
    /// an empty list that reads as "all clear".
    ///
    /// # Examples
    ///
    /// ```
    /// let monitor = leakscope::Monitor::start(Default::default())?;
    /// let status = monitor.status();
    /// assert!(!status.judged());
    /// assert!(status.to_string().starts_with("not judged yet: first verdict in "));
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn status(&self) -> MonitorStatus {
        Guard::run(|| View::status(&*self.shared))
    }

    /// The retained series of every site that held live bytes during the
    /// finest level's window, largest live bytes first: up to `window` points
    /// per site, for plots and dashboards. Points of a site are aligned with
    /// those of every other site (a site that had no live bytes at a summary
    /// has a zero there).
    ///
    /// # Examples
    ///
    /// ```
    /// # let monitor = leakscope::Monitor::start(Default::default())?;
    /// for site in monitor.history().iter().take(3) {
    ///     let values: Vec<u64> = site.points().iter().map(|&(_, bytes)| bytes).collect();
    ///     println!("site {}: {values:?}", site.id());
    /// }
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn history(&self) -> Vec<SiteHistory> {
        Guard::run(|| View::history(&*self.shared))
    }

    /// Stops the monitor and waits for its thread to end. Returns at once
    /// (plus the time to finish a summary or callback in progress), not after
    /// the rest of the interval.
    ///
    /// # Examples
    ///
    /// ```
    /// let monitor = leakscope::Monitor::start(Default::default())?;
    /// monitor.stop();
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if thread.thread().id() == std::thread::current().id() {
            // Dropped by its own callback: joining would wait for ourselves.
            // The thread sees `stop` and ends after the callback returns.
            return;
        }
        if thread.join().is_err() {
            log::error!("leakscope: the monitor thread panicked");
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("interval", &self.interval)
            .field("window", &self.window)
            .field("min_growth_bytes", &self.min_growth_bytes)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

/// The monitor thread.
fn run(shared: &Shared, config: &MonitorConfig, mut dumper: Option<Dumper>) {
    // Held until the thread ends; see the module docs. A new thread never
    // holds it already, so this is always `Some`.
    let _guard = Guard::enter();
    let mut announced: HashSet<u32> = HashSet::new();
    let mut next = Instant::now();
    loop {
        let summary = profile::summary();
        let live: u64 = summary.live.iter().sum();
        // Exact mode: every live block is a sample, and the counters say how
        // many. Under sampling, counted from the live lists below.
        let exact_blocks = (summary.sample_interval <= 1).then(|| summary.live_blocks.clone());
        let mut suspects = {
            let mut state = lock(&shared.state);
            if state.stop {
                return;
            }
            state.window.push(summary);
            state.window.suspects(config.min_growth_bytes)
        };
        // Outside the lock: the walk copies the live lists.
        if !suspects.is_empty() {
            let counts = exact_blocks.unwrap_or_else(profile::live_samples);
            for s in &mut suspects {
                s.samples = counts.get(s.id as usize).copied().unwrap_or(0);
            }
        }
        let mut fresh: Vec<Suspect> = {
            let mut state = lock(&shared.state);
            state.suspects = suspects;
            state
                .suspects
                .iter()
                .filter(|s| announced.insert(s.id))
                .cloned()
                .collect()
        };
        // Outside the lock: symbolization and the user's callback may take a
        // while, and `suspects()`/`history()` callers should not wait for them.
        if config.retainers && !fresh.is_empty() {
            // A scan failure (another scan running, no fork) leaves the
            // holders unknown; the suspects are announced anyway.
            if let Ok(held) = crate::retainers::retainers() {
                for s in &mut fresh {
                    s.holder = held.site(s.id).and_then(|r| top_holder(r.paths()));
                }
            }
        }
        for suspect in &fresh {
            announce(suspect, config.on_suspect.as_ref());
        }
        // Outside the lock too: a dump takes a snapshot and writes files.
        if let Some(d) = &mut dumper {
            d.after_summary(live);
        }

        // Fixed rate; after falling behind (a slow callback, a stopped
        // process) start afresh from now instead of firing a burst.
        let now = Instant::now();
        let deadline = match next.checked_add(config.interval) {
            Some(d) if d > now => Some(d),
            _ => now.checked_add(config.interval),
        };
        let Some(deadline) = deadline else {
            // An interval too long to represent: wait for `stop` only.
            let mut state = lock(&shared.state);
            while !state.stop {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            return;
        };
        next = deadline;
        let mut state = lock(&shared.state);
        loop {
            if state.stop {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = shared
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn announce(suspect: &Suspect, callback: Option<&Callback>) {
    log::warn!("leakscope: {suspect}");
    if let Some(cb) = callback {
        // A panicking callback must not take the monitor down with it (its
        // `Monitor` handle would then report a panic at an unrelated place).
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(suspect))).is_err() {
            log::error!("leakscope: the on_suspect callback panicked");
        }
    }
}

/// The root that holds most of a site: the root of its largest retainer
/// path (`paths` come largest first), except that a named root (a static, a
/// thread-local, a stack) is preferred to "unsampled heap memory" when its
/// path reaches at least half as much. In sampled mode the chain from a
/// static often runs through unsampled blocks, and the named root is the
/// better answer when it reaches a fair share; but a thread's stack that
/// happens to point at the one block a handler is working on reaches a few
/// KiB of a leak of many MiB, and naming it the holder misleads (seen in a
/// trial: "held by stack of thread 'tokio-rt-worker'" for a static cache).
fn top_holder(paths: &[crate::RetainerPath]) -> Option<crate::Root> {
    let largest = paths.first()?;
    let named = paths
        .iter()
        .find(|p| !matches!(p.root(), crate::Root::UnsampledHeap))
        .filter(|p| p.bytes().saturating_mul(2) >= largest.bytes());
    Some(named.unwrap_or(largest).root().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_the_largest_path_unless_a_named_root_reaches_half_as_much() {
        use crate::{RetainerPath, Root};
        let stack = || Root::Stack {
            thread: "tokio-rt-worker".into(),
        };
        let cache = || Root::Static {
            name: "app::CACHE".into(),
        };
        let path = RetainerPath::made_up;
        assert_eq!(top_holder(&[]), None);
        // A stack pointing at the block a handler is working on: a few KiB
        // of a leak of MiB that unsampled blocks chain to.
        let h = top_holder(&[path(Root::UnsampledHeap, 6 << 20), path(stack(), 2048)]);
        assert!(matches!(h, Some(Root::UnsampledHeap)), "{h:?}");
        // A static reaching a fair share is the better name.
        let h = top_holder(&[path(Root::UnsampledHeap, 6 << 20), path(cache(), 3 << 20)]);
        assert!(matches!(h, Some(Root::Static { .. })), "{h:?}");
        // The largest path's own root, named, wins outright.
        let h = top_holder(&[path(cache(), 1 << 20), path(stack(), 1 << 20)]);
        assert!(matches!(h, Some(Root::Static { .. })), "{h:?}");
    }

    #[test]
    fn invalid_configs_are_errors() {
        assert!(MonitorConfig::default().validate().is_ok());
        assert!(MonitorConfig::default().window(3).validate().is_ok());
        let e = MonitorConfig::default()
            .interval(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig(ref m) if m.contains("interval")),
            "{e}"
        );
        let e = MonitorConfig::default().window(2).validate().unwrap_err();
        assert!(
            matches!(e, Error::InvalidConfig(ref m) if m.contains("window")),
            "{e}"
        );
    }
}
