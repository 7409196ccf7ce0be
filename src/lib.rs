//! # leakscope
//!
//! A heap-growth profiler for Rust programs that stays switched on in
//! production. Install [`Tracker`] as the global allocator; at any moment ask
//! which call stacks hold the live heap ([`snapshot()`]) and which of them
//! grew since a moment ago ([`Snapshot::diff`]).
//!
//! ## Quick start
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();
//!
//! fn main() {
//!     let before = leakscope::snapshot();
//!     // ... run the workload ...
//!     let after = leakscope::snapshot();
//!     println!("{}", after.diff(&before)); // the sites that grew, largest first
//! }
//! ```
//!
//! ## How it works
//!
//! Allocations are sampled as a Poisson process over bytes (mean interval
//! 512 KiB by default, like Go and jemalloc); each sampled block carries the
//! weight that makes per-site estimates unbiased. A sample interval of 1
//! records every allocation exactly. A recorded block gets a small header in
//! front of it, so freeing it needs no table lookup, and an unrecorded block
//! is recognised by a single compare. Counters are kept per thread and summed
//! when a snapshot is taken; stacks are symbolized only when a report asks.
//!
//! ## Finding a leak
//!
//! Take a snapshot, let the program run, take another, and read the diff: a
//! logical leak (a global `Vec` that only grows, a cache never evicted, a
//! `Box::leak` in a loop) shows up as the stack whose live bytes keep growing.
//!
//! Or let the process watch itself: a [`Monitor`] summarises per-site live
//! bytes every interval and names the sites that keep growing ([`Suspect`]),
//! and [`Snapshot::live_older_than`] shows the memory held longest. In tests,
//! [`assert_no_leaks`] and [`LeakCheck`] report what a piece of code left
//! behind.

#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod error;
#[cfg(feature = "http")]
pub mod http;
mod labels;
mod leaks;
#[cfg(feature = "metrics")]
pub mod metrics;
/// Span fields as allocation labels (feature `tracing`): [`LabelLayer`](tracing::LabelLayer).
#[cfg(feature = "tracing")]
pub mod tracing {
    pub use crate::labels::layer::LabelLayer;
}
mod profile;
mod recorder;
mod report;
pub(crate) mod retainers;

/// The README's snippets, compiled as doctests so every one a user pastes
/// builds (`cargo test` runs them; `no_run` where they install a global
/// allocator). The README shows the default features, so it is checked
/// with them.
#[doc = include_str!("../README.md")]
#[cfg(all(doctest, feature = "pprof", feature = "flamegraph", feature = "json"))]
pub struct ReadmeDoctests;

pub use error::Error;
pub use labels::{Labeled, WithLabels, with_labels};
pub use leaks::{
    LeakCheck, Monitor, MonitorConfig, MonitorStatus, SiteHistory, Suspect, assert_no_leaks,
};
pub use profile::labels::{MAX_LABEL_BYTES, MAX_LABEL_LEN};
pub use profile::{Diff, Frame, Site, SiteDelta, Snapshot, snapshot};
pub use recorder::{
    DEFAULT_MAX_LABEL_SETS, DEFAULT_MAX_SITES, DEFAULT_SAMPLE_INTERVAL, MAX_SITES_LIMIT, Tracker,
    Unwinder, set_sample_interval,
};
pub use retainers::{
    RetainerOptions, RetainerPath, Retainers, Root, RootRetained, SiteRetainers, UnreachableLeak,
    retainers, retainers_with,
};
