//! Labelled tasks on a multi-threaded tokio runtime: each task awaits
//! between its allocations, so it is polled on whichever worker is free,
//! and every recorded allocation it makes must still carry its label.

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use leakscope::WithLabels;

mod common;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

const TASKS: usize = 8;
const STEPS: usize = 20;
const BLOCK: usize = 777;

static KEPT: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static THREADS: Mutex<Vec<(usize, std::thread::ThreadId)>> = Mutex::new(Vec::new());

#[inline(never)]
fn task_alloc() -> Vec<u8> {
    black_box(vec![0x5a_u8; BLOCK])
}

async fn task_body(n: usize) {
    for _ in 0..STEPS {
        let block = task_alloc();
        THREADS
            .lock()
            .unwrap()
            .push((n, std::thread::current().id()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        KEPT.lock().unwrap().push(block);
        tokio::task::yield_now().await;
    }
}

#[test]
fn labelled_tasks_keep_their_labels_across_workers() {
    KEPT.lock().unwrap().reserve_exact(TASKS * STEPS);
    THREADS.lock().unwrap().reserve_exact(TASKS * STEPS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let handles: Vec<_> = (0..TASKS)
            .map(|n| {
                let task = n.to_string();
                tokio::spawn(task_body(n).with_labels(&[("task", task.as_str())]))
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    });
    drop(rt);

    // The tasks did move: at least one ran on more than one worker.
    let threads = THREADS.lock().unwrap();
    let moved = (0..TASKS)
        .filter(|&n| {
            let set: HashSet<_> = threads.iter().filter(|t| t.0 == n).map(|t| t.1).collect();
            set.len() > 1
        })
        .count();
    assert!(moved > 0, "no task migrated between workers");

    let snap = leakscope::snapshot();
    let sites: Vec<_> = common::sites_through(&snap, "task_alloc").collect();
    // Every recorded allocation of `task_alloc` has a task label, one site
    // per task, each with exactly that task's blocks.
    for s in &sites {
        assert_eq!(
            s.labels().len(),
            1,
            "unlabelled task allocation: {:?}",
            s.labels()
        );
    }
    for n in 0..TASKS {
        let label = [("task".to_string(), n.to_string())];
        let bytes: u64 = sites
            .iter()
            .filter(|s| s.labels() == label)
            .map(|s| s.total_bytes())
            .sum();
        assert_eq!(bytes, (STEPS * BLOCK) as u64, "task {n}");
    }
    let by_task = snap.by_label("task");
    for n in 0..TASKS {
        let live = by_task
            .iter()
            .find(|(v, _)| *v == n.to_string())
            .map(|x| x.1);
        assert!(
            live >= Some((STEPS * BLOCK) as u64),
            "task {n}: {by_task:?}"
        );
    }
    // The workers themselves are unlabelled between polls.
    assert!(by_task.iter().any(|(v, _)| v.is_empty()));

    // The text report folds tokio's poll machinery into one line per run
    // and keeps the task's own frame; `{:#}` prints every frame.
    let text = format!("{snap}");
    let stack = &text[text.find("task_alloc (").expect("task_alloc in the report")..];
    let stack = &stack[..stack.find("\n\n").unwrap_or(stack.len())];
    assert!(stack.contains(" runtime frames\n"), "{stack}");
    assert!(!stack.contains("tokio::runtime"), "{stack}");
    let whole = format!("{snap:#}");
    assert!(
        whole.contains("tokio::runtime::"),
        "no tokio frames in {{:#}}"
    );
}
