//! The classic "global slice" leak, ported from Go: a global collection that a
//! loop keeps appending formatted strings to and never trims.
//!
//! ```text
//! cargo run --release --example global_slice_leak
//! cargo run --release --example global_slice_leak -- --iterations 200000 \
//!     --pprof heap.pb.gz --flamegraph leak.svg --collapsed leak.folded \
//!     --json leak.json --dhat dhat-heap.json
//! ```
//!
//! The diff printed at the end names the stack through `generate_string` as
//! the top site, with its live bytes; the retainers report after it names
//! what holds them: `static global_slice_leak::GLOBAL_SLICE`. Each `--FORMAT FILE` option also writes
//! that diff to FILE: `--pprof` (open with `go tool pprof -http=:8080 FILE`),
//! `--flamegraph` (an SVG, open in a browser), `--collapsed` (folded stacks),
//! `--json` (leakscope's schema) and `--dhat` (open in DHAT's `dh_view.html`).
//! The files are created before the run, so a bad path fails at once.

use std::fs::File;
use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

/// The Go program's `globalSlice`.
static GLOBAL_SLICE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `fmt.Sprintf("String number %d", time.Now().UnixNano())`.
#[inline(never)]
fn generate_string() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("String number {nanos}")
}

/// Honest noise: temporary allocations that are freed right away.
#[inline(never)]
fn scratch_work(i: usize) -> usize {
    let words: Vec<String> = (0..4).map(|k| format!("tmp-{i}-{k}")).collect();
    let joined = words.join(",");
    black_box(joined.len())
}

/// Writes a diff to a file in one format.
type Writer = fn(&leakscope::Diff, &mut File) -> Result<(), leakscope::Error>;

#[cfg_attr(
    all(feature = "pprof", feature = "flamegraph", feature = "json"),
    allow(dead_code)
)]
fn needs(flag: &str, feature: &str) -> String {
    format!(
        "{flag} needs the `{feature}` feature (on by default; was it built with --no-default-features?)"
    )
}

/// The writer behind a `--FORMAT` option. Formats whose cargo feature is off
/// are still recognised, to say which feature to turn on.
fn writer(flag: &str) -> Result<Writer, String> {
    match flag {
        "--collapsed" => Ok(|d, f| d.write_collapsed(f)),
        #[cfg(feature = "pprof")]
        "--pprof" => Ok(|d, f| d.write_pprof(f)),
        #[cfg(not(feature = "pprof"))]
        "--pprof" => Err(needs(flag, "pprof")),
        #[cfg(feature = "flamegraph")]
        "--flamegraph" => Ok(|d, f| d.write_flamegraph(f)),
        #[cfg(not(feature = "flamegraph"))]
        "--flamegraph" => Err(needs(flag, "flamegraph")),
        #[cfg(feature = "json")]
        "--json" => Ok(|d, f| d.write_json(f)),
        #[cfg(feature = "json")]
        "--dhat" => Ok(|d, f| d.write_dhat(f)),
        #[cfg(not(feature = "json"))]
        "--json" | "--dhat" => Err(needs(flag, "json")),
        _ => Err(format!("unknown option {flag}")),
    }
}

const USAGE: &str = "usage: global_slice_leak [--iterations N] [--pprof FILE] [--flamegraph FILE] \
                     [--collapsed FILE] [--json FILE] [--dhat FILE]";

/// The command line: the iteration count and the report files, created here
/// so that a bad path is reported before the run, not after it.
struct Args {
    iterations: usize,
    outputs: Vec<(String, File, Writer)>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        iterations: 1_000_000,
        outputs: Vec::new(),
    };
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        if flag == "--iterations" {
            args.iterations = value
                .parse()
                .map_err(|e| format!("--iterations {value}: {e}"))?;
            continue;
        }
        let write = writer(&flag)?;
        let file =
            File::create(&value).map_err(|e| format!("cannot create {value} for {flag}: {e}"))?;
        args.outputs.push((value, file, write));
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("error: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let before = leakscope::snapshot();
    for i in 0..args.iterations {
        let s = generate_string();
        GLOBAL_SLICE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s);
        black_box(scratch_work(i));
        if i % 100_000 == 0 {
            println!("Iteration: {i}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("Done.");
    let after = leakscope::snapshot();
    let diff = after.diff(&before);
    println!("\n{diff}");
    println!("tracker overhead: {} bytes", after.tracker_bytes());

    // Who holds it: a forked child scans the heap for pointers to the
    // sampled blocks and names the static they hang off.
    match leakscope::retainers() {
        Ok(held) => println!("\n{held}"),
        Err(e) => eprintln!("retainers: {e}"),
    }

    let mut status = ExitCode::SUCCESS;
    for (path, mut file, write) in args.outputs {
        match write(&diff, &mut file) {
            Ok(()) => println!("wrote {path}"),
            Err(e) => {
                eprintln!("error: writing {path}: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
