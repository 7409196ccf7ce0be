//! [`Tracker`]: the crate's only `GlobalAlloc` implementation. It forwards
//! every call to the inner allocator and tells the recorder about the few
//! that are sampled (or, in exact mode, about all of them).

use std::alloc::{GlobalAlloc, Layout, System};

use super::book::MAX_SITES;
use super::header;
use super::record::{self, Recording};
use super::sampling::{self, DEFAULT_SAMPLE_INTERVAL};
use super::stack::Unwinder;

/// The default of [`Tracker::max_sites`]: 65,536 distinct stacks.
///
/// # Examples
///
/// ```
/// assert_eq!(leakscope::DEFAULT_MAX_SITES, 65_536);
/// ```
pub const DEFAULT_MAX_SITES: usize = 1 << 16;

/// The default of [`Tracker::max_label_sets`]: 4,096 distinct label sets.
///
/// # Examples
///
/// ```
/// assert_eq!(leakscope::DEFAULT_MAX_LABEL_SETS, 4096);
/// ```
pub const DEFAULT_MAX_LABEL_SETS: usize = 4096;

/// The largest value [`Tracker::max_sites`] takes (2^20); larger ones are
/// clamped to it.
///
/// # Examples
///
/// ```
/// assert_eq!(leakscope::MAX_SITES_LIMIT, 1 << 20);
/// ```
pub const MAX_SITES_LIMIT: usize = MAX_SITES;

/// A global allocator that records which call stacks hold the live heap.
///
/// Wrap any inner allocator; the common path (an allocation that is not
/// sampled, and its free) adds a thread-local countdown and a test of one
/// address bit (or, for the few blocks that bit does not clear, a magic-word
/// compare), nothing shared. See the crate docs for how to read the results.
///
/// # Examples
///
/// Sampled (the default, 512 KiB mean interval, cheap enough for production):
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();
/// # fn main() {}
/// ```
///
/// Any inner allocator, every allocation recorded (exact mode):
///
/// ```no_run
/// use std::alloc::System;
///
/// #[global_allocator]
/// static GLOBAL: leakscope::Tracker<System> = leakscope::Tracker::new(System).sample_interval(1);
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct Tracker<A: GlobalAlloc = System> {
    inner: A,
    interval: u64,
    unwinder: Unwinder,
    max_sites: u32,
    max_label_sets: u32,
}

impl Tracker<System> {
    /// A tracker around the system allocator, sampling every 512 KiB on
    /// average.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[global_allocator]
    /// static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();
    /// # fn main() {}
    /// ```
    pub const fn system() -> Self {
        Tracker::new(System)
    }
}

impl<A: GlobalAlloc> Tracker<A> {
    /// A tracker around `inner`, sampling every 512 KiB on average.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::alloc::System;
    /// #[global_allocator]
    /// static GLOBAL: leakscope::Tracker<System> = leakscope::Tracker::new(System);
    /// # fn main() {}
    /// ```
    pub const fn new(inner: A) -> Self {
        Tracker {
            inner,
            interval: DEFAULT_SAMPLE_INTERVAL,
            unwinder: Unwinder::Backtrace,
            max_sites: DEFAULT_MAX_SITES as u32,
            max_label_sets: DEFAULT_MAX_LABEL_SETS as u32,
        }
    }

    /// Sets the mean sample interval in bytes; `1` records every allocation.
    ///
    /// A `0` (which a `const` context cannot report as an error) is taken as
    /// `1`; at run time, [`set_sample_interval`](super::sampling::set_sample_interval)
    /// rejects it with an error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[global_allocator]
    /// static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(64 * 1024);
    /// # fn main() {}
    /// ```
    pub const fn sample_interval(mut self, bytes: u64) -> Self {
        self.interval = if bytes == 0 { 1 } else { bytes };
        self
    }

