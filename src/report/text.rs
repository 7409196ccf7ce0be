//! `Display` for [`Snapshot`] and [`Diff`]: a top-20 table in the manner of
//! `go tool pprof -top`, then each listed site's stack.

use std::fmt;

use crate::profile::Frame;
use crate::profile::{Diff, Snapshot};
use crate::profile::{NO_FRAME_POINTERS, NO_SYMBOLS, binary_has_symbols, frame_pointers_missing};

const TOP: usize = 20;

/// Bytes in binary units, e.g. `1.5 MiB`.
pub(crate) fn human(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut u = 0;
    while v.abs() >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", units[0])
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The innermost frame outside the standard library (the "owner" of a site).
pub(crate) fn owner(frames: &[Frame]) -> String {
    frames
        .iter()
        .find(|f| !f.is_std_library())
        .or(frames.first())
        .map_or_else(|| "<unknown>".to_string(), |f| f.function().to_string())
}

/// One indented line per frame: `function (file:line)`.
pub(crate) fn write_frames(out: &mut impl fmt::Write, frames: &[Frame]) -> fmt::Result {
    for fr in frames {
        match (fr.file(), fr.line()) {
            (Some(file), Some(line)) => writeln!(out, "        {} ({file}:{line})", fr.function())?,
            (Some(file), None) => writeln!(out, "        {} ({file})", fr.function())?,
            _ => writeln!(out, "        {}", fr.function())?,
        }
    }
    if frames.is_empty() {
        writeln!(out, "        <no frames>")?;
    }
    Ok(())
}

/// How the figures were obtained, for report headers and titles.
pub(crate) fn mode(interval: u64) -> String {
    if interval <= 1 {
        "exact: every allocation recorded".to_string()
    } else {
        format!(
            "sampled every {} on average; figures are estimates",
            human(interval as f64)
        )
    }
}

/// The header's notes on the whole process, one line each: stacks captured
/// the slow way because frame pointers are missing, or a binary without
/// symbols. Shared by every report that has a header.
pub(crate) fn process_notes() -> Vec<&'static str> {
    let mut notes = Vec::new();
    if frame_pointers_missing() {
        notes.push(NO_FRAME_POINTERS);
    }
    if !binary_has_symbols() {
        notes.push(NO_SYMBOLS);
    }
    notes
}

fn write_notes(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for note in process_notes() {
        writeln!(f, "Note: {note}")?;
    }
    Ok(())
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Heap: {} live in {} allocations at {} sites ({})",
            human(self.live_bytes() as f64),
            self.live_allocs(),
            self.sites().len(),
            mode(self.sample_interval())
        )?;
        write_notes(f)?;
        writeln!(
            f,
            "{:>12} {:>7} {:>7} {:>10}  function",
            "live", "live%", "sum%", "allocs"
        )?;
        let total = self.live_bytes().max(1) as f64;
        let mut sum = 0u64;
        let top = &self.sites()[..self.sites().len().min(TOP)];
        for s in top {
            sum += s.live_bytes();
            writeln!(
                f,
                "{:>12} {:>6.2}% {:>6.2}% {:>10}  {}",
                human(s.live_bytes() as f64),
                100.0 * s.live_bytes() as f64 / total,
                100.0 * sum as f64 / total,
                s.live_allocs(),
                owner(s.frames())
            )?;
        }
        for (i, s) in top.iter().enumerate() {
            writeln!(
                f,
                "\n#{} {} live in {} allocations (site {}):",
                i + 1,
                human(s.live_bytes() as f64),
                s.live_allocs(),
                s.id()
            )?;
            write_frames(f, s.frames())?;
        }
        Ok(())
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.live_bytes_delta() >= 0 {
            "+"
        } else {
            "-"
        };
        writeln!(
            f,
            "Heap change: {sign}{} live, {:+} allocations, {} sites changed ({})",
            human(self.live_bytes_delta().unsigned_abs() as f64),
            self.live_allocs_delta(),
            self.sites().len(),
            mode(self.sample_interval())
        )?;
        write_notes(f)?;
        writeln!(
            f,
            "{:>13} {:>12} {:>11}  function",
            "live change", "live now", "allocs"
        )?;
        // Sites that only churned (allocated and freed as much) are left out.
        let top: Vec<_> = self
            .sites()
            .iter()
            .filter(|d| d.live_bytes_delta() != 0)
            .take(TOP)
            .collect();
        for d in &top {
            let s = if d.live_bytes_delta() >= 0 { "+" } else { "-" };
            writeln!(
                f,
                "{:>13} {:>12} {:>+11}  {}",
                format!("{s}{}", human(d.live_bytes_delta().unsigned_abs() as f64)),
                human(d.live_bytes() as f64),
                d.live_allocs_delta(),
                owner(d.frames())
            )?;
        }
        for (i, d) in top.iter().enumerate() {
            let s = if d.live_bytes_delta() >= 0 { "+" } else { "-" };
            writeln!(
                f,
                "\n#{} {s}{} live, {:+} allocations (site {}):",
                i + 1,
                human(d.live_bytes_delta().unsigned_abs() as f64),
                d.live_allocs_delta(),
                d.id()
            )?;
            write_frames(f, d.frames())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn human_units() {
        assert_eq!(human(512.0), "512 B");
        assert_eq!(human(1536.0), "1.5 KiB");
        assert_eq!(human(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(human(-2.0 * 1024.0 * 1024.0), "-2.0 MiB");
    }
}
