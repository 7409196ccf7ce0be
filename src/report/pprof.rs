//! gzip-compressed `profile.proto`, laid out as Go's heap profiles are, so
//! that `go tool pprof`, Grafana Pyroscope and Parca read our profiles as
//! they read Go's.
//!
//! The messages are written by hand below (the subset of profile.proto we
//! fill, with its field numbers) rather than generated, so the crate needs no
//! build script and no `protoc`.

use std::collections::HashMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use super::text::{mode, process_notes};
use std::time::SystemTime;

use super::maps::{ElfInfo, Mapped, elf_info, read_maps};
use super::row::{Row, elapsed, unix_nanos};
use crate::profile::{Diff, Snapshot};
use crate::profile::{Frame, owner};
use crate::recorder::Guard;

/// The messages of pprof's `profile.proto` (package `perftools.profiles`).
/// Field numbers must match that file; unused fields are left out, which
/// protobuf allows.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        /// Index into the string table; 0 (empty) means the last sample type.
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ValueType {
        /// Index into the string table.
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Sample {
        /// Innermost (leaf) location first.
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        /// One value per `sample_type`, in that order.
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// 0 when no mapping holds the address.
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        /// Innermost (most inlined) first; the last is the real frame.
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
    }
}

/// The frames pprof gets: the leaf-end standard-library frames dropped, up to
/// the first frame outside it, as Go's heap profiles drop `mallocgc` and
/// `growslice`. Then the flat owner of a sample is the user's function that
/// called into `Vec`, `String` or `HashMap`. Because `frames` lists inlined
/// frames one by one, slicing also drops std frames inlined into that first
/// user location. A stack made of std frames only is kept whole, so no sample
/// is left without a location.
fn without_std_leaf(frames: &[Frame]) -> &[Frame] {
    match owner(frames).and_then(|o| frames.iter().position(|f| std::ptr::eq(f, o))) {
        Some(i) => &frames[i..],
        None => frames,
    }
}

/// What the profile as a whole is of.
struct Meta {
    sample_interval: u64,
    /// When the (later) snapshot was taken.
    time: SystemTime,
    /// For a `Diff`, when its base was taken.
    base_time: Option<SystemTime>,
}

/// Interns strings, functions and locations while samples are added.
struct Builder {
    profile: proto::Profile,
    strings: HashMap<String, i64>,
    /// By (name, system name, file): generic code has one linker symbol per
    /// instantiation, all with the same demangled name.
    functions: HashMap<(i64, i64, i64), u64>,
    /// Per return address: the linker symbol of its real frame, if any.
    linker_names: HashMap<usize, Option<String>>,
    /// By (return address, frames kept at that address): the same address
    /// keeps fewer inlined lines where it is the leaf end of a stack.
    locations: HashMap<(usize, usize), u64>,
    maps: Vec<Mapped>,
    /// Per mapping (same index): what all of its locations so far carry;
    /// `None` while no location uses it.
    symbolized: Vec<Option<Known>>,
}

/// Which pieces of symbol information a set of frames all have.
#[derive(Clone, Copy, Default)]
struct Known {
    functions: bool,
    filenames: bool,
    lines: bool,
}

impl Known {
    fn of(group: &[Frame]) -> Known {
        let all = |p: fn(&Frame) -> bool| !group.is_empty() && group.iter().all(p);
        Known {
            functions: all(is_named),
            filenames: all(|f| f.file().is_some()),
            lines: all(|f| f.line().is_some()),
        }
    }

    fn and(self, other: Known) -> Known {
        Known {
            functions: self.functions && other.functions,
            filenames: self.filenames && other.filenames,
            lines: self.lines && other.lines,
        }
    }
}

/// Whether the process resolved a name for `f`: symbolization names a frame
/// it could not resolve by its address in hex.
fn is_named(f: &Frame) -> bool {
    let hex = f
        .function()
        .strip_prefix("0x")
        .and_then(|h| usize::from_str_radix(h, 16).ok());
    hex != Some(f.address())
}

