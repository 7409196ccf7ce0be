//! The HTTP endpoint (cargo feature `http`): Go's `/debug/pprof/*` for
//! `go tool pprof`, Pyroscope and Parca, the leak dashboard, and `/metrics`
//! for Prometheus.
//!
//! Two ways in:
//! - [`respond`]: framework-agnostic, method and path in, [`Response`] out,
//!   to mount in the web framework a service already runs (axum, actix,
//!   hyper, ...);
//! - [`serve`] / [`serve_with`]: a small built-in server (one event-loop
//!   thread over `mio` and a fixed render pool, no async runtime),
//!   loopback-only unless told otherwise, with an optional bearer token.
//!
//! Everything here runs under the tracker's reentrancy guard, and every
//! server thread holds it for its whole life: the endpoint never shows up
//! in its own profiles.
//!
//! # Examples
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();
//!
//! fn main() -> Result<(), leakscope::Error> {
//!     let server = leakscope::http::serve("127.0.0.1:6060")?;
//!     // go tool pprof -top http://127.0.0.1:6060/debug/pprof/heap
//!     // ... run the service ...
//!     server.stop();
//!     Ok(())
//! }
//! ```

mod chart;
mod conn;
mod ctx;
mod dashboard;
mod event_loop;
#[doc(hidden)]
pub mod fuzz;
mod history;
mod html;
mod limits;
mod options;
mod pool;
mod profiles;
mod query;
mod response;
mod routes;
mod server;
mod share;
mod shared;
mod thread;

pub use options::Options;
pub use response::Response;
pub use routes::respond;
pub use server::{Server, serve, serve_with};
