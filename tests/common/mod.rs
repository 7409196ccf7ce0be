//! Helpers shared by the core tests.
#![allow(dead_code)]

use leakscope::{Site, Snapshot};

/// Whether any frame of `site` is the function `name` (a path suffix match,
/// so `leak_here` matches `core_exact::leak_here`).
pub fn site_has(frames: &[leakscope::Frame], name: &str) -> bool {
    frames
        .iter()
        .any(|f| f.function() == name || f.function().ends_with(&format!("::{name}")))
}

/// Sum of live bytes over the sites whose stack passes through `name`.
pub fn live_bytes_through(snap: &Snapshot, name: &str) -> u64 {
    sites_through(snap, name).map(Site::live_bytes).sum()
}

/// Sum of live allocations over the sites whose stack passes through `name`.
pub fn live_allocs_through(snap: &Snapshot, name: &str) -> u64 {
    sites_through(snap, name).map(Site::live_allocs).sum()
}

pub fn sites_through<'a>(snap: &'a Snapshot, name: &'a str) -> impl Iterator<Item = &'a Site> + 'a {
    snap.sites()
        .iter()
        .filter(move |s| site_has(s.frames(), name))
}
