//! Profile data, built at query time and owned by the caller: [`Snapshot`],
//! [`Site`], [`Diff`], [`SiteDelta`], [`Frame`], and the symbolization that
//! turns a site's raw stack into frames. Nothing here is reachable from the
//! allocation path.

#[cfg(unix)]
mod atfork;
mod diff;
mod frame;
pub(crate) mod labels;
mod lock;
pub(crate) mod merge;
mod names;
mod notes;
mod site;
mod snapshot;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod startup;
mod symbolize;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod symtab;

pub use diff::{Diff, SiteDelta};
pub use frame::Frame;
pub use site::Site;
pub use snapshot::{Snapshot, snapshot};

pub(crate) use frame::owner;
pub(crate) use notes::{NO_FRAME_POINTERS, NO_SYMBOLS, binary_has_symbols, frame_pointers_missing};
pub(crate) use snapshot::{Summary, live_samples, summary};
pub(crate) use symbolize::SiteStack;
#[cfg(feature = "http")]
pub(crate) use symbolize::function_at;
#[cfg(feature = "pprof")]
pub(crate) use symbolize::linker_name;
#[cfg(feature = "http")]
pub(crate) use symbolize::release_symbolizer;
