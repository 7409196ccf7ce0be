// The whole-program workloads of `benches/compare.sh`, shared by every
// `wl_*` binary; the binaries differ only in their global allocator.
//
// Included with `include!` by each variant file, which defines
// `fn profiler() -> impl Sized` (a guard kept alive while the workload runs:
// dhat-rs's `Profiler`, or `()`) and installs its `#[global_allocator]`.
//
// ```text
// wl_system <leak|churn|threads|json> [scale]
// ```
// prints `workload_ns=<n>`: the wall time of the workload alone (inputs are
// built first, the profiler's start-up and its report at exit are outside).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The seed example's global collection.
static SLICE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The seed leak loop: `n` formatted strings pushed into a global `Vec`.
#[inline(never)]
fn leak(n: usize) {
    for _ in 0..n {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let s = format!("String number {nanos}");
        SLICE.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
}

/// A cache-like map that keeps growing and shrinking: `n` operations on
/// 10 000 keys, pushing to a key's `Vec` and now and then evicting a key.
#[inline(never)]
fn churn(n: usize) {
    let mut map: HashMap<String, Vec<u64>> = HashMap::new();
    for i in 0..n {
        let key = format!("key-{}", (i * 7919) % 10_000);
        map.entry(key).or_default().push(i as u64);
        if i % 3 == 0 {
            let victim = format!("key-{}", (i * 104_729) % 10_000);
            black_box(map.remove(&victim));
        }
    }
    black_box(map.len());
}

/// Two threads allocating at once: each keeps a ring of 1024 small boxes and
/// replaces one per step (one allocation and one free per step).
#[inline(never)]
fn threads(n: usize) {
    let work = move |seed: u64| {
        let mut ring: Vec<Box<[u64; 4]>> = (0..1024).map(|i| Box::new([i; 4])).collect();
        for i in 0..n {
            ring[i % 1024] = black_box(Box::new([seed ^ i as u64; 4]));
        }
        black_box(ring.len());
    };
    let a = std::thread::spawn(move || work(1));
    let b = std::thread::spawn(move || work(2));
    a.join().unwrap();
    b.join().unwrap();
}

/// A JSON document of about `mib` MiB: an array of user records.
fn json_document(mib: usize) -> String {
    let mut doc = String::from("[");
    let mut i = 0u64;
    while doc.len() < mib << 20 {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(&format!(
            r#"{{"id":{i},"name":"user {i}","email":"user{i}@example.com","active":{},"score":{}.{},"tags":["alpha","beta","gamma{}"],"address":{{"street":"{} Main St","city":"Springfield","zip":"{:05}"}}}}"#,
            i.is_multiple_of(2),
            i % 100,
            i % 7,
            i % 13,
            i,
            i % 99_999
        ));
        i += 1;
    }
    doc.push(']');
    doc
}

/// Parses `doc` into a `serde_json::Value` and drops it, `reps` times.
#[inline(never)]
fn json(doc: &str, reps: usize) {
    for _ in 0..reps {
        let v: serde_json::Value = serde_json::from_str(doc).expect("valid JSON");
        black_box(&v);
        drop(v);
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(name) = args.first() else {
        eprintln!(
            "usage: {} <leak|churn|threads|json> [scale]; see benches/compare.sh",
            env!("CARGO_CRATE_NAME")
        );
        return;
    };
    let scale: Option<usize> = args.get(1).and_then(|s| s.parse().ok());
    // Inputs are built before the profiler starts.
    let doc = (name == "json").then(|| json_document(scale.unwrap_or(8)));
    let guard = profiler();
    let start = Instant::now();
    match name.as_str() {
        "leak" => leak(scale.unwrap_or(1_000_000)),
        "churn" => churn(scale.unwrap_or(2_000_000)),
        "threads" => threads(scale.unwrap_or(2_000_000)),
        "json" => json(doc.as_deref().unwrap_or_default(), 5),
        other => {
            eprintln!("unknown workload {other}");
            std::process::exit(2);
        }
    }
    let elapsed = start.elapsed();
    println!("workload_ns={}", elapsed.as_nanos());
    drop(guard);
    // dhat-rs variants write their report here; nothing else does.
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("leakscope-bench-dhat-{}.json", std::process::id())),
    );
}