impl Builder {
    fn new(maps: Vec<Mapped>) -> Builder {
        let mut b = Builder {
            profile: proto::Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            linker_names: HashMap::new(),
            locations: HashMap::new(),
            maps,
            symbolized: Vec::new(),
        };
        // profile.proto: string_table[0] must be "".
        b.string("");
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.string(ty),
            unit: self.string(unit),
        }
    }

    fn add_mappings(&mut self) {
        let maps = std::mem::take(&mut self.maps);
        // Several mappings of one file (its text and, say, a relro part)
        // share one build id: read each file once.
        let mut infos: HashMap<&str, ElfInfo> = HashMap::new();
        let mut placed = Vec::with_capacity(maps.len());
        for (i, m) in maps.iter().enumerate() {
            let info = infos.entry(&m.path).or_insert_with(|| elf_info(&m.path));
            let m = m.at_segment(&info.exec_offsets);
            let id = info.build_id.clone();
            let mapping = proto::Mapping {
                id: i as u64 + 1,
                memory_start: m.start,
                memory_limit: m.limit,
                file_offset: m.offset,
                filename: self.string(&m.path),
                build_id: id.map_or(0, |id| self.string(&id)),
                // Set by `finish_mappings` once every location is known.
                ..Default::default()
            };
            self.profile.mapping.push(mapping);
            placed.push(m);
        }
        // Locations are placed in the mappings as written.
        self.maps = placed;
        self.symbolized = vec![None; self.profile.mapping.len()];
    }

    /// Sets each mapping's `has_*` flags from what its locations carry: a
    /// flag is true only when every location in the mapping has that piece
    /// (and false for a mapping no location uses). pprof re-symbolizes a
    /// mapping without `has_functions` from the binary (the one given on its
    /// command line for the first mapping, or one found by build id under
    /// `PPROF_BINARY_PATH`), and so do Parca and Pyroscope with debuginfod:
    /// claiming functions for a stripped binary would stop all of them.
    fn finish_mappings(&mut self) {
        for (m, known) in self.profile.mapping.iter_mut().zip(&self.symbolized) {
            let known = known.unwrap_or_default();
            m.has_functions = known.functions;
            m.has_filenames = known.filenames;
            m.has_line_numbers = known.lines;
            // Inlined frames come from the same DWARF as the lines.
            m.has_inline_frames = known.lines;
        }
    }

    fn mapping_of(&self, address: u64) -> u64 {
        self.maps
            .iter()
            .position(|m| m.start <= address && address < m.limit)
            .map_or(0, |i| i as u64 + 1)
    }

    /// The linker's (mangled) name of a frame, if the symbol table has it.
    ///
    /// It matters beyond completeness: pprof takes a function whose name
    /// equals its system name for not yet demangled and "simplifies" it as
    /// C++, cutting everything between `<` and `>`, so that
    /// `<Vec<T> as FromIterator<T>>::from_iter` would show as `::from_iter`.
    /// Without a linker name the system name stays empty, for that reason.
    ///
    /// Only real frames have one (an inlined function has no symbol of its
    /// own), taken from the symbol table read for full names.
    fn linker_name(&mut self, f: &Frame) -> Option<String> {
        if f.is_inlined() {
            return None;
        }
        self.linker_names
            .entry(f.address())
            .or_insert_with(|| crate::profile::linker_name(f.address(), f.function()))
            .clone()
    }

    fn function(&mut self, f: &Frame) -> u64 {
        let name = self.string(f.function());
        let system_name = self.linker_name(f).map_or(0, |raw| self.string(&raw));
        let file = f.file().map_or(0, |file| self.string(file));
        if let Some(&id) = self.functions.get(&(name, system_name, file)) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(proto::Function {
            id,
            name,
            system_name,
            filename: file,
        });
        self.functions.insert((name, system_name, file), id);
        id
    }

    /// The location of one address's frames (innermost first).
    fn location(&mut self, group: &[Frame]) -> u64 {
        let addr = group.last().map_or(0, Frame::address);
        if let Some(&id) = self.locations.get(&(addr, group.len())) {
            return id;
        }
        // Every address we hold is a return address (the leaf is the call
        // into the allocator, trimmed off). Minus one points into the call
        // instruction itself, which is what pprof, addr2line and Go's own
        // profiles use for a caller's frame: the return address can already
        // belong to the next line, or even the next function.
        let address = (addr as u64).saturating_sub(1);
        // A frame the process could not symbolize gets no line and no
        // function: the location is then the bare address in its mapping,
        // which a symbolizer with the binary can name later. (A function
        // named after the address would look symbolized to every reader.)
        let line = group
            .iter()
            .filter(|f| is_named(f))
            .map(|f| proto::Line {
                function_id: self.function(f),
                line: f.line().map_or(0, i64::from),
            })
            .collect();
        let id = self.profile.location.len() as u64 + 1;
        let mapping_id = self.mapping_of(address);
        if let Some(known) = mapping_id
            .checked_sub(1)
            .and_then(|i| self.symbolized.get_mut(i as usize))
        {
            let here = Known::of(group);
            *known = Some(known.map_or(here, |k| k.and(here)));
        }
        self.profile.location.push(proto::Location {
            id,
            mapping_id,
            address,
            line,
        });
        self.locations.insert((addr, group.len()), id);
        id
    }

    fn sample(&mut self, row: &Row) {
        let frames = without_std_leaf(&row.frames);
        let mut location_id = Vec::new();
        let mut start = 0;
        for (i, f) in frames.iter().enumerate() {
            // An address's frames end at its real (not inlined) frame; the
            // address check also copes with a group cut short by trimming.
            let last =
                !f.is_inlined() || frames.get(i + 1).is_none_or(|n| n.address() != f.address());
            if last {
                let id = self.location(&frames[start..=i]);
                location_id.push(id);
                start = i + 1;
            }
        }
        // The site's labels as string labels (`go tool pprof -tags`,
        // `-tagfocus=tenant=a`). No `site` id tag: in `-tags` it led with
        // one value per site (most of them 0 B in an inuse view), it changes
        // at every restart, and in pprof the stack itself names the site.
        let mut label = Vec::new();
        for (k, v) in row.labels.iter() {
            label.push(proto::Label {
                key: self.string(k),
                str: self.string(v),
                ..Default::default()
            });
        }
        self.profile.sample.push(proto::Sample {
            location_id,
            value: vec![
                row.alloc_objects,
                row.alloc_space,
                row.inuse_objects,
                row.inuse_space,
            ],
            label,
        });
    }
}

