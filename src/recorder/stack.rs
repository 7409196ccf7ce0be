//! Raw stack capture into a fixed array (no heap use), and the stack hash.
//!
//! Runs on the recorded path only, under the guard. Addresses are return
//! addresses; nothing is symbolized here (see `symbolize`).

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// The deepest stack we keep. Deeper stacks keep their innermost frames.
pub(crate) const MAX_DEPTH: usize = 64;

/// How the recorded path walks the stack.
///
/// # Examples
///
/// ```no_run
/// use leakscope::{Tracker, Unwinder};
///
/// #[global_allocator]
/// static GLOBAL: Tracker = Tracker::system().unwinder(Unwinder::Backtrace);
/// # fn main() {}
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Unwinder {
    /// DWARF unwinding: always correct, and no build flags needed. The
    /// default.
    ///
    /// Each return address's unwind rule is read once from the program's
    /// unwind tables (`.eh_frame_hdr`, `.eh_frame`) and cached for the whole
    /// process, so a stack costs tens of nanoseconds once its frames have
    /// been seen (on x86-64 Linux). A frame the cached walk cannot follow
    /// (a signal frame, an unusual unwind rule, another platform) sends the
    /// whole stack through the `backtrace` crate (the platform unwinder, a
    /// few microseconds a stack) instead; both give the same frames.
    #[default]
    Backtrace,
    /// A frame-pointer walk: tens of nanoseconds per stack, so exact mode
    /// (`sample_interval(1)`) becomes cheap enough for everyday use.
    ///
    /// It needs frame pointers in the code it walks through. Build with
    ///
    /// ```text
    /// RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release
    /// ```
    ///
    /// (or `rustflags = ["-C", "force-frame-pointers=yes"]` under `[build]` in
    /// `.cargo/config.toml`). The flag matters in *your* crate even if the
    /// standard library was built without it: generic std code such as
    /// `Vec::push` or `format!` is compiled into your crate with your flags.
    /// Precompiled non-generic std functions without a frame record cost a
    /// frame each, not the rest of the stack.
    ///
    /// The first few stacks of the process are walked both ways and
    /// compared. If the walk turns out wrong (the program was built without
    /// frame pointers), the tracker uses the `Backtrace` unwinder from then
    /// on, so stacks stay right, only slower; the first snapshot after that
    /// logs one warning (`log` crate, warn level) saying how to build with
    /// frame pointers, and the text report's header says so too.
    ///
    /// The walk itself never crashes, with or without frame pointers: every
    /// frame pointer must lie within the current thread's stack (above the
    /// current stack pointer), be 8-aligned and strictly increase, and the
    /// walk stops at the depth cap. On targets other than x86_64/aarch64
    /// Linux, or when the thread is not running on its own stack (a signal
    /// stack, a coroutine), the `Backtrace` unwinder is used instead.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// #[global_allocator]
    /// static GLOBAL: leakscope::Tracker = leakscope::Tracker::system()
    ///     .sample_interval(1)
    ///     .unwinder(leakscope::Unwinder::FramePointers);
    /// # fn main() {}
    /// ```
    FramePointers,
}

/// A captured stack, innermost frame first.
///
/// Lives in the recorder's stack frame and is filled in place by [`capture`]
/// (returning 520 bytes by value cost a `memcpy` per recorded event).
pub(crate) struct Stack {
    /// Only `addrs[..len]` is initialised: leaving the rest uninitialised
    /// saves zeroing 512 bytes per recorded event.
    addrs: [MaybeUninit<usize>; MAX_DEPTH],
    len: usize,
    /// Running hash of `addrs[..len]`, updated by `push`.
    hash: u64,
}

impl Stack {
    #[inline(always)]
    pub(crate) fn new() -> Stack {
        Stack {
            // `[MaybeUninit::uninit(); MAX_DEPTH]` was compiled to a 528-byte
            // memset per recorded event; this form leaves the array alone.
            // SAFETY: an array of `MaybeUninit` needs no initialisation.
            addrs: unsafe {
                MaybeUninit::<[MaybeUninit<usize>; MAX_DEPTH]>::uninit().assume_init()
            },
            len: 0,
            hash: 0,
        }
    }

    /// Appends `ip`; returns false once the stack is full.
    #[inline(always)]
    fn push(&mut self, ip: usize) -> bool {
        if self.len < MAX_DEPTH {
            self.addrs[self.len] = MaybeUninit::new(ip);
            self.len += 1;
            self.hash = mix(self.hash, ip);
        }
        self.len < MAX_DEPTH
    }

    /// Empties the stack, for a capture that starts over.
    #[inline]
    fn clear(&mut self) {
        self.len = 0;
        self.hash = 0;
    }

