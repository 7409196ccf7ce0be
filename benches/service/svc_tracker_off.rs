//! Service benchmark variant: leakscope with an interval so large that
//! nothing is sampled (the common path alone). See `service.rs` and
//! `benches/service.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1 << 62);

fn profiler(_admin_port: u16) -> impl Sized {}

include!("service.rs");
