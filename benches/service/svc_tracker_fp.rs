//! Service benchmark variant: leakscope's default mode around `System` with
//! the frame-pointer unwinder, for a service built with frame pointers
//! (`benches/service.sh` builds the `*_fp` rows with
//! `-C force-frame-pointers=yes`). See `service.rs`.

#[global_allocator]
static GLOBAL: leakscope::Tracker =
    leakscope::Tracker::system().unwinder(leakscope::Unwinder::FramePointers);

fn profiler(_admin_port: u16) -> impl Sized {}

include!("service.rs");
