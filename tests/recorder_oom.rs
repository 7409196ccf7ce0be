//! The recorder at the edge of memory and against a corrupted heap, each in a
//! child process (this test binary run again with `LEAKSCOPE_CHILD` set):
//! - under an address-space limit (`setrlimit(RLIMIT_AS)`), `try_reserve` at
//!   new stacks returns `Err` and the process lives: the tracker's own
//!   allocations (the site table's copy of a new stack) are fallible too;
//! - a recorded block whose header links were overwritten makes its free
//!   abort with a message naming the corruption, instead of writing through
//!   the forged links.

use std::hint::black_box;
use std::process::Command;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system()
    .sample_interval(1)
    .unwinder(leakscope::Unwinder::FramePointers);

/// Runs the test named `child` in a fresh process of this binary, as the
/// child `what`.
fn run_child(child: &str, what: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env("LEAKSCOPE_CHILD", what)
        .output()
        .unwrap()
}

fn is_child(what: &str) -> bool {
    std::env::var("LEAKSCOPE_CHILD").is_ok_and(|v| v == what)
}

/// One of `2^depth` distinct stacks, picked by the bits of `path`; tries to
/// reserve `size` bytes there.
#[inline(never)]
fn step(path: u64, depth: u32, size: usize) -> Result<Vec<u8>, ()> {
    if depth == 0 {
        let mut v = Vec::new();
        return v
            .try_reserve_exact(size)
            .map(|()| black_box(v))
            .map_err(|_| ());
    }
    if path & 1 == 0 {
        left(path >> 1, depth - 1, size)
    } else {
        right(path >> 1, depth - 1, size)
    }
}

#[inline(never)]
fn left(path: u64, depth: u32, size: usize) -> Result<Vec<u8>, ()> {
    black_box(step(path, depth, size))
}

#[inline(never)]
fn right(path: u64, depth: u32, size: usize) -> Result<Vec<u8>, ()> {
    black_box(step(path, depth, size))
}

/// The process's virtual size, from /proc/self/statm.
fn vm_size() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[test]
fn child_out_of_memory() {
    if !is_child("oom") {
        return;
    }
    // Everything printed later is allocated now (stdout's buffer).
    println!("child: limiting the address space");
    // In a forked grandchild: its only thread is this one. (Here, the test
    // harness's main thread would allocate too, unrecorded and infallibly,
    // when it starts waiting for this test's result: an abort of std's, not
    // of ours.)
    // SAFETY: the grandchild runs only this function's code and leaves
    // with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        exhaust_memory();
        // SAFETY: ends the grandchild without running the harness's exit.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the grandchild just forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the grandchild died: status {status:#x}"
    );
}

fn exhaust_memory() {
    let limit = vm_size() + (64 << 20);
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: sets this (child) process's own limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    // Fill the address space, from big reservations down to small ones,
    // each at a new stack (so each is a new site while memory lasts).
    let mut hold: Vec<Vec<u8>> = Vec::new();
    if hold.try_reserve(1 << 16).is_err() {
        panic!("no room for the list");
    }
    let mut path = 0u64;
    let mut size = 16usize << 20;
    while size >= 16 {
        loop {
            path += 1;
            if hold.len() == hold.capacity() {
                break;
            }
            match step(path, 16, size) {
                Ok(v) => hold.push(v),
                Err(()) => break,
            }
        }
        size /= 2;
    }
    // Now memory is exhausted: small reservations at new stacks fail, and
    // must fail as `Err`.
    let mut errs = 0;
    for _ in 0..2000 {
        path += 1;
        if step(path, 16, 24).is_err() {
            errs += 1;
        }
    }
    let held = hold.len();
    drop(hold);
    println!("child: survived, {held} blocks held, {errs} of 2000 new-stack reservations refused");
}

#[test]
fn try_reserve_at_new_stacks_fails_with_err_not_an_abort() {
    if std::env::var_os("LEAKSCOPE_CHILD").is_some() {
        return;
    }
    let out = run_child("child_out_of_memory", "oom");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child died: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("child: survived"))
        .unwrap_or_else(|| panic!("no verdict from the child:\n{stdout}\n{stderr}"));
    let errs: u32 = line
        .split(", ")
        .nth(2)
        .and_then(|w| w.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable verdict: {line}"));
    assert!(errs > 0, "memory was never exhausted: {line}");
}

#[test]
fn child_corrupted_links() {
    if !is_child("corrupt") {
        return;
    }
    let a = black_box(Box::new([1u8; 40]));
    let b = black_box(Box::new([2u8; 40]));
    let p = Box::into_raw(a) as *mut u8 as usize;
    // Simulated heap corruption (what a buffer overflow into the header, or
    // a block freed by C's `free()` and reused, does): the block's `prev`
    // link, the first word of the 48-byte header below it, now points at
    // the block itself, whose `next` does not point back. This write is
    // outside the block on purpose.
    // SAFETY: none in the abstract machine's terms; it is the corruption
    // under test, confined to this child process, which must abort before
    // anything reads it in a way that matters.
    unsafe { std::ptr::write_volatile((p - 48) as *mut usize, p) };
    // SAFETY: `p` came from `Box::into_raw` just above.
    drop(unsafe { Box::from_raw(p as *mut [u8; 40]) });
    drop(b);
    println!("child: the corrupted free returned");
}

#[test]
fn a_corrupted_live_list_aborts_with_a_message() {
    if std::env::var_os("LEAKSCOPE_CHILD").is_some() {
        return;
    }
    let out = run_child("child_corrupted_links", "corrupt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "expected an abort: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("leakscope: corrupted live list"),
        "no message naming the corruption:\n{stderr}"
    );
    assert!(!stdout.contains("returned"));
}
