//! [`Labeled`] and [`WithLabels`]: labels that follow an async task from
//! poll to poll, whichever thread polls it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::restore::Restore;
use crate::profile::labels;
use crate::recorder;

/// A future whose polls run with a label set: see [`WithLabels`].
///
/// `Send`, `Sync` and `Unpin` exactly when `F` is (it holds `F` and a plain
/// `u32`).
///
/// ```compile_fail
/// // Not `Send` when the future is not.
/// use leakscope::WithLabels;
/// fn assert_send<T: Send>(_: T) {}
/// let rc = std::rc::Rc::new(1);
/// assert_send(async move { drop(rc) }.with_labels(&[("tenant", "a")]));
/// ```
///
/// ```compile_fail
/// // Not `Unpin` when the future is not (an `async` block never is).
/// use leakscope::WithLabels;
/// fn assert_unpin<T: Unpin>(_: T) {}
/// assert_unpin(async {}.with_labels(&[("tenant", "a")]));
/// ```
///
/// ```
/// // And `Send + Sync + Unpin` when it is.
/// use leakscope::WithLabels;
/// fn assert_all<T: Send + Sync + Unpin>(_: T) {}
/// assert_all(std::future::ready(1).with_labels(&[("tenant", "a")]));
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct Labeled<F> {
    /// Structurally pinned: see `poll`.
    inner: F,
    /// The interned label set id set around each poll.
    labels: u32,
}

impl<F> fmt::Debug for Labeled<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = labels::resolve(self.labels);
        f.debug_struct("Labeled")
            .field("labels", &&*set)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Labeled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: it is only ever reached
        // through this projection (never moved out of a pinned `Labeled`,
        // never handed out as `&mut F`), `Labeled` has no `Drop` impl that
        // could move it, and `Labeled<F>: Unpin` only when `F: Unpin` (the
        // auto trait, `u32` being `Unpin`). `labels` is plain data, not
        // pinned.
        let (inner, id) = unsafe {
            let this = self.get_unchecked_mut();
            (Pin::new_unchecked(&mut this.inner), this.labels)
        };
        let _restore = Restore(recorder::swap_labels(id));
        inner.poll(cx)
    }
}

/// Labels for a future: [`with_labels`](WithLabels::with_labels) on any
/// [`Future`]. No runtime dependency.
///
/// # Examples
///
/// ```
/// use leakscope::WithLabels;
///
/// async fn handle(body: usize) -> Vec<u8> {
///     vec![0; body]
/// }
///
/// // With any executor: `tokio::spawn(handle(4096).with_labels(&[("tenant", "a")]))`.
/// let fut = handle(4096).with_labels(&[("tenant", "a"), ("route", "/upload")]);
/// # drop(fut);
/// ```
pub trait WithLabels: Future + Sized {
    /// Wraps the future so that each of its polls runs with `labels` (added
    /// to the labels of the thread calling this, as nested
    /// [`with_labels`](crate::with_labels) would), and the poller's own
    /// labels are restored after each poll. So a task keeps its labels when
    /// a multi-threaded runtime moves it between threads. The labels are
    /// interned now; a poll only stores an id.
    fn with_labels(self, labels: &[(&str, &str)]) -> Labeled<Self> {
        Labeled {
            labels: labels::intern(labels, recorder::current_labels()),
            inner: self,
        }
    }
}

impl<F: Future> WithLabels for F {}
