//! A growable array of plain values in memory the scanning child maps
//! itself (`mmap`), never through `malloc`.
//!
//! Why by hand: in sampled mode the child scans every writable anonymous
//! mapping as a root, and `malloc` in the child would hand out free chunks
//! *inside* those mappings, so the scan's own block lists (full of block
//! addresses) would become roots pointing at every block. A fresh mapping is
//! never inside a range that was mapped before it, so memory from here is
//! never part of what is scanned (see `child::anon_roots`). No crate offers
//! an mmap-backed `Vec` for `Copy` data without an allocator of its own.

use std::marker::PhantomData;

/// A `Vec<T>` on its own anonymous mapping. `T: Copy` (no drop glue).
pub(super) struct MapVec<T: Copy> {
    ptr: *mut T,
    len: usize,
    cap: usize,
    _t: PhantomData<T>,
}

impl<T: Copy> MapVec<T> {
    pub(super) const fn new() -> Self {
        MapVec {
            ptr: std::ptr::null_mut(),
            len: 0,
            cap: 0,
            _t: PhantomData,
        }
    }

    fn bytes(cap: usize) -> usize {
        (cap * std::mem::size_of::<T>())
            .next_multiple_of(4096)
            .max(4096)
    }

    /// Grows to at least `want` elements; false if the kernel refused.
    fn grow(&mut self, want: usize) -> bool {
        let cap = want
            .max(self.cap * 2)
            .max(4096 / std::mem::size_of::<T>().max(1));
        let new = Self::bytes(cap);
        // SAFETY: a fresh private anonymous mapping (or a move of ours, whose
        // old range is not used after it). No Rust reference points into it.
        let p = unsafe {
            if self.ptr.is_null() {
                libc::mmap(
                    std::ptr::null_mut(),
                    new,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            } else {
                libc::mremap(
                    self.ptr as *mut libc::c_void,
                    Self::bytes(self.cap),
                    new,
                    libc::MREMAP_MAYMOVE,
                )
            }
        };
        if p == libc::MAP_FAILED {
            return false;
        }
        self.ptr = p as *mut T;
        self.cap = new / std::mem::size_of::<T>().max(1);
        true
    }

    /// Appends `v`; false when out of memory.
    #[inline]
    pub(super) fn push(&mut self, v: T) -> bool {
        if self.len == self.cap && !self.grow(self.len + 1) {
            return false;
        }
        // SAFETY: `len < cap`, inside our mapping.
        unsafe { self.ptr.add(self.len).write(v) };
        self.len += 1;
        true
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn as_slice(&self) -> &[T] {
        if self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the first `len` elements are initialised, in our mapping.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub(super) fn as_mut_slice(&mut self) -> &mut [T] {
        if self.ptr.is_null() {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// The mapped range `[start, end)`, empty when nothing is mapped.
    pub(super) fn range(&self) -> (usize, usize) {
        let start = self.ptr as usize;
        (
            start,
            if self.ptr.is_null() {
                start
            } else {
                start + Self::bytes(self.cap)
            },
        )
    }
}

impl<T: Copy> Drop for MapVec<T> {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: our own mapping, unmapped once.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, Self::bytes(self.cap)) };
        }
    }
}
