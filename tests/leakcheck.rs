//! `assert_no_leaks` and `LeakCheck`, in exact mode (and once sampled).
//!
//! A leak check sees every thread of the process, so this file holds a
//! single `#[test]` that runs the scenarios one after another: with several
//! tests, the test harness spawning the next test's thread (or another test
//! allocating) inside a check would be reported, rightly, as a leak.
//! Nothing inside a passing check prints, since captured output is a buffer
//! that grows.

mod common;

use std::any::Any;
use std::hint::black_box;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::thread;

use common::settle;
use leakscope::{Frame, LeakCheck, Snapshot, assert_no_leaks};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

fn mentions(frames: &[Frame], name: &str) -> bool {
    frames.iter().any(|f| f.function().contains(name))
}

/// Live (bytes, allocations) of the sites whose stack goes through `name`.
fn held_by(snap: &Snapshot, name: &str) -> (u64, u64) {
    snap.sites()
        .iter()
        .filter(|s| mentions(s.frames(), name))
        .fold((0, 0), |(b, n), s| {
            (b + s.live_bytes(), n + s.live_allocs())
        })
}

/// The `String` payload of the panic `f` raises.
fn panic_report(f: impl FnOnce()) -> String {
    let payload: Box<dyn Any + Send> =
        panic::catch_unwind(AssertUnwindSafe(f)).expect_err("expected a leak report");
    *payload
        .downcast::<String>()
        .expect("the panic payload is a String")
}

#[inline(never)]
fn frees_everything() -> usize {
    let words: Vec<String> = (0..500).map(|i| format!("word-{i}")).collect();
    let mut map = std::collections::HashMap::new();
    for w in &words {
        map.insert(w.clone(), w.len());
    }
    let boxed: Box<[u64]> = vec![7; 10_000].into_boxed_slice();
    map.values().sum::<usize>() + boxed.len()
}

#[inline(never)]
fn frees_on_a_joined_thread() -> usize {
    let worker = thread::spawn(|| {
        let v: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        v.iter().map(String::len).sum::<usize>()
    });
    // Allocated here, freed there.
    let handoff = vec![1u8; 4096];
    let back = thread::spawn(move || handoff.len()).join().unwrap();
    worker.join().unwrap() + back
}

#[inline(never)]
fn leak_a_box() -> usize {
    let leaked: &'static mut [u8; 100] = Box::leak(Box::new([1u8; 100]));
    leaked.len()
}

static USERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Pushes into a static; returns the bytes of the new `String` block.
#[inline(never)]
fn remember_user(id: u32) -> usize {
    let name = format!("user-{id:04}");
    let bytes = name.capacity();
    USERS.lock().unwrap().push(name);
    bytes
}

#[inline(never)]
fn leak_on_a_worker() {
    thread::spawn(|| {
        Box::leak(vec![9u8; 512].into_boxed_slice());
    })
    .join()
    .unwrap();
}

#[inline(never)]
fn allocate_before() -> Vec<u8> {
    vec![1; 333]
}

#[inline(never)]
fn allocate_inside() -> Vec<u8> {
    vec![2; 444]
}

#[inline(never)]
fn leak_a_lot() {
    Box::leak(vec![3u8; 8 << 20].into_boxed_slice());
}

#[test]
fn leak_checks() {
    settle();
    passes_when_everything_is_freed();
    passes_with_joined_threads();
    check_keeps_only_blocks_allocated_inside();
    box_leak_fails_and_names_the_function();
    pushing_into_a_static_fails_and_names_the_function();
    a_leak_on_another_thread_is_found();
    sampled_reports_say_estimates();
}

fn passes_when_everything_is_freed() {
    let expected = frees_everything();
    assert_eq!(assert_no_leaks(frees_everything), expected);
    // The oracle: a check around the same code finds nothing either.
    let check = LeakCheck::start();
    black_box(frees_everything());
    let left = check.finish();
    assert_eq!(
        (left.live_bytes(), left.live_allocs(), left.sites().len()),
        (0, 0, 0),
        "{left}"
    );
}

fn passes_with_joined_threads() {
    // Warm up: the first spawn in a process initialises lazies that stay.
    let expected = frees_on_a_joined_thread();
    assert_eq!(assert_no_leaks(frees_on_a_joined_thread), expected);
}

fn check_keeps_only_blocks_allocated_inside() {
    let before = allocate_before();
    let check = LeakCheck::start();
    let inside = allocate_inside();
    let freed_inside = allocate_before(); // same site as `before`, freed again
    drop(freed_inside);
    let left = check.finish();
    assert_eq!(held_by(&left, "allocate_inside"), (444, 1));
    assert_eq!(
        held_by(&left, "allocate_before"),
        (0, 0),
        "blocks from before the check are not reported"
    );
    assert_eq!(left.live_bytes(), 444, "{left}");
    assert_eq!(left.sample_interval(), 1);
    drop((before, inside));
}

fn box_leak_fails_and_names_the_function() {
    let check = LeakCheck::start();
    leak_a_box();
    let left = check.finish();
    assert_eq!(held_by(&left, "leak_a_box"), (100, 1));
    assert_eq!(left.live_bytes(), 100, "{left}");

    let report = panic_report(|| {
        assert_no_leaks(leak_a_box);
    });
    assert!(report.contains("leakcheck::leak_a_box"), "{report}");
    assert!(report.contains("1 allocation (100 B)"), "{report}");
    assert!(report.contains("exact"), "{report}");
}

fn pushing_into_a_static_fails_and_names_the_function() {
    let check = LeakCheck::start();
    let strings: usize = (0..3).map(remember_user).sum();
    let left = check.finish();
    // Oracle: the three strings plus the vector's buffer, all at stacks
    // through `remember_user`.
    let buffer = USERS.lock().unwrap().capacity() * std::mem::size_of::<String>();
    assert_eq!(
        held_by(&left, "remember_user").0,
        (strings + buffer) as u64,
        "{left}"
    );
    assert_eq!(left.live_bytes(), (strings + buffer) as u64, "{left}");

    let report = panic_report(|| {
        assert_no_leaks(|| remember_user(99));
    });
    assert!(report.contains("leakcheck::remember_user"), "{report}");
    assert!(report.contains("still live"), "{report}");
    USERS.lock().unwrap().clear();
}

fn a_leak_on_another_thread_is_found() {
    let report = panic_report(leak_on_a_worker_checked);
    assert!(report.contains("leakcheck::leak_on_a_worker"), "{report}");
    assert!(report.contains("512 B"), "{report}");
}

fn leak_on_a_worker_checked() {
    assert_no_leaks(leak_on_a_worker);
}

fn sampled_reports_say_estimates() {
    leakscope::set_sample_interval(64 * 1024).unwrap();
    // 8 MiB is sampled with probability 1 - exp(-128): certainly.
    let report = panic_report(|| assert_no_leaks(leak_a_lot));
    leakscope::set_sample_interval(1).unwrap();
    assert!(report.contains("leakcheck::leak_a_lot"), "{report}");
    assert!(report.contains("estimates"), "{report}");
}
