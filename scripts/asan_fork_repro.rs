//! AddressSanitizer's fork hang, without leakscope: the evidence behind the
//! fork tests' `quarantine_size_mb=0` in scripts/sanitizers.sh (RELIABILITY.md,
//! "Checking it"). Plain Rust, the System allocator (ASan's `malloc` under the
//! sanitizer), no dependency:
//!
//! ```sh
//! mkdir -p target/asan_fork_repro
//! RUSTC_BOOTSTRAP=1 rustc --edition 2024 -Zsanitizer=address -g -C force-frame-pointers=yes \
//!     --target x86_64-unknown-linux-gnu -o target/asan_fork_repro/repro scripts/asan_fork_repro.rs
//! ASAN_OPTIONS=detect_leaks=0 target/asan_fork_repro/repro 200                    # some hang
//! ASAN_OPTIONS=detect_leaks=0:quarantine_size_mb=0 target/asan_fork_repro/repro 200  # none
//! ```
//!
//! Three threads allocate and free; the main thread forks; each child frees
//! more than ASan's thread-local quarantine holds (1 MiB), so its free drains
//! into the global quarantine and takes its lock, which ASan's fork handler
//! does not hold across the fork: when a parent thread held it at the fork,
//! the child spins for ever. A child alive after 10 s is hung: its stack is
//! printed (with gdb, if installed) and it is killed.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

unsafe extern "C" {
    fn fork() -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn _exit(code: i32) -> !;
    fn kill(pid: i32, sig: i32) -> i32;
}

const WNOHANG: i32 = 1;
const SIGKILL: i32 = 9;

static STOP: AtomicBool = AtomicBool::new(false);

/// Allocates and frees blocks of 16..4016 bytes until told to stop.
fn churn(seed: usize) {
    let mut i = seed;
    let mut keep: Vec<Vec<u8>> = Vec::with_capacity(64);
    while !STOP.load(Relaxed) {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = vec![1u8; 16 + (i >> 40) % 4000];
        if keep.len() < 64 {
            keep.push(v)
        } else {
            keep[(i >> 20) % 64] = v
        }
    }
}

fn main() {
    let forks: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let deadline = Duration::from_secs(10);
    let workers: Vec<_> = (0..3)
        .map(|t| std::thread::spawn(move || churn(t * 7919 + 1)))
        .collect();
    let mut hung = 0;
    let start_all = Instant::now();
    for round in 0..forks {
        // SAFETY: the child only allocates, frees and leaves with `_exit`.
        let pid = unsafe { fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // About 6 MB freed, 1000..2000 bytes at a time.
            for k in 0..4000 {
                black_box(vec![0u8; 1000 + k % 1000]);
            }
            // SAFETY: ends the child at once.
            unsafe { _exit(0) };
        }
        let start = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: polls our own child.
            if unsafe { waitpid(pid, &mut status, WNOHANG) } == pid {
                break;
            }
            if start.elapsed() > deadline {
                hung += 1;
                eprintln!("round {round}: child {pid} hung");
                if let Ok(out) = std::process::Command::new("gdb")
                    .args(["-p", &pid.to_string(), "-batch", "-ex", "bt"])
                    .output()
                {
                    let text = String::from_utf8_lossy(&out.stdout);
                    for l in text.lines().filter(|l| l.starts_with('#')).take(8) {
                        eprintln!("  {l}");
                    }
                }
                // SAFETY: kills and reaps our own child.
                unsafe {
                    kill(pid, SIGKILL);
                    waitpid(pid, &mut status, 0);
                }
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    STOP.store(true, Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    println!("forks {forks}, hung {hung}, in {:?}", start_all.elapsed());
}
