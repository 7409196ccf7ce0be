//! SVG flame graphs of live bytes (or of growth), rendered by inferno from the
//! folded stacks of `collapsed.rs`.

use std::io::Write;

use inferno::flamegraph::{self, Options, Palette, color::BasicPalette};

use super::collapsed;
use super::row::Row;
use super::text::{human, mode};
use crate::profile::{Diff, Snapshot};
use crate::recorder::Guard;

fn write(
    rows: impl Iterator<Item = Row>,
    title: String,
    interval: u64,
    mut w: impl Write,
) -> Result<(), crate::Error> {
    let lines: Vec<String> = collapsed::lines(rows)
        .into_iter()
        .map(|(stack, bytes)| format!("{stack} {bytes}"))
        .collect();
    let mut svg = Vec::new();
    if lines.is_empty() {
        // inferno renders "ERROR: No valid input" and fails on an empty
        // profile; nothing live (or nothing grew) is a valid answer, so say
        // that in an SVG of our own.
        empty_svg(&mut svg, &title);
    } else {
        let mut opt = Options::default();
        opt.title = title;
        opt.subtitle = Some(mode(interval));
        opt.count_name = "bytes".to_string();
        opt.name_type = "Function:".to_string();
        // The memory palette (greens), as flamegraph.pl's `--colors mem`.
        opt.colors = Palette::Basic(BasicPalette::Mem);
        // Colour by name so a function keeps its colour from one report to
        // the next, which makes two flame graphs comparable by eye.
        opt.hash = true;
        // `collapsed::lines` is already sorted (a BTreeMap's order).
        opt.no_sort = true;
        flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut svg)
            .map_err(|e| crate::Error::Encode(format!("flame graph: {e}")))?;
    }
    // Rendered in memory first: a failing writer fails the whole report.
    w.write_all(&svg)?;
    w.flush()?;
    Ok(())
}

fn empty_svg(out: &mut Vec<u8>, title: &str) {
    let title = escape(title);
    let svg = format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"60\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <title>{title}</title>\n\
         <text x=\"600\" y=\"24\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"17\">{title}</text>\n\
         <text x=\"600\" y=\"48\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"12\">no call stack to show</text>\n\
         </svg>\n"
    );
    out.extend_from_slice(svg.as_bytes());
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Snapshot {
    /// Writes an SVG flame graph of the live heap: each box is a function,
    /// its width the live bytes allocated under it; the title gives the total
    /// and the sample interval, each box's tooltip its bytes.
    ///
    /// Open the file in a web browser (the SVG is interactive: click to zoom,
    /// Ctrl-F to search). The stacks are those of
    /// [`write_collapsed`](Snapshot::write_collapsed). A snapshot with nothing
    /// live gives a small SVG that says so.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the writer fails,
    /// [`Error::Encode`](crate::Error::Encode) when the SVG cannot be rendered.
    ///
    /// # Examples
    ///
    /// ```
    /// let snap = leakscope::snapshot();
    /// let mut svg = Vec::new();
    /// snap.write_flamegraph(&mut svg)?;
    /// assert!(String::from_utf8(svg).unwrap().contains("<svg"));
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn write_flamegraph<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| {
            let title = format!(
                "Live heap: {} in {} allocations",
                human(self.live_bytes() as f64),
                self.live_allocs()
            );
            write(self.rows(), title, self.sample_interval(), w)
        })
    }
}

impl Diff {
    /// Writes an SVG flame graph of the growth: only the sites whose live
    /// bytes grew are drawn, each as wide as its growth (a flame graph has no
    /// negative widths; the shrinking sites are in
    /// `write_pprof` and `write_json`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the writer fails,
    /// [`Error::Encode`](crate::Error::Encode) when the SVG cannot be rendered.
    ///
    /// # Examples
    ///
    /// ```
    /// let base = leakscope::snapshot();
    /// let kept = vec![0u8; 4096];
    /// let diff = leakscope::snapshot().diff(&base);
    /// diff.write_flamegraph(std::io::sink())?;
    /// # drop(kept);
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn write_flamegraph<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| {
            let grown: i64 = self
                .sites()
                .iter()
                .map(|d| d.live_bytes_delta().max(0))
                .sum();
            let title = format!(
                "Heap growth: +{} in the sites that grew (net {}{})",
                human(grown as f64),
                if self.live_bytes_delta() < 0 {
                    "-"
                } else {
                    "+"
                },
                human(self.live_bytes_delta().unsigned_abs() as f64)
            );
            write(self.rows(), title, self.sample_interval(), w)
        })
    }
}
