//! The site table: one site per distinct (call stack, label set id), interned
//! once and kept for the life of the process, so site ids are stable across
//! snapshots. The label set id is the thread's (`guard::labels`) when the
//! allocation was recorded; the recorder stores it and gives it no meaning
//! (0 = no labels; the query side interns the sets).
//!
//! Lookups go through the calling thread's book cache first (stack hash ->
//! site id; the label id is mixed into the hash), so the shared table is
//! touched once per distinct key per thread, not once per recorded event.
//! The cache trusts the 64-bit hash (it
//! does not compare the stacks), so two stacks colliding in it would share a
//! site; the table itself compares whole stacks.
//!
//! **Bounded:** the table holds at most `max_sites` stacks (the tracker's
//! `Tracker::max_sites`, at most [`MAX_SITES`]). Once it is full, every new
//! stack is charged to site 0, the overflow site, whose only frame is the
//! marker [`OTHER_FRAME`] (shown as `[other]`), and the stack itself is not
//! kept: only its hash goes into a fixed-size HyperLogLog sketch, which
//! estimates how many distinct stacks were folded (about 3% standard error).
//! So past the cap, memory does not grow with the number of new stacks.
//!
//! **One spin lock** guards the whole table (not a concurrent map): the fork
//! handlers must be able to take it from outside, and a miss is rare (once
//! per new stack per thread). It is taken alone; under it, only the table's
//! own growth allocates, which runs under the guard (the callers hold it) and
//! so goes straight to the inner allocator without touching a tracker lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::book::{MAX_SITES, Own};
use super::guard::Held;
use super::stack::Stack;
use super::sync::SpinLock;

/// The raw "return address" of the overflow site's only frame. No code lives
/// at the top of the address space, so no captured stack contains it; the
/// query side shows it as `[other]`.
pub(crate) const OTHER_FRAME: usize = usize::MAX;

/// HyperLogLog registers: 2^10 of them, 1 KiB, about 3.3% standard error.
const HLL_BITS: u32 = 10;
const HLL_M: usize = 1 << HLL_BITS;

/// A site's stack as the table keeps it.
///
/// The recording path copies a new stack into a `Boxed` slice allocated
/// *fallibly* (an `Arc` allocation cannot fail without aborting the
/// process, and the user may be allocating with `try_reserve` at the edge
/// of its memory: that must return `Err`, not abort). The query side wants
/// cheap shared clones: [`all_sites`] turns each new `Boxed` stack into a
/// `Shared` one once, at query time, where an allocation failure is an
/// ordinary one.
enum Stored {
    Boxed(Box<[usize]>),
    Shared(Arc<[usize]>),
}

impl Stored {
    /// Copies `addrs` into a fresh boxed slice, or `None` if the inner
    /// allocator refused. Must run under the guard.
    fn try_new(addrs: &[usize]) -> Option<Stored> {
        let mut v = Vec::new();
        v.try_reserve_exact(addrs.len()).ok()?;
        v.extend_from_slice(addrs);
        // Capacity is exactly the length: `into_boxed_slice` does not
        // reallocate.
        Some(Stored::Boxed(v.into_boxed_slice()))
    }

    fn addrs(&self) -> &[usize] {
        match self {
            Stored::Boxed(b) => b,
            Stored::Shared(a) => a,
        }
    }

    /// The stack as the query side holds it, shared from now on.
    /// Allocates (query time, under the guard).
    fn share(&mut self) -> Arc<[usize]> {
        if let Stored::Boxed(b) = self {
            *self = Stored::Shared(Arc::from(&**b));
        }
        match self {
            Stored::Shared(a) => a.clone(),
            Stored::Boxed(_) => unreachable!("just shared"),
        }
    }

    /// Heap bytes of this stack (an `Arc` adds its two counts).
    fn heap_bytes(&self) -> usize {
        match self {
            Stored::Boxed(b) => b.len() * 8,
            Stored::Shared(a) => 16 + a.len() * 8,
        }
    }
}

