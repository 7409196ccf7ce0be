//! loom models of the recorder's protocols:
//! - the live list (`live_list.rs`, compiled again here over the loom spin
//!   lock) against a concurrent snapshot: a block is counted before it is
//!   linked and a snapshot copies the list before it reads the counters, so
//!   a snapshot never sees more live blocks than allocations (live <= total);
//!   and an unlink (with its safe-unlink checks) against a snapshot;
//! - the book hand-off (`book.rs`): a book's single-writer counters and cache
//!   pass from an exiting thread to the next one through its `in_use` flag;
//! - the sampling fence protocol (`sampling.rs`): an interval change racing
//!   with a thread's redraw leaves that thread either on the new generation
//!   or with a zeroed countdown, never on the old interval.
//!
//! The live list is the recorder's own source; the book hand-off and the
//! sampling protocol are restated here step for step (each step names the
//! line it models), because their real homes are thread-locals and
//! process-wide statics that loom cannot reset between interleavings.

#![allow(dead_code)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::*, fence};
use loom::thread;

/// What `live_list.rs` imports, as the loom model provides it.
mod sync {
    pub(crate) use super::super::loom_spin::facade::maybe_const_fn;
    pub(crate) use super::super::loom_spin::spin::SpinLock;
}
use super::super::header;

#[path = "../live_list.rs"]
mod live_list;

use header::{HEADER_SIZE, Header};
use live_list::LiveList;

/// A block with room for a header below its user pointer, as `record`
/// places one (user pointer at 8 mod 16).
struct Block(Box<[u8; 128]>);

impl Block {
    fn new() -> Block {
        Block(Box::new([0; 128]))
    }

    fn user(&self) -> usize {
        let base = self.0.as_ptr() as usize;
        base + header::choose_off(base, 8)
    }

    fn header(&self) -> Header {
        Header::new(
            self.user(),
            16,
            self.user() - self.0.as_ptr() as usize,
            1,
            7,
            1.0,
            0,
        )
    }
}

#[test]
fn loom_live_list_snapshot_never_sees_more_than_counted() {
    const _: () = assert!(HEADER_SIZE + 16 + 16 <= 128);
    loom::model(|| {
        let list = Arc::new(LiveList::new());
        let allocated = Arc::new(AtomicU64::new(0));
        let old = Block::new();
        let new = Block::new();
        // A block recorded before the threads start.
        allocated.store(1, Relaxed);
        // SAFETY: `old` has a header's room below its user pointer and is
        // in no list.
        unsafe { list.link_new(old.user(), old.header()) };
        let (new_user, new_header) = (new.user(), new.header());

        // The owner records a new block: counted (single writer: a load
        // and a store), then linked (`record::book_new`).
        let (l, a) = (list.clone(), allocated.clone());
        let owner = thread::spawn(move || {
            a.store(a.load(Relaxed) + 1, Relaxed);
            // SAFETY: as above.
            unsafe { l.link_new(new_user, new_header) };
        });
        // A snapshot: the list first, the counters after
        // (`recorder::heap_view`).
        let mut live = 0u64;
        list.walk(|_| live += 1);
        let total = allocated.load(Relaxed);
        assert!(live <= total, "{live} live blocks, {total} allocated");

        owner.join().unwrap();
        let mut after = 0;
        list.walk(|_| after += 1);
        assert_eq!(after, 2);
        drop((old, new));
    });
}

#[test]
fn loom_live_list_unlink_against_a_snapshot() {
    loom::model(|| {
        let list = Arc::new(LiveList::new());
        let blocks = [Block::new(), Block::new(), Block::new()];
        for b in &blocks {
            // SAFETY: each block has a header's room and is in no list.
            unsafe { list.link_new(b.user(), b.header()) };
        }
        // Another thread frees the middle block (`record::dealloc`): the
        // safe-unlink checks must hold whatever the snapshot does.
        let (l, middle) = (list.clone(), blocks[1].user());
        let freer = thread::spawn(move || {
            // SAFETY: the block is in this list.
            unsafe { l.unlink(middle) };
        });
        let mut seen = 0;
        list.walk(|_| seen += 1);
        assert!(seen == 2 || seen == 3, "snapshot saw {seen} of 3 blocks");
        freer.join().unwrap();
        let mut after = 0;
        list.walk(|_| after += 1);
        assert_eq!(after, 2);
    });
}

