//! The export formats, checked with the clients that read them: `go tool
//! pprof` for pprof, an XML parser for the flame graph, serde for JSON, and
//! DHAT's viewer's field list for DHAT. Exact mode, so every figure is known
//! by construction.

#![cfg(all(feature = "pprof", feature = "flamegraph", feature = "json"))]

mod common;

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

/// Blocks leaked by `leak_here`, and their size: 64 MiB, far above anything
/// else this test process holds (even std's symbol cache, some 40 MiB once
/// a failing test has printed a backtrace), so it is the top site for sure.
const BLOCKS: usize = 1024;
const BLOCK: usize = 64 * 1024;
const LEAKED: u64 = (BLOCKS * BLOCK) as u64;

static LEAK: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Makes room for the leak first, so that `leak_here` allocates nothing but
/// its blocks (the outer `Vec` growing would add to its bytes).
#[inline(never)]
fn reserve_slots() {
    LEAK.lock().unwrap().reserve_exact(BLOCKS);
}

#[inline(never)]
fn leak_here() {
    let mut slots = LEAK.lock().unwrap();
    for _ in 0..BLOCKS {
        // Not zeros: `vec![0; n]` takes `alloc_zeroed`, another call site.
        slots.push(std::hint::black_box(vec![0xab; BLOCK]));
    }
}

/// The leak, made once for the whole file.
fn leak() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        reserve_slots();
        leak_here();
    });
}

/// Tests of this file run one at a time: a test's buffers (an SVG, a decoded
/// profile) would otherwise be live in another test's snapshot.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by `grow_here` between two snapshots of the diff tests.
static GROWN: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
/// Held before the diff's base and freed after it.
static SHRUNK: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const GROW_BLOCKS: usize = 64;
const GROW_BLOCK: usize = 8 * 1024;
const SHRINK_BLOCK: usize = 3 * 1024 * 1024;

#[inline(never)]
fn grow_here(out: &mut Vec<Vec<u8>>) {
    for _ in 0..GROW_BLOCKS {
        out.push(std::hint::black_box(vec![0xcd; GROW_BLOCK]));
    }
}

#[inline(never)]
fn shrink_here(out: &mut Vec<Vec<u8>>) {
    out.push(std::hint::black_box(vec![7u8; SHRINK_BLOCK]));
}

/// A diff in which `grow_here` grew by 512 KiB and `shrink_here` shrank by 3 MiB.
fn growth_diff() -> leakscope::Diff {
    let mut grown = GROWN.lock().unwrap();
    let mut shrunk = SHRUNK.lock().unwrap();
    grown.clear();
    grown.shrink_to_fit();
    grown.reserve_exact(GROW_BLOCKS);
    shrunk.clear();
    shrunk.reserve_exact(1);
    shrink_here(&mut shrunk);
    let base = leakscope::snapshot();
    shrunk.clear();
    grow_here(&mut grown);
    let now = leakscope::snapshot();
    now.diff(&base)
}

fn names_fn(frames: &[leakscope::Frame], name: &str) -> bool {
    frames.iter().any(|f| f.function().ends_with(name))
}

/// The live bytes of the sites whose stack goes through `name`.
fn site_bytes(snap: &leakscope::Snapshot, name: &str) -> u64 {
    snap.sites()
        .iter()
        .filter(|s| names_fn(s.frames(), name))
        .map(|s| s.live_bytes())
        .sum()
}

/// `name` in a scratch directory of its own, removed when the returned
/// guard is dropped.
fn temp_path(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("leakscope-exports-")
        .tempdir()
        .unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

/// `go tool pprof ARGS FILE` (see `common::go`).
fn pprof(args: &[&str], file: &Path) -> String {
    common::go::pprof_file(args, file)
}

/// The rows of `go tool pprof -top -unit=B`: (flat bytes, function).
fn top_rows(text: &str) -> Vec<(i64, String)> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 6 {
                return None;
            }
            let flat = cols[0].strip_suffix('B')?.parse().ok()?;
            Some((flat, cols[5..].join(" ")))
        })
        .collect()
}

