//! Full function names from the ELF symbol table, for frames whose debug
//! info names them without their module path.
//!
//! With `debug = "line-tables-only"` (what we tell users to put in their
//! release profile) the debug info names every function of the program by
//! its last path segment: `generate_string`, not
//! `global_slice_leak::generate_string`, and `new` for every constructor.
//! The symbol table still has the full (mangled) name of every function
//! that was not inlined, so the outermost frame of each return address (the
//! real one) gets its full name from there. Inlined frames have no symbol of
//! their own and keep the debug info's name.
//!
//! Query time only. Each binary's table is read once, when a frame of it
//! first needs a name, and kept (its bytes count in `tracker_bytes()`).

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::sync::{Arc, Mutex};

use object::read::ReadCache;
use object::{Object, ObjectSymbol, SymbolKind};
use once_cell::sync::OnceCell;

/// One binary's functions, sorted by address: `(start, size, name)`, with
/// addresses as the file's virtual addresses (before the load bias) and
/// names as the linker's (mangled: pprof's "system name", and demangled on
/// use, which is once per address).
struct Table {
    functions: Vec<(u64, u64, Box<str>)>,
    bytes: usize,
    /// Last path segment -> the one path that every function of that name
    /// has (`(index into functions, length of its path)`), or `AMBIGUOUS`.
    /// Built when first asked (see `path_of`).
    paths: OnceCell<HashMap<Box<str>, (u32, u32)>>,
}

const AMBIGUOUS: u32 = u32::MAX;

impl Table {
    /// Function `i`'s demangled name, without the hash.
    fn demangled(&self, i: usize) -> String {
        format!("{:#}", rustc_demangle::demangle(&self.functions[i].2))
    }

    /// The index of the function containing `vaddr`.
    fn function_at(&self, vaddr: u64) -> Option<usize> {
        let i = self
            .functions
            .partition_point(|&(start, _, _)| start <= vaddr)
            .checked_sub(1)?;
        let (start, size, _) = &self.functions[i];
        (vaddr < start.saturating_add(*size)).then_some(i)
    }

    fn paths(&self) -> &HashMap<Box<str>, (u32, u32)> {
        self.paths.get_or_init(|| {
            // Demangled once for the index, then dropped.
            let names: Vec<String> = (0..self.functions.len())
                .map(|i| self.demangled(i))
                .collect();
            let mut paths: HashMap<Box<str>, (u32, u32)> = HashMap::new();
            for (i, name) in names.iter().enumerate() {
                let Some((path, last)) = split_last(name) else {
                    continue;
                };
                let entry = paths
                    .entry(last.into())
                    .or_insert((i as u32, path.len() as u32));
                if entry.0 != AMBIGUOUS {
                    let (j, len) = *entry;
                    if names[j as usize][..len as usize] != *path {
                        *entry = (AMBIGUOUS, 0);
                    }
                }
            }
            paths
        })
    }
}

/// `a::b::<T>::f` -> `("a::b::<T>", "f")`; a trailing `::<...>` (the
/// generic arguments of v0-mangled names) is dropped first.
fn split_last(name: &str) -> Option<(&str, &str)> {
    let mut name = name;
    if name.ends_with('>') {
        if let Some(i) = name.rfind("::<") {
            name = &name[..i];
        }
    }
    let (path, last) = name.rsplit_once("::")?;
    (!path.is_empty() && !last.is_empty() && !last.contains(['<', '>', ' ']))
        .then_some((path, last))
}

/// The tables read, per binary path (`None`: no symbols, stripped, or
/// unreadable), and the address ranges already looked up, each with its
/// binary's table and load bias, so that a lookup does not ask the loader
/// again (`dl_iterate_phdr` and, for the main program, its path from
/// `/proc`). Naming the frames of a stack looks up several addresses.
/// Locked only under the symbol lock (`full_name` and `path_of` run while
/// resolving; `overhead_bytes` is called under it), so the mutex is never
/// contended and no other thread holds it at a fork.
#[derive(Default)]
struct Tables {
    by_path: HashMap<String, Option<Arc<Table>>>,
    /// `(start, end, table, bias)` of each loaded segment looked up. A
    /// library unloaded (`dlclose`) and another loaded at its addresses
    /// would be named from the first one's table, as `backtrace`'s own
    /// cache would.
    ranges: Vec<(usize, usize, Option<Arc<Table>>, u64)>,
}

/// More ranges than any process has segments: past it, lookups go to the
/// loader each time (and the list stops growing).
const MAX_RANGES: usize = 4096;

static TABLES: Mutex<Option<Tables>> = Mutex::new(None);

/// The demangled full name (without the hash) of the function containing
/// `addr`, from the symbol table of the binary it lies in.
pub(super) fn full_name(addr: usize) -> Option<String> {
    let (table, bias) = table_of(addr)?;
    let i = table.function_at((addr as u64).checked_sub(bias)?)?;
    Some(table.demangled(i))
}

