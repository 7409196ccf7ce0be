//! Release builds as users ship them, which the test binaries here are not:
//! `tests/fixtures/leaky_app`, built with `cargo build --release` and
//! `debug = "line-tables-only"`, **without frame pointers** (while this
//! repository's `.cargo/config.toml` turns them on), run as built and as a
//! stripped copy. It leaks a known number of bytes in `leak_here`, in exact
//! mode with `Unwinder::FramePointers`, and prints its reports. Its second
//! binary, `named`, leaks in closures and an `async fn`, whose names the
//! debug info gives without their paths.
//!
//! The fixture is built once per test binary (both tests wait for the same
//! build) into `target/fixtures`, so later runs only rebuild what changed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use object::{Object, ObjectSection};

/// The fixture's release binary, built on first use.
fn fixture() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/leaky_app");
        let target = target_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // Built from its own directory: cargo reads `.cargo/config.toml`
        // from there upwards, so this repository's config (frame pointers
        // on) applies to it, and an explicit RUSTFLAGS is what replaces
        // every config's `rustflags`. CARGO_ENCODED_RUSTFLAGS would take
        // precedence over RUSTFLAGS: a parent cargo must not pass its own.
        let rustflags = format!(
            "-C force-frame-pointers=no -C link-arg=-B{} -C link-arg=-fuse-ld=lld",
            toolchain_lld_dir().display()
        );
        let out = Command::new(cargo)
            .current_dir(&dir)
            .args(["build", "--release", "--target-dir"])
            .arg(&target)
            .env("RUSTFLAGS", rustflags)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("could not run cargo to build tests/fixtures/leaky_app");
        assert!(
            out.status.success(),
            "building tests/fixtures/leaky_app failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("release").join("leaky_app")
    })
}

/// The toolchain's own lld, as `cc -fuse-ld=lld` finds it (`gcc-ld/ld.lld`
/// in the sysroot).
///
/// The fixture is linked as a rustup toolchain links by default on x86-64
/// Linux since Rust 1.90: with that lld, whose layout (the code segment
/// mid-page, a page above its file offset) is the one pprof's base address
/// computation must get right. Named explicitly, because a `linker = "gcc"`
/// in some cargo config above the checkout (a CI image's, say) silently
/// switches rustc back to GNU ld, whose layout is the easy one; and the
/// opt-in flags (`-C linker-features=+lld`) are unstable.
fn toolchain_lld_dir() -> PathBuf {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("could not run rustc --print sysroot");
    assert!(out.status.success(), "rustc --print sysroot failed");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let dir = sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld");
    assert!(
        dir.join("ld.lld").exists(),
        "{} has no ld.lld: this test links its fixture with the toolchain's own lld, the \
         default linker of rustup's x86-64 Linux toolchains since Rust 1.90, which ship it \
         beside rustc; install the toolchain with rustup",
        dir.display()
    );
    dir
}

/// `target/fixtures`, next to the target directory's `tmp`.
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("fixtures")
}

/// The fixture's `retainers_top=<root> <retained bytes>` line.
fn retainers_top(stdout: &str) -> (String, i64) {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("retainers_top="))
        .unwrap_or_else(|| panic!("no retainers_top line:\n{stdout}"));
    let (root, bytes) = line.rsplit_once(' ').unwrap_or((line, "0"));
    (root.to_string(), bytes.parse().unwrap_or(0))
}

/// Runs `binary`, which writes its pprof profile to `pprof`; returns stdout
/// and stderr after checking it succeeded.
fn run(binary: &Path, pprof: &Path) -> (String, String) {
    let out = Command::new(binary)
        .arg(pprof)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", binary.display()));
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "{} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        binary.display(),
        out.status
    );
    (stdout, stderr)
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of a `key=value` line of the fixture's output.
fn value(stdout: &str, key: &str) -> i64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= line in:\n{stdout}"))
}

/// The text report of the diff: from its header to the snapshot's.
fn diff_report(stdout: &str) -> &str {
    let start = stdout
        .find("Heap change:")
        .unwrap_or_else(|| panic!("no diff report in:\n{stdout}"));
    let rest = &stdout[start..];
    &rest[..rest.find("\nHeap: ").unwrap_or(rest.len())]
}

