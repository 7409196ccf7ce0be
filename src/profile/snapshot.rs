//! [`Snapshot`] and [`snapshot()`]: the live and total heap per site at one
//! moment, copied out of the recorder at query time; and the monitor's cheap
//! [`Summary`].

use std::time::{Duration, SystemTime};

use super::site::{Born, Site};
use super::symbolize::{self, SiteStack};
use super::{labels, merge, notes};
use crate::recorder::{self, COUNT_ONE, Guard, LiveBlock, Totals, est_bytes, est_count};

/// The live and total heap per call stack at one moment.
///
/// Built by [`snapshot()`]; all figures are estimates under sampling and
/// exact with a sample interval of 1.
///
/// # Examples
///
/// ```
/// let before = leakscope::snapshot();
/// let kept: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
/// let after = leakscope::snapshot();
/// let diff = after.diff(&before);
/// println!("{diff}");
/// # drop(kept);
/// ```
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(super) sites: Vec<Site>,
    pub(super) live_bytes: u64,
    pub(super) live_allocs: u64,
    pub(super) total_bytes: u64,
    pub(super) total_allocs: u64,
    pub(super) tracker_bytes: u64,
    /// About how many distinct stacks the full site table charged to the
    /// `[other]` site (see `Tracker::max_sites`).
    pub(super) folded_stacks: u64,
    pub(super) sample_interval: u64,
    pub(super) taken_us: u64,
    pub(super) time: SystemTime,
}

/// Copies the tracker's counters into a [`Snapshot`].
///
/// Allocating threads are held up only while their own live list is copied
/// (a few milliseconds per million live recorded blocks). Raw stacks never
/// seen before are symbolized here, once per process, to find their
/// source-level site (see [`Site`]); after that a snapshot only sums.
///
/// # Examples
///
/// ```
/// let snap = leakscope::snapshot();
/// println!("{} bytes live in {} recorded sites", snap.live_bytes(), snap.sites().len());
/// ```
pub fn snapshot() -> Snapshot {
    Guard::run(|| {
        let time = SystemTime::now();
        // One view, read in the order that keeps live <= total per site
        // (see `recorder::heap_view`).
        let recorder::HeapView {
            stacks: raw_stacks,
            labels: raw_labels,
            blocks,
            totals,
            folded_stacks,
        } = recorder::heap_view();
        let taken_us = recorder::now_us();
        let merged = merge::merge(&raw_stacks, &raw_labels);
        let n = merged.stacks.len();
        let mut sums = vec![Totals::default(); n];
        let mut active = vec![false; n];
        for (t, &site) in totals.iter().zip(&merged.of_raw) {
            let (sum, site) = (&mut sums[site as usize], site as usize);
            sum.alloc_bytes = sum.alloc_bytes.wrapping_add(t.alloc_bytes);
            sum.alloc_count = sum.alloc_count.wrapping_add(t.alloc_count);
            active[site] |= t.alloc_count != 0 || t.free_count != 0;
        }
        let mut born: Vec<Vec<Born>> = vec![Vec::new(); n];
        for b in &blocks {
            if let Some(&site) = merged.of_raw.get(b.site as usize) {
                born[site as usize].push(born_of(b));
            }
        }
        drop(blocks);
        let mut sites = Vec::new();
        for (id, (stack, t)) in merged.stacks.iter().zip(&sums).enumerate() {
            let mut b = std::mem::take(&mut born[id]);
            if !active[id] && b.is_empty() {
                continue;
            }
            b.sort_unstable_by_key(|x| x.birth_us);
            // Live figures come from the copied live lists, not from the
            // counters: the counters were read a moment earlier, and other
            // threads keep allocating, so only the lists agree with the ages
            // (`live_older_than(0)` is then exactly this snapshot). At rest
            // both give the same numbers; the counters give the totals.
            sites.push(Site {
                id: id as u32,
                stack: stack.clone(),
                live_bytes: b.iter().map(|x| x.bytes).sum(),
                live_allocs: fixed_to_count(b.iter().map(|x| x.count).sum()),
                total_bytes: t.alloc_bytes,
                total_allocs: fixed_to_count(t.alloc_count),
                born: b.into(),
                taken_us,
            });
        }
        let tracker_bytes = recorder::overhead_bytes()
            + symbolize::overhead_bytes()
            + merge::overhead_bytes()
            + labels::overhead_bytes();
        notes::frame_pointers_missing(); // logs its warning the first time
        let mut snap = Snapshot::from_sites(
            sites,
            tracker_bytes,
            recorder::current_interval(),
            taken_us,
            time,
        );
        snap.folded_stacks = folded_stacks;
        snap
    })
}

