//! [`Tracker`]: the crate's only `GlobalAlloc` implementation. It forwards
//! every call to the inner allocator and tells the recorder about the few
//! that are sampled (or, in exact mode, about all of them).

use std::alloc::{GlobalAlloc, Layout, System};

use crate::header;
use crate::record;
use crate::sampling::{self, DEFAULT_SAMPLE_INTERVAL};
use crate::stack::Unwinder;

/// A global allocator that records which call stacks hold the live heap.
///
/// Wrap any inner allocator; the common path (an allocation that is not
/// sampled, and its free) adds a thread-local countdown and a magic-word
/// compare, nothing shared. See the crate docs for how to read the results.
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
        }
    }

    /// Sets the mean sample interval in bytes; `1` records every allocation.
    ///
    /// A `0` (which a `const` context cannot report as an error) is taken as
    /// `1`; at run time, [`set_sample_interval`](crate::set_sample_interval)
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

    /// The weight if this allocation of `size` bytes is to be recorded.
    #[inline(always)]
    fn sample(&self, size: usize) -> Option<f32> {
        if sampling::tick(size) {
            sampling::decide(size, self.interval)
        } else {
            None
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
        match self.sample(layout.size()) {
            // SAFETY: forwarded with the caller's contract.
            None => unsafe { self.inner.alloc(layout) },
            // SAFETY: as above; the recorder upholds the `GlobalAlloc` contract.
            Some(w) => unsafe { record::alloc(&self.inner, layout, false, w, self.unwinder) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.sample(layout.size()) {
            // SAFETY: forwarded with the caller's contract.
            None => unsafe { self.inner.alloc_zeroed(layout) },
            // SAFETY: as above.
            Some(w) => unsafe { record::alloc(&self.inner, layout, true, w, self.unwinder) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of this allocator (caller's contract).
        if unsafe { header::is_recorded(ptr) } {
            // SAFETY: as above, and it is recorded.
            unsafe { record::dealloc(&self.inner, ptr, layout) }
        } else {
            // SAFETY: unrecorded blocks come from `inner` with the caller's layout.
            unsafe { self.inner.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a live block of this allocator (caller's contract).
        let recorded = unsafe { header::is_recorded(ptr) };
        let weight = self.sample(new_size);
        // SAFETY (all arms): the caller's `realloc` contract, passed on.
        unsafe {
            match (recorded, weight) {
                (false, None) => self.inner.realloc(ptr, layout, new_size),
                (false, Some(w)) => record::realloc_into(&self.inner, ptr, layout, new_size, w, self.unwinder),
                (true, w) => record::realloc_recorded(&self.inner, ptr, layout, new_size, w, self.unwinder),
            }
        }
    }
}
