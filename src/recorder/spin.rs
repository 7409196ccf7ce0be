//! The one lock of the recorder: a flag, taken with one `xchg` when free,
//! which never allocates and never parks (a thread that waits long yields,
//! a system call). The live lists, the site table, the book pool and the
//! thread registry all use it, so the fork handlers (`fork`) can take and
//! release every tracker lock the same way, outside any scope.
//!
//! Between the fork handlers' `prepare` and `parent`/`child`, the forking
//! thread holds every one of these locks. If that thread needs one of them
//! meanwhile (another library's `prepare` handler, run after ours, frees a
//! recorded block), waiting would be waiting for itself: a lock taken by a
//! thread that `fork::holds_all` says holds everything is entered without
//! acquiring it (it is already this thread's), and left without releasing it.

use std::sync::atomic::{AtomicBool, Ordering::*};

use super::fork;

pub(crate) struct SpinLock(AtomicBool);

impl SpinLock {
    /// An unlocked lock (all-zero bytes are one too).
    pub(crate) const fn new() -> SpinLock {
        SpinLock(AtomicBool::new(false))
    }

    /// Takes the lock; it stays held until the guard is dropped.
    #[inline(always)]
    pub(crate) fn lock(&self) -> SpinGuard<'_> {
        // The uncontended case is all that runs inline.
        let owned = !self.0.swap(true, Acquire) || self.acquire_contended();
        SpinGuard { lock: self, owned }
    }

    /// Takes the lock with no guard: the caller calls [`SpinLock::release`]
    /// (for the fork handlers, which take it in one function and release it
    /// in another).
    pub(crate) fn acquire(&self) {
        if self.0.swap(true, Acquire) {
            self.wait();
        }
    }

    /// Waits for the lock; returns false (without taking it) if this thread
    /// already holds it for a fork (see the module docs).
    #[cold]
    #[inline(never)]
    fn acquire_contended(&self) -> bool {
        if fork::holds_all() {
            return false;
        }
        self.wait();
        true
    }

    #[cold]
    fn wait(&self) {
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

    /// Marks the lock free without any ordering: for a forked child, whose
    /// only thread is the one that took it in `prepare`.
    pub(crate) fn reset(&self) {
        self.0.store(false, Relaxed);
    }
}

/// Holds a [`SpinLock`] until dropped.
pub(crate) struct SpinGuard<'a> {
    lock: &'a SpinLock,
    /// False when the lock was entered under a fork's hold and must stay
    /// held when this guard goes.
    owned: bool,
}

impl Drop for SpinGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.owned {
            self.lock.release();
        }
    }
}
