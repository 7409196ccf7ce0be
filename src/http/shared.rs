//! What the built-in server's threads share: its options, limits and
//! history, and the stop flag. Apart from `server.rs` (which starts the
//! threads), `event_loop.rs` and `pool.rs`, which all use it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::history::History;
use super::limits::Deltas;
use super::options::Options;

/// How often a sleeping delta looks whether its client went away.
const ABANDON_CHECK: Duration = Duration::from_millis(100);

/// What the server's threads share.
pub(super) struct Shared {
    pub(super) options: Options,
    pub(super) deltas: Deltas,
    pub(super) history: History,
    /// Set once, by `stop`; read without the lock by every thread's checks.
    stopping: AtomicBool,
    /// The same flag under a lock, for the sleepers' condition variable.
    stop: Mutex<bool>,
    /// Signalled on stop: wakes sleeping deltas and the history thread.
    changed: Condvar,
}

impl Shared {
    pub(super) fn new(options: Options, max_deltas: usize) -> Shared {
        Shared {
            options,
            deltas: Deltas::new(max_deltas),
            history: History::new(),
            stopping: AtomicBool::new(false),
            stop: Mutex::new(false),
            changed: Condvar::new(),
        }
    }

    /// Tells every thread to stop (and wakes the sleeping ones).
    pub(super) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        *self.lock() = true;
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Sleeps `d`, or less if the server stops or `abandoned()` (the
    /// client went away); `false` if it ended early.
    ///
    /// The stop wakes the sleeper; a client's hang-up is a flag the event
    /// loop sets, looked at every [`ABANDON_CHECK`] (a wake-up per delta in
    /// progress, of which there are at most a handful).
    pub(super) fn sleep(&self, d: Duration, abandoned: &dyn Fn() -> bool) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.lock();
        loop {
            if *s || abandoned() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            s = self
                .changed
                .wait_timeout(s, (deadline - now).min(ABANDON_CHECK))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
