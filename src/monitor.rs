//! The growth monitor: a background thread that keeps a short history of
//! per-site live bytes and flags the sites that keep growing (leak suspects).
//!
//! Each interval the thread reads the per-site counters (no walk of the live
//! lists, see `snapshot::summary`) and appends one number per site to a
//! sliding window. Memory is bounded by (sites live in the window) x
//! `window` numbers; a site whose live bytes were zero for the whole window
//! is forgotten.
//!
//! **The thread holds the reentrancy guard for its whole life**, so nothing
//! it allocates (the window, the summaries, symbolization, the `log` call and
//! the user's callback) is recorded: the monitor never reports itself. The
//! price is that the user's callback is not recorded either.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::guard::Guard;
use crate::report::text::{human, write_frames};
use crate::snapshot::{self, Summary};
use crate::symbolize::{Frame, SiteStack};
use crate::{Error, clock};

/// The least R² of the least-squares line through a suspect's window.
const MIN_FIT: f64 = 0.7;

/// Frames shown by a suspect's one-screen `Display` (and the log warning).
const TOP_FRAMES: usize = 5;

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
        }
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
            .finish()
    }
}

/// A running growth monitor: a background thread that summarises per-site
/// live bytes every interval and flags the sites that keep growing.
///
/// # The suspect rule
///
/// Verdicts start once the window is full (`window` summaries, the first one
/// taken at start): on a part of a window, a cache warming up and a leak look
/// alike. Then let `v[0..n]` be a site's live bytes in the `n = window`
/// summaries (at least 3), `G = v[n-1] - v[0]` its growth over the window and
/// `k = ceil((n-1)/3)` the "recent" part. The site is a suspect when all of
/// these hold:
///
/// 1. **enough growth**: `G >= min_growth_bytes`;
/// 2. **sustained**: it rose in more than half of the `n-1` intervals;
/// 3. **a clear trend**: the least-squares line of live bytes against time
///    has a positive slope and explains at least 70% of the variance
///    (R² >= 0.7), which rules out sawtooth and random-walk patterns;
/// 4. **not a burst that came back down**: the last value is within `G/4`
///    of the window's maximum;
/// 5. **not a plateau**: over the last `k` intervals it still grew, at no
///    less than a quarter of its average rate over the window.
///
/// The score is `G x R² x (intervals that rose / intervals)`: the window's
/// growth in bytes, discounted by how irregular it was. Suspects are sorted
/// by score, highest first.
///
/// The window slides: a site that stops growing drops out once the recent
/// part of the window is flat (rule 5). A cache that fills in less than half
/// the window and then stays flat is never a suspect (rule 2), while one that
/// is still filling after two thirds of the window looks like a leak until
/// it has been flat for a while: make the window at least twice as long as
/// your caches take to warm up.
///
/// Under sampling, a site shows up reliably only if it grows by at least
/// the sample interval (512 KiB by default) in most intervals; choose the
/// interval accordingly.
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
    /// Signalled by `stop`, so the thread does not sleep out its interval.
    wake: Condvar,
}

