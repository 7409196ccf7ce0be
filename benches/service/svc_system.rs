//! Service benchmark variant: `System` alone, the baseline. See `service.rs`
//! and `benches/service.sh`.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn profiler(_admin_port: u16) -> impl Sized {}

include!("service.rs");
