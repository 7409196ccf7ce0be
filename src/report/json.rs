//! Our own JSON schema, versioned: for scripts, dashboards and diffing runs.
//!
//! The schema is documented on [`Snapshot::write_json`]; bump [`VERSION`]
//! on any change that a reader of version 1 could misread (a field renamed,
//! removed or given a new meaning). Adding a field is not such a change.

use std::io::Write;
use std::sync::Arc;

use serde::Serialize;

use super::row::{elapsed, unix_nanos};
use crate::profile::{Diff, Frame, Site, SiteDelta, Snapshot};
use crate::recorder::Guard;

/// `"format"` of every file we write, so a reader can tell ours from others.
const FORMAT: &str = "leakscope";
/// `"version"` of the schema.
const VERSION: u32 = 1;

#[derive(Serialize)]
struct SnapshotJson<S> {
    format: &'static str,
    version: u32,
    kind: &'static str,
    time_unix_nanos: u64,
    sample_interval: u64,
    exact: bool,
    totals: SnapshotTotals,
    /// [`SitesJson`].
    sites: S,
}

#[derive(Serialize)]
struct SnapshotTotals {
    live_bytes: u64,
    live_allocs: u64,
    total_bytes: u64,
    total_allocs: u64,
    tracker_bytes: u64,
}

#[derive(Serialize)]
struct SiteJson<'a> {
    id: u32,
    live_bytes: u64,
    live_allocs: u64,
    total_bytes: u64,
    total_allocs: u64,
    /// `null` when the site holds no live recorded block.
    oldest_age_nanos: Option<u64>,
    labels: LabelsJson<'a>,
    frames: FramesJson,
}

#[derive(Serialize)]
struct DiffJson<S> {
    format: &'static str,
    version: u32,
    kind: &'static str,
    time_unix_nanos: u64,
    base_time_unix_nanos: u64,
    duration_nanos: u64,
    sample_interval: u64,
    exact: bool,
    totals: DiffTotals,
    /// [`SiteDeltasJson`].
    sites: S,
}

#[derive(Serialize)]
struct DiffTotals {
    live_bytes_delta: i64,
    live_allocs_delta: i64,
}

#[derive(Serialize)]
struct SiteDeltaJson<'a> {
    id: u32,
    live_bytes_delta: i64,
    live_allocs_delta: i64,
    total_bytes_delta: i64,
    total_allocs_delta: i64,
    live_bytes: u64,
    live_allocs: u64,
    labels: LabelsJson<'a>,
    frames: FramesJson,
}

#[derive(Serialize)]
struct FrameJson<'a> {
    function: &'a str,
    file: Option<&'a str>,
    line: Option<u32>,
    /// Hex, so that 64-bit addresses survive JavaScript's doubles.
    address: String,
    inlined: bool,
    std: bool,
}

// The sequences below are serialized one item at a time, straight into
// the writer: a report of a million sites is never built whole in memory
// (each item is made, written and dropped in turn).

/// A site list, streamed.
struct SitesJson<'a>(&'a [Site]);

impl Serialize for SitesJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|s| SiteJson {
            id: s.id(),
            live_bytes: s.live_bytes(),
            live_allocs: s.live_allocs(),
            total_bytes: s.total_bytes(),
            total_allocs: s.total_allocs(),
            oldest_age_nanos: s.oldest_age().map(duration_nanos),
            labels: LabelsJson(s.labels()),
            frames: FramesJson(s.stack().frames_once()),
        }))
    }
}

/// A diff's site list, streamed.
struct SiteDeltasJson<'a>(&'a [SiteDelta]);

impl Serialize for SiteDeltasJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|d| SiteDeltaJson {
            id: d.id(),
            live_bytes_delta: d.live_bytes_delta(),
            live_allocs_delta: d.live_allocs_delta(),
            total_bytes_delta: d.total_bytes_delta(),
            total_allocs_delta: d.total_allocs_delta(),
            live_bytes: d.live_bytes(),
            live_allocs: d.live_allocs(),
            labels: LabelsJson(d.labels()),
            frames: FramesJson(d.stack().frames_once()),
        }))
    }
}

/// A site's labels, as one JSON object (keys are unique and sorted).
struct LabelsJson<'a>(&'a [(String, String)]);

impl Serialize for LabelsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// A stack, streamed. Owns its frames: for a site that had none symbolized
/// yet they were made for this site's entry only (see
/// `SiteStack::frames_once`), and go when it is written.
struct FramesJson(Arc<[Frame]>);

impl Serialize for FramesJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|f| FrameJson {
            function: f.function(),
            file: f.file(),
            line: f.line(),
            address: format!("{:#x}", f.address()),
            inlined: f.is_inlined(),
            std: f.is_std_library(),
        }))
    }
}

