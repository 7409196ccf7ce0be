//! Address -> function, file, line: at query time only, each distinct address
//! once per process (cached), never on the allocation path.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use once_cell::race::OnceBox;

use super::frame::{Frame, is_tracker};
use super::lock::BlockingLock;
use super::names::{is_short, name_frames, refine_symbol};
use crate::recorder::{Guard, OTHER_FRAME};

/// Whether a frame is the tracker's own code, the unwinder's, or one of the
/// allocation shims, all trimmed off the top of every stack.
fn is_tracker_or_shim(f: &Frame) -> bool {
    let name: &str = &f.function;
    let bare = name.trim_start_matches('<');
    is_tracker(f)
        || bare.starts_with("alloc::alloc::")
        || bare.starts_with("std::alloc::")
        || is_alloc_shim(name)
        || name.starts_with("__rdl_")
        || name.starts_with("__rg_")
        || name.starts_with("_Unwind_")
        || name.contains("as core::alloc::global::GlobalAlloc>::")
}

/// `__rust_alloc` and friends (newer toolchains: `__rustc::__rust_alloc`):
/// the functions `#[global_allocator]` generates, which call the tracker.
/// Not every `__rust_*` symbol: `__rust_try` is the panic machinery, and
/// `__rust_begin_short_backtrace` marks the bottom of a thread's stack.
fn is_alloc_shim(name: &str) -> bool {
    let bare = name.strip_prefix("__rustc::").unwrap_or(name);
    matches!(
        bare,
        "__rust_alloc" | "__rust_alloc_zeroed" | "__rust_realloc" | "__rust_dealloc"
    )
}

/// The symbol cache and the right to call the symbolizer, under one lock.
///
/// Why one lock for both, and one the fork handlers take: a forked child must be able to
/// symbolize. A lock that a parent thread held at the fork would stay held in
/// the child forever, so `fork::prepare` (below) takes this lock and the
/// handlers release it on both sides; a concurrent map's shard locks could
/// not be taken from outside. The same lock serialises our calls into the
/// `backtrace` symbolizer, so in a forked child (only) we can call
/// `resolve_unsynchronized`: `backtrace::resolve` takes the crate's own
/// global mutex, which a thread *outside* leakscope could have held at the
/// fork, and which nothing would ever release in the child.
///
/// Lock order: taken before any recorder lock (its fork handler is
/// registered after the recorder's, so its `prepare` runs first), and no
/// recorder lock is ever held while waiting for it.
///
/// A blocking lock (`profile/lock.rs`), not a spin lock: it is held for whole
/// symbolizations, so waiters sleep; taken once per address, it is handed to
/// a waiter between two (a snapshot for `/metrics` does not wait behind a
/// five-second symbol request, nor the other way round).
struct Symbols {
    lock: BlockingLock,
    cache: UnsafeCell<BTreeMap<usize, Arc<[Frame]>>>,
}

// SAFETY: `cache` is only touched by the holder of `lock`.
unsafe impl Sync for Symbols {}

static SYMBOLS: Symbols = Symbols {
    lock: BlockingLock::new(),
    cache: UnsafeCell::new(BTreeMap::new()),
};

/// Set in a forked child: symbolize without `backtrace`'s global lock.
static FORKED: AtomicBool = AtomicBool::new(false);

/// Runs `f` on the cache with the lock held (and the fork handlers in place).
fn with_cache<R>(f: impl FnOnce(&mut BTreeMap<usize, Arc<[Frame]>>) -> R) -> R {
    fork::install();
    let _g = SYMBOLS.lock.lock();
    // SAFETY: we hold the lock, so no one else touches the cache.
    f(unsafe { &mut *SYMBOLS.cache.get() })
}

/// Registers the symbol cache's fork handlers (once per process): at its
/// first use, and before `main` (`startup`).
#[cfg(unix)]
pub(super) fn install_fork_handlers() {
    fork::install();
}

#[cfg(unix)]
mod fork {
    use std::sync::atomic::Ordering::Relaxed;

    use super::{FORKED, SYMBOLS};

    /// Not a bare `Once`: see `atfork` (a child must never wait on it).
    static ONCE: super::super::atfork::AtforkOnce = super::super::atfork::AtforkOnce::new();

    pub(super) fn install() {
        ONCE.install(prepare, parent, child);
    }

    extern "C" fn prepare() {
        SYMBOLS.lock.acquire();
    }

    extern "C" fn parent() {
        SYMBOLS.lock.release();
    }

