//! The forked child's work: copy the live blocks, scan every root range and
//! every block for words that point into a block, walk the graph, and
//! encode the result as a stream of `u64`s for the parent.
//!
//! The child is a copy of the parent at the fork, with one thread. It reads
//! only memory it knows is mapped: the recorded blocks (live in the copy),
//! and root ranges clipped to the readable mappings of its own
//! `/proc/self/maps`. Until every word is scanned it allocates only from
//! `arena::MapVec` (see there for why); after that, from the inner
//! allocator (the caller holds the guard).

use std::collections::HashMap;

use super::arena::MapVec;
use crate::recorder;

/// What the parent prepared before the fork (inherited by the child).
pub(super) struct Plan {
    /// Root ranges in order of precedence (statics, thread-local storage,
    /// stacks). Range `i` has root key `i << 40` (`per_word == false`) or
    /// `(i << 40) | byte offset of the word` (one root per word: statics of a binary
    /// without symbols).
    pub(super) ranges: Vec<RootRange>,
    /// Sampled mode: scan writable anonymous memory as the root "unsampled
    /// heap memory", key `ranges.len() << 40`.
    pub(super) sampled: bool,
    /// Blocks born after this tracker-clock time are not judged unreachable.
    pub(super) young_after_us: u64,
    /// Only blocks born at or after this time are judged (a `LeakCheck`'s
    /// scope); 0 for every block.
    pub(super) born_since_us: u64,
}

/// One root range of the plan.
#[derive(Clone, Copy, Debug)]
pub(super) struct RootRange {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) per_word: bool,
    /// A stack: it claims only what no static or thread-local reaches (see
    /// the owners' pass in [`run`]).
    pub(super) weak: bool,
}

pub(super) const KEY_SHIFT: u32 = 40;
pub(super) const MAGIC: u64 = 0x6c73_7265_7461_696e; // "lsretain"
const NONE: u32 = u32::MAX;
const MANY: u32 = u32::MAX - 1;

#[derive(Clone, Copy)]
struct Blk {
    addr: usize,
    end: usize,
    site: u32,
    birth: u64,
    /// Estimated bytes this block stands for (its size times its weight).
    est: u64,
}

#[derive(Clone, Copy)]
struct Map {
    start: usize,
    end: usize,
    read: bool,
    write: bool,
    anon: bool,
}

/// Reads one aligned word of mapped memory.
///
/// Why assembly: the bytes may be uninitialised as far as Rust knows (a
/// `Vec`'s spare capacity, padding, another thread's dead stack frames), and
/// reading uninitialised memory as an integer is undefined behaviour in
/// Rust; an opaque load is what a conservative scanner needs.
#[inline(always)]
fn read_word(addr: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let v: usize;
        // SAFETY: the caller passes an 8-aligned address inside a readable
        // mapping (a live block or a clipped root range of this process).
        unsafe {
            std::arch::asm!("mov {}, [{}]", out(reg) v, in(reg) addr, options(nostack, readonly, preserves_flags))
        };
        v
    }
    #[cfg(target_arch = "aarch64")]
    {
        let v: usize;
        // SAFETY: as above.
        unsafe {
            std::arch::asm!("ldr {}, [{}]", out(reg) v, in(reg) addr, options(nostack, readonly, preserves_flags))
        };
        v
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // SAFETY: as above (a volatile read of mapped, aligned memory).
        unsafe { std::ptr::read_volatile(addr as *const usize) }
    }
}

const W: usize = std::mem::size_of::<usize>();

struct Graph<'a> {
    blocks: &'a [Blk],
    lo: usize,
    hi: usize,
    scanned: u64,
}

