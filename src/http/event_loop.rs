//! The built-in server's event loop: one thread, holding the reentrancy
//! guard, that owns the listener and every connection (over `mio`). It
//! accepts, reads each request head and body as its bytes arrive, hands the
//! request to the render pool (`pool.rs`), and writes the answer from the
//! pool's buffer (an export's bytes are shared by every client sent them,
//! never copied per connection), all without blocking on any client.
//!
//! So a client costs a socket and its own few bytes of request, whatever
//! it does: idle and trickling sockets, slow readers and floods hold no
//! thread, and a well-behaved client's request is read the moment it
//! arrives. Bounds:
//! - at most [`MAX_CONNECTIONS`] open; past it (or when the process is out
//!   of descriptors) the oldest connection still sending its request is
//!   closed to make room (as servers under slowloris do), else the oldest
//!   one in its closing phase, else the longest-running send of an answer
//!   older than [`EVICT_WRITER_AFTER`]; only when none of those exist is a
//!   new client answered 503;
//! - a request has [`REQUEST_TIMEOUT`] to arrive whole (else 408); heads
//!   are at most 16 KiB, bodies 256 KiB, and the bodies being read at once
//!   at most [`BODY_BUDGET`] in all (else 503);
//! - an answer is dropped after [`WRITE_STALL`] without progress or
//!   [`WRITE_TOTAL`] in all, and the distinct answers being sent hold at
//!   most [`ANSWER_BUDGET`] (past it the oldest sends are cut);
//! - on stop, the answers being rendered are answered 503 at once and the
//!   ones being sent get [`STOP_GRACE`] to finish.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::conn::{self, Head, MAX_HEAD};
use super::limits::MAX_DELTAS;
use super::pool::{ConnId, Job, Lane, Pool, lane_of};
use super::response::Response;
use super::shared::Shared;

/// Connections open at once (see the module's docs for what happens past
/// it). Each costs a descriptor and, while it sends its request, at most a
/// 16 KiB head.
pub(super) const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send its whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Request bodies being read at once, in bytes (a body is at most 256 KiB;
/// only the symbol route takes one).
const BODY_BUDGET: usize = 4 << 20;
/// Distinct answers held by the connections sending them, in bytes (an
/// answer shared by many readers counts once): past it, the oldest send of
/// an answer no one else is sent is cut, then the oldest send at all (never
/// the newest: one answer larger than this is still sent).
const ANSWER_BUDGET: usize = 256 << 20;
/// Time a client may take no byte of the answer before it is dropped.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// Time a client has to take the whole answer: a client reading a byte a
/// second must not hold a connection (and a reference to the answer) for
/// days. Ample for the largest export over a slow link.
const WRITE_TOTAL: Duration = Duration::from_secs(60);
/// A send running this long may be cut to make room for a new client.
const EVICT_WRITER_AFTER: Duration = Duration::from_secs(1);
/// After an answer, how long what the client still sends is read (and
/// dropped) before closing: closing with unread data makes the kernel reset
/// the connection, and the client could lose the answer.
const DRAIN: Duration = Duration::from_millis(100);
/// How much of it is read.
const DRAIN_BYTES: usize = 64 * 1024;
/// How often deadlines are checked (and the longest the loop sleeps).
const TICK: Duration = Duration::from_millis(50);
/// After a stop, how long answers being sent get to finish.
const STOP_GRACE: Duration = Duration::from_millis(300);
/// After running out of descriptors with nothing to evict, when to try
/// accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub(super) const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
/// Connection `i` is registered as `Token(FIRST + i)`.
const FIRST: usize = 2;

/// One connection.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    serial: u64,
    /// When the current state began (eviction picks the oldest).
    since: Instant,
    state: State,
}

