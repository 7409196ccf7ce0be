//! Full names for the frames that debug info with line tables only names by
//! their last path segment.
//!
//! `debug = "line-tables-only"` (what the README recommends for release
//! builds) emits, for every function, a name without its path and nothing
//! else: no namespaces, no linkage names. The real (not inlined) frame of
//! each address gets its full name from the symbol table (`symtab`); this
//! file names the inlined ones, from what the rest of the stack says:
//!
//! - A closure, `async fn` or `async` block (`{closure#0}`, `{async_fn#0}`,
//!   `{async_block#0}`) is called through something generic over its type,
//!   and the debug info spells a generic's arguments out in full:
//!   `with_labels<(), app::tenants::remember::{closure_env#0}>`. The frame
//!   is named after that type, `app::tenants::remember::{closure#0}`, as
//!   `debug = "limited"` would name it. Failing that, it is named after the
//!   nearest frame outwards in the same source file (the function it was
//!   written in, when that function inlined it), and failing that after the
//!   nearest named frame outwards at all (`{closure#0} in app::run`).
//! - Any other function: the path the stack's closure types give it
//!   (`app::tenants::remember::{closure_env#0}` names an inlined `remember`
//!   `app::tenants::remember`); else the symbol table's, when every function
//!   of the binary with that last segment has the same path; else the
//!   module its source file is (the standard library, registry crates); else
//!   the module of the nearest frame outwards in the same file; else, as
//!   above, `name in enclosing::function`.
//! - Only frames with a Rust source file: C's functions have no paths.
//!
//! Every stack is named whole, before it is trimmed: the frame that spells
//! out a closure's type can be one that trimming drops (a thread's entry).

use std::sync::Arc;

use super::frame::Frame;

/// A name without a module path (`generate_string`, `new<T>`,
/// `{closure#0}`), as debug info with line tables only gives them.
pub(super) fn is_short(name: &str) -> bool {
    let head = base(name);
    !head.contains("::")
        && !name.starts_with('<')
        && !name.starts_with("0x")
        && !name.contains(" in ")
        && !head.is_empty()
}

/// The name without its generic arguments: `from_elem<u8>` -> `from_elem`.
fn base(name: &str) -> &str {
    name.split('<').next().unwrap_or(name)
}

/// `{closure#3}` -> `Some(("closure", "3"))`: the compiler's names for
/// closures and coroutines (`async fn` bodies, `async` blocks).
fn anonymous(name: &str) -> Option<(&str, &str)> {
    let inner = name.strip_prefix('{')?.strip_suffix('}')?;
    let (kind, n) = inner.split_once('#')?;
    let ok = !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit());
    ok.then_some((kind, n))
}

/// The symbol table's full name for a frame the debug info names
/// `debug_name`, with what only the debug info has: legacy-mangled symbols
/// name every closure and coroutine `{{closure}}` where the debug info says
/// which one (`{closure#1}`, `{async_fn#0}`), and carry no generic
/// arguments where the debug info spells them out (the only place that
/// names the closures a generic function was called with).
pub(super) fn refine_symbol(symbol: &str, debug_name: &str) -> String {
    let short = base(debug_name);
    let generics = &debug_name[short.len()..];
    let mut name = match (symbol.strip_suffix("{{closure}}"), anonymous(short)) {
        (Some(path), Some(_)) => format!("{path}{short}"),
        _ => symbol.to_string(),
    };
    let last = name.rsplit("::").next().unwrap_or("");
    if !generics.is_empty() && !symbol.ends_with('>') && !last.contains('<') {
        name.push_str(generics);
    }
    name
}

/// The closure and coroutine types a stack's frames name in their generic
/// arguments (`app::f::{closure_env#0}` in `g<(), app::f::{closure_env#0}>`),
/// collected in one pass over the names, so that naming a stack costs one
/// scan of it however many frames need a name.
struct Envs {
    /// `(frame index, path, token)`: `(2, "app::f", "{closure_env#0}")`, in
    /// frame order.
    found: Vec<(usize, String, String)>,
}

