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
use std::sync::atomic::Ordering::Relaxed;

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
    register_guarded(s);
}

/// Registers the calling thread if it is not yet (0): the recorded path of
/// an exact tracker, which never takes the sampler's slow path, calls this
/// so that its threads are registered too (the retainer scan scans the
/// registered threads' stacks). One thread-local read once registered.
#[inline]
pub(crate) fn ensure_registered_guarded() {
    let _ = STATE.try_with(|s| {
        if s.registered.get() == 0 {
            register_guarded(s);
        }
    });
}

/// `register`'s body; the caller holds the guard.
#[cold]
#[inline(never)]
fn register_guarded(s: &ThreadState) {
    // The fork handlers are in place: every caller installs them first
    // (`sampling::decide`, `record::alloc`, `register_current_thread`).
    if REGISTRATION.try_with(|_| ()).is_err() {
        // The thread is exiting: its destructor cannot be registered.
        s.registered.set(2);
        return;
    }
    // Every registration (once per thread, and again in a forked child,
    // where the thread has a new id).
    note_identity(s);
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

/// Notes the calling thread's identity and stack bounds in its state, once,
/// before it is registered (so the registry lock is not held): what the
/// retainer scan needs to scan its stack and static TLS.
#[cold]
fn note_identity(s: &ThreadState) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: `gettid` has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let r = &s.remote;
        r.tid.store(tid, Relaxed);
        r.tp.store(thread_pointer(), Relaxed);
        let bounds = super::stack::current_thread_stack().unwrap_or((0, 0));
        r.stack_lo_reg.store(bounds.0, Relaxed);
        r.stack_hi_reg.store(bounds.1, Relaxed);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = s;
}

/// The thread pointer: the TCB address on x86-64 (static TLS lies just below
/// it), the DTV-pointer slot on aarch64 (static TLS lies just above it); 0
/// elsewhere.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn thread_pointer() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: on x86-64 Linux `fs:0` holds the TCB's own address (the
        // ABI's self pointer); reading it has no side effect.
        unsafe {
            std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
        };
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: usize;
        // SAFETY: reading `tpidr_el0` has no side effect.
        unsafe {
            std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags))
        };
        tp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    0
}

/// One registered thread, as the retainer scan needs it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ThreadInfo {
    /// Kernel thread id (the process id for the main thread).
    pub(crate) tid: u32,
    /// The thread's thread pointer (see `thread_pointer`), 0 if unknown.
    pub(crate) tp: usize,
    /// `[lo, hi)` of its stack from `pthread_getattr_np`; `(0, 0)` if unknown.
    pub(crate) stack: (usize, usize),
}

/// Every registered (so live) thread's identity and stack bounds. Must run
/// under the guard. The list is copied into space reserved before the lock
/// is taken (the lock's holder must not allocate), again if it grew.
pub(crate) fn threads() -> Vec<ThreadInfo> {
    let mut out = Vec::new();
    loop {
        let n = locked(|t| t.len());
        out.reserve(n + 8);
        let room = out.capacity();
        let done = with_threads(|t| {
            if t.0.len() > room {
                return false;
            }
            out.extend(t.iter().map(|s| ThreadInfo {
                tid: s.tid.load(Relaxed),
                tp: s.tp.load(Relaxed),
                stack: (s.stack_lo_reg.load(Relaxed), s.stack_hi_reg.load(Relaxed)),
            }));
            true
        });
        if done {
            return out;
        }
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
