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
mod fork;
mod guard;
mod header;
mod live_list;
mod record;
mod registry;
mod sampling;
mod sites;
mod stack;
mod sync;
mod tracker;

use std::sync::Arc;

pub use sampling::{DEFAULT_SAMPLE_INTERVAL, set_sample_interval};
pub use stack::Unwinder;
pub use tracker::{DEFAULT_MAX_LABEL_SETS, DEFAULT_MAX_SITES, MAX_SITES_LIMIT, Tracker};

// The read-only interface of the query side. Each item only reads (or, for
// the guard, marks the calling thread); none of them is called from inside
// the allocator.
pub(crate) use book::{COUNT_ONE, LiveBlock, Totals};
pub(crate) use clock::{instant_of, now_us};
pub(crate) use guard::Guard;
pub(crate) use record::{est_bytes, est_count};
pub(crate) use sampling::current_interval;
pub(crate) use sites::OTHER_FRAME;
pub(crate) use sync::ForkOnce;
pub(crate) use sync::RawSpinLock as SpinLock;

// For the retainer scan (query side, in a forked child for the first two).
pub(crate) use book::{for_each_book_range, for_each_live_block};
/// Bytes of the header right below every recorded block's user pointer
/// (its live-list links are user pointers of other blocks: the sampled
/// retainer scan must not read them as roots).
pub(crate) const BLOCK_HEADER_BYTES: usize = header::HEADER_SIZE;
pub(crate) use registry::{ThreadInfo, threads};

/// Registers the calling thread now if it never recorded anything (so the
/// retainer scan sees its stack). Must run outside the guard (registering
/// takes it).
pub(crate) fn register_current_thread() {
    // Before this thread takes the registry lock (see `registry::register`).
    fork::install();
    let _ = guard::STATE.try_with(|s| {
        if s.registered.get() == 0 {
            registry::register(s);
        }
    });
}

/// Registers the recorder's fork handlers now if no recorded event has yet
/// (the query side registers its own after these, so that its `prepare`
/// runs first: see the lock order in ARCHITECTURE.md).
pub(crate) fn install_fork_handlers() {
    fork::install();
}

/// The recorder's state at one moment, as a snapshot needs it.
pub(crate) struct HeapView {
    /// The raw stack of every site, indexed by site id (innermost frame
    /// first); id 0 is the overflow site, whose only frame is [`OTHER_FRAME`].
    pub(crate) stacks: Vec<Arc<[usize]>>,
    /// The label set id of every site in `stacks` (same indexing).
    pub(crate) labels: Vec<u32>,
    /// Every live recorded block (of any site id, also ids past `stacks`).
    pub(crate) blocks: Vec<LiveBlock>,
    /// The counters of each site in `stacks`, summed over every book.
    pub(crate) totals: Vec<Totals>,
    /// About how many distinct stacks were charged to the overflow site.
    pub(crate) folded_stacks: u64,
}

/// Copies the recorder's state (under the guard, taken here if the caller
/// does not hold it).
///
/// **Consistent per site:** every block in `blocks` of a site in `stacks` is
/// counted in that site's `totals`, so live <= total whatever other threads
/// do. That holds because of the order: the stacks first (fixing the sites),
/// the live lists next, the counters last; and a block is counted before it
/// is linked (`record`), the link and the copy ordered by the list's lock.
/// (Frees are unlinked before they are counted, which can only make live
/// smaller than allocated minus freed for a moment, never larger than
/// allocated.)
pub(crate) fn heap_view() -> HeapView {
    fork::install();
    let (stacks, labels) = Guard::with(sites::all_sites);
    let blocks = book::live_blocks();
    let totals = book::gather(stacks.len());
    let folded_stacks = sites::folded_stacks();
    HeapView {
        stacks,
        labels,
        blocks,
        totals,
        folded_stacks,
    }
}

/// True once `Unwinder::FramePointers` found the frame-pointer walk wrong
/// (a build without frame pointers) and fell back to `backtrace`. The
/// recorder only sets the flag; the query side logs the warning.
pub(crate) use stack::frame_pointers_untrusted;

/// The raw stack of every site, indexed by site id (innermost frame first),
/// and its label set id (under the guard, taken here if need be).
pub(crate) fn site_stacks() -> (Vec<Arc<[usize]>>, Vec<u32>) {
    fork::install();
    Guard::with(sites::all_sites)
}

/// This thread's label set id (0 = none): what its recorded allocations
/// are keyed by. For the query side (`with_labels`, `Labeled`).
pub(crate) fn current_labels() -> u32 {
    guard::labels()
}

/// Makes `id` this thread's label set id, returning the previous one: a
/// plain thread-local store. The only write the query side makes into the
/// recorder's state; the allocation path reads the id only when it records.
pub(crate) fn swap_labels(id: u32) -> u32 {
    guard::swap_labels(id)
}

/// The tracker's `max_label_sets`, once it recorded anything (the recorder
/// notes it on the recorded path; it is the tracker's `const` configuration).
pub(crate) fn label_cap() -> Option<u32> {
    sites::label_cap()
}

/// The counters of sites `0..nsites`, summed over every thread's book.
pub(crate) fn site_totals(nsites: usize) -> Vec<Totals> {
    book::gather(nsites)
}

/// Bytes the recorder itself holds: books, counter chunks, block headers and
/// padding, the site table (its index, its stacks, the sketch) and the thread
/// registry.
pub(crate) fn overhead_bytes() -> u64 {
    fork::install();
    book::overhead_bytes() + sites::overhead_bytes() + registry::overhead_bytes()
}
