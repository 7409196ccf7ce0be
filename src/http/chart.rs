//! The dashboard's line chart of live bytes over time, drawn on the server
//! as inline SVG (no script, nothing fetched).

use std::fmt::Write as _;
use std::time::Instant;

use super::html::escape;
use crate::report::text::human;

/// One site's series.
pub(super) struct Line {
    pub(super) id: u32,
    /// The site's owner function.
    pub(super) label: String,
    /// (when, live bytes), oldest first.
    pub(super) points: Vec<(Instant, u64)>,
}

/// Line colours, in legend order; readable on white and told apart by
/// most colour-blind readers (blue, orange, green, purple, red, teal).
pub(super) const COLORS: [&str; 6] = [
    "#0969da", "#e16f24", "#1a7f37", "#8250df", "#cf222e", "#1b7c83",
];

const W: f64 = 960.0;
const H: f64 = 300.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 34.0;

/// The chart of `lines` (at most [`COLORS`] of them are drawn), the x axis
/// ending at `now`.
pub(super) fn svg(lines: &[Line], now: Instant) -> String {
    let lines = &lines[..lines.len().min(COLORS.len())];
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg id="live-bytes-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="Live bytes over time for the top sites" font-family="system-ui, sans-serif" font-size="12">"#
    );
    let oldest = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .min()
        .unwrap_or(now);
    // The history's own span, rounded up so that the four intervals between
    // the x labels are round figures (5 s, 15 s, 1 m, ...); at least 20 s, so
    // a lone point or two close ones do not stretch across the whole chart.
    let data_span = now.saturating_duration_since(oldest).as_secs_f64();
    // Never before the process started: a 5-minute-old process gets no
    // axis reaching 8 minutes back (the round span is cut to its age).
    let span = match process_age() {
        Some(age) => nice_span(data_span).min(age.max(data_span)).max(1.0),
        None => nice_span(data_span),
    };
    let max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .max()
        .unwrap_or(0);
    let step = nice_step(max as f64 / 4.0);
    let top_value = (max as f64 / step).ceil().max(1.0) * step;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |t: Instant| {
        let ago = now.saturating_duration_since(t).as_secs_f64();
        LEFT + pw * (1.0 - ago / span)
    };
    let y = |v: u64| TOP + ph * (1.0 - v as f64 / top_value);

    // Grid and y labels.
    let mut v = 0.0;
    while v <= top_value * 1.0001 {
        let yy = TOP + ph * (1.0 - v / top_value);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#d0d7de" stroke-width="1"/><text x="{}" y="{:.1}" text-anchor="end" fill="#57606a">{}</text>"##,
            W - RIGHT,
            LEFT - 8.0,
            yy + 4.0,
            escape(&human(v))
        );
        v += step;
    }
    // X labels: five ticks from the oldest to now.
    for i in 0..=4 {
        let ago = span * (4 - i) as f64 / 4.0;
        let xx = LEFT + pw * i as f64 / 4.0;
        let label = if i == 4 {
            "now".to_string()
        } else {
            format!("-{}", ago_label(ago))
        };
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{:.1}" stroke="#eaeef2" stroke-width="1"/><text x="{xx:.1}" y="{:.1}" text-anchor="{anchor}" fill="#57606a">{label}</text>"##,
            TOP + ph,
            H - 10.0
        );
    }
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{:.1}" stroke="#8c959f" stroke-width="1"/><line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#8c959f" stroke-width="1"/>"##,
        TOP + ph,
        W - RIGHT,
        TOP + ph,
        TOP + ph
    );
    if lines.iter().all(|l| l.points.is_empty()) {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#57606a" font-size="14">No live heap recorded yet</text>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    for (line, color) in lines.iter().zip(COLORS) {
        let pts: Vec<String> = line
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            out,
            r#"<g class="series" data-site="{}"><title>{}</title><polyline fill="none" stroke="{color}" stroke-width="2.5" stroke-linejoin="round" points="{}"/>"#,
            line.id,
            escape(&line.label),
            pts.join(" ")
        );
        // Dots where points are few enough to tell apart.
        if line.points.len() <= 40 {
            for p in &pts {
                if let Some((px, py)) = p.split_once(',') {
                    let _ = write!(out, r#"<circle cx="{px}" cy="{py}" r="3" fill="{color}"/>"#);
                }
            }
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// 1, 2 or 5 times a power of 1024 or 10 near `raw`, so gridlines fall on
/// round byte figures (256 KiB, 1 MiB, 2 MiB, ...).
fn nice_step(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 1.0 {
        return 1.0;
    }
    let unit = 1024f64.powi((raw.log(1024.0)).floor() as i32);
    let r = raw / unit;
    let m = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ]
    .into_iter()
    .find(|&m| m >= r)
    .unwrap_or(1024.0);
    m * unit
}

/// The smallest span of four round intervals that covers `secs`.
/// Seconds since this process started, from `/proc/self/stat` (start time
/// in clock ticks since boot) and `/proc/uptime`; `None` where unknown.
pub(super) fn process_age() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); the start time is field 22.
    let start_ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some((uptime - start_ticks / hz).max(0.0))
}

fn nice_span(secs: f64) -> f64 {
    const TICKS: [f64; 12] = [
        5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    TICKS
        .iter()
        .map(|t| 4.0 * t)
        .find(|&span| span >= secs)
        .unwrap_or_else(|| (secs / 14400.0).ceil().max(1.0) * 14400.0)
}

/// `95` -> `1m35s`, `30` -> `30s`, `7200` -> `2h`.
fn ago_label(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_process_age_is_known_and_plausible() {
        let age = process_age().expect("a Linux /proc");
        // This test process started less than an hour ago, and not in the
        // future.
        assert!((0.0..3600.0).contains(&age), "{age}");
    }

    #[test]
    fn spans_are_four_round_intervals() {
        assert_eq!(nice_span(0.0), 20.0);
        assert_eq!(nice_span(7.9), 20.0);
        assert_eq!(nice_span(20.1), 40.0);
        assert_eq!(nice_span(170.0), 240.0);
        assert_eq!(nice_span(30_000.0), 43_200.0);
    }

    #[test]
    fn steps_and_labels() {
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(300.0), 512.0);
        assert_eq!(nice_step(3.0 * 1024.0 * 1024.0), 4.0 * 1024.0 * 1024.0);
        assert_eq!(ago_label(30.0), "30s");
        assert_eq!(ago_label(95.0), "1m35s");
        assert_eq!(ago_label(120.0), "2m");
        assert_eq!(ago_label(7200.0), "2h");
    }

    #[test]
    fn draws_one_polyline_per_line() {
        let now = Instant::now();
        let lines = vec![
            Line {
                id: 1,
                label: "app::leak<&str>".into(),
                points: vec![(now - Duration::from_secs(10), 100), (now, 4000)],
            },
            Line {
                id: 2,
                label: "app::cache".into(),
                points: vec![(now, 50)],
            },
        ];
        let svg = svg(&lines, now);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("app::leak&lt;&amp;str&gt;"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
