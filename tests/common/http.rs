//! A plain HTTP/1.1 client over `std::net::TcpStream`, for the tests of the
//! built-in server (no client library between the test and the bytes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `raw` as it is and reads the answer to the end (the server closes
/// every connection after one answer).
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect to the test server");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(raw).expect("send the request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read the answer");
    parse(&out)
}

/// `GET path` with optional extra header lines (each ending in `\r\n`).
pub fn get_with(addr: SocketAddr, path: &str, extra: &str) -> Reply {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
}

pub fn get(addr: SocketAddr, path: &str) -> Reply {
    get_with(addr, path, "")
}

pub fn parse(out: &[u8]) -> Reply {
    parse_with(out, true)
}

/// `check_length` false for the answer to a `HEAD`, which has a
/// `Content-Length` and no body.
pub fn parse_with(out: &[u8], check_length: bool) -> Reply {
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(out)));
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = out[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    let reply = Reply {
        status,
        headers,
        body,
    };
    if let Some(len) = reply.header("Content-Length").filter(|_| check_length) {
        assert_eq!(
            len.parse::<usize>().unwrap(),
            reply.body.len(),
            "Content-Length"
        );
    }
    reply
}

/// Fails (never skips) when a client program the test drives is missing.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "`{program}` is not on PATH: this test checks the endpoint with the real client. \
         Install it (Debian/Ubuntu: `apt-get install -y {package}`, or run scripts/test.sh) \
         and run the tests again."
    );
}

/// A fresh empty directory under the system temp dir, removed with all it
/// holds when dropped (so runs of the tests leave nothing behind).
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("leakscope-{name}-"))
        .tempdir()
        .expect("a scratch directory under the system temp dir")
}

/// A chunked body (other servers' answers, e.g. Prometheus's API) decoded.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
}
