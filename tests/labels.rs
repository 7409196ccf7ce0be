//! Context labels in exact mode: sites keyed by label set, `by_label`,
//! frees charged to the allocating labels, nesting and panics, and the
//! labels in pprof as `go tool pprof` reads them. Each test uses its own
//! label key, so the tests (threads of one process) do not see each
//! other's memory under their key.

use std::hint::black_box;
#[cfg(feature = "pprof")]
use std::path::Path;
use std::sync::Mutex;

mod common;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

#[cfg(feature = "pprof")]
const REQUESTS: usize = 200;
#[cfg(feature = "pprof")]
const BODY: usize = 1000;

#[cfg(feature = "pprof")]
static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// One test at a time: a panic's backtrace in one test is unlabelled
/// growth the two-tenants diff would see.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Both tenants' requests run through here; only tenant `a`'s are kept.
#[cfg(feature = "pprof")]
#[inline(never)]
fn handle_request(keep: bool) {
    // Not zeros: `vec![0; n]` takes `alloc_zeroed`, another call site.
    let body = black_box(vec![0xab_u8; BODY]);
    if keep {
        KEPT.lock().unwrap().push(body);
    }
}

#[cfg(feature = "pprof")]
#[test]
fn two_tenants_by_label_and_go_pprof_tags() {
    let _s = serial();
    // Room for the leak first, unlabelled, so the tenant's growth is its
    // bodies alone.
    KEPT.lock().unwrap().reserve_exact(REQUESTS);
    common::settle();
    let base = leakscope::snapshot();
    for _ in 0..REQUESTS {
        leakscope::with_labels(&[("tenant", "a")], || handle_request(true));
        leakscope::with_labels(&[("tenant", "b")], || handle_request(false));
    }
    let now = leakscope::snapshot();
    let growth = now.diff(&base).by_label("tenant");
    assert_eq!(
        growth[0],
        ("a".to_string(), (REQUESTS * BODY) as i64),
        "{growth:?}"
    );
    let b = growth.iter().find(|(v, _)| v == "b");
    assert_eq!(b, Some(&("b".to_string(), 0)), "{growth:?}");
    // The text report's stack header of the leaking site names its label.
    let text = now.diff(&base).to_string();
    assert!(text.contains(", tenant=a):"), "{text}");

    let live = now.by_label("tenant");
    // (Largest first: the unlabelled rest of the process may be larger.)
    assert!(live.windows(2).all(|w| w[0].1 >= w[1].1), "{live:?}");
    assert_eq!(
        live.iter().find(|(v, _)| v == "a").map(|x| x.1),
        Some((REQUESTS * BODY) as u64)
    );
    assert_eq!(live.iter().find(|(v, _)| v == "b").map(|x| x.1), Some(0));
    // Unlabelled memory (the test harness, `KEPT`'s buffer) is under "".
    assert!(live.iter().any(|(v, b)| v.is_empty() && *b > 0), "{live:?}");

    // The same function, two sites: one per tenant.
    let sites: Vec<_> = common::sites_through(&now, "handle_request")
        .map(|s| (s.labels().to_vec(), s.live_bytes(), s.total_bytes()))
        .collect();
    let label = |v: &str| vec![("tenant".to_string(), v.to_string())];
    assert!(sites.contains(&(
        label("a"),
        (REQUESTS * BODY) as u64,
        (REQUESTS * BODY) as u64
    )));
    assert!(
        sites.contains(&(label("b"), 0, (REQUESTS * BODY) as u64)),
        "{sites:?}"
    );

    let dir = tempfile::Builder::new()
        .prefix("leakscope-labels-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("heap.pb.gz");
    now.write_pprof(std::fs::File::create(&path).unwrap())
        .unwrap();
    // Tenant `b` holds nothing live, so list the tags of what was allocated.
    let tags = pprof(&["-tags", "-sample_index=alloc_space"], &path);
    let tenant = tags
        .split("\n\n")
        .find(|block| block.trim_start().starts_with("tenant:"))
        .unwrap_or_else(|| panic!("no tenant tag in:\n{tags}"));
    assert!(
        tenant.lines().any(|l| l.trim_end().ends_with(": a")),
        "{tenant}"
    );
    assert!(
        tenant.lines().any(|l| l.trim_end().ends_with(": b")),
        "{tenant}"
    );

    let top = |tag: &str| {
        pprof(
            &["-top", "-unit=B", &format!("-tagfocus=tenant={tag}")],
            &path,
        )
    };
    let flat_of = |text: &str| {
        text.lines()
            .find(|l| l.contains("handle_request"))
            .and_then(|l| {
                l.split_whitespace()
                    .next()?
                    .strip_suffix('B')?
                    .parse::<u64>()
                    .ok()
            })
    };
    let a = top("a");
    assert_eq!(flat_of(&a), Some((REQUESTS * BODY) as u64), "{a}");
    let b = top("b");
    assert_eq!(flat_of(&b), None, "tenant b holds nothing live:\n{b}");
}

#[inline(never)]
fn export_block() -> Vec<u8> {
    black_box(vec![0xee_u8; 4321])
}

#[test]
fn exports_carry_the_labels() {
    let _s = serial();
    let kept = leakscope::with_labels(&[("exp", "a"), ("exp_route", "/x")], export_block);
    let snap = leakscope::snapshot();
    // Collapsed stacks: the labels are the root frames, in key order.
    let mut out = Vec::new();
    snap.write_collapsed(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("export_block"))
        .unwrap_or_else(|| panic!("no export_block line in:\n{text}"));
    assert!(line.starts_with("exp=a;exp_route=/x;"), "{line}");
    assert!(line.ends_with(" 4321"), "{line}");
    #[cfg(feature = "json")]
    {
        let mut out = Vec::new();
        snap.write_json(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let site = v["sites"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["labels"]["exp"] == "a")
            .expect("a site labelled exp=a");
        assert_eq!(site["labels"]["exp_route"], "/x");
        assert_eq!(site["live_bytes"], 4321);
    }
    #[cfg(feature = "flamegraph")]
    {
        let mut out = Vec::new();
        snap.write_flamegraph(&mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.contains("exp=a"), "the flame graph has no label frame");
    }
    drop(kept);
}

/// `go tool pprof ARGS FILE` (see `common::go`).
#[cfg(feature = "pprof")]
fn pprof(args: &[&str], file: &Path) -> String {
    common::go::pprof_file(args, file)
}

#[inline(never)]
fn alloc_block() -> Vec<u8> {
    black_box(vec![0xcd_u8; 3000])
}

#[test]
fn a_free_elsewhere_is_charged_to_the_allocating_labels() {
    let _s = serial();
    let block = leakscope::with_labels(&[("freer", "x")], alloc_block);
    let before = leakscope::snapshot().by_label("freer");
    assert_eq!(
        before.iter().find(|(v, _)| v == "x").map(|x| x.1),
        Some(3000)
    );
    // Freed by a thread that has no labels at all.
    std::thread::spawn(move || drop(block)).join().unwrap();
    let after = leakscope::snapshot();
    let x = after
        .sites()
        .iter()
        .find(|s| s.labels() == [("freer".to_string(), "x".to_string())])
        .expect("the labelled site");
    assert_eq!((x.live_bytes(), x.total_bytes()), (0, 3000));
    assert_eq!(
        after
            .by_label("freer")
            .iter()
            .find(|(v, _)| v == "x")
            .map(|x| x.1),
        Some(0)
    );
}

#[test]
fn nested_labels_merge_and_restore_on_return_and_panic() {
    let _s = serial();
    let (outer, inner, after) = leakscope::with_labels(&[("nest", "o"), ("nest_k", "1")], || {
        let outer = alloc_block();
        let inner = leakscope::with_labels(&[("nest_k", "2"), ("nest_z", "z")], alloc_block);
        // A panic inside a nested scope still puts the outer set back. It
        // unwinds without the panic hook: with RUST_BACKTRACE set, the hook
        // captures and symbolizes a backtrace, and the debug info std keeps
        // cached for it (50 MiB) is charged, rightly, to `nest=p`, where it
        // outweighed the other tests' labels in their whole-process exports.
        let caught = std::panic::catch_unwind(|| {
            leakscope::with_labels(&[("nest", "p")], || {
                std::panic::resume_unwind(Box::new("inside"))
            })
        });
        assert!(caught.is_err());
        (outer, inner, alloc_block())
    });
    let unlabelled = alloc_block();
    let snap = leakscope::snapshot();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let live_with = |labels: Vec<(String, String)>| -> u64 {
        common::sites_through(&snap, "alloc_block")
            .filter(|s| s.labels() == labels.as_slice())
            .map(|s| s.live_bytes())
            .sum()
    };
    // `outer` and `after` share the outer set; `inner` has the merged one
    // (inner value of `nest_k`, sorted by key).
    assert_eq!(live_with(pairs(&[("nest", "o"), ("nest_k", "1")])), 6000);
    assert_eq!(
        live_with(pairs(&[("nest", "o"), ("nest_k", "2"), ("nest_z", "z")])),
        3000
    );
    // Back to no labels outside.
    assert!(live_with(Vec::new()) >= 3000);
    drop((outer, inner, after, unlabelled));
}

#[test]
fn labeled_has_the_auto_traits_of_its_future() {
    use leakscope::{Labeled, WithLabels};
    fn assert_send<T: Send>() {}
    fn assert_sync<T: Sync>() {}
    fn assert_unpin<T: Unpin>() {}
    assert_send::<Labeled<std::future::Ready<u8>>>();
    assert_sync::<Labeled<std::future::Ready<u8>>>();
    assert_unpin::<Labeled<std::future::Ready<u8>>>();
    // An `async` block holding a `Send` value is `Send` but not `Unpin`:
    // the wrapper keeps `Send` (the negative cases, `!Send` and `!Unpin`,
    // are `compile_fail` doctests on `Labeled`).
    fn send_value<T: Send>(_: &T) {}
    let v = String::from("kept across the await");
    let fut = async move { v.len() }.with_labels(&[("auto", "x")]);
    send_value(&fut);
}

#[cfg(feature = "metrics")]
#[test]
fn prometheus_label_series_are_the_top_values_and_the_overflow() {
    let _s = serial();
    let kept: Vec<Vec<u8>> = (1..=6)
        .map(|i| {
            let v = format!("v{i}");
            leakscope::with_labels(&[("prom", v.as_str())], || black_box(vec![1u8; 1000 * i]))
        })
        .collect();
    let mut out = Vec::new();
    leakscope::metrics::write_prometheus(&mut out, 3).unwrap();
    let text = String::from_utf8(out).unwrap();
    // (The family writes its series in no particular order.)
    let series: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("leakscope_label_live_bytes{key=\"prom\""))
        .collect();
    assert_eq!(
        series,
        std::collections::BTreeSet::from([
            "leakscope_label_live_bytes{key=\"prom\",value=\"v6\"} 6000",
            "leakscope_label_live_bytes{key=\"prom\",value=\"v5\"} 5000",
            "leakscope_label_live_bytes{key=\"prom\",value=\"v4\"} 4000",
            "leakscope_label_live_bytes{key=\"prom\",value=\"\",overflow=\"true\"} 6000",
        ]),
        "{text}"
    );
    drop(kept);
}

#[cfg(feature = "http")]
#[test]
fn dashboard_has_a_table_per_label_key_with_growth() {
    let _s = serial();
    let page = |kept: &[Vec<u8>]| {
        let _ = kept;
        let r = leakscope::http::respond("GET", "/debug/leakscope");
        assert_eq!(r.status(), 200);
        String::from_utf8(r.body().to_vec()).unwrap()
    };
    let mut kept = vec![leakscope::with_labels(&[("dash", "t1")], || {
        black_box(vec![1u8; 10_000])
    })];
    let first = page(&kept);
    assert!(first.contains("Live bytes by label"), "no label section");
    assert!(first.contains("<th>dash</th>"), "no table for the key");
    // Without a monitor there is no history to measure growth against.
    assert!(first.contains("for growth per label"), "{first}");
    // Growth is measured over the monitor's window, the same for every
    // viewer: a window of 20 x 50 ms holds a point before the second block.
    let monitor = leakscope::Monitor::start(
        leakscope::MonitorConfig::default()
            .interval(std::time::Duration::from_millis(50))
            .window(20),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    kept.push(leakscope::with_labels(&[("dash", "t1")], || {
        black_box(vec![1u8; 10_000])
    }));
    std::thread::sleep(std::time::Duration::from_millis(150));
    for _ in 0..2 {
        let page = page(&kept);
        let row = page
            .split("<tr>")
            .find(|r| r.starts_with("<td>t1</td>"))
            .expect("a row for t1");
        // 20 000 B live, grown by 10 000 B over the window, at every view.
        assert!(
            row.contains("19.5 KiB") && row.contains("+9.8 KiB"),
            "{row}"
        );
    }
    monitor.stop();
    drop(kept);
}

/// Keeps a large block (so its site is among a report's top rows).
#[inline(never)]
fn keep_for_table() -> Vec<u8> {
    black_box(vec![0xcd_u8; 4 << 20])
}

#[test]
fn the_text_tables_name_each_rows_labels() {
    let _s = serial();
    let base = leakscope::snapshot();
    let kept: Vec<Vec<u8>> = ["x", "y"]
        .iter()
        .map(|v| leakscope::with_labels(&[("table", v)], keep_for_table))
        .collect();
    let now = leakscope::snapshot();
    // The rows of `keep_for_table` in each table: one per tenant, each with
    // its site's label set in the table's `labels` column (not only in the
    // stacks below it).
    for text in [now.to_string(), now.diff(&base).to_string()] {
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("function"))
            .take_while(|l| !l.is_empty())
            .collect();
        assert!(table[0].trim_end().ends_with("labels"), "{text}");
        let mut cells: Vec<&str> = table
            .iter()
            .filter(|l| l.contains("keep_for_table"))
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        cells.sort();
        assert_eq!(cells, ["table=x", "table=y"], "{text}");
    }
    drop(kept);
}
