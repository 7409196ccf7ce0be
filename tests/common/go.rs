//! `go tool pprof`, the real client the pprof tests read profiles with.

use std::io;
use std::path::Path;
use std::process::Command;

/// Runs `go tool pprof ARGS` (a URL or a file among them) and returns its
/// stdout. pprof gets a temporary directory of its own for what it fetches
/// and no local binaries to look for. Fails the test (never skips it) when Go
/// is not installed, or when pprof fails.
pub fn pprof(args: &[&str]) -> String {
    let home = tempfile::Builder::new()
        .prefix("leakscope-pprof-")
        .tempdir()
        .expect("a scratch directory for pprof");
    let out = Command::new("go")
        .args(["tool", "pprof"])
        .args(args)
        .env("PPROF_TMPDIR", home.path())
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "`go` is not on PATH: this test reads pprof profiles with `go tool pprof`. \
             Install Go (Debian/Ubuntu: `apt-get install -y golang-go`; scripts/test.sh does) \
             and run it again."
        ),
        Err(e) => panic!("could not run `go tool pprof`: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// [`pprof`] with `file` as the last argument.
pub fn pprof_file(args: &[&str], file: &Path) -> String {
    let file = file.to_str().expect("a UTF-8 temporary path");
    let mut all = args.to_vec();
    all.push(file);
    pprof(&all)
}