    pub(crate) fn addrs(&self) -> &[usize] {
        // SAFETY: `addrs[..len]` is initialised (type invariant, kept by
        // `push`), and `MaybeUninit<usize>` has the layout of `usize`.
        unsafe { std::slice::from_raw_parts(self.addrs.as_ptr().cast::<usize>(), self.len) }
    }

    /// A hash of the addresses (and the depth); only used to find the site
    /// in the thread's cache, keyed by the full 64-bit hash.
    #[inline(always)]
    pub(crate) fn hash(&self) -> u64 {
        // 0 marks an empty cache slot.
        (self.hash ^ (self.len as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
    }
}

/// FxHash-style mix of one more address into the running stack hash, folded
/// into the walk so the addresses are not read twice.
#[inline(always)]
fn mix(hash: u64, ip: usize) -> u64 {
    (hash.rotate_left(5) ^ ip as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// Frame-pointer captures checked against a `backtrace` walk before the
/// frame-pointer walk is trusted for the rest of the process. A handful is
/// enough: whether frame pointers are there is decided when the program is
/// built, not per stack (see [`verify`]).
const FP_CHECKS: u32 = 8;
/// [`FP_STATE`] once every check passed.
const FP_TRUSTED: u32 = 0;
/// [`FP_STATE`] once a check failed; never left again.
const FP_UNTRUSTED: u32 = u32::MAX;

/// Whether the frame-pointer walk can be trusted in this process:
/// [`FP_TRUSTED`], [`FP_UNTRUSTED`], or the number of checks still to make.
/// Only the recorded path reads it (one relaxed load per frame-pointer
/// capture); a stale value at worst costs one more check.
static FP_STATE: AtomicU32 = AtomicU32::new(FP_CHECKS);

/// True once a check found the frame-pointer walk wrong: every stack is then
/// captured with `backtrace`. Read by the query side, which warns about it
/// (the allocator never logs: logging calls out, allocates and locks).
pub(crate) fn frame_pointers_untrusted() -> bool {
    FP_STATE.load(Relaxed) == FP_UNTRUSTED
}

/// Captures the current stack into `stack` (which must be empty). Must run
/// under the guard (the unwinder may allocate the first time it reads unwind
/// tables). Only the recorder calls it (the frame-pointer walk relies on
/// that to skip its caller's frame).
#[inline(never)]
pub(crate) fn capture(unwinder: Unwinder, stack: &mut Stack) {
    match unwinder {
        Unwinder::Backtrace => dwarf_walk(stack),
        Unwinder::FramePointers => {
            let state = FP_STATE.load(Relaxed);
            if state == FP_UNTRUSTED || !fp::walk(stack) {
                dwarf_walk(stack);
            } else if state != FP_TRUSTED && !verify(stack) {
                // The walk here (in `capture`'s own frame, as `fp::walk`
                // requires) was wrong: start over with DWARF. Using
                // `verify`'s result also keeps it from being a tail call,
                // which would take `capture`'s frame off the stack it checks.
                stack.clear();
                dwarf_walk(stack);
            }
        }
    }
}

/// The `Backtrace` unwinder: the cached DWARF walk (`stack_dwarf.rs`), or,
/// for a stack it cannot follow, the `backtrace` crate from scratch.
#[inline(always)]
fn dwarf_walk(stack: &mut Stack) {
    if !dwarf::walk(stack) {
        stack.clear();
        backtrace_walk(stack);
    }
}

/// Called by the recorder's `fork` prepare handler before it takes a lock:
/// waits until no thread is asking the dynamic loader about a frame, and
/// keeps new ones from asking until [`fork_parent`] or [`forked`] (see
/// `stack_dwarf.rs`).
pub(super) fn fork_prepare() {
    dwarf::fork_prepare();
}

/// Called by the recorder's `fork` parent handler.
pub(super) fn fork_parent() {
    dwarf::fork_parent();
}

/// Called by the recorder's `fork` child handler: from now on the cached
/// DWARF walk asks the platform unwinder about frames it has not cached yet
/// (see `stack_dwarf.rs`).
pub(super) fn forked() {
    dwarf::forked();
}

/// Whether [`forked`] was called in this process.
#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
pub(super) fn is_forked() -> bool {
    dwarf::is_forked()
}

#[path = "stack_dwarf.rs"]
mod dwarf;

/// Checks a frame-pointer stack just taken by [`capture`] against a DWARF
/// walk from the same point, and records the verdict in [`FP_STATE`].
/// Returns false if the frame-pointer stack is wrong.
///
/// The test is the first frame. `fp::walk` starts at the return address
/// stored in the recorder's own frame record, which it reaches through
/// `capture`'s record: both are this crate's code, built with the program's
/// flags, so the address is right exactly when the program was built with
/// frame pointers. In the DWARF walk that address is the frame two below
/// `capture`'s (found by the start address of the enclosing function, which
/// the unwinder reads off the unwind tables, not the symbol table, so this
/// works in stripped binaries too). Without frame pointers, `rbp` holds
/// whatever the compiler kept in it, and the walk starts anywhere but there.
/// Deeper frames are not compared: precompiled standard-library code may lack
/// frame records and cost the walk a frame each, which is no reason to give
/// up on it.
///
/// A check that cannot decide (the DWARF walk did not find `capture`) counts
/// as passed, so a process whose unwind tables are unusable keeps the walk.
#[cold]
#[inline(never)]
fn verify(fp_stack: &Stack) -> bool {
    let capture_start = capture as *const () as usize;
    let mut dwarf = Stack::new();
    let mut capture_at = None;
    // SAFETY: as in `backtrace_walk`; the closure also asks the unwinder for
    // the frame's function start (`_Unwind_FindEnclosingFunction`), which
    // reads the same unwind tables and neither panics nor allocates.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if capture_at.is_none() && frame.symbol_address() as usize == capture_start {
                capture_at = Some(dwarf.len);
            }
            ip == 0 || dwarf.push(ip)
        });
    }
    let expected = capture_at.and_then(|i| dwarf.addrs().get(i + 2).copied());
    match expected {
        Some(ip) if fp_stack.addrs().first() != Some(&ip) => {
            FP_STATE.store(FP_UNTRUSTED, Relaxed);
            false
        }
        _ => {
            // One check fewer to go, unless another thread already decided.
            let _ = FP_STATE.fetch_update(Relaxed, Relaxed, |s| {
                (s != FP_UNTRUSTED && s != FP_TRUSTED).then(|| s - 1)
            });
            true
        }
    }
}

