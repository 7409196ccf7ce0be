//! `Display` for [`Snapshot`] and [`Diff`]: a top-20 table in the manner of
//! `go tool pprof -top` (with the owner's `file:line`), then each listed
//! site's stack from its owner outwards; the alternate form (`{:#}`) prints
//! every frame. Both run under the guard, so printing a report is never
//! recorded.

use std::fmt;

use crate::profile::{
    Diff, Frame, NO_FRAME_POINTERS, NO_SYMBOLS, Site, Snapshot, binary_has_symbols,
    frame_pointers_missing, owner,
};
use crate::recorder::Guard;

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

/// The header line for a full site table (nothing when it never filled).
fn folded_line(out: &mut impl fmt::Write, folded: u64) -> fmt::Result {
    if folded == 0 {
        return Ok(());
    }
    writeln!(
        out,
        "Site table full: about {folded} more distinct stacks were charged to [other] (estimated, not stored)"
    )
}

/// The name a report gives a site: its owner's function (see
/// `Site::owner`), or, for a stack of std frames only, its innermost frame.
pub(crate) fn owner_name(frames: &[Frame]) -> String {
    owner(frames)
        .or(frames.first())
        .map_or_else(|| "<unknown>".to_string(), |f| f.function().to_string())
}

/// [`owner_name`] for a text column: shortened unless `whole`.
fn shown_name(frames: &[Frame], whole: bool) -> String {
    let name = owner_name(frames);
    if whole {
        name
    } else {
        short_name(&name).into_owned()
    }
}

/// The owner's `file:line`, shortened to the crate directory and the path
/// inside it (`app/src/cache.rs:42`), or `""` without line tables.
pub(crate) fn owner_location(frames: &[Frame]) -> String {
    let Some(f) = owner(frames).or(frames.first()) else {
        return String::new();
    };
    let Some(file) = f.file() else {
        return String::new();
    };
    let short = short_path(file);
    match f.line() {
        Some(line) => format!("{short}:{line}"),
        None => short.to_string(),
    }
}

/// `/home/u/app/src/cache.rs` -> `app/src/cache.rs`; a path without a `src`
/// directory keeps its last two components.
fn short_path(file: &str) -> &str {
    let cut = match file.rfind("/src/") {
        Some(i) => file[..i].rfind('/').map(|j| j + 1),
        None => file
            .rfind('/')
            .and_then(|i| file[..i].rfind('/'))
            .map(|j| j + 1),
    };
    &file[cut.unwrap_or(0)..]
}

/// Names longer than this are shortened in text (see [`short_name`]).
const SHORT_NAME_CHARS: usize = 80;

/// A long generic name shortened for text: every generic argument list that
/// follows a name (`poll<F>`, `Vec<T,A>`) becomes `<…>`, so
/// `Harness<BlockingTask<…>,…>::poll` reads `Harness<…>::poll`. Qualified
/// paths (`<T as Trait>::f`) keep their shape. Names up to
/// [`SHORT_NAME_CHARS`] are left whole; `{:#}` prints every name whole.
pub(crate) fn short_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().count() <= SHORT_NAME_CHARS {
        return name.into();
    }
    let mut out = String::with_capacity(SHORT_NAME_CHARS);
    let mut depth = 0usize;
    let mut prev = ' ';
    for c in name.chars() {
        if depth > 0 {
            match c {
                '<' => depth += 1,
                // Not the arrow of a `fn(…) -> T` inside the arguments.
                '>' if prev != '-' => depth -= 1,
                _ => {}
            }
        } else if c == '<' && (prev.is_alphanumeric() || prev == '_' || prev == '}') {
            out.push_str("<…>");
            depth = 1;
        } else {
            out.push(c);
        }
        prev = c;
    }
    out.into()
}

/// One indented line per frame: `function (file:line)`. Unless `whole`,
/// long names are shortened ([`short_name`]) and runs of async runtime
/// frames (and std frames among them) fold into one line, as std's do.
pub(crate) fn write_frames(
    out: &mut impl fmt::Write,
    frames: &[Frame],
    whole: bool,
) -> fmt::Result {
    let machinery = |f: &Frame| f.is_async_runtime() || f.is_std_library();
    let mut i = 0;
    while i < frames.len() {
        if !whole && machinery(&frames[i]) {
            let run = frames[i..].iter().take_while(|f| machinery(f)).count();
            if run >= 2 && frames[i..i + run].iter().any(Frame::is_async_runtime) {
                writeln!(out, "        ... {run} runtime frames")?;
                i += run;
                continue;
            }
        }
        let fr = &frames[i];
        let name = if whole {
            fr.function().into()
        } else {
            short_name(fr.function())
        };
        match (fr.file(), fr.line()) {
            (Some(file), Some(line)) => writeln!(out, "        {name} ({file}:{line})")?,
            (Some(file), None) => writeln!(out, "        {name} ({file})")?,
            _ => writeln!(out, "        {name}")?,
        }
        i += 1;
    }
    if frames.is_empty() {
        writeln!(out, "        <no frames>")?;
    }
    Ok(())
}

