//! The built-in server: [`serve`], [`serve_with`], [`Server`].
//!
//! A fixed set of threads, whatever clients do, all holding the reentrancy
//! guard for their whole life, from their first instruction (`thread.rs`;
//! nothing the server does is recorded):
//! - one event-loop thread (`event_loop.rs`) owning the listener and every
//!   connection: it reads requests and writes answers without ever waiting
//!   on a client;
//! - the render pool (`pool.rs`): [`LANE_THREADS`] threads that build the
//!   answers, in lanes by cost so that cheap answers never queue behind
//!   expensive ones;
//! - one history thread, which takes a summary every `history_interval` for
//!   the dashboard's chart.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Poll, Waker};

use super::event_loop::{EventLoop, WAKER};
use super::limits::MAX_DELTAS;
use super::options::Options;
use super::pool::Pool;
use super::shared::Shared;
use super::thread::{self, Thread};
use crate::Error;
use crate::recorder::Guard;

/// The render pool's threads per lane: light, heavy, symbol, delta.
const LANE_THREADS: [usize; 4] = [2, 2, 1, MAX_DELTAS];
/// How long `stop` waits for render threads still busy (a snapshot being
/// rendered) before leaving them to end on their own: their answers are no
/// longer wanted, and `stop` returns within a second.
const STOP_RENDERS: Duration = Duration::from_millis(400);

/// A running built-in server: see [`serve`]. Stopping ([`stop`](Server::stop)
/// or dropping) ends and joins its threads.
///
/// # Examples
///
/// ```no_run
/// let server = leakscope::http::serve("127.0.0.1:6060")?;
/// println!("profiles at http://{}/debug/pprof/", server.local_addr());
/// // ... the service runs ...
/// server.stop();
/// # Ok::<(), leakscope::Error>(())
/// ```
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    pool: Option<Arc<Pool>>,
    /// The event loop and the history thread.
    threads: Vec<Thread>,
    workers: Vec<Thread>,
}

/// Serves `/debug/pprof/*`, the dashboard and `/metrics` (see
/// [`respond`](super::respond) for the routes) on `addr`, from background
/// threads, with the default [`Options`]: loopback only, no token.
///
/// Port 0 picks a free port; [`Server::local_addr`] says which.
///
/// # Errors
///
/// [`Error::InvalidConfig`] if `addr` is not a loopback address (see
/// [`Options::allow_remote`]); [`Error::Io`] if it cannot be resolved or
/// bound, or a thread cannot be spawned.
///
/// # Examples
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();
///
/// fn main() -> Result<(), leakscope::Error> {
///     let _server = leakscope::http::serve("127.0.0.1:6060")?;
///     // go tool pprof -top http://127.0.0.1:6060/debug/pprof/heap
///     // the dashboard: http://127.0.0.1:6060/debug/leakscope
///     loop {
///         std::thread::park(); // ... the service's own work ...
///     }
/// }
/// ```
pub fn serve(addr: impl ToSocketAddrs) -> Result<Server, Error> {
    serve_with(addr, Options::default())
}

