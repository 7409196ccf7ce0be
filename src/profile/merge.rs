//! Raw stacks -> source-level sites.
//!
//! The recorder interns *raw* stacks: sequences of return addresses. One
//! line of source can have many: an unrolled loop, two calls on one line, a
//! closure inlined twice or a generic instantiated twice each give the same
//! call its own return address. A user asks about source, so a [`Site`]
//! (what every report, export, leak check and the monitor show) is a
//! *source-level* stack: the sequence of (function, file, line) of its
//! symbolized, trimmed frames, inlined frames included; the function name
//! alone where there is no line information, and the address where there is
//! no symbol at all.
//!
//! With labels, a site is (source-level stack, label set): the recorder's
//! raw key is (raw stack, label set id), and so is the merge key here (label
//! ids are interned canonical sets, so equal ids are equal sets).
//!
//! Each raw stack is symbolized and mapped to its site once per process (a
//! raw stack never changes), and sites are numbered in order of first sight
//! and never forgotten, so [`Site::id`] is stable for the life of the
//! process. A site keeps the first raw stack that mapped to it as its
//! representative (its [`Site::addresses`]).
//!
//! [`Site`]: super::Site
//! [`Site::id`]: super::Site::id
//! [`Site::addresses`]: super::Site::addresses

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use super::frame::Frame;
use super::labels;
use super::symbolize::{SiteStack, with_symbol_lock};

/// The process-wide mapping. Locked only at query time, and only under the
/// symbol lock (`with_symbol_lock`), so its mutex is never contended and no
/// other thread holds it at a fork; held for a lookup or an insert only
/// (every stack it compares is symbolized before, outside both locks: the
/// symbol lock is not reentrant).
struct Table {
    /// Raw site id -> site id, for raw ids `0..of_raw.len()`.
    of_raw: Vec<u32>,
    /// Hash of a site's source-level stack -> the sites with that hash (more
    /// than one only on a collision; equality is checked on the frames, so
    /// the table holds no second copy of any frame).
    by_hash: HashMap<u64, Vec<u32>, BuildHasherDefault<DefaultHasher>>,
    /// Site id -> its stack (the representative raw stack and its frames,
    /// and its label set).
    stacks: Vec<SiteStack>,
    /// Site id -> its label set id.
    labels: Vec<u32>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    of_raw: Vec::new(),
    by_hash: HashMap::with_hasher(BuildHasherDefault::new()),
    stacks: Vec::new(),
    labels: Vec::new(),
});

fn table() -> MutexGuard<'static, Table> {
    // A panic elsewhere while holding it leaves the table consistent (every
    // insert is a push after the checks), so poisoning is ignored.
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mapping as seen by one query: for every raw id passed in, its site,
/// and every site's stack.
pub(crate) struct Merged {
    /// Raw site id -> site id.
    pub(crate) of_raw: Vec<u32>,
    /// Site id -> stack. Covers every id in `of_raw`.
    pub(crate) stacks: Vec<SiteStack>,
}

/// Maps the raw sites (`raw` stacks and their `raw_labels` set ids, indexed
/// by raw site id, as the recorder returns them) to sites, symbolizing the
/// ones never seen before. Must run under the guard (symbolization
/// allocates).
pub(crate) fn merge(raw: &[Arc<[usize]>], raw_labels: &[u32]) -> Merged {
    let known = with_symbol_lock(|| table().of_raw.len());
    if known < raw.len() {
        // Symbolize the new raw stacks outside the lock: that is the slow
        // part, and two threads asking at once may both do it (the second
        // one's work is dropped below), which costs time, never correctness.
        // Their label sets are looked up here too (that takes the symbol
        // lock itself, which is not reentrant).
        let sets = labels::all();
        let fresh: Vec<(SiteStack, u32)> = raw[known..]
            .iter()
            .enumerate()
            .map(|(i, addrs)| {
                let label = raw_labels.get(known + i).copied().unwrap_or(0);
                let set = sets.get(label as usize).or(sets.first()).cloned();
                let mut s = SiteStack::new(addrs.clone());
                if let Some(set) = set {
                    s = s.with_labels(set);
                }
                s.frames();
                (s, label)
            })
            .collect();
        with_symbol_lock(|| {
            let mut t = table();
            for (i, (stack, label)) in fresh.into_iter().enumerate() {
                if known + i < t.of_raw.len() {
                    continue; // mapped meanwhile by another query
                }
                let site = t.site_of(stack, label);
                t.of_raw.push(site);
            }
        });
    }
    with_symbol_lock(|| {
        let t = table();
        Merged {
            of_raw: t.of_raw[..raw.len().min(t.of_raw.len())].to_vec(),
            stacks: t.stacks.clone(),
        }
    })
}

impl Table {
    /// The site of (`stack`'s source-level stack, label set `label`),
    /// created if new.
    fn site_of(&mut self, stack: SiteStack, label: u32) -> u32 {
        let hash = key_hash(stack.frames(), label);
        let candidates = self.by_hash.entry(hash).or_default();
        for &id in candidates.iter() {
            if self.labels[id as usize] == label
                && same_source(self.stacks[id as usize].frames(), stack.frames())
            {
                return id;
            }
        }
        let id = self.stacks.len() as u32;
        candidates.push(id);
        self.stacks.push(stack);
        self.labels.push(label);
        id
    }
}

/// What identifies a frame at the source level (see the module docs).
fn key(f: &Frame) -> (&str, Option<&str>, Option<u32>, Option<usize>) {
    // No symbol (the name is the address, and there is no file): the address
    // is all there is to tell two frames apart.
    let unresolved = f.file().is_none() && f.function().starts_with("0x");
    (
        f.function(),
        f.file(),
        f.line(),
        unresolved.then_some(f.address()),
    )
}

fn key_hash(frames: &[Frame], label: u32) -> u64 {
    let mut h = DefaultHasher::new();
    label.hash(&mut h);
    frames.len().hash(&mut h);
    for f in frames {
        key(f).hash(&mut h);
    }
    h.finish()
}

fn same_source(a: &[Frame], b: &[Frame]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

/// Approximate bytes held by the table (the frames themselves are counted
/// with the symbol cache).
pub(crate) fn overhead_bytes() -> u64 {
    with_symbol_lock(|| {
        let t = table();
        (t.of_raw.capacity() * 4
            + t.labels.capacity() * 4
            + t.stacks.capacity() * std::mem::size_of::<SiteStack>()
            + t.by_hash.capacity() * (8 + std::mem::size_of::<Vec<u32>>())
            + t.by_hash.values().map(|v| v.capacity() * 4).sum::<usize>()) as u64
    })
}
