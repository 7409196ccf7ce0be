//! Service benchmark variant: leakscope's default mode around `System`, no
//! monitor, no endpoint. See `service.rs` and `benches/service.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

fn profiler(_admin_port: u16) -> impl Sized {}

include!("service.rs");