/// A symbolized frame as a key: function, file, line.
type FrameKey = (String, Option<String>, Option<u32>);

/// Per-site live bytes at one moment, from the summed counters alone (no
/// walk of the live lists): the growth monitor's per-interval sample.
pub(crate) struct Summary {
    /// Tracker-clock time, read *before* the counters, so a summary stamped
    /// after some moment saw every event that happened before that moment.
    pub(crate) taken_us: u64,
    /// Stack of each site id (source-level sites, as in a snapshot).
    pub(crate) stacks: Vec<SiteStack>,
    /// Estimated live bytes of each site id (same indexing as `stacks`),
    /// summed over the site's raw stacks.
    pub(crate) live: Vec<u64>,
    /// Estimated bytes allocated plus bytes freed by each site since the
    /// start (cumulative, same indexing): the monitor bounds the sampling
    /// noise of a change in live bytes with the churn between two summaries.
    pub(crate) churn_bytes: Vec<u64>,
    /// Estimated blocks allocated plus blocks freed, cumulative, likewise.
    pub(crate) churn_blocks: Vec<u64>,
    /// The sample interval when the summary was taken (1: exact).
    pub(crate) sample_interval: u64,
    /// Estimated live blocks per site (exact in exact mode, where every
    /// block is a sample).
    pub(crate) live_blocks: Vec<u64>,
}

/// Takes a [`Summary`]. Cheap: one pass over the books' counter chunks (and
/// the symbolization of raw stacks never seen before).
pub(crate) fn summary() -> Summary {
    Guard::run(|| {
        let taken_us = recorder::now_us();
        notes::frame_pointers_missing(); // logs its warning the first time
        let (raw_stacks, raw_labels) = recorder::site_stacks();
        let totals = recorder::site_totals(raw_stacks.len());
        let merged = merge::merge(&raw_stacks, &raw_labels);
        let mut live = vec![0u64; merged.stacks.len()];
        let mut churn_bytes = vec![0u64; merged.stacks.len()];
        let mut churn_blocks = vec![0u64; merged.stacks.len()];
        let mut live_blocks = vec![0u64; merged.stacks.len()];
        for (t, &site) in totals.iter().zip(&merged.of_raw) {
            let site = site as usize;
            live_blocks[site] += fixed_to_count(t.alloc_count.saturating_sub(t.free_count));
            live[site] += t.alloc_bytes.saturating_sub(t.free_bytes);
            churn_bytes[site] = churn_bytes[site]
                .saturating_add(t.alloc_bytes)
                .saturating_add(t.free_bytes);
            churn_blocks[site] = churn_blocks[site]
                .saturating_add(t.alloc_count.div_ceil(COUNT_ONE))
                .saturating_add(t.free_count.div_ceil(COUNT_ONE));
        }
        Summary {
            taken_us,
            stacks: merged.stacks,
            live,
            churn_bytes,
            churn_blocks,
            sample_interval: recorder::current_interval(),
            live_blocks,
        }
    })
}

/// The number of recorded live blocks of each site id (as in a
/// [`Summary`]): a walk of the live lists, for the monitor's suspects under
/// sampling, where the counters say nothing about how many blocks were
/// sampled.
pub(crate) fn live_samples() -> Vec<u64> {
    Guard::run(|| {
        let recorder::HeapView {
            stacks: raw_stacks,
            labels: raw_labels,
            blocks,
            ..
        } = recorder::heap_view();
        let merged = merge::merge(&raw_stacks, &raw_labels);
        let mut n = vec![0u64; merged.stacks.len()];
        for b in &blocks {
            if let Some(&site) = merged.of_raw.get(b.site as usize) {
                n[site as usize] += 1;
            }
        }
        n
    })
}

/// Sums `value`s per value of the label `key` (`""` where absent).
pub(super) fn group_by_label<'a, T: Copy + Default>(
    items: impl Iterator<Item = (&'a [(String, String)], T)>,
    key: &str,
    add: impl Fn(T, T) -> T,
) -> Vec<(String, T)> {
    let mut sums: std::collections::HashMap<&'a str, T> = std::collections::HashMap::new();
    for (labels, v) in items {
        let value = labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str());
        let e = sums.entry(value).or_default();
        *e = add(*e, v);
    }
    sums.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn born_of(b: &LiveBlock) -> Born {
    Born {
        birth_us: b.birth_us,
        bytes: est_bytes(b.size, b.weight),
        count: est_count(b.weight),
    }
}

