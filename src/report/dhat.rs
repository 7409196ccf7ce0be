//! DHAT's JSON format (`dhatFileVersion` 2, heap mode), so that DHAT's viewer
//! `dh_view.html` (shipped with Valgrind) opens our profiles.
//!
//! The fields are those Valgrind's `dh_main.c` describes and dhat-rs writes.
//! leakscope keeps less per site than DHAT does, so some fields are filled in
//! from what we have; each such choice is stated on the field below.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;

use super::row::{Row, elapsed};
use crate::profile::Frame;
use crate::profile::{Diff, Snapshot};
use crate::recorder::Guard;

#[derive(Serialize)]
#[serde(bound(serialize = "I: Iterator<Item = Row>"))]
struct DhatJson<'a, I> {
    #[serde(rename = "dhatFileVersion")]
    version: u32,
    /// dh_view only shows it; dhat-rs's heap mode uses this name.
    mode: &'static str,
    verb: &'static str,
    /// Block lifetimes present: heap mode, so dh_view reads tl/mb/gb/eb.
    bklt: bool,
    /// Block accesses (reads/writes) are not recorded.
    bkacc: bool,
    tu: &'static str,
    #[serde(rename = "Mtu")]
    mtu: &'static str,
    /// Threshold (in `tu`) under which dh_view calls a lifetime short.
    tuth: u64,
    cmd: String,
    pid: u32,
    /// Time of the global maximum: we do not track it, so it is the time of
    /// the (later) snapshot, the same as `te`.
    tg: u64,
    /// The end of the profile, in µs since its start (see `times`).
    te: u64,
    pps: Pps<'a, I>,
    /// Frame strings; `fs` indexes into it. Entry 0 is DHAT's `[root]`.
    ftbl: Ftbl<'a>,
}

/// One program point (a call stack) in DHAT's terms.
#[derive(Serialize)]
struct PpJson {
    /// Bytes and blocks allocated here (for a diff: in between).
    tb: u64,
    tbk: u64,
    /// Total lifetime of the blocks, in µs. leakscope keeps no lifetimes of
    /// freed blocks, so this is 0 and dh_view's lifetime figures are empty.
    tl: u64,
    /// Maximum bytes and blocks live at once: not tracked per site, so the
    /// live figures at the snapshot (a lower bound).
    mb: u64,
    mbk: u64,
    /// Live at the global maximum: taken to be the snapshot.
    gb: u64,
    gbk: u64,
    /// Live at the end: the snapshot (for a diff, the growth).
    eb: u64,
    ebk: u64,
    /// Indexes into `ftbl`, innermost frame first.
    fs: Vec<usize>,
}

/// DHAT's frame string, as Valgrind writes it: `0xADDR: function (file:line)`.
fn frame_string(f: &Frame) -> String {
    match (f.file(), f.line()) {
        (Some(file), Some(line)) => format!("{:#x}: {} ({file}:{line})", f.address(), f.function()),
        (Some(file), None) => format!("{:#x}: {} ({file})", f.address(), f.function()),
        _ => format!("{:#x}: {}", f.address(), f.function()),
    }
}

fn positive(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// DHAT's frame table, filled while the program points are written (each
/// distinct frame string once), then written after them: JSON readers do not
/// care about the order of an object's fields.
#[derive(Default)]
struct FrameTable {
    strings: Vec<String>,
    index: HashMap<String, usize>,
}

impl FrameTable {
    fn index_of(&mut self, f: &Frame) -> usize {
        let s = frame_string(f);
        if let Some(&i) = self.index.get(&s) {
            return i;
        }
        self.strings.push(s.clone());
        self.index.insert(s, self.strings.len() - 1);
        self.strings.len() - 1
    }
}

/// The program points, made one at a time as the serializer asks for them.
struct Pps<'a, I> {
    /// Taken by the one `serialize` call (`Serialize` gets `&self`).
    rows: RefCell<Option<I>>,
    table: &'a RefCell<FrameTable>,
}

