//! The recorder's lock: a flag, taken with one `xchg` when free, which never
//! allocates and never parks (a thread that waits long yields, a system
//! call). [`SpinLock<T>`] owns the data it guards, as `std::sync::Mutex<T>`
//! does, so no code reaches the data without the lock; [`RawSpinLock`] is
//! the bare flag, for a lock that guards something outside Rust's view (the
//! symbolizer's right to run; the links in block headers are reached
//! through a `SpinLock<usize>`, the list head).
//!
//! Between the fork handlers' `prepare` and `parent`/`child`, the forking
//! thread holds every one of these locks. If that thread needs one of them
//! meanwhile (another library's `prepare` handler, run after ours, frees a
//! recorded block), waiting would be waiting for itself: a lock taken by the
//! thread that `holder::holds_all` names is entered without acquiring it (it
//! is already this thread's), and left without releasing it.

use super::facade::{
    self,
    atomic::{AtomicBool, Ordering::*},
    cell::UnsafeCell,
};
use super::holder;

/// A spin lock with no data of its own.
#[derive(Debug)]
pub(crate) struct RawSpinLock {
    held: AtomicBool,
    /// Nothing in the normal build (a zero-sized type); in the loom models,
    /// what a waiter blocks on until a release (see `facade::Waiters`).
    waiters: facade::Waiters,
}

impl RawSpinLock {
    super::facade::maybe_const_fn! {
        /// An unlocked lock (all-zero bytes are one too).
        pub(crate) fn new() -> RawSpinLock {
            RawSpinLock {
                held: AtomicBool::new(false),
                waiters: facade::Waiters::new(),
            }
        }
    }

    /// Takes the lock; it stays held until the guard is dropped.
    #[inline(always)]
    pub(crate) fn lock(&self) -> RawGuard<'_> {
        // The uncontended case is all that runs inline.
        let owned = facade::try_take(&self.held) || self.acquire_contended();
        RawGuard { lock: self, owned }
    }

    /// Takes the lock with no guard: the caller calls
    /// [`RawSpinLock::release`] (for the fork handlers, which take it in one
    /// function and release it in another).
    pub(crate) fn acquire(&self) {
        if !facade::try_take(&self.held) {
            self.wait();
        }
    }

    /// Waits for the lock; returns false (without taking it) if this thread
    /// already holds it for a fork (see the module docs).
    #[cold]
    #[inline(never)]
    fn acquire_contended(&self) -> bool {
        if holder::holds_all() {
            return false;
        }
        self.wait();
        true
    }

    #[cold]
    fn wait(&self) {
        let mut spins = 0u32;
        loop {
            // Test before test-and-set: a relaxed load keeps the cache line
            // shared while the lock is held.
            while self.held.load(Relaxed) {
                spins = spins.saturating_add(1);
                if self.waiters.wait(spins) {
                    break;
                }
            }
            if facade::try_take(&self.held) {
                return;
            }
        }
    }

    /// Releases a lock taken with [`RawSpinLock::acquire`].
    #[inline(always)]
    pub(crate) fn release(&self) {
        self.held.store(false, Release);
        self.waiters.wake();
    }

    /// Marks the lock free without any ordering: for a forked child, whose
    /// only thread is the one that took it in `prepare`.
    pub(crate) fn reset(&self) {
        self.held.store(false, Relaxed);
    }
}

/// Holds a [`RawSpinLock`] until dropped.
#[derive(Debug)]
pub(crate) struct RawGuard<'a> {
    lock: &'a RawSpinLock,
    /// False when the lock was entered under a fork's hold and must stay
    /// held when this guard goes.
    owned: bool,
}

impl Drop for RawGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.owned {
            self.lock.release();
        }
    }
}

/// A spin lock that owns the data it guards.
#[derive(Debug)]
pub(crate) struct SpinLock<T> {
    raw: RawSpinLock,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through a `SpinGuard` (one at a time, by
// the lock) or by the fork handlers while they hold the lock; so, like
// `Mutex<T>`, the lock hands `T` from thread to thread and needs only
// `T: Send`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    super::facade::maybe_const_fn! {
        /// An unlocked lock around `data`.
        pub(crate) fn new(data: T) -> SpinLock<T> {
            SpinLock {
                raw: RawSpinLock::new(),
                data: UnsafeCell::new(data),
            }
        }
    }

    /// Takes the lock; the data is the guard's until it is dropped.
    #[inline(always)]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        SpinGuard {
            _raw: self.raw.lock(),
            data: &self.data,
        }
    }

    /// Takes the lock for a fork, with no guard (`fork::prepare`).
    pub(crate) fn acquire_for_fork(&self) {
        self.raw.acquire();
    }

    /// Releases the lock taken by [`SpinLock::acquire_for_fork`].
    pub(crate) fn release_after_fork(&self) {
        self.raw.release();
    }

    /// The data, while the calling thread holds the lock through
    /// [`SpinLock::acquire_for_fork`] (the forked child forgetting the
    /// parent's other threads).
    ///
    /// # Safety
    /// The caller took the lock with `acquire_for_fork` and has not released
    /// it, and no other reference to the data is alive.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn data_for_fork(&self) -> &mut T {
        // SAFETY: the caller holds the lock (contract), so this is the only
        // access.
        self.data.with_mut(|p| unsafe { &mut *p })
    }
}

/// The data of a [`SpinLock`], held until dropped.
#[derive(Debug)]
pub(crate) struct SpinGuard<'a, T> {
    _raw: RawGuard<'a>,
    data: &'a UnsafeCell<T>,
}

impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so no one else reaches the data.
        self.data.with_mut(|p| unsafe { &*p })
    }
}

impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        self.data.with_mut(|p| unsafe { &mut *p })
    }
}