pub(super) fn fixed_to_count(fixed: u64) -> u64 {
    (fixed + COUNT_ONE / 2) / COUNT_ONE
}

impl Snapshot {
    fn from_sites(
        mut sites: Vec<Site>,
        tracker_bytes: u64,
        sample_interval: u64,
        taken_us: u64,
        time: SystemTime,
    ) -> Snapshot {
        sites.sort_by(|a, b| {
            b.live_bytes
                .cmp(&a.live_bytes)
                .then(b.total_bytes.cmp(&a.total_bytes))
                .then(a.id.cmp(&b.id))
        });
        Snapshot {
            live_bytes: sites.iter().map(|s| s.live_bytes).sum(),
            live_allocs: sites.iter().map(|s| s.live_allocs).sum(),
            total_bytes: sites.iter().map(|s| s.total_bytes).sum(),
            total_allocs: sites.iter().map(|s| s.total_allocs).sum(),
            sites,
            tracker_bytes,
            folded_stacks: 0,
            sample_interval,
            taken_us,
            time,
        }
    }

    /// The number of recorded (sampled) live blocks the profile rests on,
    /// over all sites (every live block in exact mode).
    ///
    /// # Examples
    ///
    /// ```
    /// let snap = leakscope::snapshot();
    /// println!("{} live bytes estimated from {} samples", snap.live_bytes(), snap.samples());
    /// ```
    pub fn samples(&self) -> u64 {
        self.sites.iter().map(|s| s.samples()).sum()
    }

    /// Estimated live bytes over all sites.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Estimated live allocations over all sites.
    pub fn live_allocs(&self) -> u64 {
        self.live_allocs
    }

    /// Estimated bytes ever allocated, over all sites.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Estimated allocations ever made, over all sites.
    pub fn total_allocs(&self) -> u64 {
        self.total_allocs
    }

    /// Memory the tracker itself holds: per-thread books and their counter
    /// chunks, the site table (its index, every interned stack, the overflow
    /// sketch), the thread registry, the symbol cache, the interned label
    /// sets, and the headers and
    /// padding of live recorded blocks.
    pub fn tracker_bytes(&self) -> u64 {
        self.tracker_bytes
    }

    /// About how many distinct call stacks were charged to the `[other]`
    /// site because the site table was full (see
    /// [`Tracker::max_sites`](crate::Tracker::max_sites)); 0 if it never
    /// filled. An estimate (a fixed-size sketch of their hashes, about 3%
    /// standard error): the stacks themselves are not kept.
    ///
    /// # Examples
    ///
    /// ```
    /// let snap = leakscope::snapshot();
    /// if snap.folded_stacks() > 0 {
    ///     println!("site table full: ~{} stacks in [other]", snap.folded_stacks());
    /// }
    /// ```
    pub fn folded_stacks(&self) -> u64 {
        self.folded_stacks
    }

    /// Sites with recorded activity, largest live bytes first.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// Live bytes per value of the label `key` (see
    /// [`with_labels`](crate::with_labels)), largest first (ties by value);
    /// memory without that label is under `""`. Every value of a site in
    /// the snapshot is listed, also at 0.
    ///
    /// # Examples
    ///
    /// ```
    /// let kept = leakscope::with_labels(&[("tenant", "a")], || vec![0u8; 1 << 20]);
    /// for (tenant, bytes) in leakscope::snapshot().by_label("tenant") {
    ///     println!("tenant {tenant:?}: {bytes} B live");
    /// }
    /// # drop(kept);
    /// ```
    pub fn by_label(&self, key: &str) -> Vec<(String, u64)> {
        Guard::run(|| {
            let mut sums: Vec<(String, u64)> = group_by_label(
                self.sites.iter().map(|s| (s.labels(), s.live_bytes)),
                key,
                |a, b| a.saturating_add(b),
            );
            sums.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            sums
        })
    }

    /// Every label key of the snapshot's sites with the live bytes of the
    /// sites that carry it, largest first (ties by key): what the dashboard
    /// and the Prometheus series rank label keys by.
    #[cfg(feature = "metrics")]
    pub(crate) fn label_keys(&self) -> Vec<(String, u64)> {
        let mut keys: Vec<(String, u64)> = Vec::new();
        for s in &self.sites {
            for (k, _) in s.labels() {
                match keys.iter_mut().find(|(key, _)| key == k) {
                    Some(e) => e.1 = e.1.saturating_add(s.live_bytes),
                    None => keys.push((k.clone(), s.live_bytes)),
                }
            }
        }
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys
    }

