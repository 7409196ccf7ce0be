//! The service benchmark's load generator (`benches/service.sh`): a closed
//! loop of keep-alive HTTP/1.1 requests on loopback, a fixed number of them
//! spread over a few connections, each connection on its own thread, each
//! request sent when the previous answer has arrived. Hand-written on
//! `std::net` rather than a client crate so that the client costs little and
//! nothing about it changes between the variants it measures.
//!
//! Usage: svc_load <port> <connections> <requests> <ask_url|-> [warmup]
//!
//! Sends `warmup` requests first (not timed), then `requests`; when half of
//! them are done, fetches `ask_url` once on a connection of its own (the
//! endpoint asked mid-run, for the variants that serve one). Then asks the
//! service to shut down, and prints
//!
//!     requests=N seconds=S
//!
//! With `SVC_CALLGRIND_PID` set (the service runs under callgrind), it zeroes
//! the service's instruction counters between the warm-up and the measured
//! requests (`callgrind_control -z`).
//!
//! It gives up (exit code 1) if any answer takes more than 60 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(60))).ok();
    s
}

/// One request and its whole answer; returns the body's length.
fn request(reader: &mut BufReader<TcpStream>, path: &str) -> usize {
    let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    reader.get_mut().write_all(head.as_bytes()).expect("send");
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert!(
        line.starts_with("HTTP/1.1 200"),
        "unexpected answer: {line:?}"
    );
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("content-length");
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("body");
    length
}

fn ask(url: &str) {
    // http://127.0.0.1:PORT/path
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').expect("path");
    let mut s = TcpStream::connect(host).expect("connect endpoint");
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("endpoint answer");
    assert!(
        all.starts_with(b"HTTP/1.1 200"),
        "endpoint did not answer 200"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!(
            "usage: {} <port> <connections> <requests> <ask_url|-> [warmup]",
            args[0]
        );
        return;
    }
    let port: u16 = args[1].parse().expect("port");
    let connections: u64 = args[2].parse().expect("connections");
    let requests: u64 = args[3].parse().expect("requests");
    let ask_url = (args[4] != "-").then(|| args[4].clone());
    let warmup: u64 = args.get(5).map_or(0, |w| w.parse().expect("warmup"));

    let run = |count: u64, ask_url: Option<String>| {
        let done = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..connections)
            .map(|c| {
                let done = done.clone();
                let ask_url = ask_url.clone();
                let share = count / connections + u64::from(c < count % connections);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(connect(port));
                    for i in 0..share {
                        let id = (c * 7919 + i * 31) % 100_000;
                        request(
                            &mut reader,
                            &format!("/item/{id}?qty={}&lang=en", i % 9 + 1),
                        );
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if n == count / 2 {
                            if let Some(url) = &ask_url {
                                ask(url);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("load thread");
        }
    };
    run(warmup, None);
    if let Ok(pid) = std::env::var("SVC_CALLGRIND_PID") {
        // Under callgrind (benches/service.sh), count the measured requests
        // only: zero the service's counters once the warm-up is done.
        let zeroed = std::process::Command::new("callgrind_control")
            .args(["-z", &pid])
            .output()
            .expect("callgrind_control");
        assert!(zeroed.status.success(), "callgrind_control -z {pid} failed");
    }
    let start = Instant::now();
    run(requests, ask_url);
    let seconds = start.elapsed().as_secs_f64();
    let mut reader = BufReader::new(connect(port));
    request(&mut reader, "/shutdown");
    println!("requests={requests} seconds={seconds:.6}");
}
