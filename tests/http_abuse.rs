//! The built-in server under abuse on loopback, all at once: a well-behaved
//! client asking `/metrics` every 200 ms must be answered (200 within 1 s)
//! for at least 95% of its requests, the server must start no thread for
//! any of it, and `stop()` must return within 1 s, while
//! - 500 idle sockets are held open,
//! - 200 slowloris connections trickle a request head a byte a second,
//! - 32 slow readers take the dashboard's exports a byte a second,
//! - 8 clients post symbol requests of 8192 addresses spread over the
//!   executable's code, and hang up after a second,
//! - bursts of 150 requests for distinct heap profiles arrive at once,
//!
//! every abusive connection reopened when the server drops it: far more
//! than the server's 512 connections. And the symbol service under abuse
//! on its own: huge bodies, too many addresses, bad lengths, a client that
//! hangs up mid-body, all answered at once (413/400/408 with a one-line
//! reason) or dropped, and the server still answers. And symbol requests
//! whose clients wait for the answers, while `/metrics` needs new symbols.

#![cfg(all(feature = "http", target_os = "linux"))]

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

/// How long the good client asks while the abuse runs, at least.
const ATTACK: Duration = Duration::from_secs(6);
/// How many requests it makes, at least (every 200 ms).
const REQUESTS: usize = 30;
/// Threads the abuse runs on (each drives many sockets).
const ABUSERS: usize = 5;

/// `GET path`, or `None` if it is not answered within `limit` (connect,
/// send and read all bounded: a starved client fails, never hangs); a
/// failure says where the time went.
fn get_within(addr: SocketAddr, path: &str, limit: Duration) -> Option<u16> {
    let start = Instant::now();
    let mut connected = None;
    let mut out = Vec::new();
    let r = (|| {
        let mut s = TcpStream::connect_timeout(&addr, limit)?;
        connected = Some(start.elapsed());
        s.set_read_timeout(Some(limit))?;
        s.set_write_timeout(Some(limit))?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        s.read_to_end(&mut out)
    })();
    let took = start.elapsed();
    if r.is_err() || took >= limit || !out.windows(4).any(|w| w == b"\r\n\r\n") {
        eprintln!(
            "{path}: {r:?}, connected after {connected:?}, {} bytes after {took:?}",
            out.len()
        );
        return None;
    }
    Some(common::http::parse(&out).status)
}

/// Both ends of ~1000 sockets live in this process: raise the soft
/// descriptor limit (often 1024) towards the hard one.
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
    // Say so plainly rather than fail later on some `EMFILE`.
    assert!(
        lim.rlim_cur >= 2048,
        "this test holds both ends of ~1000 sockets and needs 2048 descriptors; the hard limit \
         is {} (raise it: `ulimit -Hn 4096` as root, or `nofile` in limits.conf)",
        lim.rlim_max
    );
}

/// The process's threads.
fn tasks() -> HashSet<u64> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The server's threads: those named `leakscope-…` (the test harness
/// starts threads of its own for the next tests while one runs).
fn server_threads() -> HashSet<u64> {
    tasks()
        .into_iter()
        .filter(|t| {
            std::fs::read_to_string(format!("/proc/self/task/{t}/comm"))
                .is_ok_and(|name| name.starts_with("leakscope-"))
        })
        .collect()
}

/// CPU time (user + system, in clock ticks) of these threads.
fn cpu_ticks(tids: &HashSet<u64>) -> u64 {
    tids.iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/self/task/{t}/stat")).ok())
        .map(|stat| {
            // Fields after the command name (which may hold spaces).
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
        })
        .sum()
}

/// The process's resident set, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_nodelay(true).ok()?;
    // A server that neither reads nor closes must not hold up the abuse.
    s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
    Some(s)
}

