//! Context labels: which tenant, route or task an allocation was made for.
//!
//! A label set is interned once (`profile::labels`) into a small id; the
//! thread's current id lives in the recorder's thread-local state, and the
//! recorder keys each site by (stack, label set id), reading the id only
//! when an allocation is recorded. Setting labels is a thread-local store
//! (plus, for a set this thread never used, one lock).

mod future;
#[cfg(feature = "tracing")]
pub(crate) mod layer;
mod restore;

pub use future::{Labeled, WithLabels};

use crate::profile::labels;
use crate::recorder;
use restore::Restore;

/// Runs `f` with `labels` added to this thread's labels: allocations
/// recorded while it runs carry them, and so do their frees, whichever
/// thread frees (a block is charged to the site that allocated it).
///
/// Nested calls add to the outer set; a key already set takes the inner
/// value. The outer set is restored when `f` returns or panics. Threads do
/// not inherit labels: a thread spawned inside `f` starts unlabelled, and
/// an async task keeps its labels across threads with
/// [`WithLabels::with_labels`].
///
/// The labels of a site are [`Site::labels`](crate::Site::labels), the
/// memory per value is [`Snapshot::by_label`](crate::Snapshot::by_label),
/// and every export carries them (pprof sample labels, JSON, collapsed
/// stacks and flame graphs as root frames, Prometheus). Distinct label
/// sets are bounded by [`Tracker::max_label_sets`](crate::Tracker::max_label_sets),
/// and in bytes: a key or value longer than [`MAX_LABEL_LEN`](crate::MAX_LABEL_LEN)
/// (256 bytes) is cut there and ends in `…`, and once the interned sets'
/// strings reach [`MAX_LABEL_BYTES`](crate::MAX_LABEL_BYTES) (4 MiB), new
/// sets go to the overflow set `leakscope=other` as past the count cap.
/// Interning a set never waits for a snapshot that symbolizes.
///
/// # Examples
///
/// ```
/// let cache: Vec<u8> = leakscope::with_labels(&[("tenant", "a")], || {
///     leakscope::with_labels(&[("route", "/upload")], || vec![0; 4096]) // tenant=a, route=/upload
/// });
/// # drop(cache);
/// ```
// Never inlined: the scope is then one frame of its own in every stack it
// labels, whatever the caller's codegen units (generic code lands in the
// caller's units by a hash of the crate, so whether it got inlined changed
// with unrelated edits), and profilers that do not expand inlined frames
// (`go tool pprof` symbolizing a stripped build's profile later) name it.
// One call per labelled scope, not per allocation.
#[inline(never)]
pub fn with_labels<R>(labels: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
    let id = labels::intern(labels, recorder::current_labels());
    let _restore = Restore(recorder::swap_labels(id));
    f()
}
