//! Books: per-thread counters per site, and per-thread lists of live recorded
//! blocks.
//!
//! Each thread that records something gets a book. The thread adds to its own
//! book's counters with plain load+store (it is the only writer), so recording
//! writes no cache line that another core writes; a snapshot sums all books.
//! A block freed on another thread is counted in the *freeing* thread's book,
//! against the site that allocated it: sums do not care where a number was
//! written. Books are never freed: a thread's exit hook returns its book to a
//! pool and the next new thread reuses it, counters and live blocks included.
//!
//! Book 0 is shared: threads whose exit hook already ran (allocations made by
//! later thread-local destructors) and threads beyond `MAX_BOOKS` use it, with
//! atomic read-modify-write counters.
//!
//! A book's live blocks are in `SHARDS` intrusive lists (`live_list`), picked
//! by a hash of the block's address.

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};

use super::guard::{Guard, Held};
use super::live_list::LiveList;
use super::sync::RawSpinLock;

/// Sites per counter chunk.
const CHUNK: usize = 256;
/// Most sites the table may intern (`Tracker::max_sites` is clamped to it).
pub(crate) const MAX_SITES: usize = 1 << 20;
/// Site ids a book can count: the interned sites plus the overflow site 0.
const DIR: usize = (MAX_SITES + 1).div_ceil(CHUNK);
/// Most books (threads recording at once, plus the shared book 0).
const MAX_BOOKS: usize = 1 << 16;
/// Entries in a book's direct-mapped stack-hash -> site cache.
const CACHE: usize = 1024;
/// Live lists per book (a power of two).
const SHARD_BITS: u32 = 6;
const SHARDS: usize = 1 << SHARD_BITS;

/// Counters of one site in one book. Weighted counts are fixed point with 16
/// fractional bits, so sampled estimates lose nothing to rounding per event.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) alloc_bytes: AtomicU64,
    pub(crate) alloc_count: AtomicU64,
    pub(crate) free_bytes: AtomicU64,
    pub(crate) free_count: AtomicU64,
}

/// Fixed-point scale of the count counters.
pub(crate) const COUNT_ONE: u64 = 1 << 16;

struct Chunk([Counters; CHUNK]);

/// A sum of counters over all books, for one site.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Totals {
    pub(crate) alloc_bytes: u64,
    pub(crate) alloc_count: u64,
    pub(crate) free_bytes: u64,
    pub(crate) free_count: u64,
}

pub(crate) struct Book {
    index: u16,
    /// Book 0: several threads may write its counters at once.
    shared: bool,
    /// Owned by a live thread (or, for book 0, always).
    in_use: AtomicBool,
    /// The live recorded blocks this book's thread allocated, spread over
    /// `SHARDS` lists by address so that a snapshot, which copies one list at
    /// a time under its lock, holds up this thread's recording for a
    /// fraction of the copy of its whole heap.
    lists: [LiveList; SHARDS],
    chunks: [AtomicPtr<Chunk>; DIR],
    /// Written only by the owning thread (never used for the shared book).
    cache: UnsafeCell<[(u64, u32); CACHE]>,
    /// Raw (unweighted) bytes of headers and padding of live recorded blocks
    /// this book allocated minus those it freed: the tracker's own overhead.
    pad_alloc: AtomicU64,
    pad_free: AtomicU64,
}

// SAFETY: `cache` is only touched through `Own`, which only `current` makes,
// on the thread that owns the book (`in_use`), and never for the shared
// book; the lists are `Sync`; everything else is atomic.
unsafe impl Sync for Book {}

static BOOKS: [AtomicPtr<Book>; MAX_BOOKS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_BOOKS];
static BOOK_COUNT: AtomicUsize = AtomicUsize::new(0);
/// Serialises creating and handing out books (rare: once per thread).
/// Lock order: `POOL` is taken alone; nothing else is locked while it is held.
/// A spin lock rather than a mutex so the fork handlers can hold it across a
/// fork (see `fork`). A raw one: what it serialises (`BOOKS`, `BOOK_COUNT`,
/// the `in_use` flags) is read without it, through atomics.
static POOL: RawSpinLock = RawSpinLock::new();

