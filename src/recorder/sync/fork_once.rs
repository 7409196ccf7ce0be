//! [`ForkOnce`]: a set of `pthread_atfork` handlers registered once per
//! process, in a way that cannot hang a forked child.
//!
//! A `std::sync::Once` is not enough: glibc's `pthread_atfork` waits while
//! another thread is inside `fork`, so a parent thread that was registering
//! (inside `call_once`) when another thread forked is copied into the child
//! as a `Once` that stays "running" for ever, with no thread left to finish
//! it, and the child's first recorded event or query would wait on it for
//! ever. So the state names the thread that is registering (its process and
//! thread ids), and a caller waits only while that thread is alive in its
//! own process; a registration a parent process's thread had started is
//! taken over.
//!
//! Whether the handlers were registered before the fork, the child learns
//! from the handlers themselves: glibc registers a set atomically with
//! respect to `fork` (both hold its `atfork` lock), and a set's `child`
//! handler runs in the child exactly when the set was registered before the
//! fork. That handler calls [`ForkOnce::complete_in_child`]; a child that
//! finds the state still naming a thread of its parent did not inherit the
//! handlers, and registers them itself.

use std::sync::atomic::{AtomicU64, Ordering::*};

/// No registration started.
const NEW: u64 = 0;
/// The handlers are registered in this process.
const DONE: u64 = u64::MAX;

/// Handlers registered at most once per process (see the module docs).
#[derive(Debug)]
pub(crate) struct ForkOnce {
    /// `NEW`, `DONE`, or the registering thread: `pid << 32 | tid` (the
    /// thread id is 0 where there is none to ask about).
    state: AtomicU64,
}

impl ForkOnce {
    pub(crate) const fn new() -> ForkOnce {
        ForkOnce {
            state: AtomicU64::new(NEW),
        }
    }

    /// Whether the handlers are registered in this process (one load).
    #[inline(always)]
    pub(crate) fn is_completed(&self) -> bool {
        self.state.load(Acquire) == DONE
    }

    /// Runs `register` (which registers the handlers) once per process.
    /// Never waits for a thread that is not alive in this process. Must not
    /// be called again from inside `register`.
    #[cold]
    #[inline(never)]
    pub(crate) fn call(&self, register: impl FnOnce()) {
        let me = current();
        let mut register = Some(register);
        loop {
            let seen = self.state.load(Acquire);
            if seen == DONE {
                return;
            }
            if seen != NEW && alive_elsewhere_in_this_process(seen, me) {
                // Another thread of this process is registering (a
                // `pthread_atfork` call): a short wait. Yielding is a system
                // call, no allocation (we may be inside the allocator).
                std::thread::yield_now();
                continue;
            }
            // Nobody started, or the starter was a thread of a parent
            // process (copied in mid-registration by a fork, so this process
            // has none of these handlers).
            if self
                .state
                .compare_exchange(seen, me, AcqRel, Acquire)
                .is_ok()
            {
                if let Some(register) = register.take() {
                    register();
                }
                self.state.store(DONE, Release);
                return;
            }
        }
    }

    /// Called by the set's `child` fork handler: it runs in a forked child
    /// only if the handlers were registered before the fork, so the child
    /// has them (whatever the state it copied says).
    pub(crate) fn complete_in_child(&self) {
        self.state.store(DONE, Release);
    }
}

/// This thread, as the state names it.
fn current() -> u64 {
    (u64::from(std::process::id()) << 32) | u64::from(tid())
}

/// Whether the thread `state` names is alive in this process and is not the
/// caller (a thread never waits for itself).
fn alive_elsewhere_in_this_process(state: u64, me: u64) -> bool {
    let (pid, tid) = ((state >> 32) as u32, state as u32);
    if pid != (me >> 32) as u32 {
        // A parent process's thread: it does not exist here.
        return false;
    }
    if state == me {
        return false;
    }
    thread_alive(pid, tid)
}

