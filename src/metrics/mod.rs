//! Prometheus metrics: the heap totals and the top sites as gauges, in the
//! Prometheus text exposition format (version 0.0.4), for `/metrics`.
//!
//! Cardinality is bounded whatever the program does: one
//! `leakscope_site_live_bytes` series for each of the top `N` sites by live
//! bytes, plus one `site="other"` series for all the rest, at most `N`
//! suspect series, and for each of at most `N` label keys, `N` values plus
//! one overflow series for the rest of that key.
//!
//! An overflow series can never be mistaken for a real one: `site="other"`
//! (site ids are numbers), and for label values an `overflow="true"` label
//! no other series of the family has, with an empty value:
//! `{key="k", value="", overflow="true"}`.
//! A real label value is never empty here (memory without the key is in no
//! series), so a real value `other` keeps its own series and its own bytes.
//!
//! Encoded with `prometheus-client` (which escapes label values and writes
//! the `HELP`/`TYPE` lines); a fresh registry is filled per scrape, because
//! the set of top sites changes from one scrape to the next.

use std::io::Write;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::Error;
use crate::leaks::{Suspect, running_suspects};
use crate::profile::{Frame, Snapshot, snapshot};
use crate::recorder::Guard;
use crate::report::text::{owner_location, owner_name};

/// The `Content-Type` of what [`write_prometheus`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The number of top sites `/metrics` exposes unless configured otherwise.
pub const DEFAULT_TOP_SITES: usize = 20;

/// Label values longer than this (in characters) are cut, and end in `…`:
/// a generic function's name can run to kilobytes, and every byte of a label
/// is stored in every sample of the series.
const MAX_LABEL_CHARS: usize = 200;

type Labels = Vec<(std::borrow::Cow<'static, str>, String)>;

/// One label key's series: the key, its top values with their live bytes,
/// and the live bytes of the rest of its values (the overflow series).
type KeyRow = (String, Vec<(String, u64)>, u64);

/// Writes the heap's metrics in the Prometheus text format, from a fresh
/// [`snapshot()`]:
///
/// | series | type | what |
/// |---|---|---|
/// | `leakscope_live_bytes` | gauge | estimated live bytes, all sites |
/// | `leakscope_live_allocations` | gauge | estimated live allocations |
/// | `leakscope_allocated_bytes_total` | counter | estimated bytes ever allocated |
/// | `leakscope_tracker_bytes` | gauge | memory the tracker itself holds |
/// | `leakscope_sample_interval_bytes` | gauge | mean sample interval (1 = exact) |
/// | `leakscope_site_live_bytes{site, function, location}` | gauge | live bytes of each of the top `top_n` sites by live bytes, and `site="other"` for the rest |
/// | `leakscope_label_live_bytes{key, value}` | gauge | live bytes per value of each label key (see [`with_labels`](crate::with_labels)): the top `top_n` values of each of the top `top_n` keys, and `{key, value="", overflow="true"}` for the rest of that key (a real value named `other` is a value like any other) |
/// | `leakscope_suspect_growth_bytes_per_second{site, function, location}` | gauge | growth rate of each leak suspect (at most `top_n`), while a [`Monitor`](crate::Monitor) runs |
///
/// `site` is the site's stable id ([`Site::id`](crate::Site::id)),
/// `function` its owner's function ([`Site::owner`](crate::Site::owner), or
/// the innermost frame for a stack of std frames only), `location` the
/// owner's `file:line` (the path from the crate directory on). Label values
/// are escaped as the format requires and cut at 200 characters. Everything
/// runs under the tracker's guard: a scrape is never recorded.
///
/// # Errors
///
/// [`Error::Io`] when the writer fails.
///
/// # Examples
///
/// ```
/// let mut out = Vec::new();
/// leakscope::metrics::write_prometheus(&mut out, 10)?;
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.contains("leakscope_live_bytes"));
/// assert!(text.contains("leakscope_site_live_bytes{site=\"other\""));
/// # Ok::<(), leakscope::Error>(())
/// ```
pub fn write_prometheus<W: Write>(mut w: W, top_n: usize) -> Result<(), Error> {
    let text = Guard::run(|| render(&snapshot(), running_suspects().as_deref(), top_n))?;
    w.write_all(text.as_bytes())?;
    w.flush()?;
    Ok(())
}

