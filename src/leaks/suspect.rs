//! [`Suspect`] and [`SiteHistory`]: what the growth monitor hands out.

use std::fmt;
use std::time::{Duration, Instant};

use crate::profile::{Frame, SiteStack};
use crate::recorder::Guard;
use crate::report::text::{
    human, labels_suffix, owner_location, owner_name, short_name, write_frames,
};

/// A site whose live bytes keep growing: see [`Monitor`](super::Monitor) for the rule.
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
    pub(super) id: u32,
    pub(super) stack: SiteStack,
    pub(super) growth_bytes: i64,
    /// Standard deviation of `growth_bytes` from sampling (0 in exact mode).
    pub(super) growth_sd: f64,
    pub(super) growth_rate: f64,
    pub(super) live_bytes: u64,
    pub(super) score: f64,
    pub(super) span: Duration,
    /// The level of the monitor's history that named it (0: the finest).
    pub(super) level: usize,
    pub(super) sample_interval: u64,
    /// Recorded live blocks of the site when judged.
    pub(super) samples: u64,
    /// The top holder, with `MonitorConfig::retainers(true)`.
    pub(super) holder: Option<crate::Root>,
}

impl Suspect {
    /// What holds most of the site's live bytes (the root of its largest
    /// retainer path; in sampled mode a static, thread-local or stack whose
    /// path reaches at least half as much is named rather than "unsampled
    /// heap memory"), when the monitor runs with
    /// [`MonitorConfig::retainers(true)`](crate::MonitorConfig::retainers)
    /// and the scan succeeded; `None` otherwise.
    pub fn holder(&self) -> Option<&crate::Root> {
        self.holder.as_ref()
    }

    /// The site's stable id (see [`Site::id`](crate::Site::id)).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The call stack, as [`Site::frames`](crate::Site::frames): symbolized
    /// on first use, innermost first, the tracker's frames trimmed.
    pub fn frames(&self) -> &[Frame] {
        self.stack.frames()
    }

    /// The frame that owns the site, as [`Site::owner`](crate::Site::owner).
    pub fn owner(&self) -> Option<&Frame> {
        self.stack.owner()
    }

    /// The raw return addresses, as [`Site::addresses`](crate::Site::addresses).
    pub fn addresses(&self) -> &[usize] {
        self.stack.addresses()
    }

    /// The site's labels, as [`Site::labels`](crate::Site::labels): the
    /// monitor's series are per site, so per label set too.
    pub fn labels(&self) -> &[(String, String)] {
        self.stack.labels()
    }

    /// Growth of live bytes from the first to the last point of the window
    /// judged (the finest level of the monitor's history that names the site).
    pub fn growth_bytes(&self) -> i64 {
        self.growth_bytes
    }

    /// A 95% interval for [`growth_bytes`](Suspect::growth_bytes) under
    /// sampling: `growth ± 2 sd`, with the standard deviation bounded from the
    /// site's churn between the two points by the sampling model (see
    /// [`Monitor`](super::Monitor)). A single point in exact mode.
    ///
    /// # Examples
    ///
    /// ```
    /// # let monitor = leakscope::Monitor::start(Default::default())?;
    /// for s in monitor.suspects() {
    ///     let (low, high) = s.growth_interval();
    ///     assert!(low <= s.growth_bytes() as f64 && s.growth_bytes() as f64 <= high);
    /// }
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn growth_interval(&self) -> (f64, f64) {
        let g = self.growth_bytes as f64;
        let d = super::trend::Z * self.growth_sd;
        (g - d, g + d)
    }

    /// The number of recorded (sampled) live blocks behind
    /// [`live_bytes`](Suspect::live_bytes) when the site was judged, as
    /// [`Site::samples`](crate::Site::samples): counted from the live lists
    /// under sampling (only at summaries with suspects), from the counters
    /// in exact mode.
    ///
    /// # Examples
    ///
    /// ```
    /// # let monitor = leakscope::Monitor::start(Default::default())?;
    /// for s in monitor.suspects() {
    ///     println!("{} live from {} samples", s.live_bytes(), s.samples());
    /// }
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The sample interval in force when the site was judged (1: exact).
    pub fn sample_interval(&self) -> u64 {
        self.sample_interval
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

    /// Which level of the monitor's history named the site: 0 for the finest
    /// (one point per summary), `l` for the one with a point every
    /// `window^l` summaries.
    pub fn level(&self) -> usize {
        self.level
    }

    /// Time from the first to the last point of the window judged.
    pub fn span(&self) -> Duration {
        self.span
    }
}

impl fmt::Display for Suspect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Guard::run(|| self.write_text(f))
    }
}

impl Suspect {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frames = self.frames();
        let location = owner_location(frames);
        let labels = labels_suffix(self.labels());
        let noise = if self.growth_sd > 0.0 {
            format!(" ± {}", human(super::trend::Z * self.growth_sd))
        } else {
            String::new()
        };
        writeln!(
            f,
            "leak suspect: {}{}{} (site {}{}) grew by {}{} in {:.1} s ({}/s), {} live now{}",
            if f.alternate() {
                owner_name(frames)
            } else {
                short_name(&owner_name(frames)).into_owned()
            },
            if location.is_empty() { "" } else { " at " },
            location,
            self.id,
            labels,
            human(self.growth_bytes as f64),
            noise,
            self.span.as_secs_f64(),
            human(self.growth_rate),
            human(self.live_bytes as f64),
            if self.sample_interval > 1 {
                format!(" ({} samples)", self.samples)
            } else {
                String::new()
            },
        )?;
        match &self.holder {
            // In sampled mode the chain from a named root can run through
            // blocks that were not sampled: say what that means.
            Some(h @ crate::Root::UnsampledHeap) => writeln!(
                f,
                "    held by {h} (the chain to its root runs through blocks that were not sampled; with sample_interval(1) the root is named)"
            )?,
            Some(h) => writeln!(f, "    held by {h}")?,
            None => {}
        }
        if f.alternate() {
            return write_frames(f, frames, true);
        }
        // The innermost frames are allocator and collection internals: start
        // at the owner (see `Site::owner`); runs of runtime frames fold into
        // one line each, as in the text report.
        let start = self
            .owner()
            .and_then(|o| frames.iter().position(|fr| std::ptr::eq(fr, o)))
            .unwrap_or(0);
        write_frames(f, &frames[start..], false)?;
        Ok(())
    }
}

/// One site's retained series, from [`Monitor::history`](super::Monitor::history).
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
    pub(super) id: u32,
    pub(super) stack: SiteStack,
    pub(super) points: Vec<(Instant, u64)>,
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

    /// The site's labels, as [`Site::labels`](crate::Site::labels): the
    /// monitor's series are per site, so per label set too.
    pub fn labels(&self) -> &[(String, String)] {
        self.stack.labels()
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
