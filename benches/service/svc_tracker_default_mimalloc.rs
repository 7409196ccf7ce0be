//! Service benchmark variant: leakscope's default mode around mimalloc. See
//! `service.rs` and `benches/service.sh`.

#[global_allocator]
static GLOBAL: leakscope::Tracker<mimalloc::MiMalloc> = leakscope::Tracker::new(mimalloc::MiMalloc);

fn profiler(_admin_port: u16) -> impl Sized {}

include!("service.rs");
