//! Workload binary: leakscope with an interval so large that nothing is ever
//! sampled: the common path alone (countdown on alloc, magic test on free),
//! without the noise that random samples add. See `workload.rs` and
//! `benches/compare.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1 << 62);

fn profiler() -> impl Sized {}

include!("workload.rs");
