//! The recorder: the slow paths the allocator takes for sampled allocations
//! and for frees and reallocs of recorded blocks.
//!
//! Each function here holds the reentrancy guard while it works and falls
//! back to plain forwarding when it cannot record (guard already held, an
//! alignment we do not record). Ordering rules (addresses are reused at once
//! by the inner allocator):
//! - a block's record is written and linked only after the inner allocation
//!   returned it;
//! - a block's record is unlinked and its magic cleared before the inner
//!   allocator gets it back (free, or a realloc that may move it); if an inner
//!   realloc fails, the old record is restored.

use std::alloc::{GlobalAlloc, Layout};

use super::book::{self, Book, COUNT_ONE, Own};
use super::guard::{self, Guard, Held};
use super::header::{self, Header};
use super::stack::{self, Stack, Unwinder};
use super::{clock, fork, sites};

/// Estimated bytes a block of `size` with `weight` stands for.
#[inline]
pub(crate) fn est_bytes(size: u64, weight: f32) -> u64 {
    if weight == 1.0 {
        size
    } else {
        (size as f64 * weight as f64).round() as u64
    }
}

/// Estimated allocations (fixed point, `COUNT_ONE` = 1) a block stands for.
#[inline]
pub(crate) fn est_count(weight: f32) -> u64 {
    if weight == 1.0 {
        COUNT_ONE
    } else {
        (weight as f64 * COUNT_ONE as f64).round() as u64
    }
}

/// How a tracker records: its stack capture and its site cap. Fixed by the
/// tracker's `const` configuration and passed down to each recorded event.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Recording {
    pub(crate) unwinder: Unwinder,
    /// Most distinct stacks interned; see `sites`.
    pub(crate) max_sites: u32,
    /// Most distinct label sets the query side interns (`Tracker::max_label_sets`).
    pub(crate) max_label_sets: u32,
}

/// Captures the stack and finds its site: (stack, this thread's label set).
/// Under the guard. The only place the allocation path reads the label id.
#[inline(always)]
fn site_here(how: Recording, book: Own, held: Held<'_>) -> u32 {
    let mut stack = Stack::new();
    stack::capture(how.unwinder, &mut stack);
    sites::note_label_cap(how.max_label_sets);
    sites::site_of(&stack, guard::labels(), book, how.max_sites, held)
}

/// Writes the header of a freshly placed block, counts it and links it.
///
/// # Safety
/// `user` must have `header::HEADER_SIZE` bytes of ours below it.
#[inline(always)]
unsafe fn book_new(
    user: *mut u8,
    size: usize,
    off: usize,
    align: usize,
    site: u32,
    weight: f32,
    book: &Book,
) {
    let h = Header::new(
        user as usize,
        size,
        off,
        book.index(),
        site,
        weight,
        clock::birth_us(),
    );
    // Counted before it is linked: a snapshot copies the lists first and
    // reads the counters after, so every block it sees is already in its
    // site's totals (live <= total, see `super::heap_view`). The list lock
    // orders the two: our counter stores come before the unlock that
    // publishes the link, the snapshot's counter loads after its lock.
    book.count_alloc(
        site,
        est_bytes(size as u64, weight),
        est_count(weight),
        header::pad(align),
    );
    // SAFETY: guaranteed by the caller.
    unsafe { book.list_of(user as usize).link_new(user as usize, h) };
}

/// Takes a recorded block out of the books: unlinks it and clears its magic.
/// The free is not counted yet (see [`count_free`]), so a failed inner
/// realloc can put the record back without a trace.
///
/// # Safety
/// `user` must be a recorded block.
#[inline(always)]
unsafe fn unlink(user: *mut u8) -> Header {
    // Only the fields no other thread writes: the links belong to the list's
    // lock, which is not held yet (see `header::read_fixed`).
    // SAFETY: guaranteed by the caller.
    let h = unsafe { header::read_fixed(user) };
    // SAFETY: a recorded block is in its owner's list.
    unsafe {
        book::by_index(h.book())
            .list_of(user as usize)
            .unlink(user as usize);
        header::clear_magic(user);
    }
    h
}

/// Charges the free of a block to the site that allocated it, in the freeing
/// thread's book.
#[inline(always)]
fn count_free(h: &Header, size: usize, align: usize) {
    book::current().count_free(
        h.site,
        est_bytes(size as u64, h.weight),
        est_count(h.weight),
        header::pad(align),
    );
}

/// Puts a record back after a failed inner realloc.
///
/// # Safety
/// `user` must be the block `h` was read from, unchanged since [`unlink`].
unsafe fn relink(user: *mut u8, h: &Header) {
    // SAFETY: guaranteed by the caller; `h` still holds the block's magic
    // (`unlink` read it before clearing the copy in memory), so writing it
    // back makes the block recognised again.
    unsafe {
        book::by_index(h.book())
            .list_of(user as usize)
            .link_new(user as usize, *h)
    }
}