struct Inner {
    /// Site id -> raw stack (innermost first). Id 0 is the overflow site.
    stacks: Vec<Stored>,
    /// Site id -> the label set id it was recorded under (0 for site 0).
    labels: Vec<u32>,
    /// Site id -> the hash of its key (stack and label id, see [`key_hash`]).
    hashes: Vec<u64>,
    /// Open addressing, linear probing: slot -> site id, 0 = empty (site 0 is
    /// never looked up by stack). Its length is 0 or a power of two, at most
    /// twice the number of sites it may hold plus one.
    index: Vec<u32>,
    /// Sketch of the hashes of the stacks folded into site 0.
    folded: [u8; HLL_M],
    /// Whether anything was folded at all (the estimate of nothing is 0).
    any_folded: bool,
}

impl Inner {
    /// An empty table.
    const fn new() -> Inner {
        Inner {
            stacks: Vec::new(),
            labels: Vec::new(),
            hashes: Vec::new(),
            index: Vec::new(),
            folded: [0; HLL_M],
            any_folded: false,
        }
    }
}

static TABLE: SpinLock<Inner> = SpinLock::new(Inner::new());

/// The tracker's `max_label_sets`, noted by every recorded event (so the
/// query side, which interns label sets, knows it); 0 = not seen yet.
static LABEL_CAP: AtomicU32 = AtomicU32::new(0);

/// Notes the tracker's label-set cap (recorded path only: one relaxed load,
/// and a store the first time).
#[inline(always)]
pub(crate) fn note_label_cap(cap: u32) {
    if LABEL_CAP.load(Relaxed) != cap {
        LABEL_CAP.store(cap, Relaxed);
    }
}

