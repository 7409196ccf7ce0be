//! Label sets, interned: label set id <-> the set's `(key, value)` pairs.
//!
//! The recorder keys each site by (raw stack, label set id) and gives the id
//! no meaning; this table gives it one. A set is stored *canonical*: sorted
//! by key, one value per key, so two orders of the same labels are one set
//! and one id. Id 0 is the empty set. Sets are interned for the life of the
//! process (ids are stable, like site ids) and bounded: past the tracker's
//! `max_label_sets` distinct sets, every new one gets the id of the one
//! overflow set, [`OTHER_LABELS`] (`leakscope=other`).
//!
//! Interning is not on the allocation path: it runs when `with_labels`,
//! `WithLabels::with_labels` or the tracing layer is called, under the guard.
//! It must still be cheap, so each thread keeps a cache (hash of the
//! canonical set -> ids, id -> set; `Arc` clones, no second copy of any
//! string) and takes the shared table's lock only for a set it has not met
//! (and, past the cap, for each overflowed set: those are not cached, so a
//! thread's cache stays bounded by the cap too).
//!
//! **Bounded in bytes:** a key or value longer than [`MAX_LABEL_LEN`] bytes
//! is cut there (at a character boundary, ending in `…`) before the set is
//! interned, and once the table's strings hold [`MAX_LABEL_BYTES`], every
//! new set goes to the overflow set as it does past `max_label_sets`. So
//! the table holds at most about `MAX_LABEL_BYTES` of strings plus its
//! per-set arrays, whatever the labels are taken from.
//!
//! **Its own lock, never behind symbolization:** the shared table is under
//! its own lock (`TABLE_LOCK`), held only for a lookup, a push or a copy of
//! the id array (microseconds, no call out), never under or around the
//! symbol lock: interning a new set never waits for a snapshot that
//! symbolizes. It is the recorder's spin lock (never allocates, never
//! parks) because its sections are that short, and because the fork
//! handlers must take and release it from outside any scope: `prepare`
//! takes it and `parent`/`child` release it (registered here on first use,
//! so before or after the recorder's and the symbol cache's: the order does
//! not matter, since no lock is taken while it is held and it is never
//! waited for while another is held).

use std::cell::{RefCell, UnsafeCell};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use crate::recorder::{self, DEFAULT_MAX_LABEL_SETS, Guard, SpinLock};

/// The longest label key or value kept, in bytes: longer ones are cut here
/// (at a character boundary) and end in `…`, so two values that agree on
/// their first 256 bytes are one value.
pub const MAX_LABEL_LEN: usize = 256;

/// The label table's budget for strings, in bytes (keys and values of every
/// interned set, 4 MiB): past it, new sets go to the overflow set
/// `leakscope=other`, as past [`Tracker::max_label_sets`](crate::Tracker::max_label_sets).
pub const MAX_LABEL_BYTES: usize = 4 << 20;

/// One interned label set: `(key, value)` pairs sorted by key, keys unique.
pub(crate) type LabelSet = Arc<[(String, String)]>;

/// The label the overflow set carries (see `Tracker::max_label_sets`).
pub(crate) const OTHER_LABELS: (&str, &str) = ("leakscope", "other");

type Hasher64 = BuildHasherDefault<DefaultHasher>;

struct Table {
    /// Id -> set; id 0 is the empty set (pushed on first use).
    sets: Vec<LabelSet>,
    /// Hash of a canonical set -> the ids with that hash (more than one only
    /// on a collision; equality is checked on the pairs).
    by_hash: HashMap<u64, Vec<u32>, Hasher64>,
    /// The overflow set's id, 0 until the cap was first reached.
    other: u32,
    /// Bytes of the strings of every set (by capacity).
    string_bytes: usize,
}

/// The shared table and its lock (see the module docs).
struct Shared {
    lock: SpinLock,
    table: UnsafeCell<Table>,
}

// SAFETY: `table` is only touched by the holder of `lock` (`with_table`).
unsafe impl Sync for Shared {}

static TABLE: Shared = Shared {
    lock: SpinLock::new(),
    table: UnsafeCell::new(Table {
        sets: Vec::new(),
        by_hash: HashMap::with_hasher(BuildHasherDefault::new()),
        other: 0,
        string_bytes: 0,
    }),
};

/// The table, under its own lock (see the module docs). `f` must not take
/// another lock or call out; it runs under the guard (its allocations go to
/// the inner allocator).
fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    fork::install();
    Guard::run(|| {
        let _g = TABLE.lock.lock();
        // SAFETY: we hold the lock, so no one else touches the table. A
        // panic in `f` (an allocation failure) leaves it consistent: every
        // change is a push after the checks, and the guard releases the lock.
        let t = unsafe { &mut *TABLE.table.get() };
        if t.sets.is_empty() {
            t.sets.push(Arc::from(Vec::new()));
        }
        f(t)
    })
}