/// Whether the server closed `s` (or reset it); what it sent is dropped,
/// up to `take` bytes read (a slow reader takes one, the others all).
fn closed(s: &mut TcpStream, take: usize) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 4096];
    let r = s.read(&mut buf[..take.clamp(1, 4096)]);
    let _ = s.set_nonblocking(false);
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// Keeps `n` connections open until `done`: every `period`, each sends the
/// next byte of `trickle` (if any) and takes `take` bytes of what it was
/// sent, and is reopened (sending `first`) when the server
/// dropped it.
fn hold(
    addr: SocketAddr,
    n: usize,
    first: &[u8],
    trickle: &[u8],
    take: usize,
    period: Duration,
    done: &AtomicBool,
) {
    let open = || {
        let mut s = connect(addr)?;
        s.write_all(first).ok()?;
        Some(s)
    };
    let mut socks: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
    let mut sent = vec![0usize; n];
    while !done.load(Relaxed) {
        for (i, slot) in socks.iter_mut().enumerate() {
            let alive = match slot {
                Some(s) => {
                    let wrote = trickle.is_empty() || {
                        let b = trickle[sent[i] % trickle.len()];
                        sent[i] += 1;
                        s.write_all(&[b]).is_ok()
                    };
                    wrote && !closed(s, take)
                }
                None => false,
            };
            if !alive {
                *slot = open();
                sent[i] = 0;
            }
            if done.load(Relaxed) {
                break;
            }
        }
        let t = Instant::now();
        while t.elapsed() < period && !done.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Addresses spread over the executable's code: each lookup a different
/// function, so the symbolizer's caches do not help.
fn code_addresses(n: usize) -> Vec<u64> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let ranges: Vec<(u64, u64)> = maps
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.contains('x')))
        .filter_map(|l| {
            let (a, b) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect();
    (0..n)
        .map(|i| {
            let (a, b) = ranges[i % ranges.len()];
            a + ((i / ranges.len()) as u64 * 4099) % (b - a)
        })
        .collect()
}

fn symbol_post(addrs: &[u64]) -> Vec<u8> {
    let body: Vec<String> = addrs.iter().map(|a| format!("{a:#x}")).collect();
    let body = body.join("+");
    format!(
        "POST /debug/pprof/symbol HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `clients` connections each posting `post`, hanging up after `patience`
/// whether answered or not, and posting again, until `done`.
fn symbol_flood(
    addr: SocketAddr,
    clients: usize,
    post: &[u8],
    patience: Duration,
    done: &AtomicBool,
) {
    while !done.load(Relaxed) {
        let socks: Vec<TcpStream> = (0..clients)
            .filter_map(|_| {
                let mut s = connect(addr)?;
                s.write_all(post).ok()?;
                Some(s)
            })
            .collect();
        let t = Instant::now();
        while t.elapsed() < patience && !done.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(socks);
    }
}

/// Bursts of `n` requests for distinct heap profiles (one render each),
/// whose answers are not read for a second.
fn request_bursts(addr: SocketAddr, n: usize, done: &AtomicBool) {
    let mut k = 0u64;
    while !done.load(Relaxed) {
        let socks: Vec<TcpStream> = (0..n)
            .filter_map(|_| {
                k += 1;
                let mut s = connect(addr)?;
                s.write_all(format!("GET /debug/pprof/heap?n={k} HTTP/1.1\r\n\r\n").as_bytes())
                    .ok()?;
                Some(s)
            })
            .collect();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1) && !done.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(socks);
    }
}

/// The tests of this file one at a time: each measures the server's
/// answers under its own abuse, not the other's.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_good_client_is_answered_through_every_abuse_at_once() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit();
    let before = server_threads().len();
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    // The server's threads name themselves as they start: wait until they
    // all have.
    let mut server_tids = server_threads();
    let mut stable = Instant::now();
    while stable.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(20));
        let now = server_threads();
        if now != server_tids {
            server_tids = now;
            stable = Instant::now();
        }
    }
    let threads_serving = server_tids.len();
    let rss_before = rss();
    let post = symbol_post(&code_addresses(8192));
    let done = AtomicBool::new(false);
    let (ok, asked, max_threads, max_rss, cpu) = std::thread::scope(|scope| {
        let done = &done;
        // The abuse ends with the test, even when an assertion fails.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Relaxed);
            }
        }
        let _stop = Stop(done);
        let post = &post;
        let slow = b"GET /debug/leakscope/snapshot.json HTTP/1.1\r\n\r\n";
        let trickle = b"GET /debug/pprof/heap HTTP/1.1\r\nHost: x\r\nX-a: b\r\n";
        let abusers = [
            scope.spawn(move || hold(addr, 500, b"", b"", 4096, Duration::from_millis(100), done)),
            scope.spawn(move || hold(addr, 200, b"", trickle, 4096, Duration::from_secs(1), done)),
            scope.spawn(move || hold(addr, 32, slow, b"", 1, Duration::from_secs(1), done)),
            scope.spawn(move || symbol_flood(addr, 8, post, Duration::from_secs(1), done)),
            scope.spawn(move || request_bursts(addr, 150, done)),
        ];
        assert_eq!(abusers.len(), ABUSERS);
        // Let the abuse fill the server first.
        std::thread::sleep(Duration::from_millis(1500));
        let cpu_start = cpu_ticks(&server_tids);
        let start = Instant::now();
        let (mut ok, mut asked, mut max_threads, mut max_rss) = (0, 0, 0, 0);
        let mut took = Vec::new();
        while start.elapsed() < ATTACK || asked < REQUESTS {
            let t = Instant::now();
            asked += 1;
            match get_within(addr, "/metrics", Duration::from_secs(1)) {
                Some(200) => {
                    ok += 1;
                    took.push(t.elapsed());
                }
                other => eprintln!("request {asked}: {other:?} after {:?}", t.elapsed()),
            }
            max_threads = max_threads.max(server_threads().len());
            max_rss = max_rss.max(rss());
            std::thread::sleep(Duration::from_millis(200).saturating_sub(t.elapsed()));
        }
        let cpu = (cpu_ticks(&server_tids) - cpu_start) as f64
            / 100.0 // clock ticks per second on Linux
            / start.elapsed().as_secs_f64();
        // Stop while the abuse still runs.
        let t = Instant::now();
        server.stop();
        let stop = t.elapsed();
        done.store(true, Relaxed);
        for a in abusers {
            a.join().unwrap();
        }
        assert!(stop < Duration::from_secs(1), "stop took {stop:?}");
        took.sort();
        let median = took.get(took.len() / 2).copied().unwrap_or_default();
        let slowest = took.last().copied().unwrap_or_default();
        eprintln!("answered in {median:?} (median), {slowest:?} (slowest); stop took {stop:?}");
        (ok, asked, max_threads, max_rss, cpu)
    });
    eprintln!(
        "all abuse at once: {ok}/{asked} answered within 1 s; server threads {before} before \
         serve, {threads_serving} serving, at most {max_threads} under abuse; RSS {} -> at most \
         {} MiB; server threads {:.0}% of a core",
        rss_before >> 20,
        max_rss >> 20,
        cpu * 100.0
    );
    // The target is 95% within 1 s, and that is what this prints
    // and what the notes quote (29-30 of 30 on a 2-core machine, also with
    // a build running beside it). The assertion keeps a margin below it, as
    // this suite asserts no tight timings: a CI machine shared with other
    // jobs must not turn it red at random. The thread-pool design it
    // replaced answered 2 of 10 within 1 s here, far below the margin.
    assert!(ok * 100 >= asked * 80, "{ok}/{asked} answered within 1 s");
    assert!(
        max_threads <= threads_serving,
        "the server started threads under abuse: {threads_serving} -> {max_threads}"
    );
    assert!(
        max_rss.saturating_sub(rss_before) < 256 << 20,
        "RSS grew from {} to {} MiB",
        rss_before >> 20,
        max_rss >> 20
    );
}

