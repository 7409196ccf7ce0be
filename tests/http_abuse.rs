//! The built-in server under connection abuse on loopback: a well-behaved
//! client asking `/metrics` every 200 ms must be answered (200 within 1 s)
//! for at least 95% of its requests while
//! - 200 slowloris connections trickle a request head a byte at a time and
//!   reconnect when dropped, and
//! - 500 idle sockets are held open (reconnected when dropped),
//!
//! far more than the server's 64 connections.

#![cfg(all(feature = "http", unix))]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// `GET path`, or `None` if it is not answered within `limit` (connect,
/// send and read all bounded: a starved client fails, never hangs).
fn get_within(addr: SocketAddr, path: &str, limit: Duration) -> Option<u16> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    if start.elapsed() >= limit {
        return None;
    }
    Some(common::http::parse(&out).status)
}

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

/// How long each attack runs while the good client asks.
const ATTACK: Duration = Duration::from_secs(6);

/// Keeps `n` abusive connections open until `done`: each sends `trickle`
/// (a byte of a request head, every ~second) or nothing, and is reopened
/// when the server drops it.
fn abuse(addr: SocketAddr, n: usize, trickle: bool, done: &AtomicBool) {
    let open = || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
        s.set_nodelay(true).ok()?;
        Some(s)
    };
    let mut socks: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
    let head = b"GET /debug/pprof/heap HTTP/1.1\r\nHost: x\r\nX-a: b\r\n";
    let mut sent = vec![0usize; n];
    while !done.load(Relaxed) {
        for (i, s) in socks.iter_mut().enumerate() {
            let alive = match s {
                Some(sock) if trickle => {
                    let b = head[sent[i] % head.len()];
                    sent[i] += 1;
                    sock.write_all(&[b]).is_ok()
                }
                Some(sock) => {
                    sock.peer_addr().is_ok() && sock.take_error().ok().flatten().is_none()
                }
                None => false,
            };
            if !alive {
                *s = open();
                sent[i] = 0;
            }
            if done.load(Relaxed) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(if trickle { 1000 } else { 100 }));
    }
}

/// The good client's share of `/metrics` answered 200 within 1 s while the
/// attack runs.
fn good_client_under(addr: SocketAddr, n: usize, trickle: bool) -> (usize, usize) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| abuse(addr, n, trickle, &done));
        // Let the attack fill the server first.
        std::thread::sleep(Duration::from_millis(1500));
        let start = Instant::now();
        let (mut ok, mut asked) = (0, 0);
        while start.elapsed() < ATTACK {
            let t = Instant::now();
            asked += 1;
            if get_within(addr, "/metrics", Duration::from_secs(1)) == Some(200) {
                ok += 1;
            }
            std::thread::sleep(Duration::from_millis(200).saturating_sub(t.elapsed()));
        }
        done.store(true, Relaxed);
        (ok, asked)
    })
}

/// Both ends of 700 sockets live in this process (and the server keeps a
/// handle on each connection still reading): raise the soft descriptor
/// limit (often 1024) towards the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid `rlimit` for both calls to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max.min(8192).max(lim.rlim_cur);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn a_good_client_is_answered_through_slowloris_and_idle_sockets() {
    raise_fd_limit();
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    for (what, n, trickle) in [("slowloris", 200, true), ("idle sockets", 500, false)] {
        let (ok, asked) = good_client_under(addr, n, trickle);
        eprintln!("{what} x{n}: {ok}/{asked} answered within 1 s");
        assert!(asked >= 10, "{what}: only {asked} requests");
        assert!(
            ok * 100 >= asked * 95,
            "{what} x{n}: {ok}/{asked} answered within 1 s"
        );
    }
    let t = Instant::now();
    server.stop();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        t.elapsed()
    );
}
