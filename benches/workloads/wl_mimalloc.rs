//! Workload binary: mimalloc alone (the baseline of the mimalloc variants). See `workload.rs` and `benches/compare.sh`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn profiler() -> impl Sized {}

include!("workload.rs");