struct State {
    stop: bool,
    window: Window,
    /// The verdict on the latest window, sorted.
    suspects: Vec<Suspect>,
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
    /// [`Error::InvalidConfig`] for a zero interval or a window below 3;
    /// [`Error::Io`] if the thread cannot be spawned.
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
                wake: Condvar::new(),
            });
            let (interval, window, min_growth_bytes) =
                (config.interval, config.window, config.min_growth_bytes);
            let thread = std::thread::Builder::new()
                .name("leakscope-monitor".to_string())
                .spawn({
                    let shared = shared.clone();
                    move || run(&shared, &config)
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
    /// Evaluated on the latest window; empty until the window is full (the
    /// first `window` summaries, taken `window - 1` intervals after start).
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
        Guard::run(|| lock(&self.shared.state).suspects.clone())
    }

    /// The retained series of every site that held live bytes during the
    /// current window, largest live bytes first: up to `window` points per
    /// site, for plots and dashboards. Points of a site are aligned with
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
        Guard::run(|| lock(&self.shared.state).window.history())
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
fn run(shared: &Shared, config: &MonitorConfig) {
    // Held until the thread ends; see the module docs. A new thread never
    // holds it already, so this is always `Some`.
    let _guard = Guard::enter();
    let mut announced: HashSet<u32> = HashSet::new();
    let mut next = Instant::now();
    loop {
        let summary = snapshot::summary();
        let fresh: Vec<Suspect> = {
            let mut state = lock(&shared.state);
            if state.stop {
                return;
            }
            state.window.push(summary);
            state.suspects = state.window.suspects(config.min_growth_bytes);
            state
                .suspects
                .iter()
                .filter(|s| announced.insert(s.id))
                .cloned()
                .collect()
        };
        // Outside the lock: symbolization and the user's callback may take a
        // while, and `suspects()`/`history()` callers should not wait for them.
        for suspect in &fresh {
            announce(suspect, config.on_suspect.as_ref());
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

/// The sliding window of summaries.
struct Window {
    cap: usize,
    /// Tracker-clock time of each summary, oldest first.
    times: VecDeque<u64>,
    /// Invariant: every series has exactly `times.len()` values, and at
    /// least one of them is non-zero.
    series: HashMap<u32, Series>,
}

struct Series {
    /// Shared by every `Suspect` and `SiteHistory` handed out for this site,
    /// so its stack is symbolized once.
    stack: SiteStack,
    values: VecDeque<u64>,
}

impl Window {
    fn new(cap: usize) -> Window {
        Window {
            cap,
            times: VecDeque::new(),
            series: HashMap::new(),
        }
    }

    fn push(&mut self, summary: Summary) {
        if self.times.len() == self.cap {
            self.times.pop_front();
            for s in self.series.values_mut() {
                s.values.pop_front();
            }
        }
        self.times.push_back(summary.taken_us);
        for (id, s) in self.series.iter_mut() {
            s.values
                .push_back(summary.live.get(*id as usize).copied().unwrap_or(0));
        }
        let n = self.times.len();
        for (id, (&live, addrs)) in summary.live.iter().zip(&summary.stacks).enumerate() {
            if live == 0 {
                continue;
            }
            self.series.entry(id as u32).or_insert_with(|| {
                let mut values = VecDeque::with_capacity(n);
                values.resize(n - 1, 0);
                values.push_back(live);
                Series {
                    stack: SiteStack::new(addrs.clone()),
                    values,
                }
            });
        }
        self.series.retain(|_, s| s.values.iter().any(|&v| v > 0));
    }

    fn suspects(&self, min_growth_bytes: u64) -> Vec<Suspect> {
        // A full window only (see the rule on `Monitor`); `cap >= 3`.
        if self.times.len() < self.cap.max(3) {
            return Vec::new();
        }
        let t0 = self.times[0];
        let secs: Vec<f64> = self
            .times
            .iter()
            .map(|&t| t.saturating_sub(t0) as f64 / 1e6)
            .collect();
        let span = Duration::from_micros(self.times[self.times.len() - 1].saturating_sub(t0));
        let mut values = Vec::with_capacity(self.times.len());
        let mut out: Vec<Suspect> = self
            .series
            .iter()
            .filter_map(|(&id, s)| {
                values.clear();
                values.extend(s.values.iter().copied());
                let v = judge(&secs, &values, min_growth_bytes)?;
                Some(Suspect {
                    id,
                    stack: s.stack.clone(),
                    growth_bytes: v.growth_bytes,
                    growth_rate: v.rate,
                    live_bytes: values[values.len() - 1],
                    score: v.score,
                    span,
                })
            })
            .collect();
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        out
    }

    fn history(&self) -> Vec<SiteHistory> {
        let at: Vec<Instant> = self.times.iter().map(|&t| clock::instant_of(t)).collect();
        let mut out: Vec<SiteHistory> = self
            .series
            .iter()
            .map(|(&id, s)| SiteHistory {
                id,
                stack: s.stack.clone(),
                points: at.iter().copied().zip(s.values.iter().copied()).collect(),
            })
            .collect();
        out.sort_by(|a, b| b.live_bytes().cmp(&a.live_bytes()).then(a.id.cmp(&b.id)));
        out
    }
}

/// What the rule found for one series.
#[derive(Debug, PartialEq)]
struct Verdict {
    growth_bytes: i64,
    /// Least-squares slope, bytes per second.
    rate: f64,
    score: f64,
}

/// The suspect rule of [`Monitor`] (see its docs) on one site's window:
/// `secs[i]` is the time of summary `i` in seconds, `v[i]` its live bytes.
fn judge(secs: &[f64], v: &[u64], min_growth_bytes: u64) -> Option<Verdict> {
    let n = v.len();
    if n < 3 || secs.len() != n {
        return None;
    }
    let intervals = n - 1;
    let last = v[n - 1];
    let growth = i128::from(last) - i128::from(v[0]);
    // 1. Enough growth.
    if growth < i128::from(min_growth_bytes.max(1)) {
        return None;
    }
    // 2. Rose in most intervals.
    let rises = v.windows(2).filter(|w| w[1] > w[0]).count();
    if 2 * rises <= intervals {
        return None;
    }
    // 4. Not a burst: gave back at most a quarter of the growth.
    let max = v.iter().copied().max().unwrap_or(last);
    if 4 * i128::from(max - last) > growth {
        return None;
    }
    // 5. Not a plateau: the last k intervals grew at >= 1/4 of the average
    // rate, i.e. recent / k >= growth / intervals / 4.
    let k = intervals.div_ceil(3);
    let recent = i128::from(last) - i128::from(v[n - 1 - k]);
    if recent <= 0 || 4 * recent * intervals as i128 <= growth * k as i128 {
        return None;
    }
    // 3. A clear upward trend.
    let (slope, r2) = least_squares(secs, v)?;
    if slope <= 0.0 || r2 < MIN_FIT {
        return None;
    }
    let growth_bytes = growth.clamp(i64::MIN.into(), i64::MAX.into()) as i64;
    Some(Verdict {
        growth_bytes,
        rate: slope,
        score: growth as f64 * r2 * rises as f64 / intervals as f64,
    })
}

/// Slope and R² of the least-squares line `v ~ a + b * t`; `None` when the
/// times or the values do not vary.
fn least_squares(t: &[f64], v: &[u64]) -> Option<(f64, f64)> {
    let n = t.len() as f64;
    let mt = t.iter().sum::<f64>() / n;
    let mv = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (&x, &y) in t.iter().zip(v) {
        let (dx, dy) = (x - mt, y as f64 - mv);
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return None;
    }
    Some((sxy / sxx, sxy * sxy / (sxx * syy)))
}

/// A site whose live bytes keep growing: see [`Monitor`] for the rule.
///
/// `Display` prints one line of figures and the top frames outside the
/// standard library; the alternate form (`{:#}`) prints the whole stack.
///
/// # Examples
///
/// ```
/// # let monitor = leakscope::Monitor::start(Default::default())?;
/// for s in monitor.suspects() {
///     println!(
///         "site {}: {:+} B over the window ({:.0} B/s), {} B live, score {:.0}",
///         s.id(), s.growth_bytes(), s.growth_rate(), s.live_bytes(), s.score()
///     );
/// }
/// # Ok::<(), leakscope::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Suspect {
    id: u32,
    stack: SiteStack,
    growth_bytes: i64,
    growth_rate: f64,
    live_bytes: u64,
    score: f64,
    span: Duration,
}

impl Suspect {
    /// The site's stable id (see [`Site::id`](crate::Site::id)).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The call stack, as [`Site::frames`](crate::Site::frames): symbolized
    /// on first use, innermost first, the tracker's frames trimmed.
    pub fn frames(&self) -> &[Frame] {
        self.stack.frames()
    }

    /// The raw return addresses, as [`Site::addresses`](crate::Site::addresses).
    pub fn addresses(&self) -> &[usize] {
        self.stack.addresses()
    }

    /// Growth of live bytes from the first to the last summary of the window.
    pub fn growth_bytes(&self) -> i64 {
        self.growth_bytes
    }

    /// Growth rate in bytes per second: the slope of the least-squares line
    /// through the window.
    pub fn growth_rate(&self) -> f64 {
        self.growth_rate
    }

    /// Live bytes at the latest summary.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// How suspicious the site is: the window's growth in bytes, times the
    /// R² of the trend line, times the fraction of intervals in which it
    /// rose. Only meaningful for ranking suspects against each other.
    pub fn score(&self) -> f64 {
        self.score
    }

    /// Time from the first to the last summary of the window judged.
    pub fn span(&self) -> Duration {
        self.span
    }
}

impl fmt::Display for Suspect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "leak suspect: site {} grew by {} in {:.1} s ({}/s), {} live now",
            self.id,
            human(self.growth_bytes as f64),
            self.span.as_secs_f64(),
            human(self.growth_rate),
            human(self.live_bytes as f64),
        )?;
        let frames = self.frames();
        if f.alternate() {
            return write_frames(f, frames);
        }
        // The innermost frames are allocator and collection internals; show
        // the first ones that are the program's own.
        let start = frames
            .iter()
            .position(|fr| !fr.is_std_library())
            .unwrap_or(0);
        let shown = &frames[start..frames.len().min(start + TOP_FRAMES)];
        write_frames(f, shown)?;
        if start + shown.len() < frames.len() {
            writeln!(
                f,
                "        ... ({} more frames)",
                frames.len() - start - shown.len()
            )?;
        }
        Ok(())
    }
}

