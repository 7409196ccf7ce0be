//! The process's executable mappings (from `/proc/self/maps`) and the GNU
//! build id of the file behind each, for pprof's mapping table: what lets a
//! symbolizer that runs later (`go tool pprof <binary>`, Parca, Pyroscope
//! with debuginfod) find the right binary and turn a frame's absolute address
//! into an address in that file. A symbolizer computes the load bias from a
//! mapping's start, limit and file offset and the file's program headers
//! (the bias is the same for a stripped copy and the file it was stripped
//! from, which has the same layout), so a stripped process's addresses name
//! functions in the unstripped file. Each mapping is the kernel's, moved up
//! to where its code segment starts (see [`Mapped::at_segment`]).

use std::fs::File;

use object::read::ReadCache;
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endianness, FileKind, elf};

/// An executable mapping of the process, from `/proc/self/maps`.
pub(super) struct Mapped {
    pub(super) start: u64,
    pub(super) limit: u64,
    pub(super) offset: u64,
    pub(super) path: String,
}

/// Executable file-backed mappings, main binary first (pprof takes the first
/// mapping to be the main binary).
pub(super) fn read_maps() -> Vec<Mapped> {
    // Not Linux, or no procfs: the profile simply has no mappings. Symbolized
    // locations still carry their lines; unsymbolized ones stay addresses.
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut maps: Vec<Mapped> = text.lines().filter_map(parse_maps_line).collect();
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.display().to_string();
        if let Some(i) = maps.iter().position(|m| m.path == exe) {
            let main = maps.remove(i);
            maps.insert(0, main);
        }
    }
    maps
}