impl Book {
    /// A fresh book, leaked. Returns `None` if the inner allocator is out of
    /// memory. Under the guard (the allocation is then unrecorded).
    fn new(index: u16, shared: bool, _: Held<'_>) -> Option<&'static Book> {
        // Allocated zeroed rather than built on the stack: a book is ~48 KiB,
        // too much to put on the stack of whatever code is allocating.
        let layout = std::alloc::Layout::new::<Book>();
        // SAFETY: non-zero size. All-zero bytes are a valid `Book` (atomics,
        // `UnsafeCell`s of integers and null pointers, `false` flags).
        let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Book;
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` is a valid, exclusively owned, zero-initialised Book.
        let book = unsafe { &mut *p };
        book.index = index;
        book.shared = shared;
        book.in_use = AtomicBool::new(true);
        Some(book)
    }

    pub(crate) fn index(&self) -> u16 {
        self.index
    }

    #[inline(always)]
    fn counters(&self, site: u32) -> Option<&Counters> {
        let site = site as usize;
        let slot = self.chunks.get(site / CHUNK)?;
        let mut chunk = slot.load(Acquire);
        if chunk.is_null() {
            chunk = self.new_chunk(slot)?;
        }
        // SAFETY: chunks are allocated zeroed (a valid all-zero `Counters`
        // array), published with Release, and never freed.
        Some(unsafe { &(*chunk).0[site % CHUNK] })
    }

    /// Allocates a chunk of counters. Takes the guard itself: the free path
    /// runs without it, and the chunk must not be recorded.
    #[cold]
    #[inline(never)]
    fn new_chunk(&self, slot: &AtomicPtr<Chunk>) -> Option<*mut Chunk> {
        let _guard = Guard::enter();
        let layout = std::alloc::Layout::new::<Chunk>();
        // SAFETY: the layout has a non-zero size. Under the guard, so this
        // goes straight to the inner allocator.
        let fresh = unsafe { std::alloc::alloc_zeroed(layout) } as *mut Chunk;
        if fresh.is_null() {
            return None;
        }
        match slot.compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire) {
            Ok(_) => Some(fresh),
            Err(existing) => {
                // Only the shared book can race here.
                // SAFETY: `fresh` was allocated above with `layout` and never published.
                unsafe { std::alloc::dealloc(fresh as *mut u8, layout) };
                Some(existing)
            }
        }
    }

    /// Adds `bytes`, `count` and `pad` to three counters: plain load+store
    /// when this thread is the book's only writer, atomic adds for book 0.
    #[inline(always)]
    fn add3(&self, a: &AtomicU64, av: u64, b: &AtomicU64, bv: u64, c: &AtomicU64, cv: u64) {
        if self.shared {
            a.fetch_add(av, Relaxed);
            b.fetch_add(bv, Relaxed);
            c.fetch_add(cv, Relaxed);
        } else {
            // Single writer: no read-modify-write instruction needed.
            a.store(a.load(Relaxed).wrapping_add(av), Relaxed);
            b.store(b.load(Relaxed).wrapping_add(bv), Relaxed);
            c.store(c.load(Relaxed).wrapping_add(cv), Relaxed);
        }
    }

    #[cold]
    fn add1(&self, a: &AtomicU64, v: u64) {
        if self.shared {
            a.fetch_add(v, Relaxed);
        } else {
            a.store(a.load(Relaxed).wrapping_add(v), Relaxed);
        }
    }

    #[inline(always)]
    pub(crate) fn count_alloc(&self, site: u32, bytes: u64, count: u64, pad: usize) {
        match self.counters(site) {
            Some(c) => self.add3(
                &c.alloc_bytes,
                bytes,
                &c.alloc_count,
                count,
                &self.pad_alloc,
                pad as u64,
            ),
            None => self.add1(&self.pad_alloc, pad as u64),
        }
    }

    #[inline(always)]
    pub(crate) fn count_free(&self, site: u32, bytes: u64, count: u64, pad: usize) {
        match self.counters(site) {
            Some(c) => self.add3(
                &c.free_bytes,
                bytes,
                &c.free_count,
                count,
                &self.pad_free,
                pad as u64,
            ),
            None => self.add1(&self.pad_free, pad as u64),
        }
    }

    /// The list that holds (or will hold) the block at `user`.
    #[inline(always)]
    pub(crate) fn list_of(&self, user: usize) -> &LiveList {
        // A Fibonacci hash of the address spreads blocks evenly whatever
        // their size and alignment.
        let shard = (user as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARD_BITS);
        debug_assert!((shard as usize) < SHARDS);
        &self.lists[shard as usize]
    }
}

/// This thread's own book (what [`current`] returns): the only handle to
/// the book's owner-only site cache, and it cannot leave the thread (not
/// `Send`). Other threads reach a book through [`by_index`], a plain `&Book`
/// without the cache.
#[derive(Clone, Copy)]
pub(crate) struct Own {
    book: &'static Book,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::ops::Deref for Own {
    type Target = Book;
    #[inline(always)]
    fn deref(&self) -> &Book {
        self.book
    }
}

impl Own {
    #[inline(always)]
    fn new(book: &'static Book) -> Own {
        Own {
            book,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Looks `hash` up in this thread's site cache.
    #[inline(always)]
    pub(crate) fn cached_site(&self, hash: u64) -> Option<u32> {
        if self.shared {
            return None;
        }
        // SAFETY: only the owning thread touches the cache (`Own`).
        let cache = unsafe { &*self.cache.get() };
        let (h, site) = cache[(hash as usize) % CACHE];
        (h == hash).then_some(site)
    }

    pub(crate) fn cache_site(&self, hash: u64, site: u32) {
        if self.shared {
            return;
        }
        // SAFETY: only the owning thread touches the cache (`Own`).
        let cache = unsafe { &mut *self.cache.get() };
        cache[(hash as usize) % CACHE] = (hash, site);
    }
}

/// The book with this index (the shared one if it no longer exists).
#[inline(always)]
pub(crate) fn by_index(index: u16) -> &'static Book {
    // `BOOKS[0]` stays null: book 0 is the static `SHARED`.
    let p = BOOKS[index as usize].load(Acquire);
    if p.is_null() {
        return shared();
    }
    // SAFETY: published books are leaked boxes, never freed.
    unsafe { &*p }
}

fn shared() -> &'static Book {
    &SHARED
}

/// Book 0, a static so that it exists without allocating.
static SHARED: Book = Book {
    index: 0,
    shared: true,
    in_use: AtomicBool::new(true),
    lists: [const { LiveList::new() }; SHARDS],
    chunks: [const { AtomicPtr::new(std::ptr::null_mut()) }; DIR],
    cache: UnsafeCell::new([(0, 0); CACHE]),
    pad_alloc: AtomicU64::new(0),
    pad_free: AtomicU64::new(0),
};

/// This thread's book, and whether its exit hook already ran.
///
/// A `const`-initialised thread-local of plain `Cell`s, like `guard::STATE`
/// and for the same reasons: no destructor, so it is usable at any moment of
/// the thread's life, and access is a fixed offset from the thread pointer.
/// It is read only on the recorded paths, never on the common path.
struct Current {
    /// This thread's book (counters and live list), or null before the first
    /// recorded event and after the thread's exit hook ran.
    book: Cell<*const Book>,
    /// Set once the thread's exit hook has released its book: later events on
    /// this thread (from other thread-local destructors) use the shared book.
    exiting: Cell<bool>,
}

thread_local! {
    static CURRENT: Current = const {
        Current {
            book: Cell::new(std::ptr::null()),
            exiting: Cell::new(false),
        }
    };
}

/// This thread's book, acquiring one on first use (under the guard, which
/// `acquire` takes itself).
#[inline(always)]
pub(crate) fn current() -> Own {
    let p = CURRENT
        .try_with(|s| s.book.get())
        .unwrap_or(std::ptr::null());
    if !p.is_null() {
        // SAFETY: the pointer was set by `acquire` to a leaked, never-freed
        // book, which this thread owns (`in_use`) until its exit hook runs
        // and clears the pointer.
        return Own::new(unsafe { &*p });
    }
    Own::new(acquire())
}

#[cold]
#[inline(never)]
fn acquire() -> &'static Book {
    // Creating a book and registering the exit hook allocate: unrecorded.
    // (The fork handlers are in place: `record` installs them before the
    // first recorded event, and a free of a recorded block comes after one.)
    Guard::with(acquire_held)
}

fn acquire_held(held: Held<'_>) -> &'static Book {
    let exiting = CURRENT.try_with(|s| s.exiting.get()).unwrap_or(true);
    if exiting || EXIT_HOOK.try_with(|_| ()).is_err() {
        // The exit hook cannot run (again) for this thread.
        return shared();
    }
    let book = {
        let _pool = POOL.lock();
        let n = BOOK_COUNT.load(Acquire);
        let reused = (1..n).find_map(|i| {
            let p = BOOKS[i].load(Acquire);
            // SAFETY: published books are leaked boxes, never freed.
            let b = unsafe { &*p };
            b.in_use
                .compare_exchange(false, true, AcqRel, Relaxed)
                .is_ok()
                .then_some(b)
        });
        match reused {
            Some(b) => b,
            None if n.max(1) < MAX_BOOKS => {
                let i = n.max(1);
                let Some(b) = Book::new(i as u16, false, held) else {
                    return shared();
                };
                BOOKS[i].store(b as *const Book as *mut Book, Release);
                BOOK_COUNT.store(i + 1, Release);
                b
            }
            None => return shared(),
        }
    };
    let _ = CURRENT.try_with(|s| s.book.set(book));
    book
}

/// Releases the thread's book when the thread exits.
struct ExitHook;

impl Drop for ExitHook {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|s| {
            s.exiting.set(true);
            let p = s.book.replace(std::ptr::null());
            if !p.is_null() {
                // SAFETY: set by `acquire` to a leaked, never-freed book.
                unsafe { &*p }.in_use.store(false, Release);
            }
        });
    }
}

thread_local! {
    // Touching it (in `acquire`, under the guard) registers its destructor;
    // registration may allocate, which the guard sends to the inner allocator.
    static EXIT_HOOK: ExitHook = const { ExitHook };
}

/// Every book created so far.
fn all() -> impl Iterator<Item = &'static Book> {
    let n = BOOK_COUNT.load(Acquire);
    std::iter::once(shared()).chain((1..n).filter_map(|i| {
        let p = BOOKS[i].load(Acquire);
        // SAFETY: published books are leaked boxes, never freed.
        (!p.is_null()).then(|| unsafe { &*p })
    }))
}

/// Takes the pool lock for a fork (`fork::prepare`): no book is created or
/// handed out until [`unlock_pool`].
pub(crate) fn lock_pool() {
    POOL.acquire();
}

/// Releases the lock taken by [`lock_pool`].
pub(crate) fn unlock_pool() {
    POOL.release();
}

/// Takes every live list's lock of every book, for a fork. The pool lock is
/// held, so the set of books cannot change meanwhile.
pub(crate) fn lock_lists() {
    for book in all() {
        for list in &book.lists {
            list.lock_for_fork();
        }
    }
}

/// Releases the locks taken by [`lock_lists`].
pub(crate) fn unlock_lists() {
    for book in all() {
        for list in &book.lists {
            list.unlock_for_fork();
        }
    }
}

/// In a forked child (every tracker lock held): the books of the parent's
/// other threads, which do not exist here, go back to the pool for the
/// child's own threads. Their counters and live blocks stay where they are:
/// the blocks are still the child's memory, and a free finds them through
/// their header as before.
pub(crate) fn forget_other_threads() {
    let mine = CURRENT
        .try_with(|s| s.book.get())
        .unwrap_or(std::ptr::null());
    for book in all().filter(|b| !b.shared) {
        if !std::ptr::eq(book, mine) {
            book.in_use.store(false, Relaxed);
        }
    }
}

/// Sums the counters of sites `0..nsites` over all books.
pub(crate) fn gather(nsites: usize) -> Vec<Totals> {
    let mut out = vec![Totals::default(); nsites];
    for book in all() {
        for (ci, slot) in book.chunks.iter().enumerate() {
            if ci * CHUNK >= nsites {
                break;
            }
            let chunk = slot.load(Acquire);
            if chunk.is_null() {
                continue;
            }
            // SAFETY: published chunks are valid and never freed.
            let chunk = unsafe { &*chunk };
            for (i, c) in chunk.0.iter().enumerate() {
                let Some(t) = out.get_mut(ci * CHUNK + i) else {
                    break;
                };
                t.alloc_bytes = t.alloc_bytes.wrapping_add(c.alloc_bytes.load(Relaxed));
                t.alloc_count = t.alloc_count.wrapping_add(c.alloc_count.load(Relaxed));
                t.free_bytes = t.free_bytes.wrapping_add(c.free_bytes.load(Relaxed));
                t.free_count = t.free_count.wrapping_add(c.free_count.load(Relaxed));
            }
        }
    }
    out
}

/// One live recorded block, as copied out of a list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LiveBlock {
    pub(crate) site: u32,
    pub(crate) birth_us: u64,
    pub(crate) size: u64,
    pub(crate) weight: f32,
}

/// Copies every live recorded block out of every book's list. Each list is
/// locked only while it is copied; the copy never allocates under the lock
/// (space is reserved first, and a list that outgrew it is copied again).
pub(crate) fn live_blocks() -> Vec<LiveBlock> {
    let mut out = Vec::new();
    for list in all().flat_map(|book| book.lists.iter()) {
        let mut reserve = 1024;
        loop {
            out.reserve(reserve);
            let room = out.capacity() - out.len();
            let start = out.len();
            let mut overflow = false;
            list.walk(|h| {
                if out.len() - start < room {
                    out.push(LiveBlock {
                        site: h.site,
                        birth_us: h.birth_us(),
                        size: h.size(),
                        weight: h.weight,
                    });
                } else {
                    overflow = true;
                }
            });
            if !overflow {
                break;
            }
            out.truncate(start);
            reserve = room * 2;
        }
    }
    out
}

/// Calls `f(user, size, raw_site, birth_us, weight)` for every live recorded block of
/// every book, each list locked while it is walked, so `f` must not allocate
/// through the global allocator (the retainer scan calls this in a forked
/// child and writes into memory it mapped itself).
pub(crate) fn for_each_live_block(mut f: impl FnMut(usize, u64, u32, u64, f32)) {
    for list in all().flat_map(|book| book.lists.iter()) {
        list.walk_with_user(|user, h| f(user, h.size(), h.site, h.birth_us(), h.weight));
    }
}

/// Calls `f(start, end)` with the memory of every book (its live lists'
/// heads are blocks' addresses: the sampled retainer scan skips them).
pub(crate) fn for_each_book_range(mut f: impl FnMut(usize, usize)) {
    for book in all() {
        let start = book as *const Book as usize;
        f(start, start + std::mem::size_of::<Book>());
    }
}

/// Bytes the tracker holds in books and in block headers and padding.
pub(crate) fn overhead_bytes() -> u64 {
    let (mut fixed, mut pad_alloc, mut pad_free) = (0u64, 0u64, 0u64);
    for book in all() {
        let chunks = book
            .chunks
            .iter()
            .filter(|c| !c.load(Relaxed).is_null())
            .count() as u64;
        fixed += std::mem::size_of::<Book>() as u64 + chunks * std::mem::size_of::<Chunk>() as u64;
        // Summed apart: one book may count more frees than allocations (its
        // thread freed blocks that others allocated); only the sums balance.
        pad_alloc = pad_alloc.wrapping_add(book.pad_alloc.load(Relaxed));
        pad_free = pad_free.wrapping_add(book.pad_free.load(Relaxed));
    }
    fixed.saturating_add(pad_alloc.saturating_sub(pad_free))
}
