// What the `*_full` variants run beside the service: the growth monitor at
// the README's settings and the HTTP endpoint on `admin_port` (the load
// generator asks it for a heap profile once, mid-run).
fn profiler(admin_port: u16) -> impl Sized {
    let monitor = leakscope::Monitor::start(
        leakscope::MonitorConfig::default().interval(std::time::Duration::from_secs(10)),
    )
    .expect("monitor");
    let server = leakscope::http::serve(("127.0.0.1", admin_port)).expect("endpoint");
    (monitor, server)
}
