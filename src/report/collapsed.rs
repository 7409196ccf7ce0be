//! Folded ("collapsed") stacks: `outermost;...;innermost <bytes>` a line, the
//! input format of inferno and flamegraph.pl. Needs no feature.

use std::collections::BTreeMap;
use std::io::Write;

use super::row::Row;
use crate::profile::Frame;
use crate::profile::{Diff, Snapshot};
use crate::recorder::Guard;

/// The folded form of one stack, outermost first.
///
/// `;` separates frames in this format, so a `;` inside a name (an array type
/// such as `[u8; 16]` in a generic argument) becomes `,`; otherwise the name
/// would be split into two bogus frames. Line breaks are replaced for the same
/// reason.
pub(crate) fn fold(frames: &[Frame]) -> String {
    fold_names(frames.iter().map(Frame::function))
}

/// [`fold`] with the site's labels as root frames, `key=value` each, in key
/// order: `tenant=a;route=/x;main;...`, so a flame graph splits by label
/// first (same escaping as the frames).
pub(crate) fn fold_labelled(labels: &[(String, String)], frames: &[Frame]) -> String {
    let mut out = String::new();
    for (k, v) in labels {
        push_escaped(&mut out, k);
        out.push('=');
        push_escaped(&mut out, v);
        out.push(';');
    }
    out.push_str(&fold(frames));
    out
}

fn push_escaped(out: &mut String, name: &str) {
    out.extend(name.chars().map(|c| match c {
        ';' => ',',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

/// [`fold`] on names given innermost first.
fn fold_names<'a>(names: impl DoubleEndedIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, name) in names.rev().enumerate() {
        if i > 0 {
            out.push(';');
        }
        push_escaped(&mut out, name);
    }
    if out.is_empty() {
        out.push_str("[unknown]");
    }
    out
}

/// Folded stacks with a positive `inuse_space`, merged and sorted.
///
/// Two sites can fold to the same line (they differ only in addresses, say two
/// calls from one function), so lines are merged by their text; inferno needs
/// its input sorted, and a sorted file diffs well between runs.
pub(crate) fn lines(rows: impl Iterator<Item = Row>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows {
        if let Ok(bytes) = u64::try_from(r.inuse_space) {
            if bytes > 0 {
                *out.entry(fold_labelled(&r.labels, &r.frames)).or_default() += bytes;
            }
        }
    }
    out
}

fn write(rows: impl Iterator<Item = Row>, mut w: impl Write) -> Result<(), crate::Error> {
    let mut text = String::new();
    for (stack, bytes) in lines(rows) {
        text.push_str(&stack);
        text.push(' ');
        text.push_str(&bytes.to_string());
        text.push('\n');
    }
    // One write: a failing writer fails the whole report, never half of it.
    w.write_all(text.as_bytes())?;
    w.flush()?;
    Ok(())
}

impl Snapshot {
    /// Writes the live heap as folded stacks, one line per call stack:
    /// `outermost;...;innermost <live bytes>`, the input of `inferno-flamegraph`
    /// and `flamegraph.pl`.
    ///
    /// Frames are function names, inlined frames included, standard-library
    /// frames kept. Sites with no live bytes are left out, so the values add
    /// up to [`Snapshot::live_bytes`]. A `;` inside a function name is written
    /// as `,`, because `;` separates frames. A labelled site (see
    /// [`with_labels`](crate::with_labels)) starts with its labels as root
    /// frames, `tenant=a;route=/x;main;...`, so a flame graph of it splits
    /// by label first.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the writer fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let snap = leakscope::snapshot();
    /// let mut out = Vec::new();
    /// snap.write_collapsed(&mut out)?;
    /// let text = String::from_utf8(out).unwrap();
    /// let sum: u64 = text.lines().filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum();
    /// assert_eq!(sum, snap.live_bytes());
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn write_collapsed<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| write(self.rows(), w))
    }
}

impl Diff {
    /// Writes the growth as folded stacks: the sites whose live bytes grew,
    /// `outermost;...;innermost <growth in bytes>` a line. Sites that shrank
    /// or stayed level are left out (the format has no negative values).
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the writer fails.
    ///
    /// # Examples
    ///
    /// ```
    /// let base = leakscope::snapshot();
    /// let kept: Vec<u64> = (0..1000).collect();
    /// let diff = leakscope::snapshot().diff(&base);
    /// diff.write_collapsed(std::io::stdout())?;
    /// # drop(kept);
    /// # Ok::<(), leakscope::Error>(())
    /// ```
    pub fn write_collapsed<W: Write>(&self, w: W) -> Result<(), crate::Error> {
        // Under the guard: nothing an export allocates is recorded.
        Guard::run(|| write(self.rows(), w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_is_outermost_first_and_escapes_separators() {
        assert_eq!(fold(&[]), "[unknown]");
        assert_eq!(
            fold_names(["inner<[u8; 4]>", "outer"].into_iter()),
            "outer;inner<[u8, 4]>"
        );
        assert_eq!(fold_names(["a\nb"].into_iter()), "a b");
        let labels = [
            ("route".to_string(), "/x;y".to_string()),
            ("tenant".to_string(), "a".to_string()),
        ];
        assert_eq!(fold_labelled(&labels, &[]), "route=/x,y;tenant=a;[unknown]");
    }
}
