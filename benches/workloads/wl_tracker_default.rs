//! Workload binary: leakscope, default sampling (512 KiB), backtrace unwinder. See `workload.rs` and `benches/compare.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

fn profiler() -> impl Sized {}

include!("workload.rs");
