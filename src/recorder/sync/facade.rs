//! The atomics and cells the primitives use, as tokio's `loom` facade: std's
//! here; the loom models (`loom_*.rs`) compile the primitives' source again
//! against a facade of the same shape made of loom's types.

/// Atomics as the primitives see them (loom's in the models).
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
}

/// `UnsafeCell` with loom's closure-based interface, so that the same
/// source compiles against `loom::cell::UnsafeCell` in the models (where
/// every access is checked for a race).
pub(crate) mod cell {
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(data: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(data))
        }

        /// Calls `f` with a pointer to the data, for writing.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// `const fn` in the normal build (the recorder's locks are statics), a
/// plain `fn` in the loom models (loom's atomics are not `const`).
macro_rules! maybe_const_fn {
    ($(#[$m:meta])* $vis:vis fn $($rest:tt)*) => {
        $(#[$m])* $vis const fn $($rest)*
    };
}
pub(crate) use maybe_const_fn;

/// Takes a lock flag if it is free: one `xchg` (a `swap` with `Acquire`).
///
/// (loom's version is a `compare_exchange`, the same operation as far as the
/// lock is concerned, since a failed swap writes back the `true` it read;
/// but loom 0.7 mis-orders the stores of failed swaps and reports even a
/// textbook spin lock as a livelock.)
#[inline(always)]
pub(crate) fn try_take(flag: &atomic::AtomicBool) -> bool {
    !flag.swap(true, atomic::Ordering::Acquire)
}

/// How a spin lock's waiters wait: here, by spinning, then yielding (a
/// system call, no allocation, so usable inside the allocator); nothing to
/// wake. In the loom models a waiter yields to the other model threads and
/// goes straight back to `try_take`: loom lets a relaxed load return the
/// old `true` for ever (a processor does not), so a wait that tests with a
/// load would never end there.
#[derive(Debug)]
pub(crate) struct Waiters;

impl Waiters {
    pub(crate) const fn new() -> Waiters {
        Waiters
    }

    /// One step of waiting; `spins` counts the steps so far. True if the
    /// waiter should try to take the lock at once rather than test it
    /// again (never here).
    #[inline(always)]
    pub(crate) fn wait(&self, spins: u32) -> bool {
        if spins < 100 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
        false
    }

    /// After a release: nothing (waiters spin).
    #[inline(always)]
    pub(crate) fn wake(&self) {}
}