    /// Chooses how stacks are captured on the recorded path.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use leakscope::{Tracker, Unwinder};
    /// #[global_allocator]
    /// static GLOBAL: Tracker = Tracker::system().unwinder(Unwinder::Backtrace);
    /// # fn main() {}
    /// ```
    pub const fn unwinder(mut self, unwinder: Unwinder) -> Self {
        self.unwinder = unwinder;
        self
    }

    /// Caps the number of distinct call stacks the tracker keeps apart
    /// (default [`DEFAULT_MAX_SITES`], 65,536).
    ///
    /// Each distinct stack the tracker meets becomes a site, kept for the
    /// life of the process (about 100 bytes plus 8 per frame, and the
    /// counters of each thread that uses it). Once `n` sites exist, every
    /// new stack is charged to one overflow site whose only frame is named
    /// `[other]`, and the stack itself is not kept, so the tracker's memory
    /// stops growing however many more stacks the program has; reports then
    /// say about how many distinct stacks were folded into `[other]` (an
    /// estimate, from a fixed-size sketch of their hashes). Stacks met
    /// before the cap keep their own sites.
    ///
    /// Values above [`MAX_SITES_LIMIT`] (2^20) are clamped to it (a `const`
    /// builder cannot return an error, and a larger table would not fit the
    /// per-thread counter directories). `0` is allowed: every stack is then
    /// charged to `[other]`, which keeps only whole-process figures.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[global_allocator]
    /// static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().max_sites(10_000);
    /// # fn main() {}
    /// ```
    pub const fn max_sites(mut self, n: usize) -> Self {
        self.max_sites = if n > MAX_SITES_LIMIT {
            MAX_SITES_LIMIT as u32
        } else {
            n as u32
        };
        self
    }

    /// Caps the number of distinct label sets (see
    /// `leakscope::with_labels`) kept apart (default
    /// [`DEFAULT_MAX_LABEL_SETS`], 4,096).
    ///
    /// Label sets are interned for the life of the process, like sites.
    /// Once `n` distinct sets exist, every new one is replaced by a single
    /// overflow set, the one label `leakscope=other`, so a label taken from
    /// unbounded input (a request id) cannot grow the tracker without end;
    /// sets met before the cap keep their own ids. `0` is taken as `1`.
    /// The cap reaches the interner with the tracker's first recorded
    /// allocation (the default applies before that).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[global_allocator]
    /// static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().max_label_sets(256);
    /// # fn main() {}
    /// ```
    pub const fn max_label_sets(mut self, n: usize) -> Self {
        self.max_label_sets = if n == 0 {
            1
        } else if n > u32::MAX as usize / 2 {
            u32::MAX / 2
        } else {
            n as u32
        };
        self
    }

    /// The recorded path's configuration.
    #[inline(always)]
    fn how(&self) -> Recording {
        Recording {
            unwinder: self.unwinder,
            max_sites: self.max_sites,
            max_label_sets: self.max_label_sets,
        }
    }

    /// The common-path test: false when an allocation of `size` bytes is
    /// certainly not sampled (the per-thread countdown has not run out), true
    /// when [`Tracker::decide`] must look.
    ///
    /// Kept apart from the decision so that the inlined fast path of each
    /// `GlobalAlloc` method is a countdown, a compare and a tail call to the
    /// inner allocator: with the decision and the recorder calls inline, the
    /// methods needed six callee-saved registers and ~40 instructions per
    /// `realloc` (measured with callgrind), and their size changed how the
    /// user's allocation-heavy generic code was inlined.
    #[inline(always)]
    fn may_sample(&self, size: usize) -> bool {
        // For a `static` tracker `self.interval` is a constant, so this
        // branch folds away at compile time.
        self.interval == 1 || sampling::tick(size)
    }

    /// The weight if this allocation is to be recorded; only after
    /// [`Tracker::may_sample`] returned true (the countdown was already
    /// charged with `size`).
    #[inline(always)]
    fn decide(&self, size: usize) -> Option<f32> {
        if self.interval == 1 {
            sampling::decide_exact(size)
        } else {
            sampling::decide(size, self.interval)
        }
    }