    /// The sample interval in force when the snapshot was taken (1 = exact).
    pub fn sample_interval(&self) -> u64 {
        self.sample_interval
    }

    /// Wall-clock time of the snapshot.
    pub fn time(&self) -> SystemTime {
        self.time
    }

    /// The same report restricted to recorded blocks that have been live for
    /// at least `age` when the snapshot was taken ("long-lived unfreed"
    /// memory). Totals of each site are kept as they were.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let old = leakscope::snapshot().live_older_than(Duration::from_secs(60));
    /// println!("{} bytes live for over a minute", old.live_bytes());
    /// ```
    pub fn live_older_than(&self, age: Duration) -> Snapshot {
        let age_us = age.as_micros().min(u64::MAX as u128) as u64;
        match self.taken_us.checked_sub(age_us) {
            Some(cutoff) => self.restrict(|birth| birth <= cutoff),
            None => self.restrict(|_| false),
        }
    }

    /// The same report with labels folded away: one site per source-level
    /// stack, summing the sites that differ only by their label sets (see
    /// [`with_labels`](crate::with_labels)), so a leak that is not tied to a
    /// tenant is one row, not one slice per tenant. Each folded site keeps the
    /// smallest id of those it sums and has no labels. Its `{}` is the text
    /// report's labels-folded view.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = leakscope::with_labels(&[("tenant", "a")], || vec![1u8; 1 << 20]);
    /// let b = leakscope::with_labels(&[("tenant", "b")], || vec![1u8; 1 << 20]);
    /// let folded = leakscope::snapshot().without_labels();
    /// assert!(folded.sites().iter().all(|s| s.labels().is_empty()));
    /// println!("{folded}");
    /// # drop((a, b));
    /// ```
    pub fn without_labels(&self) -> Snapshot {
        Guard::run(|| {
            // Keyed by the symbolized stack: sites of one source-level stack
            // under several label sets may hold different raw stacks.
            let mut index: std::collections::HashMap<Vec<FrameKey>, usize> =
                std::collections::HashMap::new();
            let mut sites: Vec<Site> = Vec::new();
            let mut ids: Vec<&Site> = self.sites.iter().collect();
            ids.sort_by_key(|s| s.id);
            for s in ids {
                let key = s
                    .frames()
                    .iter()
                    .map(|f| {
                        (
                            f.function().to_string(),
                            f.file().map(str::to_string),
                            f.line(),
                        )
                    })
                    .collect();
                match index.get(&key) {
                    Some(&i) => {
                        let m = &mut sites[i];
                        m.live_bytes += s.live_bytes;
                        m.live_allocs += s.live_allocs;
                        m.total_bytes += s.total_bytes;
                        m.total_allocs += s.total_allocs;
                        let mut born: Vec<Born> =
                            m.born.iter().chain(s.born.iter()).copied().collect();
                        born.sort_unstable_by_key(|b| b.birth_us);
                        m.born = born.into();
                    }
                    None => {
                        index.insert(key, sites.len());
                        sites.push(Site {
                            stack: s
                                .stack
                                .clone()
                                .with_labels(std::sync::Arc::from(Vec::new())),
                            ..s.clone()
                        });
                    }
                }
            }
            self.with_sites(sites)
        })
    }

    /// A snapshot of other sites taken at this one's time, with its
    /// tracker figures (a view of this snapshot: filtered or regrouped).
    fn with_sites(&self, sites: Vec<Site>) -> Snapshot {
        let mut snap = Snapshot::from_sites(
            sites,
            self.tracker_bytes,
            self.sample_interval,
            self.taken_us,
            self.time,
        );
        snap.folded_stacks = self.folded_stacks;
        snap
    }

    /// The same report restricted to blocks born at or after `since_us`.
    pub(crate) fn born_since(&self, since_us: u64) -> Snapshot {
        self.restrict(|birth| birth >= since_us)
    }

    fn restrict(&self, keep: impl Fn(u64) -> bool) -> Snapshot {
        Guard::run(|| {
            let sites = self
                .sites
                .iter()
                .filter_map(|s| {
                    let born: Vec<Born> = s
                        .born
                        .iter()
                        .filter(|b| keep(b.birth_us))
                        .copied()
                        .collect();
                    if born.is_empty() {
                        return None;
                    }
                    Some(Site {
                        live_bytes: born.iter().map(|b| b.bytes).sum(),
                        live_allocs: fixed_to_count(born.iter().map(|b| b.count).sum()),
                        born: born.into(),
                        ..s.clone()
                    })
                })
                .collect();
            self.with_sites(sites)
        })
    }
}
