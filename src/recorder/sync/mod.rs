//! The recorder's synchronisation primitives, in one place, owning what they
//! guard: [`SpinLock<T>`] (the recorder's only lock kind), the identity of
//! the thread that holds every tracker lock across a `fork`, and
//! [`ForkOnce`], the once-per-process registration of fork handlers that a
//! forked child never waits on.
//!
//! The primitives reach atomics and cells only through the `facade`
//! module, as tokio does (`tokio/src/loom/`): the loom models
//! (`loom_*.rs`, run with `RUSTFLAGS="--cfg loom" cargo test --release --lib
//! loom`) compile the same source files again against loom's types and
//! check every interleaving of small worlds. The normal build keeps `const`
//! constructors, so the recorder's locks are statics that exist before the
//! first allocation.
//!
//! Nothing here imports anything else of the recorder: the fork handlers
//! (`recorder/fork.rs`) use these primitives, never the reverse.

mod facade;
mod fork_once;
mod holder;
mod spin;

pub(crate) use facade::maybe_const_fn;
pub(crate) use fork_once::ForkOnce;
pub(crate) use holder::{forget_holder, hold_for_fork};
pub(crate) use spin::{RawSpinLock, SpinLock};

#[cfg(all(test, loom))]
mod loom_protocols;
#[cfg(all(test, loom))]
mod loom_spin;
