//! The route table: [`respond`] and what the built-in server calls with its
//! own context (client address, limits, history, stop signal).

use super::ctx::Ctx;
use super::dashboard;
use super::limits::Deltas;
use super::options::Options;
use super::profiles::{self, Kind};
use super::response::Response;
use super::share::Slot;
use crate::recorder::Guard;

static FLAMEGRAPH: Slot = Slot::new();
static JSON: Slot = Slot::new();
static DHAT: Slot = Slot::new();

/// Deltas from [`respond`] callers, who have no server of their own: at most
/// this many at a time in the process.
static RESPOND_DELTAS: Deltas = Deltas::new(4);

/// Answers one request, as Go's `net/http/pprof` would, plus the leak
/// dashboard and `/metrics`: the framework-agnostic core that the built-in
/// server uses too, for mounting in any web framework.
///
/// `path_and_query` is the request target as sent (`/debug/pprof/heap?seconds=10`).
/// Routes:
///
/// | path | what |
/// |---|---|
/// | `/debug/pprof/` | index page linking the profiles |
/// | `/debug/pprof/heap` | gzip pprof profile of a fresh snapshot: Go's four sample types (`alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`), default `inuse_space`, `duration_nanos` 0 |
/// | `/debug/pprof/allocs` | the same, default sample type `alloc_space` |
/// | `…?seconds=N` | the growth over the next N seconds (`filename="heap-delta"`), `duration_nanos` the time it covers; this call blocks for N seconds |
/// | `…?debug=1` | the text report, `text/plain` |
/// | `/debug/pprof/symbol` | Go's symbol service (`GET`: `num_symbols: 1`; `POST` addresses joined by `+`: `0xADDR name` lines); at most 8192 addresses per request (413 past it) and 5 s of work (then the addresses done so far, with `X-Leakscope-Partial`) |
/// | `/debug/leakscope` | the leak dashboard (HTML) |
/// | `/debug/leakscope/flamegraph.svg`, `snapshot.json`, `dhat.json` | the exports of a fresh snapshot |
/// | `/debug/leakscope/retainers` | [who holds the heap](crate::retainers) (text; `?format=json`), computed on request in a forked child; 429 while another scan runs |
/// | `/metrics` | [Prometheus exposition](crate::metrics::write_prometheus) of the top 20 sites |
///
/// Errors are sent as Go sends them (`text/plain; charset=utf-8`,
/// `X-Go-Pprof: 1`, a one-line reason), so `go tool pprof` prints the
/// reason: 400 for a bad or non-positive `seconds`, `seconds` over 300,
/// or `seconds` with `debug`; 404 for an unknown path; 405 for a method
/// other than `GET` and `HEAD` (and `POST` on the symbol route); 503 when
/// more than four `seconds=` profiles would run at once.
///
/// Everything runs under the tracker's reentrancy guard: answering is
/// never recorded. The call never panics.
///
/// # Examples
///
/// ```
/// let r = leakscope::http::respond("GET", "/debug/pprof/heap");
/// assert_eq!(r.status(), 200);
/// assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
/// assert_eq!(&r.body()[..2], b"\x1f\x8b"); // gzip
///
/// let bad = leakscope::http::respond("GET", "/debug/pprof/heap?seconds=0");
/// assert_eq!(bad.status(), 400);
/// ```
pub fn respond(method: &str, path_and_query: &str) -> Response {
    let defaults = Options::default();
    let ctx = Ctx {
        max_seconds: defaults.max_seconds_value(),
        top_sites: defaults.top_sites_value(),
        history: None,
        deltas: &RESPOND_DELTAS,
        client: None,
        sleep: &|d| {
            std::thread::sleep(d);
            true
        },
        abandoned: &|| false,
    };
    respond_in(method, path_and_query, &ctx)
}

/// [`respond`] with the server's context; never panics (a panic inside a
/// route becomes a 500).
pub(super) fn respond_in(method: &str, path_and_query: &str, ctx: &Ctx<'_>) -> Response {
    Guard::run(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            route(method, path_and_query, ctx)
        }))
        .unwrap_or_else(|_| Response::go_error(500, "internal error while building the response"))
    })
}

fn route(method: &str, path_and_query: &str, ctx: &Ctx<'_>) -> Response {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let is_symbol = path == "/debug/pprof/symbol";
    match method {
        "GET" | "HEAD" => {}
        "POST" if is_symbol => {}
        _ => {
            let allow = if is_symbol {
                "GET, HEAD, POST"
            } else {
                "GET, HEAD"
            };
            return Response::go_error(405, "method not allowed").with_header("Allow", allow);
        }
    }
    match path {
        "/debug/pprof" | "/debug/pprof/" => profiles::index(),
        "/debug/pprof/heap" => profiles::profile(Kind::Heap, query, ctx),
        "/debug/pprof/allocs" => profiles::profile(Kind::Allocs, query, ctx),
        "/debug/pprof/symbol" => profiles::symbol(query, ctx.abandoned),
        "/debug/leakscope" | "/debug/leakscope/" => dashboard::page(query, ctx),
        // The large exports: one render shared by the clients that ask
        // while it is being sent (`share.rs`).
        "/debug/leakscope/flamegraph.svg" => FLAMEGRAPH.get(profiles::flamegraph),
        "/debug/leakscope/snapshot.json" => JSON.get(profiles::json),
        "/debug/leakscope/dhat.json" => DHAT.get(profiles::dhat),
        "/debug/leakscope/retainers" => retainers(query),
        "/metrics" => profiles::metrics(ctx.top_sites),
        _ if path.starts_with("/debug/pprof/") => Response::go_error(404, "Unknown profile"),
        _ => Response::go_error(404, "404 page not found"),
    }
}

/// `/debug/leakscope/retainers[?format=text|json]`: a retainer scan now.
fn retainers(query: &str) -> Response {
    let json = match retainers_format(query) {
        Ok(json) => json,
        Err(bad) => return bad,
    };
    match crate::retainers::retainers() {
        Ok(r) if json => {
            let mut body = Vec::new();
            match r.write_json(&mut body) {
                Ok(()) => Response::ok("application/json", body),
                Err(e) => Response::go_error(500, &format!("could not write the retainers: {e}")),
            }
        }
        Ok(r) => Response::ok("text/plain; charset=utf-8", r.to_string().into_bytes()),
        Err(e) if crate::retainers::is_busy(&e) => {
            Response::go_error(429, "another retainer scan is running; try again")
        }
        Err(e) => Response::go_error(500, &e.to_string()),
    }
}

/// `format=json` (true) or `format=text` (false, the default) of a
/// retainers query, or the 400 for another format.
pub(super) fn retainers_format(query: &str) -> Result<bool, Response> {
    let mut json = false;
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match (k, v) {
            ("format", "json") => json = true,
            ("format", "text") => json = false,
            ("format", _) => return Err(Response::go_error(400, "format must be text or json")),
            _ => {}
        }
    }
    Ok(json)
}

/// [`respond`] for a `POST` with a body: only `/debug/pprof/symbol` reads
/// one. Used by the built-in server.
pub(super) fn respond_with_body(
    method: &str,
    path_and_query: &str,
    body: &[u8],
    ctx: &Ctx<'_>,
) -> Response {
    let path = path_and_query.split('?').next().unwrap_or("");
    if method == "POST" && path == "/debug/pprof/symbol" {
        return Guard::run(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                profiles::symbol_bytes(body, ctx.abandoned)
            }))
            .unwrap_or_else(|_| Response::go_error(500, "internal error"))
        });
    }
    respond_in(method, path_and_query, ctx)
}
