//! Service benchmark variant: mimalloc alone, the baseline of the mimalloc
//! rows. See `service.rs` and `benches/service.sh`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn profiler(_admin_port: u16) -> impl Sized {}

include!("service.rs");