/// A site's stack as reports show it: from the owner outwards, with the
/// standard-library frames inside it (allocator and collection internals)
/// folded into one line. `all` prints every frame instead.
pub(crate) fn write_stack(out: &mut impl fmt::Write, frames: &[Frame], all: bool) -> fmt::Result {
    let start = if all {
        0
    } else {
        owner(frames).map_or(0, |o| {
            frames.iter().position(|f| std::ptr::eq(f, o)).unwrap_or(0)
        })
    };
    match start {
        0 => {}
        1 => writeln!(out, "        ... 1 standard-library frame")?,
        n => writeln!(out, "        ... {n} standard-library frames")?,
    }
    write_frames(out, &frames[start..], all)
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

/// `, tenant=a, route=/x` for a labelled site's stack header, `""` without
/// labels (see `with_labels`).
pub(crate) fn labels_suffix(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!(", {}", labels_joined(labels, ", "))
    }
}

/// A label set as `k=v` pairs joined by `sep`.
fn labels_joined(labels: &[(String, String)], sep: &str) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(sep)
}

/// The table's last columns: the owner's location and, when any row has
/// labels, the site's label set, so that two rows of one line of code for
/// two tenants are told apart in the table itself.
struct LastColumns {
    location_width: usize,
    labelled: bool,
}

impl LastColumns {
    fn of<'a>(rows: impl Iterator<Item = (&'a [Frame], &'a [(String, String)])>) -> LastColumns {
        let mut last = LastColumns {
            location_width: "location".len(),
            labelled: false,
        };
        for (frames, labels) in rows {
            last.labelled |= !labels.is_empty();
            last.location_width = last
                .location_width
                .max(owner_location(frames).chars().count());
        }
        last
    }

    fn header(&self) -> String {
        if self.labelled {
            format!("{:<w$}  labels", "location", w = self.location_width)
        } else {
            "location".to_string()
        }
    }

    fn cells(&self, frames: &[Frame], labels: &[(String, String)]) -> String {
        let location = owner_location(frames);
        if self.labelled && !labels.is_empty() {
            // No spaces: the column stays one word for `awk` and friends.
            let labels = labels_joined(labels, ",");
            format!("{location:<w$}  {labels}", w = self.location_width)
        } else {
            location
        }
    }
}

/// Width of the function column: the longest name shown, within bounds (a
/// long generic name pushes the location out rather than wrapping the table).
fn name_width<'a>(stacks: impl Iterator<Item = &'a [Frame]>) -> usize {
    stacks
        .map(|frames| short_name(&owner_name(frames)).chars().count())
        .max()
        .unwrap_or(0)
        .clamp("function".len(), 60)
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
        Guard::run(|| self.write_text(f))
    }
}

impl Snapshot {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Heap: {} live in {} allocations at {} sites ({})",
            human(self.live_bytes() as f64),
            self.live_allocs(),
            self.sites().len(),
            mode(self.sample_interval())
        )?;
        folded_line(f, self.folded_stacks())?;
        let sampled = self.sample_interval() > 1;
        if sampled {
            writeln!(
                f,
                "Estimated from {} samples (recorded live blocks); ±: half-width of a 95% interval",
                self.samples()
            )?;
        }
        write_notes(f)?;
        // Sites with nothing live (they only churned) are left out.
        let top: Vec<&Site> = self
            .sites()
            .iter()
            .filter(|s| s.live_bytes() > 0)
            .take(TOP)
            .collect();
        let width = name_width(top.iter().map(|s| s.frames()));
        let last = LastColumns::of(top.iter().map(|s| (s.frames(), s.labels())));
        if sampled {
            writeln!(
                f,
                "{:>12} {:>11} {:>8} {:>7} {:>7} {:>10}  {:<width$}  {}",
                "live",
                "±95%",
                "samples",
                "live%",
                "sum%",
                "allocs",
                "function",
                last.header()
            )?;
        } else {
            writeln!(
                f,
                "{:>12} {:>7} {:>7} {:>10}  {:<width$}  {}",
                "live",
                "live%",
                "sum%",
                "allocs",
                "function",
                last.header()
            )?;
        }
        let total = self.live_bytes().max(1) as f64;
        let mut sum = 0u64;
        for s in &top {
            sum += s.live_bytes();
            write!(f, "{:>12} ", human(s.live_bytes() as f64))?;
            if sampled {
                let (_, high) = s.live_bytes_interval();
                write!(
                    f,
                    "{:>11} {:>8} ",
                    format!("±{}", human((high - s.live_bytes()) as f64)),
                    s.samples()
                )?;
            }
            writeln!(
                f,
                "{:>6.2}% {:>6.2}% {:>10}  {:<width$}  {}",
                100.0 * s.live_bytes() as f64 / total,
                100.0 * sum as f64 / total,
                s.live_allocs(),
                shown_name(s.frames(), f.alternate()),
                last.cells(s.frames(), s.labels()),
            )?;
        }
        for (i, s) in top.iter().enumerate() {
            writeln!(
                f,
                "\n#{} {} live in {} allocations (site {}{}):",
                i + 1,
                human(s.live_bytes() as f64),
                s.live_allocs(),
                s.id(),
                labels_suffix(s.labels())
            )?;
            write_stack(f, s.frames(), f.alternate())?;
        }
        Ok(())
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Guard::run(|| self.write_text(f))
    }
}

