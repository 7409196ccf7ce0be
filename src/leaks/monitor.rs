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

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::running::{self, View};
use super::suspect::{SiteHistory, Suspect};
use super::window::Window;
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
            .field("retainers", &self.retainers)
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

impl View for Shared {
    fn suspects(&self) -> Vec<Suspect> {
        lock(&self.state).suspects.clone()
    }

    fn history(&self) -> Vec<SiteHistory> {
        lock(&self.state).window.history()
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
            // So `/metrics` and the dashboard find this monitor.
            let view: Arc<dyn View> = shared.clone();
            running::register(Arc::downgrade(&view));
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
        Guard::run(|| View::suspects(&*self.shared))
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
fn run(shared: &Shared, config: &MonitorConfig) {
    // Held until the thread ends; see the module docs. A new thread never
    // holds it already, so this is always `Some`.
    let _guard = Guard::enter();
    let mut announced: HashSet<u32> = HashSet::new();
    let mut next = Instant::now();
    loop {
        let summary = profile::summary();
        let mut fresh: Vec<Suspect> = {
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
        if config.retainers && !fresh.is_empty() {
            // A scan failure (another scan running, no fork) leaves the
            // holders unknown; the suspects are announced anyway.
            if let Ok(held) = crate::retainers::retainers() {
                for s in &mut fresh {
                    s.holder = held
                        .site(s.id)
                        .and_then(|r| r.paths().first())
                        .map(|p| p.root().clone());
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
