//! Service benchmark variant: leakscope's default mode around mimalloc, with
//! the growth monitor and the HTTP endpoint running. See `service.rs` and
//! `benches/service.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker<mimalloc::MiMalloc> = leakscope::Tracker::new(mimalloc::MiMalloc);

include!("profiler_full.rs");
include!("service.rs");
