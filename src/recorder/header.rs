//! The header in front of every recorded block, and how a free tells a
//! recorded block from an unrecorded one without any table.
//!
//! A recorded block is allocated from the inner allocator with `pad(align)`
//! extra bytes and handed out at `base + off`. The 48 bytes just below the
//! user pointer hold a [`Header`]; its last field is a magic word derived from
//! the user pointer and a per-process secret.
//!
//! **Invariant (recognition):** every recorded user pointer `p` satisfies
//! `p % 4096 >= 8`, so the 8 bytes below it lie in the same page as `p` itself.
//! A free of any pointer `p` with `p % 4096 >= 8` may therefore read those 8
//! bytes (the page is mapped because the block's first byte is in it) and
//! compare them with `magic(p)`; a pointer with `p % 4096 < 8` is never
//! recorded. This test is a load and a compare: no lock, no lookup, no shared
//! write, in every mode. The load is an `asm!` block, not a Rust read, since
//! those bytes are not ours (see `word_below`); under Miri a side table
//! stands in for it.
//!
//! **Invariant (small alignments):** a recorded block whose alignment is at
//! most 8 sits at `p % 16 == 8`. The free of such a block (the caller passes
//! the alignment it allocated with) first tests bit 3 of the pointer, without
//! touching memory: allocators hand out 16-aligned blocks for all but the
//! smallest sizes, so for nearly every unrecorded block that one test is the
//! whole cost. (Bit 3 set also means `p % 4096 >= 8`.)
//!
//! **Invariant (no stale magic):** the magic is cleared before a recorded
//! block goes back to the inner allocator (free, or a realloc that may move
//! it), so a later unrecorded block at the same address cannot match. A false
//! match otherwise needs the 8 bytes below an unrecorded block to equal a
//! 64-bit value that depends on a secret from the kernel's random source.
//!
//! The inner allocator always gets back the exact layout it handed out:
//! `(size + pad(align), align)` with the caller's own `align`, recomputable
//! from the caller's layout alone, whatever the sample interval is by then.
//! Allocations with `align >= 4096` are never recorded (their user pointer is
//! page-aligned by definition).

use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Size of the header below each recorded user pointer.
pub(crate) const HEADER_SIZE: usize = 48;
const PAGE: usize = 4096;

/// Bookkeeping for one recorded block. Stored unaligned (the caller's
/// alignment may be 1), always read and written whole with
/// `read_unaligned`/`write_unaligned`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    /// Neighbours in the owning book's live list for this address (user
    /// pointers, 0 = none). Guarded by that list's lock.
    pub(crate) prev: usize,
    pub(crate) next: usize,
    /// Birth in microseconds since the tracker's epoch (low 48 bits) and the
    /// distance from the inner allocation's base to the user pointer (high 16).
    birth_off: u64,
    /// Requested size (low 48 bits) and the index of the book whose live list
    /// holds the block (high 16).
    size_book: u64,
    /// Site that allocated the block: the free is charged here.
    pub(crate) site: u32,
    /// Unbiasing weight fixed at record time (1 in exact mode).
    pub(crate) weight: f32,
    /// `magic(user)`; must stay the last field (it sits at `user - 8`).
    pub(crate) magic: u64,
}

const LOW48: u64 = (1 << 48) - 1;

