// The service of the service benchmark (`benches/service.sh`), included by
// one bench binary per global allocator (`svc_*.rs`), as the `wl_*`
// workloads are: the allocator is chosen at compile time, so each variant is
// its own program. Each variant defines `GLOBAL` and `profiler(admin_port)`,
// which starts whatever runs beside the service (nothing, or leakscope's
// monitor and endpoint) and returns a value kept alive until exit.
//
// The handler allocates as a web handler does: axum parses the path and the
// query string, the handler looks the item up in a map, formats a JSON body,
// keeps a copy of it in a bounded cache (the oldest entries evicted), and
// returns the body. The service counts the `/item` requests it served and,
// on `/shutdown`, prints its own CPU time and resident size:
//
//     served=N user_us=U sys_us=S rss_kib=R maxrss_kib=M
//
// Usage: svc_<variant> <port> <admin_port>

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::Router;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Entries kept in the recent-responses cache: a healthy, bounded cache.
const CACHE_ENTRIES: usize = 2048;

struct App {
    catalog: HashMap<u64, String>,
    recent: Mutex<VecDeque<(u64, String)>>,
    served: AtomicU64,
    stop: tokio::sync::Notify,
}

async fn item(
    State(app): State<Arc<App>>,
    Path(id): Path<u64>,
    Query(query): Query<HashMap<String, String>>,
) -> String {
    let qty: u32 = query.get("qty").and_then(|q| q.parse().ok()).unwrap_or(1);
    let lang = query.get("lang").map_or("en", String::as_str);
    let name = app.catalog.get(&(id % 1000)).map_or("unknown", String::as_str);
    let tags: Vec<String> = (0..4).map(|i| format!("tag-{}-{i}", id % 7)).collect();
    let body = format!(
        "{{\"id\":{id},\"name\":\"{name}\",\"lang\":\"{lang}\",\"qty\":{qty},\"price\":{:.2},\"tags\":{tags:?}}}",
        (id % 1000) as f64 * 1.25 * f64::from(qty)
    );
    {
        let mut recent = app.recent.lock().unwrap();
        if recent.len() == CACHE_ENTRIES {
            recent.pop_front();
        }
        recent.push_back((id, body.clone()));
    }
    app.served.fetch_add(1, Ordering::Relaxed);
    body
}

async fn shutdown(State(app): State<Arc<App>>) -> &'static str {
    app.stop.notify_one();
    "bye\n"
}

fn resident_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page / 1024
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} <port> <admin_port> (run by benches/service.sh)", args[0]);
        return;
    }
    let port: u16 = args[1].parse().expect("port");
    let admin_port: u16 = args[2].parse().expect("admin port");
    let _profiler = profiler(admin_port);

    let app = Arc::new(App {
        catalog: (0..1000).map(|i| (i, format!("item number {i}"))).collect(),
        recent: Mutex::new(VecDeque::with_capacity(CACHE_ENTRIES)),
        served: AtomicU64::new(0),
        stop: tokio::sync::Notify::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let served_app = app.clone();
    runtime.block_on(async move {
        let router = Router::new()
            .route("/item/{id}", get(item))
            .route("/shutdown", get(shutdown))
            .with_state(served_app.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        println!("listening");
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { served_app.stop.notified().await })
            .await
            .expect("serve");
    });
    drop(runtime);

    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid rusage to write into.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    // SAFETY: zero-initialised, then filled by getrusage.
    let usage = unsafe { usage.assume_init() };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    println!(
        "served={} user_us={} sys_us={} rss_kib={} maxrss_kib={}",
        app.served.load(Ordering::Relaxed),
        us(usage.ru_utime),
        us(usage.ru_stime),
        resident_kib(),
        usage.ru_maxrss
    );
}
