//! `BlockingLock`: the query side's long-held lock (the symbol lock), which
//! a waiter sleeps on instead of spinning.
//!
//! Why not `std::sync::Mutex`: the fork handlers must take the lock in
//! `prepare` and release it in `parent`/`child`, outside any scope, and a
//! forked child must find it free whatever the parent's other threads did;
//! std's mutex offers neither (a guard cannot be handed from one function
//! to another, and its state in a child is unspecified). Why not the
//! recorder's spin lock: the symbol lock is held for whole symbolizations
//! (milliseconds to seconds, loading debug info), and a spin lock's waiters
//! then burn a core each in `sched_yield` (the endpoint under abuse showed
//! 193% CPU with eight waiting requests).
//!
//! So a futex word, as in Drepper's "Futexes Are Tricky" (mutex 2): 0 free,
//! 1 held, 2 held with waiters. The whole state is that word: a child
//! resets it to 0, and the kernel keeps no waiter list across `fork`
//! (private futexes are keyed by address space). Never used on the
//! allocation path: waiting is a system call that parks the thread. On
//! targets without futexes, waiters back off with short sleeps instead.
//!
//! A guard's release hands the lock to the waiter it wakes (see
//! [`BlockingLock::release_to_waiter`]): the query side takes it once per
//! address in loops lasting seconds, and without the hand-off such a loop
//! takes it back before the woken waiter runs.

use std::sync::atomic::{AtomicU32, Ordering::*};
use std::time::{Duration, Instant};

pub(crate) struct BlockingLock(AtomicU32);

const FREE: u32 = 0;
const HELD: u32 = 1;
const CONTENDED: u32 = 2;

/// How long [`BlockingLock::release_to_waiter`] leaves the lock to the
/// waiter it woke (a wake-up takes tens of microseconds on an idle core;
/// a loaded machine may take longer, and then the releaser goes on).
const HANDOFF_WAIT: Duration = Duration::from_millis(5);

impl BlockingLock {
    /// A free lock.
    pub(crate) const fn new() -> BlockingLock {
        BlockingLock(AtomicU32::new(FREE))
    }

    /// Takes the lock until the guard is dropped.
    pub(crate) fn lock(&self) -> BlockingGuard<'_> {
        self.acquire();
        BlockingGuard(self)
    }

    /// Takes the lock with no guard: the caller calls
    /// [`BlockingLock::release`] (for the fork handlers).
    pub(crate) fn acquire(&self) {
        if self
            .0
            .compare_exchange(FREE, HELD, Acquire, Relaxed)
            .is_err()
        {
            self.wait();
        }
    }

    #[cold]
    fn wait(&self) {
        // A short spin first: most holds are a cache lookup.
        for _ in 0..100 {
            if self.0.load(Relaxed) == FREE
                && self
                    .0
                    .compare_exchange(FREE, HELD, Acquire, Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        // From here on the word says "waiters" (2), so the holder wakes one.
        while self.0.swap(CONTENDED, Acquire) != FREE {
            futex_wait(&self.0, CONTENDED);
        }
    }

    /// Releases the lock (taken with [`acquire`](Self::acquire) or by a guard).
    pub(crate) fn release(&self) {
        if self.0.swap(FREE, Release) == CONTENDED {
            futex_wake_one(&self.0);
        }
    }

    /// Releases the lock and, if that woke a waiter, gives the waiter up to
    /// [`HANDOFF_WAIT`] to take it before returning.
    ///
    /// For a thread that takes the lock again at once, in a loop of short
    /// holds (a snapshot's or the symbol service's lookups, one per address
    /// for up to seconds): the lock is not fair, and such a thread takes it
    /// back before the woken waiter has run, for as long as its loop lasts
    /// (the endpoint's `/metrics` waited 2 to 5 s behind two symbol
    /// requests). Uncontended, it is a plain release.
    pub(crate) fn release_to_waiter(&self) {
        if self.0.swap(FREE, Release) == CONTENDED && futex_wake_one(&self.0) {
            let deadline = Instant::now() + HANDOFF_WAIT;
            while self.0.load(Relaxed) == FREE && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Marks the lock free: for a forked child, whose only thread is the
    /// one that took it in `prepare`.
    pub(crate) fn reset(&self) {
        self.0.store(FREE, Relaxed);
    }
}

/// Holds a [`BlockingLock`] until dropped.
pub(crate) struct BlockingGuard<'a>(&'a BlockingLock);

impl Drop for BlockingGuard<'_> {
    fn drop(&mut self) {
        self.0.release_to_waiter();
    }
}

/// Sleeps while `word` is `expected` (or returns at once if it is not; a
/// spurious return is fine, the caller loops).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, which lives
    // as long as the lock; a null timeout waits without a deadline. Errors
    // (EAGAIN: the word changed; EINTR) are returns, and the caller loops.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes one thread sleeping on `word`; whether there was one.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn futex_wake_one(word: &AtomicU32) -> bool {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        )
    };
    woken > 0
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn futex_wait(word: &AtomicU32, expected: u32) {
    if word.load(Relaxed) == expected {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Waiters poll here (every 200 us): the word was marked contended by one.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn futex_wake_one(_: &AtomicU32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn mutual_exclusion_against_a_plain_counter() {
        // A non-atomic read-modify-write under the lock: lost updates would
        // show in the total.
        struct Shared {
            lock: BlockingLock,
            n: AtomicUsize,
        }
        let s = Arc::new(Shared {
            lock: BlockingLock::new(),
            n: AtomicUsize::new(0),
        });
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let _g = s.lock.lock();
                        let v = s.n.load(Relaxed);
                        if i % 1000 == 0 {
                            std::thread::yield_now(); // a long hold now and then
                        }
                        s.n.store(v + 1, Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.n.load(Relaxed), 80_000);
    }

    #[test]
    fn a_waiter_sleeps_until_release() {
        let lock = Arc::new(BlockingLock::new());
        lock.acquire();
        let l = lock.clone();
        let waiter = std::thread::spawn(move || {
            let _g = l.lock();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        // The waiter marked the lock contended and sleeps (no spinning).
        assert_eq!(lock.0.load(Relaxed), CONTENDED);
        assert!(!waiter.is_finished());
        lock.release();
        waiter.join().unwrap();
        assert_eq!(lock.0.load(Relaxed), FREE);
    }
}
