//! Address -> function, file, line: at query time only, each distinct address
//! once per process (cached), never on the allocation path.

use std::sync::Arc;

use dashmap::DashMap;
use once_cell::sync::{Lazy, OnceCell};

use crate::guard::Guard;

/// One frame of a site's stack, symbolized. Inlined calls get frames of their
/// own (sharing the address of the real frame they were inlined into).
///
/// # Examples
///
/// ```
/// let snap = leakscope::snapshot();
/// for site in snap.sites() {
///     for frame in site.frames() {
///         println!("{} {:?}:{:?}", frame.function(), frame.file(), frame.line());
///     }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    function: String,
    file: Option<String>,
    line: Option<u32>,
    address: usize,
    inlined: bool,
}

impl Frame {
    /// Demangled function name without the `::h0123…` hash, or the address
    /// in hex when it could not be resolved.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Source file, when line tables are available.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// Source line, when line tables are available.
    pub fn line(&self) -> Option<u32> {
        self.line
    }

    /// The return address this frame was captured at (shared by a real frame
    /// and the frames inlined into it).
    pub fn address(&self) -> usize {
        self.address
    }

    /// True for a frame inlined into its caller (the next frame outwards
    /// with the same address).
    pub fn is_inlined(&self) -> bool {
        self.inlined
    }

    /// Whether this frame belongs to the Rust standard library: its source is
    /// under `/rustc/<hash>/library/`, or, without a file, its name (after
    /// stripping leading `<`, `&`, `&mut ` and `T as `) starts with `alloc::`,
    /// `core::`, `std::` or `hashbrown::`.
    ///
    /// # Examples
    ///
    /// ```
    /// # let snap = leakscope::snapshot();
    /// # for site in snap.sites() {
    /// let user_frame = site.frames().iter().find(|f| !f.is_std_library());
    /// # let _ = user_frame;
    /// # }
    /// ```
    pub fn is_std_library(&self) -> bool {
        if let Some(file) = &self.file {
            return is_std_path(file);
        }
        is_std_name(&self.function)
    }
}

fn is_std_path(file: &str) -> bool {
    match file.find("/rustc/") {
        Some(i) => {
            let rest = &file[i + "/rustc/".len()..];
            match rest.find('/') {
                Some(j) => rest[j..].starts_with("/library/"),
                None => false,
            }
        }
        None => false,
    }
}

/// The name rule of [`Frame::is_std_library`].
pub(crate) fn is_std_name(name: &str) -> bool {
    let mut s = strip_refs(name);
    // `<T as alloc::string::ToString>::to_string`: a generic parameter's
    // blanket impl is the impl's crate's code.
    if let Some((ty, rest)) = s.split_once(" as ") {
        if !ty.is_empty() && ty.chars().all(|c| c.is_alphanumeric() || c == '_') {
            s = strip_refs(rest);
        }
    }
    ["alloc::", "core::", "std::", "hashbrown::"]
        .iter()
        .any(|p| s.starts_with(p))
}

fn strip_refs(mut s: &str) -> &str {
    loop {
        let before = s.len();
        s = s.trim_start_matches(['<', '&']);
        if let Some(r) = s.strip_prefix("mut ") {
            s = r;
        }
        if s.len() == before {
            return s;
        }
    }
}

/// Whether a frame is the tracker's own code, the unwinder's, or one of the
/// allocation shims, all trimmed off the top of every stack.
fn is_tracker_or_shim(name: &str) -> bool {
    let bare = name.trim_start_matches('<');
    bare.starts_with("leakscope::")
        || bare.starts_with("backtrace::")
        || bare.starts_with("alloc::alloc::")
        || bare.starts_with("std::alloc::")
        || is_alloc_shim(name)
        || name.starts_with("__rdl_")
        || name.starts_with("__rg_")
        || name.starts_with("_Unwind_")
        || name.contains("as core::alloc::global::GlobalAlloc>::")
}

/// `__rust_alloc` and friends (newer toolchains: `__rustc::__rust_alloc`).
/// Not every `__rust_*` symbol: `__rust_try` is the panic machinery, and
/// `__rust_begin_short_backtrace` marks the bottom of a thread's stack.
fn is_alloc_shim(name: &str) -> bool {
    let bare = name.strip_prefix("__rustc::").unwrap_or(name);
    matches!(
        bare,
        "__rust_alloc" | "__rust_alloc_zeroed" | "__rust_realloc" | "__rust_dealloc"
    )
}

static CACHE: Lazy<DashMap<usize, Arc<[Frame]>>> = Lazy::new(DashMap::new);

