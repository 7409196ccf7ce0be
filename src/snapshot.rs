//! [`Snapshot`], [`Site`], [`Diff`], [`SiteDelta`]: owned plain data built at
//! query time from the books and the site table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::book::{self, COUNT_ONE, LiveBlock};
use crate::guard::Guard;
use crate::record::{est_bytes, est_count};
use crate::symbolize::{self, Frame, SiteStack};
use crate::{clock, sampling, sites};

/// One live recorded block's age data, kept per site for age queries.
#[derive(Clone, Copy, Debug)]
struct Born {
    birth_us: u64,
    bytes: u64,
    count: u64,
}

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
    sites: Vec<Site>,
    live_bytes: u64,
    live_allocs: u64,
    total_bytes: u64,
    total_allocs: u64,
    tracker_bytes: u64,
    sample_interval: u64,
    taken_us: u64,
    time: SystemTime,
}

/// One call stack that allocated recorded memory, with its counters.
#[derive(Clone, Debug)]
pub struct Site {
    id: u32,
    stack: SiteStack,
    live_bytes: u64,
    live_allocs: u64,
    total_bytes: u64,
    total_allocs: u64,
    /// Live blocks by birth, oldest first.
    born: Arc<[Born]>,
    taken_us: u64,
}

/// Copies the tracker's counters into a [`Snapshot`].
///
/// Allocating threads are held up only while their own live list is copied
/// (a few milliseconds per million live recorded blocks); frames are
/// symbolized later, the first time they are asked for.
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
        let stacks = sites::all_stacks();
        let totals = book::gather(stacks.len());
        let blocks = book::live_blocks();
        let taken_us = clock::now_us();
        let mut born: Vec<Vec<Born>> = vec![Vec::new(); stacks.len()];
        for b in &blocks {
            if let Some(v) = born.get_mut(b.site as usize) {
                v.push(born_of(b));
            }
        }
        drop(blocks);
        let mut sites = Vec::new();
        for (id, (addrs, t)) in stacks.iter().zip(totals.iter()).enumerate() {
            let mut b = std::mem::take(&mut born[id]);
            if t.alloc_count == 0 && t.free_count == 0 && b.is_empty() {
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
                stack: SiteStack::new(addrs.clone()),
                live_bytes: b.iter().map(|x| x.bytes).sum(),
                live_allocs: fixed_to_count(b.iter().map(|x| x.count).sum()),
                total_bytes: t.alloc_bytes,
                total_allocs: fixed_to_count(t.alloc_count),
                born: b.into(),
                taken_us,
            });
        }
        let tracker_bytes =
            book::overhead_bytes() + sites::overhead_bytes(&stacks) + symbolize::overhead_bytes();
        Snapshot::from_sites(
            sites,
            tracker_bytes,
            sampling::current_interval(),
            taken_us,
            time,
        )
    })
}

/// Per-site live bytes at one moment, from the summed counters alone (no
/// walk of the live lists): the growth monitor's per-interval sample.
pub(crate) struct Summary {
    /// Tracker-clock time, read *before* the counters, so a summary stamped
    /// after some moment saw every event that happened before that moment.
    pub(crate) taken_us: u64,
    /// Raw stack of each site id.
    pub(crate) stacks: Vec<Arc<[usize]>>,
    /// Estimated live bytes of each site id (same indexing as `stacks`).
    pub(crate) live: Vec<u64>,
}

/// Takes a [`Summary`]. Cheap: one pass over the books' counter chunks.
pub(crate) fn summary() -> Summary {
    Guard::run(|| {
        let taken_us = clock::now_us();
        let stacks = sites::all_stacks();
        let live = book::gather(stacks.len())
            .iter()
            .map(|t| t.alloc_bytes.saturating_sub(t.free_bytes))
            .collect();
        Summary {
            taken_us,
            stacks,
            live,
        }
    })
}

fn born_of(b: &LiveBlock) -> Born {
    Born {
        birth_us: b.birth_us,
        bytes: est_bytes(b.size, b.weight),
        count: est_count(b.weight),
    }
}