/// The exposition of `snap` (and of `suspects`, when a monitor runs).
pub(crate) fn render(
    snap: &Snapshot,
    suspects: Option<&[Suspect]>,
    top_n: usize,
) -> Result<String, Error> {
    Guard::run(|| {
        let mut registry = Registry::default();
        let gauge = |registry: &mut Registry, name: &str, help: &str, v: u64| {
            let g: Gauge = Gauge::default();
            g.set(clamp(v));
            registry.register(name, help, g);
        };
        gauge(
            &mut registry,
            "leakscope_live_bytes",
            "Estimated live heap bytes over all sites",
            snap.live_bytes(),
        );
        gauge(
            &mut registry,
            "leakscope_live_allocations",
            "Estimated live heap allocations over all sites",
            snap.live_allocs(),
        );
        let allocated: Counter = Counter::default();
        allocated.inc_by(snap.total_bytes());
        // Registered without the suffix: the encoder adds `_total`.
        registry.register(
            "leakscope_allocated_bytes",
            "Estimated bytes ever allocated",
            allocated,
        );
        gauge(
            &mut registry,
            "leakscope_tracker_bytes",
            "Memory held by the leakscope tracker itself",
            snap.tracker_bytes(),
        );
        gauge(
            &mut registry,
            "leakscope_sample_interval_bytes",
            "Mean sample interval in bytes (1 means every allocation is recorded)",
            snap.sample_interval(),
        );

        let sites = Family::<Labels, Gauge>::default();
        let top: Vec<_> = snap
            .sites()
            .iter()
            .filter(|s| s.live_bytes() > 0)
            .take(top_n)
            .collect();
        let mut shown = 0u64;
        for s in &top {
            shown = shown.saturating_add(s.live_bytes());
            sites
                .get_or_create(&site_labels(s.id(), s.frames(), s.labels()))
                .set(clamp(s.live_bytes()));
        }
        let other: Labels = vec![
            ("site".into(), "other".to_string()),
            ("function".into(), String::new()),
            ("location".into(), String::new()),
        ];
        sites
            .get_or_create(&other)
            .set(clamp(snap.live_bytes().saturating_sub(shown)));
        registry.register(
            "leakscope_site_live_bytes",
            "Estimated live bytes of the top sites by live bytes; site=\"other\" sums the rest",
            sites,
        );

        let by_label = Family::<Labels, Gauge>::default();
        for (key, values, rest) in label_rows(snap, top_n) {
            for (value, bytes) in values {
                by_label
                    .get_or_create(&vec![
                        ("key".into(), bounded(key.clone())),
                        ("value".into(), bounded(value)),
                    ])
                    // Added, not set: two long values cut to the same
                    // prefix share one series and both count.
                    .inc_by(clamp(bytes));
            }
            by_label
                .get_or_create(&vec![
                    ("key".into(), bounded(key)),
                    ("value".into(), String::new()),
                    ("overflow".into(), "true".to_string()),
                ])
                .set(clamp(rest));
        }
        registry.register(
            "leakscope_label_live_bytes",
            "Estimated live bytes per label value (see with_labels): the top values of each key; overflow=\"true\" sums the rest of that key",
            by_label,
        );

        if let Some(suspects) = suspects {
            let growth = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
            for s in suspects.iter().take(top_n) {
                growth
                    .get_or_create(&site_labels(s.id(), s.frames(), s.labels()))
                    .set(s.growth_rate());
            }
            registry.register(
                "leakscope_suspect_growth_bytes_per_second",
                "Growth rate of each leak suspect of the running growth monitor",
                growth,
            );
        }

        let mut out = String::new();
        prometheus_text::encode(&mut out, &registry)
            .map_err(|e| Error::Encode(format!("prometheus exposition: {e}")))?;
        Ok(out)
    })
}