impl Diff {
    fn write_text(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.live_bytes_delta() >= 0 {
            "+"
        } else {
            "-"
        };
        writeln!(
            f,
            "Heap change: {sign}{} live, {:+} allocations, {} sites changed, {} of them in live bytes ({})",
            human(self.live_bytes_delta().unsigned_abs() as f64),
            self.live_allocs_delta(),
            self.sites().len(),
            self.sites()
                .iter()
                .filter(|d| d.live_bytes_delta() != 0)
                .count(),
            mode(self.sample_interval())
        )?;
        folded_line(f, self.folded_stacks())?;
        let sampled = self.sample_interval() > 1;
        if sampled {
            writeln!(
                f,
                "Estimated from {} samples (recorded blocks born or freed in between); ±: half-width of a 95% interval; \"noise\": the interval holds 0",
                self.sites().iter().map(|d| d.samples()).sum::<u64>()
            )?;
        }
        write_notes(f)?;
        // Sites that only churned (allocated and freed as much) are left out.
        let top: Vec<_> = self
            .sites()
            .iter()
            .filter(|d| d.live_bytes_delta() != 0)
            .take(TOP)
            .collect();
        let width = name_width(top.iter().map(|d| d.frames()));
        let last = LastColumns::of(top.iter().map(|d| (d.frames(), d.labels())));
        if sampled {
            writeln!(
                f,
                "{:>13} {:>11} {:>5} {:>12} {:>11}  {:<width$}  {}",
                "live change",
                "±95%",
                "",
                "live now",
                "allocs",
                "function",
                last.header()
            )?;
        } else {
            writeln!(
                f,
                "{:>13} {:>12} {:>11}  {:<width$}  {}",
                "live change",
                "live now",
                "allocs",
                "function",
                last.header()
            )?;
        }
        for d in &top {
            let s = if d.live_bytes_delta() >= 0 { "+" } else { "-" };
            write!(
                f,
                "{:>13} ",
                format!("{s}{}", human(d.live_bytes_delta().unsigned_abs() as f64))
            )?;
            if sampled {
                let (_, high) = d.live_bytes_delta_interval();
                let half = high.saturating_sub(d.live_bytes_delta()).max(0);
                write!(
                    f,
                    "{:>11} {:>5} ",
                    format!("±{}", human(half as f64)),
                    if d.within_noise() { "noise" } else { "" }
                )?;
            }
            writeln!(
                f,
                "{:>12} {:>+11}  {:<width$}  {}",
                human(d.live_bytes() as f64),
                d.live_allocs_delta(),
                shown_name(d.frames(), f.alternate()),
                last.cells(d.frames(), d.labels()),
            )?;
        }
        for (i, d) in top.iter().enumerate() {
            let s = if d.live_bytes_delta() >= 0 { "+" } else { "-" };
            writeln!(
                f,
                "\n#{} {s}{} live, {:+} allocations (site {}{}):",
                i + 1,
                human(d.live_bytes_delta().unsigned_abs() as f64),
                d.live_allocs_delta(),
                d.id(),
                labels_suffix(d.labels())
            )?;
            write_stack(f, d.frames(), f.alternate())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{human, short_name, short_path};

    #[test]
    fn long_generic_names_are_shortened() {
        assert_eq!(short_name("app::poll<F>"), "app::poll<F>");
        let long = format!(
            "<tokio::runtime::task::harness::Harness<{}, S> as Foo>::poll<F>",
            "tokio::runtime::blocking::task::BlockingTask<alloc::boxed::Box<dyn FnOnce()>>"
        );
        assert_eq!(
            short_name(&long),
            "<tokio::runtime::task::harness::Harness<…> as Foo>::poll<…>"
        );
        // The generic arguments after a closure or async block, too.
        let block = format!(
            "<F as axum::handler::Handler<T, S>>::call::{{async_block#0}}<fn({}) -> app::Env, ()>",
            "axum::extract::path::Path<alloc::string::String>"
        );
        assert_eq!(
            short_name(&block),
            "<F as axum::handler::Handler<…>>::call::{async_block#0}<…>"
        );
    }

    #[test]
    fn short_paths() {
        assert_eq!(short_path("/home/u/app/src/cache.rs"), "app/src/cache.rs");
        assert_eq!(
            short_path("/x/hashbrown-0.16.1/src/raw/mod.rs"),
            "hashbrown-0.16.1/src/raw/mod.rs"
        );
        assert_eq!(short_path("/srv/app/examples/leak.rs"), "examples/leak.rs");
        assert_eq!(short_path("main.rs"), "main.rs");
        assert_eq!(short_path("src/main.rs"), "src/main.rs");
    }

    #[test]
    fn human_units() {
        assert_eq!(human(512.0), "512 B");
        assert_eq!(human(1536.0), "1.5 KiB");
        assert_eq!(human(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(human(-2.0 * 1024.0 * 1024.0), "-2.0 MiB");
    }
}