fn backtrace_walk(stack: &mut Stack) {
    // SAFETY: `trace_unsynchronized` is unsafe only because it skips the
    // crate's global lock; libgcc's unwinder is thread-safe on the platforms
    // we support, and the closure neither panics nor allocates (it writes into
    // a fixed array).
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            ip == 0 || stack.push(ip)
        });
    }
}

/// The calling thread's stack `[lo, hi)` from `pthread_getattr_np`; `None`
/// if it cannot be known. Not cached: the frame-pointer walk caches it in
/// the thread state, the registry notes it once per thread.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn current_thread_stack() -> Option<(usize, usize)> {
    // SAFETY: `attr` is initialised by a successful `pthread_getattr_np`
    // before it is read and destroyed exactly once. glibc reads
    // /proc/self/maps for the main thread with libc's own `malloc`, which
    // never reaches the Rust global allocator, so this cannot recurse.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        let lo = addr as usize;
        (rc == 0 && size > 0).then(|| (lo, lo.saturating_add(size)))
    }
}

#[cfg(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    any(target_os = "linux", target_os = "android")
))]
mod fp {
    use super::super::guard::STATE;
    use super::{MAX_DEPTH, Stack, mix};

    /// The frame pointer and stack pointer of the calling function.
    ///
    /// Both targets use the same frame record: `[fp]` holds the caller's
    /// frame pointer and `[fp + 8]` the return address into the caller.
    #[inline(always)]
    fn registers() -> (usize, usize) {
        let fp: usize;
        let sp: usize;
        // SAFETY: copies two registers; no memory access, no side effect.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::asm!("mov {fp}, rbp", "mov {sp}, rsp", fp = out(reg) fp, sp = out(reg) sp,
                options(nomem, nostack, preserves_flags));
        }
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        unsafe {
            std::arch::asm!("mov {fp}, x29", "mov {sp}, sp", fp = out(reg) fp, sp = out(reg) sp,
                options(nomem, nostack, preserves_flags));
        }
        (fp, sp)
    }

    /// This thread's stack `[lo, hi)`, looked up once and cached in the
    /// thread state; `None` if it cannot be known.
    #[inline]
    pub(super) fn thread_stack() -> Option<(usize, usize)> {
        let (lo, hi) = STATE
            .try_with(|s| (s.stack_lo.get(), s.stack_hi.get()))
            .ok()?;
        match hi {
            0 => lookup(),
            1 => None,
            _ => Some((lo, hi)),
        }
    }

    #[cold]
    #[inline(never)]
    fn lookup() -> Option<(usize, usize)> {
        let bounds = super::current_thread_stack();
        let (lo, hi) = bounds.unwrap_or((0, 1));
        let _ = STATE.try_with(|s| {
            s.stack_lo.set(lo);
            s.stack_hi.set(hi);
        });
        bounds
    }

    /// Walks the frame-pointer chain into `stack`, from the caller of the
    /// recorder on (see below). Returns false (having pushed nothing) when
    /// the thread's stack bounds are unknown or the current stack pointer
    /// lies outside them.
    #[inline(always)]
    pub(super) fn walk(stack: &mut Stack) -> bool {
        let (fp, sp) = registers();
        let Some((lo, hi)) = thread_stack() else {
            return false;
        };
        if sp < lo || sp >= hi {
            return false;
        }
        // Only `[sp, hi)` is read: the in-use part of this thread's stack,
        // which is mapped. A frame pointer outside it, misaligned, or not
        // above the previous one ends the walk, so a garbage `rbp` (code
        // built without frame pointers uses it as a general register) gives
        // a short stack instead of a wild read or an endless loop.
        let top = hi.saturating_sub(16);
        let ok = |fp: usize, floor: usize| fp >= floor && fp <= top && fp & 7 == 0;
        if !ok(fp, sp) {
            return true;
        }
        // Our own record links to our caller, which is always the recorder
        // (`capture` is never inlined, and only the recorder calls it): skip
        // it. Symbolization trims tracker frames anyway; this saves walking
        // and storing one.
        // SAFETY: `fp .. fp + 16` lies within `[sp, hi)` (checked just
        // above), which is this thread's live stack. Volatile: the words are
        // only used as numbers, and the compiler must not reason about memory
        // that belongs to our callers' frames.
        let (mut fp, mut floor) = (
            unsafe { std::ptr::read_volatile(fp as *const usize) },
            fp + 16,
        );
        // Length and hash live in registers during the walk (through
        // `stack` they were a load and a store per frame).
        let (mut len, mut hash) = (0usize, 0u64);
        while len < MAX_DEPTH && ok(fp, floor) {
            // SAFETY: as above, for this `fp` (checked by the loop condition).
            let (next, ret) = unsafe {
                (
                    std::ptr::read_volatile(fp as *const usize),
                    std::ptr::read_volatile((fp + 8) as *const usize),
                )
            };
            if ret == 0 {
                break;
            }
            stack.addrs[len] = std::mem::MaybeUninit::new(ret);
            len += 1;
            hash = mix(hash, ret);
            floor = fp + 16;
            fp = next;
        }
        stack.len = len;
        stack.hash = hash;
        true
    }
}