/// A book as the hand-off sees it: the `in_use` flag, one single-writer
/// counter (updated with a load and a store, `Book::add3`), and the
/// owner-only site cache (`Book::cache`, an `UnsafeCell`).
struct Book {
    in_use: AtomicBool,
    counter: AtomicU64,
    cache: loom::cell::UnsafeCell<u64>,
}

// SAFETY: as `book::Book`: the cache is touched only by the thread that set
// `in_use`.
unsafe impl Sync for Book {}

impl Book {
    /// `book::acquire`'s hand-out: take the book if no thread owns it.
    fn take(&self) -> bool {
        self.in_use
            .compare_exchange(false, true, AcqRel, Relaxed)
            .is_ok()
    }

    /// A recorded event on the owning thread.
    fn record(&self) {
        self.counter.store(self.counter.load(Relaxed) + 1, Relaxed);
        // SAFETY: this thread owns the book (`in_use`).
        self.cache.with_mut(|c| unsafe { *c += 1 });
    }

    /// `ExitHook::drop`: give the book back.
    fn release(&self) {
        self.in_use.store(false, Release);
    }
}

#[test]
fn loom_book_hand_off_keeps_single_writer_counts() {
    loom::model(|| {
        let book = Arc::new(Book {
            in_use: AtomicBool::new(true),
            counter: AtomicU64::new(0),
            cache: loom::cell::UnsafeCell::new(0),
        });
        // The first owner records and exits.
        let b = book.clone();
        let first = thread::spawn(move || {
            b.record();
            b.release();
        });
        // A new thread takes the book when it is free (else it would get
        // another one, or the shared book).
        let b = book.clone();
        let second = thread::spawn(move || {
            if b.take() {
                b.record();
                b.release();
                true
            } else {
                false
            }
        });
        first.join().unwrap();
        let took = second.join().unwrap();
        // A snapshot reads the counter after both: no count was lost to the
        // plain load+store, which is only sound with one writer at a time.
        let expect = if took { 2 } else { 1 };
        assert_eq!(book.counter.load(Relaxed), expect);
    });
}

/// The sampling state the protocol touches: the interval override and its
/// generation (statics in `sampling.rs`), and one thread's countdown and the
/// generation it was drawn under (`guard::Remote`).
struct Sampling {
    interval: AtomicU64,
    generation: AtomicU64,
    countdown: AtomicI64,
    drawn_under: AtomicU64,
}

#[test]
fn loom_interval_change_reaches_a_thread_that_is_redrawing() {
    loom::model(|| {
        let s = Arc::new(Sampling {
            interval: AtomicU64::new(100),
            generation: AtomicU64::new(1),
            countdown: AtomicI64::new(0),
            drawn_under: AtomicU64::new(1),
        });
        // `set_sample_interval(1000)` (registry lock held; this thread is
        // the only other registered one).
        let c = s.clone();
        let changer = thread::spawn(move || {
            c.interval.store(1000, Relaxed);
            let generation = c.generation.fetch_add(1, Release) + 1;
            fence(SeqCst);
            c.countdown.store(0, Relaxed);
            if c.drawn_under.load(Relaxed) != generation && c.countdown.load(Relaxed) > 0 {
                c.countdown.store(0, Relaxed);
            }
            generation
        });
        // The thread's slow path (`sampling::decide`): read the generation
        // and the interval, draw (here: the interval itself) under it, then
        // the fence and the second look.
        let generation = s.generation.load(Acquire);
        let interval = s.interval.load(Relaxed);
        if s.drawn_under.load(Relaxed) != generation {
            s.drawn_under.store(generation, Relaxed);
        }
        s.countdown.store(interval as i64, Relaxed);
        fence(SeqCst);
        if s.generation.load(Relaxed) != generation {
            s.countdown.store(0, Relaxed);
        }
        let new_generation = changer.join().unwrap();

        // Either this thread drew under the new generation, and then with
        // the new interval (the Acquire above pairs with the Release), or
        // its countdown is 0, so its next allocation redraws.
        let countdown = s.countdown.load(Relaxed);
        let drawn_under = s.drawn_under.load(Relaxed);
        if drawn_under == new_generation {
            assert!(
                countdown == 0 || countdown == 1000,
                "new generation, old interval"
            );
        } else {
            assert_eq!(countdown, 0, "old interval kept after the change");
        }
    });
}
