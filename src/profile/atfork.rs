//! Registering the query side's fork handlers once per process, in a way that
//! cannot hang a forked child.
//!
//! A `std::sync::Once` is not enough on its own: glibc's `pthread_atfork`
//! waits while another thread is inside `fork`, so a parent thread that was
//! registering (inside `call_once`) when another thread forked is copied
//! into the child as a `Once` that stays "running" for ever, with no thread
//! left to finish it, and the child's first query would wait on it for ever
//! (seen once in 200 forks of `tests/fork_sampled.rs`, on the first fork).
//! So the registering process's id is noted first: a child that finds a
//! registration started by another process registers the handlers itself
//! (it inherited none of them) instead of waiting.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};

/// One set of fork handlers, registered at most once per process.
pub(super) struct AtforkOnce {
    once: Once,
    /// The process whose thread started the registration (0: none yet).
    installer: AtomicU32,
    /// Set by the first thread of a child that registered directly.
    child_done: AtomicBool,
}

impl AtforkOnce {
    pub(super) const fn new() -> Self {
        AtforkOnce {
            once: Once::new(),
            installer: AtomicU32::new(0),
            child_done: AtomicBool::new(false),
        }
    }

    /// Registers `prepare`, `parent` and `child` with `pthread_atfork` once
    /// per process, after the recorder's handlers (so that ours run first in
    /// `prepare`: no recorder lock is held while ours are waited for).
    pub(super) fn install(
        &self,
        prepare: extern "C" fn(),
        parent: extern "C" fn(),
        child: extern "C" fn(),
    ) {
        self.call(|| {
            crate::recorder::install_fork_handlers();
            // SAFETY: the handlers are `extern "C"` functions that never
            // unwind; registering them has no other effect.
            unsafe {
                libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
            }
        });
    }

    /// Runs `register` once per process; never waits for a registration
    /// that a thread of a parent process started.
    pub(super) fn call(&self, register: impl FnOnce()) {
        if self.once.is_completed() {
            return;
        }
        let me = std::process::id();
        let who = self.installer.load(Acquire);
        if who != 0 && who != me {
            // A forked child whose parent was registering at the fork: no
            // handler of this set was registered before the fork (the
            // parent's `pthread_atfork` call was still waiting), so none is
            // inherited; the lock it guards was not held (the handlers are
            // registered before their lock is first taken).
            if !self.child_done.swap(true, AcqRel) {
                register();
            }
            return;
        }
        self.once.call_once(|| {
            self.installer.store(me, Release);
            register();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::AtforkOnce;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    #[test]
    fn registers_once() {
        static ONCE: AtforkOnce = AtforkOnce::new();
        static N: AtomicUsize = AtomicUsize::new(0);
        for _ in 0..3 {
            ONCE.call(|| {
                N.fetch_add(1, Relaxed);
            });
        }
        assert_eq!(N.load(Relaxed), 1);
    }

    #[test]
    fn a_registration_started_by_another_process_is_not_waited_for() {
        // As a forked child sees it: started (by the parent), never completed.
        static ONCE: AtforkOnce = AtforkOnce::new();
        static N: AtomicUsize = AtomicUsize::new(0);
        ONCE.installer.store(std::process::id() + 1, Relaxed);
        ONCE.call(|| {
            N.fetch_add(1, Relaxed);
        });
        ONCE.call(|| {
            N.fetch_add(1, Relaxed);
        });
        assert_eq!(N.load(Relaxed), 1, "registered directly, once");
    }
}