#[test]
fn pprof_top_names_the_leaking_function_with_its_bytes() {
    let _s = serial();
    leak();
    let snap = leakscope::snapshot();
    assert_eq!(
        site_bytes(&snap, "leak_here"),
        LEAKED,
        "the tracker itself is off"
    );
    let (_scratch, path) = temp_path("snapshot.pb.gz");
    snap.write_pprof(std::fs::File::create(&path).unwrap())
        .unwrap();

    let top = pprof(
        &[
            "-top",
            "-sample_index=inuse_space",
            "-unit=B",
            "-nodecount=5",
        ],
        &path,
    );
    let rows = top_rows(&top);
    let (bytes, function) = rows.first().unwrap_or_else(|| panic!("no rows in:\n{top}"));
    assert!(
        function.ends_with("leak_here"),
        "top entry is not leak_here:\n{top}"
    );
    assert_eq!(*bytes, LEAKED as i64, "leak_here's flat bytes:\n{top}");
    assert!(top.contains("Type: inuse_space"), "{top}");

    let raw = pprof(&["-raw"], &path);
    assert!(
        raw.contains("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"),
        "the four sample types, in Go's order:\n{raw}"
    );
    assert!(raw.contains("PeriodType: space bytes"), "{raw}");
    assert!(raw.contains("Period: 1\n"), "{raw}");
}

#[test]
fn pprof_drops_std_frames_only_at_the_leaf_end() {
    let _s = serial();
    leak();
    let snap = leakscope::snapshot();
    // Oracle: the symbolized stack of the leak, innermost first, has std
    // frames (RawVec and friends) before leak_here.
    let site = snap
        .sites()
        .iter()
        .find(|s| names_fn(s.frames(), "leak_here"))
        .unwrap();
    assert!(
        site.frames()[0].is_std_library(),
        "expected std frames at the leaf: {:?}",
        site.frames()
    );
    let (_scratch, path) = temp_path("traces.pb.gz");
    snap.write_pprof(std::fs::File::create(&path).unwrap())
        .unwrap();
    // `-traces` prints each sample's stack, innermost first, with inlined
    // frames marked `(inline)`.
    let traces = pprof(&["-traces", "-sample_index=inuse_space"], &path);
    let trace = traces
        .split("-----------+-------------------------------------------------------")
        .find(|t| t.contains("leak_here"))
        .unwrap_or_else(|| panic!("no trace through leak_here:\n{traces}"));
    // A trace: label lines (`site: 12`), then the value and the leaf
    // function, then one function a line outwards.
    let functions: Vec<&str> = trace
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("site:"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert!(
        functions.first().is_some_and(|f| f.ends_with("leak_here")),
        "leaf is not leak_here:\n{trace}"
    );
    // Only the leaf end is cut: what lies outwards of leak_here stays.
    assert!(
        functions.iter().any(|f| f.ends_with("exports::leak")),
        "{trace}"
    );
    // Names arrive whole: with a system name equal to the name, pprof would
    // cut `<F as FnOnce<()>>::call_once` down to `::call_once`.
    assert!(
        functions.iter().all(|f| !f.starts_with("::")),
        "names cut short by pprof:\n{trace}"
    );
}

#[test]
fn pprof_of_a_diff_has_growth_and_shrinkage() {
    let _s = serial();
    let diff = growth_diff();
    let (_scratch, path) = temp_path("diff.pb.gz");
    diff.write_pprof(std::fs::File::create(&path).unwrap())
        .unwrap();
    let top = pprof(
        &[
            "-top",
            "-sample_index=inuse_space",
            "-unit=B",
            "-nodecount=50",
        ],
        &path,
    );
    let rows = top_rows(&top);
    let grew = rows.iter().find(|(_, f)| f.ends_with("grow_here"));
    assert_eq!(
        grew.map(|r| r.0),
        Some((GROW_BLOCKS * GROW_BLOCK) as i64),
        "{top}"
    );
    let shrank = rows.iter().find(|(_, f)| f.ends_with("shrink_here"));
    assert_eq!(shrank.map(|r| r.0), Some(-(SHRINK_BLOCK as i64)), "{top}");
    let raw = pprof(&["-raw"], &path);
    assert!(
        raw.contains("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"),
        "{raw}"
    );
}

#[test]
fn pprof_mappings_name_this_binary() {
    let _s = serial();
    leak();
    let (_scratch, path) = temp_path("mappings.pb.gz");
    leakscope::snapshot()
        .write_pprof(std::fs::File::create(&path).unwrap())
        .unwrap();
    let raw = pprof(&["-raw"], &path);
    let mappings = raw
        .split("Mappings\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no mappings:\n{raw}"));
    let exe = std::env::current_exe().unwrap();
    let first = mappings.lines().next().unwrap_or_default();
    assert!(
        first.contains(&exe.display().to_string()),
        "first mapping is not the main binary: {first}"
    );
    // The oracle for the build id is readelf's, when binutils are installed.
    if let Ok(out) = Command::new("readelf").arg("-n").arg(&exe).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(id) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
        {
            assert!(
                first.contains(id.trim()),
                "build id {id} missing from: {first}"
            );
        }
    }
    // Every location is symbolized, so pprof flags the mapping as such.
    assert!(first.contains("[FN]") || first.contains("FN"), "{first}");
}

