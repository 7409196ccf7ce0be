//! `/debug/leakscope`: the leak dashboard, one server-rendered HTML page
//! (inline CSS and SVG, no script, nothing fetched from elsewhere).

use std::fmt::Write as _;
use std::time::Instant;

use super::chart::{self, COLORS, Line};
use super::ctx::Ctx;
use super::html::escape;
use super::response::Response;
use crate::leaks::{MonitorStatus, Suspect, running_history, running_status, running_suspects};
use crate::profile::{Frame, Snapshot, owner, snapshot};
use crate::report::text::{human, owner_location, owner_name, write_frames};

const STYLE: &str = r#"
:root{--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--bg:#f6f8fa;--accent:#0969da;--warn:#cf222e}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:#fff}
header{background:#24292f;color:#fff;padding:14px 28px;display:flex;align-items:baseline;gap:18px;flex-wrap:wrap}
header h1{margin:0;font-size:20px;font-weight:600}
header .proc{color:#d0d7de;font-size:13px}
header nav{margin-left:auto;font-size:13px}
header nav a{color:#9cd1ff;margin-left:14px;text-decoration:none}
main{max-width:1240px;margin:0 auto;padding:20px 28px 40px}
h2{font-size:17px;margin:28px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(175px,1fr));gap:12px}
.card{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .v{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.note{color:var(--muted);font-size:13px;margin:6px 0}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px;margin:8px 0 0}
.legend span{display:inline-flex;align-items:center;gap:6px}
.legend i{display:inline-block;width:14px;height:4px;border-radius:2px}
table{border-collapse:collapse;width:100%;font-size:14px}
th{text-align:left;font-size:12px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.03em;border-bottom:2px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid #eaeef2;padding:7px 8px;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th.num{text-align:right}
.fn{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:13px;word-break:break-all}
.loc{color:var(--muted);font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
details summary{cursor:pointer;color:var(--accent);font-size:12px;margin-top:3px}
details pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:8px;font-size:12px;white-space:pre-wrap;word-break:break-all;margin:6px 0 0}
.suspects td.growth{color:var(--warn);font-weight:600}
.empty{color:var(--muted);font-style:italic}
.links a{display:inline-block;margin:0 14px 8px 0;color:var(--accent)}
"#;

/// Lines drawn on the chart (one colour each).
const CHART_LINES: usize = COLORS.len();

/// The dashboard page.
/// The dashboard. `?retainers=1` also runs a retainer scan (a fork) and
/// fills the "Who holds it" section; without it the section offers a button.
pub(super) fn page(query: &str, ctx: &Ctx<'_>) -> Response {
    let scan = query.split('&').any(|kv| kv == "retainers=1");
    let snap = snapshot();
    let suspects = running_suspects();
    let status = running_status();
    let now = Instant::now();
    let (lines, source) = chart_lines(ctx, &snap);
    let mut h = String::new();
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "process".to_string());
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>leakscope: {exe}</title><style>{STYLE}</style></head><body>"#,
        exe = escape(&exe)
    );
    let _ = write!(
        h,
        r#"<header><h1>leakscope</h1><span class="proc">{} · pid {}</span><nav><a href="/debug/leakscope/flamegraph.svg">Flame graph</a><a href="/debug/pprof/">pprof</a><a href="/metrics">Metrics</a></nav></header><main>"#,
        escape(&exe),
        std::process::id()
    );
    totals(&mut h, &snap);
    let _ = write!(
        h,
        "<h2>Live bytes over time</h2>{}",
        chart::svg(&lines, now)
    );
    legend(&mut h, &lines);
    let _ = write!(h, r#"<p class="note">{}</p>"#, escape(&source));
    suspects_section(&mut h, suspects.as_deref(), status.as_ref());
    holders_section(&mut h, scan);
    labels_section(&mut h, &snap, ctx.top_sites.max(1));
    sites_section(&mut h, &snap, ctx.top_sites.max(1));
    links(&mut h);
    h.push_str("</main></body></html>\n");
    Response::ok("text/html; charset=utf-8", h)
}

fn totals(h: &mut String, snap: &Snapshot) {
    let interval = match snap.sample_interval() {
        1 => "exact".to_string(),
        r => human(r as f64),
    };
    let cards = [
        ("Live heap", human(snap.live_bytes() as f64)),
        ("Live allocations", group(snap.live_allocs())),
        ("Allocated in all", human(snap.total_bytes() as f64)),
        ("Sites", group(snap.sites().len() as u64)),
        ("Tracker overhead", human(snap.tracker_bytes() as f64)),
        ("Sample interval", interval),
    ];
    h.push_str(r#"<div class="cards">"#);
    for (k, v) in cards {
        let _ = write!(
            h,
            r#"<div class="card"><div class="k">{k}</div><div class="v">{}</div></div>"#,
            escape(&v)
        );
    }
    h.push_str("</div>");
    if snap.sample_interval() != 1 {
        h.push_str(
            r#"<p class="note">Allocations are sampled; figures are unbiased estimates.</p>"#,
        );
    }
}

/// The chart's lines and a sentence saying where they come from: the
/// running monitor's window, else the server's own summaries, else (for
/// `respond` without either) the one point of this snapshot.
fn chart_lines(ctx: &Ctx<'_>, snap: &Snapshot) -> (Vec<Line>, String) {
    if let Some(history) = running_history() {
        let lines = history
            .iter()
            .take(CHART_LINES)
            .map(|s| Line {
                id: s.id(),
                label: legend_label(s.frames(), s.labels()),
                points: s.points().to_vec(),
            })
            .collect();
        return (
            lines,
            "From the growth monitor's window: the sites with the most live bytes.".to_string(),
        );
    }
    if let Some(history) = ctx.history {
        return (
            history.lines(CHART_LINES),
            "From this server's periodic summaries (start a leakscope::Monitor for leak suspects)."
                .to_string(),
        );
    }
    let now = Instant::now();
    let lines = snap
        .sites()
        .iter()
        .filter(|s| s.live_bytes() > 0)
        .take(CHART_LINES)
        .map(|s| Line {
            id: s.id(),
            label: legend_label(s.frames(), s.labels()),
            points: vec![(now, s.live_bytes())],
        })
        .collect();
    (
        lines,
        "One point, now: run a leakscope::Monitor (or the built-in server) for a history."
            .to_string(),
    )
}

/// A chart line's name: the owner function and the site's labels
/// (`cache::insert · tenant=acme`), so tenants' lines are told apart.
fn legend_label(frames: &[Frame], labels: &[(String, String)]) -> String {
    let mut label = owner_name(frames);
    for (k, v) in labels {
        let _ = write!(label, " · {k}={v}");
    }
    label
}

fn legend(h: &mut String, lines: &[Line]) {
    h.push_str(r#"<div class="legend">"#);
    for (line, color) in lines.iter().zip(COLORS) {
        let last = line.points.last().map_or(0, |p| p.1);
        let _ = write!(
            h,
            // The site id too: two sites of one function (a zeroed and a
            // plain `vec!`, say) would otherwise read the same.
            r#"<span><i style="background:{color}"></i><span class="fn">{}</span> (site {}) {}</span>"#,
            escape(&line.label),
            line.id,
            escape(&human(last as f64))
        );
    }
    h.push_str("</div>");
}

fn suspects_section(h: &mut String, suspects: Option<&[Suspect]>, status: Option<&MonitorStatus>) {
    h.push_str("<h2>Leak suspects</h2>");
    let (Some(suspects), Some(status)) = (suspects, status) else {
        h.push_str(r#"<p class="empty">No growth monitor is running. Start one (leakscope::Monitor::start) to have the sites that keep growing named here.</p>"#);
        return;
    };
    // Never a bare "None" before the first verdict: that reads as all clear.
    let _ = write!(
        h,
        r#"<p class="note status">{}</p>"#,
        escape(&status.to_string())
    );
    if !status.judged() {
        return;
    }
    if suspects.is_empty() {
        h.push_str(
            r#"<p class="empty">No site has grown clearly over any of the monitor's windows.</p>"#,
        );
        return;
    }
    h.push_str(r#"<table class="suspects"><tr><th>Function</th><th class="num">Growth</th><th class="num">Rate</th><th class="num">Live</th></tr>"#);
    for s in suspects {
        let _ = write!(
            h,
            r#"<tr><td>{}</td><td class="num growth">+{}</td><td class="num">{}/s</td><td class="num">{}</td></tr>"#,
            site_cell(s.id(), s.frames(), s.labels()),
            escape(&{
                let g = human(s.growth_bytes() as f64);
                let (_, high) = s.growth_interval();
                let d = high - s.growth_bytes() as f64;
                if s.sample_interval() > 1 && d > 0.0 {
                    format!("{g} ± {}", human(d))
                } else {
                    g
                }
            }),
            escape(&human(s.growth_rate())),
            escape(&human(s.live_bytes() as f64)),
        );
    }
    h.push_str("</table>");
}

/// "Who holds it": the retainer scan's holders, run only when asked (it
/// forks the process), largest retained first.
fn holders_section(h: &mut String, scan: bool) {
    h.push_str("<h2>Who holds it</h2>");
    if !scan {
        h.push_str(r#"<form method="get" action="/debug/leakscope"><input type="hidden" name="retainers" value="1"><button type="submit">Find who holds the heap</button> <span class="note">runs a retainer scan in a forked child: the process pauses for the fork (longer the larger it is), the scan runs beside it. Text report: <a href="/debug/leakscope/retainers">/debug/leakscope/retainers</a></span></form>"#);
        return;
    }
    let r = match crate::retainers::retainers() {
        Ok(r) => r,
        Err(e) => {
            let why = if crate::retainers::is_busy(&e) {
                "another retainer scan is running; try again".to_string()
            } else {
                format!("the retainer scan failed: {e}")
            };
            let _ = write!(h, r#"<p class="empty">{}</p>"#, escape(&why));
            return;
        }
    };
    if r.roots().is_empty() {
        h.push_str(r#"<p class="empty">No recorded block is held by a root.</p>"#);
    } else {
        h.push_str(r#"<table class="holders"><tr><th>Holder</th><th class="num">Retains</th><th>Largest sites</th></tr>"#);
        for root in r.roots().iter().take(20) {
            let sites = root
                .sites()
                .iter()
                .take(3)
                .map(|&(id, bytes)| {
                    escape(&format!("{}: {}", r.site_title(id), human(bytes as f64)))
                })
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td class="num">{}</td><td>{}</td></tr>"#,
                escape(&root.root().to_string()),
                escape(&human(root.retained_bytes() as f64)),
                sites,
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        r#"<p class="note">Unreachable (leaked: nothing points to it): {} in {} leaks. Pause {:.1} ms, scan {:.0} ms over {}. <a href="/debug/leakscope/retainers">Paths per site (text)</a></p>"#,
        escape(&human(r.unreachable_bytes() as f64)),
        r.unreachable().len(),
        r.pause().as_secs_f64() * 1e3,
        r.scan_time().as_secs_f64() * 1e3,
        escape(&human(r.bytes_scanned() as f64)),
    );
}

/// Live bytes per label value, and their growth over the growth monitor's
/// window (the same for every viewer: measured against the monitor's
/// history, not against whoever loaded the page last).
fn labels_section(h: &mut String, snap: &Snapshot, n: usize) {
    let keys = snap.label_keys();
    if keys.is_empty() {
        return;
    }
    let history = running_history();
    h.push_str("<h2>Live bytes by label</h2>");
    let span = history.as_ref().and_then(|hs| {
        let first = hs
            .iter()
            .filter_map(|s| s.points().first().map(|p| p.0))
            .min()?;
        let last = hs
            .iter()
            .filter_map(|s| s.points().last().map(|p| p.0))
            .max()?;
        Some(last.saturating_duration_since(first))
    });
    match span {
        Some(d) => {
            let _ = write!(
                h,
                r#"<p class="note">Growth over the growth monitor's window, the last {:.0} s.</p>"#,
                d.as_secs_f64()
            );
        }
        None => h.push_str(
            r#"<p class="note">Start a growth monitor (leakscope::Monitor) for growth per label.</p>"#,
        ),
    }
    for (key, _) in keys.iter().take(n) {
        let _ = write!(
            h,
            r#"<table class="labels"><tr><th>{}</th><th class="num">Live</th><th class="num">Growth</th></tr>"#,
            escape(key)
        );
        for (value, bytes) in snap.by_label(key).into_iter().take(n) {
            let growth = history.as_ref().map_or_else(String::new, |hs| {
                let d: i128 = hs
                    .iter()
                    .filter(|s| {
                        s.labels()
                            .iter()
                            .find(|(k, _)| k == key)
                            .map_or("", |(_, v)| v.as_str())
                            == value
                    })
                    .map(|s| {
                        let first = s.points().first().map_or(0, |p| p.1);
                        i128::from(s.live_bytes()) - i128::from(first)
                    })
                    .sum();
                let sign = if d >= 0 { "+" } else { "-" };
                format!("{sign}{}", human(d.unsigned_abs() as f64))
            });
            let shown = if value.is_empty() {
                "(none)"
            } else {
                value.as_str()
            };
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                escape(shown),
                escape(&human(bytes as f64)),
                escape(&growth)
            );
        }
        h.push_str("</table>");
    }
}

fn sites_section(h: &mut String, snap: &Snapshot, n: usize) {
    let _ = write!(h, "<h2>Top sites by live bytes</h2>");
    let sites: Vec<_> = snap
        .sites()
        .iter()
        .filter(|s| s.live_bytes() > 0)
        .take(n)
        .collect();
    if sites.is_empty() {
        h.push_str(r#"<p class="empty">No live recorded memory.</p>"#);
        return;
    }
    // Under sampling, each estimate with its 95% interval and the samples
    // behind it; exact mode shows the figures alone.
    let sampled = snap.sample_interval() > 1;
    if sampled {
        let _ = write!(
            h,
            r#"<p class="note">Estimated from {} samples; ± is the half-width of a 95% interval.</p>"#,
            group(snap.samples())
        );
    }
    h.push_str(r#"<table class="sites"><tr><th class="num">#</th><th>Function</th><th class="num">Live</th><th class="num">Live allocs</th><th class="num">Allocated</th></tr>"#);
    for (i, s) in sites.iter().enumerate() {
        let live = if sampled {
            let (_, high) = s.live_bytes_interval();
            format!(
                "{} ± {} ({} samples)",
                human(s.live_bytes() as f64),
                human(high.saturating_sub(s.live_bytes()) as f64),
                s.samples()
            )
        } else {
            human(s.live_bytes() as f64)
        };
        let _ = write!(
            h,
            r#"<tr><td class="num">{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            i + 1,
            site_cell(s.id(), s.frames(), s.labels()),
            escape(&live),
            group(s.live_allocs()),
            escape(&human(s.total_bytes() as f64)),
        );
    }
    h.push_str("</table>");
}

/// Owner, its `file:line`, and the stack (folded, then frame by frame).
fn site_cell(id: u32, frames: &[Frame], labels: &[(String, String)]) -> String {
    let loc = owner_location(frames);
    let start = owner(frames)
        .and_then(|o| frames.iter().position(|f| std::ptr::eq(f, o)))
        .unwrap_or(0);
    let from_owner = &frames[start..];
    let folded: Vec<&str> = from_owner.iter().rev().map(Frame::function).collect();
    // Frame by frame as the text report shows them: runs of async runtime
    // frames folded into one line, long generic names shortened (the
    // folded line above keeps every frame whole).
    let mut text = String::new();
    let _ = write_frames(&mut text, from_owner, false);
    let listed: String = text
        .lines()
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    // The site's labels, when it has any: the same stack under two tenants
    // is two sites, told apart here.
    let labels: String = labels.iter().map(|(k, v)| format!(" · {k}={v}")).collect();
    format!(
        r#"<div class="fn">{}</div><div class="loc">{} · site {id}{}</div><details><summary>stack ({} frames)</summary><pre class="folded">{}</pre><pre>{}</pre></details>"#,
        escape(&owner_name(frames)),
        escape(if loc.is_empty() {
            "no line tables"
        } else {
            &loc
        }),
        escape(&labels),
        from_owner.len(),
        escape(&folded.join(";")),
        escape(&listed),
    )
}

fn links(h: &mut String) {
    h.push_str(r#"<h2>Downloads</h2><div class="links"><a href="/debug/leakscope/flamegraph.svg">Flame graph (SVG)</a><a href="/debug/pprof/heap" download="heap.pb.gz">pprof heap profile</a><a href="/debug/pprof/allocs" download="allocs.pb.gz">pprof allocs profile</a><a href="/debug/pprof/heap?debug=1">Text report</a><a href="/debug/leakscope/snapshot.json">Snapshot (JSON)</a><a href="/debug/leakscope/dhat.json" download="dhat-heap.json">DHAT file</a><a href="/metrics">Prometheus metrics</a></div>"#);
    h.push_str(r#"<p class="note">From a terminal: <code>go tool pprof -top http://HOST/debug/pprof/heap</code>; the growth over 30 s: <code>go tool pprof -top 'http://HOST/debug/pprof/heap?seconds=30'</code>.</p>"#);
}

/// `1234567` -> `1,234,567`.
fn group(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn groups_digits() {
        assert_eq!(super::group(0), "0");
        assert_eq!(super::group(999), "999");
        assert_eq!(super::group(1234567), "1,234,567");
    }
}