impl Envs {
    fn of(frames: &[Frame]) -> Envs {
        let mut found = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let name: &str = &f.function;
            if !name.contains("_env#") {
                continue;
            }
            for (at, _) in name.match_indices("::{") {
                let rest = &name[at + 2..];
                let Some(end) = rest.find('}') else { continue };
                let token = &rest[..=end];
                let is_env = anonymous(token).is_some_and(|(kind, _)| kind.ends_with("_env"));
                if !is_env {
                    continue;
                }
                let head = &name[..at];
                let start = head
                    .rfind(|c: char| !(c.is_alphanumeric() || "_:{}#".contains(c)))
                    .map_or(0, |j| j + 1);
                let path = &head[start..];
                if !path.is_empty() && !path.starts_with(':') {
                    found.push((i, path.to_string(), token.to_string()));
                }
            }
        }
        Envs { found }
    }

    /// The path of the closure or coroutine type `{kind_env#n}` that the
    /// frames outwards of frame `i` name: from the nearest frame where one
    /// path fits, preferring (when the frame's source file is a known
    /// module) a path in that module, else one outside the standard library.
    fn type_path(&self, i: usize, kind: &str, n: &str, file: Option<&str>) -> Option<&str> {
        let token = format!("{{{kind}_env#{n}}}");
        let module = file.and_then(module_of_file).map(|m| format!("{m}::"));
        let fits = |path: &str| match &module {
            Some(m) => path.starts_with(m.as_str()),
            None => !super::frame::is_std_name(path),
        };
        let mut frame = None;
        let mut one: Option<&str> = None;
        let mut ambiguous = false;
        for (at, path, t) in self.found.iter().filter(|e| e.0 > i) {
            if frame != Some(*at) {
                if let (Some(p), false) = (one, ambiguous) {
                    return Some(p);
                }
                frame = Some(*at);
                one = None;
                ambiguous = false;
            }
            if *t != token || !fits(path) {
                continue;
            }
            match one {
                None => one = Some(path),
                Some(p) if p == path => {}
                Some(_) => ambiguous = true,
            }
        }
        one.filter(|_| !ambiguous)
    }

    /// The path of a function named `short` that the stack names in the
    /// path of a closure or coroutine type (`app::m::f::{closure_env#0}` ->
    /// `app::m` for `f`), when one path fits.
    fn function_path(&self, short: &str) -> Option<String> {
        let mut found: Option<String> = None;
        for (_, path, _) in &self.found {
            let segments: Vec<&str> = path.split("::").collect();
            for j in 1..segments.len() {
                if segments[j] != short {
                    continue;
                }
                let prefix = segments[..j].join("::");
                match &found {
                    None => found = Some(prefix),
                    Some(p) if *p == prefix => {}
                    Some(_) => return None,
                }
            }
        }
        found
    }
}

/// The module a source file is, for the standard library's sources and for
/// crates from a registry: `/rustc/<hash>/library/alloc/src/vec/mod.rs` ->
/// `alloc::vec`, `.../hashbrown-0.16.1/src/raw/mod.rs` -> `hashbrown::raw`.
fn module_of_file(file: &str) -> Option<String> {
    let (krate, rest) = if let Some(i) = file.find("/library/") {
        let rest = &file[i + "/library/".len()..];
        let (krate, rest) = rest.split_once("/src/")?;
        (krate.to_string(), rest)
    } else {
        // `<name>-<version>/src/...`, the layout of every registry and of
        // the crates vendored into std.
        if !file.contains("/registry/src/") && !file.starts_with("/rust/deps/") {
            return None;
        }
        let crate_dir = |i: usize| {
            let dir = &file[..i];
            let dir = &dir[dir.rfind('/').map_or(0, |j| j + 1)..];
            let (name, version) = dir.rsplit_once('-')?;
            (version.starts_with(|c: char| c.is_ascii_digit()) && !name.is_empty())
                .then_some((name, i))
        };
        let (name, i) = file
            .match_indices("/src/")
            .find_map(|(i, _)| crate_dir(i))?;
        (name.replace('-', "_"), &file[i + "/src/".len()..])
    };
    if krate.contains('/') || krate.is_empty() {
        return None;
    }
    let rest = rest.strip_suffix(".rs")?;
    let mut path = vec![krate];
    for seg in rest.split('/') {
        if !matches!(seg, "lib" | "mod" | "main") {
            path.push(seg.to_string());
        }
    }
    Some(path.join("::"))
}

/// The module part of a full function name: the segments before the
/// function's own (and before any closure segments), generics dropped.
fn module_of_name(name: &str) -> Option<&str> {
    let mut path = base(name);
    while let Some((head, _)) = path.rsplit_once("::") {
        let last = &path[head.len() + 2..];
        path = head;
        if anonymous(last).is_none() {
            return Some(path);
        }
    }
    None
}