/// One site's retained series, from [`Monitor::history`].
///
/// # Examples
///
/// ```
/// # let monitor = leakscope::Monitor::start(Default::default())?;
/// for site in monitor.history() {
///     let first = site.points().first().map_or(0, |p| p.1);
///     println!("site {} went from {first} to {} live bytes", site.id(), site.live_bytes());
/// }
/// # Ok::<(), leakscope::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SiteHistory {
    id: u32,
    stack: SiteStack,
    points: Vec<(Instant, u64)>,
}

impl SiteHistory {
    /// The site's stable id (see [`Site::id`](crate::Site::id)).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The call stack, as [`Site::frames`](crate::Site::frames).
    pub fn frames(&self) -> &[Frame] {
        self.stack.frames()
    }

    /// The raw return addresses, as [`Site::addresses`](crate::Site::addresses).
    pub fn addresses(&self) -> &[usize] {
        self.stack.addresses()
    }

    /// `(when the summary was taken, estimated live bytes)`, oldest first.
    pub fn points(&self) -> &[(Instant, u64)] {
        &self.points
    }

    /// Live bytes at the latest summary.
    pub fn live_bytes(&self) -> u64 {
        self.points.last().map_or(0, |p| p.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Judges `mib` (in MiB) sampled once a second.
    fn judge_mib(mib: &[f64], min_growth: u64) -> Option<Verdict> {
        let secs: Vec<f64> = (0..mib.len()).map(|i| i as f64).collect();
        let v: Vec<u64> = mib.iter().map(|&m| (m * MIB as f64) as u64).collect();
        judge(&secs, &v, min_growth)
    }

    #[test]
    fn steady_growth_is_a_suspect() {
        let v = judge_mib(&[0.0, 1.0, 2.0, 3.0, 4.0], MIB).expect("steady growth");
        assert_eq!(v.growth_bytes, 4 * MIB as i64);
        assert!((v.rate - MIB as f64).abs() < 1.0, "slope {}", v.rate);
        // R² = 1 and every interval rose: the score is the growth.
        assert!(
            (v.score - 4.0 * MIB as f64).abs() < 1.0,
            "score {}",
            v.score
        );
    }

    #[test]
    fn three_summaries_suffice_and_two_do_not() {
        assert!(judge_mib(&[0.0, 1.0, 2.0], MIB).is_some());
        assert!(judge_mib(&[0.0, 2.0], MIB).is_none());
    }

    #[test]
    fn noisy_growth_is_a_suspect() {
        assert!(judge_mib(&[1.0, 2.0, 1.9, 3.1, 4.0, 4.8, 4.7, 6.0, 7.1], MIB).is_some());
    }

    #[test]
    fn too_little_growth_is_not() {
        assert!(judge_mib(&[0.0, 0.25, 0.5, 0.75], MIB).is_none());
        assert!(judge_mib(&[0.0, 0.25, 0.5, 0.75], MIB / 2).is_some());
    }

    #[test]
    fn flat_and_shrinking_are_not() {
        assert!(judge_mib(&[4.0; 8], 1).is_none());
        assert!(judge_mib(&[8.0, 7.0, 6.0, 5.0], 1).is_none());
    }

    #[test]
    fn a_burst_that_came_back_down_is_not() {
        // Grew steadily, then gave most of it back.
        assert!(judge_mib(&[0.0, 2.0, 4.0, 6.0, 8.0, 9.0, 2.0], MIB).is_none());
        // A spike at the very end.
        assert!(judge_mib(&[0.0, 0.0, 0.0, 0.0, 8.0], MIB).is_none());
    }

    #[test]
    fn a_plateau_is_not() {
        // A cache that filled over the first half and then stayed flat.
        assert!(judge_mib(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 5.0], MIB).is_none());
        // Slowing down to a crawl at the end counts as a plateau too.
        assert!(
            judge_mib(
                &[0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 15.01, 15.02, 15.03, 15.04],
                MIB
            )
            .is_none()
        );
    }

    #[test]
    fn sawtooth_is_not() {
        let teeth = [1.0, 2.0, 3.0, 0.0];
        for offset in 0..4 {
            // Windows shorter than a period only see one tooth rising.
            for len in 5..16 {
                let v: Vec<f64> = (0..len).map(|i| 2.0 * teeth[(i + offset) % 4]).collect();
                assert!(judge_mib(&v, MIB).is_none(), "{v:?}");
            }
        }
    }

    #[test]
    fn alternating_spikes_are_not() {
        for len in 3..12 {
            for phase in 0..2 {
                let v: Vec<f64> = (0..len)
                    .map(|i| if (i + phase) % 2 == 1 { 8.0 } else { 0.0 })
                    .collect();
                assert!(judge_mib(&v, MIB).is_none(), "{v:?}");
            }
        }
    }

    #[test]
    fn no_time_spread_is_not_judged() {
        let v = [0, MIB, 2 * MIB];
        assert!(judge(&[1.0, 1.0, 1.0], &v, 1).is_none());
    }

    #[test]
    fn window_keeps_aligned_bounded_series() {
        let mut w = Window::new(3);
        let stack: Arc<[usize]> = Arc::from(&[1usize, 2][..]);
        let summary = |t: u64, live: Vec<u64>| Summary {
            taken_us: t,
            stacks: vec![stack.clone(); live.len()],
            live,
        };
        w.push(summary(0, vec![0, 5]));
        w.push(summary(10, vec![7, 5]));
        let h = w.history();
        assert_eq!(h.len(), 2);
        let site0 = h.iter().find(|s| s.id() == 0).unwrap();
        assert_eq!(
            site0.points().iter().map(|p| p.1).collect::<Vec<_>>(),
            [0, 7]
        );
        w.push(summary(20, vec![0, 0]));
        w.push(summary(30, vec![0, 0]));
        // The window holds t = 10, 20, 30: site 1's 5 at t = 10 is still in.
        assert_eq!(w.history().len(), 2);
        w.push(summary(40, vec![3, 0]));
        // Now site 1 has been zero for the whole window and is forgotten.
        let h = w.history();
        assert_eq!(h.iter().map(|s| s.id()).collect::<Vec<_>>(), [0]);
        assert_eq!(
            h[0].points().iter().map(|p| p.1).collect::<Vec<_>>(),
            [0, 0, 3]
        );
        for t in [50, 60, 70] {
            w.push(summary(t, vec![0, 0]));
        }
        assert!(w.history().is_empty());
        assert_eq!(w.times.len(), 3);
    }

    #[test]
    fn verdicts_wait_for_a_full_window() {
        let mut w = Window::new(4);
        let stack: Arc<[usize]> = Arc::from(&[1usize][..]);
        for i in 0..4u64 {
            assert!(w.suspects(MIB).is_empty(), "judged after {i} summaries");
            w.push(Summary {
                taken_us: i * 1_000_000,
                stacks: vec![stack.clone()],
                live: vec![i * MIB],
            });
        }
        let s = w.suspects(MIB);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].id(), s[0].growth_bytes(), s[0].live_bytes()),
            (0, 3 * MIB as i64, 3 * MIB)
        );
        assert_eq!(s[0].span(), Duration::from_secs(3));
        assert!((s[0].growth_rate() - MIB as f64).abs() < 1.0);
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
