//! The per-site view every export format reads, and the time helpers the
//! formats share. Apart from `mod.rs`, which only declares the formats, so
//! that a format and the module list never import each other.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::profile::Frame;
use crate::profile::{Diff, Snapshot};

/// One site as the exports see it: the four Go heap-profile values, for a
/// `Snapshot` the counters, for a `Diff` their deltas (which may be negative).
// Which fields are read depends on the enabled export features.
#[cfg_attr(not(all(feature = "pprof", feature = "json")), allow(dead_code))]
pub(crate) struct Row {
    /// The site's frames: shared with the site when it has them already,
    /// otherwise symbolized for this row only and dropped after it (an
    /// export goes through every site once and must not keep them all).
    pub(crate) frames: Arc<[Frame]>,
    /// The site's labels, sorted by key (empty when unlabelled).
    pub(crate) labels: Arc<[(String, String)]>,
    /// Allocations made (`alloc_objects`).
    pub(crate) alloc_objects: i64,
    /// Bytes allocated (`alloc_space`).
    pub(crate) alloc_space: i64,
    /// Live allocations (`inuse_objects`).
    pub(crate) inuse_objects: i64,
    /// Live bytes (`inuse_space`): what the collapsed stacks, the flame graph
    /// and DHAT's "at t-end" show.
    pub(crate) inuse_space: i64,
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Snapshot {
    /// The rows, made one at a time as an export asks for them.
    pub(crate) fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.sites().iter().map(|s| Row {
            frames: s.stack().frames_once(),
            labels: s.stack().labels_shared(),
            alloc_objects: clamp(s.total_allocs()),
            alloc_space: clamp(s.total_bytes()),
            inuse_objects: clamp(s.live_allocs()),
            inuse_space: clamp(s.live_bytes()),
        })
    }
}

impl Diff {
    /// The rows, made one at a time as an export asks for them.
    pub(crate) fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.sites().iter().map(|d| Row {
            frames: d.stack().frames_once(),
            labels: d.stack().labels_shared(),
            alloc_objects: d.total_allocs_delta(),
            alloc_space: d.total_bytes_delta(),
            inuse_objects: d.live_allocs_delta(),
            inuse_space: d.live_bytes_delta(),
        })
    }
}

/// Nanoseconds since the Unix epoch (0 for a clock set before 1970).
#[cfg_attr(not(any(feature = "pprof", feature = "json")), allow(dead_code))]
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `later - earlier`, zero if the clock went backwards.
#[cfg_attr(not(any(feature = "pprof", feature = "json")), allow(dead_code))]
pub(crate) fn elapsed(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}