impl Header {
    /// A header for a block at `user`, not yet linked.
    pub(crate) fn new(
        user: usize,
        size: usize,
        off: usize,
        book: u16,
        site: u32,
        weight: f32,
        birth_us: u64,
    ) -> Header {
        // The packed fields must not lose bits: sizes fit 48 bits (no
        // allocation reaches 2^48 bytes), the offset 16 (at most `pad(2048)`).
        debug_assert!(size as u64 <= LOW48, "size {size} overflows 48 bits");
        debug_assert!(off <= u16::MAX as usize, "offset {off} overflows 16 bits");
        debug_assert!(
            off >= HEADER_SIZE,
            "offset {off} leaves no room for the header"
        );
        Header {
            prev: 0,
            next: 0,
            birth_off: (birth_us & LOW48) | ((off as u64) << 48),
            size_book: ((size as u64) & LOW48) | ((book as u64) << 48),
            site,
            weight,
            magic: magic(user),
        }
    }
    pub(crate) fn birth_us(&self) -> u64 {
        self.birth_off & LOW48
    }
    pub(crate) fn off(&self) -> usize {
        (self.birth_off >> 48) as usize
    }
    pub(crate) fn size(&self) -> u64 {
        self.size_book & LOW48
    }
    pub(crate) fn book(&self) -> u16 {
        (self.size_book >> 48) as u16
    }
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);

/// Largest alignment we record; see the module docs.
pub(crate) const MAX_RECORDED_ALIGN: usize = PAGE / 2;

/// The smallest offset that leaves room for the header and keeps alignment.
///
/// `align` is a power of two (a `Layout` guarantees it), so this is a mask:
/// `next_multiple_of` compiled to a division on every recorded event.
#[inline(always)]
fn off_min(align: usize) -> usize {
    (HEADER_SIZE + align - 1) & !(align - 1)
}

/// Extra bytes a recorded block of this alignment takes from the inner
/// allocator: the header (rounded up to `align`) plus slack to move the user
/// pointer to `8 mod 16` (alignment 8 or less, from a base of any alignment)
/// or off a page boundary (larger alignments).
#[inline(always)]
pub(crate) fn pad(align: usize) -> usize {
    if align <= 8 {
        HEADER_SIZE + 16
    } else {
        off_min(align) + align
    }
}

/// The inner layout of a recorded block whose caller layout is `layout`, or
/// `None` if such a block cannot be recorded.
#[inline]
pub(crate) fn inner_layout(layout: Layout) -> Option<Layout> {
    if layout.align() > MAX_RECORDED_ALIGN {
        return None;
    }
    let size = layout.size().checked_add(pad(layout.align()))?;
    Layout::from_size_align(size, layout.align()).ok()
}

/// Where to put the user pointer in an inner block at `base`: for alignments
/// of 8 or less, the offset in `48..64` that puts it at `8 mod 16`; for larger
/// ones, the smallest aligned offset with room for the header whose result is
/// not within 8 bytes of a page start.
#[inline]
pub(crate) fn choose_off(base: usize, align: usize) -> usize {
    let off = if align <= 8 {
        // HEADER_SIZE is a multiple of 16, so this makes base + off = 8 mod 16.
        HEADER_SIZE + (8usize.wrapping_sub(base) & 15)
    } else if (base + off_min(align)) % PAGE < 8 {
        // One step of `align` (at least 16) moves the page offset to at
        // least 16.
        off_min(align) + align
    } else {
        off_min(align)
    };
    // The invariants of the module docs, checked where they are made.
    debug_assert!(
        off >= HEADER_SIZE && off <= pad(align),
        "offset {off} outside the padding"
    );
    debug_assert!(
        (base + off).is_multiple_of(align.max(1)),
        "user pointer misaligned"
    );
    debug_assert!(
        (base + off) % PAGE >= 8,
        "header's last word in another page"
    );
    debug_assert!(
        align > 8 || (base + off) % 16 == 8,
        "small block not at 8 mod 16"
    );
    off
}

/// The per-process secret mixed into every magic word; 0 until the first
/// recorded block needs it (see [`secret_for_record`]).
///
/// It comes from the kernel's random source, not from an address: one
/// leaked address would otherwise reveal it under ASLR, and with it the
/// magic of any block, so a crafted free could be taken for a recorded one.
/// Bit 63 is always set once initialised, so a magic (`user ^ secret`) is
/// never 0 (the cleared state) and never a plausible user-space pointer or
/// size.
///
/// Relaxed ordering suffices: the thread that records a block stores (or
/// reads) the secret before it writes the block's header, and whoever frees
/// the block got its pointer through some synchronisation that came after
/// that, so its load sees the secret.
static SECRET: AtomicU64 = AtomicU64::new(0);

