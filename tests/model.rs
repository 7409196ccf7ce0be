//! Randomized model test, exact mode: sequences of alloc, realloc and free
//! (from four distinct call sites, sizes and alignments at random) against a
//! naive model, a `HashMap` from site to live bytes and allocations.
//! Realloc moves a block's bytes to the realloc's own site (a recorded
//! realloc is recorded at its stack).

mod common;

use std::alloc::{Layout, alloc, dealloc, realloc};
use std::collections::HashMap;
use std::sync::Mutex;

use common::*;
use proptest::prelude::*;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

const SITES: [&str; 4] = [
    "model_site_a",
    "model_site_b",
    "model_site_c",
    "model_site_d",
];

#[inline(never)]
fn model_site_a(l: Layout) -> *mut u8 {
    // SAFETY: non-zero size (the strategy starts sizes at 1).
    std::hint::black_box(unsafe { alloc(l) })
}
#[inline(never)]
fn model_site_b(l: Layout) -> *mut u8 {
    // SAFETY: as above.
    std::hint::black_box(unsafe { alloc(l) })
}
#[inline(never)]
fn model_site_c(p: *mut u8, l: Layout, n: usize) -> *mut u8 {
    // SAFETY: `p` is live with layout `l`; `n` is non-zero.
    std::hint::black_box(unsafe { realloc(p, l, n) })
}
#[inline(never)]
fn model_site_d(p: *mut u8, l: Layout, n: usize) -> *mut u8 {
    // SAFETY: as above.
    std::hint::black_box(unsafe { realloc(p, l, n) })
}

#[derive(Clone, Debug)]
enum Op {
    Alloc {
        site_b: bool,
        size: usize,
        align_log: u8,
    },
    Realloc {
        pick: usize,
        site_d: bool,
        size: usize,
    },
    Free {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<bool>(), 1usize..5000, 0u8..7).prop_map(|(site_b, size, align_log)| Op::Alloc {
            site_b,
            size,
            align_log
        }),
        (any::<usize>(), any::<bool>(), 1usize..9000)
            .prop_map(|(pick, site_d, size)| { Op::Realloc { pick, site_d, size } }),
        any::<usize>().prop_map(|pick| Op::Free { pick }),
    ]
}

/// Which of `SITES` each site id's stack goes through, symbolized once per
/// id (site ids are stable): symbolizing every site of every snapshot would
/// make the test slow, not better.
fn site_name(site: &leakscope::Site) -> Option<&'static str> {
    static KNOWN: Mutex<Option<HashMap<u32, Option<&'static str>>>> = Mutex::new(None);
    let mut known = KNOWN.lock().unwrap();
    *known
        .get_or_insert_with(HashMap::new)
        .entry(site.id())
        .or_insert_with(|| SITES.iter().copied().find(|n| site_has(site.frames(), n)))
}

/// Live bytes and allocations per site, as the tracker reports them.
fn observed() -> HashMap<&'static str, (u64, u64)> {
    let snap = leakscope::snapshot();
    let mut out: HashMap<&'static str, (u64, u64)> = SITES.iter().map(|&s| (s, (0, 0))).collect();
    for site in snap.sites() {
        if let Some(name) = site_name(site) {
            let e = out.get_mut(name).unwrap();
            e.0 += site.live_bytes();
            e.1 += site.live_allocs();
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn live_bytes_per_site_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let base = observed();
        // Block -> (layout, site); the model: site -> (bytes, allocations).
        let mut blocks: Vec<(*mut u8, Layout, &'static str)> = Vec::new();
        let mut model: HashMap<&'static str, (u64, u64)> = HashMap::new();
        for op in ops {
            match op {
                Op::Alloc { site_b, size, align_log } => {
                    let l = Layout::from_size_align(size, 1 << align_log).unwrap();
                    let (p, s) = if site_b { (model_site_b(l), SITES[1]) } else { (model_site_a(l), SITES[0]) };
                    prop_assert!(!p.is_null());
                    let m = model.entry(s).or_default();
                    m.0 += size as u64;
                    m.1 += 1;
                    blocks.push((p, l, s));
                }
                Op::Realloc { pick, site_d, size } if !blocks.is_empty() => {
                    let (p, l, old) = blocks.swap_remove(pick % blocks.len());
                    let (q, s) = if site_d { (model_site_d(p, l, size), SITES[3]) } else { (model_site_c(p, l, size), SITES[2]) };
                    prop_assert!(!q.is_null());
                    let m = model.entry(old).or_default();
                    m.0 -= l.size() as u64;
                    m.1 -= 1;
                    let m = model.entry(s).or_default();
                    m.0 += size as u64;
                    m.1 += 1;
                    blocks.push((q, Layout::from_size_align(size, l.align()).unwrap(), s));
                }
                Op::Free { pick } if !blocks.is_empty() => {
                    let (p, l, s) = blocks.swap_remove(pick % blocks.len());
                    // SAFETY: `p` is live with layout `l`.
                    unsafe { dealloc(p, l) };
                    let m = model.entry(s).or_default();
                    m.0 -= l.size() as u64;
                    m.1 -= 1;
                }
                _ => {}
            }
        }
        let now = observed();
        for s in SITES {
            let (b0, a0) = base[s];
            let (b, a) = now[s];
            let want = model.get(s).copied().unwrap_or_default();
            prop_assert_eq!((b - b0, a - a0), want, "site {}", s);
        }
        for (p, l, _) in blocks {
            // SAFETY: `p` is live with layout `l`.
            unsafe { dealloc(p, l) };
        }
        prop_assert_eq!(observed(), base);
    }
}
