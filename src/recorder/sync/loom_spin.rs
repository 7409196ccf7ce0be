//! loom models of the spin lock (`spin.rs`, compiled again here against
//! loom's atomics and cells): mutual exclusion, and the fork bypass (the
//! thread that holds every lock for a fork enters a lock without waiting,
//! and leaves it held; no other thread gets in until the handlers release).

#![allow(dead_code)]

/// The facade of `facade.rs`, made of loom's types.
pub(super) mod facade {
    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};
    }

    pub(crate) mod cell {
        /// loom's cell behind the std facade's interface: every access is
        /// checked against the others for a race.
        pub(crate) struct UnsafeCell<T>(loom::cell::UnsafeCell<T>);

        impl<T> std::fmt::Debug for UnsafeCell<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("UnsafeCell")
            }
        }

        impl<T> UnsafeCell<T> {
            pub(crate) fn new(data: T) -> UnsafeCell<T> {
                UnsafeCell(loom::cell::UnsafeCell::new(data))
            }

            pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
                self.0.with_mut(f)
            }
        }
    }

    /// loom's atomics are not `const`: plain constructors here.
    macro_rules! maybe_const_fn {
        ($(#[$m:meta])* $vis:vis fn $($rest:tt)*) => {
            $(#[$m])* $vis fn $($rest)*
        };
    }
    pub(crate) use maybe_const_fn;

    /// See `facade::try_take`.
    pub(crate) fn try_take(flag: &atomic::AtomicBool) -> bool {
        flag.compare_exchange(
            false,
            true,
            atomic::Ordering::Acquire,
            atomic::Ordering::Relaxed,
        )
        .is_ok()
    }

    /// A waiter yields to the other model threads and goes straight back
    /// to `try_take` (see `facade::Waiters`).
    #[derive(Debug)]
    pub(crate) struct Waiters;

    impl Waiters {
        pub(crate) fn new() -> Waiters {
            Waiters
        }

        pub(crate) fn wait(&self, _spins: u32) -> bool {
            loom::thread::yield_now();
            true
        }

        pub(crate) fn wake(&self) {}
    }
}

/// `holder.rs` for loom's threads (which share one OS thread, so a std
/// thread-local cannot tell them apart): an id per model thread.
pub(super) mod holder {
    use loom::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    loom::lazy_static! {
        static ref HOLDER: AtomicUsize = AtomicUsize::new(0);
        static ref NEXT: AtomicUsize = AtomicUsize::new(1);
    }

    loom::thread_local! {
        static ME: usize = NEXT.fetch_add(1, Relaxed);
    }

    fn me() -> usize {
        ME.with(|m| *m)
    }

    pub(crate) fn holds_all() -> bool {
        let holder = HOLDER.load(Relaxed);
        holder != 0 && holder == me()
    }

    pub(crate) fn hold_for_fork() {
        HOLDER.store(me(), Relaxed);
    }

    pub(crate) fn forget_holder() {
        HOLDER.store(0, Relaxed);
    }
}

/// The lock itself, from the recorder's own source file.
#[path = "spin.rs"]
pub(super) mod spin;

use loom::sync::Arc;
use loom::thread;

use spin::SpinLock;

#[test]
fn loom_spin_lock_excludes() {
    loom::model(|| {
        let lock = Arc::new(SpinLock::new(0usize));
        let other = lock.clone();
        let t = thread::spawn(move || {
            // A read-modify-write of the data that loom checks for races.
            let mut g = other.lock();
            *g += 1;
        });
        {
            let mut g = lock.lock();
            *g += 1;
        }
        t.join().unwrap();
        assert_eq!(*lock.lock(), 2);
    });
}

#[test]
fn loom_spin_lock_fork_bypass() {
    loom::model(|| {
        let lock = Arc::new(SpinLock::new(0usize));
        let other = lock.clone();
        // Another thread using the lock normally, at any moment.
        let t = thread::spawn(move || *other.lock());
        // This thread "forks": takes the lock raw (`prepare`), marks itself
        // the holder, then needs the lock again (a free from another
        // library's `prepare` handler) and must enter without waiting.
        lock.acquire_for_fork();
        holder::hold_for_fork();
        {
            let mut g = lock.lock();
            *g = 1;
        }
        // Still held after the nested guard went: the other thread cannot
        // have seen 1, the state inside the fork's hold.
        // SAFETY: this thread holds the lock (acquire_for_fork above).
        unsafe { *lock.data_for_fork() = 2 };
        holder::forget_holder();
        lock.release_after_fork();
        let seen = t.join().unwrap();
        assert!(seen == 0 || seen == 2, "saw {seen} inside the fork's hold");
    });
}