/// The secret for a block about to be recorded, initialised on first use:
/// a system call, no allocation, no lock (racing initialisers agree through
/// one compare-exchange).
#[inline(always)]
fn secret_for_record() -> u64 {
    match SECRET.load(Relaxed) {
        0 => init_secret(),
        s => s,
    }
}

#[cold]
#[inline(never)]
fn init_secret() -> u64 {
    let fresh = random_secret() | 1 << 63;
    match SECRET.compare_exchange(0, fresh, Relaxed, Relaxed) {
        Ok(_) => fresh,
        Err(won) => won,
    }
}

/// 64 random bits from the kernel: `getrandom(2)` (non-blocking), or where
/// that fails (very early boot, a seccomp filter, an old kernel) the 16
/// bytes the kernel put in the auxiliary vector (`AT_RANDOM`), hashed so as
/// not to reveal glibc's stack canary, which is taken from the same bytes.
/// Only if neither exists: an address and the clock (the old scheme).
fn random_secret() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut buf = [0u8; 8];
        // SAFETY: `buf` is valid for 8 bytes of writes; the call allocates
        // nothing and takes no lock.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
        if n == 8 {
            return u64::from_ne_bytes(buf);
        }
        // SAFETY: `getauxval` only reads the auxiliary vector.
        let at_random = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const [u64; 2];
        if !at_random.is_null() {
            // SAFETY: the kernel's AT_RANDOM entry points to 16 readable
            // bytes, kept for the life of the process.
            let [a, b] = unsafe { std::ptr::read_unaligned(at_random) };
            return mix64(a) ^ mix64(b ^ 0x9E37_79B9_7F4A_7C15).rotate_left(32);
        }
    }
    static ANCHOR: u8 = 0;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix64(&ANCHOR as *const u8 as u64 ^ now.rotate_left(29))
}

/// splitmix64's finaliser.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The magic word of a block being recorded at `user`. Never 0 (the cleared
/// state) and never a plausible size or pointer for a user-space address
/// (the secret's bit 63 is set). A plain xor keeps the free path's test
/// short.
#[inline(always)]
pub(crate) fn magic(user: usize) -> u64 {
    (user as u64) ^ secret_for_record()
}

/// Returns true if `user` is a block this tracker recorded (and has not
/// released).
///
/// # Safety
/// `user` must be a live block of at least one byte handed out by the global
/// allocator (the caller is freeing or reallocating it), and `align` the
/// alignment it was allocated with.
#[inline(always)]
pub(crate) unsafe fn is_recorded(user: *mut u8, align: usize) -> bool {
    let addr = user as usize;
    // `align` is a constant wherever the caller's type is known, so only one
    // of the two tests is compiled in.
    if align <= 8 {
        if addr & 8 == 0 {
            return false;
        }
    } else if addr % PAGE < 8 {
        return false;
    }
    // SAFETY: `addr - 8 .. addr` lies in the same page as `addr` (checked just
    // above: bit 3 set also means a page offset of at least 8), and that page
    // is mapped because the caller's live block starts at `addr`. See
    // `word_below` for why the load is sound although those bytes are not
    // ours.
    let word = unsafe { word_below(addr) };
    // Before the first recorded block the secret is 0 and nothing matches
    // (the test on `secret` keeps a word equal to the address itself from
    // matching then).
    let secret = SECRET.load(Relaxed);
    word == (addr as u64) ^ secret && secret != 0
}

