//! `/metrics` keeps a real label value named `other` apart from a key's
//! overflow series, and shows the bytes of the overflow set
//! `leakscope=other` (sets past `Tracker::max_label_sets`). Label values are
//! bounded in bytes.

#![cfg(feature = "metrics")]

use std::hint::black_box;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system()
    .sample_interval(1)
    .max_label_sets(CAP);

/// Distinct label sets kept apart: a long `blob` value, `tenant=other` and
/// five more.
const CAP: usize = 7;
const TOP: usize = 3;

#[inline(never)]
fn block(n: usize) -> Vec<u8> {
    black_box(vec![0x5a_u8; n])
}

/// The value of the one series of `leakscope_label_live_bytes` whose label
/// part is exactly `labels`.
fn series(text: &str, labels: &str) -> Option<u64> {
    let head = format!("leakscope_label_live_bytes{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(head.as_str()))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn a_real_other_value_and_the_overflow_set_keep_their_bytes_and_values_are_cut() {
    // A recorded allocation first, so the tracker's cap is known.
    drop(black_box(vec![1u8; 8]));
    let mut kept = Vec::new();
    // A 1 MiB value is kept as its first MAX_LABEL_LEN bytes.
    let long = "v".repeat(1 << 20);
    kept.push(leakscope::with_labels(&[("blob", long.as_str())], || {
        block(64)
    }));
    let blob = leakscope::snapshot().by_label("blob");
    let (value, bytes) = blob.iter().find(|(v, _)| !v.is_empty()).unwrap();
    assert!(value.len() <= leakscope::MAX_LABEL_LEN, "{}", value.len());
    assert!(value.ends_with('…'));
    assert_eq!(*bytes, 64);
    kept.push(leakscope::with_labels(&[("tenant", "other")], || {
        block(10_000)
    }));
    for t in ["a", "b", "c", "d", "e"] {
        kept.push(leakscope::with_labels(&[("tenant", t)], || block(100)));
    }
    // Past the cap: ten sets in the overflow set, 1 000 B each.
    for i in 0..10 {
        let t = format!("late-{i}");
        kept.push(leakscope::with_labels(&[("tenant", t.as_str())], || {
            block(1_000)
        }));
    }
    let mut out = Vec::new();
    leakscope::metrics::write_prometheus(&mut out, TOP).unwrap();
    let text = String::from_utf8(out).unwrap();
    let labels: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("leakscope_label_live_bytes{"))
        .collect();
    // The real value keeps its 10 000 B.
    assert_eq!(
        series(&text, r#"key="tenant",value="other""#),
        Some(10_000),
        "{labels:#?}"
    );
    // The rest of `tenant` (top 3: other, a, b; then c, d, e) is its own
    // series, marked as the overflow.
    assert_eq!(
        series(&text, r#"key="tenant",value="",overflow="true""#),
        Some(300),
        "{labels:#?}"
    );
    // The overflow set's memory is shown, not zeroed.
    assert_eq!(
        series(&text, r#"key="leakscope",value="other""#),
        Some(10_000),
        "{labels:#?}"
    );
    assert_eq!(
        series(&text, r#"key="leakscope",value="",overflow="true""#),
        Some(0),
        "{labels:#?}"
    );
    drop(kept);
}