impl<I: Iterator<Item = Row>> Serialize for Pps<'_, I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rows = self.rows.borrow_mut().take().into_iter().flatten();
        s.collect_seq(rows.map(|r| {
            let mut table = self.table.borrow_mut();
            let fs = r.frames.iter().map(|f| table.index_of(f)).collect();
            // DHAT has no negative counts: a shrinking site of a diff shows
            // as holding nothing, with what it allocated in between.
            let (live, blocks) = (positive(r.inuse_space), positive(r.inuse_objects));
            PpJson {
                tb: positive(r.alloc_space),
                tbk: positive(r.alloc_objects),
                tl: 0,
                mb: live,
                mbk: blocks,
                gb: live,
                gbk: blocks,
                eb: live,
                ebk: blocks,
                fs,
            }
        }))
    }
}

/// The frame table, written after the program points filled it.
struct Ftbl<'a>(&'a RefCell<FrameTable>);

impl Serialize for Ftbl<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.borrow().strings.iter())
    }
}

/// Streams the document to the writer through a buffer (a report of a
/// million sites is never built whole in memory). A writer that fails
/// midway fails the report with [`Error::Io`](crate::Error::Io).
fn write(rows: impl Iterator<Item = Row>, te_us: u64, w: impl Write) -> Result<(), crate::Error> {
    let table = RefCell::new(FrameTable::default());
    table.borrow_mut().strings.push("[root]".to_string());
    let doc = DhatJson {
        version: 2,
        mode: "rust-heap",
        verb: "Allocated",
        bklt: true,
        bkacc: false,
        tu: "µs",
        mtu: "s",
        tuth: 10,
        cmd: std::env::args().collect::<Vec<_>>().join(" "),
        pid: std::process::id(),
        tg: te_us,
        te: te_us,
        pps: Pps {
            rows: RefCell::new(Some(rows)),
            table: &table,
        },
        ftbl: Ftbl(&table),
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, w);
    serde_json::to_writer(&mut out, &doc).map_err(|e| {
        if e.is_io() {
            crate::Error::Io(e.into())
        } else {
            crate::Error::Encode(format!("DHAT JSON: {e}"))
        }
    })?;
    out.flush()?;
    Ok(())
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Snapshot {
    /// Writes the snapshot in DHAT's JSON format (`dhatFileVersion` 2, heap
    /// mode), for DHAT's viewer `dh_view.html`.
    ///
    /// Each site is a program point: "total" is what it ever allocated, "at
    /// t-gmax" and "at t-end" are its live heap at the snapshot. leakscope
    /// does not track peaks or the lifetimes of freed blocks, so "max" shows
    /// the live figures (a lower bound) and lifetimes are 0. Times run from
    /// the birth of the oldest live recorded block to the snapshot.
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
    /// snap.write_dhat(&mut out)?;
    /// let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    /// assert_eq!(v["dhatFileVersion"], 2);
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn write_dhat<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| {
            // The only start time a snapshot knows is its oldest live block's.
            let te = self
                .sites()
                .iter()
                .filter_map(|s| s.oldest_age())
                .max()
                .unwrap_or_default();
            write(self.rows(), micros(te), w)
        })
    }
}

impl Diff {
    /// Writes the diff in DHAT's JSON format (`dhatFileVersion` 2, heap mode).
    ///
    /// "Total" is what each site allocated between the two snapshots, "at
    /// t-gmax" and "at t-end" its growth; sites that shrank show 0 there
    /// (DHAT has no negative figures). Times run from the base snapshot to
    /// the later one. See [`Snapshot::write_dhat`] for what is approximated.
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
    /// diff.write_dhat(std::io::sink())?;
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn write_dhat<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| {
            write(
                self.rows(),
                micros(elapsed(self.base_time(), self.time())),
                w,
            )
        })
    }
}