#[cfg(target_os = "linux")]
fn tid() -> u32 {
    // SAFETY: `gettid` has no preconditions and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Whether thread `tid` belongs to process `pid` (a process whose pid was
/// reused does not have the dead registrant's thread).
#[cfg(target_os = "linux")]
fn thread_alive(pid: u32, tid: u32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that `tid` is a thread
    // of `pid`.
    unsafe { libc::tgkill(pid as libc::pid_t, tid as libc::pid_t, 0) == 0 }
}

/// No thread id to ask about on this platform: the process id decides.
#[cfg(not(target_os = "linux"))]
fn tid() -> u32 {
    0
}

#[cfg(not(target_os = "linux"))]
fn thread_alive(_pid: u32, _tid: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::{DONE, ForkOnce, current};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    #[test]
    fn registers_once() {
        static ONCE: ForkOnce = ForkOnce::new();
        static N: AtomicUsize = AtomicUsize::new(0);
        for _ in 0..3 {
            ONCE.call(|| {
                N.fetch_add(1, Relaxed);
            });
        }
        assert_eq!(N.load(Relaxed), 1);
        assert!(ONCE.is_completed());
    }

    #[test]
    fn registers_once_across_threads() {
        static ONCE: ForkOnce = ForkOnce::new();
        static N: AtomicUsize = AtomicUsize::new(0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    ONCE.call(|| {
                        N.fetch_add(1, Relaxed);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    });
                    // Nobody returns before the registration is done.
                    assert!(ONCE.is_completed());
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(N.load(Relaxed), 1);
    }

    #[test]
    fn a_registration_a_parent_process_started_is_taken_over() {
        // As a forked child sees it: started by a thread of another process
        // (pid + 1 is never this process), never completed.
        static ONCE: ForkOnce = ForkOnce::new();
        static N: AtomicUsize = AtomicUsize::new(0);
        ONCE.state.store(current() + (1 << 32), Relaxed);
        ONCE.call(|| {
            N.fetch_add(1, Relaxed);
        });
        ONCE.call(|| {
            N.fetch_add(1, Relaxed);
        });
        assert_eq!(N.load(Relaxed), 1, "registered directly, once");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_registrant_that_is_not_a_thread_of_this_process_is_not_waited_for() {
        // This process's id with a thread id that is no thread of it (as
        // after a pid reuse): taken over, not waited on.
        static ONCE: ForkOnce = ForkOnce::new();
        static N: AtomicUsize = AtomicUsize::new(0);
        let pid = u64::from(std::process::id());
        // A thread that existed and is gone.
        let gone = std::thread::spawn(super::tid).join().unwrap();
        ONCE.state.store(pid << 32 | u64::from(gone), Relaxed);
        ONCE.call(|| {
            N.fetch_add(1, Relaxed);
        });
        assert_eq!(N.load(Relaxed), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_child_forked_mid_registration_registers_instead_of_waiting() {
        // A real fork while another thread is inside the registration (a
        // `std::sync::Once` here: the child waits for ever).
        static ONCE: ForkOnce = ForkOnce::new();
        static N: AtomicUsize = AtomicUsize::new(0);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let registrant = std::thread::spawn(move || {
            ONCE.call(|| {
                started_tx.send(()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(300));
                N.fetch_add(1, Relaxed);
            });
        });
        started_rx.recv().unwrap();
        // SAFETY: the child only calls `ForkOnce::call` (atomics, `getpid`,
        // `gettid`, no allocation, no lock) and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            ONCE.call(|| {
                N.fetch_add(1, Relaxed);
            });
            let ok = N.load(Relaxed) == 1 && ONCE.is_completed();
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let start = std::time::Instant::now();
        let mut status = 0;
        let waited = loop {
            // SAFETY: polls the child just forked.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break true;
            }
            if start.elapsed() > std::time::Duration::from_secs(5) {
                // SAFETY: kills and reaps our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        registrant.join().unwrap();
        assert!(waited, "the child waited on its parent's registration");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child did not register: status {status:#x}"
        );
        // The parent's own registration finished, once.
        assert_eq!(N.load(Relaxed), 1);
        assert!(ONCE.is_completed());
    }

    #[test]
    fn a_child_handler_completes_it() {
        static ONCE: ForkOnce = ForkOnce::new();
        ONCE.state.store(current() + (1 << 32), Relaxed);
        ONCE.complete_in_child();
        assert_eq!(ONCE.state.load(Relaxed), DONE);
        ONCE.call(|| panic!("registered twice"));
    }
}
