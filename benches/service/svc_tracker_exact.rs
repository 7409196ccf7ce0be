//! Service benchmark variant: leakscope in exact mode (every allocation
//! recorded) around `System`. See `service.rs` and `benches/service.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

fn profiler(_admin_port: u16) -> impl Sized {}

include!("service.rs");
