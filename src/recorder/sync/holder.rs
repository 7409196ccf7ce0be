//! Which thread holds every tracker lock for a `fork` (between the fork
//! handlers' `prepare` and `parent`/`child`), so that a lock that thread
//! needs meanwhile is entered without waiting for itself (see `spin`).
//!
//! A thread's identity is the address of a `const` thread-local of its own
//! (no destructor, so it exists at any moment of the thread's life).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The identity of the thread that holds every tracker lock, or 0.
static HOLDER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static ME: u8 = const { 0 };
}

/// This thread's identity (0 if its thread-locals are gone).
fn me() -> usize {
    ME.try_with(|m| m as *const u8 as usize).unwrap_or(0)
}

/// Whether this thread holds every tracker lock for a fork.
#[inline]
pub(crate) fn holds_all() -> bool {
    let holder = HOLDER.load(Relaxed);
    holder != 0 && holder == me()
}

/// Marks this thread as the holder of every tracker lock (`fork::prepare`,
/// once it has taken them all).
pub(crate) fn hold_for_fork() {
    HOLDER.store(me(), Relaxed);
}

/// Clears the mark (`fork::parent` and `fork::child`, before releasing).
pub(crate) fn forget_holder() {
    HOLDER.store(0, Relaxed);
}
