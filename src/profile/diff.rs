//! [`Diff`] and [`SiteDelta`]: what changed between two snapshots, per site.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use super::frame::{Frame, owner};
use super::site::Site;
use super::snapshot::Snapshot;
use super::symbolize::SiteStack;
use crate::recorder::Guard;

// `Snapshot::diff` lives here, next to what it builds, so that `snapshot.rs`
// does not import this file while this file reads `Snapshot`.
impl Snapshot {
    /// What changed since `base`, per site.
    ///
    /// # Examples
    ///
    /// ```
    /// let base = leakscope::snapshot();
    /// let now = leakscope::snapshot();
    /// let diff = now.diff(&base);
    /// for d in diff.sites().iter().take(5) {
    ///     println!("{:+} bytes at site {}", d.live_bytes_delta(), d.id());
    /// }
    /// ```
    pub fn diff(&self, base: &Snapshot) -> Diff {
        Guard::run(|| Diff::new(self, base))
    }
}

/// Per-site change between two snapshots: `later.diff(&base)`.
#[derive(Clone, Debug)]
pub struct Diff {
    sites: Vec<SiteDelta>,
    live_bytes_delta: i64,
    live_allocs_delta: i64,
    folded_stacks: u64,
    sample_interval: u64,
    time: SystemTime,
    base_time: SystemTime,
}

/// How one site changed between two snapshots.
#[derive(Clone, Debug)]
pub struct SiteDelta {
    id: u32,
    stack: SiteStack,
    live_bytes_delta: i64,
    live_allocs_delta: i64,
    total_bytes_delta: i64,
    total_allocs_delta: i64,
    live_bytes: u64,
    live_allocs: u64,
    /// Recorded blocks behind `live_bytes_delta`: born since the base, or
    /// freed since it.
    samples: u64,
    /// Estimated sampling variance of `live_bytes_delta`.
    variance: f64,
}

