//! Leak assertions for tests: [`LeakCheck`] and [`assert_no_leaks`].
//!
//! A check remembers a moment on the tracker clock; at the end it takes a
//! snapshot and keeps only the recorded blocks born since that moment. Every
//! recorded block carries its birth time, so this sees allocations made on
//! any thread, and needs no hook on the allocation path.

use std::fmt::Write as _;
use std::panic::Location;

use crate::profile::{Frame, Site, Snapshot, snapshot};
use crate::recorder::{self, Guard};
use crate::report::text::{human, owner_name, write_frames};

/// Sites listed in an [`assert_no_leaks`] report; the rest are summed up.
const REPORT_SITES: usize = 20;

/// The blocks allocated from now on that are still live when the check
/// finishes, on any thread.
///
/// Exact with a sample interval of 1; under sampling the result holds
/// estimates, and a leak much smaller than the sample interval is likely to
/// be missed. Without a [`Tracker`](crate::Tracker) installed as the global
/// allocator nothing is recorded and every check comes back empty.
///
/// Anything live that was allocated inside counts, including memory that is
/// meant to stay (a lazily initialised global, a thread-local, a value still
/// held by the caller): warm such things up before starting the check. A
/// block allocated before the check and reallocated inside it counts as
/// allocated inside.
///
/// # Examples
///
/// ```
/// let check = leakscope::LeakCheck::start();
/// let kept: Vec<u64> = (0..100).collect();
/// let leaked = check.finish();
/// for site in leaked.sites() {
///     println!("{} bytes still live, allocated at site {}", site.live_bytes(), site.id());
/// }
/// # drop(kept);
/// ```
#[derive(Debug)]
#[must_use = "a leak check does nothing until `finish` is called"]
pub struct LeakCheck {
    /// Blocks born at or after this tracker-clock time are "inside".
    start_us: u64,
}

impl LeakCheck {
    /// Starts a check: blocks allocated from now on are watched.
    ///
    /// # Examples
    ///
    /// ```
    /// let check = leakscope::LeakCheck::start();
    /// assert_eq!(check.finish().live_bytes(), 0); // nothing allocated in between
    /// ```
    pub fn start() -> LeakCheck {
        // Births are whole microseconds, so a block allocated just before
        // this call, in the same microsecond, would look allocated after it.
        // Waiting for the clock to tick (under a microsecond) puts every
        // earlier birth strictly before `start_us`.
        let before = recorder::now_us();
        let mut now = recorder::now_us();
        while now == before {
            std::hint::spin_loop();
            now = recorder::now_us();
        }
        LeakCheck { start_us: now }
    }

    /// Ends the check: a snapshot restricted to the recorded blocks
    /// allocated since [`start`](LeakCheck::start) that are still live,
    /// grouped by site. Each site's `total_*` figures are its totals over the
    /// life of the process.
    ///
    /// # Examples
    ///
    /// ```
    /// let check = leakscope::LeakCheck::start();
    /// let leaked = check.finish();
    /// if leaked.live_allocs() > 0 {
    ///     eprintln!("{leaked}");
    /// }
    /// ```
    pub fn finish(self) -> Snapshot {
        snapshot().born_since(self.start_us)
    }

    /// When the check started (tracker clock): for
    /// `LeakCheck::assert_no_unreachable` (in `retainers`).
    pub(crate) fn start_us(&self) -> u64 {
        self.start_us
    }
}

/// Runs `f` and panics if anything it allocated (on any thread) is still
/// live when it returns; returns what `f` returned otherwise.
///
/// The panic payload is a `String` holding a readable report: how many
/// allocations and bytes leaked, at how many sites, and each site's stack.
/// Under sampling the report says its figures are estimates. The value `f`
/// returns counts as live too, so return plain data (a length, a sum), not a
/// collection built inside. See [`LeakCheck`] for what counts as a leak.
///
/// # Panics
///
/// When something allocated inside `f` is still live after it; a panic in
/// `f` itself is passed on unchanged.
///
/// # Examples
///
/// ```
/// let total = leakscope::assert_no_leaks(|| {
///     let words: Vec<String> = (0..100).map(|i| i.to_string()).collect();
///     words.iter().map(String::len).sum::<usize>()
/// });
/// assert_eq!(total, 190);
/// ```
///
/// In a test binary (one global allocator per integration-test file):
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);
///
/// #[test]
/// fn parser_frees_everything() {
///     leakscope::assert_no_leaks(|| {
///         // parse something and drop the result
///     });
/// }
/// # fn main() {}
/// ```
#[track_caller]
pub fn assert_no_leaks<R>(f: impl FnOnce() -> R) -> R {
    let caller = Location::caller();
    let check = LeakCheck::start();
    let out = f();
    let leaked = check.finish();
    if !leaked.sites().is_empty() {
        std::panic::panic_any(Guard::run(|| report(&leaked, caller)));
    }
    out
}

/// The frames of a site allocated inside [`assert_no_leaks`], from the
/// allocation out to the closure it ran: `Site::frames` goes on below the
/// closure (through `assert_no_leaks` into the caller and the test runner),
/// which the report leaves out.
fn frames_inside(site: &Site) -> &[Frame] {
    let frames = site.frames();
    match frames.iter().position(|f| {
        f.function()
            .starts_with("leakscope::leakcheck::assert_no_leaks")
    }) {
        Some(cut) if cut > 0 => &frames[..cut],
        _ => frames,
    }
}

/// The text of an [`assert_no_leaks`] failure.
fn report(leaked: &Snapshot, caller: &Location<'_>) -> String {
    let mut s = String::new();
    let sites = leaked.sites();
    let _ = write!(
        s,
        "assert_no_leaks: {} allocation{} ({}) made inside the closure {} still live, at {} site{}",
        leaked.live_allocs(),
        plural(leaked.live_allocs()),
        human(leaked.live_bytes() as f64),
        if leaked.live_allocs() == 1 {
            "is"
        } else {
            "are"
        },
        sites.len(),
        plural(sites.len() as u64),
    );
    if leaked.sample_interval() <= 1 {
        s.push_str(" (exact: every allocation recorded)\n");
    } else {
        let _ = writeln!(
            s,
            " (sampled every {} on average: these figures are estimates, and smaller leaks may be missed)",
            human(leaked.sample_interval() as f64)
        );
    }
    for (i, site) in sites.iter().take(REPORT_SITES).enumerate() {
        let frames = frames_inside(site);
        let _ = writeln!(
            s,
            "\n#{} {} in {} allocation{} at {} (site {}):",
            i + 1,
            human(site.live_bytes() as f64),
            site.live_allocs(),
            plural(site.live_allocs()),
            owner_name(frames),
            site.id()
        );
        let _ = write_frames(&mut s, frames, false);
        let _ = writeln!(s, "        (inside assert_no_leaks at {caller})");
    }
    if sites.len() > REPORT_SITES {
        let rest = &sites[REPORT_SITES..];
        let _ = writeln!(
            s,
            "\n... and {} more sites holding {}",
            rest.len(),
            human(rest.iter().map(|x| x.live_bytes()).sum::<u64>() as f64)
        );
    }
    s
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