/// The 8 bytes just below `addr`, which may belong to anything (allocator
/// metadata, the tail of another block, a freed block): we only compare them,
/// never trust them.
///
/// A Rust load of them would be undefined behaviour (they lie outside the
/// allocation the caller's pointer belongs to), however harmless on the
/// hardware. So the load is an `asm!` block, which the compiler cannot see
/// through: its effect on the abstract machine is only "returns some `u64`"
/// (it writes nothing, `readonly`), which Rust code could also do, and at the
/// machine level it is an ordinary 8-byte load from a mapped page, which
/// cannot fault and has no data-race semantics on x86-64 or aarch64 (an
/// unaligned load is allowed on both for normal memory). AddressSanitizer
/// does not instrument inline assembly, so it is not reported either.
///
/// # Safety
/// `addr - 8 .. addr` must lie in a mapped page (the same page as a live
/// block's first byte).
#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(miri),
    not(leakscope_asan)
))]
#[inline(always)]
unsafe fn word_below(addr: usize) -> u64 {
    let word: u64;
    // SAFETY: see above; the block reads 8 bytes of a mapped page, writes no
    // memory, does not touch the stack or the flags.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!(
            "mov {word}, qword ptr [{p}]",
            p = in(reg) addr - 8,
            word = lateout(reg) word,
            options(readonly, nostack, preserves_flags),
        );
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!(
            "ldr {word}, [{p}]",
            p = in(reg) addr - 8,
            word = lateout(reg) word,
            options(readonly, nostack, preserves_flags),
        );
    }
    word
}

/// Under AddressSanitizer (`scripts/sanitizers.sh` builds with
/// `--cfg leakscope_asan`): ASan does not see the `asm!` load, so instead of
/// hiding it, ask ASan's shadow memory first. Bytes ASan has poisoned (the
/// left redzone every ASan allocation has, at least 16 bytes, holding its
/// chunk header) belong to no block, so a block with them below it is not
/// recorded (our header below a recorded block is inside our own inner
/// allocation, never poisoned). Otherwise the 8 bytes are read with an
/// ordinary, instrumented Rust load, which ASan checks like any other: if it
/// ever read memory leakscope does not own, ASan would report it. So under
/// ASan every byte the recognition reads is checked, not hidden.
///
/// # Safety
/// As the other version.
#[cfg(all(leakscope_asan, not(miri)))]
#[inline(always)]
unsafe fn word_below(addr: usize) -> u64 {
    unsafe extern "C" {
        /// ASan's interface (`sanitizer/asan_interface.h`): the first
        /// poisoned byte of `[beg, beg + size)`, or null if none is.
        fn __asan_region_is_poisoned(beg: *mut u8, size: usize) -> *mut u8;
    }
    let below = (addr - 8) as *mut u8;
    // SAFETY: the function only reads ASan's shadow for the range, which is
    // mapped for every application address.
    if !unsafe { __asan_region_is_poisoned(below, 8) }.is_null() {
        return 0;
    }
    // SAFETY: unpoisoned bytes right below a live block's start under ASan
    // are a recorded block's header (see above); ASan checks the load.
    unsafe { std::ptr::read_unaligned(below as *const u64) }
}

/// Under Miri (which cannot run `asm!`, and would rightly flag a Rust load
/// outside the allocation), recorded blocks are also kept in a side table,
/// and only a block the table holds has its own header read.
///
/// # Safety
/// As the other version.
#[cfg(miri)]
#[inline(always)]
unsafe fn word_below(addr: usize) -> u64 {
    if miri_table::contains(addr) {
        // SAFETY: a block in the table is recorded: these are its header's
        // last 8 bytes, inside the inner block we allocated.
        unsafe { std::ptr::read_unaligned((addr - 8) as *const u64) }
    } else {
        0
    }
}

/// Other targets (no `asm!` load here yet): a plain unaligned read of the
/// mapped bytes. **Not covered by the no-UB guarantee** (RELIABILITY.md):
/// harmless on the hardware, outside the abstract machine's rules.
///
/// # Safety
/// As the other version.
#[cfg(all(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    not(miri),
    not(leakscope_asan)
))]
#[inline(always)]
unsafe fn word_below(addr: usize) -> u64 {
    // SAFETY: the page is mapped (caller's contract); see the doc comment.
    unsafe { std::ptr::read_unaligned((addr - 8) as *const u64) }
}