/// Gives every short-named frame of a symbolized stack (innermost first) a
/// full name, by the rules in this file's docs. `symbol_path` returns the
/// symbol table's unique path for a last segment (`from_elem` ->
/// `alloc::vec`) in the binary of the given address, if it has one.
pub(super) fn name_frames(
    frames: &mut [Frame],
    symbol_path: &mut dyn FnMut(&str, usize) -> Option<String>,
) {
    let envs = Envs::of(frames);
    // Outermost first, so a frame's enclosing frames already have theirs.
    for i in (0..frames.len()).rev() {
        // Only Rust's frames: C's functions (libc's `__libc_start_main`)
        // have no paths to find.
        let rust = frames[i]
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with(".rs"));
        if !rust || !is_short(&frames[i].function) {
            continue;
        }
        let name = full_name(i, frames, &envs, symbol_path);
        if let Some(name) = name {
            let f = &mut frames[i];
            f.function = Arc::from(name);
            *f = f.clone().with_key();
        }
    }
}

fn full_name(
    i: usize,
    frames: &[Frame],
    envs: &Envs,
    symbol_path: &mut dyn FnMut(&str, usize) -> Option<String>,
) -> Option<String> {
    let (frame, outer) = (&frames[i], &frames[i + 1..]);
    let name: &str = &frame.function;
    let short = base(name);
    let generics = &name[short.len()..];
    let same_file = || {
        let file = frame.file.as_deref()?;
        outer
            .iter()
            .find(|f| f.file.as_deref() == Some(file) && !is_short(&f.function))
    };
    let enclosing = || outer.iter().find(|f| !is_short(&f.function));
    if let Some((kind, n)) = anonymous(short) {
        if let Some(path) = envs.type_path(i, kind, n, frame.file.as_deref()) {
            return Some(format!("{path}::{short}"));
        }
        if let Some(f) = same_file() {
            return Some(format!("{}::{short}", base(&f.function)));
        }
        return enclosing().map(|f| format!("{short} in {}", enclosing_name(&f.function)));
    }
    if let Some(path) = envs.function_path(short) {
        return Some(format!("{path}::{name}"));
    }
    if let Some(path) = symbol_path(short, frame.address) {
        return Some(format!("{path}::{name}"));
    }
    if let Some(module) = frame.file.as_deref().and_then(module_of_file) {
        return Some(format!("{module}::{short}{generics}"));
    }
    if let Some(module) = same_file().and_then(|f| module_of_name(&f.function)) {
        return Some(format!("{module}::{short}{generics}"));
    }
    enclosing().map(|f| format!("{name} in {}", enclosing_name(&f.function)))
}

