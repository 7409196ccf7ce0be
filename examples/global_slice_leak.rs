//! The classic "global slice" leak, ported from Go: a global collection that a
//! loop keeps appending formatted strings to and never trims.
//!
//! ```text
//! cargo run --release --example global_slice_leak
//! ```
//!
//! The diff printed at the end names the stack through `generate_string` as
//! the top site, with its live bytes.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

/// The Go program's `globalSlice`.
static GLOBAL_SLICE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `fmt.Sprintf("String number %d", time.Now().UnixNano())`.
#[inline(never)]
fn generate_string() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("String number {nanos}")
}

/// Honest noise: temporary allocations that are freed right away.
#[inline(never)]
fn scratch_work(i: usize) -> usize {
    let words: Vec<String> = (0..4).map(|k| format!("tmp-{i}-{k}")).collect();
    let joined = words.join(",");
    black_box(joined.len())
}

fn main() {
    let iterations: usize = std::env::args()
        .skip_while(|a| a != "--iterations")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);

    let before = leakscope::snapshot();
    for i in 0..iterations {
        let s = generate_string();
        GLOBAL_SLICE.lock().unwrap_or_else(|e| e.into_inner()).push(s);
        black_box(scratch_work(i));
        if i % 100_000 == 0 {
            println!("Iteration: {i}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("Done.");
    let after = leakscope::snapshot();
    println!("\n{}", after.diff(&before));
    println!("tracker overhead: {} bytes", after.tracker_bytes());
}
