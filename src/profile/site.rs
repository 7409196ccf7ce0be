//! [`Site`]: one call stack that allocated recorded memory, with its counters
//! and the ages of its live blocks.

use std::sync::Arc;
use std::time::Duration;

use super::frame::{Frame, owner};
use super::symbolize::SiteStack;
use crate::recorder::COUNT_ONE;

/// The normal quantile of a two-sided 95% interval.
pub(crate) const Z95: f64 = 1.96;

/// The estimated variance one sampled block adds to its site's estimate.
///
/// Under Poisson sampling a block is recorded with probability `p` and
/// counted with weight `w = 1/p` (its estimate `e = w·s` bytes); the
/// Horvitz-Thompson variance estimate of a sum of such terms is
/// `Σ e² (1 - p)`, i.e. `e² (1 - 1/w)` per recorded block: 0 in exact mode
/// (`w = 1`), about `R²` for a block much smaller than the interval `R`.
fn block_variance(b: &Born) -> f64 {
    let w = b.count as f64 / COUNT_ONE as f64;
    if w <= 1.0 {
        return 0.0;
    }
    let e = b.bytes as f64;
    e * e * (1.0 - 1.0 / w)
}

/// `value ± Z95 sd`, the low end clamped at `floor`.
pub(crate) fn interval(value: f64, variance: f64, floor: f64) -> (f64, f64) {
    let d = Z95 * variance.max(0.0).sqrt();
    ((value - d).max(floor), value + d)
}

/// One live recorded block's age data, kept per site for age queries.
#[derive(Clone, Copy, Debug)]
pub(super) struct Born {
    pub(super) birth_us: u64,
    pub(super) bytes: u64,
    pub(super) count: u64,
}

/// One call stack that allocated recorded memory, with its counters.
#[derive(Clone, Debug)]
pub struct Site {
    pub(super) id: u32,
    pub(super) stack: SiteStack,
    pub(super) live_bytes: u64,
    pub(super) live_allocs: u64,
    pub(super) total_bytes: u64,
    pub(super) total_allocs: u64,
    /// Live blocks by birth, oldest first.
    pub(super) born: Arc<[Born]>,
    pub(super) taken_us: u64,
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

    /// The frame that owns this site: the innermost frame that is neither
    /// the standard library nor the tracker, i.e. the program's own code
    /// that asked for the memory (a `HashMap` that grows is charged to the
    /// function inserting into it, not to `hashbrown`). `None` when every
    /// frame is std's (or the stack is empty).
    ///
    /// The report's function column, the monitor's warnings and pprof's
    /// leaf all use this rule.
    ///
    /// # Examples
    ///
    /// ```
    /// for site in leakscope::snapshot().sites().iter().take(3) {
    ///     match site.owner() {
    ///         Some(f) => println!("{} at {:?}:{:?}", f.function(), f.file(), f.line()),
    ///         None => println!("site {}: standard library only", site.id()),
    ///     }
    /// }
    /// ```
    pub fn owner(&self) -> Option<&Frame> {
        owner(self.stack.frames())
    }

    /// The stack, for exports ([`SiteStack::frames_once`]).
    pub(crate) fn stack(&self) -> &SiteStack {
        &self.stack
    }

    /// The raw return addresses of the stack, innermost first, untrimmed.
    pub fn addresses(&self) -> &[usize] {
        self.stack.addresses()
    }

    /// The labels its allocations were made under (see
    /// [`with_labels`](crate::with_labels)), sorted by key; empty for
    /// unlabelled memory. A site is a (call stack, label set) pair: the same
    /// stack under two label sets is two sites.
    ///
    /// # Examples
    ///
    /// ```
    /// let kept = leakscope::with_labels(&[("tenant", "a")], || vec![0u8; 4096]);
    /// for site in leakscope::snapshot().sites() {
    ///     for (key, value) in site.labels() {
    ///         println!("site {} has {key}={value}", site.id());
    ///     }
    /// }
    /// # drop(kept);
    /// ```
    pub fn labels(&self) -> &[(String, String)] {
        self.stack.labels()
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

    /// The number of recorded (sampled) live blocks behind the estimates:
    /// the more, the smaller the sampling error. In exact mode every live
    /// block is recorded, and this is [`live_allocs`](Site::live_allocs).
    ///
    /// # Examples
    ///
    /// ```
    /// let snap = leakscope::snapshot();
    /// for site in snap.sites() {
    ///     println!("site {}: {} B from {} samples", site.id(), site.live_bytes(), site.samples());
    /// }
    /// ```
    pub fn samples(&self) -> u64 {
        self.born.len() as u64
    }

    /// A 95% interval for the true live bytes under sampling: the estimate ±
    /// 1.96 standard deviations, the variance estimated from the recorded
    /// blocks (`Σ e² (1 - 1/w)` over blocks of estimate `e` and weight `w`,
    /// the Horvitz-Thompson estimate for Poisson sampling), the low end
    /// clamped at 0. In exact mode both ends are
    /// [`live_bytes`](Site::live_bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// for site in leakscope::snapshot().sites() {
    ///     let (low, high) = site.live_bytes_interval();
    ///     assert!(low <= site.live_bytes() && site.live_bytes() <= high);
    /// }
    /// ```
    pub fn live_bytes_interval(&self) -> (u64, u64) {
        let (low, high) = interval(self.live_bytes as f64, self.live_variance(), 0.0);
        (low.floor() as u64, high.ceil() as u64)
    }

    /// Estimated variance of [`live_bytes`](Site::live_bytes) from sampling.
    pub(crate) fn live_variance(&self) -> f64 {
        self.born.iter().map(block_variance).sum()
    }

    /// Samples and variance of the live blocks born at or before `us`
    /// (tracker clock): in a diff, the blocks the base snapshot also held.
    pub(crate) fn born_by(&self, us: u64) -> (u64, f64) {
        let n = self.born.partition_point(|b| b.birth_us <= us);
        let v = self.born[..n].iter().map(block_variance).sum();
        (n as u64, v)
    }
}