fn duration_nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Streams the document to the writer through a buffer. A writer that fails
/// midway fails the report with [`Error::Io`](crate::Error::Io), and what it
/// took so far is not a whole document.
fn write(value: &impl Serialize, w: impl Write) -> Result<(), crate::Error> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, w);
    serde_json::to_writer_pretty(&mut out, value).map_err(|e| {
        if e.is_io() {
            crate::Error::Io(e.into())
        } else {
            crate::Error::Encode(format!("JSON: {e}"))
        }
    })?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

impl Snapshot {
    /// Writes the snapshot as JSON in leakscope's own versioned schema.
    ///
    /// Version 1 of the schema (`kind` `"snapshot"`); every count is an
    /// estimate under sampling and exact when `sample_interval` is 1:
    ///
    /// ```text
    /// {
    ///   "format": "leakscope",        always this string
    ///   "version": 1,                 the schema version
    ///   "kind": "snapshot",           or "diff" (see Diff::write_json)
    ///   "time_unix_nanos": u64,       when the snapshot was taken
    ///   "sample_interval": u64,       mean bytes between samples; 1 = exact
    ///   "exact": bool,                sample_interval == 1
    ///   "totals": { "live_bytes", "live_allocs", "total_bytes", "total_allocs",
    ///               "tracker_bytes" },          all u64
    ///   "sites": [                    largest live_bytes first
    ///     { "id": u32, "live_bytes", "live_allocs", "total_bytes", "total_allocs": u64,
    ///       "oldest_age_nanos": u64 or null,    age of the oldest live block
    ///       "labels": { string: string },       the site's labels ({} if none)
    ///       "frames": [               innermost first, inlined frames expanded
    ///         { "function": string, "file": string or null, "line": u32 or null,
    ///           "address": "0x…" (the return address, hex),
    ///           "inlined": bool,      inlined into the next frame (same address)
    ///           "std": bool }         a standard-library frame
    ///       ] }
    ///   ]
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the writer fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let snap = leakscope::snapshot();
    /// let mut out = Vec::new();
    /// snap.write_json(&mut out)?;
    /// let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    /// assert_eq!(v["version"], 1);
    /// assert_eq!(v["totals"]["live_bytes"], snap.live_bytes());
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn write_json<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| {
            let doc = SnapshotJson {
                format: FORMAT,
                version: VERSION,
                kind: "snapshot",
                time_unix_nanos: unix_nanos(self.time()),
                sample_interval: self.sample_interval(),
                exact: self.sample_interval() <= 1,
                totals: SnapshotTotals {
                    live_bytes: self.live_bytes(),
                    live_allocs: self.live_allocs(),
                    total_bytes: self.total_bytes(),
                    total_allocs: self.total_allocs(),
                    tracker_bytes: self.tracker_bytes(),
                },
                sites: SitesJson(self.sites()),
            };
            write(&doc, w)
        })
    }
}

impl Diff {
    /// Writes the diff as JSON in leakscope's own versioned schema.
    ///
    /// Version 1 (`kind` `"diff"`); the fields shared with a snapshot
    /// (`format`, `version`, `time_unix_nanos`, `sample_interval`, `exact`,
    /// `labels`, `frames`) mean the same as in [`Snapshot::write_json`]:
    ///
    /// ```text
    /// {
    ///   "format": "leakscope", "version": 1, "kind": "diff",
    ///   "time_unix_nanos": u64,       the later snapshot
    ///   "base_time_unix_nanos": u64,  the base snapshot
    ///   "duration_nanos": u64,        between the two
    ///   "sample_interval": u64, "exact": bool,
    ///   "totals": { "live_bytes_delta", "live_allocs_delta" },   i64
    ///   "sites": [                    every site that changed, largest growth first
    ///     { "id": u32,
    ///       "live_bytes_delta", "live_allocs_delta": i64,   negative when it shrank
    ///       "total_bytes_delta", "total_allocs_delta": i64, allocated in between
    ///       "live_bytes", "live_allocs": u64,               in the later snapshot
    ///       "labels": { ... }, "frames": [ ... ] }
    ///   ]
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the writer fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let base = leakscope::snapshot();
    /// let diff = leakscope::snapshot().diff(&base);
    /// let mut out = Vec::new();
    /// diff.write_json(&mut out)?;
    /// let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    /// assert_eq!(v["kind"], "diff");
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn write_json<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| {
            let doc = DiffJson {
                format: FORMAT,
                version: VERSION,
                kind: "diff",
                time_unix_nanos: unix_nanos(self.time()),
                base_time_unix_nanos: unix_nanos(self.base_time()),
                duration_nanos: duration_nanos(elapsed(self.base_time(), self.time())),
                sample_interval: self.sample_interval(),
                exact: self.sample_interval() <= 1,
                totals: DiffTotals {
                    live_bytes_delta: self.live_bytes_delta(),
                    live_allocs_delta: self.live_allocs_delta(),
                },
                sites: SiteDeltasJson(self.sites()),
            };
            write(&doc, w)
        })
    }
}
