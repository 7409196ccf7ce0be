//! One connection of the built-in server: read one request (head bounded in
//! size, whole request bounded in time), check the token, answer, close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

use super::ctx::Ctx;
use super::response::{Response, reason_phrase};
use super::routes;
use super::shared::Shared;

/// Request line and headers together.
const MAX_HEAD: usize = 16 * 1024;
/// Headers per request.
const MAX_HEADERS: usize = 48;
/// A request body (only the symbol route reads one: a list of addresses).
const MAX_BODY: usize = 256 * 1024;
/// Time a client has to send its whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Each read waits at most this long, so a stalled read notices `stop`.
const READ_SLICE: Duration = Duration::from_millis(200);
/// Time a client may take no byte of the answer before it is dropped.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// Time a client has to take the whole answer: a client reading a byte a
/// second must not hold a connection (and its copy of the answer) for
/// days. Ample for the largest export over a slow link.
const WRITE_TOTAL: Duration = Duration::from_secs(60);

/// The parts of a request head that the server reads.
struct Head {
    method: String,
    target: String,
    authorization: Option<Vec<u8>>,
    content_length: Option<String>,
    chunked: bool,
    len: usize,
}

enum ReadError {
    Closed,
    TimedOut,
    Stopping,
}

pub(super) fn serve_connection(mut stream: TcpStream, peer: SocketAddr, id: u64, shared: &Shared) {
    // Accepted sockets do not inherit the listener's non-blocking mode on
    // Linux, but say so: every read below relies on the timeout.
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(READ_SLICE)).is_err()
        // Writes wake as often as reads do, so a slow reader notices `stop`.
        || stream.set_write_timeout(Some(READ_SLICE)).is_err()
    {
        return;
    }
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let head = loop {
        if len > 0 {
            match parse_head(&buf[..len]) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(bad) => return finish(&mut stream, &bad, false, shared),
            }
        }
        if len == MAX_HEAD {
            let r = Response::go_error(431, "request line and headers too large (at most 16 KiB)");
            return finish(&mut stream, &r, false, shared);
        }
        match read_some(&mut stream, &mut buf[len..], deadline, shared) {
            Ok(n) => len += n,
            Err(ReadError::TimedOut) => {
                let r = Response::go_error(408, "timed out reading the request");
                return finish(&mut stream, &r, false, shared);
            }
            Err(ReadError::Closed | ReadError::Stopping) => return,
        }
    };
    let head_only = head.method == "HEAD";

    if let Some(token) = shared.options.token_value() {
        if !authorized(head.authorization.as_deref(), token) {
            let r = Response::go_error(401, "missing or wrong bearer token")
                .with_header("WWW-Authenticate", "Bearer");
            return finish(&mut stream, &r, head_only, shared);
        }
    }

    let body = match read_body(&mut stream, &head, &buf[head.len..len], deadline, shared) {
        Ok(body) => body,
        Err(Some(bad)) => return finish(&mut stream, &bad, head_only, shared),
        Err(None) => return,
    };
    drop(buf);
    // Being answered now: not evicted to make room for others.
    shared.request_read(id);

    let sleep = |d: Duration| shared.sleep(d);
    let abandoned = || shared.stopping() || peer_gone(&stream);
    let ctx = Ctx {
        max_seconds: shared.options.max_seconds_value(),
        top_sites: shared.options.top_sites_value(),
        history: Some(&shared.history),
        deltas: &shared.deltas,
        client: Some(peer.ip()),
        sleep: &sleep,
        abandoned: &abandoned,
    };
    let r = routes::respond_with_body(&head.method, &head.target, &body, &ctx);
    finish(&mut stream, &r, head_only, shared);
}

/// Whether the client closed its side (or the connection broke) after its
/// request: a peek that does not wait. Data it may still send is left for
/// `finish` to read.
#[cfg(unix)]
fn peer_gone(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: `recv` writes at most 1 byte into `byte`, which lives across
    // the call; MSG_PEEK leaves the data queued and MSG_DONTWAIT keeps the
    // call from blocking; the descriptor is `stream`'s, open while borrowed.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => !matches!(
            io::Error::last_os_error().kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

/// No cheap way to ask elsewhere: the work's own bounds apply.
#[cfg(not(unix))]
fn peer_gone(_: &TcpStream) -> bool {
    false
}

/// `Ok(None)`: not complete yet.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => {
            let mut head = Head {
                method: req.method.unwrap_or("").to_string(),
                target: req.path.unwrap_or("").to_string(),
                authorization: None,
                content_length: None,
                chunked: false,
                len,
            };
            for h in req.headers.iter() {
                if h.name.eq_ignore_ascii_case("authorization") {
                    head.authorization = Some(h.value.to_vec());
                } else if h.name.eq_ignore_ascii_case("content-length") {
                    let value = String::from_utf8_lossy(h.value).trim().to_string();
                    // As Go: repeated Content-Length headers must agree,
                    // or which body is meant is unknown (request smuggling
                    // through a proxy that reads the other one).
                    if head.content_length.as_ref().is_some_and(|v| *v != value) {
                        return Err(Response::go_error(
                            400,
                            "conflicting Content-Length headers",
                        ));
                    }
                    head.content_length = Some(value);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    head.chunked = true;
                }
            }
            Ok(Some(head))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Response::go_error(
            431,
            &format!("too many request headers (at most {MAX_HEADERS})"),
        )),
        Err(e) => Err(Response::go_error(
            400,
            &format!("malformed HTTP request: {e}"),
        )),
    }
}

/// Whether `Authorization` is `Bearer <token>`. The token is compared in
/// constant time (`subtle`), so the time taken does not tell an attacker how
/// many leading bytes were right; only a length mismatch returns early.
fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = header else {
        return false;
    };
    let Some(scheme) = value.get(..7) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let sent = value[7..].trim_ascii();
    bool::from(sent.ct_eq(token.as_bytes()))
}