/// How an enclosing function is named after "in": its path without generic
/// arguments, or the whole name when it starts with one (`<F as
/// axum::handler::Handler<…>>::call`, whose path before the first `<` is
/// empty).
fn enclosing_name(function: &str) -> &str {
    match base(function) {
        "" => function,
        b => b,
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::test_frame;
    use super::*;

    fn frame(name: &str, file: &str) -> Frame {
        test_frame(name, Some(file), Some(1), 0x1000)
    }

    fn names(frames: &mut [Frame], table: &[(&str, &str)]) -> Vec<String> {
        name_frames(frames, &mut |short, _| {
            table
                .iter()
                .find(|(s, _)| *s == short)
                .map(|(_, p)| p.to_string())
        });
        frames.iter().map(|f| f.function.to_string()).collect()
    }

    const LIB: &str = "/rustc/0abc/library/alloc/src/vec/mod.rs";
    const APP: &str = "/home/u/app/src/tenants.rs";
    const LEAKSCOPE: &str = "/home/u/.cargo/registry/src/idx/leakscope-0.1.0/src/labels/mod.rs";

    #[test]
    fn closures_are_named_after_the_generic_that_calls_them() {
        let mut frames = [
            frame("from_elem<u8>", LIB),
            frame("{closure#0}", APP),
            frame(
                "with_labels<(), app::tenants::remember::{closure_env#0}>",
                LEAKSCOPE,
            ),
            // Inlined into `main`: its path is the closure type's.
            frame("remember", APP),
            frame("app::main", APP),
        ];
        let got = names(&mut frames, &[]);
        assert_eq!(
            got,
            [
                "alloc::vec::from_elem<u8>",
                "app::tenants::remember::{closure#0}",
                "leakscope::labels::with_labels<(), app::tenants::remember::{closure_env#0}>",
                "app::tenants::remember",
                "app::main",
            ]
        );
        // The key follows the name.
        assert_ne!(frames[1].key, frame("{closure#0}", APP).with_key().key);
    }

    #[test]
    fn async_fns_and_fallbacks() {
        let mut frames = [
            frame("push<u8>", LIB),
            frame("helper", APP),
            frame("{closure#1}", APP),
            frame("{async_fn#0}", "/home/u/app/src/handle.rs"),
            frame(
                "block_on<app::handle::{async_fn_env#0}>",
                "/home/u/app/src/exec.rs",
            ),
            frame("app::tenants::run", APP),
            frame("app::main", "/home/u/app/src/main.rs"),
        ];
        let got = names(&mut frames, &[("push", "alloc::vec::Vec<T,A>")]);
        assert_eq!(
            got,
            [
                // The symbol table's path, the debug info's generics.
                "alloc::vec::Vec<T,A>::push<u8>",
                // The module of the same file's enclosing function.
                "app::tenants::helper",
                // No generic names it: the same file's enclosing function.
                "app::tenants::run::{closure#1}",
                "app::handle::{async_fn#0}",
                // Nothing says where `block_on` lives: its enclosing function.
                "block_on<app::handle::{async_fn_env#0}> in app::tenants::run",
                "app::tenants::run",
                "app::main",
            ]
        );
        // C's functions keep their names.
        let mut c = [
            test_frame(
                "__libc_start_call_main",
                Some("./csu/libc-start.c"),
                Some(1),
                1,
            ),
            frame("app::main", APP),
        ];
        assert_eq!(names(&mut c, &[])[0], "__libc_start_call_main");
        // Named frames are not named again.
        assert!(got.iter().all(|n| !is_short(n)), "{got:?}");
    }

    #[test]
    fn a_closure_of_the_standard_library_is_not_the_users() {
        const MAP: &str = "/rustc/0abc/library/core/src/iter/adapters/map.rs";
        let mut frames = [
            frame("{closure#0}", APP),
            frame("{closure#0}", MAP),
            frame(
                "fold<(), core::iter::adapters::map::map_fold::{closure_env#0}<app::open::{closure_env#0}>>",
                "/rustc/0abc/library/core/src/iter/traits/iterator.rs",
            ),
            frame("app::open", APP),
        ];
        let got = names(&mut frames, &[]);
        assert_eq!(got[0], "app::open::{closure#0}");
        assert_eq!(got[1], "core::iter::adapters::map::map_fold::{closure#0}");
    }

    #[test]
    fn legacy_closure_symbols_take_the_debug_infos_index() {
        assert_eq!(
            refine_symbol("app::f::{{closure}}", "{closure#2}<u8>"),
            "app::f::{closure#2}<u8>"
        );
        assert_eq!(
            refine_symbol("app::f::{{closure}}", "{async_fn#0}"),
            "app::f::{async_fn#0}"
        );
        assert_eq!(refine_symbol("app::f", "f"), "app::f");
        assert_eq!(
            refine_symbol(
                "leakscope::with_labels",
                "with_labels<(), app::f::{closure_env#0}>"
            ),
            "leakscope::with_labels<(), app::f::{closure_env#0}>"
        );
        // v0 symbols have their generics.
        assert_eq!(refine_symbol("app::g::<u8>", "g<u8>"), "app::g::<u8>");
    }

    #[test]
    fn modules_of_files() {
        assert_eq!(module_of_file(LIB).as_deref(), Some("alloc::vec"));
        assert_eq!(
            module_of_file("/rust/deps/hashbrown-0.16.1/src/raw/mod.rs").as_deref(),
            Some("hashbrown::raw")
        );
        assert_eq!(
            module_of_file("/h/.cargo/registry/src/i/tokio-1.0.0/src/runtime/task/harness.rs")
                .as_deref(),
            Some("tokio::runtime::task::harness")
        );
        assert_eq!(module_of_file(APP), None);
        assert_eq!(module_of_name("app::f::{closure#0}"), Some("app"));
        assert_eq!(module_of_name("app::m::T::f<u8>"), Some("app::m::T"));
    }
}