/// Registers the label table's fork handlers (once per process): at its
/// first use, and before `main` (`startup`).
#[cfg(unix)]
pub(super) fn install_fork_handlers() {
    fork::install();
}

#[cfg(unix)]
mod fork {

    use super::TABLE;

    /// Not a bare `Once`: see `atfork` (a child must never wait on it).
    static ONCE: super::super::atfork::AtforkOnce = super::super::atfork::AtforkOnce::new();

    /// Registers the fork handlers (once): no thread holds the table's lock
    /// in a forked child.
    pub(super) fn install() {
        ONCE.install(prepare, parent, child);
    }

    extern "C" fn prepare() {
        TABLE.lock.acquire();
    }

    extern "C" fn parent() {
        TABLE.lock.release();
    }

    extern "C" fn child() {
        ONCE.complete_in_child();
        TABLE.lock.reset();
    }
}

#[cfg(not(unix))]
mod fork {
    /// No `fork` on this platform.
    pub(super) fn install() {}
}

/// `s` cut to at most [`MAX_LABEL_LEN`] bytes, at a character boundary,
/// ending in `…` when cut.
fn cut(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_LABEL_LEN {
        return s.into();
    }
    let mut end = MAX_LABEL_LEN - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// This thread's view of the table: only ids and `Arc` clones of sets.
#[derive(Default)]
struct Cache {
    by_hash: HashMap<u64, Vec<u32>, Hasher64>,
    sets: HashMap<u32, LabelSet, Hasher64>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

fn hash_of<'a>(pairs: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = DefaultHasher::new();
    pairs.len().hash(&mut h);
    for (k, v) in pairs {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

fn same(set: &[(String, String)], pairs: &[(&str, &str)]) -> bool {
    set.len() == pairs.len()
        && set
            .iter()
            .zip(pairs)
            .all(|((k, v), (k2, v2))| k == k2 && v == v2)
}

/// The id of `base`'s labels with `labels` added (a key already in `base`
/// takes the new value; among `labels`, the last value of a key wins).
/// Runs under the guard. Takes the shared lock only for a set this thread
/// has not interned before.
pub(crate) fn intern(labels: &[(&str, &str)], base: u32) -> u32 {
    if labels.is_empty() {
        return base;
    }
    Guard::run(|| {
        let base_set = if base == 0 { None } else { Some(resolve(base)) };
        let short: Vec<_> = labels.iter().map(|&(k, v)| (cut(k), cut(v))).collect();
        // Canonical form: sorted by key, the last value of each key.
        let mut pairs: Vec<(&str, &str)> = base_set
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .chain(short.iter().map(|(k, v)| (&**k, &**v)))
            .collect();
        // Stable, so the later value of a key (inner over outer) stays last.
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut canon: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            match canon.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => canon.push(p),
            }
        }
        let hash = hash_of(canon.iter().copied());
        let cached = CACHE.try_with(|c| {
            let c = c.borrow();
            c.by_hash.get(&hash).and_then(|ids| {
                ids.iter()
                    .copied()
                    .find(|id| c.sets.get(id).is_some_and(|s| same(s, &canon)))
            })
        });
        if let Ok(Some(id)) = cached {
            return id;
        }
        let cap = recorder::label_cap().map_or(DEFAULT_MAX_LABEL_SETS, |n| n as usize);
        let (id, set) = with_table(|t| t.intern(&canon, hash, cap));
        // An overflowed set is not cached: a thread's cache must not grow
        // with the sets past the cap (labels from unbounded input), so each
        // of those takes the lock.
        if same(&set, &canon) {
            let _ = CACHE.try_with(|c| {
                let mut c = c.borrow_mut();
                c.by_hash.entry(hash).or_default().push(id);
                c.sets.insert(id, set);
            });
        }
        id
    })
}

impl Table {
    fn intern(&mut self, canon: &[(&str, &str)], hash: u64, cap: usize) -> (u32, LabelSet) {
        if let Some(&id) = self
            .by_hash
            .get(&hash)
            .and_then(|ids| ids.iter().find(|&&id| same(&self.sets[id as usize], canon)))
        {
            return (id, self.sets[id as usize].clone());
        }
        let distinct = self.sets.len() - 1 - usize::from(self.other != 0);
        let bytes: usize = canon.iter().map(|(k, v)| k.len() + v.len()).sum();
        if distinct >= cap || self.string_bytes + bytes > MAX_LABEL_BYTES {
            if self.other == 0 {
                let other = [OTHER_LABELS];
                let h = hash_of(other.iter().copied());
                self.other = self.push(&other, h);
            }
            return (self.other, self.sets[self.other as usize].clone());
        }
        let id = self.push(canon, hash);
        (id, self.sets[id as usize].clone())
    }

    fn push(&mut self, canon: &[(&str, &str)], hash: u64) -> u32 {
        let set: LabelSet = canon
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.string_bytes += set
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity())
            .sum::<usize>();
        let id = self.sets.len() as u32;
        self.sets.push(set);
        self.by_hash.entry(hash).or_default().push(id);
        id
    }
}

