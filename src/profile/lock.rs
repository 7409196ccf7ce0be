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
//! And a fair one: a ticket lock whose waiters sleep on a futex. With a
//! plain futex mutex (Drepper's mutex 2), a thread that takes the lock
//! again right after releasing it (the symbol service looks up thousands
//! of addresses, taking the lock for each) wins against the waiter it just
//! woke, which has yet to be scheduled: `/metrics` waited 1.6 s behind a
//! flood of symbol requests on a loaded machine. With tickets, the lock
//! goes to waiters in the order they came, so a waiter waits for the holds
//! queued before it, never for an unbounded run of the same thread's.
//!
//! The whole state is two words (`next` ticket, `serving` ticket; free
//! when equal): a child resets both, and the kernel keeps no waiter list
//! across `fork` (private futexes are keyed by address space). Never used
//! on the allocation path: waiting is a system call that parks the thread.
//! On targets without futexes, waiters back off with short sleeps instead.

use std::sync::atomic::{AtomicU32, Ordering::*};

pub(crate) struct BlockingLock {
    /// The ticket the next thread to ask takes.
    next: AtomicU32,
    /// The ticket that holds the lock (or may take it, if `next` equals it:
    /// free). Waiters sleep on this word.
    serving: AtomicU32,
}

impl BlockingLock {
    /// A free lock.
    pub(crate) const fn new() -> BlockingLock {
        BlockingLock {
            next: AtomicU32::new(0),
            serving: AtomicU32::new(0),
        }
    }

    /// Takes the lock until the guard is dropped.
    pub(crate) fn lock(&self) -> BlockingGuard<'_> {
        self.acquire();
        BlockingGuard(self)
    }

    /// Takes the lock with no guard: the caller calls
    /// [`BlockingLock::release`] (for the fork handlers).
    pub(crate) fn acquire(&self) {
        // Wrapping: tickets are compared for equality only.
        let mine = self.next.fetch_add(1, Relaxed);
        if self.serving.load(Acquire) != mine {
            self.wait(mine);
        }
    }

    #[cold]
    fn wait(&self, mine: u32) {
        // A short spin first: most holds are a cache lookup.
        for _ in 0..100 {
            if self.serving.load(Acquire) == mine {
                return;
            }
            std::hint::spin_loop();
        }
        loop {
            let now = self.serving.load(Acquire);
            if now == mine {
                return;
            }
            // Returns at once if `serving` moved on meanwhile.
            futex_wait(&self.serving, now);
        }
    }

    /// Releases the lock (taken with [`acquire`](Self::acquire) or by a
    /// guard): to the next ticket.
    pub(crate) fn release(&self) {
        let next = self.serving.fetch_add(1, Release).wrapping_add(1);
        if self.next.load(Relaxed) != next {
            // Waiters: all of them wake, the one whose turn it is takes it
            // (they are few: the query side's threads).
            futex_wake_all(&self.serving);
        }
    }

    /// Marks the lock free: for a forked child, whose only thread is the
    /// one that took it in `prepare`.
    pub(crate) fn reset(&self) {
        self.next.store(0, Relaxed);
        self.serving.store(0, Relaxed);
    }
}

/// Holds a [`BlockingLock`] until dropped.
pub(crate) struct BlockingGuard<'a>(&'a BlockingLock);

impl Drop for BlockingGuard<'_> {
    fn drop(&mut self) {
        self.0.release();
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

/// Wakes every thread sleeping on `word`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn futex_wait(word: &AtomicU32, expected: u32) {
    if word.load(Relaxed) == expected {
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn futex_wake_all(_: &AtomicU32) {}

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
        // The waiter took a ticket and sleeps (no spinning).
        assert_eq!(lock.next.load(Relaxed), 2);
        assert!(!waiter.is_finished());
        lock.release();
        waiter.join().unwrap();
        assert_eq!(lock.next.load(Relaxed), lock.serving.load(Relaxed));
    }

    #[test]
    fn a_thread_taking_it_again_and_again_does_not_starve_a_waiter() {
        // As the symbol service: one thread takes the lock for each of many
        // lookups. A waiter gets it after the holds queued before it.
        let lock = Arc::new(BlockingLock::new());
        let holds = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hog = {
            let (lock, holds, stop) = (lock.clone(), holds.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let _g = lock.lock();
                    holds.fetch_add(1, Relaxed);
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        for _ in 0..5 {
            let before = holds.load(Relaxed);
            let _g = lock.lock();
            let waited = holds.load(Relaxed) - before;
            assert!(waited <= 2, "waited for {waited} holds of the same thread");
        }
        stop.store(true, Relaxed);
        hog.join().unwrap();
    }
}
