//! The dashboard as a person sees it: headless Chromium loads
//! `/debug/leakscope` from the built-in server; the DOM after load names the
//! leaking function and holds the chart's SVG, and a screenshot is written
//! (under the test's target directory) to look at.

#![cfg(feature = "http")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::http::{require, temp_dir};
use leakscope::{Monitor, MonitorConfig};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

static SESSIONS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The leak: a session table nobody evicts. Capped at 256 MiB (20 s of
/// growth), so a Chromium that hangs on a loaded machine does not let it
/// eat the machine's memory.
#[inline(never)]
fn grow_session_cache(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) && SESSIONS.lock().unwrap().len() < 512 {
        SESSIONS
            .lock()
            .unwrap()
            .push(std::hint::black_box(vec![7u8; 512 * 1024]));
        std::thread::sleep(Duration::from_millis(40));
    }
}

/// Headless Chromium with a fresh profile and nothing fetched on its own.
fn chromium(args: &[&str], url: &str) -> Output {
    require("chromium", "chromium");
    let profile = temp_dir("chromium-profile");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn screenshot_path() -> PathBuf {
    // Cargo's scratch directory for integration tests, inside `target/`.
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("leakscope-dashboard.png")
}

#[test]
fn chromium_renders_the_dashboard() {
    let monitor = Monitor::start(
        MonitorConfig::default()
            .interval(Duration::from_millis(250))
            .window(6)
            .min_growth_bytes(1 << 20),
    )
    .unwrap();
    let server = leakscope::http::serve("127.0.0.1:0").unwrap();
    let url = format!("http://{}/debug/leakscope", server.local_addr());
    // Before the first verdict (4 intervals, 1 s): "not judged yet", never a
    // bare "None" that reads as all clear.
    let early = common::http::get(server.local_addr(), "/debug/leakscope").text();
    if !monitor.status().judged() {
        assert!(
            early.contains("not judged yet: first verdict in "),
            "no status before the first verdict:\n{early}"
        );
    }
    assert!(!early.contains(">None"), "{early}");
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| leakscope::with_labels(&[("tenant", "acme")], || grow_session_cache(&stop)));
        // A full window, so the leak is a suspect by the time we look.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while monitor.suspects().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }

        let dom = String::from_utf8(chromium(&["--dump-dom"], &url).stdout).unwrap();
        assert!(
            dom.contains("grow_session_cache"),
            "the DOM does not name the leak:\n{dom}"
        );
        let svg_at = dom
            .find(r#"<svg id="live-bytes-chart""#)
            .unwrap_or_else(|| panic!("no chart SVG in the DOM:\n{dom}"));
        let svg = &dom[svg_at..];
        let svg = &svg[..svg.find("</svg>").expect("the chart SVG is closed")];
        assert!(svg.contains("<polyline"), "the chart draws no line:\n{svg}");
        assert!(
            svg.contains("grow_session_cache"),
            "the chart has no line for the leak:\n{svg}"
        );
        // The legend carries the site's labels; growth per label comes
        // from the monitor's window.
        let legend = &dom[dom.find(r#"class="legend""#).expect("a legend")..];
        let legend = &legend[..legend.find("</div>").unwrap_or(legend.len())];
        assert!(legend.contains("tenant=acme"), "{legend}");
        assert!(
            dom.contains("Growth over the growth monitor's window"),
            "{dom}"
        );
        let suspects = &dom[dom.find("Leak suspects").expect("a suspects section")..];
        let table_end = suspects.find("</table>").unwrap_or(0);
        assert!(
            suspects[..table_end].contains("grow_session_cache"),
            "the leak is not among the suspects:\n{dom}"
        );

        let shot = screenshot_path();
        let _ = std::fs::remove_file(&shot);
        chromium(
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1280,1600",
                "--hide-scrollbars",
            ],
            &url,
        );
        let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert!(
            png.len() > 20_000,
            "a blank screenshot? {} bytes",
            png.len()
        );
        println!("dashboard screenshot: {}", shot.display());
        stop.store(true, Ordering::Relaxed);
    });
    server.stop();
    monitor.stop();
}
