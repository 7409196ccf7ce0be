//! The root ranges of a scan, prepared in the parent before the fork: the
//! writable data of every loaded module cut into its named statics, the
//! static TLS and the stack of every registered thread.
//!
//! Static TLS: glibc puts a thread's static TLS block (all modules' initial
//! `thread_local!`s) right below its thread pointer on x86-64 (right above
//! it on aarch64); for threads it creates that is inside the thread's stack
//! mapping, for the main thread in memory the loader allocated. We scan
//! `[tp - size, tp)` (x86-64) or `[tp, tp + size)` (aarch64), where size is
//! the sum of the loaded modules' `PT_TLS` sizes plus glibc's static-TLS
//! surplus: a little more than the block at most, which only ever makes
//! more words count as roots (towards "reachable"), never fewer.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Arc, Mutex};

use object::{Object, ObjectSymbol, SymbolKind};

use super::child::RootRange;
use crate::recorder;

/// What a root range stands for.
#[derive(Clone, Debug)]
pub(super) enum RangeKind {
    /// One named static (demangled path).
    Static(Arc<str>),
    /// Unnamed writable data of a module: one root per word, named
    /// `<module>+0x<offset>` (the word's offset from the module's base).
    Words {
        module: Arc<str>,
        base_offset: usize,
    },
    /// A thread's static TLS (its tid).
    Tls(u32),
    /// A thread's stack (its tid).
    Stack(u32),
}

/// A module's writable data symbols, cached per path: `(start, size,
/// demangled name)` in file virtual addresses, sorted by start; `None` when
/// it has no symbol table.
type Symbols = Option<Arc<SymbolList>>;
type SymbolList = Vec<(u64, u64, Arc<str>)>;

static SYMBOLS: Mutex<Option<HashMap<String, Symbols>>> = Mutex::new(None);

fn symbols_of(path: &str) -> Symbols {
    let mut cache = SYMBOLS.lock().unwrap_or_else(|e| e.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(s) = cache.get(path) {
        return s.clone();
    }
    let read = || -> Symbols {
        let data = std::fs::read(path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let mut v: SymbolList = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Data && s.size() > 0)
            .filter_map(|s| {
                let name = format!("{:#}", rustc_demangle::demangle(s.name().ok()?));
                Some((s.address(), s.size(), Arc::from(name)))
            })
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable_by_key(|s| s.0);
        Some(Arc::new(v))
    };
    let s = read();
    cache.insert(path.to_string(), s.clone());
    s
}

/// A loaded module: its path, load bias, writable segments (file virtual
/// addresses) and `PT_TLS` size.
struct Module {
    path: String,
    bias: usize,
    writable: Vec<(usize, usize)>,
    tls: usize,
}

fn modules() -> Vec<Module> {
    unsafe extern "C" fn cb(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `Vec<Module>` passed below; `info` is valid
        // for this call, its `dlpi_phdr` has `dlpi_phnum` entries.
        let (out, info) = unsafe { (&mut *(data as *mut Vec<Module>), &*info) };
        let name = if info.dlpi_name.is_null() {
            ""
        } else {
            // SAFETY: a NUL-terminated string owned by the loader.
            unsafe { CStr::from_ptr(info.dlpi_name) }
                .to_str()
                .unwrap_or("")
        };
        let path = if name.is_empty() {
            std::fs::read_link("/proc/self/exe")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            name.to_string()
        };
        let mut m = Module {
            path,
            bias: info.dlpi_addr as usize,
            writable: Vec::new(),
            tls: 0,
        };
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: `i < dlpi_phnum`.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_W != 0 {
                m.writable
                    .push((ph.p_vaddr as usize, (ph.p_vaddr + ph.p_memsz) as usize));
            } else if ph.p_type == libc::PT_TLS {
                let align = (ph.p_align as usize).max(1);
                m.tls += (ph.p_memsz as usize).next_multiple_of(align);
            }
        }
        if name.starts_with("linux-vdso") {
            return 0;
        }
        out.push(m);
        0
    }
    let mut out: Vec<Module> = Vec::new();
    // SAFETY: `cb` matches the expected signature and only uses `data` as
    // the vector passed here, for the duration of the call.
    unsafe { libc::dl_iterate_phdr(Some(cb), &mut out as *mut Vec<Module> as *mut libc::c_void) };
    out
}

