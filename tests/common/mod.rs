//! Helpers shared by the core tests.
#![allow(dead_code)]

pub mod go;
pub mod http;

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

/// Waits (up to a second) until no other thread allocates: libtest's main
/// thread still books the test it just started for a moment after the test
/// thread runs, which a whole-process check would see.
pub fn settle() {
    let mut last = leakscope::snapshot();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let now = leakscope::snapshot();
        let quiet = now.total_allocs() == last.total_allocs();
        last = now;
        if quiet {
            return;
        }
    }
}