enum State {
    /// Sending its request: the bytes so far, the head once parsed, and
    /// the bytes of [`BODY_BUDGET`] reserved for its body.
    Reading {
        buf: Vec<u8>,
        head: Option<(Head, usize)>,
        deadline: Instant,
    },
    /// Its answer is being rendered.
    Rendering {
        cancel: Arc<AtomicBool>,
        head_only: bool,
    },
    /// Its answer is being sent: `head`, then `body` (shared), from `pos`.
    Writing {
        head: Vec<u8>,
        body: Option<Arc<Vec<u8>>>,
        pos: usize,
        stall: Instant,
        total: Instant,
    },
    /// Answered; reading what the client still sends until it closes.
    Draining { deadline: Instant, read: usize },
}

/// What happened to a connection after handling its event.
enum Next {
    Keep,
    Close,
}

pub(super) struct EventLoop {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    open: usize,
    serial: u64,
    /// Bytes of [`BODY_BUDGET`] reserved by connections reading a body.
    body_bytes: usize,
    /// The answers being sent, by address: their length and how many
    /// connections send them.
    held: HashMap<usize, (usize, usize)>,
    /// Their lengths summed, at most `answer_budget` (see [`ANSWER_BUDGET`]).
    held_bytes: usize,
    answer_budget: usize,
    accept_retry: Option<Instant>,
    pool: Arc<Pool>,
    shared: Arc<Shared>,
    /// One read buffer for every connection: a read takes only what a
    /// connection still needs, then it is copied to that connection's own.
    scratch: Box<[u8]>,
}

