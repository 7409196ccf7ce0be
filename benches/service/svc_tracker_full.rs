//! Service benchmark variant: leakscope's default mode around `System`, with
//! the growth monitor and the HTTP endpoint running. See `service.rs` and
//! `benches/service.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

include!("profiler_full.rs");
include!("service.rs");
