//! [`Frame`]: one symbolized frame of a site's stack, and the rule that tells
//! the standard library's frames from the program's own.

use std::sync::Arc;

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
    // Shared strings: a frame is cloned into every stack that passes
    // through its address (a snapshot of 100k sites makes millions of
    // clones), and a clone is then a reference count, not an allocation.
    pub(super) function: Arc<str>,
    pub(super) file: Option<Arc<str>>,
    pub(super) line: Option<u32>,
    pub(super) address: usize,
    pub(super) inlined: bool,
    /// A hash of what identifies the frame at the source level (see
    /// [`Frame::with_key`]), computed once per address when it is resolved,
    /// so that merging a stack into its site hashes one word per frame.
    pub(super) key: u64,
}

impl Frame {
    /// The frame with its source-level key computed: (function, file, line)
    /// of the frame; the function name alone without line tables; and the
    /// address where there is no symbol at all (the name is then the address
    /// and there is no file), since that is all that tells two such frames
    /// apart.
    pub(super) fn with_key(mut self) -> Frame {
        use std::hash::{Hash, Hasher};
        let unresolved = self.file.is_none() && self.function.starts_with("0x");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &*self.function,
            self.file.as_deref(),
            self.line,
            unresolved.then_some(self.address),
        )
            .hash(&mut h);
        self.key = h.finish();
        self
    }

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

    /// Whether this frame belongs to the Rust standard library.
    ///
    /// With line tables, the source path decides, whatever the name says:
    /// std's own sources (`/rustc/<hash>/library/...`) and the crates built
    /// into std (`/rust/deps/hashbrown-*/...` on current toolchains, such as
    /// the `hashbrown` behind `std::collections::HashMap`, `std_detect` or
    /// `rustc-demangle`) are std; a `hashbrown` that the program depends on
    /// itself lives in its Cargo registry and is not. Without a file, the name
    /// decides: after stripping leading `<`, `&`, `&mut ` and `T as `, it
    /// starts with `alloc::`, `core::`, `std::`, `hashbrown::` or
    /// `std_detect::`.
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

    /// Whether this frame is async runtime machinery: the poll, dispatch
    /// and service plumbing of tokio, hyper, axum, futures, tower, h2,
    /// tracing's `Instrumented` and their kin, by the crate its function (or,
    /// for `<T as Trait>::f`, its type or trait) belongs to. Text reports
    /// fold runs of these frames (and the std frames between them) into one
    /// line, as they fold std's; pprof keeps every frame.
    ///
    /// # Examples
    ///
    /// ```
    /// let snap = leakscope::snapshot();
    /// # for site in snap.sites() {
    /// let mine = site.frames().iter().filter(|f| !f.is_async_runtime() && !f.is_std_library());
    /// # let _ = mine.count();
    /// # }
    /// ```
    pub fn is_async_runtime(&self) -> bool {
        is_runtime_name(&self.function) || self.file.as_deref().is_some_and(is_runtime_file)
    }
}

