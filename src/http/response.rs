//! [`Response`]: what [`respond`](super::respond) hands back, and the error
//! responses as Go's `net/http/pprof` writes them.

use std::fmt;
use std::sync::Arc;

/// An HTTP response from [`respond`](super::respond): status, headers and
/// body, for any web framework to send as it is.
///
/// The headers do not include `Content-Length` or `Connection`: the
/// framework (or the built-in server) adds those.
///
/// # Examples
///
/// ```
/// let r = leakscope::http::respond("GET", "/debug/pprof/nope");
/// assert_eq!(r.status(), 404);
/// assert_eq!(r.header("X-Go-Pprof"), Some("1"));
/// assert_eq!(r.body(), b"Unknown profile\n");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    /// Shared, so one rendered export can be sent to many clients at once
    /// without a copy each (`http/share.rs`).
    body: Arc<Vec<u8>>,
}

impl Response {
    pub(super) fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".to_string(), content_type.to_string())],
            body: Arc::new(body),
        }
    }

    /// A response from parts, its body shared with other responses.
    pub(super) fn from_shared(
        status: u16,
        headers: Vec<(String, String)>,
        body: Arc<Vec<u8>>,
    ) -> Response {
        Response {
            status,
            headers,
            body,
        }
    }

    /// The body, shared (no copy).
    pub(super) fn shared_body(&self) -> &Arc<Vec<u8>> {
        &self.body
    }

    /// A `200 OK` with this content type and body.
    pub(super) fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response::new(200, content_type, body.into())
    }

    /// An error as Go's pprof handlers send it (`serveError`): plain text,
    /// `X-Go-Pprof: 1` (which tells `go tool pprof` to print the body as
    /// the reason), and the one-line reason.
    pub(super) fn go_error(status: u16, reason: &str) -> Response {
        let mut body = reason.to_string();
        body.push('\n');
        Response::new(status, "text/plain; charset=utf-8", body.into_bytes())
            .with_header("X-Go-Pprof", "1")
            .with_header("X-Content-Type-Options", "nosniff")
    }

    pub(super) fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers, in the order they should be sent.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first header of this name (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body. For a `HEAD` request it is still filled in; a server sends
    /// only its length.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Status, headers and body, to hand over to a framework's response type.
    ///
    /// # Examples
    ///
    /// ```
    /// let (status, headers, body) = leakscope::http::respond("GET", "/metrics").into_parts();
    /// assert_eq!(status, 200);
    /// assert!(headers.iter().any(|(n, _)| n == "Content-Type"));
    /// assert!(!body.is_empty());
    /// ```
    pub fn into_parts(self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let body = Arc::try_unwrap(self.body).unwrap_or_else(|shared| (*shared).clone());
        (self.status, self.headers, body)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies are whole profiles: show their length, not their bytes.
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// The reason phrase of the status codes this crate sends.
pub(super) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}
