//! A list of live recorded blocks: intrusive and doubly linked through the
//! block headers, guarded by a spin lock.
//!
//! Each book has several (see `book`). The owner thread links and unlinks its
//! own blocks (the lock is then uncontended: one `xchg` and one store);
//! another thread takes the lock only to free one of the blocks, or to copy
//! the list for a snapshot. Nothing inside the lock allocates or takes
//! another lock.

use std::cell::UnsafeCell;

use super::header::{self, Header};
use super::spin::SpinLock;

pub(crate) struct LiveList {
    /// Guards `head` and the links in the headers of the list's blocks.
    lock: SpinLock,
    /// The first block's user pointer, 0 when empty.
    head: UnsafeCell<usize>,
}

// SAFETY: `head` and the links are only touched under `lock`.
unsafe impl Sync for LiveList {}

impl LiveList {
    /// An empty list (all-zero bytes are one too: books are allocated zeroed).
    pub(crate) const fn new() -> LiveList {
        LiveList {
            lock: SpinLock::new(),
            head: UnsafeCell::new(0),
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
        let _g = self.lock.lock();
        // SAFETY: we hold the lock; `head` is 0 or a recorded block in this
        // list; the caller vouches for `user`.
        unsafe {
            let head = *self.head.get();
            h.prev = 0;
            h.next = head;
            header::write(user as *mut u8, &h);
            if head != 0 {
                header::set_prev(head, user);
            }
            *self.head.get() = user;
        }
    }

    /// Unlinks a recorded block.
    ///
    /// # Safety
    /// `user` must be a recorded block in this list.
    #[inline(always)]
    pub(crate) unsafe fn unlink(&self, user: usize) {
        let _g = self.lock.lock();
        // SAFETY: we hold the lock; `user` and its neighbours are in this list.
        unsafe {
            let (prev, next) = header::links(user);
            if prev != 0 {
                header::set_next(prev, next);
            } else {
                *self.head.get() = next;
            }
            if next != 0 {
                header::set_prev(next, prev);
            }
        }
    }

    /// Takes the lock with no guard, for a fork (`fork::prepare`).
    pub(crate) fn lock_for_fork(&self) {
        self.lock.acquire();
    }

    /// Releases the lock taken by [`LiveList::lock_for_fork`].
    pub(crate) fn unlock_for_fork(&self) {
        self.lock.release();
    }

    /// Calls `f` with the header of every block in the list, holding the lock
    /// (so `f` must not allocate: it copies into pre-reserved space).
    pub(crate) fn walk(&self, mut f: impl FnMut(&Header)) {
        let _g = self.lock.lock();
        // SAFETY: we hold the lock, so every block in the list stays recorded
        // (a free unlinks under this lock before releasing the memory).
        let mut cur = unsafe { *self.head.get() };
        while cur != 0 {
            // SAFETY: as above.
            let h = unsafe { header::read(cur as *mut u8) };
            f(&h);
            cur = h.next;
        }
    }

    /// As [`walk`](Self::walk), with each block's user address (for the
    /// retainer scan, which reads the blocks' bytes in a forked child).
    pub(crate) fn walk_with_user(&self, mut f: impl FnMut(usize, &Header)) {
        let _g = self.lock.lock();
        // SAFETY: as in `walk`.
        let mut cur = unsafe { *self.head.get() };
        while cur != 0 {
            // SAFETY: as in `walk`.
            let h = unsafe { header::read(cur as *mut u8) };
            f(cur, &h);
            cur = h.next;
        }
    }
}