#[cfg(not(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    any(target_os = "linux", target_os = "android")
)))]
mod fp {
    /// No frame-pointer walk on this target: the caller falls back to
    /// `backtrace`.
    pub(super) fn walk(_stack: &mut super::Stack) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached DWARF walk and libgcc's (through `backtrace`), from one
    /// frame: the cached walk starts at the return address into the caller
    /// of `dwarf::walk`; `backtrace` starts inside itself and reaches the
    /// same frames further out. Everything from the caller's caller on must
    /// be the same addresses. `None` if the cached walk declined.
    #[inline(never)]
    fn both_walks() -> Option<(Vec<usize>, Vec<usize>)> {
        let mut d = Stack::new();
        let ok = dwarf::walk(&mut d);
        let mut b = Stack::new();
        backtrace_walk(&mut b);
        ok.then(|| (d.addrs().to_vec(), b.addrs().to_vec()))
    }

    #[inline(never)]
    fn nested(depth: u32) -> Option<(Vec<usize>, Vec<usize>)> {
        let r = if depth == 0 {
            both_walks()
        } else {
            nested(std::hint::black_box(depth - 1))
        };
        std::hint::black_box(r)
    }

    fn check_same_frames(depth: u32) {
        // Twice: the first walk fills the rule cache, the second reads it.
        for _ in 0..2 {
            let (d, b) = nested(depth).expect("the cached DWARF walk declined");
            assert!(d.len() > depth as usize, "{d:x?}");
            let outer = &d[1..];
            let at = b
                .iter()
                .position(|&a| a == outer[0])
                .unwrap_or_else(|| panic!("{:x} not in {b:x?}", outer[0]));
            assert_eq!(&b[at..], outer, "dwarf {d:x?}\nbacktrace {b:x?}");
        }
    }

    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn cached_dwarf_walk_gives_backtraces_frames() {
        check_same_frames(0);
        check_same_frames(20);
        // To the depth cap: both keep the innermost frames.
        let (d, _) = nested(100).unwrap();
        assert_eq!(d.len(), MAX_DEPTH);
        // On a spawned thread (its stack ends in `clone3`, not `_start`).
        std::thread::spawn(|| check_same_frames(5)).join().unwrap();
    }

    #[test]
    fn default_capture_is_bounded() {
        let mut s = Stack::new();
        capture(Unwinder::Backtrace, &mut s);
        assert!(s.addrs().len() <= MAX_DEPTH && s.addrs().len() > 2);
        assert!(s.addrs().iter().all(|&a| a != 0));
    }

    #[test]
    fn frame_pointer_walk_is_bounded() {
        let mut s = Stack::new();
        capture(Unwinder::FramePointers, &mut s);
        assert!(s.addrs().len() <= MAX_DEPTH);
        assert!(s.addrs().iter().all(|&a| a != 0));
    }
}
