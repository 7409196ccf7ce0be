//! Per-thread state read on every allocation: the reentrancy guard and the
//! sampler's byte countdown; and, read only on the recorded path, the
//! thread's current label set id. (The thread's book pointer is `book`'s own
//! thread-local, so this module depends on nothing else in the crate.)
//!
//! Everything lives in one `const`-initialised thread-local made only of
//! `Cell`s of plain data. That matters twice over:
//! - no destructor means no lazy registration and no "already destroyed"
//!   state, so the allocator can use it at any moment of a thread's life,
//!   including while other thread-locals are being torn down;
//! - the fast path compiles to a few loads and stores at a fixed offset from
//!   the thread pointer (a `LocalKey::with` whose slow path is not `#[cold]`
//!   was measured at 25-30 instructions per call).
//!
//! **Every tracker path that can allocate must run inside [`Guard`].** While
//! the guard is held, allocations made on this thread (by the site table growing, by
//! a lock parking, by symbolization, by building a snapshot) go straight to
//! the inner allocator and are never recorded, so the tracker never recurses
//! into itself and never shows its own memory as a site.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize};

pub(super) struct ThreadState {
    /// True while this thread runs tracker code; see the module docs.
    pub(super) busy: Cell<bool>,
    /// The part other threads may touch (through `registry`).
    pub(super) remote: Remote,
    /// Whether this thread is in the `registry`: 0 not yet, 1 registered, 2
    /// removed at thread exit (never registered again).
    pub(super) registered: Cell<u8>,
    /// xorshift state for the exponential draws; 0 means "not seeded yet".
    pub(super) rng: Cell<u64>,
    /// This thread's stack as `[stack_lo, stack_hi)`, looked up once by the
    /// frame-pointer and cached DWARF unwinders (`stack::fp::thread_stack`): `stack_hi == 0` means
    /// "not looked up yet", `stack_hi == 1` means "the lookup failed". Plain
    /// integers, so the thread-local stays destructor-free.
    pub(super) stack_lo: Cell<usize>,
    pub(super) stack_hi: Cell<usize>,
    /// The interned id of the label set allocations on this thread carry
    /// (0 = no labels). Written by `with_labels` and `Labeled::poll` (a plain
    /// store), read only when an allocation is recorded: the common path
    /// never touches it. The recorder gives ids no meaning; the query side
    /// interns them.
    pub(super) labels: Cell<u32>,
}

/// The part of a thread's state that other threads may touch: atomics only,
/// so it is `Sync` by construction, and `registry` hands out references to
/// this part alone (the `Cell`s around it are the owner's).
pub(super) struct Remote {
    /// Bytes left until the next sample; an allocation that takes it to zero
    /// or below is sampled. Starts at 0 so a thread's first allocation takes
    /// the slow path and seeds the sampler. Atomic only because
    /// `set_sample_interval` on another thread may zero it (see `registry`);
    /// the owner updates it with the equivalent of a relaxed load and store
    /// (on x86-64 one non-locked `sub` on memory, see `sampling::tick`).
    pub(super) countdown: AtomicI64,
    /// The value of `sampling::GENERATION` the countdown was drawn under,
    /// checked on the slow path only. Atomic for the same reason.
    pub(super) generation: AtomicU64,
    /// Written by the owner when it registers (`registry::register`), before
    /// the registry lock publishes its address, and read by others only
    /// under that lock, for the retainer scan: the kernel thread id, the
    /// thread pointer (where its static TLS block ends on x86-64, begins on
    /// aarch64) and the stack bounds from `pthread_getattr_np` (0, 0 if the
    /// lookup failed). Atomics (relaxed: the lock orders them) so that this
    /// part stays `Sync` by construction.
    pub(super) tid: AtomicU32,
    pub(super) tp: AtomicUsize,
    pub(super) stack_lo_reg: AtomicUsize,
    pub(super) stack_hi_reg: AtomicUsize,
}

thread_local! {
    pub(super) static STATE: ThreadState = const {
        ThreadState {
            busy: Cell::new(false),
            remote: Remote {
                countdown: AtomicI64::new(0),
                generation: AtomicU64::new(0),
                tid: AtomicU32::new(0),
                tp: AtomicUsize::new(0),
                stack_lo_reg: AtomicUsize::new(0),
                stack_hi_reg: AtomicUsize::new(0),
            },
            registered: Cell::new(0),
            rng: Cell::new(0),
            stack_lo: Cell::new(0),
            stack_hi: Cell::new(0),
            labels: Cell::new(0),
        }
    };
}

/// This thread's label set id (0 if none, or during thread teardown).
#[inline(always)]
pub(super) fn labels() -> u32 {
    STATE.try_with(|s| s.labels.get()).unwrap_or(0)
}

/// Makes `id` this thread's label set id and returns the previous one. A
/// plain thread-local store: no lock, no allocation. During thread teardown
/// (the state is gone) it does nothing and returns 0.
#[inline]
pub(super) fn swap_labels(id: u32) -> u32 {
    STATE.try_with(|s| s.labels.replace(id)).unwrap_or(0)
}

/// Holds the reentrancy guard for the current thread while alive.
///
/// `Guard::enter()` returns `None` when the guard is already held (a
/// recursive entry), so nested tracker code never clears the outer guard.
pub(crate) struct Guard {
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Proof that the calling thread holds the reentrancy guard, taken by every
/// function that must run under it (it allocates, or takes a lock that is
/// held while allocating): only [`Guard`] makes one, and it can neither leave
/// the thread nor outlive the guard. So "must run under the guard" is checked
/// by the compiler, not by a comment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Held<'g> {
    _guard: std::marker::PhantomData<&'g Guard>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Held<'_> {
    fn new() -> Self {
        debug_assert!(STATE.try_with(|s| s.busy.get()).unwrap_or(true));
        Held {
            _guard: std::marker::PhantomData,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Guard {
    /// The proof that this guard is held, for as long as it is borrowed.
    #[inline(always)]
    pub(crate) fn held(&self) -> Held<'_> {
        Held::new()
    }

    /// Runs `f` with the guard held and its proof: taken here, or, if this
    /// thread already holds it (nested tracker code), held by the outer
    /// guard, which outlives this call.
    pub(crate) fn with<R>(f: impl for<'g> FnOnce(Held<'g>) -> R) -> R {
        let _g = Guard::enter();
        f(Held::new())
    }

    /// Takes the guard, or `None` if this thread already holds it.
    #[inline]
    pub(crate) fn enter() -> Option<Guard> {
        STATE
            .try_with(|s| {
                if s.busy.get() {
                    None
                } else {
                    s.busy.set(true);
                    Some(Guard {
                        _not_send: std::marker::PhantomData,
                    })
                }
            })
            .ok()
            .flatten()
    }

    /// Runs `f` with the guard held; if this thread already holds it, runs
    /// `f` anyway (it is then nested inside tracker code, which is fine for
    /// query paths: everything they allocate is unrecorded either way).
    pub(crate) fn run<R>(f: impl FnOnce() -> R) -> R {
        let _g = Guard::enter();
        f()
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        let _ = STATE.try_with(|s| s.busy.set(false));
    }
}