/// Runs `go tool pprof ARGS`; fails the test (never skips it) when Go is
/// not installed.
fn go_pprof(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        // No binaries from elsewhere, no symbolization server.
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`go` is not on PATH: this test symbolizes a stripped binary's profile with \
             `go tool pprof`. Install Go (Debian/Ubuntu: `apt-get install -y golang-go`, or \
             scripts/test.sh) and run it again."
        ),
        Err(e) => panic!("could not run `go tool pprof`: {e}"),
    };
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// The first mapping line of `go tool pprof -raw` (the main binary).
fn main_mapping(profile: &Path) -> String {
    let raw = go_pprof(&["-raw".as_ref(), profile.as_os_str()]);
    raw.split("Mappings\n")
        .nth(1)
        .and_then(|m| m.lines().next())
        .unwrap_or_else(|| panic!("no mappings in:\n{raw}"))
        .to_string()
}

/// The file offset and address of an ELF file's executable `PT_LOAD`
/// segment.
fn code_segment(path: &Path) -> (u64, u64) {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = ElfFile64::<object::Endianness>::parse(&*data)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let endian = file.endian();
    file.elf_program_headers()
        .iter()
        .find(|ph| {
            ph.p_type(endian) == object::elf::PT_LOAD
                && ph.p_flags(endian).contains(object::elf::PF_X)
        })
        .map(|ph| (ph.p_offset(endian), ph.p_vaddr(endian)))
        .unwrap_or_else(|| panic!("{} has no code segment", path.display()))
}

/// The GNU build id of an ELF file, and whether it has a symbol table.
fn build_id_and_symtab(path: &Path) -> (Vec<u8>, bool) {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = object::File::parse(&*data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let id = file
        .build_id()
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{} has no GNU build id", path.display()))
        .to_vec();
    let symtab = file
        .section_by_name(".symtab")
        .is_some_and(|s| s.size() > 0);
    (id, symtab)
}

#[test]
fn without_frame_pointers_the_unwinder_falls_back_and_warns_once() {
    let binary = fixture();
    let pprof = target_dir().join("no-frame-pointers.pb.gz");
    let (stdout, stderr) = run(binary, &pprof);
    println!("{stdout}");

    // The leak is found whole: the API's site through `leak_here` holds
    // exactly the bytes leaked (no `<no frames>` site took them).
    assert_eq!(
        value(&stdout, "site_bytes"),
        value(&stdout, "expected_bytes"),
        "{stdout}"
    );
    let report = diff_report(&stdout);
    assert!(
        report.contains("leak_here"),
        "the report does not name leak_here:\n{report}"
    );
    assert!(!report.contains("<no frames>"), "{report}");

    // One warning, however many snapshots and reports followed (the fixture
    // takes three snapshots and prints four reports).
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("force-frame-pointers=yes"))
        .collect();
    assert_eq!(warnings.len(), 1, "stderr:\n{stderr}");
    assert!(
        warnings[0].starts_with("WARN "),
        "not at warn level: {}",
        warnings[0]
    );
    // And every report header says so.
    let notes = stdout
        .lines()
        .filter(|l| l.starts_with("Note: built without frame pointers"))
        .count();
    assert_eq!(notes, 4, "{stdout}");
    // The holder of the leak is named from the symbol table.
    let top = retainers_top(&stdout);
    assert!(
        top.0 == "static leaky_app::KEPT" && top.1 >= value(&stdout, "expected_bytes"),
        "{stdout}"
    );
    // This binary has its symbols: no note about that.
    assert!(!stdout.contains("no symbols"), "{stdout}");
}