/// The recorded blocks, for Miri only (see `word_below`): a fixed-size open
/// addressing set of user pointers (no allocation, so it can be used from
/// any allocator call), under a spin lock taken inside a live list's lock.
/// Miri runs are small: past `CAP / 2` live recorded blocks the process
/// aborts rather than hand out a block it could not recognise.
#[cfg(miri)]
mod miri_table {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use super::super::sync::RawSpinLock;

    const CAP: usize = 1 << 16;
    static LOCK: RawSpinLock = RawSpinLock::new();
    static SLOTS: [AtomicUsize; CAP] = [const { AtomicUsize::new(0) }; CAP];
    static LEN: AtomicUsize = AtomicUsize::new(0);

    fn home(key: usize) -> usize {
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) & (CAP - 1)
    }

    pub(super) fn contains(key: usize) -> bool {
        let _g = LOCK.lock();
        let mut i = home(key);
        loop {
            match SLOTS[i].load(Relaxed) {
                0 => return false,
                k if k == key => return true,
                _ => i = (i + 1) & (CAP - 1),
            }
        }
    }

    pub(super) fn insert(key: usize) {
        let _g = LOCK.lock();
        if LEN.load(Relaxed) >= CAP / 2 {
            std::process::abort();
        }
        let mut i = home(key);
        loop {
            match SLOTS[i].load(Relaxed) {
                0 => break,
                k if k == key => return,
                _ => i = (i + 1) & (CAP - 1),
            }
        }
        SLOTS[i].store(key, Relaxed);
        LEN.fetch_add(1, Relaxed);
    }

    /// Removes `key`, shifting later entries of its probe run back so that
    /// no tombstones accumulate.
    pub(super) fn remove(key: usize) {
        let _g = LOCK.lock();
        let mut i = home(key);
        loop {
            match SLOTS[i].load(Relaxed) {
                0 => return,
                k if k == key => break,
                _ => i = (i + 1) & (CAP - 1),
            }
        }
        let mut j = i;
        loop {
            j = (j + 1) & (CAP - 1);
            let k = SLOTS[j].load(Relaxed);
            if k == 0 {
                break;
            }
            let h = home(k);
            // Move `k` into the hole at `i` unless its home lies in `(i, j]`.
            let stays = if i <= j {
                i < h && h <= j
            } else {
                i < h || h <= j
            };
            if !stays {
                SLOTS[i].store(k, Relaxed);
                i = j;
            }
        }
        SLOTS[i].store(0, Relaxed);
        LEN.fetch_sub(1, Relaxed);
    }
}

/// The header's fields that never change while the block is recorded
/// (everything but the links), with the links left 0.
///
/// The free of a block reads these *before* it holds its list's lock: the
/// links may be rewritten meanwhile by another thread that holds the lock
/// and unlinks or links a neighbour (`set_prev`/`set_next`), so reading
/// them here would be a data race. The bytes read here are written once,
/// by [`write`] before the block is published, and cleared by
/// [`clear_magic`] only by the thread that frees it.
///
/// # Safety
/// `user` must be a recorded block (see [`is_recorded`]).
#[inline]
pub(crate) unsafe fn read_fixed(user: *mut u8) -> Header {
    debug_assert!(user as usize % PAGE >= 8, "not a recorded pointer");
    /// The header after its links, field for field.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Fixed {
        birth_off: u64,
        size_book: u64,
        site: u32,
        weight: f32,
        magic: u64,
    }
    const LINKS: usize = std::mem::offset_of!(Header, birth_off);
    const _: () = assert!(LINKS + std::mem::size_of::<Fixed>() == HEADER_SIZE);
    const _: () =
        assert!(std::mem::offset_of!(Header, magic) - LINKS == std::mem::offset_of!(Fixed, magic));
    // SAFETY: a recorded block has HEADER_SIZE bytes of ours below `user`;
    // `user - HEADER_SIZE + LINKS .. user` is the part after the links.
    let f = unsafe { std::ptr::read_unaligned(user.sub(HEADER_SIZE - LINKS) as *const Fixed) };
    Header {
        prev: 0,
        next: 0,
        birth_off: f.birth_off,
        size_book: f.size_book,
        site: f.site,
        weight: f.weight,
        magic: f.magic,
    }
}

