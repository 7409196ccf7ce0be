//! Entry points for the fuzz targets (`fuzz/`, `scripts/fuzz.sh`): the
//! built-in server's parsing of untrusted bytes, without sockets or
//! rendering. Hidden from the docs; not part of the API.

use super::conn::{self, MAX_HEAD};
use super::pool::lane_of;
use super::profiles::addresses;
use super::query::profile_query;
use super::routes::retainers_format;

/// What the server does with `bytes` as the start of a request, before
/// routing it: the head parsed (as the event loop does, at most 16 KiB),
/// the token checked, the body's length read, the lane chosen, an error's
/// answer head built. `Ok(Some(n))`: a whole head of `n` bytes; `Ok(None)`:
/// not whole yet; `Err(status)`: the 4xx it is answered with. Never panics.
#[doc(hidden)]
pub fn request_head(bytes: &[u8]) -> Result<Option<usize>, u16> {
    let bytes = &bytes[..bytes.len().min(MAX_HEAD)];
    match conn::parse_head(bytes) {
        Ok(None) => Ok(None),
        Err(bad) => {
            let _ = conn::response_head(&bad);
            Err(bad.status())
        }
        Ok(Some(head)) => {
            let _ = head.authorized("s3cret");
            let _ = lane_of(&head.method, &head.target, 300);
            if let Some((_, query)) = head.target.split_once('?') {
                self::query(query);
            }
            match head.body_len() {
                Ok(_) => Ok(Some(head.len)),
                Err(bad) => Err(bad.status()),
            }
        }
    }
}

/// Every query-string and body parser of the routes on `query`: a
/// profile's `seconds`/`debug`/`gc`, a retainer scan's `format`, the symbol
/// service's addresses, and the lane choice. The status a profile route
/// answers (200 when the query is valid).
///
/// # Panics
///
/// If a valid query breaks Go's rules (a `seconds` outside 1..=300, or
/// `seconds` with `debug`): what the fuzzer looks for.
#[doc(hidden)]
pub fn query(query: &str) -> u16 {
    let _ = retainers_format(query);
    let _ = addresses(query.as_bytes());
    for path in ["/debug/pprof/heap", "/debug/pprof/symbol"] {
        let _ = lane_of("GET", &format!("{path}?{query}"), 300);
    }
    match profile_query(query, 300) {
        Ok(q) => {
            // What Go's rules promise of a valid query.
            assert!(q.seconds.is_none_or(|s| (1..=300).contains(&s)));
            assert!(!(q.debug && q.seconds.is_some()));
            200
        }
        Err(bad) => bad.status(),
    }
}
