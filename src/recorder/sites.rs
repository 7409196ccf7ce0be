//! The site table: one site per distinct call stack, interned once and kept
//! for the life of the process, so site ids are stable across snapshots.
//!
//! Lookups go through the calling thread's book cache first (stack hash ->
//! site id), so the shared table is touched once per distinct stack per
//! thread, not once per recorded event. The cache trusts the 64-bit hash (it
//! does not compare the stacks), so two stacks colliding in it would share a
//! site; the table itself is keyed by the whole stack.
//!
//! Lock order: a `TABLE` shard lock, then `STACKS`. `STACKS` alone is taken by
//! snapshots. Both run only under the guard (dashmap allocates when it grows).

use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use once_cell::sync::Lazy;

use super::book::{Book, MAX_SITES};
use super::stack::Stack;

static TABLE: Lazy<DashMap<Box<[usize]>, u32>> = Lazy::new(DashMap::new);

/// Site id -> raw stack. Id 0 is the catch-all used once the table is full.
static STACKS: Mutex<Vec<Arc<[usize]>>> = Mutex::new(Vec::new());

/// The site id of `stack`, interning it if new. Must run under the guard.
#[inline(always)]
pub(crate) fn site_of(stack: &Stack, book: &Book) -> u32 {
    let hash = stack.hash();
    match book.cached_site(hash) {
        Some(site) => site,
        None => miss(stack, hash, book),
    }
}

/// A stack this thread has not recorded lately: the shared table.
#[cold]
#[inline(never)]
fn miss(stack: &Stack, hash: u64, book: &Book) -> u32 {
    let site = intern(stack.addrs());
    book.cache_site(hash, site);
    site
}

fn intern(addrs: &[usize]) -> u32 {
    if let Some(id) = TABLE.get(addrs) {
        return *id;
    }
    *TABLE.entry(addrs.into()).or_insert_with(|| {
        let mut stacks = STACKS.lock().unwrap_or_else(|e| e.into_inner());
        if stacks.is_empty() {
            stacks.push(Arc::from(&[][..]));
        }
        if stacks.len() >= MAX_SITES {
            return 0;
        }
        stacks.push(Arc::from(addrs));
        (stacks.len() - 1) as u32
    })
}

/// A copy of the id -> stack list (cheap: `Arc` clones).
pub(crate) fn all_stacks() -> Vec<Arc<[usize]>> {
    STACKS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Approximate bytes held by the site table.
pub(crate) fn overhead_bytes(stacks: &[Arc<[usize]>]) -> u64 {
    // Each stack is stored twice (table key and id list) plus map and Arc
    // bookkeeping of roughly 64 bytes.
    stacks.iter().map(|s| (s.len() * 2 * 8 + 64) as u64).sum()
}
