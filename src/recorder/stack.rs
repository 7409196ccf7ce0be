//! Raw stack capture into a fixed array (no heap use), and the stack hash.
//!
//! Runs on the recorded path only, under the guard. Addresses are return
//! addresses; nothing is symbolized here (see `symbolize`).

use std::mem::MaybeUninit;

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
    /// DWARF unwinding through the `backtrace` crate: always correct, a few
    /// microseconds per stack. The default.
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
    /// Without frame pointers the walk returns a short or empty stack (the
    /// walk skips the recorder's own frame record, so in a build without them
    /// that skip can drop a frame of the caller), never a crash: every frame
    /// pointer must lie within the current thread's stack
    /// (above the current stack pointer), be 8-aligned and strictly increase,
    /// and the walk stops at the depth cap. On targets other than
    /// x86_64/aarch64 Linux, or when the thread is not running on its own
    /// stack (a signal stack, a coroutine), the `Backtrace` unwinder is used
    /// instead.
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

/// Captures the current stack into `stack` (which must be empty). Must run
/// under the guard (the unwinder may allocate the first time it reads unwind
/// tables). Only the recorder calls it (the frame-pointer walk relies on
/// that to skip its caller's frame).
#[inline(never)]
pub(crate) fn capture(unwinder: Unwinder, stack: &mut Stack) {
    match unwinder {
        Unwinder::Backtrace => backtrace_walk(stack),
        Unwinder::FramePointers => {
            if !fp::walk(stack) {
                backtrace_walk(stack);
            }
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
    fn thread_stack() -> Option<(usize, usize)> {
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
        // SAFETY: `attr` is initialised by a successful `pthread_getattr_np`
        // before it is read and destroyed exactly once. glibc reads
        // /proc/self/maps for the main thread with libc's own `malloc`, which
        // never reaches the Rust global allocator, so this cannot recurse.
        let bounds = unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                None
            } else {
                let mut addr: *mut libc::c_void = std::ptr::null_mut();
                let mut size: libc::size_t = 0;
                let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
                libc::pthread_attr_destroy(&mut attr);
                let lo = addr as usize;
                (rc == 0 && size > 0).then(|| (lo, lo.saturating_add(size)))
            }
        };
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

    #[test]
    fn frame_pointer_walk_is_bounded() {
        let mut s = Stack::new();
        capture(Unwinder::FramePointers, &mut s);
        assert!(s.addrs().len() <= MAX_DEPTH);
        assert!(s.addrs().iter().all(|&a| a != 0));
    }
}
