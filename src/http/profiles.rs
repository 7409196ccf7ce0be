//! The routes that serve data: the pprof profiles (snapshot and delta), the
//! text report, the symbol service, the index page, the other exports and
//! `/metrics`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::ctx::Ctx;
use super::query::profile_query;
use super::response::Response;
use crate::profile::snapshot;

/// Which of Go's two heap-shaped profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `/debug/pprof/heap`: default sample type `inuse_space`.
    Heap,
    /// `/debug/pprof/allocs`: the same profile, default `alloc_space`.
    Allocs,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Heap => "heap",
            Kind::Allocs => "allocs",
        }
    }

    fn default_sample_type(self) -> &'static str {
        match self {
            Kind::Heap => "inuse_space",
            Kind::Allocs => "alloc_space",
        }
    }
}

/// `/debug/pprof/heap` and `/debug/pprof/allocs`, with `seconds`, `debug`
/// and `gc` as Go reads them.
pub(super) fn profile(kind: Kind, query: &str, ctx: &Ctx<'_>) -> Response {
    let q = match profile_query(query, ctx.max_seconds) {
        Ok(q) => q,
        Err(bad) => return bad,
    };
    if q.debug {
        return Response::ok("text/plain; charset=utf-8", snapshot().to_string())
            .with_header("X-Content-Type-Options", "nosniff");
    }
    let (now, base, filename) = match q.seconds {
        None => (snapshot(), None, kind.name().to_string()),
        Some(secs) => {
            let _permit = match ctx.deltas.acquire(ctx.client) {
                Ok(p) => p,
                Err(busy) => return busy,
            };
            let base = snapshot();
            if !(ctx.sleep)(Duration::from_secs(secs)) {
                // Stopping, or the client left (then nobody reads this).
                return Response::go_error(503, "server is shutting down");
            }
            (snapshot(), Some(base), format!("{}-delta", kind.name()))
        }
    };
    let mut body = Vec::new();
    if let Err(e) =
        crate::report::write_go_profile(&now, base.as_ref(), kind.default_sample_type(), &mut body)
    {
        return Response::go_error(500, &format!("could not write the profile: {e}"));
    }
    Response::ok("application/octet-stream", body)
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header(
            "Content-Disposition",
            &format!("attachment; filename=\"{filename}\""),
        )
}

/// Addresses one symbol request may ask for: past it, a 413. pprof sends
/// every unsymbolized location of a profile in one request; 8192 is more
/// than a heap profile has, and bounds the work one request can queue.
pub(super) const MAX_SYMBOL_ADDRESSES: usize = 8192;

/// Work one symbol request may take: past it, the answer holds the
/// addresses done so far (pprof leaves the others as addresses), and says
/// so in `X-Leakscope-Partial`. Symbolizing takes the process-wide symbol
/// lock for each address, so one request must not keep it for minutes.
pub(super) const SYMBOL_TIME: Duration = Duration::from_secs(5);

/// `GET /debug/pprof/symbol`: Go's symbol service. With no addresses it
/// only says that symbols are available (`num_symbols: 1`); addresses in
/// the query, as in the body of a `POST`, are looked up.
pub(super) fn symbol(query: &str, abandoned: &dyn Fn() -> bool) -> Response {
    symbol_bytes(query.as_bytes(), abandoned)
}

