//! The built-in server: [`serve`], [`serve_with`], [`Server`].
//!
//! Threads, all holding the reentrancy guard for their whole life (nothing
//! the server does is recorded):
//! - one accept thread, polling a non-blocking listener so that `stop` needs
//!   no wake-up connection;
//! - one thread per connection (at most [`MAX_CONNECTIONS`] at once; when
//!   they are all taken, the oldest one still sending its request is shut
//!   down to make room, and only if all are being answered is a new one
//!   answered 503 at once), which reads one bounded request with
//!   timeouts, answers it and closes: a stalled client holds only its own
//!   thread, never the others' requests;
//! - one history thread, which takes a summary every `history_interval` for
//!   the dashboard's chart.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn;
use super::options::Options;
use super::response::Response;
use super::shared::{MAX_CONNECTIONS, Shared};
use crate::Error;
use crate::recorder::Guard;

/// `seconds=` deltas in progress at once (and one per client address).
const MAX_DELTAS: usize = 4;
/// How long the accept thread sleeps when no connection is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// How long `stop` waits for connection threads to finish (each notices the
/// stop within a read or write slice, 200 ms; this is a backstop).
const STOP_GRACE: Duration = Duration::from_secs(5);

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
    threads: Vec<JoinHandle<()>>,
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
        let listener = TcpListener::bind(&addrs[..])?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(options, MAX_DELTAS));
        let mut server = Server {
            local_addr,
            shared: shared.clone(),
            threads: Vec::new(),
        };
        // On an error below, dropping `server` stops what already started.
        let s = shared.clone();
        server.threads.push(
            std::thread::Builder::new()
                .name("leakscope-http".to_string())
                .spawn(move || accept_loop(&listener, &s))?,
        );
        let s = shared;
        server.threads.push(
            std::thread::Builder::new()
                .name("leakscope-history".to_string())
                .spawn(move || history_loop(&s))?,
        );
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

    /// Stops the server: no new connections; deltas in progress end with a
    /// 503; waits for the threads to finish (at most the connection
    /// timeouts, normally a few milliseconds).
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
            for t in self.threads.drain(..) {
                if t.join().is_err() {
                    log::error!("leakscope: an HTTP server thread panicked");
                }
            }
            let left = self
                .shared
                .wait_for_connections(Instant::now() + STOP_GRACE);
            if left > 0 {
                log::warn!("leakscope: {left} HTTP connections still open at stop");
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

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    // Held for the thread's whole life: nothing the server does is recorded.
    let _guard = Guard::enter();
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let Some(id) = shared.try_add_connection(&stream) else {
                    busy(stream);
                    continue;
                };
                let s = shared.clone();
                // Unnamed: std copies a thread's name on the new thread
                // before the closure runs (for its stack-overflow message),
                // where the guard is not yet held, so a name would be
                // recorded once per connection.
                let spawned = std::thread::Builder::new().spawn(move || {
                    let _guard = Guard::enter();
                    // Last resort: the code does not panic on bad input,
                    // but a panic must not leak the connection count.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        conn::serve_connection(stream, peer, id, &s)
                    }));
                    s.connection_done(id);
                });
                if spawned.is_err() {
                    // The closure (and the stream) was dropped: closed.
                    shared.connection_done(id);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
            }
            // Out of file descriptors and the like: wait, then try again.
            Err(_) => std::thread::sleep(ACCEPT_POLL * 10),
        }
    }
}

/// Too many connections: a 503 from the accept thread, which must not wait
/// on this client (a short write timeout; the answer fits a socket buffer).
fn busy(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let r = Response::go_error(
        503,
        &format!("too many connections (at most {MAX_CONNECTIONS}); try again later"),
    );
    let end = Instant::now() + Duration::from_millis(100);
    let _ = conn::write_response(&mut stream, &r, false, &|| Instant::now() >= end);
    let _ = stream.flush();
}

fn history_loop(shared: &Shared) {
    let _guard = Guard::enter();
    let interval = shared.options.history_interval_value();
    loop {
        shared.history.record();
        if !shared.sleep(interval) {
            return;
        }
    }
}