/// The label series: for each of the first `top_n` label keys (by live
/// bytes), its top `top_n` values by live bytes and the rest of that key's
/// memory (memory without the key is in no series). Values are distinct and
/// never empty, so no value's series can be written twice.
fn label_rows(snap: &Snapshot, top_n: usize) -> Vec<KeyRow> {
    let mut keys = snap.label_keys();
    keys.truncate(top_n);
    keys.into_iter()
        .map(|(key, _)| {
            let mut values: Vec<(String, u64)> = snap
                .by_label(&key)
                .into_iter()
                .filter(|(v, _)| !v.is_empty())
                .collect();
            let rest: u64 = values.iter().skip(top_n).map(|x| x.1).sum();
            values.truncate(top_n);
            (key, values, rest)
        })
        .collect()
}

/// A site's series labels: its id, owner function and location, and its own
/// label set (see `with_labels`), so three tenants' series differ by
/// `tenant="..."` rather than by an id that changes at every restart. The
/// series count is unchanged (one per site, bounded as above); the site's
/// label keys are made valid Prometheus names (see [`label_name`]) and
/// values bounded like every other.
fn site_labels(id: u32, frames: &[Frame], labels: &[(String, String)]) -> Labels {
    let mut out: Labels = vec![
        ("site".into(), id.to_string()),
        ("function".into(), bounded(owner_name(frames))),
        ("location".into(), bounded(owner_location(frames))),
    ];
    for (k, v) in labels {
        let name = label_name(k);
        if out.iter().all(|(n, _)| *n != name) {
            out.push((name.into(), bounded(v.clone())));
        }
    }
    out
}

/// `key` as a Prometheus label name: characters outside `[a-zA-Z0-9_]`
/// become `_`, and a name that would collide with ours (`site`, `function`,
/// `location`), start with a digit or with the reserved `__`, or be empty is
/// prefixed with `label_`.
fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .take(MAX_LABEL_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty()
        || name.starts_with("__")
        || name.starts_with(|c: char| c.is_ascii_digit())
        || ["site", "function", "location"].contains(&name.as_str())
    {
        name.insert_str(0, "label_");
    }
    name
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `s` cut to [`MAX_LABEL_CHARS`] characters (at a character boundary).
fn bounded(s: String) -> String {
    match s.char_indices().nth(MAX_LABEL_CHARS - 1) {
        Some((i, _)) if s.len() > i + 1 => {
            let mut cut = s[..i].to_string();
            cut.push('…');
            cut
        }
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_become_prometheus_names() {
        assert_eq!(label_name("tenant"), "tenant");
        assert_eq!(label_name("http.route"), "http_route");
        assert_eq!(label_name("site"), "label_site");
        assert_eq!(label_name("__x"), "label___x");
        assert_eq!(label_name("9a"), "label_9a");
        assert_eq!(label_name(""), "label_");
        let l = site_labels(3, &[], &[("tenant".into(), "acme".into())]);
        assert!(l.iter().any(|(k, v)| k == "tenant" && v == "acme"), "{l:?}");
    }

    #[test]
    fn long_labels_are_cut() {
        assert_eq!(bounded("short".into()), "short");
        let exact: String = "x".repeat(MAX_LABEL_CHARS);
        assert_eq!(bounded(exact.clone()), exact);
        let long: String = "é".repeat(MAX_LABEL_CHARS + 50);
        let cut = bounded(long);
        assert_eq!(cut.chars().count(), MAX_LABEL_CHARS);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn exposition_names_totals_and_bounds_sites() {
        let text = render(&snapshot(), None, 3).unwrap();
        for name in [
            "leakscope_live_bytes ",
            "leakscope_live_allocations ",
            "leakscope_allocated_bytes_total ",
            "leakscope_tracker_bytes ",
            "leakscope_sample_interval_bytes ",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("leakscope_site_live_bytes{"))
            .count();
        assert!((1..=4).contains(&series), "{series} series:\n{text}");
        assert!(!text.contains("leakscope_suspect_growth"));
    }
}
