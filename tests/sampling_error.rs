//! Sample counts and 95% intervals against the truth: under sampling, a
//! site's interval (and a diff row's) holds the true figure for at least 90%
//! of sites, the text report shows them with the sample count in its header,
//! and a change within noise is marked.

use std::hint::black_box;

use leakscope::Snapshot;

/// A small interval, so that 400 sites of tens of samples each fit in a few
/// tens of megabytes.
#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(4096);

const SITES: usize = 400;
const BLOCK: usize = 256;

#[inline(never)]
fn keep(into: &mut Vec<Box<[u8]>>, blocks: usize) {
    for _ in 0..blocks {
        into.push(black_box(vec![1u8; BLOCK].into_boxed_slice()));
    }
}

/// One call path for every allocation of site `i` (so before and after the
/// base it is the same site).
#[inline(never)]
fn keep_as(i: usize, into: &mut Vec<Box<[u8]>>, blocks: usize) {
    leakscope::with_labels(&[("tenant", &tenant(i))], || keep(into, blocks));
}

/// Adds `blocks(i)` blocks to every site, from one call path (a site is its
/// whole stack: a second call line would make other sites).
#[inline(never)]
fn fill(stores: &mut [Vec<Box<[u8]>>], blocks: &dyn Fn(usize) -> usize) {
    for (i, store) in stores.iter_mut().enumerate() {
        keep_as(i, store, blocks(i));
    }
}

fn tenant(i: usize) -> String {
    format!("t{i:03}")
}

fn site_of(snap: &Snapshot, i: usize) -> Option<&leakscope::Site> {
    let t = tenant(i);
    snap.sites().iter().find(|s| {
        s.frames().iter().any(|f| f.function().contains("keep"))
            && s.labels().iter().any(|(k, v)| k == "tenant" && *v == t)
    })
}

/// Blocks of site `i` before the base snapshot: 64..640 (16..160 KiB, about
/// 4 to 40 samples at 4 KiB).
fn before(i: usize) -> usize {
    64 * (1 + i % 10)
}

/// Blocks added after the base (0 for every fifth site: a change of 0).
fn added(i: usize) -> usize {
    if i.is_multiple_of(5) {
        0
    } else {
        32 * (i % 7 + 1)
    }
}

/// Blocks freed after the base (from the oldest), then as many re-allocated
/// for the sites that add none: churn with no change.
fn churned(i: usize) -> usize {
    before(i) / 2
}

#[test]
fn intervals_hold_the_truth_for_at_least_90_percent_of_sites() {
    let mut stores: Vec<Vec<Box<[u8]>>> = (0..SITES)
        .map(|i| Vec::with_capacity(before(i) + added(i) + 8))
        .collect();
    // One call line for both phases: a site is its whole stack, so a second
    // line calling `fill` would make other sites.
    let mut base = None;
    for phase in 0..2 {
        if phase == 1 {
            // Free the oldest half; re-allocate it where nothing is added
            // (churn), add more elsewhere.
            for (i, store) in stores.iter_mut().enumerate() {
                store.drain(..churned(i));
            }
        }
        let blocks = |i| match phase {
            0 => before(i),
            _ if added(i) == 0 => churned(i),
            _ => added(i),
        };
        fill(&mut stores, &blocks);
        if phase == 0 {
            base = Some(leakscope::snapshot());
        }
    }
    let base = base.unwrap();
    let mut held = 0;
    for i in 0..SITES {
        let site = site_of(&base, i);
        let truth = (before(i) * BLOCK) as u64;
        let Some(site) = site else {
            continue; // no sample at all: not a "sampled site"
        };
        let (low, high) = site.live_bytes_interval();
        assert!(low <= site.live_bytes() && site.live_bytes() <= high);
        assert!(site.samples() > 0);
        held += usize::from(low <= truth && truth <= high);
    }
    let sampled = (0..SITES).filter(|&i| site_of(&base, i).is_some()).count();
    eprintln!("snapshot intervals held the truth for {held} of {sampled} sampled sites");
    assert!(
        sampled >= SITES * 9 / 10,
        "{sampled} sampled sites of {SITES}"
    );
    assert!(
        held * 10 >= sampled * 9,
        "snapshot intervals held the truth for {held} of {sampled} sites"
    );
    let now = leakscope::snapshot();
    let diff = now.diff(&base);
    let (mut held, mut rows, mut noise_marked_zero, mut zero_rows) = (0, 0, 0, 0);
    for i in 0..SITES {
        let t = tenant(i);
        let Some(d) = diff.sites().iter().find(|d| {
            d.frames().iter().any(|f| f.function().contains("keep"))
                && d.labels().iter().any(|(k, v)| k == "tenant" && *v == t)
        }) else {
            continue;
        };
        let truth = if added(i) == 0 {
            0
        } else {
            (added(i) * BLOCK) as i64 - (churned(i) * BLOCK) as i64
        };
        let (low, high) = d.live_bytes_delta_interval();
        rows += 1;
        held += usize::from(low <= truth && truth <= high);
        if truth == 0 {
            zero_rows += 1;
            noise_marked_zero += usize::from(d.within_noise());
        }
    }
    assert!(rows >= SITES * 9 / 10, "{rows} diff rows");
    assert!(
        held * 10 >= rows * 9,
        "diff intervals held the truth for {held} of {rows} rows"
    );
    assert!(
        noise_marked_zero * 20 >= zero_rows * 17,
        "{noise_marked_zero} of {zero_rows} churn-only rows marked as noise"
    );

    eprintln!(
        "diff intervals held the truth for {held} of {rows} rows; {noise_marked_zero} of {zero_rows} churn-only rows marked noise"
    );
    let text = format!("{now}");
    let header = format!("Estimated from {} samples", now.samples());
    assert!(text.contains(&header), "{}", &text[..text.len().min(2000)]);
    assert!(
        text.contains("±95%") && text.contains(" samples "),
        "{}",
        &text[..2000]
    );
    let dtext = format!("{diff}");
    assert!(
        dtext.contains("±95%") && dtext.contains("noise"),
        "{}",
        &dtext[..dtext.len().min(3000)]
    );
    black_box(&stores);
}

/// The labels-folded view: the 400 tenants' sites of `keep` are one row.
#[test]
fn the_labels_folded_view_has_one_row_per_stack() {
    let mut stores: Vec<Vec<Box<[u8]>>> = (0..8).map(|_| Vec::with_capacity(64)).collect();
    fill(&mut stores, &|_| 64);
    let snap = leakscope::snapshot();
    // This test's `keep` sites (the other test's have another caller).
    let through = |s: &leakscope::Site| {
        s.frames().iter().any(|f| f.function().ends_with("::keep"))
            && s.frames()
                .iter()
                .any(|f| f.function().contains("labels_folded_view"))
    };
    let labelled: Vec<_> = snap.sites().iter().filter(|s| through(s)).collect();
    assert!(labelled.len() > 1, "{} sites", labelled.len());
    let folded = snap.without_labels();
    let one: Vec<_> = folded.sites().iter().filter(|s| through(s)).collect();
    assert_eq!(one.len(), 1, "{folded}");
    assert!(one[0].labels().is_empty());
    assert_eq!(
        one[0].live_bytes(),
        labelled.iter().map(|s| s.live_bytes()).sum::<u64>()
    );
    assert_eq!(
        one[0].samples(),
        labelled.iter().map(|s| s.samples()).sum::<u64>()
    );
    assert_eq!(folded.live_bytes(), snap.live_bytes());
    let text = format!("{folded}");
    assert!(!text.contains("tenant="), "{text}");
    black_box(&stores);
}