/// `start-limit perms offset dev inode path`; the path may contain spaces.
fn parse_maps_line(line: &str) -> Option<Mapped> {
    let mut rest = line;
    let mut field = || {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let perms = field();
    let offset = field();
    let _dev = field();
    let _inode = field();
    let path = rest.trim();
    // Only code can hold a return address; `[vdso]` and friends are not files.
    if !perms.contains('x') || !path.starts_with('/') {
        return None;
    }
    let (start, limit) = range.split_once('-')?;
    Some(Mapped {
        start: u64::from_str_radix(start, 16).ok()?,
        limit: u64::from_str_radix(limit, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path: path.to_string(),
    })
}

/// Note segments larger than this are skipped: a build id note is a few
/// dozen bytes, and a corrupt size must not make us read the whole file.
const MAX_NOTE_SEGMENT: u64 = 1 << 16;

/// Program headers beyond this count mean a corrupt header.
const MAX_PROGRAM_HEADERS: u16 = 1024;

/// What pprof needs from a mapped ELF file: its GNU build id (hex) and its
/// executable `PT_LOAD` segments' file offsets.
#[derive(Default)]
pub(super) struct ElfInfo {
    pub(super) build_id: Option<String>,
    pub(super) exec_offsets: Vec<u64>,
}

/// Reads [`ElfInfo`] of an ELF file from its program headers.
///
/// Parsed with `object` through a `ReadCache`, so only the ELF header, the
/// program headers and the (small) note segments are read, never the whole
/// file, and no read reaches past the end of the file. Anything unexpected
/// (not ELF, truncated, a deleted file, no such note) means no build id:
/// pprof then matches binaries by name, which is only a weaker check, never a
/// wrong one.
pub(super) fn elf_info(path: &str) -> ElfInfo {
    let Ok(file) = File::open(path) else {
        return ElfInfo::default();
    };
    let data = &ReadCache::new(file);
    let info = match FileKind::parse(data) {
        Ok(FileKind::Elf32) => read_elf::<elf::FileHeader32<Endianness>>(data),
        Ok(FileKind::Elf64) => read_elf::<elf::FileHeader64<Endianness>>(data),
        _ => None,
    };
    info.unwrap_or_default()
}

/// The GNU build id of an ELF file, in hex (see [`elf_info`]).
#[cfg(test)]
pub(super) fn build_id(path: &str) -> Option<String> {
    elf_info(path).build_id
}

fn read_elf<Elf: FileHeader<Endian = Endianness>>(data: &ReadCache<File>) -> Option<ElfInfo> {
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    if header.e_phnum(endian) > MAX_PROGRAM_HEADERS {
        return None;
    }
    let mut info = ElfInfo::default();
    for ph in header.program_headers(endian, data).ok()? {
        if ph.p_type(endian) == elf::PT_LOAD && ph.p_flags(endian).contains(elf::PF_X) {
            info.exec_offsets.push(ph.p_offset(endian).into());
        }
        if info.build_id.is_some()
            || ph.p_type(endian) != elf::PT_NOTE
            || ph.p_filesz(endian).into() > MAX_NOTE_SEGMENT
        {
            continue;
        }
        let Ok(Some(mut notes)) = ph.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == elf::ELF_NOTE_GNU
                && note.n_type(endian) == elf::NT_GNU_BUILD_ID
                && !note.desc().is_empty()
            {
                info.build_id = Some(note.desc().iter().map(|b| format!("{b:02x}")).collect());
                break;
            }
        }
    }
    Some(info)
}

/// The largest page size a loader aligns segments to (64 KiB, arm64 and
/// ppc64 kernels): a segment's start lies less than this past the page
/// boundary its mapping starts at.
const MAX_PAGE: u64 = 1 << 16;

impl Mapped {
    /// The mapping as pprof's base-address computations need it: starting
    /// where the executable segment does, not at the page boundary below it.
    ///
    /// The kernel maps whole pages: where the linker put the code segment
    /// mid-page (rust-lld, Rust's default linker on x86-64 Linux, starts it
    /// right after the read-only data, at file offset 0x49c20 and address
    /// 0x4ac20), the mapping starts at the page boundary below (offset
    /// 0x49000). Go's own `pprof` (the one in Go's distribution, 1.19 among
    /// them) takes the load bias to be the mapping's start minus the code
    /// segment's address, which is then off by that segment's offset within
    /// its page (0xc20) and names the wrong functions. Moving the start and
    /// the file offset up to the segment's own (0x...4ac20, 0x49c20) keeps
    /// the mapping exact (the bytes skipped are the previous segment's tail,
    /// never code) and makes both computations right: Go's start minus the
    /// segment address, and the current pprof's start minus offset plus the
    /// segment's offset minus its address (`elfexec.GetBase`), which also
    /// picks the segment by the file offset. Mappings already starting at
    /// their segment (GNU ld, `-z separate-code`) are left as they are.
    pub(super) fn at_segment(&self, exec_offsets: &[u64]) -> Mapped {
        let span = self.limit.saturating_sub(self.start);
        let seg = exec_offsets
            .iter()
            .copied()
            .find(|&off| off > self.offset && off - self.offset < MAX_PAGE.min(span));
        let skip = seg.map_or(0, |off| off - self.offset);
        Mapped {
            start: self.start + skip,
            limit: self.limit,
            offset: self.offset + skip,
            path: self.path.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        let m = parse_maps_line(
            "55d0c8a00000-55d0c8b00000 r-xp 00001000 08:01 1234    /usr/bin/my app",
        )
        .unwrap();
        assert_eq!(
            (m.start, m.limit, m.offset),
            (0x55d0c8a00000, 0x55d0c8b00000, 0x1000)
        );
        assert_eq!(m.path, "/usr/bin/my app");
        assert!(parse_maps_line("7ffd1000-7ffd3000 r-xp 00000000 00:00 0    [vdso]").is_none());
        assert!(
            parse_maps_line("55d0c8a00000-55d0c8b00000 rw-p 00001000 08:01 1234 /usr/bin/app")
                .is_none()
        );
        assert!(parse_maps_line("garbage").is_none());
    }

    #[test]
    fn mappings_start_at_their_code_segment() {
        let m = Mapped {
            start: 0x5555_0004_a000,
            limit: 0x5555_0012_b000,
            offset: 0x49000,
            path: "/app".into(),
        };
        // rust-lld: code at file offset 0x49c20, address 0x4ac20.
        let at = m.at_segment(&[0x49c20]);
        assert_eq!(
            (at.start, at.limit, at.offset),
            (0x5555_0004_ac20, 0x5555_0012_b000, 0x49c20)
        );
        // Go's pprof: bias = start - segment address; the current one:
        // start - offset + segment offset - segment address. Both the
        // loader's bias (0x5555_0000_0000).
        assert_eq!(at.start - 0x4ac20, 0x5555_0000_0000);
        assert_eq!(at.start - at.offset + 0x49c20 - 0x4ac20, 0x5555_0000_0000);
        // Page-aligned code, or a segment of another mapping: unchanged.
        for segs in [&[0x49000][..], &[0x200000], &[]] {
            let same = m.at_segment(segs);
            assert_eq!((same.start, same.offset), (m.start, m.offset));
        }
    }

    #[test]
    fn build_id_of_a_non_elf_file_is_none() {
        assert_eq!(build_id("/proc/self/maps"), None);
        assert_eq!(build_id("/nonexistent/file"), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn own_binary_has_the_build_id_readelf_would_show() {
        // Oracle: the build id note read the naive way, by scanning the whole
        // file for the note header of a 20-byte GNU build id.
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let header = [4u32.to_le_bytes(), 20u32.to_le_bytes(), 3u32.to_le_bytes()].concat();
        let naive = data
            .windows(16)
            .position(|w| w[..12] == header[..] && &w[12..] == b"GNU\0")
            .map(|i| {
                data[i + 16..i + 36]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            });
        assert!(
            naive.is_some(),
            "the test binary has no GNU build id note; the linker dropped it?"
        );
        assert_eq!(build_id(&exe.display().to_string()), naive);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn truncated_or_corrupt_files_have_no_build_id() {
        let exe = std::env::current_exe().unwrap();
        let data = std::fs::read(&exe).unwrap();
        let dir = std::env::temp_dir().join(format!("leakscope-build-id-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The ELF header alone: the program headers lie past the end.
        let short = dir.join("short");
        std::fs::write(&short, &data[..64]).unwrap();
        assert_eq!(build_id(&short.display().to_string()), None);
        // A program header count no binary has.
        let mut bad = data[..4096].to_vec();
        bad[0x38..0x3a].copy_from_slice(&u16::MAX.to_le_bytes());
        let corrupt = dir.join("corrupt");
        std::fs::write(&corrupt, &bad).unwrap();
        assert_eq!(build_id(&corrupt.display().to_string()), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
