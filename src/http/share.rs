//! One rendered export shared by every client that asks while it is still
//! being sent, so slow readers cost one copy of an answer, not one each.
//!
//! The exports (`snapshot.json`, `dhat.json`, `flamegraph.svg`) are rendered
//! whole (tens of MB at thousands of sites). Without sharing, 64 clients
//! reading a byte a second each held their own copy (RSS 66 -> 1455 MiB).
//! Here each export has a slot: a render in progress makes the others for
//! that export wait for it (one render at a time), and a render is handed
//! to later requests as long as some connection is still sending it (the
//! slot holds it weakly: when the last one is done, the memory goes) and it
//! is younger than [`MAX_SHARE_AGE`]; the answer then says how old it is in
//! an `Age` header. A well-behaved client asking alone always gets a fresh
//! render. So an export's memory is at most one copy per [`MAX_SHARE_AGE`]
//! of the longest send (`WRITE_TOTAL`, 60 s): at most three, whatever the
//! number of clients.

use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use super::response::Response;

/// The oldest render handed to a new request (then it renders afresh).
pub(super) const MAX_SHARE_AGE: Duration = Duration::from_secs(30);

/// One export's last render, held weakly.
pub(super) struct Slot(Mutex<Option<Render>>);

struct Render {
    at: Instant,
    status: u16,
    headers: Vec<(String, String)>,
    body: Weak<Vec<u8>>,
}

impl Slot {
    pub(super) const fn new() -> Slot {
        Slot(Mutex::new(None))
    }

    /// The render still being sent, if young enough, else `render()`'s.
    pub(super) fn get(&self, render: impl FnOnce() -> Response) -> Response {
        // Held while rendering: concurrent requests wait for this render
        // instead of making their own (a panic in `render` is caught by the
        // caller's `catch_unwind`; poisoning is ignored, the slot is only
        // ever replaced whole).
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = slot.as_ref() {
            let age = last.at.elapsed();
            if age < MAX_SHARE_AGE {
                if let Some(body) = last.body.upgrade() {
                    let mut headers = last.headers.clone();
                    headers.push(("Age".to_string(), age.as_secs().to_string()));
                    return Response::from_shared(last.status, headers, body);
                }
            }
        }
        let r = render();
        *slot = Some(Render {
            at: Instant::now(),
            status: r.status(),
            headers: r.headers().to_vec(),
            body: std::sync::Arc::downgrade(r.shared_body()),
        });
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_while_held_fresh_otherwise() {
        let slot = Slot::new();
        let mut n = 0;
        let mut render = || {
            n += 1;
            Response::ok("text/plain", format!("render {n}"))
        };
        let first = slot.get(&mut render);
        assert_eq!(first.body(), b"render 1");
        // Still held (being sent): the same bytes, no second render.
        let second = slot.get(&mut render);
        assert_eq!(second.body(), b"render 1");
        assert!(std::sync::Arc::ptr_eq(
            first.shared_body(),
            second.shared_body()
        ));
        assert_eq!(second.header("Age"), Some("0"));
        drop((first, second));
        // Nobody holds it: rendered afresh.
        let third = slot.get(&mut render);
        assert_eq!(third.body(), b"render 2");
        assert_eq!(third.header("Age"), None);
    }
}