/// The symbol service: `num_symbols: 1`, then `0xADDR name` for each
/// address (hex or decimal, joined by `+`) that resolves, as Go answers.
/// Bounded: at most [`MAX_SYMBOL_ADDRESSES`] (else a 413), at most
/// [`SYMBOL_TIME`] of work (then a partial answer), and it stops as soon as
/// `abandoned()` (the client went away, the server stops).
pub(super) fn symbol_bytes(body: &[u8], abandoned: &dyn Fn() -> bool) -> Response {
    let addresses = addresses(body);
    if addresses.len() > MAX_SYMBOL_ADDRESSES {
        return Response::go_error(
            413,
            &format!(
                "too many addresses ({}; at most {MAX_SYMBOL_ADDRESSES} per request)",
                addresses.len()
            ),
        );
    }
    let deadline = Instant::now() + SYMBOL_TIME;
    let mut out = String::from("num_symbols: 1\n");
    let mut done = 0;
    for &pc in &addresses {
        if Instant::now() >= deadline || abandoned() {
            break;
        }
        if let Some(name) = resolve(pc) {
            let _ = writeln!(out, "{pc:#x} {name}");
        }
        done += 1;
    }
    // The debug info read for these addresses is not kept (see
    // `profile::release_symbolizer`).
    crate::profile::release_symbolizer();
    let r = Response::ok("text/plain; charset=utf-8", out)
        .with_header("X-Content-Type-Options", "nosniff");
    if done < addresses.len() {
        let why = format!(
            "{done} of {} addresses looked up (at most {} s of work per request)",
            addresses.len(),
            SYMBOL_TIME.as_secs()
        );
        return r.with_header("X-Leakscope-Partial", &why);
    }
    r
}

/// The addresses of a symbol request: words joined by `+`, each parsed as
/// [`parse_address`] does; words that are not addresses are skipped, as Go
/// skips them.
pub(super) fn addresses(body: &[u8]) -> Vec<u64> {
    body.split(|&b| b == b'+')
        .filter_map(|word| std::str::from_utf8(word).ok().and_then(parse_address))
        .collect()
}

/// Go's `strconv.ParseUint(word, 0, 64)`: `0x` hex, `0o`/`0` octal, or
/// decimal; 0 counts as no address.
fn parse_address(word: &str) -> Option<u64> {
    let w = word.trim();
    let v = if let Some(hex) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = w.strip_prefix("0o") {
        u64::from_str_radix(oct, 8).ok()
    } else if w.len() > 1 && w.starts_with('0') {
        u64::from_str_radix(&w[1..], 8).ok()
    } else {
        w.parse().ok()
    };
    v.filter(|&v| v != 0)
}

/// The function name at `pc` (the outermost of its inlined frames, as Go's
/// `FuncForPC` names the real function), with its path, as every other
/// output names it.
fn resolve(pc: u64) -> Option<String> {
    // Symbolizers take a return address and look up the byte before it;
    // pprof sends the address to look up itself (our profiles' locations
    // are already return address minus one).
    let pc = usize::try_from(pc).ok()?.checked_add(1)?;
    crate::profile::function_at(pc)
}

/// `/debug/pprof/`: Go's index page, with the profiles this endpoint has.
pub(super) fn index() -> Response {
    let body = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>/debug/pprof/</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}a{color:#0969da}
td{padding:.3em 1em .3em 0;vertical-align:top}.profile-name{font-family:ui-monospace,monospace}</style>
</head><body>
<h1>/debug/pprof/</h1>
<p>Heap profiles of this process, recorded by leakscope. Fetch them with
<code>go tool pprof http://HOST/debug/pprof/heap</code>.</p>
<table>
<tr><td><a class="profile-name" href="allocs">allocs</a></td><td>A sampling of all past memory allocations (default sample type <code>alloc_space</code>).</td></tr>
<tr><td><a class="profile-name" href="heap">heap</a></td><td>A sampling of memory allocations of live objects (default sample type <code>inuse_space</code>). Add <code>?seconds=N</code> for the growth over the next N seconds, <code>?debug=1</code> for a text report.</td></tr>
<tr><td><a class="profile-name" href="heap?debug=1">heap?debug=1</a></td><td>The text report: top sites by live bytes, with their stacks.</td></tr>
<tr><td><a class="profile-name" href="symbol">symbol</a></td><td>Go's symbol service: POST addresses joined by <code>+</code>.</td></tr>
<tr><td><a class="profile-name" href="../leakscope">leakscope</a></td><td>The leak dashboard: what grows, a chart of live bytes over time, the flame graph.</td></tr>
<tr><td><a class="profile-name" href="/metrics">/metrics</a></td><td>Prometheus metrics of the heap and its top sites.</td></tr>
</table>
</body></html>
"#;
    Response::ok("text/html; charset=utf-8", body)
}