/// Whether a static is leakscope's own (not a root): the tracker's tables,
/// and the `backtrace` crate's symbolization cache, which leakscope fills
/// under its guard (so none of it is a recorded block: a word there that
/// looks like a pointer into one is a stale or dangling value).
fn is_ours(name: &str) -> bool {
    let name = name.trim_start_matches('<');
    name.starts_with("leakscope::") || name.starts_with("backtrace::")
}

/// glibc's static TLS surplus for modules loaded later, plus the TCB slack.
const TLS_SURPLUS: usize = 1664 + 256;

/// Builds the root ranges (in order: statics, thread-local storage, stacks)
/// and what each stands for. Must run under the guard (it allocates).
pub(super) fn plan(threads: &[recorder::ThreadInfo]) -> (Vec<RootRange>, Vec<RangeKind>) {
    let mut ranges = Vec::new();
    let mut kinds = Vec::new();
    let mut push = |start: usize, end: usize, kind: RangeKind, ranges: &mut Vec<RootRange>| {
        if start < end {
            let per_word = matches!(kind, RangeKind::Words { .. });
            // A stack holds stale words of dead frames; statics and
            // thread-locals hold what the program keeps on purpose.
            let weak = matches!(kind, RangeKind::Stack(_));
            ranges.push(RootRange {
                start,
                end,
                per_word,
                weak,
            });
            kinds.push(kind);
        }
    };
    let mods = modules();
    let mut tls = 0;
    for m in &mods {
        tls += m.tls;
        let module: Arc<str> = Arc::from(
            std::path::Path::new(&m.path)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| m.path.clone()),
        );
        let syms = if m.path.is_empty() {
            None
        } else {
            symbols_of(&m.path)
        };
        for &(s, e) in &m.writable {
            // Walk the segment: named statics as themselves, the gaps one
            // root per word, leakscope's own statics skipped.
            let mut at = s;
            let list: &[(u64, u64, Arc<str>)] = syms.as_deref().map_or(&[], |v| v.as_slice());
            let first = list.partition_point(|x| (x.0 + x.1) as usize <= s);
            for (start, size, name) in &list[first..] {
                let (start, end) = (*start as usize, (*start + *size) as usize);
                if start >= e {
                    break;
                }
                let start = start.max(at);
                if start >= end {
                    continue;
                }
                push(
                    m.bias + at,
                    m.bias + start,
                    RangeKind::Words {
                        module: module.clone(),
                        base_offset: at,
                    },
                    &mut ranges,
                );
                if !is_ours(name) {
                    push(
                        m.bias + start,
                        m.bias + end.min(e),
                        RangeKind::Static(name.clone()),
                        &mut ranges,
                    );
                }
                at = end.min(e);
            }
            push(
                m.bias + at,
                m.bias + e,
                RangeKind::Words {
                    module: module.clone(),
                    base_offset: at,
                },
                &mut ranges,
            );
        }
    }
    let tls = tls + TLS_SURPLUS;
    for t in threads.iter().filter(|t| t.tp != 0) {
        #[cfg(target_arch = "aarch64")]
        let (s, e) = (t.tp, t.tp.saturating_add(tls));
        #[cfg(not(target_arch = "aarch64"))]
        let (s, e) = (t.tp.saturating_sub(tls), t.tp.saturating_add(64));
        push(s, e, RangeKind::Tls(t.tid), &mut ranges);
    }
    for t in threads {
        push(t.stack.0, t.stack.1, RangeKind::Stack(t.tid), &mut ranges);
    }
    (ranges, kinds)
}