/// The set of `id` (empty for 0 or an unknown id). Runs under the guard.
pub(crate) fn resolve(id: u32) -> LabelSet {
    Guard::run(|| {
        if let Ok(Some(set)) = CACHE.try_with(|c| c.borrow().sets.get(&id).cloned()) {
            return set;
        }
        let set = with_table(|t| t.sets.get(id as usize).unwrap_or(&t.sets[0]).clone());
        let _ = CACHE.try_with(|c| c.borrow_mut().sets.insert(id, set.clone()));
        set
    })
}

/// Every set, indexed by id (for a snapshot, which resolves many ids at
/// once). Runs under the guard.
pub(crate) fn all() -> Vec<LabelSet> {
    Guard::run(|| with_table(|t| t.sets.clone()))
}

/// Bytes the shared table holds: its arrays, each set's `Arc` allocation and
/// its strings. (Each thread's cache holds only ids and `Arc` clones.)
pub(crate) fn overhead_bytes() -> u64 {
    with_table(|t| {
        let pair = std::mem::size_of::<(String, String)>();
        let arrays = t.sets.capacity() * std::mem::size_of::<LabelSet>()
            + t.by_hash.capacity() * (8 + std::mem::size_of::<Vec<u32>>())
            + t.by_hash.values().map(|v| v.capacity() * 4).sum::<usize>();
        let sets: usize = t.sets.iter().map(|s| 16 + s.len() * pair).sum();
        (arrays + sets + t.string_bytes) as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Table {
        Table {
            sets: vec![Arc::from(Vec::new())],
            by_hash: HashMap::default(),
            other: 0,
            string_bytes: 0,
        }
    }

    #[test]
    fn table_interns_up_to_the_cap_then_overflows() {
        let mut t = fresh();
        let key = |i: usize| format!("t{i}");
        let mut ids = Vec::new();
        for i in 0..5 {
            let k = key(i);
            let canon = [("tenant", k.as_str())];
            let h = hash_of(canon.iter().copied());
            ids.push(t.intern(&canon, h, 3).0);
        }
        assert_eq!(&ids[..3], &[1, 2, 3]);
        assert_eq!(ids[3], ids[4]);
        assert_eq!(
            &*t.sets[ids[3] as usize],
            &[("leakscope".into(), "other".into())]
        );
        // Known sets keep their ids after the cap.
        let canon = [("tenant", "t1")];
        assert_eq!(t.intern(&canon, hash_of(canon.iter().copied()), 3).0, 2);
    }

    #[test]
    fn long_keys_and_values_are_cut_at_a_char_boundary() {
        assert_eq!(cut("short"), "short");
        let exact = "x".repeat(MAX_LABEL_LEN);
        assert_eq!(cut(&exact), exact);
        let long = "é".repeat(MAX_LABEL_LEN);
        let c = cut(&long);
        assert!(c.len() <= MAX_LABEL_LEN, "{}", c.len());
        assert!(c.len() > MAX_LABEL_LEN - 8);
        assert!(c.ends_with('…'));
        assert!(long.starts_with(c.trim_end_matches('…')));
    }

    #[test]
    fn table_strings_are_bounded_in_bytes() {
        let mut t = fresh();
        let value = |i: usize| format!("{i:0>250}");
        let per_set = "tenant".len() + 250;
        let fit = MAX_LABEL_BYTES / per_set;
        let mut last = 0;
        for i in 0..fit + 10 {
            let v = value(i);
            let canon = [("tenant", v.as_str())];
            last = t
                .intern(&canon, hash_of(canon.iter().copied()), usize::MAX)
                .0;
        }
        assert!(t.string_bytes <= MAX_LABEL_BYTES + 64, "{}", t.string_bytes);
        assert_eq!(t.other, last, "sets past the byte budget overflow");
        assert_eq!(t.sets.len(), fit + 2); // the empty set, `fit` sets, other
    }

    #[test]
    fn interning_a_new_set_does_not_wait_for_the_symbol_lock() {
        // Hold the symbol lock (as a snapshot that symbolizes does) while
        // another thread interns a set never seen: it must finish anyway.
        let (tx, rx) = std::sync::mpsc::channel();
        super::super::symbolize::with_symbol_lock(|| {
            std::thread::spawn(move || {
                let id = intern(&[("interned-while", "symbolizing")], 0);
                let _ = tx.send(id);
            });
            let id = rx.recv_timeout(std::time::Duration::from_secs(20));
            assert!(matches!(id, Ok(id) if id != 0), "{id:?}");
        });
    }
}