    extern "C" fn child() {
        ONCE.complete_in_child();
        FORKED.store(true, Relaxed);
        SYMBOLS.lock.reset();
    }
}

#[cfg(not(unix))]
mod fork {
    /// No `fork` on this platform.
    pub(super) fn install() {}
}

/// Set when `backtrace`'s symbolizer may hold parsed debug info (see
/// [`release_symbolizer`]).
static LOADED: AtomicBool = AtomicBool::new(false);

/// Calls `f` for each symbol of `addr`. The caller holds the `SYMBOLS` lock.
fn resolve(addr: usize, f: &mut dyn FnMut(&backtrace::Symbol)) {
    LOADED.store(true, Relaxed);
    if FORKED.load(Relaxed) {
        // SAFETY: the unsynchronized resolver must not run concurrently
        // with another use of `backtrace`'s symbolizer. Ours are serialised
        // by the `SYMBOLS` lock, which the caller holds, and which no parent
        // thread held at the fork (the fork handlers took it), so no call of
        // ours was cut in half either. The residual case, another library
        // using `backtrace` at the fork or concurrently in the child, is in
        // RELIABILITY.md.
        unsafe { backtrace::resolve_unsynchronized(addr as *mut std::ffi::c_void, f) }
    } else {
        backtrace::resolve(addr as *mut std::ffi::c_void, f);
    }
}

/// The frames of one address, innermost (most inlined) first. Cached.
fn frames_of(addr: usize) -> Arc<[Frame]> {
    if addr == OTHER_FRAME {
        // The overflow site of a full site table (`Tracker::max_sites`).
        return Arc::new([Frame {
            function: "[other]".into(),
            file: None,
            line: None,
            address: 0,
            inlined: false,
            key: 0,
        }
        .with_key()]);
    }
    with_cache(|cache| {
        if let Some(f) = cache.get(&addr) {
            return f.clone();
        }
        let frames = resolve_frames(addr);
        cache.insert(addr, frames.clone());
        frames
    })
}

/// Symbolizes one address. The caller holds the `SYMBOLS` lock.
fn resolve_frames(addr: usize) -> Arc<[Frame]> {
    let mut out: Vec<Frame> = Vec::new();
    resolve(addr, &mut |sym| {
        let function = match sym.name() {
            // `{:#}` drops the trailing `::h0123…` hash.
            Some(n) => format!("{n:#}"),
            None => format!("{addr:#x}"),
        };
        out.push(Frame {
            function: function.into(),
            file: sym.filename().map(|p| p.display().to_string().into()),
            line: sym.lineno(),
            address: addr,
            inlined: true,
            key: 0,
        });
    });
    if out.is_empty() {
        out.push(Frame {
            function: format!("{addr:#x}").into(),
            file: None,
            line: None,
            address: addr,
            inlined: false,
            key: 0,
        });
    }
    if let Some(last) = out.last_mut() {
        last.inlined = false;
        // The real (not inlined) frame: where the debug info gave only the
        // last path segment, the symbol table has the full name.
        if is_short(&last.function) {
            if let Some(full) = full_name(addr.saturating_sub(1)) {
                last.function = refine_symbol(&full, &last.function).into();
            }
        }
    }
    out.into_iter().map(Frame::with_key).collect()
}

/// The symbol table's name for `addr` (see `symtab`); none off Linux.
fn full_name(addr: usize) -> Option<String> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return super::symtab::full_name(addr);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return None;
}

/// The linker's (mangled) name of a frame that the symbol table has: the
/// real (not inlined) frame at `addr`, a return address, whose name the
/// symbol table's gives (`function` starts with it demangled). For pprof's
/// "system name"; from the table read for full names, so an export never
/// loads the debug info for it. `None` off Linux.
#[cfg(feature = "pprof")]
pub(crate) fn linker_name(addr: usize, function: &str) -> Option<String> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return Guard::run(|| {
        with_cache(|_| {
            let raw = super::symtab::linker_name(addr.saturating_sub(1))?;
            let demangled = format!("{:#}", rustc_demangle::demangle(&raw));
            (function.starts_with(&demangled) && raw != function).then_some(raw)
        })
    });
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return None;
}

/// The symbol table's one path for functions named `last` (see `symtab`).
fn symbol_path(last: &str, addr: usize) -> Option<String> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    return super::symtab::path_of(last, addr.saturating_sub(1));
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    return None;
}