/// The frames of one address, innermost (most inlined) first. Cached.
fn frames_of(addr: usize) -> Arc<[Frame]> {
    if let Some(f) = CACHE.get(&addr) {
        return f.clone();
    }
    let mut out: Vec<Frame> = Vec::new();
    backtrace::resolve(addr as *mut std::ffi::c_void, |sym| {
        let function = match sym.name() {
            // `{:#}` drops the trailing `::h0123…` hash.
            Some(n) => format!("{n:#}"),
            None => format!("{addr:#x}"),
        };
        out.push(Frame {
            function,
            file: sym.filename().map(|p| p.display().to_string()),
            line: sym.lineno(),
            address: addr,
            inlined: true,
        });
    });
    if out.is_empty() {
        out.push(Frame {
            function: format!("{addr:#x}"),
            file: None,
            line: None,
            address: addr,
            inlined: false,
        });
    }
    if let Some(last) = out.last_mut() {
        last.inlined = false;
    }
    let frames: Arc<[Frame]> = out.into();
    CACHE.insert(addr, frames.clone());
    frames
}

/// A site's raw stack and its frames, symbolized on first use and shared by
/// every copy (a `Site`, its `SiteDelta`s, the monitor's `Suspect`s), so each
/// stack is symbolized at most once however many reports show it.
#[derive(Clone, Debug)]
pub(crate) struct SiteStack {
    addrs: Arc<[usize]>,
    frames: Arc<OnceCell<Arc<[Frame]>>>,
}

impl SiteStack {
    pub(crate) fn new(addrs: Arc<[usize]>) -> SiteStack {
        SiteStack {
            addrs,
            frames: Arc::new(OnceCell::new()),
        }
    }

    /// The symbolized, trimmed frames (see [`symbolize`]).
    pub(crate) fn frames(&self) -> &[Frame] {
        self.frames.get_or_init(|| symbolize(&self.addrs))
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
        trim(&mut frames);
        frames.into()
    })
}

fn trim(frames: &mut Vec<Frame>) {
    // Top: everything up to the last tracker/shim frame that comes before the
    // first frame of the program's own code. The scan stops at that first
    // user frame, so tracker code further out (a leak check or the monitor
    // calling back into the user) never cuts the user's frames.
    let mut top = 0;
    for (i, f) in frames.iter().enumerate() {
        if is_tracker_or_shim(&f.function) {
            top = i + 1;
        } else if !f.is_std_library() && !f.function.starts_with("0x") {
            break;
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
    while frames.len() > 1 && frames.last().is_some_and(|f| is_startup(&f.function)) {
        frames.pop();
    }
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

/// Approximate bytes held by the symbol cache.
pub(crate) fn overhead_bytes() -> u64 {
    CACHE
        .iter()
        .map(|e| {
            e.value()
                .iter()
                .map(|f| {
                    (std::mem::size_of::<Frame>()
                        + f.function.len()
                        + f.file.as_ref().map_or(0, String::len)) as u64
                })
                .sum::<u64>()
                + 48
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_names() {
        assert!(is_std_name(
            "<alloc::alloc::Global as core::alloc::Allocator>::allocate"
        ));
        assert!(is_std_name("alloc::raw_vec::RawVec<T,A>::grow_one"));
        assert!(is_std_name(
            "<&mut std::io::Stdout as std::io::Write>::write"
        ));
        assert!(is_std_name("hashbrown::raw::RawTable<T>::reserve_rehash"));
        assert!(is_std_name("<T as alloc::string::ToString>::to_string"));
        assert!(!is_std_name("global_slice_leak::generate_string"));
        assert!(!is_std_name("<myapp::Cache as core::ops::Drop>::drop"));
        assert!(is_std_path("/rustc/abc123/library/alloc/src/raw_vec.rs"));
        assert!(!is_std_path("/home/u/src/main.rs"));
    }

    #[test]
    fn shims() {
        assert!(is_tracker_or_shim("__rustc::__rust_alloc"));
        assert!(is_tracker_or_shim("__rust_realloc"));
        assert!(is_tracker_or_shim(
            "<leakscope::alloc::Tracker<A> as core::alloc::global::GlobalAlloc>::alloc"
        ));
        assert!(is_tracker_or_shim("alloc::alloc::exchange_malloc"));
        assert!(!is_tracker_or_shim("alloc::raw_vec::finish_grow"));
        assert!(!is_tracker_or_shim("__rust_try"));
        assert!(!is_tracker_or_shim(
            "std::sys::backtrace::__rust_begin_short_backtrace"
        ));
    }
}
