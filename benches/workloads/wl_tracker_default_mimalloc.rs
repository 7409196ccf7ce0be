//! Workload binary: leakscope around mimalloc, default sampling. See `workload.rs` and `benches/compare.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker<mimalloc::MiMalloc> = leakscope::Tracker::new(mimalloc::MiMalloc);

fn profiler() -> impl Sized {}

include!("workload.rs");