/// A site's raw stack and its frames, symbolized on first use and shared by
/// every copy (a `Site`, its `SiteDelta`s, the monitor's `Suspect`s), so each
/// stack is symbolized at most once however many reports show it.
#[derive(Clone, Debug)]
pub(crate) struct SiteStack {
    addrs: Arc<[usize]>,
    /// Not a blocking `OnceCell`: a fork while another thread symbolizes
    /// this stack would leave the child a cell that stays "being
    /// initialised" for ever (the symbol lock is released between
    /// addresses, so the fork handlers do not wait for the whole stack).
    /// Two threads that symbolize it at once both do, and one result is
    /// kept: time, never a wait.
    frames: Arc<OnceBox<Arc<[Frame]>>>,
    /// The site's label set (`labels::LabelSet`, spelled out here so this
    /// file does not import `labels`, which imports it): part of what a site
    /// is, so it travels with the stack into `Site`, `SiteDelta`, `Suspect`.
    labels: Arc<[(String, String)]>,
}

impl SiteStack {
    pub(crate) fn new(addrs: Arc<[usize]>) -> SiteStack {
        SiteStack {
            addrs,
            frames: Arc::new(OnceBox::new()),
            labels: Arc::from(Vec::new()),
        }
    }

    /// The same stack with the label set `labels`.
    pub(crate) fn with_labels(self, labels: Arc<[(String, String)]>) -> SiteStack {
        SiteStack { labels, ..self }
    }

    /// The site's labels, sorted by key.
    pub(crate) fn labels(&self) -> &[(String, String)] {
        &self.labels
    }

    /// The same, shared (for export rows, which own what they carry).
    pub(crate) fn labels_shared(&self) -> Arc<[(String, String)]> {
        self.labels.clone()
    }

    /// The symbolized, trimmed frames (see [`symbolize`]).
    pub(crate) fn frames(&self) -> &[Frame] {
        // The box is the tracker's, not the program's: under the guard.
        self.frames
            .get_or_init(|| Guard::run(|| Box::new(symbolize(&self.addrs))))
    }

    /// The frames, as [`frames`](Self::frames), but without keeping them
    /// in this stack when it did not have them yet: for exports, which go
    /// through every site once and would otherwise hold every site's frames
    /// at the end (symbolizing from the per-address cache is cheap).
    pub(crate) fn frames_once(&self) -> Arc<[Frame]> {
        match self.frames.get() {
            Some(frames) => frames.clone(),
            None => symbolize(&self.addrs),
        }
    }

    /// Bytes of the frames this stack holds (0 until someone asked).
    pub(crate) fn cached_bytes(&self) -> usize {
        self.frames
            .get()
            .map_or(0, |f| f.len() * std::mem::size_of::<Frame>() + 16)
    }

    /// The owner frame (see [`owner`](super::frame::owner)).
    pub(crate) fn owner(&self) -> Option<&Frame> {
        super::frame::owner(self.frames())
    }

    /// The raw return addresses, innermost first, untrimmed.
    pub(crate) fn addresses(&self) -> &[usize] {
        &self.addrs
    }
}

/// Symbolizes a raw stack (innermost first) and trims it: the tracker's own
/// frames and the allocation shims off the top, the runtime start-up frames
/// below `main` or a thread's entry closure off the bottom.
pub(crate) fn symbolize(addrs: &[usize]) -> Arc<[Frame]> {
    Guard::run(|| {
        let mut frames: Vec<Frame> = Vec::with_capacity(addrs.len() * 2);
        for &a in addrs {
            frames.extend(frames_of(a).iter().cloned());
        }
        // Named before trimming: a closure's type can be spelled out only
        // by a frame that trimming drops (the thread entry below a spawned
        // closure), and trimming then sees the names `debug = "limited"`
        // would give.
        if frames.iter().any(|f| is_short(&f.function)) {
            with_cache(|_| name_frames(&mut frames, &mut symbol_path));
        }
        trim(&mut frames);
        frames.into()
    })
}

