//! [`Site`]: one call stack that allocated recorded memory, with its counters
//! and the ages of its live blocks.

use std::sync::Arc;
use std::time::Duration;

use super::frame::{Frame, owner};
use super::symbolize::SiteStack;

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
}
