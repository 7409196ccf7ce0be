//! Workload binary: leakscope around mimalloc, exact mode, frame-pointer unwinder. See `workload.rs` and `benches/compare.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker<mimalloc::MiMalloc> = leakscope::Tracker::new(mimalloc::MiMalloc)
    .sample_interval(1)
    .unwinder(leakscope::Unwinder::FramePointers);

fn profiler() -> impl Sized {}

include!("workload.rs");