fn trim(frames: &mut Vec<Frame>) {
    // Top. Every recorded stack was captured inside the tracker, which the
    // `#[global_allocator]` shim called: when the shim is in the stack,
    // everything inside it is the tracker's, whatever the names say (release
    // builds with `debug = "line-tables-only"` name inlined frames without
    // their paths, so `leakscope::recorder::stack::capture` is just
    // `capture`). Without a shim (the tracker's `GlobalAlloc` methods called
    // directly), everything up to the last tracker/shim frame that comes
    // before the first frame of the program's own code. Either scan stops at
    // the first user frame, so tracker code further out (a leak check or the
    // monitor calling back into the user) never cuts the user's frames.
    let mut top = 0;
    if let Some(shim) = frames.iter().position(|f| is_alloc_shim(&f.function)) {
        top = shim + 1;
        while frames.get(top).is_some_and(is_tracker_or_shim) {
            top += 1;
        }
    } else {
        for (i, f) in frames.iter().enumerate() {
            if is_tracker_or_shim(f) {
                top = i + 1;
            } else if !f.is_std_library() && !f.function.starts_with("0x") {
                break;
            }
        }
    }
    frames.drain(..top);
    // Bottom: std's `__rust_begin_short_backtrace` marks where `main` or a
    // thread's closure was entered (libtest has one of its own); drop it,
    // everything outwards, and the std glue right inside it.
    if let Some(i) = frames
        .iter()
        .position(|f| f.function.contains("__rust_begin_short_backtrace"))
    {
        frames.truncate(i);
        while frames.len() > 1 && frames.last().is_some_and(Frame::is_std_library) {
            frames.pop();
        }
    }
    // Stacks that never went through that marker (allocations made before
    // `main`, or on threads not started by std) still lose the C runtime's
    // start-up frames and the platform's thread entry.
    while frames.len() > 1 && frames.last().is_some_and(is_startup_frame) {
        frames.pop();
    }
}

/// A start-up frame: one of the names below, and not the program's own code
/// (with line tables only, the program's `fn main` is named just `main`,
/// like the C `main` that rustc generates; only the latter has no source
/// file of the program's).
fn is_startup_frame(f: &Frame) -> bool {
    is_startup(&f.function) && f.file.as_deref().is_none_or(|_| f.is_std_library())
}

/// The C runtime's and the platform's entry frames, below any user code.
fn is_startup(name: &str) -> bool {
    matches!(
        name,
        "_start"
            | "main"
            | "__libc_start_main"
            | "__libc_start_call_main"
            | "start_thread"
            | "clone"
            | "clone3"
    ) || name.starts_with("__libc_start_main")
        || name.starts_with("std::rt::lang_start")
}

/// Approximate bytes held by the symbol cache: per entry, its frames and
/// their strings, the `Arc` counts, and a B-tree slot (key, value, a share
/// of the node); and the symbol tables read (`symtab`).
pub(crate) fn overhead_bytes() -> u64 {
    with_cache(|cache| {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let tables = super::symtab::overhead_bytes();
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let tables = 0;
        tables
            + cache
                .values()
                .map(|frames| {
                    frames
                        .iter()
                        .map(|f| {
                            (std::mem::size_of::<Frame>()
                                + f.function.len()
                                + f.file.as_ref().map_or(0, |s| s.len()))
                                as u64
                        })
                        .sum::<u64>()
                        + 16
                        + 48
                })
                .sum::<u64>()
    })
}

/// Calls `f` for each symbol `backtrace` has for `addr` (a return address),
/// holding the symbol lock: every call of ours into `backtrace`'s
/// symbolizer goes through here or `frames_of`, so none is ever cut in half
/// by a fork, and a forked child can use the unsynchronized resolver. Under
/// the guard (the symbolizer's caches are the tracker's memory).
pub(super) fn resolve_symbols(addr: usize, f: &mut dyn FnMut(&backtrace::Symbol)) {
    Guard::run(|| with_cache(|_| resolve(addr, f)));
}

/// Gives back what symbolizing a batch of addresses made resident: called at
/// the end of each batch (every merge of raw stacks into sites, which every
/// snapshot and monitor summary does; the symbol service's request; the
/// probe for symbols). A pprof export needs no debug info: its linker names
/// come from the symbol table.
///
/// `backtrace` keeps the debug info of the last few binaries it read mapped
/// and parsed, for good: measured on a 9 MiB release binary with line
/// tables, about 50 MiB resident after the first snapshot, none of it the
/// tracker's to count, and more in a large service. Resolved frames are
/// cached per address (and counted in `tracker_bytes()`), so the parsed
/// debug info is only needed while new addresses come in: it is dropped after
/// each batch (`clear_symbol_cache`), and the allocator is asked to return
/// the freed pages (`malloc_trim`: the debug info's parse tree is freed into
/// the arena of whichever thread symbolized, often one of ours, where glibc
/// would otherwise keep it). The price is parsing again for the next batch
/// with new addresses: tens of milliseconds (BENCHMARKS.md).
///
/// Not in a forked child: `clear_symbol_cache` takes `backtrace`'s global
/// lock, which a thread outside leakscope may have held at the fork, and
/// the child's memory goes when it exits anyway.
pub(crate) fn release_symbolizer() {
    if FORKED.load(Relaxed) || !LOADED.swap(false, Relaxed) {
        return;
    }
    Guard::run(|| {
        // Under the symbol lock: no call of ours into the symbolizer runs
        // meanwhile (one that started after the swap sets `LOADED` again
        // and is released by its own batch's end).
        with_cache(|_| backtrace::clear_symbol_cache());
        trim_heap();
    });
}

