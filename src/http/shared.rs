//! What the built-in server's threads share: its options, limits and
//! history, the stop flag, and the connection table (count, the evictable
//! connections still reading their request). Apart from `server.rs` (which
//! starts the threads) and `conn.rs` (one connection), which both use it.

use std::collections::VecDeque;
use std::net::{Shutdown, TcpStream};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::history::History;
use super::limits::Deltas;
use super::options::Options;

/// Connections served at once; past it, the oldest one still reading its
/// request is evicted, or a new one is answered 503 and closed.
pub(super) const MAX_CONNECTIONS: usize = 64;

/// What the server's threads share.
pub(super) struct Shared {
    pub(super) options: Options,
    pub(super) deltas: Deltas,
    pub(super) history: History,
    state: Mutex<State>,
    /// Signalled on stop (wakes sleeping deltas and the history thread) and
    /// when a connection ends (wakes `stop` waiting for them).
    changed: Condvar,
}

struct State {
    stop: bool,
    /// Connection threads running (evicted ones included, until they end).
    connections: usize,
    /// Next connection id.
    next: u64,
    /// Connections still reading their request, oldest first, with a handle
    /// to shut them down (see [`Shared::try_add_connection`]).
    reading: VecDeque<(u64, TcpStream)>,
    /// Connections shut down to make room, whose threads have not ended.
    evicted: Vec<u64>,
}

impl Shared {
    pub(super) fn new(options: Options, max_deltas: usize) -> Shared {
        Shared {
            options,
            deltas: Deltas::new(max_deltas),
            history: History::new(),
            state: Mutex::new(State {
                stop: false,
                connections: 0,
                next: 0,
                reading: VecDeque::new(),
                evicted: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }

    /// Tells every thread to stop (and wakes the sleeping ones).
    pub(super) fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    /// Waits until no connection thread runs, or `deadline`; the number
    /// still running.
    pub(super) fn wait_for_connections(&self, deadline: Instant) -> usize {
        let mut s = self.lock();
        while s.connections > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.connections
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn stopping(&self) -> bool {
        self.lock().stop
    }

    /// Sleeps `d`, or less if the server stops; `false` if it stopped.
    pub(super) fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.lock();
        loop {
            if s.stop {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Makes room for a new connection: its id, or `None` (answer 503).
    ///
    /// When all [`MAX_CONNECTIONS`] are taken, the oldest connection that is
    /// still sending its request is shut down to make room (as servers
    /// under slowloris do): idle and trickling sockets cannot keep a client
    /// that sends its request at once from being answered; a connection
    /// being answered is never evicted. Evicted threads end within a read
    /// slice, and at most `MAX_CONNECTIONS` more of them run meanwhile.
    pub(super) fn try_add_connection(&self, stream: &TcpStream) -> Option<u64> {
        let mut s = self.lock();
        if s.connections - s.evicted.len() >= MAX_CONNECTIONS {
            let (id, oldest) = s.reading.pop_front()?;
            let _ = oldest.shutdown(Shutdown::Both);
            s.evicted.push(id);
        }
        if s.connections >= 2 * MAX_CONNECTIONS {
            return None;
        }
        let handle = stream.try_clone().ok()?;
        let id = s.next;
        s.next += 1;
        s.connections += 1;
        s.reading.push_back((id, handle));
        Some(id)
    }

    /// Connection `id` has read its request: it is no longer evictable.
    pub(super) fn request_read(&self, id: u64) {
        let mut s = self.lock();
        s.reading.retain(|(i, _)| *i != id);
    }

    pub(super) fn connection_done(&self, id: u64) {
        let mut s = self.lock();
        s.reading.retain(|(i, _)| *i != id);
        s.evicted.retain(|i| *i != id);
        s.connections -= 1;
        drop(s);
        self.changed.notify_all();
    }
}