#[test]
fn a_stripped_binary_is_symbolized_later_by_go_pprof() {
    let binary = fixture();
    let stripped = target_dir().join("leaky_app-stripped");
    let out = Command::new("objcopy")
        .arg("--strip-all")
        .arg(binary)
        .arg(&stripped)
        .output();
    match out {
        Ok(out) => assert!(
            out.status.success(),
            "objcopy --strip-all failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "could not run `objcopy` ({e}): this test strips a binary with it. Install \
             binutils (Debian/Ubuntu: `apt-get install -y binutils`) and run it again."
        ),
    }
    // Linked as users link: the toolchain's default linker (rust-lld on
    // x86-64 Linux) puts the code segment right after the read-only data,
    // at an address a page above its file offset and, for most code sizes,
    // mid-page (`report/maps.rs` tests that case on its own): what pprof's
    // base address computations must get right from the profile's mapping.
    let (offset, vaddr) = code_segment(binary);
    assert_ne!(
        offset, vaddr,
        "the code segment's file offset is its address: this test is meant for the default \
         linker's layout, where they differ"
    );
    let (id, symtab) = build_id_and_symtab(binary);
    let (stripped_id, stripped_symtab) = build_id_and_symtab(&stripped);
    assert_eq!(stripped_id, id, "objcopy changed the build id");
    assert!(
        symtab && !stripped_symtab,
        "symbol tables: {symtab}, stripped {stripped_symtab}"
    );

    let profile = target_dir().join("stripped.pb.gz");
    let (stdout, _) = run(&stripped, &profile);
    println!("{stdout}");
    let report = diff_report(&stdout);
    // Every report and export worked (the fixture exits non-zero on an
    // error; `run` checks that) and wrote a well-formed file.
    for name in ["diff", "snapshot"] {
        for ext in ["folded", "svg", "json", "dhat.json"] {
            let path = format!("{}.{name}.{ext}", profile.display());
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            if ext.ends_with("json") {
                let v: Result<serde_json::Value, _> = serde_json::from_slice(&bytes);
                assert!(v.is_ok(), "{path} is not JSON");
            }
            if ext == "svg" {
                assert!(
                    bytes.starts_with(b"<?xml") || bytes.starts_with(b"<svg"),
                    "{path}"
                );
            }
        }
    }
    assert!(
        report.contains("Note: this binary has no symbols"),
        "the stripped binary's report does not say so:\n{report}"
    );
    assert!(
        !report.contains("leak_here"),
        "symbols in a stripped binary?\n{report}"
    );

    // The profile claims no functions for the binary, and carries none:
    // without the unstripped binary, pprof has no name for the leak...
    let mapping = main_mapping(&profile);
    assert!(
        !mapping.contains("[FN]") && mapping.contains("leaky_app-stripped"),
        "{mapping}"
    );
    // Without symbols, the holder is named by module and offset.
    let top = retainers_top(&stdout);
    assert!(
        top.0.starts_with("static leaky_app-stripped+0x"),
        "{stdout}"
    );
    assert!(top.1 >= value(&stdout, "expected_bytes"), "{stdout}");
    let alone = go_pprof(&["-top".as_ref(), profile.as_os_str()]);
    assert!(!alone.contains("leak_here"), "{alone}");
    // ...and with it, pprof names the leaking function.
    let top = go_pprof(&[
        "-top".as_ref(),
        "-unit=B".as_ref(),
        binary.as_os_str(),
        profile.as_os_str(),
    ]);
    println!("{top}");
    let row = top
        .lines()
        .find(|l| {
            l.split_whitespace()
                .last()
                .is_some_and(|f| f.ends_with("leak_here"))
        })
        .unwrap_or_else(|| panic!("go tool pprof with the binary does not name leak_here:\n{top}"));
    let leaked = value(&stdout, "expected_bytes");
    assert!(
        row.split_whitespace().any(|c| c == format!("{leaked}B")),
        "leak_here's cumulative bytes are not the {leaked} leaked:\n{top}"
    );

    // The unstripped binary's own profile is symbolized in the process, and
    // its mapping says so. (Not `[LN]`: line tables leave a few addresses of
    // optimized code without a line, and the flag holds only for all.)
    let symbolized = target_dir().join("unstripped.pb.gz");
    run(binary, &symbolized);
    let mapping = main_mapping(&symbolized);
    assert!(mapping.contains("[FN][FL]"), "{mapping}");
}

/// Whether a frame's name has a path: `a::b`, `<T as a::Tr>::f`, or a
/// frame named by its enclosing function (`{closure#0} in a::f`).
fn has_path(name: &str) -> bool {
    let head = name.split('<').next().unwrap_or(name);
    head.contains("::") || name.starts_with('<') || name.contains(" in ")
}