fn write(rows: impl Iterator<Item = Row>, meta: &Meta, w: impl Write) -> Result<(), crate::Error> {
    write_typed(rows, meta, "", w)
}

/// [`write`] with pprof's default sample type named (`""`: the last one,
/// `inuse_space`), as Go's `/debug/pprof/allocs` names `alloc_space`.
fn write_typed(
    rows: impl Iterator<Item = Row>,
    meta: &Meta,
    default_sample_type: &str,
    w: impl Write,
) -> Result<(), crate::Error> {
    let mut b = Builder::new(read_maps());
    // Go's heap profile order; pprof shows the last (inuse_space) by default.
    let sample_type = vec![
        b.value_type("alloc_objects", "count"),
        b.value_type("alloc_space", "bytes"),
        b.value_type("inuse_objects", "count"),
        b.value_type("inuse_space", "bytes"),
    ];
    b.profile.sample_type = sample_type;
    if !default_sample_type.is_empty() {
        b.profile.default_sample_type = b.string(default_sample_type);
    }
    b.profile.period_type = Some(b.value_type("space", "bytes"));
    b.profile.period = i64::try_from(meta.sample_interval).unwrap_or(i64::MAX);
    b.profile.time_nanos = i64::try_from(unix_nanos(meta.time)).unwrap_or(i64::MAX);
    if let Some(base) = meta.base_time {
        let d = elapsed(base, meta.time);
        b.profile.duration_nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    }
    let what = if meta.base_time.is_some() {
        "heap growth between two snapshots"
    } else {
        "heap snapshot"
    };
    let comment = b.string(&format!("leakscope {what}; {}", mode(meta.sample_interval)));
    b.profile.comment.push(comment);
    for note in process_notes() {
        let note = b.string(note);
        b.profile.comment.push(note);
    }
    b.add_mappings();
    for row in rows {
        b.sample(&row);
    }
    b.finish_mappings();
    let bytes = b.profile.encode_to_vec();
    let mut gz = GzEncoder::new(w, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?.flush()?;
    Ok(())
}

impl Snapshot {
    /// Writes the snapshot as a gzip-compressed pprof `profile.proto`, laid
    /// out as a Go heap profile, for `go tool pprof`, Grafana Pyroscope and
    /// Parca.
    ///
    /// Sample types, in Go's order: `alloc_objects/count`,
    /// `alloc_space/bytes`, `inuse_objects/count`, `inuse_space/bytes`
    /// (pprof shows the last by default); period type `space/bytes`, period
    /// the sample interval. One sample per site, labelled `site` with its id
    /// and with the site's labels (see [`with_labels`](crate::with_labels))
    /// as string labels, so `go tool pprof -tags` lists them and
    /// `-tagfocus=tenant=a` keeps one tenant.
    ///
    /// Every frame the process could symbolize carries its function name,
    /// file, line and inlined frames, so pprof needs no access to the binary.
    /// A frame it could not (a stripped binary) is written as its bare
    /// address in its mapping, read from `/proc/self/maps` with the file's
    /// offset and GNU build id, and the mapping's `has_functions`,
    /// `has_filenames` and `has_line_numbers` flags are true only when every
    /// location in it has that piece. pprof then symbolizes those mappings
    /// from the unstripped binary: `go tool pprof -top <unstripped binary>
    /// heap.pb.gz` (or a binary found by build id under `PPROF_BINARY_PATH`),
    /// and Parca or Pyroscope with debuginfod do the same server-side. As in Go's heap profiles, the standard-library frames at
    /// the leaf end (`RawVec::grow_one` and the like) are left out, so the
    /// flat owner of a sample is the function that called into the
    /// collection; [`Site::frames`](crate::Site::frames) keeps them. Location
    /// addresses are return addresses minus one, inside the call
    /// instruction, as pprof expects of a caller's frame.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the writer fails.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let file = std::fs::File::create("heap.pb.gz")?;
    /// leakscope::snapshot().write_pprof(file)?;
    /// // then: go tool pprof -http=:8080 heap.pb.gz
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_pprof<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| {
            let meta = Meta {
                sample_interval: self.sample_interval(),
                time: self.time(),
                base_time: None,
            };
            write(self.rows(), &meta, w)
        })
    }
}

