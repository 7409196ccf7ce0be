//! Workload binary: dhat-rs heap profiling with full stacks (trim_backtraces(None)). See `workload.rs` and `benches/compare.sh`.

#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

fn profiler() -> impl Sized {
    // Its report goes to a scratch file, written after the timed workload.
    let file =
        std::env::temp_dir().join(format!("leakscope-bench-dhat-{}.json", std::process::id()));
    dhat::Profiler::builder()
        .trim_backtraces(None)
        .file_name(file)
        .build()
}

include!("workload.rs");
