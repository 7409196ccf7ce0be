//! A fork while another thread writes the process's first report never hangs
//! the child. What a report computes once per process or once per site (does
//! the binary have symbols, a site's frames) is computed by a thread that
//! releases the symbol lock between steps, and a fork's handlers take that
//! lock in the meantime: state left "being initialised" by a parent thread
//! stays so for ever in the child (a `OnceLock` did, and the child's own
//! first report waited on it).
//!
//! Once per process, so each try is a fresh process: this test runs its own
//! binary again, at several delays after the parent's first snapshot.
#![cfg(unix)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

const TRY: &str = "LEAKSCOPE_TEST_FIRST_REPORT_DELAY_US";

#[test]
fn a_fork_during_the_first_report_never_hangs_the_child() {
    if let Ok(delay) = std::env::var(TRY) {
        one_try(Duration::from_micros(delay.parse().unwrap()));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    // The window is the first report's symbolization: tens of milliseconds
    // from the snapshot on, on this kind of machine.
    for delay_us in (0..12).map(|i| i * 2_500) {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "a_fork_during_the_first_report_never_hangs_the_child",
                "--nocapture",
            ])
            .env(TRY, delay_us.to_string())
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "fork {delay_us} us after the first snapshot: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .find(|l| l.starts_with("child"))
                    .unwrap_or("failed")
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// One process: a thread takes the first snapshot and writes its report;
/// `delay` after the snapshot, this thread forks, and the child writes a
/// report of its own within the deadline.
fn one_try(delay: Duration) {
    static SNAPPED: AtomicBool = AtomicBool::new(false);
    let kept: Vec<Vec<u8>> = (0..64).map(|i| vec![1u8; 64 + i]).collect();
    let reporter = std::thread::spawn(|| {
        let snap = leakscope::snapshot();
        SNAPPED.store(true, Release);
        snap.to_string().len()
    });
    while !SNAPPED.load(Acquire) {
        std::hint::spin_loop();
    }
    std::thread::sleep(delay);
    // SAFETY: the child takes a snapshot and writes its report (what the
    // tracker promises a forked child may do), then leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = leakscope::snapshot().to_string().starts_with("Heap:");
        // SAFETY: ends the child at once, running no atexit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 2 }) };
    }
    let deadline = std::env::var("LEAKSCOPE_FORK_DEADLINE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_secs);
    let start = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: polls the child just forked.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            break;
        }
        if start.elapsed() > deadline {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            panic!("child hung for {deadline:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child exited with status {status:#x}"
    );
    reporter.join().unwrap();
    drop(kept);
}