impl Diff {
    /// Writes the diff as a gzip-compressed pprof `profile.proto`: the same
    /// layout as [`Snapshot::write_pprof`], with each value the change
    /// between the two snapshots (negative for a site that shrank), as
    /// `go tool pprof -base` would show it. `time_nanos` is the later
    /// snapshot's time and `duration_nanos` the time between the two.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the writer fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let base = leakscope::snapshot();
    /// let kept = vec![0u8; 4096];
    /// let diff = leakscope::snapshot().diff(&base);
    /// let mut out = Vec::new();
    /// diff.write_pprof(&mut out)?;
    /// assert_eq!(&out[..2], b"\x1f\x8b"); // gzip
    /// # drop(kept);
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn write_pprof<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| {
            let meta = Meta {
                sample_interval: self.sample_interval(),
                time: self.time(),
                base_time: Some(self.base_time()),
            };
            write(self.rows(), &meta, w)
        })
    }
}

/// The HTTP endpoint's entry (`/debug/pprof/heap` and `/allocs`): the
/// profile of a snapshot (`base` `None`, `duration_nanos` 0) or of the growth
/// since `base` (`duration_nanos` the time between the two), with pprof's
/// default sample type named (`""` for Go's default, the last type).
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn write_go_profile(
    now: &Snapshot,
    base: Option<&Snapshot>,
    default_sample_type: &str,
    w: impl Write,
) -> Result<(), crate::Error> {
    Guard::run(|| match base {
        None => {
            let meta = Meta {
                sample_interval: now.sample_interval(),
                time: now.time(),
                base_time: None,
            };
            write_typed(now.rows(), &meta, default_sample_type, w)
        }
        Some(base) => {
            let diff = now.diff(base);
            let meta = Meta {
                sample_interval: diff.sample_interval(),
                time: diff.time(),
                base_time: Some(diff.base_time()),
            };
            write_typed(diff.rows(), &meta, default_sample_type, w)
        }
    })
}
