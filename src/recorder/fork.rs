//! `fork` handlers: no tracker lock is ever copied held into a child.
//!
//! A forked child has one thread, the one that called `fork`. A lock that
//! another parent thread held at that moment would stay held in the child
//! forever, and the child would hang on its first recorded event, free or
//! snapshot that needs it. So `prepare` takes every tracker lock, in the lock
//! order of ARCHITECTURE.md (the book pool, the site table, the registry,
//! then each book's live lists), which also means no structure is copied
//! half-updated; `parent` releases them; `child` releases them too, and
//! forgets the parent's other threads (their registry entries and their
//! books, which the child's own threads may then reuse).
//!
//! None of these locks is taken while another one is held (see the lock
//! order), so `prepare` cannot deadlock with a thread that holds one: that
//! thread finishes its short critical section and lets go.
//!
//! While the forking thread holds everything, it runs under the reentrancy
//! guard (its allocations go to the inner allocator unrecorded, touching no
//! tracker lock), and a lock it needs anyway (a recorded free from another
//! library's `prepare` handler) is entered without waiting (`sync`: the
//! holder's identity lives with the locks, so they need nothing from here).
//!
//! Handlers are registered once per process, before any tracker lock can be
//! taken: by the recorded paths (`record`) before their first lock, by
//! `sampling` before a thread registers, and by the query-side entry points
//! (`recorder/mod.rs`). A free of a recorded block comes after a recorded
//! allocation, so after the handlers.

use std::sync::atomic::{AtomicUsize, Ordering::*};

use super::guard::STATE;
use super::sync;

/// Registers the fork handlers, once per process.
#[cfg(unix)]
#[inline(always)]
pub(crate) fn install() {
    if !ONCE.is_completed() {
        install_once();
    }
}

/// Not a `std::sync::Once`: a forked child must never wait on a
/// registration a parent thread had started at the fork (see
/// `sync::ForkOnce`; `child` below tells it when the handlers came along).
#[cfg(unix)]
static ONCE: sync::ForkOnce = sync::ForkOnce::new();

#[cfg(unix)]
#[cold]
#[inline(never)]
fn install_once() {
    ONCE.call(|| {
        // SAFETY: the handlers are `extern "C"` functions that never unwind;
        // registering them has no other effect. (glibc may allocate here:
        // the callers hold the guard.)
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
        }
    });
}

/// No `fork` on this platform.
#[cfg(not(unix))]
pub(crate) fn install() {}

/// Whether the guard was already held when `prepare` ran (restored after).
static WAS_BUSY: AtomicUsize = AtomicUsize::new(0);

#[cfg(unix)]
extern "C" fn prepare() {
    // The epoch's `OnceCell` is the recorder's only lazy initialiser: make
    // sure no parent thread is inside it at the fork.
    super::clock::init();
    let busy = STATE.try_with(|s| s.busy.replace(true)).unwrap_or(true);
    WAS_BUSY.store(busy as usize, Relaxed);
    // No parent thread inside the dynamic loader's lock at the fork (the
    // child's symbolizer takes it): before any lock, as a thread in there
    // holds none of ours.
    super::stack::fork_prepare();
    // The lock order (ARCHITECTURE.md). No lock is held while another is
    // taken, so any order would do; this one keeps it written down once.
    super::book::lock_pool();
    super::sites::lock();
    super::registry::lock();
    super::book::lock_lists();
    sync::hold_for_fork();
}

#[cfg(unix)]
extern "C" fn parent() {
    super::stack::fork_parent();
    sync::forget_holder();
    super::book::unlock_lists();
    super::registry::unlock();
    super::sites::unlock();
    super::book::unlock_pool();
    restore_guard();
}

/// In the child, which has only the forking thread: forget the parent's
/// other threads, then let every lock go.
#[cfg(unix)]
extern "C" fn child() {
    // This handler runs, so the child has the handlers (registered before
    // the fork), whatever state of the registration it copied.
    ONCE.complete_in_child();
    sync::forget_holder();
    super::registry::forget_other_threads();
    super::book::forget_other_threads();
    super::book::unlock_lists();
    super::registry::unlock();
    super::sites::unlock();
    super::book::unlock_pool();
    // The loader's own lock may have been copied held: no more
    // `dl_iterate_phdr` from the stack capture. (In the child only: the
    // parent's loader lock is whatever its other threads make of it.)
    super::stack::forked();
    restore_guard();
}

fn restore_guard() {
    let busy = WAS_BUSY.load(Relaxed) != 0;
    let _ = STATE.try_with(|s| s.busy.set(busy));
}

#[cfg(all(test, unix))]
mod tests {
    use super::super::{guard::STATE, registry};
    use super::install;

    /// The stack capture's "forked" mark is the child's alone: set in the
    /// parent, every later new return address there would take the slow
    /// unwinder (it was, once, in the parent handler).
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn only_the_child_is_marked_forked_for_the_stack_capture() {
        use super::super::stack::is_forked;
        install();
        assert!(!is_forked());
        // SAFETY: the child only reads an atomic and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: leaves at once, running nothing of the parent's.
            unsafe { libc::_exit(if is_forked() { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: our own child, reaped once.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(reaped, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child was not marked forked ({status})"
        );
        assert!(!is_forked(), "the parent was marked forked");
    }

    #[test]
    fn a_forked_child_forgets_the_parents_threads() {
        // Another thread, registered and alive across the fork.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            STATE.with(registry::register);
            ready_tx.send(()).unwrap();
            done_rx.recv().unwrap();
        });
        ready_rx.recv().unwrap();
        // As `sampling::decide` does before a thread registers.
        install();
        STATE.with(registry::register);
        assert!(registry::with_threads(|t| t.iter().count()) >= 2);
        // SAFETY: the child only reads the registry and its own thread state
        // (no allocation, no lock another thread could hold) and leaves with
        // `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let empty = registry::with_threads(|t| t.iter().count()) == 0;
            let again = STATE.with(|s| s.registered.get() == 0);
            // SAFETY: ends the child without running the parent's handlers.
            unsafe { libc::_exit(if empty && again { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        done_tx.send(()).unwrap();
        other.join().unwrap();
        assert_eq!(waited, pid);
        assert!(libc::WIFEXITED(status), "child died: status {status}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "child saw the parent's threads"
        );
        // The parent keeps its own registrations.
        assert!(
            STATE
                .with(|s| registry::with_threads(|t| t.iter().any(|r| std::ptr::eq(r, &s.remote))))
        );
    }
}
