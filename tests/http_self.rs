//! The server's own work shows in no site: in exact mode, fetch every
//! route, then diff. The client here allocates nothing between the two
//! snapshots (a preallocated buffer, requests from static bytes), so any
//! changed site would be the server's.

#![cfg(feature = "http")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

const ROUTES: &[&[u8]] = &[
    b"GET /debug/pprof/ HTTP/1.1\r\n\r\n",
    b"GET /debug/pprof/heap HTTP/1.1\r\n\r\n",
    b"GET /debug/pprof/allocs HTTP/1.1\r\n\r\n",
    b"GET /debug/pprof/heap?seconds=1 HTTP/1.1\r\n\r\n",
    b"GET /debug/pprof/heap?debug=1 HTTP/1.1\r\n\r\n",
    b"GET /debug/pprof/symbol HTTP/1.1\r\n\r\n",
    b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 9\r\n\r\n0x401000+",
    b"GET /debug/leakscope HTTP/1.1\r\n\r\n",
    b"GET /debug/leakscope/flamegraph.svg HTTP/1.1\r\n\r\n",
    b"GET /debug/leakscope/snapshot.json HTTP/1.1\r\n\r\n",
    b"GET /debug/leakscope/dhat.json HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\n\r\n",
    b"GET /nonesuch HTTP/1.1\r\n\r\n",
    b"GET /debug/pprof/heap?seconds=0 HTTP/1.1\r\n\r\n",
    b"\x01garbage\r\n\r\n",
];

/// Sends `req`, reads the answer into `buf`; allocates nothing.
fn fetch(addr: SocketAddr, req: &[u8], buf: &mut [u8]) -> usize {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req).unwrap();
    let mut n = 0;
    loop {
        match s.read(&mut buf[n..]) {
            Ok(0) => return n,
            Ok(k) => n += k,
            Err(e) => panic!("read: {e:?}"),
        }
        assert!(n < buf.len(), "answer larger than the buffer");
    }
}

/// The tests of this file one at a time: the other's clients would show
/// in this one's diff.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn serving_is_never_recorded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _kept = vec![0x5au8; 1 << 20]; // something for the routes to show
    let mut buf = vec![0u8; 64 << 20];
    let mut lens = [0usize; 15];
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    // Warm up: first uses of lazy std state on this thread (the resolver,
    // thread-locals) are this thread's, not the server's.
    fetch(addr, ROUTES[0], &mut buf);
    common::settle();
    let base = leakscope::snapshot();
    for (i, req) in ROUTES.iter().enumerate() {
        lens[i] = fetch(addr, req, &mut buf);
    }
    let after = leakscope::snapshot();
    let diff = after.diff(&base);
    let changed: Vec<_> = diff
        .sites()
        .iter()
        .filter(|d| d.total_allocs_delta() != 0 || d.live_bytes_delta() != 0)
        .collect();
    assert!(
        changed.is_empty(),
        "{} sites changed while the server answered:\n{diff:#}",
        changed.len()
    );
    // And the routes did answer.
    assert!(lens.iter().all(|&n| n > 12), "{lens:?}");
    server.stop();
}

/// After heavy use of every route (concurrent clients, a stop, a second
/// server), no site's stack passes through the server's code (ours or
/// mio's): everything its threads allocate goes through the guard.
#[test]
fn no_site_holds_the_servers_frames() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf = vec![0u8; 64 << 20];
    for _ in 0..2 {
        let server = leakscope::http::serve("127.0.0.1:0").unwrap();
        let addr = server.local_addr();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(move || {
                    let mut buf = vec![0u8; 64 << 20];
                    for req in ROUTES
                        .iter()
                        .filter(|r| !r.ends_with(b"seconds=1 HTTP/1.1\r\n\r\n"))
                    {
                        fetch(addr, req, &mut buf);
                    }
                });
            }
        });
        fetch(addr, ROUTES[3], &mut buf);
        server.stop();
    }
    let snap = leakscope::snapshot();
    let ours: Vec<String> = snap
        .sites()
        .iter()
        .filter(|s| {
            s.frames().iter().any(|f| {
                let name = f.function();
                name.contains("leakscope::http::") || name.contains("mio::")
            })
        })
        .map(|s| format!("{s:?}"))
        .collect();
    assert!(
        ours.is_empty(),
        "sites through the server:\n{}",
        ours.join("\n")
    );
}

/// Starting and stopping servers leaves no trace either: their threads
/// hold the guard from their first instruction, so even the thread start
/// (where std allocates before a closure runs) is not recorded.
#[test]
fn starting_and_stopping_servers_is_never_recorded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut buf = vec![0u8; 1 << 20];
    // Warm up: lazy state of the first server, and of this thread.
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    fetch(server.local_addr(), ROUTES[11], &mut buf);
    server.stop();
    common::settle();
    let base = leakscope::snapshot();
    for _ in 0..3 {
        let server = leakscope::http::serve("127.0.0.1:0").unwrap();
        fetch(server.local_addr(), ROUTES[11], &mut buf);
        server.stop();
    }
    let diff = leakscope::snapshot().diff(&base);
    let changed = diff
        .sites()
        .iter()
        .filter(|d| d.total_allocs_delta() != 0 || d.live_bytes_delta() != 0)
        .count();
    assert_eq!(changed, 0, "sites changed by starting servers:\n{diff:#}");
}