/// The linker's (mangled) name of the function containing `addr`.
#[cfg(feature = "pprof")]
pub(super) fn linker_name(addr: usize) -> Option<String> {
    let (table, bias) = table_of(addr)?;
    let i = table.function_at((addr as u64).checked_sub(bias)?)?;
    Some(table.functions[i].2.to_string())
}

/// The path of every function named `last` in the symbol table of the
/// binary `addr` lies in (`from_elem` -> `alloc::vec`), if they all have the
/// same one.
pub(super) fn path_of(last: &str, addr: usize) -> Option<String> {
    let table = table_of(addr)?.0;
    let &(i, len) = table.paths().get(last)?;
    if i == AMBIGUOUS {
        return None;
    }
    let name = table.demangled(i as usize);
    name.get(..len as usize).map(str::to_string)
}

fn table_of(addr: usize) -> Option<(Arc<Table>, u64)> {
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let tables = tables.get_or_insert_with(Tables::default);
    if let Some((_, _, table, bias)) = tables.ranges.iter().find(|r| r.0 <= addr && addr < r.1) {
        return Some((table.clone()?, *bias));
    }
    let (path, bias, start, end) = object_of(addr)?;
    let table = tables
        .by_path
        .entry(path.clone())
        .or_insert_with(|| read_table(&path).map(Arc::new))
        .clone();
    if tables.ranges.len() < MAX_RANGES {
        tables.ranges.push((start, end, table.clone(), bias));
    }
    Some((table?, bias))
}

/// Bytes held by the tables read so far.
pub(super) fn overhead_bytes() -> u64 {
    let tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    tables.as_ref().map_or(0, |t| {
        let ranges =
            t.ranges.capacity() * std::mem::size_of::<(usize, usize, Option<Arc<Table>>, u64)>();
        ranges as u64
            + t.by_path
                .values()
                .flatten()
                .map(|t| {
                    let index = t.paths.get().map_or(0, |p| {
                        // Key, value, a hash byte and a share of empty slots.
                        p.capacity() * (std::mem::size_of::<(Box<str>, (u32, u32))>() + 1)
                            + p.keys().map(|k| k.len()).sum::<usize>()
                    });
                    (t.bytes + index) as u64
                })
                .sum::<u64>()
    })
}

fn read_table(path: &str) -> Option<Table> {
    let file = File::open(path).ok()?;
    let data = &ReadCache::new(file);
    let obj = object::File::parse(data).ok()?;
    let mut functions: Vec<(u64, u64, Box<str>)> = obj
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            let raw = s.name().ok()?;
            Some((s.address(), s.size(), raw.into()))
        })
        .collect();
    if functions.is_empty() {
        return None;
    }
    functions.sort_unstable_by_key(|f| f.0);
    let bytes = functions.capacity() * std::mem::size_of::<(u64, u64, Box<str>)>()
        + functions.iter().map(|f| f.2.len()).sum::<usize>();
    Some(Table {
        functions,
        bytes,
        paths: OnceCell::new(),
    })
}

/// The loaded object containing `addr`: its path, its load bias, and the
/// address range of the segment holding `addr`.
fn object_of(addr: usize) -> Option<(String, u64, usize, usize)> {
    struct Search {
        addr: usize,
        found: Option<(String, u64, usize, usize)>,
    }

    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Search` passed to `dl_iterate_phdr`
        // below, alive for the whole call; `info` is valid for this callback
        // (the loader's contract).
        let (search, info) = unsafe { (&mut *(data as *mut Search), &*info) };
        let bias = info.dlpi_addr as usize;
        let phdrs = if info.dlpi_phdr.is_null() {
            &[][..]
        } else {
            // SAFETY: the loader gives `dlpi_phnum` program headers at
            // `dlpi_phdr`, valid during the callback.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
        };
        let segment = phdrs.iter().find_map(|ph| {
            let start = bias.wrapping_add(ph.p_vaddr as usize);
            let inside = ph.p_type == libc::PT_LOAD
                && search.addr >= start
                && search.addr - start < ph.p_memsz as usize;
            inside.then(|| (start, start.saturating_add(ph.p_memsz as usize)))
        });
        let Some((start, end)) = segment else {
            return 0;
        };
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string owned by the loader, valid
            // during the callback.
            unsafe { CStr::from_ptr(info.dlpi_name) }
                .to_string_lossy()
                .into_owned()
        };
        search.found = Some((name, bias as u64, start, end));
        1
    }

    let mut search = Search { addr, found: None };
    // SAFETY: `visit` matches the callback type and only uses `data` as the
    // `Search` it points to, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut libc::c_void) };
    let (name, bias, start, end) = search.found?;
    // The main program has an empty name.
    let path = if name.is_empty() {
        std::env::current_exe().ok()?.display().to_string()
    } else {
        name
    };
    Some((path, bias, start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_named_function() -> usize {
        std::hint::black_box(a_named_function as *const () as usize)
    }

    #[test]
    fn names_a_function_of_this_binary_with_its_path() {
        let addr = a_named_function();
        let name = full_name(addr + 1).expect("the test binary has a symbol table");
        assert!(name.ends_with("symtab::tests::a_named_function"), "{name}");
        assert!(full_name(0x10).is_none());
    }
}