/// [`serve`] with [`Options`]: remote addresses, a bearer token, the longest
/// `seconds=`, the number of top sites.
///
/// # Errors
///
/// As [`serve`], and [`Error::InvalidConfig`] for invalid options (a zero
/// `max_seconds` or `history_interval`, an empty token).
///
/// # Examples
///
/// ```no_run
/// use leakscope::http::{Options, serve_with};
///
/// let token = std::env::var("PPROF_TOKEN").expect("set PPROF_TOKEN");
/// let server = serve_with("0.0.0.0:6060", Options::default().allow_remote(true).token(token))?;
/// # drop(server);
/// # Ok::<(), leakscope::Error>(())
/// ```
pub fn serve_with(addr: impl ToSocketAddrs, options: Options) -> Result<Server, Error> {
    // Under the guard: the listener, the threads and their state are the
    // tracker's, not the program's.
    Guard::run(|| {
        options.validate()?;
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let Some(first) = addrs.first() else {
            return Err(Error::InvalidConfig(
                "the address resolved to nothing to bind".to_string(),
            ));
        };
        if !options.allow_remote_value() {
            if let Some(remote) = addrs.iter().find(|a| !a.ip().to_canonical().is_loopback()) {
                return Err(Error::InvalidConfig(format!(
                    "refusing to serve heap profiles on {remote}, which is not a loopback \
                     address: pass Options::default().allow_remote(true) to serve_with to \
                     opt in (and set a token)"
                )));
            }
        }
        let _ = first;
        let listener = bind(&addrs)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options, MAX_DELTAS));
        let mut server = Server {
            local_addr,
            shared: shared.clone(),
            pool: None,
            threads: Vec::new(),
            workers: Vec::new(),
        };
        // On an error below, dropping `server` stops what already started.
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let pool = Arc::new(Pool::new(shared.clone(), waker));
        server.pool = Some(pool.clone());
        server.workers = pool.spawn(LANE_THREADS)?;
        let event_loop = EventLoop::new(poll, listener, pool, shared.clone())?;
        server
            .threads
            .push(thread::spawn(c"leakscope-http", move || event_loop.run())?);
        let s = shared;
        server
            .threads
            .push(thread::spawn(c"leakscope-hist", move || history_loop(&s))?);
        Ok(server)
    })
}

impl Server {
    /// The address the server listens on (with the port picked for port 0).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = leakscope::http::serve("127.0.0.1:0")?;
    /// let url = format!("http://{}/debug/leakscope", server.local_addr());
    /// # let _ = url;
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server: no new connections; answers being rendered (and
    /// deltas in progress) end with a 503, answers being sent get a few
    /// hundred milliseconds to finish; returns within a second.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = leakscope::http::serve("127.0.0.1:0")?;
    /// server.stop(); // the port is free again
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        Guard::run(|| {
            self.shared.stop();
            if let Some(pool) = &self.pool {
                pool.stop();
            }
            // The event loop ends within a tick and its grace for sends.
            for t in self.threads.drain(..) {
                t.join();
            }
            let deadline = Instant::now() + STOP_RENDERS;
            while self.workers.iter().any(|w| !w.is_finished()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut busy = 0;
            for w in self.workers.drain(..) {
                if w.is_finished() {
                    w.join();
                } else {
                    // Left to end on its own after its render.
                    busy += 1;
                }
            }
            if busy > 0 {
                log::debug!("leakscope: {busy} HTTP render threads still busy at stop");
            }
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("options", &self.shared.options)
            .finish()
    }
}

/// The listen backlog asked for: as Go, the most the kernel allows (it
/// caps the request at `net.core.somaxconn`, 4096 by default).
const BACKLOG: i32 = 4096;

/// The first of `addrs` that binds, as `TcpListener::bind` tries them,
/// with a listen backlog of [`BACKLOG`] (std's is 128, mio's 1024): a
/// burst of connections (hundreds of abusive ones reconnecting as they are
/// evicted) must not fill the queue, where the kernel drops a well-behaved
/// client's SYN and it retries only a second later.
fn bind(addrs: &[SocketAddr]) -> std::io::Result<mio::net::TcpListener> {
    let mut last = None;
    for a in addrs {
        match mio::net::TcpListener::bind(*a) {
            Ok(l) => {
                #[cfg(unix)]
                {
                    use std::os::fd::AsRawFd;
                    // SAFETY: `listen` on the descriptor `l` owns, which is
                    // open and listening; calling it again only changes the
                    // backlog. Failure leaves mio's backlog: ignored.
                    let _ = unsafe { libc::listen(l.as_raw_fd(), BACKLOG) };
                }
                return Ok(l);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::InvalidInput.into()))
}

fn history_loop(shared: &Shared) {
    let interval = shared.options.history_interval_value();
    loop {
        shared.history.record();
        if !shared.sleep(interval, &|| false) {
            return;
        }
    }
}
