//! A list of live recorded blocks: intrusive and doubly linked through the
//! block headers, guarded by a spin lock.
//!
//! Each book has several (see `book`). The owner thread links and unlinks its
//! own blocks (the lock is then uncontended: one `xchg` and one store);
//! another thread takes the lock only to free one of the blocks, or to copy
//! the list for a snapshot. Nothing inside the lock allocates or takes
//! another lock.

use super::header::{self, Header};
use super::sync::SpinLock;

pub(crate) struct LiveList {
    /// The first block's user pointer, 0 when empty. The lock also guards
    /// the links in the headers of the list's blocks: they are read and
    /// written only while it is held (`header::links`, `set_prev`,
    /// `set_next`, and `header::read` in `walk`).
    head: SpinLock<usize>,
}

impl LiveList {
    super::sync::maybe_const_fn! {
    /// An empty list (all-zero bytes are one too: books are allocated zeroed).
    pub(crate) fn new() -> LiveList {
        LiveList {
            head: SpinLock::new(0),
        }
    }
    }

    /// Writes the header `h` of a recorded block below `user` (a new one, or
    /// one put back after a failed realloc) and links the block at the head,
    /// in one go (the links are filled in here).
    ///
    /// # Safety
    /// `user` must have `header::HEADER_SIZE` bytes of ours below it and not
    /// be in any list.
    #[inline(always)]
    pub(crate) unsafe fn link_new(&self, user: usize, mut h: Header) {
        let mut head_of = self.head.lock();
        debug_assert!(user != 0 && user != *head_of, "linking a block twice");
        // SAFETY: we hold the lock; `head` is 0 or a recorded block in this
        // list; the caller vouches for `user`.
        unsafe {
            let head = *head_of;
            if head != 0 && header::links(head).0 != 0 {
                corrupted(b"leakscope: corrupted live list: the first recorded block has a predecessor (heap corruption); aborting\n");
            }
            h.prev = 0;
            h.next = head;
            header::write(user as *mut u8, &h);
            if head != 0 {
                header::set_prev(head, user);
            }
            *head_of = user;
        }
    }

    /// Unlinks a recorded block.
    ///
    /// # Safety
    /// `user` must be a recorded block in this list.
    #[inline(always)]
    pub(crate) unsafe fn unlink(&self, user: usize) {
        let mut head = self.head.lock();
        debug_assert!(*head != 0, "unlinking from an empty list");
        // SAFETY: we hold the lock; `user` and its neighbours are in this list.
        unsafe {
            let (prev, next) = header::links(user);
            // Safe unlink, as glibc's "corrupted double-linked list" check:
            // the neighbours must point back at this block before we write
            // through them. They do unless the heap was corrupted (a buffer
            // overflow into a header, or a recorded block freed by C's
            // `free()` and reused): writing through forged links would turn
            // that into a write anywhere.
            let back = if prev != 0 {
                header::links(prev).1
            } else {
                *head
            };
            if back != user || (next != 0 && header::links(next).0 != user) {
                corrupted(b"leakscope: corrupted live list: a recorded block's neighbours do not point back at it (heap corruption, or a Rust allocation freed by another allocator, such as C's free()); aborting\n");
            }
            if prev != 0 {
                header::set_next(prev, next);
            } else {
                *head = next;
            }
            if next != 0 {
                header::set_prev(next, prev);
            }
        }
    }

    /// Takes the lock with no guard, for a fork (`fork::prepare`).
    pub(crate) fn lock_for_fork(&self) {
        self.head.acquire_for_fork();
    }

    /// Releases the lock taken by [`LiveList::lock_for_fork`].
    pub(crate) fn unlock_for_fork(&self) {
        self.head.release_after_fork();
    }

    /// Calls `f` with the header of every block in the list, holding the lock
    /// (so `f` must not allocate: it copies into pre-reserved space).
    pub(crate) fn walk(&self, mut f: impl FnMut(&Header)) {
        self.walk_with_user(|_, h| f(h));
    }

    /// As [`walk`](Self::walk), with each block's user address (for the
    /// retainer scan, which reads the blocks' bytes in a forked child).
    pub(crate) fn walk_with_user(&self, mut f: impl FnMut(usize, &Header)) {
        let head = self.head.lock();
        // Every block in the list stays recorded while we hold the lock (a
        // free unlinks under this lock before releasing the memory).
        let mut cur = *head;
        while cur != 0 {
            // SAFETY: as above.
            let h = unsafe { header::read(cur as *mut u8) };
            f(cur, &h);
            cur = h.next;
        }
    }
}

/// Aborts on a corrupted list, naming it on standard error: a write(2) of a
/// static message and `abort`, nothing that allocates or takes a lock (the
/// heap is not to be trusted any more).
#[cold]
#[inline(never)]
fn corrupted(message: &'static [u8]) -> ! {
    // SAFETY: writes `message.len()` bytes from a static buffer to fd 2.
    let _ = unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
    std::process::abort()
}