/// Sends `raw` and reads the answer, or `None` if the server closed
/// without one; bounded in time.
fn try_exchange(addr: SocketAddr, raw: &[u8]) -> Option<common::http::Reply> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (!out.is_empty()).then(|| common::http::parse(&out))
}

fn assert_one_line(r: &common::http::Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let text = r.text();
    assert!(
        text.ends_with('\n') && text.trim_end().lines().count() == 1 && text.len() > 3,
        "{what}: not a one-line reason: {text:?}"
    );
}

#[test]
fn symbol_posts_are_bounded_and_the_server_stays_answerable() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    // A body over 256 KiB: refused from its head, before it is read.
    let t = Instant::now();
    let r = try_exchange(
        addr,
        b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n0x1+0x2",
    )
    .expect("an answer");
    assert_one_line(&r, 413, "huge body");
    assert!(r.text().contains("too large"), "{}", r.text());
    // Sent anyway: the answer still arrives, the connection is closed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n")
        .unwrap();
    let junk = vec![b'+'; 4 << 20];
    let _ = s.write_all(&junk); // fails once the server has closed: fine
    drop(s);
    // More addresses than a request may ask for (within the byte bound).
    let many: Vec<u64> = (1..=20_000).collect();
    let r = try_exchange(addr, &symbol_post(&many)).expect("an answer");
    assert_one_line(&r, 413, "too many addresses");
    assert!(r.text().contains("at most 8192"), "{}", r.text());
    // Bad lengths.
    for (raw, status, what) in [
        (
            &b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n0x10"[..],
            400,
            "conflicting Content-Length",
        ),
        (
            b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: -4\r\n\r\n0x10",
            400,
            "negative Content-Length",
        ),
        (
            b"POST /debug/pprof/symbol HTTP/1.1\r\nContent-Length: 4x\r\n\r\n0x10",
            400,
            "bad Content-Length",
        ),
        (
            b"POST /debug/pprof/symbol HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n0x10\r\n0\r\n\r\n",
            411,
            "chunked",
        ),
    ] {
        let r = try_exchange(addr, raw).expect("an answer");
        assert_one_line(&r, status, what);
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refusals took {:?}",
        t.elapsed()
    );
    // A client that waits for `100 Continue` before its body (curl's way
    // for bodies over 1 KiB) is told to go on at once.
    let mut s = TcpStream::connect(addr).unwrap();
    let body = "0x10+0x20";
    s.write_all(
        format!(
            "POST /debug/pprof/symbol HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).expect("a 100 Continue at once");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(common::http::parse(&out).status, 200);
    // Clients that hang up mid-body, and ones that post the most expensive
    // lookups and hang up at once: the work stops with them.
    let post = symbol_post(&code_addresses(8192));
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&post[..post.len() / 2]).unwrap();
        drop(s);
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&post).unwrap();
        drop(s);
    }
    // The server answers at once, and a symbol lookup soon (the abandoned
    // ones do not hold the symbol lane for 20 x 5 s).
    let t = Instant::now();
    assert_eq!(
        get_within(addr, "/metrics", Duration::from_secs(1)),
        Some(200)
    );
    let pc = symbol_posts_are_bounded_and_the_server_stays_answerable as fn() as usize as u64;
    let r = try_exchange(addr, &symbol_post(&[pc])).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("symbol_posts_are_bounded"),
        "{}",
        r.text()
    );
    let took = t.elapsed();
    eprintln!("after 40 abandoned symbol posts: answered in {took:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    let t = Instant::now();
    server.stop();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        t.elapsed()
    );
}

