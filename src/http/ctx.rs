//! [`Ctx`]: what a route needs besides the request, filled by the built-in
//! server or by [`respond`](super::respond). Its own file so the routes'
//! handlers (`profiles.rs`, `dashboard.rs`) and the table that calls them
//! (`routes.rs`) do not import each other.

use std::net::IpAddr;
use std::time::Duration;

use super::history::History;
use super::limits::Deltas;

/// What a request is answered with, besides its method and path.
pub(super) struct Ctx<'a> {
    pub(super) max_seconds: u64,
    pub(super) top_sites: usize,
    /// The server's own periodic summaries, for the dashboard's chart when
    /// no monitor runs.
    pub(super) history: Option<&'a History>,
    pub(super) deltas: &'a Deltas,
    /// The client, for the one-delta-per-client rule (`None`: unknown).
    pub(super) client: Option<IpAddr>,
    /// Sleeps for a delta profile; `false` when the answer is no longer
    /// wanted (see `abandoned`), which ends the sleep early.
    pub(super) sleep: &'a (dyn Fn(Duration) -> bool + Sync),
    /// Whether the answer is no longer wanted (the client went away, or the
    /// server is stopping): long work (the symbol service, a delta's sleep)
    /// checks it.
    pub(super) abandoned: &'a (dyn Fn() -> bool + Sync),
}
