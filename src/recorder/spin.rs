//! The spin lock of the live lists and the thread registry: a flag, taken
//! with one `xchg` when free, which never allocates and never parks (a
//! thread that waits long yields, a system call). Nothing the tracker holds
//! it for takes more than a short copy.

use std::sync::atomic::{AtomicBool, Ordering::*};

pub(crate) struct SpinLock(AtomicBool);

impl SpinLock {
    /// An unlocked lock (all-zero bytes are one too).
    pub(crate) const fn new() -> SpinLock {
        SpinLock(AtomicBool::new(false))
    }

    /// Takes the lock; it stays held until the guard is dropped.
    #[inline(always)]
    pub(crate) fn lock(&self) -> SpinGuard<'_> {
        self.acquire();
        SpinGuard(self)
    }

    /// Takes the lock with no guard: the caller calls [`SpinLock::release`]
    /// (for the fork handlers, which take it in one function and release it
    /// in another).
    #[inline(always)]
    pub(crate) fn acquire(&self) {
        // The uncontended case is all that runs inline.
        if self.0.swap(true, Acquire) {
            self.acquire_contended();
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.0.load(Relaxed) {
                spins = spins.saturating_add(1);
                if spins < 100 {
                    std::hint::spin_loop();
                } else {
                    // A syscall, no allocation: safe inside the allocator.
                    std::thread::yield_now();
                }
            }
            if !self.0.swap(true, Acquire) {
                return;
            }
        }
    }

    /// Releases a lock taken with [`SpinLock::acquire`].
    #[inline(always)]
    pub(crate) fn release(&self) {
        self.0.store(false, Release);
    }
}

/// Holds a [`SpinLock`] until dropped.
pub(crate) struct SpinGuard<'a>(&'a SpinLock);

impl Drop for SpinGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.release();
    }
}