/// The whole header, links included: only under its list's lock.
///
/// # Safety
/// `user` must be a recorded block (see [`is_recorded`]) and the caller must
/// hold its list's lock.
#[inline]
pub(crate) unsafe fn read(user: *mut u8) -> Header {
    // SAFETY: a recorded block has HEADER_SIZE bytes of ours below `user`.
    unsafe { std::ptr::read_unaligned(user.sub(HEADER_SIZE) as *const Header) }
}

/// # Safety
/// `user - HEADER_SIZE .. user` must be memory of a block we are recording.
#[inline]
pub(crate) unsafe fn write(user: *mut u8, h: &Header) {
    // SAFETY: guaranteed by the caller.
    unsafe { std::ptr::write_unaligned(user.sub(HEADER_SIZE) as *mut Header, *h) }
    #[cfg(miri)]
    miri_table::insert(user as usize);
}

/// Clears the magic so the block is no longer recognised.
///
/// # Safety
/// As [`write`].
#[inline]
pub(crate) unsafe fn clear_magic(user: *mut u8) {
    #[cfg(miri)]
    miri_table::remove(user as usize);
    // SAFETY: guaranteed by the caller; the magic is the header's last word.
    unsafe { std::ptr::write_unaligned(user.sub(8) as *mut u64, 0) }
}

/// Reads the list links of a recorded block.
///
/// # Safety
/// `user` must be a recorded block and the caller must hold its list's lock.
#[inline]
pub(crate) unsafe fn links(user: usize) -> (usize, usize) {
    const _: () = assert!(std::mem::offset_of!(Header, next) == 8);
    // Only the two words (the safe unlink reads a neighbour's links on every
    // recorded free): `prev` and `next` are the header's first fields.
    // SAFETY: guaranteed by the caller.
    let [prev, next] =
        unsafe { std::ptr::read_unaligned((user - HEADER_SIZE) as *const [usize; 2]) };
    (prev, next)
}

/// # Safety
/// As [`links`].
#[inline]
pub(crate) unsafe fn set_prev(user: usize, prev: usize) {
    // SAFETY: guaranteed by the caller; `prev` is the header's first field.
    unsafe { std::ptr::write_unaligned((user - HEADER_SIZE) as *mut usize, prev) }
}

/// # Safety
/// As [`links`].
#[inline]
pub(crate) unsafe fn set_next(user: usize, next: usize) {
    // SAFETY: guaranteed by the caller; `next` is the header's second field.
    unsafe { std::ptr::write_unaligned((user - HEADER_SIZE + 8) as *mut usize, next) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_keep_alignment_and_avoid_page_starts() {
        for align in [1usize, 2, 4, 8, 16, 32, 64, 256, 2048] {
            for base in (0..3 * PAGE).step_by(align) {
                let off = choose_off(base, align);
                let user = base + off;
                assert_eq!(user % align, 0, "align {align} base {base}");
                assert!(user % PAGE >= 8, "align {align} base {base}");
                if align <= 8 {
                    assert_eq!(user % 16, 8, "align {align} base {base}");
                }
                assert!(off >= HEADER_SIZE);
                assert!(off <= pad(align), "fits in the padding");
            }
        }
    }

    #[test]
    fn big_alignments_are_not_recorded() {
        assert!(inner_layout(Layout::from_size_align(64, 4096).unwrap()).is_none());
        assert!(inner_layout(Layout::from_size_align(64, 2048).unwrap()).is_some());
    }
}