/// Returns the free pages of every malloc arena to the system (glibc only;
/// other allocators give memory back on their own terms).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` has no preconditions; it takes each arena's
    // lock itself, and we hold none of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The name of the real (outermost, not inlined) function at `addr`, a
/// return address, as the frames name it (full path, from the symbol table
/// where the debug info has only the last segment); `None` where nothing
/// names it. From the cache if the address is in it, else resolved without
/// adding it (the callers, such as the symbol service, ask for addresses
/// from outside, which must not grow the cache).
#[cfg(feature = "http")]
pub(crate) fn function_at(addr: usize) -> Option<String> {
    let frames = Guard::run(|| {
        with_cache(|cache| match cache.get(&addr) {
            Some(f) => f.clone(),
            None => resolve_frames(addr),
        })
    });
    let name = &frames.last()?.function;
    (!name.starts_with("0x")).then(|| name.to_string())
}

/// Runs `f` holding the symbol lock (see [`Symbols`]): for the other
/// query-side tables (`merge`, `symtab`), which are only ever locked under
/// it, so their own mutexes are never contended and never held by another
/// thread at a fork. `f` must not symbolize (the lock is not reentrant).
pub(super) fn with_symbol_lock<R>(f: impl FnOnce() -> R) -> R {
    with_cache(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims() {
        let named = |n: &str| is_tracker_or_shim(&frame(n, None));
        assert!(named("__rustc::__rust_alloc"));
        assert!(named("__rust_realloc"));
        assert!(named(
            "<leakscope::alloc::Tracker<A> as core::alloc::global::GlobalAlloc>::alloc"
        ));
        assert!(named("alloc::alloc::exchange_malloc"));
        assert!(!named("alloc::raw_vec::finish_grow"));
        assert!(!named("__rust_try"));
        assert!(!named("std::sys::backtrace::__rust_begin_short_backtrace"));
    }

    fn frame(function: &str, file: Option<&str>) -> Frame {
        super::super::frame::test_frame(function, file, file.map(|_| 1), 0)
    }

    #[test]
    fn trims_short_named_tracker_frames_above_the_shim() {
        // As a release build with `debug = "line-tables-only"` names them.
        let mut frames = vec![
            frame(
                "trace",
                Some("/r/backtrace-0.3.77/src/backtrace/libunwind.rs"),
            ),
            frame("capture", Some("/x/leakscope/src/recorder/stack.rs")),
            frame(
                "alloc<std::alloc::System>",
                Some("/x/leakscope/src/recorder/tracker.rs"),
            ),
            frame("__rust_alloc", Some("/app/src/main.rs")),
            frame(
                "alloc::alloc::alloc",
                Some("/rustc/abc/library/alloc/src/alloc.rs"),
            ),
            frame(
                "do_alloc",
                Some("/rust/deps/hashbrown-0.16.1/src/raw/alloc.rs"),
            ),
            frame("grow_cache", Some("/app/src/main.rs")),
        ];
        trim(&mut frames);
        let names: Vec<&str> = frames.iter().map(|f| f.function()).collect();
        assert_eq!(names, ["do_alloc", "grow_cache"]);
    }

    #[test]
    fn keeps_the_programs_main_named_main() {
        let mut frames = vec![
            frame("__rust_alloc", Some("/app/src/main.rs")),
            frame("grow_cache", Some("/app/src/main.rs")),
            frame("main", Some("/app/src/main.rs")),
            frame(
                "call_once<fn()>",
                Some("/rustc/abc/library/core/src/ops/function.rs"),
            ),
            frame(
                "__rust_begin_short_backtrace<fn()>",
                Some("/rustc/abc/library/std/src/sys/backtrace.rs"),
            ),
            frame("main", None),
            frame("__libc_start_main", None),
        ];
        trim(&mut frames);
        let names: Vec<&str> = frames.iter().map(|f| f.function()).collect();
        assert_eq!(names, ["grow_cache", "main"]);
    }
}