impl EventLoop {
    /// A loop over `listener` (registered here), whose wake-ups come from
    /// `poll`'s [`WAKER`].
    pub(super) fn new(
        poll: Poll,
        mut listener: TcpListener,
        pool: Arc<Pool>,
        shared: Arc<Shared>,
    ) -> io::Result<EventLoop> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(EventLoop {
            poll,
            listener: Some(listener),
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            serial: 0,
            body_bytes: 0,
            held: HashMap::new(),
            held_bytes: 0,
            answer_budget: ANSWER_BUDGET,
            accept_retry: None,
            pool,
            shared,
            scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
        })
    }

    /// Runs until the server stops, then finishes as the module's docs say.
    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + TICK;
        while !self.shared.stopping() {
            if let Err(e) = self.poll.poll(&mut events, Some(TICK)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("leakscope: the HTTP server's poll failed: {e}");
                    std::thread::sleep(TICK);
                }
                continue;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept_all(),
                    Token(t) => self.on_event(t - FIRST),
                }
            }
            self.deliver();
            let now = Instant::now();
            if self.accept_retry.is_some_and(|at| now >= at) {
                self.accept_retry = None;
                self.accept_all();
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + TICK;
            }
        }
        self.finish(&mut events);
    }

    /// The stop: no more connections; requests still arriving are closed,
    /// answers being rendered are a 503, answers being sent get
    /// [`STOP_GRACE`].
    fn finish(&mut self, events: &mut Events) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        let end = Instant::now() + STOP_GRACE;
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            let rendering = match &c.state {
                State::Rendering { cancel, head_only } => {
                    cancel.store(true, Ordering::Relaxed);
                    Some(*head_only)
                }
                State::Writing { .. } => continue,
                State::Reading { .. } | State::Draining { .. } => None,
            };
            let next = match rendering {
                Some(head_only) => {
                    let r = Response::go_error(503, "server is shutting down");
                    self.answer(i, &r, head_only)
                }
                None => Next::Close,
            };
            if let Next::Close = next {
                self.close(i);
            }
        }
        loop {
            let writing = self
                .conns
                .iter()
                .flatten()
                .any(|c| matches!(c.state, State::Writing { .. }));
            let now = Instant::now();
            if !writing || now >= end {
                break;
            }
            let _ = self.poll.poll(events, Some(TICK.min(end - now)));
            let ready: Vec<usize> = events
                .iter()
                .filter_map(|ev| ev.token().0.checked_sub(FIRST))
                .collect();
            for i in ready {
                if self.conns.get(i).is_some_and(|c| {
                    c.as_ref()
                        .is_some_and(|c| matches!(c.state, State::Writing { .. }))
                }) {
                    self.on_event(i);
                }
            }
        }
        // Dropping the loop closes every socket left.
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.open >= MAX_CONNECTIONS && !self.make_room() {
                        busy(stream);
                        continue;
                    }
                    self.add(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of descriptors (EMFILE, ENFILE) or memory: make
                // room and try again, or wait a little (the listener's
                // readiness does not fire again for clients already
                // waiting, hence the timer).
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        || e.kind() == io::ErrorKind::OutOfMemory =>
                {
                    if !self.make_room() {
                        self.accept_retry = Some(Instant::now() + ACCEPT_BACKOFF);
                        return;
                    }
                }
                // A client that left before being accepted, and the like.
                Err(_) => {}
            }
        }
    }

    fn add(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(FIRST + i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.free.push(i);
            return;
        }
        let _ = stream.set_nodelay(true);
        let now = Instant::now();
        self.serial += 1;
        self.conns[i] = Some(Conn {
            stream,
            peer,
            serial: self.serial,
            since: now,
            state: State::Reading {
                buf: Vec::new(),
                head: None,
                deadline: now + REQUEST_TIMEOUT,
            },
        });
        self.open += 1;
        // Its request may be there already (edge-triggered: read now).
        self.on_event(i);
    }

    /// Closes one connection to make room for a new one, as the module's
    /// docs say; `false` if none may be closed.
    fn make_room(&mut self) -> bool {
        let now = Instant::now();
        let mut best: Option<(u8, Instant, usize)> = None;
        for (i, c) in self.conns.iter().enumerate() {
            let Some(c) = c else { continue };
            let rank = match c.state {
                State::Reading { .. } => 0,
                State::Draining { .. } => 1,
                State::Writing { .. } if now.duration_since(c.since) >= EVICT_WRITER_AFTER => 2,
                _ => continue,
            };
            if best.is_none_or(|(r, at, _)| (rank, c.since) < (r, at)) {
                best = Some((rank, c.since, i));
            }
        }
        match best {
            Some((_, _, i)) => {
                self.close(i);
                true
            }
            None => false,
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            self.release(&c.state);
            if let State::Rendering { cancel, .. } = &c.state {
                cancel.store(true, Ordering::Relaxed);
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.free.push(i);
            self.open -= 1;
        }
    }

    /// Gives back what `state` reserved of [`BODY_BUDGET`],
    /// and of the answers held.
    fn release(&mut self, state: &State) {
        match state {
            State::Reading {
                head: Some((_, reserved)),
                ..
            } => self.body_bytes -= reserved,
            State::Writing {
                body: Some(body), ..
            } => {
                let key = Arc::as_ptr(body) as usize;
                if let Some((len, n)) = self.held.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        self.held_bytes -= *len;
                        self.held.remove(&key);
                    }
                }
            }
            _ => {}
        }
    }

    /// Counts `body` as held by one more connection, then cuts sends as
    /// [`ANSWER_BUDGET`] says, never connection `keep`'s.
    fn hold(&mut self, body: &Arc<Vec<u8>>, keep: usize) {
        // The key stays valid while counted: the connections counted hold
        // the `Arc`, so its address is not reused.
        let (len, n) = self
            .held
            .entry(Arc::as_ptr(body) as usize)
            .or_insert((body.len(), 0));
        if *n == 0 {
            self.held_bytes += *len;
        }
        *n += 1;
        while self.held_bytes > self.answer_budget {
            let mut oldest: Option<(bool, Instant, usize)> = None;
            for (j, c) in self.conns.iter().enumerate() {
                let Some(Conn {
                    since,
                    state: State::Writing { body: Some(b), .. },
                    ..
                }) = c
                else {
                    continue;
                };
                if j == keep {
                    continue;
                }
                let shared = self
                    .held
                    .get(&(Arc::as_ptr(b) as usize))
                    .is_some_and(|&(_, n)| n > 1);
                if oldest.is_none_or(|o| (shared, *since) < (o.0, o.1)) {
                    oldest = Some((shared, *since, j));
                }
            }
            match oldest {
                Some((_, _, j)) => self.close(j),
                None => break,
            }
        }
    }

    fn set_state(&mut self, i: usize, state: State) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        let old = std::mem::replace(&mut c.state, state);
        c.since = Instant::now();
        self.release(&old);
    }

    /// Handles readiness (or the chance of it) on connection `i`.
    fn on_event(&mut self, i: usize) {
        let Some(c) = self.conns.get(i).and_then(Option::as_ref) else {
            return;
        };
        let next = match c.state {
            State::Reading { .. } => self.read_request(i),
            State::Rendering { .. } => self.watch(i),
            State::Writing { .. } => self.write(i),
            State::Draining { .. } => self.drain(i),
        };
        if let Next::Close = next {
            self.close(i);
        }
    }

    /// Reads what connection `i` has sent of its request and, once it is
    /// whole, hands it to the pool (or answers a bad one).
    fn read_request(&mut self, i: usize) -> Next {
        loop {
            let Some(c) = self.conns[i].as_mut() else {
                return Next::Keep;
            };
            let State::Reading { buf, head, .. } = &mut c.state else {
                return Next::Keep;
            };
            let want = match head {
                None => MAX_HEAD - buf.len(),
                Some((h, body)) => (h.len + *body).saturating_sub(buf.len()),
            };
            if want == 0 {
                break;
            }
            let n = want.min(self.scratch.len());
            match c.stream.read(&mut self.scratch[..n]) {
                Ok(0) => return Next::Close,
                Ok(n) => buf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Next::Close,
            }
            if head.is_none() {
                match conn::parse_head(buf) {
                    Ok(None) if buf.len() < MAX_HEAD => {}
                    Ok(None) => {
                        let r = Response::go_error(
                            431,
                            "request line and headers too large (at most 16 KiB)",
                        );
                        return self.answer(i, &r, false);
                    }
                    Err(bad) => return self.answer(i, &bad, false),
                    Ok(Some(h)) => {
                        if let Some(next) = self.check_head(i, h) {
                            return next;
                        }
                    }
                }
            }
        }
        self.dispatch(i)
    }

    /// A parsed head: the token, the body's length and the budget for it.
    /// `Some` when the request was answered already.
    fn check_head(&mut self, i: usize, h: Head) -> Option<Next> {
        let head_only = h.method == "HEAD";
        if let Some(token) = self.shared.options.token_value() {
            if !h.authorized(token) {
                let r = Response::go_error(401, "missing or wrong bearer token")
                    .with_header("WWW-Authenticate", "Bearer");
                return Some(self.answer(i, &r, head_only));
            }
        }
        let want = match h.body_len() {
            Ok(n) => n,
            Err(bad) => return Some(self.answer(i, &bad, head_only)),
        };
        if self.body_bytes + want > BODY_BUDGET {
            let r = Response::go_error(
                503,
                "too many request bodies being received; try again later",
            );
            return Some(self.answer(i, &r, head_only));
        }
        self.body_bytes += want;
        let c = self.conns[i].as_mut()?;
        if let State::Reading { head, buf, .. } = &mut c.state {
            // As Go's server: a client waiting to be told to send its body
            // is told at once (one small write; if the socket will not take
            // it, the client sends after its own timeout anyway).
            if want > 0 && h.expect_continue && buf.len() < h.len + want {
                let _ = c.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            *head = Some((h, want));
        }
        None
    }

    /// A whole request: to the pool.
    fn dispatch(&mut self, i: usize) -> Next {
        let Some(c) = self.conns[i].as_mut() else {
            return Next::Keep;
        };
        let State::Reading {
            buf,
            head: Some((h, want)),
            ..
        } = &mut c.state
        else {
            return Next::Keep;
        };
        // Bytes past the body (a pipelined request) are not read.
        let body = buf[h.len..(h.len + *want).min(buf.len())].to_vec();
        let method = std::mem::take(&mut h.method);
        let target = std::mem::take(&mut h.target);
        let head_only = method == "HEAD";
        let conn: ConnId = (i, c.serial);
        let client = Some(c.peer.ip());
        let lane = lane_of(&method, &target, self.shared.options.max_seconds_value());
        if lane == Lane::Delta && self.pool.in_flight(Lane::Delta) >= MAX_DELTAS {
            let r = Response::go_error(
                503,
                &format!(
                    "too many profiles with seconds= in progress (at most {}); try again later",
                    MAX_DELTAS
                ),
            );
            return self.answer(i, &r, head_only);
        }
        let cancel = Arc::new(AtomicBool::new(false));
        self.set_state(
            i,
            State::Rendering {
                cancel: cancel.clone(),
                head_only,
            },
        );
        self.pool.submit(
            lane,
            Job {
                conn,
                method,
                target,
                body,
                client,
                cancel,
            },
        );
        // The poll is edge-triggered and the request was read only up to
        // its end: a hang-up that came with it (or before this read) will
        // not be signalled again, so look for it now, or an abandoned
        // symbol lookup or delta would run its whole course.
        self.watch(i)
    }

    /// A connection waiting for its answer: if the client closes (or sends
    /// more than it should), it is gone and its work is cancelled.
    fn watch(&mut self, i: usize) -> Next {
        let Some(c) = self.conns[i].as_mut() else {
            return Next::Keep;
        };
        let mut read = 0;
        loop {
            match c.stream.read(&mut self.scratch) {
                // Go cancels a request's context on this too.
                Ok(0) => return Next::Close,
                Ok(n) => {
                    read += n;
                    // Pipelined or junk bytes, which are not read: leave
                    // the rest in the socket.
                    if read >= DRAIN_BYTES {
                        return Next::Keep;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// Starts sending `r` on connection `i`.
    fn answer(&mut self, i: usize, r: &Response, head_only: bool) -> Next {
        let now = Instant::now();
        let body = (!head_only && !r.body().is_empty()).then(|| r.shared_body().clone());
        self.set_state(
            i,
            State::Writing {
                head: conn::response_head(r),
                body: body.clone(),
                pos: 0,
                stall: now + WRITE_STALL,
                total: now + WRITE_TOTAL,
            },
        );
        if let Some(body) = &body {
            self.hold(body, i);
        }
        self.write(i)
    }

    /// Writes what the socket takes of connection `i`'s answer.
    fn write(&mut self, i: usize) -> Next {
        let Some(c) = self.conns[i].as_mut() else {
            return Next::Keep;
        };
        let State::Writing {
            head,
            body,
            pos,
            stall,
            ..
        } = &mut c.state
        else {
            return Next::Keep;
        };
        loop {
            let body_bytes: &[u8] = body.as_deref().map_or(&[], |b| b.as_slice());
            let bytes = if *pos < head.len() {
                &head[*pos..]
            } else if *pos - head.len() < body_bytes.len() {
                &body_bytes[*pos - head.len()..]
            } else {
                break;
            };
            match c.stream.write(bytes) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    *pos += n;
                    *stall = Instant::now() + WRITE_STALL;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        // All sent: no more to write; read what the client still sends.
        let _ = c.stream.shutdown(Shutdown::Write);
        self.set_state(
            i,
            State::Draining {
                deadline: Instant::now() + DRAIN,
                read: 0,
            },
        );
        self.drain(i)
    }

    /// Reads and drops what connection `i` still sends, until it closes.
    fn drain(&mut self, i: usize) -> Next {
        let Some(c) = self.conns[i].as_mut() else {
            return Next::Keep;
        };
        let State::Draining { read, .. } = &mut c.state else {
            return Next::Keep;
        };
        loop {
            match c.stream.read(&mut self.scratch) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    *read += n;
                    if *read >= DRAIN_BYTES {
                        return Next::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// Sends the pool's answers to the connections still waiting for them.
    fn deliver(&mut self) {
        for done in self.pool.take_done() {
            let (i, serial) = done.conn;
            let Some(c) = self.conns.get(i).and_then(Option::as_ref) else {
                continue;
            };
            if c.serial != serial {
                continue;
            }
            let State::Rendering { head_only, .. } = c.state else {
                continue;
            };
            let next = match done.response {
                Some(r) => self.answer(i, &r, head_only),
                None => Next::Close,
            };
            if let Next::Close = next {
                self.close(i);
            }
        }
    }

    /// Deadlines: a request not in after [`REQUEST_TIMEOUT`] is a 408; an
    /// answer not taken is dropped; a drain ends.
    fn sweep(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_ref() else {
                continue;
            };
            let timed_out = match &c.state {
                State::Reading { deadline, head, .. } if now >= *deadline => {
                    let what = if head.is_some() {
                        "timed out reading the request body"
                    } else {
                        "timed out reading the request"
                    };
                    let head_only = head.as_ref().is_some_and(|(h, _)| h.method == "HEAD");
                    Some((what, head_only))
                }
                State::Writing { stall, total, .. } if now >= (*stall).min(*total) => None,
                State::Draining { deadline, .. } if now >= *deadline => None,
                _ => continue,
            };
            let next = match timed_out {
                Some((what, head_only)) => {
                    self.answer(i, &Response::go_error(408, what), head_only)
                }
                None => Next::Close,
            };
            if let Next::Close = next {
                self.close(i);
            }
        }
    }
}

/// No room: a 503 in one write that does not wait (it fits the socket's
/// buffer), then closed.
fn busy(mut stream: TcpStream) {
    let r = Response::go_error(
        503,
        &format!("too many connections (at most {MAX_CONNECTIONS}); try again later"),
    );
    let mut bytes = conn::response_head(&r);
    bytes.extend_from_slice(r.body());
    let _ = stream.write(&bytes);
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::super::options::Options;
    use super::*;

    #[test]
    fn answers_being_sent_are_bounded_in_bytes_and_shared_ones_count_once() {
        let poll = Poll::new().unwrap();
        let waker = mio::Waker::new(poll.registry(), WAKER).unwrap();
        let shared = Arc::new(Shared::new(Options::default(), 4));
        let pool = Arc::new(Pool::new(shared.clone(), waker));
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut el = EventLoop::new(poll, listener, pool, shared).unwrap();
        const MIB: usize = 1 << 20;
        el.answer_budget = 40 * MIB;
        // Six clients that read nothing: 16 MiB answers stay being sent.
        let _clients: Vec<std::net::TcpStream> = (0..6)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while el.open < 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            el.accept_all();
        }
        let ids: Vec<usize> = (0..el.conns.len())
            .filter(|&i| el.conns[i].is_some())
            .collect();
        assert_eq!(ids.len(), 6);
        let alive = |el: &EventLoop| -> Vec<usize> {
            ids.iter()
                .map(|&i| usize::from(el.conns[i].is_some()))
                .collect()
        };
        // Four distinct answers: past 40 MiB the oldest sends are cut.
        for (k, &i) in ids[..4].iter().enumerate() {
            let r = Response::ok("application/octet-stream", vec![k as u8; 16 * MIB]);
            assert!(matches!(el.answer(i, &r, false), Next::Keep));
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(alive(&el), [0, 0, 1, 1, 1, 1]);
        assert_eq!(el.held_bytes, 32 * MIB);
        // One answer sent to two clients counts once: the first of them
        // makes room (the oldest unshared send goes), the second costs
        // nothing.
        let shared_answer = Response::ok("application/octet-stream", vec![9u8; 16 * MIB]);
        assert!(matches!(
            el.answer(ids[4], &shared_answer, false),
            Next::Keep
        ));
        assert_eq!(alive(&el), [0, 0, 0, 1, 1, 1]);
        assert_eq!(el.held_bytes, 32 * MIB);
        assert!(matches!(
            el.answer(ids[5], &shared_answer, false),
            Next::Keep
        ));
        assert_eq!(alive(&el), [0, 0, 0, 1, 1, 1]);
        assert_eq!(el.held_bytes, 32 * MIB);
        // Closing gives it all back.
        for &i in &ids[3..] {
            el.close(i);
        }
        assert_eq!((el.held_bytes, el.held.len(), el.open), (0, 0, 0));
    }
}
