//! Workload binary: leakscope, exact mode, backtrace unwinder. See `workload.rs` and `benches/compare.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

fn profiler() -> impl Sized {}

include!("workload.rs");