    /// `alloc` / `alloc_zeroed` once the countdown ran out (or in exact mode).
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: (all arms) the caller's `alloc` contract, passed on; the
        // recorder upholds the `GlobalAlloc` contract.
        unsafe {
            match self.decide(layout.size()) {
                None if zeroed => self.inner.alloc_zeroed(layout),
                None => self.inner.alloc(layout),
                Some(w) => record::alloc(&self.inner, layout, zeroed, w, self.how()),
            }
        }
    }

    /// `realloc` of a recorded block, or of any block once the countdown ran
    /// out (or in exact mode).
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`; `recorded` is `header::is_recorded(ptr, layout.align())`,
    /// and the countdown was charged with `new_size` unless the tracker is
    /// exact.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_slow(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        recorded: bool,
        ticked: bool,
    ) -> *mut u8 {
        let weight = if ticked { self.decide(new_size) } else { None };
        // SAFETY: (all arms) the caller's `realloc` contract, passed on.
        unsafe {
            match (recorded, weight) {
                (false, None) => self.inner.realloc(ptr, layout, new_size),
                (false, Some(w)) => {
                    record::realloc_into(&self.inner, ptr, layout, new_size, w, self.how())
                }
                (true, w) => {
                    record::realloc_recorded(&self.inner, ptr, layout, new_size, w, self.how())
                }
            }
        }
    }
}

// SAFETY: every method forwards to `inner` with a layout that `inner` accepts
// and later gets back unchanged (the caller's layout for unrecorded blocks,
// `header::inner_layout` of it for recorded ones, recomputed from the caller's
// layout alone). Recorded blocks are handed out at an offset inside a larger
// inner block that keeps the caller's alignment and size. The recorder never
// panics (its fallbacks forward plainly) and holds the reentrancy guard while
// it may allocate.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Tracker<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.may_sample(layout.size()) {
            // SAFETY: the caller's contract, passed on.
            unsafe { self.alloc_slow(layout, false) }
        } else {
            // SAFETY: forwarded with the caller's contract.
            unsafe { self.inner.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if self.may_sample(layout.size()) {
            // SAFETY: the caller's contract, passed on.
            unsafe { self.alloc_slow(layout, true) }
        } else {
            // SAFETY: forwarded with the caller's contract.
            unsafe { self.inner.alloc_zeroed(layout) }
        }
    }

    // Inlined, like the other methods, so the test costs no call of its own
    // (two-thread box churn: +10.3% instructions inlined, +16.7% behind a
    // call; serde_json parse+drop the same either way). Measured with one
    // codegen unit: with sixteen, which functions share a unit changes what
    // gets inlined into the user's code, and that swung both by 2%.
    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of this allocator (caller's contract).
        if unsafe { header::is_recorded(ptr, layout.align()) } {
            // SAFETY: as above, and it is recorded.
            unsafe { record::dealloc(&self.inner, ptr, layout) }
        } else {
            // SAFETY: unrecorded blocks come from `inner` with the caller's layout.
            unsafe { self.inner.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Two separate tests, each branching straight to the slow path:
        // combining them into one condition made the compiler keep both as
        // flags and test them again (six more instructions per realloc).
        // SAFETY: `ptr` is a live block of this allocator (caller's contract),
        // allocated with `layout`.
        if unsafe { header::is_recorded(ptr, layout.align()) } {
            let ticked = self.may_sample(new_size);
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.realloc_slow(ptr, layout, new_size, true, ticked) };
        }
        if self.may_sample(new_size) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { self.realloc_slow(ptr, layout, new_size, false, true) };
        }
        // SAFETY: an unrecorded block, not sampled: a plain forward.
        unsafe { self.inner.realloc(ptr, layout, new_size) }
    }
}
