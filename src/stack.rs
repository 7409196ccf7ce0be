//! Raw stack capture into a fixed array (no heap use), and the stack hash.
//!
//! Runs on the recorded path only, under the guard. Addresses are return
//! addresses; nothing is symbolized here (see `symbolize`).

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
}

/// A captured stack, innermost frame first.
pub(crate) struct Stack {
    addrs: [usize; MAX_DEPTH],
    len: usize,
}

impl Stack {
    pub(crate) fn addrs(&self) -> &[usize] {
        &self.addrs[..self.len]
    }

    /// FxHash-style mix of the addresses; only used to find the site, which
    /// then compares the whole stack on a cache miss.
    pub(crate) fn hash(&self) -> u64 {
        let mut h: u64 = self.len as u64;
        for &a in self.addrs() {
            h = (h.rotate_left(5) ^ a as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        // 0 marks an empty cache slot.
        h | 1
    }
}

/// Captures the current stack. Must run under the guard (the unwinder may
/// allocate the first time it reads unwind tables).
#[inline(never)]
pub(crate) fn capture(unwinder: Unwinder) -> Stack {
    let mut stack = Stack {
        addrs: [0; MAX_DEPTH],
        len: 0,
    };
    match unwinder {
        Unwinder::Backtrace => {
            // SAFETY: `trace_unsynchronized` is unsafe only because it skips
            // the crate's global lock; libgcc's unwinder is thread-safe on the
            // platforms we support, and the closure neither panics nor
            // allocates (it writes into a fixed array).
            unsafe {
                backtrace::trace_unsynchronized(|frame| {
                    let ip = frame.ip() as usize;
                    if ip != 0 && stack.len < MAX_DEPTH {
                        stack.addrs[stack.len] = ip;
                        stack.len += 1;
                    }
                    stack.len < MAX_DEPTH
                });
            }
        }
    }
    stack
}
