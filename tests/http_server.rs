//! The built-in server's hardening, over plain TCP: Go's error responses,
//! loopback-only by default, the bearer token, bounded heads, stalled
//! clients, the delta limits, and a clean stop.

#![cfg(feature = "http")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::http::{exchange, get, get_with};
use leakscope::http::{Options, serve, serve_with};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

fn assert_go_error(r: &common::http::Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; charset=utf-8"),
        "{what}"
    );
    assert_eq!(r.header("X-Go-Pprof"), Some("1"), "{what}");
    let text = r.text();
    assert!(
        text.ends_with('\n') && text.trim_end().lines().count() == 1 && text.len() > 3,
        "{what}: not a one-line reason: {text:?}"
    );
}

#[test]
fn bad_requests_get_gos_errors() {
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    for (path, status) in [
        ("/debug/pprof/heap?seconds=0", 400),
        ("/debug/pprof/heap?seconds=-3", 400),
        ("/debug/pprof/heap?seconds=abc", 400),
        ("/debug/pprof/allocs?seconds=301", 400),
        ("/debug/pprof/heap?seconds=1&debug=1", 400),
        ("/debug/pprof/nonesuch", 404),
        ("/nonesuch", 404),
    ] {
        assert_go_error(&get(addr, path), status, path);
    }
    let r = exchange(
        addr,
        b"DELETE /debug/pprof/heap HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_go_error(&r, 405, "DELETE");
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    let r = exchange(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_go_error(&r, 405, "POST /metrics");
    // Not HTTP at all.
    assert_go_error(
        &exchange(addr, b"\x16\x03\x01\x02\x00\r\n\r\n"),
        400,
        "garbage",
    );
    // A head over the bound.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_go_error(&exchange(addr, huge.as_bytes()), 431, "huge head");
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = exchange(
        addr,
        format!("GET /metrics HTTP/1.1\r\n{many}\r\n").as_bytes(),
    );
    assert_go_error(&r, 431, "too many headers");
    // A body over the bound, and one that is not there.
    let r = exchange(
        addr,
        b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
    );
    assert_go_error(&r, 413, "huge body");
    // Two Content-Length headers that disagree (as Go: a 400).
    let r = exchange(
        addr,
        b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n0x10",
    );
    assert_go_error(&r, 400, "conflicting Content-Length");
    // The server still answers after all that.
    assert_eq!(get(addr, "/debug/pprof/").status, 200);
    server.stop();
}

#[test]
fn routes_answer_with_the_right_types() {
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    for (path, ty) in [
        ("/debug/pprof/", "text/html; charset=utf-8"),
        ("/debug/pprof/heap?debug=1", "text/plain; charset=utf-8"),
        ("/debug/pprof/symbol", "text/plain; charset=utf-8"),
        ("/debug/leakscope", "text/html; charset=utf-8"),
        ("/debug/leakscope/flamegraph.svg", "image/svg+xml"),
        ("/debug/leakscope/snapshot.json", "application/json"),
        ("/debug/leakscope/dhat.json", "application/json"),
        ("/metrics", "text/plain; version=0.0.4; charset=utf-8"),
    ] {
        let r = get(addr, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some(ty), "{path}");
        assert!(!r.body.is_empty(), "{path}");
    }
    assert_eq!(get(addr, "/debug/pprof/symbol").text(), "num_symbols: 1\n");
    let pc = routes_answer_with_the_right_types as fn() as usize;
    let body = format!("{pc:#x}+0x1");
    let r = exchange(
        addr,
        format!(
            "POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    let text = r.text();
    assert!(text.starts_with("num_symbols: 1\n"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with(&format!("{pc:#x} "))
            && l.contains("routes_answer_with_the_right_types")),
        "{text}"
    );
    // HEAD: the headers and the length, no body.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"HEAD /debug/pprof/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let r = common::http::parse_with(&out, false);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let full = get(addr, "/debug/pprof/");
    assert_eq!(
        r.header("Content-Length"),
        Some(full.body.len().to_string().as_str())
    );
    server.stop();
}

#[test]
fn non_loopback_bind_needs_opt_in() {
    for addr in ["0.0.0.0:0", "[::]:0"] {
        match serve(addr) {
            Err(leakscope::Error::InvalidConfig(msg)) => {
                assert!(msg.contains("allow_remote(true)"), "{msg}")
            }
            Err(e) => panic!("{addr}: wrong error {e}"),
            Ok(s) => panic!("{addr}: bound {}", s.local_addr()),
        }
    }
    assert!(serve("localhost:0").is_ok());
    let s = serve_with("0.0.0.0:0", Options::default().allow_remote(true)).unwrap();
    assert!(s.local_addr().ip().is_unspecified());
    s.stop();
    assert!(matches!(
        serve_with("127.0.0.1:0", Options::default().token("")),
        Err(leakscope::Error::InvalidConfig(_))
    ));
    assert!(matches!(
        serve_with("127.0.0.1:0", Options::default().max_seconds(0)),
        Err(leakscope::Error::InvalidConfig(_))
    ));
}

#[test]
fn token_is_required_when_set() {
    let server = serve_with("127.0.0.1:0", Options::default().token("s3cret-token")).unwrap();
    let addr = server.local_addr();
    for extra in [
        "",
        "Authorization: Bearer wrong\r\n",
        "Authorization: Bearer s3cret-toke\r\n",
        "Authorization: Bearer s3cret-token2\r\n",
        "Authorization: Basic s3cret-token\r\n",
    ] {
        let r = get_with(addr, "/metrics", extra);
        assert_go_error(&r, 401, extra);
        assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    }
    let r = get_with(addr, "/metrics", "Authorization: Bearer s3cret-token\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    server.stop();
}

#[test]
fn stalled_clients_do_not_block_the_others() {
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let start = Instant::now();
    // Five clients send half a request line and then nothing.
    let stalled: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /debug/pp").unwrap();
            s
        })
        .collect();
    let answers: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..45)
            .map(|i| {
                scope.spawn(move || {
                    let path = if i % 3 == 0 {
                        "/metrics"
                    } else {
                        "/debug/pprof/"
                    };
                    let r = get(addr, path);
                    (r.status, start.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, at) in &answers {
        assert_eq!(*status, 200);
        assert!(*at < Duration::from_secs(5), "answered after {at:?}");
    }
    // The stalled ones are answered too, with a timeout, within seconds.
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let r = common::http::parse(&out);
        assert_go_error(&r, 408, "stalled client");
    }
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    server.stop();
}

/// Stops `server`, which must take less than `limit`.
fn stop_within(server: leakscope::http::Server, limit: Duration) {
    let t = Instant::now();
    server.stop();
    assert!(t.elapsed() < limit, "stop took {:?}", t.elapsed());
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

#[test]
fn one_delta_per_client_and_prompt_stop() {
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    // A long delta in progress, and a stalled client.
    let long = std::thread::spawn(move || get(addr, "/debug/pprof/heap?seconds=30"));
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled.write_all(b"GET /met").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = get(addr, "/debug/pprof/allocs?seconds=2");
    assert_go_error(&r, 429, "second delta from one client");

    stop_within(server, Duration::from_secs(3));
    assert!(refused(addr), "still accepting after stop");
    // The delta in progress was ended with a reason, not left hanging.
    let r = long.join().unwrap();
    assert_go_error(&r, 503, "delta at stop");

    // Dropping stops too.
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/debug/pprof/").status, 200);
    drop(server);
    assert!(refused(addr), "still accepting after drop");
}

/// Sends `request` and the end of the stream in one segment, then closes:
/// the server reads the whole request and the end together, and gets no
/// later readiness event for the end (its poll is edge-triggered).
#[cfg(target_os = "linux")]
fn send_and_hang_up(addr: SocketAddr, request: &[u8]) {
    use std::os::fd::AsRawFd;
    let mut s = TcpStream::connect(addr).unwrap();
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a valid `int` option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "TCP_CORK: {}", std::io::Error::last_os_error());
    // Accepted and waiting for a request by then: the request and its end
    // arrive as one readiness event.
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(request).unwrap();
    // Flushes the corked request with the FIN.
    s.shutdown(std::net::Shutdown::Write).unwrap();
}

/// A client that hangs up while its delta runs frees its place at once, even
/// when the hang-up arrived with the request itself: a `curl` interrupted
/// and run again is answered, not told that a delta is in progress for
/// the rest of the first one's `seconds`.
#[cfg(target_os = "linux")]
#[test]
fn a_client_that_hangs_up_frees_its_delta() {
    let server = serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    send_and_hang_up(
        addr,
        b"GET /debug/pprof/heap?seconds=60 HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let r = get(addr, "/debug/pprof/heap?seconds=1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    stop_within(server, Duration::from_secs(3));
}

/// The server's threads are named, so `top -H` and `/proc/<pid>/task` tell
/// them apart from the service's own.
#[cfg(target_os = "linux")]
#[test]
fn server_threads_are_named() {
    let server = serve("127.0.0.1:0").unwrap();
    let names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    for want in ["leakscope-http", "leakscope-rendr", "leakscope-hist"] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    server.stop();
}