#[test]
fn collapsed_values_add_up_to_the_live_bytes() {
    let _s = serial();
    leak();
    let snap = leakscope::snapshot();
    let mut out = Vec::new();
    snap.write_collapsed(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut sum = 0u64;
    let mut leak_bytes = 0u64;
    for line in text.lines() {
        let (stack, bytes) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let bytes: u64 = bytes
            .parse()
            .unwrap_or_else(|_| panic!("bad count in {line:?}"));
        assert!(bytes > 0, "{line}");
        sum += bytes;
        let frames: Vec<&str> = stack.split(';').collect();
        if frames.iter().any(|f| f.ends_with("leak_here")) {
            leak_bytes += bytes;
            // Outermost first: leak_here comes before the std frames it calls.
            let at = frames
                .iter()
                .position(|f| f.ends_with("leak_here"))
                .unwrap();
            assert!(
                frames[at + 1..].iter().any(|f| f.contains("alloc")),
                "{line}"
            );
        }
    }
    assert_eq!(sum, snap.live_bytes());
    assert_eq!(leak_bytes, LEAKED);
}

#[test]
fn collapsed_diff_shows_only_growth() {
    let _s = serial();
    let diff = growth_diff();
    let mut out = Vec::new();
    diff.write_collapsed(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let oracle: u64 = diff
        .sites()
        .iter()
        .map(|d| d.live_bytes_delta().max(0) as u64)
        .sum();
    let sum: u64 = text
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, oracle);
    let grow: u64 = text
        .lines()
        .filter(|l| l.contains("grow_here"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(grow, (GROW_BLOCKS * GROW_BLOCK) as u64);
    assert!(!text.contains("shrink_here"), "{text}");
}

#[test]
fn flamegraph_is_xml_and_names_the_leak() {
    let _s = serial();
    leak();
    let snap = leakscope::snapshot();
    let mut out = Vec::new();
    snap.write_flamegraph(&mut out).unwrap();
    let svg = String::from_utf8(out).unwrap();
    let doc = parse_svg(&svg);
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // inferno writes each box's tooltip as a <title>: "function (N bytes, P%)".
    let titles: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text())
        .collect();
    let leak_title = titles
        .iter()
        .find(|t| t.contains("leak_here"))
        .unwrap_or_else(|| panic!("no box for leak_here among {} boxes", titles.len()));
    let expected = format!("{} bytes", group_thousands(LEAKED));
    assert!(
        leak_title.contains(&expected),
        "{leak_title:?} lacks {expected:?}"
    );
    // The title gives the total and how it was measured.
    let text: String = doc
        .descendants()
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("Live heap:"), "no title");
    assert!(text.contains("exact"), "no sample interval in the title");
}

/// inferno's SVG starts with the SVG 1.1 DOCTYPE, which roxmltree refuses
/// unless asked.
fn parse_svg(svg: &str) -> roxmltree::Document<'_> {
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(svg, opt).unwrap_or_else(|e| panic!("not XML: {e}"))
}

/// inferno prints counts with thousands separators.
fn group_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn flamegraph_of_a_diff_and_of_nothing() {
    let _s = serial();
    let diff = growth_diff();
    let mut out = Vec::new();
    diff.write_flamegraph(&mut out).unwrap();
    let svg = String::from_utf8(out).unwrap();
    parse_svg(&svg);
    assert!(svg.contains("grow_here"));
    assert!(
        !svg.contains("shrink_here"),
        "a shrinking site in the growth graph"
    );

    // Nothing grew between two snapshots of the same moment.
    let snap = leakscope::snapshot();
    let none = snap.diff(&snap);
    let mut out = Vec::new();
    none.write_flamegraph(&mut out).unwrap();
    let svg = String::from_utf8(out).unwrap();
    parse_svg(&svg);
    assert!(svg.contains("Heap growth"), "{svg}");
}