impl Graph<'_> {
    /// The block `v` points into (start or interior), if any.
    #[inline]
    fn find(&self, v: usize) -> Option<u32> {
        if v < self.lo || v >= self.hi {
            return None;
        }
        let i = self.blocks.partition_point(|b| b.addr <= v);
        let b = self.blocks.get(i.checked_sub(1)?)?;
        (v < b.end).then_some((i - 1) as u32)
    }

    /// Scans the words of `[start, end)` (must be readable), calling `hit`
    /// with each word's address and the block it points into.
    fn scan(&mut self, start: usize, end: usize, mut hit: impl FnMut(usize, u32) -> bool) -> bool {
        let mut a = start.next_multiple_of(W);
        while a + W <= end {
            if let Some(t) = self.find(read_word(a)) {
                if !hit(a, t) {
                    return false;
                }
            }
            a += W;
        }
        self.scanned += end.saturating_sub(start) as u64;
        true
    }
}

/// Reads `/proc/self/maps` into a mapping of our own; returns the parsed
/// entries and the buffer's range (which the sampled scan must skip).
fn read_maps(out: &mut MapVec<Map>) -> Option<(usize, usize)> {
    let mut buf: MapVec<u8> = MapVec::new();
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe {
        libc::open(
            c"/proc/self/maps".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut chunk = [0u8; 4096];
    loop {
        // SAFETY: reads into our stack buffer of that size.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr() as *mut libc::c_void, chunk.len()) };
        if n < 0 {
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            return None;
        }
        if n == 0 {
            break;
        }
        for &c in &chunk[..n as usize] {
            if !buf.push(c) {
                // SAFETY: our descriptor.
                unsafe { libc::close(fd) };
                return None;
            }
        }
    }
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    for line in buf.as_slice().split(|&c| c == b'\n') {
        let mut fields = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or(b"");
        let mut it = range.split(|&c| c == b'-');
        let (Some(s), Some(e)) = (it.next().and_then(hex), it.next().and_then(hex)) else {
            continue;
        };
        let p = |i: usize, c: u8| perms.get(i) == Some(&c);
        let m = Map {
            start: s,
            end: e,
            read: p(0, b'r'),
            write: p(1, b'w'),
            // Unnamed, the brk heap, or named by the allocator
            // (`[anon:...]`, prctl PR_SET_VMA_ANON_NAME).
            anon: p(3, b'p')
                && (path.is_empty() || path == b"[heap]" || path.starts_with(b"[anon:")),
        };
        if !out.push(m) {
            return None;
        }
    }
    Some(buf.range())
}

fn hex(s: &[u8]) -> Option<usize> {
    let mut v = 0usize;
    for &c in s {
        v = v.checked_mul(16)? + (c as char).to_digit(16)? as usize;
    }
    Some(v)
}

/// Calls `f` with each readable piece of `[start, end)`.
fn clipped(
    maps: &[Map],
    start: usize,
    end: usize,
    mut f: impl FnMut(usize, usize) -> bool,
) -> bool {
    let i = maps.partition_point(|m| m.end <= start);
    for m in &maps[i..] {
        if m.start >= end {
            break;
        }
        if m.read {
            let (s, e) = (m.start.max(start), m.end.min(end));
            if s < e && !f(s, e) {
                return false;
            }
        }
    }
    true
}

/// Runs the scan and returns the encoded result, or `None` when out of
/// memory. Runs in the child only.
pub(super) fn run(plan: &Plan) -> Option<Vec<u64>> {
    let t0 = std::time::Instant::now();
    let mut maps: MapVec<Map> = MapVec::new();
    let maps_buf = read_maps(&mut maps)?;
    maps.as_mut_slice().sort_unstable_by_key(|m| m.start);
    let maps = maps.as_slice();

    let mut blocks: MapVec<Blk> = MapVec::new();
    let mut ok = true;
    recorder::for_each_live_block(|user, size, site, birth, weight| {
        let w = if weight.is_finite() && weight >= 1.0 {
            weight as f64
        } else {
            1.0
        };
        ok &= blocks.push(Blk {
            addr: user,
            end: user + size as usize,
            site,
            birth,
            est: (size as f64 * w).round() as u64,
        });
    });
    if !ok {
        return None;
    }
    blocks.as_mut_slice().sort_unstable_by_key(|b| b.addr);
    let bs = blocks.as_slice();
    let n = bs.len();
    let mut g = Graph {
        blocks: bs,
        lo: bs.first().map_or(0, |b| b.addr),
        hi: bs.iter().map(|b| b.end).max().unwrap_or(0),
        scanned: 0,
    };

    // Root edges: (root key, block).
    let mut redges: MapVec<(u64, u32)> = MapVec::new();
    for (i, r) in plan.ranges.iter().enumerate() {
        let base = (i as u64) << KEY_SHIFT;
        let ok = clipped(maps, r.start, r.end, |s, e| {
            g.scan(s, e, |a, t| {
                let key = if r.per_word {
                    base | (a - r.start) as u64
                } else {
                    base
                };
                redges.push((key, t))
            })
        });
        if !ok {
            return None;
        }
    }
    if plan.sampled {
        // Claimed ranges: the plan's, and our maps buffer.
        let mut claimed: MapVec<(usize, usize)> = MapVec::new();
        for r in &plan.ranges {
            claimed.push((r.start, r.end));
        }
        claimed.push(maps_buf);
        // The books: their live lists' heads are blocks' addresses.
        recorder::for_each_book_range(|s, e| {
            claimed.push((s, e));
        });
        let c = claimed.as_mut_slice();
        c.sort_unstable();
        let mut merged: MapVec<(usize, usize)> = MapVec::new();
        for &(s, e) in c.iter() {
            let last = merged.len().checked_sub(1);
            match last.map(|l| merged.as_mut_slice()[l]) {
                Some((_, le)) if s <= le => {
                    let l = last.unwrap_or(0);
                    merged.as_mut_slice()[l].1 = le.max(e);
                }
                _ => {
                    if !merged.push((s, e)) {
                        return None;
                    }
                }
            }
        }
        let claimed = merged.as_slice();
        let key = (plan.ranges.len() as u64) << KEY_SHIFT;
        for m in maps.iter().filter(|m| m.read && m.write && m.anon) {
            let mut a = m.start;
            while a < m.end {
                // Skip a claimed range or a recorded block covering `a`.
                let ci = claimed.partition_point(|&(_, e)| e <= a);
                let mut seg_end = m.end;
                if let Some(&(cs, ce)) = claimed.get(ci) {
                    if cs <= a {
                        a = ce;
                        continue;
                    }
                    seg_end = seg_end.min(cs);
                }
                // A block's header (below it) holds its live-list links,
                // which are other blocks' addresses: skipped with the block.
                let bi = bs.partition_point(|b| b.end <= a);
                if let Some(b) = bs.get(bi) {
                    let from = b.addr.saturating_sub(recorder::BLOCK_HEADER_BYTES);
                    if from <= a {
                        a = b.end.next_multiple_of(W);
                        continue;
                    }
                    seg_end = seg_end.min(from);
                }
                let ok = g.scan(a, seg_end, |_, t| redges.push((key, t)));
                if !ok {
                    return None;
                }
                a = seg_end.next_multiple_of(W).max(a + W);
            }
        }
    }

    // Block edges, as compressed rows (block i's targets are
    // `targets[offs[i]..offs[i + 1]]`).
    let mut offs: MapVec<usize> = MapVec::new();
    let mut targets: MapVec<u32> = MapVec::new();
    for (i, b) in bs.iter().enumerate() {
        if !offs.push(targets.len()) {
            return None;
        }
        let mut last = NONE;
        let ok = g.scan(b.addr, b.end, |_, t| {
            if t == i as u32 || t == last {
                return true;
            }
            last = t;
            targets.push(t)
        });
        if !ok {
            return None;
        }
    }
    offs.push(targets.len());
    let (offs, targets) = (offs.as_slice(), targets.as_slice());
    let out_of = |i: usize| &targets[offs[i]..offs[i + 1]];
    let scanned = g.scanned;

    // From here on, allocating is harmless (everything is scanned).
    let re = redges.as_mut_slice();
    re.sort_unstable();
    let mut root_keys: Vec<u64> = Vec::new();
    let mut redge_roots: Vec<(u32, u32)> = Vec::with_capacity(re.len());
    let mut prev = None;
    for &(k, b) in re.iter() {
        if prev == Some((k, b)) {
            continue;
        }
        prev = Some((k, b));
        if root_keys.last() != Some(&k) {
            root_keys.push(k);
        }
        redge_roots.push(((root_keys.len() - 1) as u32, b));
    }
    // Per root: a stack, or the unsampled heap memory (the key past the
    // plan's ranges).
    let weak: Vec<bool> = root_keys
        .iter()
        .map(|&k| {
            plan.ranges
                .get((k >> KEY_SHIFT) as usize)
                .is_none_or(|r| r.weak)
        })
        .collect();

    // Breadth-first from the roots: reachability and the first path to
    // every block, as interned nodes (a root, or a parent node plus a site;
    // runs of one site are folded into one node).
    let mut nodes: Vec<(u32, u32)> = (0..root_keys.len() as u32).map(|r| (NONE, r)).collect();
    let mut intern: HashMap<(u32, u32), u32> = HashMap::new();
    let mut node_of = vec![NONE; n];
    let mut queue: Vec<u32> = Vec::with_capacity(n);
    let mut add = |parent: u32, site: u32, nodes: &mut Vec<(u32, u32)>| -> u32 {
        *intern.entry((parent, site)).or_insert_with(|| {
            nodes.push((parent, site));
            (nodes.len() - 1) as u32
        })
    };
    // Strong roots first, to the end of their reach, then the weak ones:
    // a block a static reaches gets the static's path even when a stale
    // word on a stack points at it directly.
    let mut qi = 0;
    for tier_weak in [false, true] {
        for &(r, b) in redge_roots
            .iter()
            .filter(|(r, _)| weak[*r as usize] == tier_weak)
        {
            if node_of[b as usize] == NONE {
                node_of[b as usize] = add(r, bs[b as usize].site, &mut nodes);
                queue.push(b);
            }
        }
        while qi < queue.len() {
            let b = queue[qi] as usize;
            qi += 1;
            let nb = node_of[b];
            for &t in out_of(b) {
                let t = t as usize;
                if node_of[t] == NONE {
                    let site = bs[t].site;
                    node_of[t] = if nodes[nb as usize].1 == site {
                        nb
                    } else {
                        add(nb, site, &mut nodes)
                    };
                    queue.push(t as u32);
                }
            }
        }
    }

    // Owners: the one root a block is reachable from, or MANY. A block is
    // dominated by root r (in the graph under a virtual super-root whose
    // children are the roots) exactly when r is the only root it is
    // reachable from, since no root is reachable from a block: so this is
    // the dominator tree's retained size per root, in O(edges).
    //
    // In two tiers: the strong roots (statics, module words, thread-locals)
    // over the whole graph, then the weak ones (stacks, registers, unsampled
    // heap memory) over what no strong root reaches. Conservative scanning
    // finds stale words mostly on stacks and in freed heap memory; with one
    // tier, one stale word pointing at a static's `Vec` buffer made the
    // buffer "shared" and the static retained nothing (a trial service's
    // `static AUDIT_LOG` vanished from the holders between two scans).
    let mut owner = vec![NONE; n];
    let mut work: Vec<u32> = Vec::new();
    let mut strong_reach = vec![false; n];
    let set =
        |b: usize, o: u32, owner: &mut Vec<u32>, work: &mut Vec<u32>, strong_reach: &[bool]| {
            if strong_reach[b] {
                return;
            }
            let cur = owner[b];
            if cur == NONE {
                owner[b] = o;
                work.push(b as u32);
            } else if cur != o && cur != MANY {
                owner[b] = MANY;
                work.push(b as u32);
            }
        };
    for tier_weak in [false, true] {
        if tier_weak {
            for (b, o) in owner.iter().enumerate() {
                strong_reach[b] = *o != NONE;
            }
        }
        for &(r, b) in redge_roots
            .iter()
            .filter(|(r, _)| weak[*r as usize] == tier_weak)
        {
            set(b as usize, r, &mut owner, &mut work, &strong_reach);
        }
        while let Some(b) = work.pop() {
            let o = owner[b as usize];
            for &t in out_of(b as usize) {
                set(t as usize, o, &mut owner, &mut work, &strong_reach);
            }
        }
    }

    // Unreachable, old enough: union-find into connected components.
    let mut uf: Vec<u32> = (0..n as u32).collect();
    fn find(uf: &mut [u32], mut x: u32) -> u32 {
        while uf[x as usize] != x {
            uf[x as usize] = uf[uf[x as usize] as usize];
            x = uf[x as usize];
        }
        x
    }
    let dead = |i: usize| {
        node_of[i] == NONE
            && bs[i].birth <= plan.young_after_us
            && bs[i].birth >= plan.born_since_us
    };
    for i in 0..n {
        if dead(i) {
            for &t in out_of(i) {
                if dead(t as usize) {
                    let (a, b) = (find(&mut uf, i as u32), find(&mut uf, t));
                    if a != b {
                        uf[a as usize] = b;
                    }
                }
            }
        }
    }

    #[derive(Default, Clone, Copy)]
    struct SiteRow {
        live: u64,
        blocks: u64,
        reachable: u64,
        unreachable: u64,
        unreachable_blocks: u64,
    }
    let mut sites: HashMap<u32, SiteRow> = HashMap::new();
    let mut paths: HashMap<(u32, u32), u64> = HashMap::new();
    let mut retained: HashMap<u32, u64> = HashMap::new();
    let mut root_sites: HashMap<(u32, u32), u64> = HashMap::new();
    let mut comps: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut comp_sites: HashMap<(u32, u32), u64> = HashMap::new();
    let mut young = 0u64;
    for (i, b) in bs.iter().enumerate() {
        let row = sites.entry(b.site).or_default();
        row.live += b.est;
        row.blocks += 1;
        if node_of[i] != NONE {
            row.reachable += b.est;
            let prefix = nodes[node_of[i] as usize].0;
            *paths.entry((b.site, prefix)).or_default() += b.est;
            let o = owner[i];
            if o != NONE && o != MANY {
                *retained.entry(o).or_default() += b.est;
                *root_sites.entry((o, b.site)).or_default() += b.est;
            }
        } else if dead(i) {
            row.unreachable += b.est;
            row.unreachable_blocks += 1;
            let c = find(&mut uf, i as u32);
            let e = comps.entry(c).or_default();
            e.0 += b.est;
            e.1 += 1;
            *comp_sites.entry((c, b.site)).or_default() += b.est;
        } else {
            young += b.est;
        }
    }

    // SAFETY: `rusage` is plain data, filled by the call.
    let maxrss_kib = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss.max(0) as u64
    };
    let mut out: Vec<u64> = vec![
        MAGIC,
        n as u64,
        scanned,
        t0.elapsed().as_micros() as u64,
        maxrss_kib * 1024,
        young,
    ];
    out.push(root_keys.len() as u64);
    out.extend(&root_keys);
    out.push(nodes.len() as u64);
    out.extend(
        nodes
            .iter()
            .map(|&(p, v)| (u64::from(p) << 32) | u64::from(v)),
    );
    out.push(sites.len() as u64);
    for (s, r) in &sites {
        out.extend([
            u64::from(*s),
            r.live,
            r.blocks,
            r.reachable,
            r.unreachable,
            r.unreachable_blocks,
        ]);
    }
    out.push(paths.len() as u64);
    for (&(s, p), &bytes) in &paths {
        out.extend([u64::from(s), u64::from(p), bytes]);
    }
    out.push(retained.len() as u64);
    for (&r, &bytes) in &retained {
        out.extend([u64::from(r), bytes]);
    }
    out.push(root_sites.len() as u64);
    for (&(r, s), &bytes) in &root_sites {
        out.extend([u64::from(r), u64::from(s), bytes]);
    }
    out.push(comps.len() as u64);
    for (&c, &(bytes, blocks)) in &comps {
        out.extend([u64::from(c), bytes, blocks]);
    }
    out.push(comp_sites.len() as u64);
    for (&(c, s), &bytes) in &comp_sites {
        out.extend([u64::from(c), u64::from(s), bytes]);
    }
    Some(out)
}
