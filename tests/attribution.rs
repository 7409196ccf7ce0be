//! One leak, one row: raw stacks that differ only in return addresses
//! (several calls on one line, an unrolled loop) are one site, owned by the
//! program's function, in debug and release builds alike (`scripts/test.sh`
//! runs this file both ways).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use leakscope::{Monitor, MonitorConfig, SiteDelta};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

/// Serialises the tests of this file: each reads a whole-process diff.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn owned_by<'a>(sites: &'a [SiteDelta], name: &str) -> Vec<&'a SiteDelta> {
    sites
        .iter()
        .filter(|d| {
            d.owner().is_some_and(|f| {
                f.function() == name || f.function().ends_with(&format!("::{name}"))
            })
        })
        .collect()
}

#[inline(never)]
fn leak_row(kept: &mut Vec<Box<[u8]>>, n: usize) {
    kept.push(black_box(vec![7u8; n].into_boxed_slice()));
}

/// Four calls on one source line, in a loop: four return addresses, one
/// source-level stack.
#[rustfmt::skip]
#[inline(never)]
fn four_on_one_line(kept: &mut Vec<Box<[u8]>>, rounds: usize) {
    for _ in 0..rounds { leak_row(kept, 100); leak_row(kept, 100); leak_row(kept, 100); leak_row(kept, 100); }
}

#[test]
fn calls_on_one_line_are_one_site_with_the_exact_total() {
    let _s = serial();
    // Reserved up front, so the pushes never reallocate inside `leak_row`.
    let mut kept: Vec<Box<[u8]>> = Vec::with_capacity(4 * 500);
    let base = leakscope::snapshot();
    four_on_one_line(&mut kept, 500);
    let diff = leakscope::snapshot().diff(&base);
    let sites = owned_by(diff.sites(), "leak_row");
    assert_eq!(
        sites.len(),
        1,
        "one leak must be one site; got {}:\n{diff:#}",
        sites.len()
    );
    let site = sites[0];
    assert_eq!(site.live_bytes_delta(), 4 * 500 * 100, "{diff}");
    assert_eq!(site.live_allocs_delta(), 4 * 500);
    assert!(
        site.owner().unwrap().line().is_some(),
        "tests are built with line tables"
    );
    // The text report has one row for it.
    let text = diff.to_string();
    let table: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    let rows = table.iter().filter(|l| l.contains("leak_row")).count();
    assert_eq!(rows, 1, "{text}");
    drop(kept);
}

static CACHE: Mutex<Option<HashMap<u64, u64>>> = Mutex::new(None);

#[inline(never)]
fn grow_cache(from: u64, n: u64) {
    let mut cache = CACHE.lock().unwrap();
    let map = cache.get_or_insert_with(HashMap::new);
    for i in from..from + n {
        map.insert(i, i * 3);
    }
}

#[test]
fn a_growing_std_hashmap_is_owned_by_the_function_that_inserts() {
    let _s = serial();
    let base = leakscope::snapshot();
    grow_cache(0, 50_000);
    let diff = leakscope::snapshot().diff(&base);
    let grown: Vec<&SiteDelta> = diff
        .sites()
        .iter()
        .filter(|d| d.live_bytes_delta() > 0)
        .collect();
    let top = grown.first().expect("the map grew");
    let owner = top.owner().expect("an owner outside std");
    assert!(
        owner.function().ends_with("grow_cache"),
        "the map's table is charged to {}, not grow_cache:\n{diff:#}",
        owner.function()
    );
    // Nothing of hashbrown (std's copy) is an owner, and its frames count as
    // the standard library's.
    for d in diff.sites() {
        if let Some(o) = d.owner() {
            assert!(!o.function().contains("hashbrown"), "{diff:#}");
        }
        for f in d.frames() {
            if f.file().is_some_and(|p| p.contains("/hashbrown-")) {
                assert!(f.is_std_library(), "{f:?}");
            }
        }
    }
    let text = diff.to_string();
    let first_row = text.lines().nth(2).unwrap_or_default();
    assert!(first_row.contains("grow_cache"), "{text}");
}

/// One site's leak, split over four call sites, each growing by less than
/// the monitor's threshold.
#[rustfmt::skip]
#[inline(never)]
fn leak_split_four_ways(kept: &mut Vec<Box<[u8]>>) {
    leak_row(kept, 100_000); leak_row(kept, 100_000); leak_row(kept, 100_000); leak_row(kept, 100_000);
}

#[test]
fn the_monitor_judges_the_merged_series() {
    let _s = serial();
    let min_growth = 1 << 20;
    let monitor = Monitor::start(
        MonitorConfig::default()
            .interval(Duration::from_millis(100))
            .window(5)
            .min_growth_bytes(min_growth),
    )
    .unwrap();
    let mut kept: Vec<Box<[u8]>> = Vec::with_capacity(64);
    // 400 kB per interval in all, 100 kB per call site: over the window's
    // four intervals 1.6 MB in all, 400 kB per raw stack.
    let mut suspects = Vec::new();
    for _ in 0..14 {
        leak_split_four_ways(&mut kept);
        std::thread::sleep(Duration::from_millis(100));
        suspects = monitor.suspects();
        if suspects.iter().any(|s| {
            s.owner()
                .is_some_and(|f| f.function().ends_with("leak_row"))
        }) {
            break;
        }
    }
    let ours: Vec<_> = suspects
        .iter()
        .filter(|s| {
            s.owner()
                .is_some_and(|f| f.function().ends_with("leak_row"))
        })
        .collect();
    assert_eq!(ours.len(), 1, "{suspects:#?}");
    let s = ours[0];
    assert!(s.growth_bytes() >= min_growth as i64, "{s}");
    // The rate is the whole leak's (about 4 MB/s), not a quarter of it.
    assert!(s.growth_rate() > 2.0e6, "{s}");
    monitor.stop();
    drop(kept);
}
