//! Registering the query side's fork handlers once per process, in a way that
//! cannot hang a forked child.
//!
//! A `std::sync::Once` is not enough on its own: glibc's `pthread_atfork`
//! waits while another thread's `fork` holds the handler list, so a parent thread that was
//! registering (inside `call_once`) when another thread forked is copied
//! into the child as a `Once` that stays "running" for ever, with no thread
//! left to finish it, and the child's first query would wait on it for ever
//! (seen once in 200 forks of `tests/fork_sampled.rs`, on the first fork).
//! The recorder's [`ForkOnce`] names the registering thread instead, and
//! never waits for one that is not alive in the caller's process; each set's
//! `child` handler tells it that the set came along into the child.
//!
//! Registering lazily is not enough either (glibc runs no handler of a set
//! registered while the fork was already running the others' `prepare`):
//! `startup` registers every set before `main`.

use crate::recorder::ForkOnce;

/// One set of fork handlers, registered at most once per process.
pub(super) struct AtforkOnce {
    once: ForkOnce,
}

impl AtforkOnce {
    pub(super) const fn new() -> Self {
        AtforkOnce {
            once: ForkOnce::new(),
        }
    }

    /// Registers `prepare`, `parent` and `child` with `pthread_atfork` once
    /// per process, after the recorder's handlers (so that ours run first in
    /// `prepare`: no recorder lock is held while ours are waited for).
    /// `child` must call [`AtforkOnce::complete_in_child`].
    pub(super) fn install(
        &self,
        prepare: extern "C" fn(),
        parent: extern "C" fn(),
        child: extern "C" fn(),
    ) {
        if self.once.is_completed() {
            return;
        }
        self.once.call(|| {
            crate::recorder::install_fork_handlers();
            // SAFETY: the handlers are `extern "C"` functions that never
            // unwind; registering them has no other effect.
            unsafe {
                libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
            }
        });
    }

    /// For the set's `child` handler: it runs in a forked child only if the
    /// set was registered before the fork.
    pub(super) fn complete_in_child(&self) {
        self.once.complete_in_child();
    }
}