/// The body, from what followed the head in the buffer and the socket.
/// `Err(None)`: the client went away.
fn read_body(
    stream: &mut TcpStream,
    head: &Head,
    already: &[u8],
    deadline: Instant,
    shared: &Shared,
) -> Result<Vec<u8>, Option<Response>> {
    if head.chunked {
        return Err(Some(Response::go_error(
            411,
            "chunked request bodies are not supported: send Content-Length",
        )));
    }
    let want = match head.content_length.as_deref().map(str::trim) {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Err(Some(Response::go_error(400, "invalid Content-Length"))),
        },
    };
    if want > MAX_BODY {
        return Err(Some(Response::go_error(
            413,
            &format!("request body too large (at most {} KiB)", MAX_BODY / 1024),
        )));
    }
    let mut body = vec![0u8; want];
    let have = already.len().min(want);
    body[..have].copy_from_slice(&already[..have]);
    let mut got = have;
    while got < want {
        match read_some(stream, &mut body[got..], deadline, shared) {
            Ok(n) => got += n,
            Err(ReadError::TimedOut) => {
                return Err(Some(Response::go_error(
                    408,
                    "timed out reading the request body",
                )));
            }
            Err(_) => return Err(None),
        }
    }
    Ok(body)
}

/// One read of at least a byte, retried across read slices until
/// `deadline`; gives up when the server stops.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    shared: &Shared,
) -> Result<usize, ReadError> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if shared.stopping() {
                    return Err(ReadError::Stopping);
                }
                if Instant::now() >= deadline {
                    return Err(ReadError::TimedOut);
                }
            }
            Err(_) => return Err(ReadError::Closed),
        }
    }
}

/// Writes `r` (`head_only`: without its body, for `HEAD`) and closes.
fn finish(stream: &mut TcpStream, r: &Response, head_only: bool, shared: &Shared) {
    let stop = || shared.stopping();
    if write_response(stream, r, head_only, &stop).is_err() {
        return;
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    // Read what the client may still be sending (briefly, boundedly):
    // closing with unread data makes the kernel reset the connection, and
    // the client could lose the answer.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 && !shared.stopping() => continue,
            _ => break,
        }
    }
}

/// HTTP/1.1, one request per connection (`Connection: close`). The stream's
/// write timeout must be short (a slice): each timed-out write checks
/// `stop` and the deadlines ([`WRITE_STALL`] without progress,
/// [`WRITE_TOTAL`] in all), so a slow reader never holds the thread longer,
/// and not past a stop by more than a slice.
pub(super) fn write_response(
    stream: &mut TcpStream,
    r: &Response,
    head_only: bool,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status(), reason_phrase(r.status()));
    for (name, value) in r.headers() {
        // Our own headers never hold line breaks; refuse any that would.
        if name.contains(['\r', '\n']) || value.contains(['\r', '\n']) {
            continue;
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        r.body().len()
    ));
    let total = Instant::now() + WRITE_TOTAL;
    write_bounded(stream, head.as_bytes(), total, stop)?;
    if !head_only {
        write_bounded(stream, r.body(), total, stop)?;
    }
    Ok(())
}

/// `write_all`, giving up at `stop`, after [`WRITE_STALL`] without progress
/// or at `total`.
fn write_bounded(
    stream: &mut TcpStream,
    mut bytes: &[u8],
    total: Instant,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    let mut stall = Instant::now() + WRITE_STALL;
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                stall = Instant::now() + WRITE_STALL;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
        if bytes.is_empty() {
            break;
        }
        let now = Instant::now();
        if stop() || now >= stall.min(total) {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_client_that_went_away_is_noticed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(!peer_gone(&server), "connected, nothing sent");
        client.write_all(b"more").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!peer_gone(&server), "connected, data pending");
        drop(client);
        std::thread::sleep(Duration::from_millis(50));
        let mut sink = [0u8; 16];
        let _ = (&server).read(&mut sink); // the pending bytes
        assert!(peer_gone(&server), "closed");
    }

    #[test]
    fn bearer_tokens() {
        assert!(authorized(Some(b"Bearer s3cret"), "s3cret"));
        assert!(authorized(Some(b"bearer s3cret "), "s3cret"));
        assert!(!authorized(Some(b"Bearer s3cres"), "s3cret"));
        assert!(!authorized(Some(b"Bearer s3cret2"), "s3cret"));
        assert!(!authorized(Some(b"Basic s3cret"), "s3cret"));
        assert!(!authorized(Some(b"Bear"), "s3cret"));
        assert!(!authorized(None, "s3cret"));
    }

    #[test]
    fn heads_parse_or_fail_with_a_reason() {
        let h = parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .unwrap()
            .unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str()), ("GET", "/metrics"));
        assert_eq!(h.content_length.as_deref(), Some("3"));
        assert!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHo")
                .unwrap()
                .is_none()
        );
        // Two Content-Length headers: the same value is one, two values a 400.
        let same =
            b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 3\r\ncontent-length:  3\r\n\r\n";
        assert_eq!(
            parse_head(same).unwrap().unwrap().content_length.as_deref(),
            Some("3")
        );
        let two =
            b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\n";
        let r = parse_head(two).err().expect("a 400");
        assert_eq!(r.status(), 400);
        assert!(
            String::from_utf8_lossy(r.body()).contains("Content-Length"),
            "{:?}",
            String::from_utf8_lossy(r.body())
        );
        assert_eq!(
            parse_head(b"\x01\x02 nonsense\r\n\r\n")
                .err()
                .unwrap()
                .status(),
            400
        );
    }
}