#[test]
fn line_tables_only_names_closures_and_async_fns_with_their_paths() {
    // The fixture's second binary (`src/bin/named.rs`), from the same build.
    let binary = fixture().with_file_name("named");
    let profile = target_dir().join("named.pb.gz");
    let (stdout, _) = run(&binary, &profile);
    println!("{stdout}");

    // Each leak's owner, as the API names it, with its whole path.
    let owners: Vec<(&str, i64)> = stdout
        .lines()
        .filter_map(|l| {
            let (owner, bytes) = l.strip_prefix("owner=")?.split_once("\tbytes=")?;
            Some((owner, bytes.parse().ok()?))
        })
        .collect();
    const MIB: i64 = 1 << 20;
    for (owner, bytes) in [
        ("named::tenants::remember::{closure#0}", MIB),
        ("named::sessions::open::{closure#0}", 2 * MIB),
        ("named::handler::handle_request::{async_fn#0}", 3 * MIB),
    ] {
        assert!(
            owners.contains(&(owner, bytes)),
            "no site of {bytes} bytes owned by {owner}: {owners:?}\n{stdout}"
        );
    }
    // Symbolizing read and parsed the binary's debug info (about 50 MiB
    // resident when kept); what stays is the frame cache and symbol tables.
    let growth = value(&stdout, "rss_growth_kib");
    assert!(
        growth < 8 * 1024,
        "the first snapshot left {growth} KiB more resident\n{stdout}"
    );
    // Every Rust frame of those stacks has a path (C's, such as libc's, have
    // none to give).
    for line in stdout.lines().filter_map(|l| l.strip_prefix("frame=")) {
        let (name, file) = line.split_once('\t').unwrap_or((line, ""));
        assert!(
            !file.ends_with(".rs") || has_path(name),
            "a frame without its path: {line}\n{stdout}"
        );
    }
    // The text report too: no bare closure or coroutine name in it.
    let report = &stdout[stdout.find("Heap: ").expect("no report")..];
    for bare in [" {closure#", " {async_fn#", "({closure#"] {
        assert!(!report.contains(bare), "{bare} in:\n{report}");
    }

    // pprof keeps the two closures apart: two functions, each with its bytes.
    let top = go_pprof(&["-top".as_ref(), "-unit=B".as_ref(), profile.as_os_str()]);
    println!("{top}");
    for (function, bytes) in [
        ("named::tenants::remember::{closure#0}", MIB),
        ("named::sessions::open::{closure#0}", 2 * MIB),
        ("named::handler::handle_request::{async_fn#0}", 3 * MIB),
    ] {
        let row = top
            .lines()
            .find(|l| l.contains(function))
            .unwrap_or_else(|| panic!("no {function} row in:\n{top}"));
        assert!(
            row.split_whitespace().next() == Some(&format!("{bytes}B")),
            "{function} does not hold {bytes} bytes flat:\n{top}"
        );
    }
    assert!(
        !top.lines().any(|l| l.trim_end().ends_with("  {closure#0}")),
        "a bare closure in pprof:\n{top}"
    );

    // The same binary stripped, its profile symbolized later with the
    // unstripped one: a second layout of the default linker's (this code
    // size puts the code segment mid-page today). Go's symbolizer names
    // real functions only, from the debug info: `with_labels` holds the
    // labelled closure's MiB.
    let stripped = target_dir().join("named-stripped");
    let out = Command::new("objcopy")
        .arg("--strip-all")
        .arg(&binary)
        .arg(&stripped)
        .output()
        .expect("could not run objcopy (binutils)");
    assert!(out.status.success(), "objcopy --strip-all failed");
    let later = target_dir().join("named-stripped.pb.gz");
    run(&stripped, &later);
    let top = go_pprof(&[
        "-top".as_ref(),
        "-unit=B".as_ref(),
        binary.as_os_str(),
        later.as_os_str(),
    ]);
    println!("{top}");
    let row = top
        .lines()
        .find(|l| l.split_whitespace().last() == Some("with_labels"))
        .unwrap_or_else(|| {
            panic!("go tool pprof with the binary does not name with_labels:\n{top}")
        });
    assert!(
        row.split_whitespace().any(|c| c == format!("{MIB}B")),
        "with_labels does not hold the labelled MiB:\n{top}"
    );
}
