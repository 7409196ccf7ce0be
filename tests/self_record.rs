//! The tracker never records itself: reports and exports run under the
//! reentrancy guard, so taking them changes no site. One test in this file,
//! so no other test thread allocates between the two snapshots.

// The exports it takes need their features (all on by default).
#![cfg(all(feature = "pprof", feature = "flamegraph", feature = "json"))]

use std::io::{Write, sink};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

#[inline(never)]
fn keep(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("block {i:>40}")).collect()
}

#[test]
fn reports_and_exports_change_no_site() {
    let kept = keep(2000);
    let base = leakscope::snapshot();
    let diff = leakscope::snapshot().diff(&base);
    // libtest's main thread may still be booking this test for a moment.
    std::thread::sleep(std::time::Duration::from_millis(200));

    let before = leakscope::snapshot();
    let mut out = sink();
    write!(out, "{before}{before:#}{diff}{diff:#}").unwrap();
    before.write_pprof(sink()).unwrap();
    before.write_collapsed(sink()).unwrap();
    before.write_flamegraph(sink()).unwrap();
    before.write_json(sink()).unwrap();
    before.write_dhat(sink()).unwrap();
    diff.write_pprof(sink()).unwrap();
    diff.write_collapsed(sink()).unwrap();
    diff.write_flamegraph(sink()).unwrap();
    diff.write_json(sink()).unwrap();
    diff.write_dhat(sink()).unwrap();
    let _ = before.live_older_than(std::time::Duration::ZERO);
    let after = leakscope::snapshot();

    let changed = after.diff(&before);
    let moved: Vec<_> = changed
        .sites()
        .iter()
        .filter(|d| d.total_allocs_delta() != 0 || d.live_bytes_delta() != 0)
        .collect();
    assert!(moved.is_empty(), "the reports were recorded:\n{changed:#}");

    // And DHAT's viewer accepts the file: no two program points share a
    // frame list ("data file contains a repeated location").
    let mut dhat = Vec::new();
    after.write_dhat(&mut dhat).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&dhat).unwrap();
    let mut seen = std::collections::HashSet::new();
    for pp in doc["pps"].as_array().unwrap() {
        let fs = pp["fs"].to_string();
        assert!(seen.insert(fs.clone()), "repeated location {fs}");
    }
    drop(kept);
}