/// `/debug/leakscope/flamegraph.svg`: live bytes per stack.
pub(super) fn flamegraph() -> Response {
    let mut body = Vec::new();
    match snapshot().write_flamegraph(&mut body) {
        Ok(()) => Response::ok("image/svg+xml", body),
        Err(e) => Response::go_error(500, &format!("could not draw the flame graph: {e}")),
    }
}

/// `/debug/leakscope/snapshot.json`: the versioned JSON schema.
pub(super) fn json() -> Response {
    let mut body = Vec::new();
    match snapshot().write_json(&mut body) {
        Ok(()) => Response::ok("application/json", body)
            .with_header("Content-Disposition", "inline; filename=\"snapshot.json\""),
        Err(e) => Response::go_error(500, &format!("could not write the snapshot: {e}")),
    }
}

/// `/debug/leakscope/dhat.json`: for DHAT's viewer.
pub(super) fn dhat() -> Response {
    let mut body = Vec::new();
    match snapshot().write_dhat(&mut body) {
        Ok(()) => Response::ok("application/json", body).with_header(
            "Content-Disposition",
            "attachment; filename=\"dhat-heap.json\"",
        ),
        Err(e) => Response::go_error(500, &format!("could not write the DHAT file: {e}")),
    }
}

/// `/metrics`.
pub(super) fn metrics(top_sites: usize) -> Response {
    let mut body = Vec::new();
    match crate::metrics::write_prometheus(&mut body, top_sites) {
        Ok(()) => Response::ok(crate::metrics::CONTENT_TYPE, body),
        Err(e) => Response::go_error(500, &format!("could not write the metrics: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_requests_are_bounded() {
        let pc = symbol_requests_are_bounded as fn() as usize as u64;
        // Too many addresses: a 413 with the reason, before any work.
        let many = vec![format!("{pc:#x}"); MAX_SYMBOL_ADDRESSES + 1].join("+");
        let r = symbol_bytes(many.as_bytes(), &|| false);
        assert_eq!(r.status(), 413);
        assert!(String::from_utf8_lossy(r.body()).contains("at most 8192"));
        // At the cap: answered in full.
        let some = vec![format!("{pc:#x}"); 3].join("+");
        let r = symbol_bytes(some.as_bytes(), &|| false);
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("X-Leakscope-Partial"), None);
        assert_eq!(String::from_utf8_lossy(r.body()).lines().count(), 4);
        // Abandoned after two lookups: the two, and a header that says so.
        let asked = std::cell::Cell::new(0);
        let r = symbol_bytes(some.as_bytes(), &|| {
            asked.set(asked.get() + 1);
            asked.get() > 2
        });
        assert_eq!(r.status(), 200);
        assert_eq!(String::from_utf8_lossy(r.body()).lines().count(), 3);
        let partial = r.header("X-Leakscope-Partial").expect("marked partial");
        assert!(partial.starts_with("2 of 3 addresses"), "{partial}");
    }

    #[test]
    fn addresses_parse_as_go_parses_them() {
        assert_eq!(parse_address("0x10"), Some(16));
        assert_eq!(parse_address("16"), Some(16));
        assert_eq!(parse_address("020"), Some(16));
        assert_eq!(parse_address("0"), None);
        assert_eq!(parse_address("zz"), None);
        assert_eq!(parse_address(""), None);
    }

    #[test]
    fn symbol_names_a_function_of_ours() {
        let pc = addresses_parse_as_go_parses_them as fn() as usize as u64;
        let r = symbol_bytes(format!("{pc:#x}+junk+0").as_bytes(), &|| false);
        let text = String::from_utf8(r.body().to_vec()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("num_symbols: 1"));
        let line = lines.next().expect("one symbol line");
        assert!(line.starts_with(&format!("{pc:#x} ")), "{line}");
        assert!(line.contains("addresses_parse_as_go_parses_them"), "{line}");
        assert_eq!(lines.next(), None);
    }
}