fn delta(now: u64, base: u64) -> i64 {
    (now as i128 - base as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl Diff {
    fn new(now: &Snapshot, base: &Snapshot) -> Diff {
        let by_id: HashMap<u32, &Site> = base.sites.iter().map(|s| (s.id, s)).collect();
        let mut seen = HashSet::new();
        let mut sites = Vec::new();
        for s in &now.sites {
            seen.insert(s.id);
            let b = by_id.get(&s.id);
            // Blocks live in both snapshots cancel exactly (one sampling
            // decision counts in both): only those born since the base and
            // those freed since it carry sampling noise. A block born before
            // the base's clock reading is taken as held by the base too.
            let (n, v) = (s.samples(), s.live_variance());
            let (old_n, old_v) = s.born_by(base.taken_us);
            let (base_n, base_v) = b.map_or((0, 0.0), |b| (b.samples(), b.live_variance()));
            let d = SiteDelta {
                id: s.id,
                stack: s.stack.clone(),
                live_bytes_delta: delta(s.live_bytes, b.map_or(0, |b| b.live_bytes)),
                live_allocs_delta: delta(s.live_allocs, b.map_or(0, |b| b.live_allocs)),
                total_bytes_delta: delta(s.total_bytes, b.map_or(0, |b| b.total_bytes)),
                total_allocs_delta: delta(s.total_allocs, b.map_or(0, |b| b.total_allocs)),
                live_bytes: s.live_bytes,
                live_allocs: s.live_allocs,
                samples: (n - old_n) + base_n.saturating_sub(old_n),
                variance: (v - old_v).max(0.0) + (base_v - old_v).max(0.0),
            };
            sites.push(d);
        }
        for b in base.sites.iter().filter(|b| !seen.contains(&b.id)) {
            sites.push(SiteDelta {
                id: b.id,
                stack: b.stack.clone(),
                live_bytes_delta: delta(0, b.live_bytes),
                live_allocs_delta: delta(0, b.live_allocs),
                total_bytes_delta: 0,
                total_allocs_delta: 0,
                live_bytes: 0,
                live_allocs: 0,
                samples: b.samples(),
                variance: b.live_variance(),
            });
        }
        sites.retain(|d| {
            d.live_bytes_delta != 0 || d.live_allocs_delta != 0 || d.total_allocs_delta != 0
        });
        sites.sort_by(|a, b| {
            b.live_bytes_delta
                .cmp(&a.live_bytes_delta)
                .then(a.id.cmp(&b.id))
        });
        Diff {
            live_bytes_delta: delta(now.live_bytes, base.live_bytes),
            live_allocs_delta: delta(now.live_allocs, base.live_allocs),
            sites,
            folded_stacks: now.folded_stacks,
            sample_interval: now.sample_interval,
            time: now.time,
            base_time: base.time,
        }
    }

    /// Sites whose counters changed, largest live-bytes growth first.
    pub fn sites(&self) -> &[SiteDelta] {
        &self.sites
    }

    /// Live-bytes growth per value of the label `key` (see
    /// [`with_labels`](crate::with_labels)), largest first (ties by value);
    /// memory without that label is under `""`. Lists every value of a site
    /// whose counters changed, so a value that only churned shows at 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let base = leakscope::snapshot();
    /// let kept = leakscope::with_labels(&[("tenant", "a")], || vec![0u8; 1 << 20]);
    /// for (tenant, growth) in leakscope::snapshot().diff(&base).by_label("tenant") {
    ///     println!("tenant {tenant:?}: {growth:+} B");
    /// }
    /// # drop(kept);
    /// ```
    pub fn by_label(&self, key: &str) -> Vec<(String, i64)> {
        Guard::run(|| {
            let mut sums = super::snapshot::group_by_label(
                self.sites.iter().map(|d| (d.labels(), d.live_bytes_delta)),
                key,
                |a: i64, b| a.saturating_add(b),
            );
            sums.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            sums
        })
    }

    /// Change of total live bytes.
    pub fn live_bytes_delta(&self) -> i64 {
        self.live_bytes_delta
    }

    /// Change of total live allocations.
    pub fn live_allocs_delta(&self) -> i64 {
        self.live_allocs_delta
    }

    /// [`Snapshot::folded_stacks`] of the later snapshot.
    pub fn folded_stacks(&self) -> u64 {
        self.folded_stacks
    }

    /// The sample interval of the later snapshot.
    pub fn sample_interval(&self) -> u64 {
        self.sample_interval
    }

    /// Wall-clock time of the later snapshot.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// Wall-clock time of the base snapshot.
    pub fn base_time(&self) -> SystemTime {
        self.base_time
    }
}

impl SiteDelta {
    /// The number of recorded (sampled) blocks behind
    /// [`live_bytes_delta`](SiteDelta::live_bytes_delta): those born since the
    /// base snapshot plus those freed since it (blocks live in both cancel
    /// exactly).
    ///
    /// # Examples
    ///
    /// ```
    /// let base = leakscope::snapshot();
    /// let kept = vec![0u8; 4 << 20];
    /// for d in leakscope::snapshot().diff(&base).sites() {
    ///     println!("site {}: {:+} B from {} samples", d.id(), d.live_bytes_delta(), d.samples());
    /// }
    /// # drop(kept);
    /// ```
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// A 95% interval for the true change of live bytes under sampling (as
    /// [`Site::live_bytes_interval`], over the blocks born or freed between
    /// the two snapshots). In exact mode both ends are the change itself.
    ///
    /// # Examples
    ///
    /// ```
    /// let base = leakscope::snapshot();
    /// let kept = vec![0u8; 4 << 20];
    /// for d in leakscope::snapshot().diff(&base).sites() {
    ///     let (low, high) = d.live_bytes_delta_interval();
    ///     assert!(low <= d.live_bytes_delta() && d.live_bytes_delta() <= high);
    /// }
    /// # drop(kept);
    /// ```
    pub fn live_bytes_delta_interval(&self) -> (i64, i64) {
        let (low, high) = super::site::interval(
            self.live_bytes_delta as f64,
            self.variance,
            f64::NEG_INFINITY,
        );
        (low.floor() as i64, high.ceil() as i64)
    }

    /// Whether the change is within sampling noise: its 95% interval holds
    /// zero. Never true in exact mode (no noise) unless the change is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let base = leakscope::snapshot();
    /// for d in leakscope::snapshot().diff(&base).sites() {
    ///     if d.within_noise() {
    ///         println!("site {} may not have changed at all", d.id());
    ///     }
    /// }
    /// ```
    pub fn within_noise(&self) -> bool {
        let (low, high) = self.live_bytes_delta_interval();
        low <= 0 && 0 <= high
    }

    /// The site's stable id (see [`Site::id`]).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Change of live bytes (negative when the site shrank).
    pub fn live_bytes_delta(&self) -> i64 {
        self.live_bytes_delta
    }

    /// Change of live allocations.
    pub fn live_allocs_delta(&self) -> i64 {
        self.live_allocs_delta
    }

    /// Bytes allocated here between the two snapshots.
    pub fn total_bytes_delta(&self) -> i64 {
        self.total_bytes_delta
    }

    /// Allocations made here between the two snapshots.
    pub fn total_allocs_delta(&self) -> i64 {
        self.total_allocs_delta
    }

    /// Live bytes in the later snapshot.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Live allocations in the later snapshot.
    pub fn live_allocs(&self) -> u64 {
        self.live_allocs
    }

    /// The call stack, as [`Site::frames`].
    pub fn frames(&self) -> &[Frame] {
        self.stack.frames()
    }

    /// The frame that owns the site, as [`Site::owner`].
    pub fn owner(&self) -> Option<&Frame> {
        owner(self.stack.frames())
    }

    /// The stack, for exports ([`SiteStack::frames_once`]).
    pub(crate) fn stack(&self) -> &SiteStack {
        &self.stack
    }

    /// The raw return addresses, as [`Site::addresses`].
    pub fn addresses(&self) -> &[usize] {
        self.stack.addresses()
    }

    /// The site's labels, as [`Site::labels`].
    pub fn labels(&self) -> &[(String, String)] {
        self.stack.labels()
    }
}
