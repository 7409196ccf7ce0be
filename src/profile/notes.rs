//! What a report must say about the whole process, not one site: whether
//! `Unwinder::FramePointers` had to fall back to `backtrace`, and whether the
//! binary has symbols at all. Query time only.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::recorder::{self, Guard};

/// The warning logged once, and the report header's line, when the
/// frame-pointer walk could not be trusted.
pub(crate) const NO_FRAME_POINTERS: &str = "built without frame pointers: \
    Unwinder::FramePointers fell back to the backtrace unwinder (stacks are right, but each \
    recorded allocation costs microseconds instead of nanoseconds); build with \
    RUSTFLAGS=\"-C force-frame-pointers=yes\", or rustflags = [\"-C\", \"force-frame-pointers=yes\"] \
    under [build] in .cargo/config.toml";

/// The report header's line for a binary without symbols.
pub(crate) const NO_SYMBOLS: &str = "this binary has no symbols, so stacks show addresses: \
    build with [profile.release] debug = \"line-tables-only\" and keep the symbols \
    (strip = false, or strip = \"debuginfo\" for names without file:line), or write a pprof \
    profile and symbolize it later with the unstripped binary: \
    go tool pprof -top <unstripped binary> heap.pb.gz";

/// True once the frame-pointer walk was found wrong in this process (see
/// `Unwinder::FramePointers`). The first call that sees it logs the warning:
/// here, at query time, because the allocator that sets the flag must not
/// call out. Once per process, whichever report or snapshot comes first.
pub(crate) fn frame_pointers_missing() -> bool {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let missing = recorder::frame_pointers_untrusted();
    if missing && !WARNED.swap(true, Ordering::Relaxed) {
        // Under the guard: the logger's allocations are not the program's.
        Guard::run(|| log::warn!("leakscope: {NO_FRAME_POINTERS}"));
    }
    missing
}

/// Whether the binary holding this crate (the program, for a global
/// allocator) has symbols: a function of ours resolves to a name. False for
/// a stripped binary whose debug information is nowhere to be found, whose
/// frames then all show as addresses. Looked up once per process.
///
/// Not a `OnceLock`: a thread that forks while another one is inside its
/// initialiser (loading debug info takes tens of milliseconds, and the
/// symbol lock is handed to the forking thread between two holds) leaves
/// the child a `OnceLock` that stays "running" for ever, and the child's
/// first report waited on it for ever. Two threads that ask at once both
/// look it up, which costs time only.
pub(crate) fn binary_has_symbols() -> bool {
    const UNKNOWN: u8 = 0;
    const NO: u8 = 1;
    const YES: u8 = 2;
    static HAS: AtomicU8 = AtomicU8::new(UNKNOWN);
    match HAS.load(Ordering::Relaxed) {
        NO => return false,
        YES => return true,
        _ => {}
    }
    let named = Guard::run(|| {
        let mut named = false;
        // `resolve` takes a return address and looks up the byte before
        // it: one past our first byte lands inside this function.
        let probe = (binary_has_symbols as *const () as usize + 1) as *mut std::ffi::c_void;
        super::symbolize::resolve_symbols(probe as usize, &mut |sym| named |= sym.name().is_some());
        super::symbolize::release_symbolizer();
        named
    });
    HAS.store(if named { YES } else { NO }, Ordering::Relaxed);
    named
}