/// Leaks a buffer from a function of its own (one per `N`): a new site,
/// whose stack the next snapshot must symbolize.
#[inline(never)]
fn leak_at<const N: usize>() -> usize {
    let v: &'static mut Vec<u8> = Box::leak(Box::new(Vec::with_capacity(100_000 + N)));
    std::hint::black_box(v.as_ptr() as usize)
}

/// Symbol requests that wait for their answers (up to 5 s of lookups
/// each, one symbol-lock hold per address) while `/metrics` needs new
/// symbols each time it is asked: the lookups let it in between two
/// addresses. Without that, the lookup loop took the lock back before the
/// woken `/metrics` ran, and `/metrics` took 2 to 5 s.
#[test]
fn patient_symbol_posts_do_not_starve_metrics_that_needs_new_symbols() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let post = symbol_post(&code_addresses(8192));
    let done = AtomicBool::new(false);
    let new_sites: [fn() -> usize; 20] = [
        leak_at::<1>,
        leak_at::<2>,
        leak_at::<3>,
        leak_at::<4>,
        leak_at::<5>,
        leak_at::<6>,
        leak_at::<7>,
        leak_at::<8>,
        leak_at::<9>,
        leak_at::<10>,
        leak_at::<11>,
        leak_at::<12>,
        leak_at::<13>,
        leak_at::<14>,
        leak_at::<15>,
        leak_at::<16>,
        leak_at::<17>,
        leak_at::<18>,
        leak_at::<19>,
        leak_at::<20>,
    ];
    let answered = std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| symbol_flood(addr, 2, &post, Duration::from_secs(10), &done));
        }
        std::thread::sleep(Duration::from_millis(300));
        let mut answered = 0;
        for leak in new_sites {
            leak();
            let t = Instant::now();
            if get_within(addr, "/metrics", Duration::from_secs(1)) == Some(200) {
                answered += 1;
            }
            eprintln!("/metrics with a new site: {:?}", t.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        done.store(true, Relaxed);
        answered
    });
    eprintln!("patient symbol posts: {answered} of 20 answered within 1 s");
    // The bar is 95% within 1 s, which is what this prints (20 of
    // 20 on a 2-core machine). The assertion keeps the same margin as the
    // test above, for a shared CI machine; the lock without the hand-off
    // answered 2 of 20, far below it.
    assert!(answered >= 16, "{answered} of 20 answered within 1 s");
    server.stop();
}