/// Our JSON schema, version 1, as documented on `Snapshot::write_json`.
/// `deny_unknown_fields`: a field added without a doc change fails here.
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct SnapshotJson {
    format: String,
    version: u32,
    kind: String,
    time_unix_nanos: u64,
    sample_interval: u64,
    exact: bool,
    totals: Totals,
    sites: Vec<SiteJson>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Totals {
    live_bytes: u64,
    live_allocs: u64,
    total_bytes: u64,
    total_allocs: u64,
    tracker_bytes: u64,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct SiteJson {
    id: u32,
    live_bytes: u64,
    live_allocs: u64,
    total_bytes: u64,
    total_allocs: u64,
    oldest_age_nanos: Option<u64>,
    labels: std::collections::BTreeMap<String, String>,
    frames: Vec<FrameJson>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct FrameJson {
    function: String,
    file: Option<String>,
    line: Option<u32>,
    address: String,
    inlined: bool,
    std: bool,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct DiffJson {
    format: String,
    version: u32,
    kind: String,
    time_unix_nanos: u64,
    base_time_unix_nanos: u64,
    duration_nanos: u64,
    sample_interval: u64,
    exact: bool,
    totals: DiffTotals,
    sites: Vec<SiteDeltaJson>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct DiffTotals {
    live_bytes_delta: i64,
    live_allocs_delta: i64,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct SiteDeltaJson {
    id: u32,
    live_bytes_delta: i64,
    live_allocs_delta: i64,
    total_bytes_delta: i64,
    total_allocs_delta: i64,
    live_bytes: u64,
    live_allocs: u64,
    labels: std::collections::BTreeMap<String, String>,
    frames: Vec<FrameJson>,
}

#[test]
fn json_round_trips_and_matches_the_snapshot() {
    let _s = serial();
    leak();
    let snap = leakscope::snapshot();
    let mut out = Vec::new();
    snap.write_json(&mut out).unwrap();
    let doc: SnapshotJson = serde_json::from_slice(&out).unwrap();
    // Round trip: what we read back serializes to the same JSON value.
    let again: serde_json::Value = serde_json::to_value(&doc).unwrap();
    let original: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(again, original);

    assert_eq!(
        (doc.format.as_str(), doc.version, doc.kind.as_str()),
        ("leakscope", 1, "snapshot")
    );
    assert_eq!((doc.sample_interval, doc.exact), (1, true));
    assert_eq!(doc.totals.live_bytes, snap.live_bytes());
    assert_eq!(doc.totals.live_allocs, snap.live_allocs());
    assert_eq!(doc.totals.total_bytes, snap.total_bytes());
    assert_eq!(doc.sites.len(), snap.sites().len());
    for (j, s) in doc.sites.iter().zip(snap.sites()) {
        assert_eq!(
            (j.id, j.live_bytes, j.live_allocs, j.total_bytes),
            (s.id(), s.live_bytes(), s.live_allocs(), s.total_bytes())
        );
        assert_eq!(j.frames.len(), s.frames().len());
        for (jf, f) in j.frames.iter().zip(s.frames()) {
            assert_eq!(jf.function, f.function());
            assert_eq!(jf.line, f.line());
            assert_eq!(
                usize::from_str_radix(jf.address.trim_start_matches("0x"), 16).unwrap(),
                f.address()
            );
        }
    }
    let leak_sites: Vec<&SiteJson> = doc
        .sites
        .iter()
        .filter(|s| s.frames.iter().any(|f| f.function.ends_with("leak_here")))
        .collect();
    let bytes: u64 = leak_sites.iter().map(|s| s.live_bytes).sum();
    let allocs: u64 = leak_sites.iter().map(|s| s.live_allocs).sum();
    assert_eq!((bytes, allocs), (LEAKED, BLOCKS as u64));
    assert!(leak_sites.iter().all(|s| s.oldest_age_nanos.is_some()));
}

#[test]
fn json_of_a_diff_round_trips() {
    let _s = serial();
    let diff = growth_diff();
    let mut out = Vec::new();
    diff.write_json(&mut out).unwrap();
    let doc: DiffJson = serde_json::from_slice(&out).unwrap();
    let original: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(serde_json::to_value(&doc).unwrap(), original);
    assert_eq!(doc.kind, "diff");
    assert_eq!(doc.totals.live_bytes_delta, diff.live_bytes_delta());
    let by_fn = |name: &str| {
        doc.sites
            .iter()
            .filter(|s| s.frames.iter().any(|f| f.function.ends_with(name)))
            .map(|s| s.live_bytes_delta)
            .sum::<i64>()
    };
    assert_eq!(by_fn("grow_here"), (GROW_BLOCKS * GROW_BLOCK) as i64);
    assert_eq!(by_fn("shrink_here"), -(SHRINK_BLOCK as i64));
}

#[test]
fn dhat_has_the_fields_dh_view_reads() {
    let _s = serial();
    leak();
    let snap = leakscope::snapshot();
    let mut out = Vec::new();
    snap.write_dhat(&mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["dhatFileVersion"], 2);
    assert_eq!(v["mode"], "rust-heap");
    assert_eq!(v["verb"], "Allocated");
    assert_eq!(v["bklt"], true);
    assert_eq!(v["bkacc"], false);
    for key in ["tu", "Mtu", "cmd"] {
        assert!(v[key].is_string(), "{key}");
    }
    for key in ["tuth", "pid", "tg", "te"] {
        assert!(v[key].is_u64(), "{key}");
    }
    let ftbl: Vec<&str> = v["ftbl"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(ftbl[0], "[root]");
    let pps = v["pps"].as_array().unwrap();
    assert_eq!(pps.len(), snap.sites().len());
    let mut eb_sum = 0;
    let (mut leak_eb, mut leak_ebk) = (0, 0);
    for pp in pps {
        for key in ["tb", "tbk", "tl", "mb", "mbk", "gb", "gbk", "eb", "ebk"] {
            assert!(pp[key].is_u64(), "pp field {key} in {pp}");
        }
        let fs: Vec<usize> = pp["fs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as usize)
            .collect();
        assert!(
            fs.iter().all(|&i| i > 0 && i < ftbl.len()),
            "fs out of ftbl: {fs:?}"
        );
        eb_sum += pp["eb"].as_u64().unwrap();
        if fs.iter().any(|&i| ftbl[i].contains("leak_here")) {
            leak_eb += pp["eb"].as_u64().unwrap();
            leak_ebk += pp["ebk"].as_u64().unwrap();
        }
    }
    assert_eq!(eb_sum, snap.live_bytes());
    assert_eq!((leak_eb, leak_ebk), (LEAKED, BLOCKS as u64));
    // Frame strings as Valgrind writes them: "0xADDR: function (file:line)".
    assert!(
        ftbl[1..]
            .iter()
            .all(|f| f.starts_with("0x") && f.contains(": ")),
        "{ftbl:?}"
    );
}

/// A writer that fails, either at once or after `budget` bytes.
struct Failing {
    budget: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

type Export = fn(&leakscope::Snapshot, &mut dyn Write) -> Result<(), leakscope::Error>;

#[test]
fn a_failing_writer_gives_an_error_and_leaves_nothing_behind() {
    let _s = serial();
    leak();
    // A diff with growth: an empty report would write nothing, and a writer
    // that is never called cannot fail.
    let diff = growth_diff();
    let snap = leakscope::snapshot();
    let formats: [(&str, Export); 5] = [
        ("pprof", |s, w| s.write_pprof(w)),
        ("collapsed", |s, w| s.write_collapsed(w)),
        ("flamegraph", |s, w| s.write_flamegraph(w)),
        ("json", |s, w| s.write_json(w)),
        ("dhat", |s, w| s.write_dhat(w)),
    ];
    let mut first: HashMap<&str, Vec<u8>> = HashMap::new();
    for (name, export) in formats {
        let mut good = Vec::new();
        export(&snap, &mut good).unwrap();
        for budget in [0, 10, good.len() / 2] {
            match export(&snap, &mut Failing { budget }) {
                Err(leakscope::Error::Io(e)) => assert_eq!(e.to_string(), "disk full", "{name}"),
                other => panic!("{name} with a writer failing after {budget} bytes gave {other:?}"),
            }
        }
        first.insert(name, good);
    }
    assert!(diff.write_pprof(Failing { budget: 0 }).is_err());
    assert!(diff.write_collapsed(Failing { budget: 0 }).is_err());
    assert!(diff.write_flamegraph(Failing { budget: 0 }).is_err());
    assert!(diff.write_json(Failing { budget: 0 }).is_err());
    assert!(diff.write_dhat(Failing { budget: 0 }).is_err());
    // The failures changed nothing: the same snapshot writes the same bytes
    // (every format is a pure function of the snapshot and the process).
    for (name, export) in formats {
        let mut again = Vec::new();
        export(&snap, &mut again).unwrap();
        assert!(again == first[name], "{name} differs after a failed write");
    }
}
