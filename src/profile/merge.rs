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
//! Memory: the table keeps, per site, a 128-bit hash of its source-level
//! stack (the identity of the site: two different stacks with the same
//! 128-bit hash would be merged, which a program with a million sites has a
//! chance of about 2^-88 to see), its representative raw stack (shared with
//! the recorder's site table) and a lazily symbolized [`SiteStack`]: frames
//! are kept only for sites someone asked about, never for all of them.
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
use super::symbolize::{SiteStack, symbolize, with_symbol_lock};

/// The process-wide mapping. Locked only at query time, and only under the
/// symbol lock (`with_symbol_lock`), so its mutex is never contended and no
/// other thread holds it at a fork; held for a lookup or an insert only
/// (stacks are symbolized before, outside both locks: the symbol lock is not
/// reentrant).
struct Table {
    /// Raw site id -> site id, for raw ids `0..of_raw.len()`.
    of_raw: Vec<u32>,
    /// Identity of a site (see the module docs: its source-level stack and
    /// its label set) -> id.
    by_key: HashMap<u128, u32, BuildHasherDefault<DefaultHasher>>,
    /// Site id -> its stack (the representative raw stack, its label set;
    /// frames lazily).
    stacks: Vec<SiteStack>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    of_raw: Vec::new(),
    by_key: HashMap::with_hasher(BuildHasherDefault::new()),
    stacks: Vec::new(),
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
        // The frames themselves are dropped once hashed. Label sets are
        // looked up here too (under the label table's own lock, never
        // taken under the symbol lock).
        let sets = labels::all();
        let fresh: Vec<(u128, u32)> = raw[known..]
            .iter()
            .enumerate()
            .map(|(i, addrs)| {
                let label = raw_labels.get(known + i).copied().unwrap_or(0);
                (key_of(&symbolize(addrs), label), label)
            })
            .collect();
        with_symbol_lock(|| {
            let mut t = table();
            for (i, (key, label)) in fresh.into_iter().enumerate() {
                let raw_id = known + i;
                if raw_id < t.of_raw.len() {
                    continue; // mapped meanwhile by another query
                }
                let next = t.stacks.len() as u32;
                let site = *t.by_key.entry(key).or_insert(next);
                if site == next {
                    let mut stack = SiteStack::new(raw[raw_id].clone());
                    if let Some(set) = sets.get(label as usize).or(sets.first()) {
                        stack = stack.with_labels(set.clone());
                    }
                    t.stacks.push(stack);
                }
                t.of_raw.push(site);
            }
        });
    }
    // Every stack is symbolized (frames cached per address): the debug info
    // read for the new ones can go (see `release_symbolizer`).
    super::symbolize::release_symbolizer();
    with_symbol_lock(|| {
        let t = table();
        Merged {
            of_raw: t.of_raw[..raw.len().min(t.of_raw.len())].to_vec(),
            stacks: t.stacks.clone(),
        }
    })
}

/// A 128-bit hash of a site: its label set id and its source-level stack,
/// from its frames' keys (see `Frame::with_key`): two SipHash passes under
/// different keys (std's `DefaultHasher` is keyed with zeros; a prefix makes
/// the second pass an independent function of the same input).
fn key_of(frames: &[Frame], label: u32) -> u128 {
    let mut a = DefaultHasher::new();
    let mut b = DefaultHasher::new();
    0x9E37_79B9_7F4A_7C15u64.hash(&mut b);
    label.hash(&mut a);
    label.hash(&mut b);
    frames.len().hash(&mut a);
    frames.len().hash(&mut b);
    for f in frames {
        a.write_u64(f.key);
        b.write_u64(f.key);
    }
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// Approximate bytes held by the table, and by the frames of the sites
/// someone asked about.
pub(crate) fn overhead_bytes() -> u64 {
    with_symbol_lock(|| {
        let t = table();
        let frames: usize = t.stacks.iter().map(SiteStack::cached_bytes).sum();
        (t.of_raw.capacity() * 4
            + t.stacks.capacity() * std::mem::size_of::<SiteStack>()
            + t.stacks.len() * 48
            + t.by_key.capacity() * (16 + 4 + 1)
            + frames) as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::frame::test_frame as frame;

    #[test]
    fn same_source_same_key_whatever_the_addresses() {
        let a = [
            frame("f", Some("/a.rs"), Some(3), 0x10),
            frame("main", Some("/a.rs"), Some(9), 0x20),
        ];
        let b = [
            frame("f", Some("/a.rs"), Some(3), 0x11),
            frame("main", Some("/a.rs"), Some(9), 0x99),
        ];
        assert_eq!(key_of(&a, 0), key_of(&b, 0));
        // Another line, another site.
        let c = [
            frame("f", Some("/a.rs"), Some(4), 0x10),
            frame("main", Some("/a.rs"), Some(9), 0x20),
        ];
        assert_ne!(key_of(&a, 0), key_of(&c, 0));
        // Without line tables, the name alone.
        let d = [frame("f", None, None, 0x10)];
        let e = [frame("f", None, None, 0x50)];
        assert_eq!(key_of(&d, 0), key_of(&e, 0));
        // Without a symbol, the address.
        let g = [frame("0x10", None, None, 0x10)];
        let h = [frame("0x50", None, None, 0x50)];
        assert_ne!(key_of(&g, 0), key_of(&h, 0));
        // A prefix is not the stack.
        assert_ne!(key_of(&a[..1], 0), key_of(&a, 0));
        // The same stack under another label set is another site.
        assert_ne!(key_of(&a, 0), key_of(&a, 1));
    }
}