/// The label-set cap of the tracker, once it recorded anything.
pub(crate) fn label_cap() -> Option<u32> {
    match LABEL_CAP.load(Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// The hash of a site's key: the stack's hash with the label id mixed in.
/// Label id 0 leaves it unchanged; never 0 (an empty cache slot).
#[inline(always)]
fn key_hash(stack_hash: u64, labels: u32) -> u64 {
    (stack_hash
        ^ (labels as u64)
            .wrapping_mul(0xD6E8_FEB8_6659_FD93)
            .rotate_left(29))
        | 1
}

/// Runs `f` on the table with its lock held. Must run under the guard if `f`
/// may allocate.
fn locked<R>(f: impl FnOnce(&mut Inner) -> R) -> R {
    f(&mut TABLE.lock())
}

/// The site id of (`stack`, `labels`), interning it if new, or 0 once
/// `max_sites` sites exist. Must run under the guard.
#[inline(always)]
pub(crate) fn site_of(
    stack: &Stack,
    labels: u32,
    book: Own,
    max_sites: u32,
    held: Held<'_>,
) -> u32 {
    let hash = key_hash(stack.hash(), labels);
    match book.cached_site(hash) {
        Some(site) => site,
        None => miss(stack, labels, hash, book, max_sites, held),
    }
}

/// A key this thread has not recorded lately: the shared table.
#[cold]
#[inline(never)]
fn miss(stack: &Stack, labels: u32, hash: u64, book: Own, max_sites: u32, _: Held<'_>) -> u32 {
    let (site, lasting) =
        locked(|t| t.intern_or_not(stack.addrs(), labels, hash, max_sites as usize));
    if lasting {
        book.cache_site(hash, site);
    }
    site
}

impl Inner {
    /// [`Inner::intern_or_not`] without the second half.
    #[cfg(test)]
    fn intern(&mut self, addrs: &[usize], labels: u32, hash: u64, max_sites: usize) -> u32 {
        self.intern_or_not(addrs, labels, hash, max_sites).0
    }

    /// The site of the key, interning it if new; and whether that answer
    /// lasts (false when the inner allocator refused memory and the event
    /// went to `[other]` for now: a thread must not cache that).
    fn intern_or_not(
        &mut self,
        addrs: &[usize],
        labels: u32,
        hash: u64,
        max_sites: usize,
    ) -> (u32, bool) {
        if self.stacks.is_empty() {
            if self.stacks.try_reserve(16).is_err()
                || self.hashes.try_reserve(16).is_err()
                || self.labels.try_reserve(16).is_err()
            {
                return (0, false);
            }
            let Some(other) = Stored::try_new(&[OTHER_FRAME]) else {
                return (0, false);
            };
            self.stacks.push(other);
            self.labels.push(0);
            self.hashes.push(0);
        }
        if let Some(id) = self.find(addrs, labels, hash) {
            return (id, true);
        }
        let n = self.stacks.len() - 1;
        if n >= max_sites.min(MAX_SITES) {
            self.fold(hash);
            return (0, true);
        }
        // Out of memory (here or just below): this event goes to `[other]`,
        // not folded into the sketch (the table is not full), and the stack
        // may get its own site on a later event, once memory is back.
        if !self.make_room() {
            return (0, false);
        }
        let Some(stored) = Stored::try_new(addrs) else {
            return (0, false);
        };
        let id = self.stacks.len() as u32;
        // `make_room` reserved space: these pushes do not reallocate.
        self.stacks.push(stored);
        self.labels.push(labels);
        self.hashes.push(hash);
        let slot = self.free_slot(hash);
        self.index[slot] = id;
        (id, true)
    }

    fn find(&self, addrs: &[usize], labels: u32, hash: u64) -> Option<u32> {
        if self.index.is_empty() {
            return None;
        }
        let mask = self.index.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let id = self.index[i];
            if id == 0 {
                return None;
            }
            if self.hashes[id as usize] == hash
                && self.labels[id as usize] == labels
                && self.stacks[id as usize].addrs() == addrs
            {
                return Some(id);
            }
            i = (i + 1) & mask;
        }
    }

    fn free_slot(&self, hash: u64) -> usize {
        let mask = self.index.len() - 1;
        let mut i = hash as usize & mask;
        while self.index[i] != 0 {
            i = (i + 1) & mask;
        }
        i
    }

    /// Reserves room for one more site, growing the index to keep it at most
    /// half full. False if the inner allocator refused.
    fn make_room(&mut self) -> bool {
        if self.stacks.try_reserve(1).is_err()
            || self.hashes.try_reserve(1).is_err()
            || self.labels.try_reserve(1).is_err()
        {
            return false;
        }
        let sites = self.stacks.len();
        if (sites + 1) * 2 <= self.index.len() {
            return true;
        }
        let cap = ((sites + 1) * 2).next_power_of_two().max(64);
        let mut index: Vec<u32> = Vec::new();
        if index.try_reserve_exact(cap).is_err() {
            return false;
        }
        index.resize(cap, 0);
        let old = std::mem::replace(&mut self.index, index);
        for id in old.into_iter().filter(|&id| id != 0) {
            let slot = self.free_slot(self.hashes[id as usize]);
            self.index[slot] = id;
        }
        true
    }

    /// Adds a folded stack's hash to the sketch.
    fn fold(&mut self, hash: u64) {
        let h = finalize(hash);
        let register = (h >> (64 - HLL_BITS)) as usize;
        // The rank of the first set bit of the remaining bits (the sentinel
        // bit caps it at 64 - HLL_BITS + 1).
        let rest = (h << HLL_BITS) | (1 << (HLL_BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        let r = &mut self.folded[register];
        *r = (*r).max(rank);
        self.any_folded = true;
    }

    /// The HyperLogLog estimate of the distinct stacks folded into site 0,
    /// with the small-range (linear counting) correction.
    fn folded_estimate(&self) -> u64 {
        if !self.any_folded {
            return 0;
        }
        let m = HLL_M as f64;
        let sum: f64 = self.folded.iter().map(|&r| (-(r as f64)).exp2()).sum();
        let zeros = self.folded.iter().filter(|&&r| r == 0).count();
        let raw = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
        let est = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        (est.round() as u64).max(1)
    }
}

/// splitmix64's finaliser: the stack hash is a multiply-xor chain whose low
/// and high bits are not equally mixed; the sketch needs uniform bits.
fn finalize(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A copy of the id -> stack list (cheap: `Arc` clones) and of the id ->
/// label id list, read together. Must run under the guard. Before any
/// stack is interned, the lists are just the overflow site.
pub(crate) fn all_sites(_: Held<'_>) -> (Vec<Arc<[usize]>>, Vec<u32>) {
    let (stacks, labels) = locked(|t| {
        let stacks: Vec<Arc<[usize]>> = t.stacks.iter_mut().map(Stored::share).collect();
        (stacks, t.labels.clone())
    });
    if stacks.is_empty() {
        (vec![Arc::from(&[OTHER_FRAME][..])], vec![0])
    } else {
        (stacks, labels)
    }
}

/// How many distinct stacks (approximately) were charged to the overflow
/// site because the table was full.
pub(crate) fn folded_stacks() -> u64 {
    locked(|t| t.folded_estimate())
}

/// Bytes held by the site table: its three arrays (by capacity), the sketch,
/// and each stack's `Arc` allocation (two counts and the addresses).
pub(crate) fn overhead_bytes() -> u64 {
    locked(|t| {
        let arrays = t.stacks.capacity() * std::mem::size_of::<Stored>()
            + t.hashes.capacity() * 8
            + t.labels.capacity() * 4
            + t.index.capacity() * 4
            + std::mem::size_of::<Inner>();
        let stacks: usize = t.stacks.iter().map(Stored::heap_bytes).sum();
        (arrays + stacks) as u64
    })
}

/// Takes the table's lock for a fork (`fork::prepare`).
pub(crate) fn lock() {
    TABLE.acquire_for_fork();
}

/// Releases the lock taken by [`lock`].
pub(crate) fn unlock() {
    TABLE.release_after_fork();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Inner {
        Inner::new()
    }

    #[test]
    fn interns_up_to_the_cap_then_folds() {
        let mut t = fresh();
        for i in 0..100usize {
            let id = t.intern(&[i, 7], 0, i as u64 * 31, 50);
            if i < 50 {
                assert_eq!(id as usize, i + 1);
            } else {
                assert_eq!(id, 0);
            }
        }
        // Known stacks keep their ids after the cap.
        assert_eq!(t.intern(&[3, 7], 0, 3 * 31, 50), 4);
        assert_eq!(t.stacks.len(), 51);
        let est = t.folded_estimate();
        assert!((45..=55).contains(&est), "estimate {est} for 50 folded");
    }

    #[test]
    fn same_hash_different_stacks_get_different_sites() {
        let mut t = fresh();
        let a = t.intern(&[1, 2], 0, 99, 10);
        let b = t.intern(&[3, 4], 0, 99, 10);
        assert_ne!(a, b);
        assert_eq!(t.intern(&[1, 2], 0, 99, 10), a);
        assert_eq!(t.intern(&[3, 4], 0, 99, 10), b);
    }

    #[test]
    fn same_stack_different_labels_get_different_sites() {
        let mut t = fresh();
        let h = 1234;
        let plain = t.intern(&[1, 2], 0, key_hash(h, 0), 10);
        let a = t.intern(&[1, 2], 1, key_hash(h, 1), 10);
        let b = t.intern(&[1, 2], 2, key_hash(h, 2), 10);
        assert_ne!(plain, a);
        assert_ne!(a, b);
        assert_ne!(key_hash(h, 1), key_hash(h, 2));
        assert_eq!(key_hash(h, 0), h | 1);
        assert_eq!(t.intern(&[1, 2], 1, key_hash(h, 1), 10), a);
        assert_eq!(t.labels[a as usize], 1);
        assert_eq!(t.labels[b as usize], 2);
    }

    #[test]
    fn sketch_estimates_large_counts() {
        let mut t = fresh();
        for i in 0..200_000u64 {
            t.fold(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        let est = t.folded_estimate() as f64;
        assert!((est / 200_000.0 - 1.0).abs() < 0.12, "estimate {est}");
    }

    #[test]
    fn zero_cap_folds_everything() {
        let mut t = fresh();
        assert_eq!(t.intern(&[1], 0, 5, 0), 0);
        assert_eq!(t.stacks.len(), 1);
        assert!(t.folded_estimate() >= 1);
    }
}
