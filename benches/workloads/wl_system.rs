//! Workload binary: the system allocator alone (the baseline). See `workload.rs` and `benches/compare.sh`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn profiler() -> impl Sized {}

include!("workload.rs");
