//! Reports: everything here runs at query time, never on the allocation path.
//! Each export format is an inherent `write_*` method on `Snapshot` and
//! `Diff`, in its own file, behind the cargo feature that names it.
//!
//! Every format reads the same per-site rows (`row.rs`), so a `Snapshot` and a
//! `Diff` go through one code path per format and cannot drift apart.

mod collapsed;
#[cfg(feature = "json")]
mod dhat;
#[cfg(feature = "flamegraph")]
mod flamegraph;
#[cfg(feature = "json")]
mod json;
#[cfg(feature = "pprof")]
mod maps;
#[cfg(feature = "pprof")]
mod pprof;
mod row;
pub(crate) mod text;

#[cfg(feature = "http")]
pub(crate) use pprof::write_go_profile;
