//! A fork while another thread writes the process's first report never hangs
//! the child. What a report computes once per process or once per site (does
//! the binary have symbols, a site's frames) is computed by a thread that
//! releases the symbol lock between steps, and a fork's handlers take that
//! lock in the meantime: state left "being initialised" by a parent thread
//! stays so for ever in the child (a `OnceLock` did, and the child's own
//! first report waited on it).
//!
//! The same for the registration of the query side's fork handlers: a set
//! registered while a fork runs the other sets' `prepare` handlers (glibc
//! allows it) is left out of that fork, `child` included, so a lock of that
//! set taken meanwhile stays held in the child. A slow `prepare` handler of
//! another library widens that window to 50 ms.
//!
//! Once per process, so each try is a fresh process: these tests run their
//! own binary again.
#![cfg(unix)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

const TRY: &str = "LEAKSCOPE_TEST_FIRST_REPORT_DELAY_US";
const SLOW_TRY: &str = "LEAKSCOPE_TEST_SLOW_PREPARE";

/// Runs `test` of this binary again with `var` set to `value`; how it
/// failed, if it did.
fn try_in_new_process(test: &str, var: &str, value: &str) -> Option<String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env(var, value)
        .output()
        .unwrap();
    (!out.status.success()).then(|| {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .find(|l| l.starts_with("child"))
            .unwrap_or("failed")
            .to_string()
    })
}

#[test]
fn a_fork_during_the_first_report_never_hangs_the_child() {
    if let Ok(delay) = std::env::var(TRY) {
        one_try(Duration::from_micros(delay.parse().unwrap()));
        return;
    }
    let mut failures = Vec::new();
    // The window is the first report's symbolization: tens of milliseconds
    // from the snapshot on, on this kind of machine.
    for delay_us in (0..12).map(|i| i * 2_500) {
        let test = "a_fork_during_the_first_report_never_hangs_the_child";
        if let Some(how) = try_in_new_process(test, TRY, &delay_us.to_string()) {
            failures.push(format!(
                "fork {delay_us} us after the first snapshot: {how}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_first_query_during_a_slow_fork_never_hangs_the_child() {
    if std::env::var(SLOW_TRY).is_ok() {
        slow_prepare_try();
        return;
    }
    let test = "a_first_query_during_a_slow_fork_never_hangs_the_child";
    let failures: Vec<String> = (0..3)
        .filter_map(|_| try_in_new_process(test, SLOW_TRY, "1"))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Another library's `prepare` handler, registered before the process's
/// first query: slow, as one that flushes a buffer may be.
extern "C" fn slow_prepare() {
    std::thread::sleep(Duration::from_millis(50));
}

/// One process: the main thread forks, and while the fork waits for the
/// slow handler, another thread makes the process's first query (a
/// snapshot and its report). The child writes a report of its own.
fn slow_prepare_try() {
    let kept: Vec<Vec<u8>> = (0..64).map(|i| vec![1u8; 64 + i]).collect();
    // SAFETY: registers a handler that only sleeps; it never unwinds.
    unsafe { libc::pthread_atfork(Some(slow_prepare), None, None) };
    let reporter = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(10));
        leakscope::snapshot().to_string().len()
    });
    fork_and_check_child();
    reporter.join().unwrap();
    drop(kept);
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
    fork_and_check_child();
    reporter.join().unwrap();
    drop(kept);
}

/// Forks; the child writes a report within the deadline, or this panics.
fn fork_and_check_child() {
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
}
