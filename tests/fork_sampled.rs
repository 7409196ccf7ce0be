//! Forked children never hang, in sampled mode (every 64 bytes on average, so most events are recorded): 200 forks while two threads
//! allocate at new stacks and a third takes snapshots; every child
//! allocates, frees the parent threads' blocks and takes a snapshot.
#![cfg(unix)]

#[path = "common/fork_stress.rs"]
mod fork_stress;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(64);

#[test]
fn two_hundred_forks_no_child_hangs() {
    let (hung, failed) = fork_stress::run(200, std::time::Duration::from_secs(5));
    assert_eq!(hung, 0, "hung children of 200");
    assert_eq!(failed, 0, "children of 200 that exited with an error");
}
