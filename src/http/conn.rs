//! One request as the built-in server reads it: the head (bounded in size,
//! parsed with `httparse`), the token check, the body's length; and the
//! bytes of an answer's head. No I/O here: the event loop
//! (`event_loop.rs`) owns the sockets.

use subtle::ConstantTimeEq;

use super::response::{Response, reason_phrase};

/// Request line and headers together.
pub(super) const MAX_HEAD: usize = 16 * 1024;
/// Headers per request.
const MAX_HEADERS: usize = 48;
/// A request body (only the symbol route reads one: a list of addresses).
pub(super) const MAX_BODY: usize = 256 * 1024;

/// The parts of a request head that the server reads.
pub(super) struct Head {
    pub(super) method: String,
    pub(super) target: String,
    authorization: Option<Vec<u8>>,
    content_length: Option<String>,
    chunked: bool,
    /// `Expect: 100-continue`: the client waits for a `100 Continue`
    /// before it sends its body (curl does for bodies over 1 KiB).
    pub(super) expect_continue: bool,
    /// Bytes of the head, up to and including its blank line.
    pub(super) len: usize,
}

impl Head {
    /// Whether the request carries `Authorization: Bearer <token>`.
    pub(super) fn authorized(&self, token: &str) -> bool {
        authorized(self.authorization.as_deref(), token)
    }

    /// The body's length (0 without `Content-Length`), or the 4xx that
    /// refuses it: a chunked body (411), a bad length (400), one over
    /// [`MAX_BODY`] (413).
    pub(super) fn body_len(&self) -> Result<usize, Response> {
        if self.chunked {
            return Err(Response::go_error(
                411,
                "chunked request bodies are not supported: send Content-Length",
            ));
        }
        let want = match self.content_length.as_deref().map(str::trim) {
            None => 0,
            Some(v) => match v.parse::<usize>() {
                Ok(n) => n,
                Err(_) => return Err(Response::go_error(400, "invalid Content-Length")),
            },
        };
        if want > MAX_BODY {
            return Err(Response::go_error(
                413,
                &format!("request body too large (at most {} KiB)", MAX_BODY / 1024),
            ));
        }
        Ok(want)
    }
}

/// The status line and headers of `r`, for HTTP/1.1 with one request per
/// connection (`Connection: close`), ending with the blank line.
pub(super) fn response_head(r: &Response) -> Vec<u8> {
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
    head.into_bytes()
}

/// `Ok(None)`: not complete yet.
pub(super) fn parse_head(bytes: &[u8]) -> Result<Option<Head>, Response> {
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
                expect_continue: false,
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
                } else if h.name.eq_ignore_ascii_case("expect") {
                    head.expect_continue =
                        h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
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

#[cfg(test)]
mod tests {
    use super::*;

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