/// A source file of a runtime crate as cargo unpacks it
/// (`.../registry/src/<index>/tokio-1.54.1/src/macros/select.rs`): frames
/// inlined from a runtime crate's macros or generics into code named after
/// something else (`{closure#0} in <PollFn<…> as Future>::poll`).
fn is_runtime_file(file: &str) -> bool {
    let Some(i) = file.find("/registry/src/") else {
        return false;
    };
    // Skip the index directory, then take the package directory.
    let mut parts = file[i + "/registry/src/".len()..].split('/');
    let (Some(_index), Some(package)) = (parts.next(), parts.next()) else {
        return false;
    };
    let name = match package.rsplit_once('-') {
        Some((name, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => name,
        _ => return false,
    };
    // Package names use `-` where crate names use `_`.
    let krate = name.replace('-', "_");
    RUNTIME_CRATES.contains(&krate.as_str())
}

/// Crates whose frames are async runtime machinery (see
/// [`Frame::is_async_runtime`]).
const RUNTIME_CRATES: &[&str] = &[
    "tokio",
    "tokio_util",
    "tokio_stream",
    "hyper",
    "hyper_util",
    "axum",
    "axum_core",
    "futures",
    "futures_util",
    "futures_core",
    "futures_executor",
    "tower",
    "tower_http",
    "tower_service",
    "tower_layer",
    "h2",
    "tracing",
    "tracing_futures",
    "async_std",
    "async_executor",
    "async_task",
    "smol",
    "actix_rt",
    "actix_http",
    "actix_service",
    "warp",
    "tonic",
    "pin_project_lite",
];

/// The name rule of [`Frame::is_async_runtime`]: the path's first segment
/// (after `<`, `&`, `mut `) is a runtime crate, or, for `<T as Trait>::f`
/// with a user type `T`, the trait's is and `T` is a generic parameter.
pub(crate) fn is_runtime_name(name: &str) -> bool {
    let s = strip_refs(name);
    let runtime = |s: &str| {
        let krate = s.split("::").next().unwrap_or("");
        RUNTIME_CRATES.contains(&krate) && s.len() > krate.len()
    };
    if runtime(s) {
        return true;
    }
    if let Some((ty, rest)) = s.split_once(" as ") {
        if !ty.is_empty() && ty.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return runtime(strip_refs(rest));
        }
    }
    false
}

pub(super) fn is_std_path(file: &str) -> bool {
    // std's sources as the toolchain's debug info names them.
    if let Some(i) = file.find("/rustc/") {
        let rest = &file[i + "/rustc/".len()..];
        if let Some(j) = rest.find('/') {
            if rest[j..].starts_with("/library/") {
                return true;
            }
        }
    }
    // The crates vendored into std, as std's build machine saw them: current
    // toolchains remap them to `/rust/deps/<crate>-<version>/`; older ones
    // kept the build machine's registry, `/cargo/registry/src/<index>/`. Both
    // are anchored at the root, which no user's `CARGO_HOME` registry is
    // (`~/.cargo/registry/src/...`). The last two are what rust-src's copy
    // looks like, for debug info that was remapped to it.
    file.starts_with("/rust/deps/")
        || file.starts_with("/cargo/registry/src/")
        || file.contains("/lib/rustlib/src/rust/library/")
        || file.contains("/lib/rustlib/src/rust/vendor/")
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
    ["alloc::", "core::", "std::", "hashbrown::", "std_detect::"]
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

/// The owner of a stack: its innermost frame that is neither the standard
/// library nor the tracker. This one rule names a site everywhere (the
/// report's function column, the monitor's warnings, pprof's leaf).
///
/// A frame with a file but no line does not qualify while another one does:
/// debug info with line tables only marks compiler-placed code with line 0
/// and the file of the unit it was inlined into, so an inlined std function
/// (`try_allocate_in<alloc::alloc::Global>`, short-named) can show up with
/// the program's own file and no line. (Frames with no file at all, such as
/// the bare addresses of a stripped binary, are not such frames.)
pub(crate) fn owner(frames: &[Frame]) -> Option<&Frame> {
    let candidate = |f: &&Frame| !f.is_std_library() && !is_tracker(f);
    let line_zero = |f: &&Frame| f.file.is_some() && f.line.is_none();
    frames
        .iter()
        .filter(candidate)
        .find(|f| !line_zero(f))
        .or_else(|| frames.iter().find(candidate))
}

/// Whether a frame is leakscope's own code or the unwinder it calls: by name
/// where the debug info has paths in names, and by source file where it has
/// only short names (`debug = "line-tables-only"` names an inlined
/// `leakscope::recorder::stack::capture` just `capture`).
pub(crate) fn is_tracker(f: &Frame) -> bool {
    let bare = f.function.trim_start_matches('<');
    if bare.starts_with("leakscope::") || bare.starts_with("backtrace::") {
        return true;
    }
    f.file.as_deref().is_some_and(is_tracker_path)
}

/// The source directory of this crate, as compiled into the user's binary:
/// frames whose file lies under it are the tracker's.
const OWN_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");

fn is_tracker_path(file: &str) -> bool {
    if file.starts_with(OWN_SRC) {
        return true;
    }
    // The `backtrace` crate, from a registry or a vendor directory:
    // `.../backtrace-0.3.77/src/...`.
    file.split('/')
        .zip(file.split('/').skip(1))
        .any(|(dir, next)| {
            next == "src"
                && dir
                    .strip_prefix("backtrace-")
                    .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// A frame built by hand, for the query side's unit tests.
#[cfg(test)]
pub(super) fn test_frame(
    function: &str,
    file: Option<&str>,
    line: Option<u32>,
    address: usize,
) -> Frame {
    Frame {
        function: function.into(),
        file: file.map(Into::into),
        line,
        address,
        inlined: false,
        key: 0,
    }
    .with_key()
}

#[cfg(test)]
mod tests {

    #[test]
    fn runtime_crates_by_file() {
        use super::is_runtime_file;
        let reg = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        assert!(is_runtime_file(&format!(
            "{reg}/tokio-1.54.1/src/macros/select.rs"
        )));
        assert!(is_runtime_file(&format!(
            "{reg}/hyper-util-0.1.3/src/rt.rs"
        )));
        assert!(!is_runtime_file(&format!(
            "{reg}/hashbrown-0.16.1/src/map.rs"
        )));
        assert!(!is_runtime_file("/home/u/app/src/tokio-1.0/x.rs"));
        assert!(!is_runtime_file("/home/u/app/src/main.rs"));
    }

    use super::*;

    #[test]
    fn runtime_names() {
        for name in [
            "tokio::runtime::task::harness::Harness<T,S>::poll",
            "<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll",
            "<hyper::proto::h1::dispatch::Server<S,hyper::body::incoming::Incoming> as hyper::proto::h1::dispatch::Dispatch>::poll_msg",
            "<axum::routing::Router as tower_service::Service<http::request::Request<B>>>::call",
            "<F as futures_core::future::TryFuture>::try_poll",
            "<tracing::instrument::Instrumented<T> as core::future::future::Future>::poll",
            "h2::proto::streams::streams::Streams<B,P>::recv_data",
        ] {
            assert!(is_runtime_name(name), "{name}");
        }
        for name in [
            "myapp::handler::{{closure}}",
            "<myapp::Cache as tower_service::Service<R>>::call",
            "core::ops::function::FnOnce::call_once",
            "tokio_like::poll",
            "tokio",
        ] {
            assert!(!is_runtime_name(name), "{name}");
        }
    }

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
        assert!(is_std_path("/rust/deps/hashbrown-0.16.1/src/raw/mod.rs"));
        assert!(is_std_path(
            "/cargo/registry/src/index.crates.io-6f17d22bba15001f/hashbrown-0.14.3/src/map.rs"
        ));
        // A program's own hashbrown, from its Cargo registry, is not std.
        assert!(!is_std_path(
            "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hashbrown-0.15.2/src/map.rs"
        ));
    }

    fn frame(function: &str, file: Option<&str>) -> Frame {
        test_frame(function, file, file.map(|_| 1), 0)
    }

    #[test]
    fn owner_skips_std_and_tracker_frames() {
        let hashbrown_std = frame(
            "do_alloc<alloc::alloc::Global>",
            Some("/rust/deps/hashbrown-0.16.1/src/raw/alloc.rs"),
        );
        let std_insert = frame(
            "insert<u64, u64>",
            Some("/rustc/0123abc/library/std/src/collections/hash/map.rs"),
        );
        let user = frame("grow_cache", Some("/home/u/app/src/main.rs"));
        let frames = [hashbrown_std, std_insert, user.clone()];
        assert_eq!(owner(&frames), Some(&user));
        let tracker = frame("capture", Some(&format!("{OWN_SRC}recorder/stack.rs")));
        let unwinder = frame(
            "trace",
            Some("/home/u/.cargo/registry/src/x/backtrace-0.3.77/src/backtrace/libunwind.rs"),
        );
        assert!(is_tracker(&tracker) && is_tracker(&unwinder));
        assert!(!is_tracker(&user));
        // A crate merely named like the unwinder is not it.
        assert!(!is_tracker(&frame(
            "f",
            Some("/x/backtrace-tools/src/lib.rs")
        )));
        assert_eq!(owner(&[tracker, unwinder]), None);
        // An inlined std function placed at line 0 of the program's file is
        // not the owner when a frame with a line follows.
        let mut line_zero = frame(
            "try_allocate_in<alloc::alloc::Global>",
            Some("/home/u/app/src/main.rs"),
        );
        line_zero.line = None;
        assert_eq!(owner(&[line_zero.clone(), user.clone()]), Some(&user));
        // Without any line numbers, the plain rule.
        let mut bare = user.clone();
        bare.line = None;
        assert_eq!(owner(&[line_zero.clone(), bare]), Some(&line_zero));
        // A stripped binary's bare addresses own their stack, even when a
        // C library frame further out has a line.
        let hex = frame("0x5644d1500000", None);
        let libc = frame(
            "__libc_start_call_main",
            Some("./csu/libc_start_call_main.h"),
        );
        assert_eq!(owner(&[hex.clone(), libc]), Some(&hex));
    }
}
