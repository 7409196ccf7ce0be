//! The allocation path: everything [`GlobalAlloc`](std::alloc::GlobalAlloc)
//! can reach, and nothing else.
//!
//! Rules for every file in this folder (an allocator bug is the user's crash):
//! - **Nothing here imports from outside this folder** (only `crate::Error`,
//!   for `set_sample_interval`). The query side (`profile`, `leaks`, `report`)
//!   reaches the recorder only through the read-only interface below.
//!   Check: `grep -rn "crate::" src/recorder/` names only `crate::Error`.
//! - Every path that can allocate runs under the reentrancy guard
//!   ([`Guard`]), so the tracker never records or recurses into itself.
//! - No lock is held while calling out to code that could take it again
//!   (the inner allocator included); the lock order is in ARCHITECTURE.md.
//! - No panics: failures fall back to plain forwarding to the inner allocator.
//! - The common path (an unsampled allocation and its free) touches only the
//!   thread-local countdown and one address bit: no lock, no lookup, no
//!   shared write.

mod book;
mod clock;
mod guard;
mod header;
mod live_list;
mod record;
mod registry;
mod sampling;
mod sites;
mod spin;
mod stack;
mod tracker;

use std::sync::Arc;

pub use sampling::{DEFAULT_SAMPLE_INTERVAL, set_sample_interval};
pub use stack::Unwinder;
pub use tracker::Tracker;

// The read-only interface of the query side. Each item only reads (or, for
// the guard, marks the calling thread); none of them is called from inside
// the allocator.
pub(crate) use book::{COUNT_ONE, LiveBlock, Totals};
pub(crate) use clock::{instant_of, now_us};
pub(crate) use guard::Guard;
pub(crate) use record::{est_bytes, est_count};
pub(crate) use sampling::current_interval;
/// True once `Unwinder::FramePointers` found the frame-pointer walk wrong
/// (a build without frame pointers) and fell back to `backtrace`. The
/// recorder only sets the flag; the query side logs the warning.
pub(crate) use stack::frame_pointers_untrusted;

/// The raw stack of every site, indexed by site id (innermost frame first).
/// Must run under the guard.
pub(crate) fn site_stacks() -> Vec<Arc<[usize]>> {
    sites::all_stacks()
}

/// The counters of sites `0..nsites`, summed over every thread's book.
pub(crate) fn site_totals(nsites: usize) -> Vec<Totals> {
    book::gather(nsites)
}

/// A copy of every live recorded block. Must run under the guard.
pub(crate) fn live_blocks() -> Vec<LiveBlock> {
    book::live_blocks()
}

/// Bytes the recorder itself holds: books, counter chunks, block headers and
/// padding, and the site table for `stacks` (as returned by [`site_stacks`]).
pub(crate) fn overhead_bytes(stacks: &[Arc<[usize]>]) -> u64 {
    book::overhead_bytes() + sites::overhead_bytes(stacks)
}