/// Allocates a recorded block (sampled allocation). Inlined into the
/// allocator's one cold entry point, so the recorded path is one frame.
///
/// # Safety
/// As `GlobalAlloc::alloc` with `layout`.
#[inline(always)]
pub(crate) unsafe fn alloc<A: GlobalAlloc>(
    inner: &A,
    layout: Layout,
    zeroed: bool,
    weight: f32,
    how: Recording,
) -> *mut u8 {
    // SAFETY: (all plain forwards below) the caller's `layout` contract.
    let plain = || unsafe {
        if zeroed {
            inner.alloc_zeroed(layout)
        } else {
            inner.alloc(layout)
        }
    };
    let Some(guard) = Guard::enter() else {
        return plain();
    };
    let Some(il) = header::inner_layout(layout) else {
        return plain();
    };
    // Before this thread takes any tracker lock.
    fork::install();
    super::registry::ensure_registered_guarded();
    let book = book::current();
    let site = site_here(how, book, guard.held());
    // SAFETY: `il` has a non-zero size (it includes the header).
    let base = unsafe {
        if zeroed {
            inner.alloc_zeroed(il)
        } else {
            inner.alloc(il)
        }
    };
    if base.is_null() {
        return base;
    }
    let off = header::choose_off(base as usize, layout.align());
    // SAFETY: `off + layout.size() <= il.size()` (see `header::pad`).
    let user = unsafe { base.add(off) };
    // SAFETY: the header lies in `base..user`, which is ours.
    unsafe {
        book_new(
            user,
            layout.size(),
            off,
            layout.align(),
            site,
            weight,
            &book,
        )
    };
    user
}

/// Frees a recorded block.
///
/// # Safety
/// As `GlobalAlloc::dealloc`, and `header::is_recorded(ptr, layout.align())` holds.
#[cold]
#[inline(never)]
pub(crate) unsafe fn dealloc<A: GlobalAlloc>(inner: &A, ptr: *mut u8, layout: Layout) {
    // No guard: nothing here allocates except the first use of a book or of
    // a counter chunk, which take the guard themselves. (The guard decides
    // what gets *recorded*; a free is always booked.)
    // SAFETY: recorded blocks always have an inner layout.
    let il = unsafe { header::inner_layout(layout).unwrap_unchecked() };
    // SAFETY: guaranteed by the caller.
    let h = unsafe { unlink(ptr) };
    count_free(&h, layout.size(), layout.align());
    // SAFETY: the block was allocated by `inner` at `ptr - off` with `il`.
    unsafe { inner.dealloc(ptr.sub(h.off()), il) };
}

/// Reallocates an unrecorded block into a recorded one (the realloc was
/// sampled): the inner `realloc` grows it by the header padding, then the
/// data moves up to make room for the header.
///
/// # Safety
/// As `GlobalAlloc::realloc`; `ptr` is not recorded.
pub(crate) unsafe fn realloc_into<A: GlobalAlloc>(
    inner: &A,
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
    weight: f32,
    how: Recording,
) -> *mut u8 {
    // SAFETY: the caller's contract.
    let plain = || unsafe { inner.realloc(ptr, layout, new_size) };
    let Some(guard) = Guard::enter() else {
        return plain();
    };
    // SAFETY: `new_size` with the old alignment is a valid layout (caller's contract).
    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
    let Some(il) = header::inner_layout(new_layout) else {
        return plain();
    };
    fork::install();
    let book = book::current();
    let site = site_here(how, book, guard.held());
    // SAFETY: `ptr` was allocated by `inner` with `layout` (it is unrecorded).
    let base = unsafe { inner.realloc(ptr, layout, il.size()) };
    if base.is_null() {
        return base;
    }
    let off = header::choose_off(base as usize, layout.align());
    // SAFETY: both ranges lie within the new inner block of `il.size()` bytes.
    let user = unsafe {
        let user = base.add(off);
        std::ptr::copy(base, user, layout.size().min(new_size));
        user
    };
    // SAFETY: the header lies in `base..user`, which is ours.
    unsafe { book_new(user, new_size, off, layout.align(), site, weight, &book) };
    user
}

/// Reallocates a recorded block. Sampled (`weight` is `Some`): the new block
/// is recorded at the realloc's own stack; otherwise it becomes unrecorded.
///
/// # Safety
/// As `GlobalAlloc::realloc`; `ptr` is recorded.
pub(crate) unsafe fn realloc_recorded<A: GlobalAlloc>(
    inner: &A,
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
    weight: Option<f32>,
    how: Recording,
) -> *mut u8 {
    let guard = Guard::enter();
    // SAFETY: valid layout by the caller's contract.
    let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
    let new_il = header::inner_layout(new_layout);
    let (Some(weight), Some(new_il), Some(guard)) = (weight, new_il, guard) else {
        // Out of the books: a plain block, a copy, and a recorded free.
        // SAFETY: valid layout; then both blocks are live for the copy.
        unsafe {
            let new = inner.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                dealloc(inner, ptr, layout);
            }
            return new;
        }
    };
    fork::install();
    let book = book::current();
    let site = site_here(how, book, guard.held());
    // SAFETY: recorded blocks always have an inner layout.
    let old_il = unsafe { header::inner_layout(layout).unwrap_unchecked() };
    // SAFETY: `ptr` is recorded (caller's contract).
    let h = unsafe { unlink(ptr) };
    // SAFETY: the block was allocated by `inner` at `ptr - off` with `old_il`.
    let base = unsafe { inner.realloc(ptr.sub(h.off()), old_il, new_il.size()) };
    if base.is_null() {
        // The old block is untouched: put its record back.
        // SAFETY: `ptr` is still the same live block.
        unsafe { relink(ptr, &h) };
        return base;
    }
    count_free(&h, layout.size(), layout.align());
    let off = header::choose_off(base as usize, layout.align());
    // SAFETY: both ranges lie within the new inner block.
    let user = unsafe {
        let user = base.add(off);
        if off != h.off() {
            std::ptr::copy(base.add(h.off()), user, layout.size().min(new_size));
        }
        user
    };
    // SAFETY: the header lies in `base..user`, which is ours.
    unsafe { book_new(user, new_size, off, layout.align(), site, weight, &book) };
    user
}
