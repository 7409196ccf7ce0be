//! [`Restore`], shared by `with_labels` and `Labeled`: in a file of its own
//! so that `labels/future.rs` does not import its parent module (which
//! re-exports it: no two files import each other).

use crate::recorder;

/// Puts a thread's previous label set id back when dropped (on return and
/// on unwind alike).
pub(crate) struct Restore(pub(crate) u32);

impl Drop for Restore {
    fn drop(&mut self) {
        recorder::swap_labels(self.0);
    }
}
