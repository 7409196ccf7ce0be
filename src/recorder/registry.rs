//! The registry of threads, so that an interval change can reach every
//! thread's sampler state (`sampling::set_sample_interval` zeroes each
//! registered countdown; the allocation fast path never looks at anything
//! global).
//!
//! **Invariant:** every address in the registry is the `ThreadState` of a
//! live thread of this process. A thread adds itself on its first slow path
//! and removes itself in a thread-local destructor, which runs before its
//! thread-locals are freed; both happen under the registry's lock, and so
//! does every use of the addresses. After a `fork`, the child's copy would
//! name the parent's other threads, which do not exist in the child (and
//! whose memory glibc hands to the child's new threads): the fork handlers
//! (`fork`) empty it in the child, with the lock held across the fork so the
//! list is never copied half-updated.
//!
//! Lock order: the registry lock is taken alone. It is a spin lock (the fork
//! handlers must take and release it outside a scope), held only for a push,
//! a removal, or a pass of plain stores; nothing under it allocates except the
//! push, which runs under the guard.

use super::guard::{Guard, Remote, STATE, ThreadState};
use super::sync::SpinLock;

/// The registered threads' [`Remote`] parts, as addresses (a `usize` is
/// `Send`; what they point to is `Sync` by construction: atomics only).
static REGISTRY: SpinLock<Vec<usize>> = SpinLock::new(Vec::new());

/// Runs `f` on the thread list with the lock held.
fn locked<R>(f: impl FnOnce(&mut Vec<usize>) -> R) -> R {
    f(&mut REGISTRY.lock())
}

/// The registered threads, seen while the registry lock is held.
pub(crate) struct Threads<'a>(&'a [usize]);

impl Threads<'_> {
    /// Every registered thread's shared part: atomics only, so another
    /// thread may use it (`Remote` is `Sync`; the rest of a `ThreadState`,
    /// `Cell`s, is not, and is never handed out).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Remote> + '_ {
        self.0.iter().map(|&a| {
            // SAFETY: a registered address is a live thread's `Remote`
            // (module invariant), kept registered by the lock held while
            // `self` exists.
            unsafe { &*(a as *const Remote) }
        })
    }
}

/// Runs `f` with the registry lock held (so every registered thread stays
/// registered, and alive, meanwhile). `f` must not allocate.
pub(crate) fn with_threads<R>(f: impl FnOnce(Threads<'_>) -> R) -> R {
    locked(|threads| f(Threads(threads)))
}

/// Removes the thread from the registry when it exits.
struct Registration;

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = STATE.try_with(|s| {
            let me = &s.remote as *const Remote as usize;
            locked(|threads| {
                if let Some(i) = threads.iter().position(|&a| a == me) {
                    threads.swap_remove(i);
                }
            });
            s.registered.set(2);
        });
    }
}

thread_local! {
    static REGISTRATION: Registration = const { Registration };
}

/// Adds this thread to the registry (`s.registered` becomes 1), or leaves
/// `s.registered` at 0 to be tried again on a later slow path (inside tracker
/// code, or out of memory), or sets it to 2 (the thread is exiting).
#[cold]
#[inline(never)]
pub(crate) fn register(s: &ThreadState) {
    // Registering the destructor and growing the list may allocate.
    // (The fork handlers are in place: `sampling::decide` installs them
    // before it calls this.)
    let Some(_guard) = Guard::enter() else {
        return;
    };
    if REGISTRATION.try_with(|_| ()).is_err() {
        // The thread is exiting: its destructor cannot be registered.
        s.registered.set(2);
        return;
    }
    let added = locked(|threads| {
        // `try_reserve`: an allocation failure must not abort from inside
        // the allocator.
        let ok = threads.try_reserve(1).is_ok();
        if ok {
            threads.push(&s.remote as *const Remote as usize);
        }
        ok
    });
    if added {
        s.registered.set(1);
    }
}

/// Takes the registry lock for a fork (`fork::prepare`).
pub(crate) fn lock() {
    REGISTRY.acquire_for_fork();
}

/// Releases the lock taken by [`lock`].
pub(crate) fn unlock() {
    REGISTRY.release_after_fork();
}

/// In a forked child, with the lock held by `fork::prepare`: forget every
/// entry (the other threads do not exist here) and let the forking thread
/// register again on its next slow path.
pub(crate) fn forget_other_threads() {
    // SAFETY: the caller holds the lock (taken in `prepare`, copied held
    // into the child) and the child has no other thread. `clear` frees
    // nothing.
    unsafe { REGISTRY.data_for_fork().clear() };
    let _ = STATE.try_with(|s| {
        if s.registered.get() == 1 {
            s.registered.set(0);
            s.remote
                .countdown
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

/// Bytes held by the registry's list.
pub(crate) fn overhead_bytes() -> u64 {
    locked(|threads| (threads.capacity() * std::mem::size_of::<usize>()) as u64)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn registered(s: &ThreadState) -> bool {
        let me = &s.remote as *const Remote as usize;
        locked(|threads| threads.contains(&me))
    }

    #[test]
    fn threads_leave_the_registry_when_they_exit() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            STATE.with(|s| {
                register(s);
                tx.send((&s.remote as *const Remote as usize, registered(s)))
                    .unwrap();
            });
        })
        .join()
        .unwrap();
        let (addr, was_registered) = rx.recv().unwrap();
        assert!(was_registered);
        assert!(!locked(|threads| threads.contains(&addr)));
    }
}