fn fixed_to_count(fixed: u64) -> u64 {
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
            sample_interval,
            taken_us,
            time,
        }
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

    /// Memory the tracker itself holds: per-thread books, the site table, the
    /// symbol cache, and the headers of live recorded blocks.
    pub fn tracker_bytes(&self) -> u64 {
        self.tracker_bytes
    }

    /// Sites with recorded activity, largest live bytes first.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// The sample interval in force when the snapshot was taken (1 = exact).
    pub fn sample_interval(&self) -> u64 {
        self.sample_interval
    }

    /// Wall-clock time of the snapshot.
    pub fn time(&self) -> SystemTime {
        self.time
    }

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
            Snapshot::from_sites(
                sites,
                self.tracker_bytes,
                self.sample_interval,
                self.taken_us,
                self.time,
            )
        })
    }
}

impl Site {
    /// A stable id for this call stack, the same in every snapshot of the
    /// process.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Estimated live bytes allocated here.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Estimated live allocations made here.
    pub fn live_allocs(&self) -> u64 {
        self.live_allocs
    }

    /// Estimated bytes ever allocated here.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Estimated allocations ever made here.
    pub fn total_allocs(&self) -> u64 {
        self.total_allocs
    }

    /// The call stack, symbolized (on first use, then cached), innermost
    /// first, inlined frames expanded, the tracker's and the allocator shims'
    /// frames trimmed off the top and the runtime start-up frames off the
    /// bottom.
    pub fn frames(&self) -> &[Frame] {
        self.stack.frames()
    }

    /// The raw return addresses of the stack, innermost first, untrimmed.
    pub fn addresses(&self) -> &[usize] {
        self.stack.addresses()
    }

    /// Age of the oldest live recorded block of this site, at the time of the
    /// snapshot.
    ///
    /// # Examples
    ///
    /// ```
    /// for site in leakscope::snapshot().sites() {
    ///     if let Some(age) = site.oldest_age() {
    ///         println!("site {} has held memory for {age:?}", site.id());
    ///     }
    /// }
    /// ```
    pub fn oldest_age(&self) -> Option<std::time::Duration> {
        self.born
            .first()
            .map(|b| Duration::from_micros(self.taken_us.saturating_sub(b.birth_us)))
    }
}

/// Per-site change between two snapshots: `later.diff(&base)`.
#[derive(Clone, Debug)]
pub struct Diff {
    sites: Vec<SiteDelta>,
    live_bytes_delta: i64,
    live_allocs_delta: i64,
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
}

fn delta(now: u64, base: u64) -> i64 {
    (now as i128 - base as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl Diff {
    fn new(now: &Snapshot, base: &Snapshot) -> Diff {
        let by_id: HashMap<u32, &Site> = base.sites.iter().map(|s| (s.id, s)).collect();
        let mut seen = std::collections::HashSet::new();
        let mut sites = Vec::new();
        for s in &now.sites {
            seen.insert(s.id);
            let b = by_id.get(&s.id);
            let d = SiteDelta {
                id: s.id,
                stack: s.stack.clone(),
                live_bytes_delta: delta(s.live_bytes, b.map_or(0, |b| b.live_bytes)),
                live_allocs_delta: delta(s.live_allocs, b.map_or(0, |b| b.live_allocs)),
                total_bytes_delta: delta(s.total_bytes, b.map_or(0, |b| b.total_bytes)),
                total_allocs_delta: delta(s.total_allocs, b.map_or(0, |b| b.total_allocs)),
                live_bytes: s.live_bytes,
                live_allocs: s.live_allocs,
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
            sample_interval: now.sample_interval,
            time: now.time,
            base_time: base.time,
        }
    }

    /// Sites whose counters changed, largest live-bytes growth first.
    pub fn sites(&self) -> &[SiteDelta] {
        &self.sites
    }

    /// Change of total live bytes.
    pub fn live_bytes_delta(&self) -> i64 {
        self.live_bytes_delta
    }

    /// Change of total live allocations.
    pub fn live_allocs_delta(&self) -> i64 {
        self.live_allocs_delta
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

    /// The raw return addresses, as [`Site::addresses`].
    pub fn addresses(&self) -> &[usize] {
        self.stack.addresses()
    }
}
