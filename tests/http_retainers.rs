//! The dashboard's "Who holds it" section: a button until asked, then the
//! holders of a real retainer scan (a real fork), the static named.
#![cfg(all(feature = "http", target_os = "linux"))]

use std::sync::Mutex;

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system().sample_interval(1);

static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[test]
fn dashboard_names_the_holder_when_asked() {
    for _ in 0..64 {
        HELD.lock().unwrap().push(vec![7u8; 16 << 10]);
    }
    // Blocks younger than the minimum age are not judged.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let (status, _, body) = leakscope::http::respond("GET", "/debug/leakscope").into_parts();
    let page = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("<h2>Who holds it</h2>"), "{page}");
    assert!(
        page.contains("Find who holds the heap"),
        "no button before asking"
    );
    assert!(
        !page.contains("static http_retainers::HELD"),
        "scanned without being asked"
    );

    let (status, _, body) =
        leakscope::http::respond("GET", "/debug/leakscope?retainers=1").into_parts();
    let page = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    let section = &page[page.find("<h2>Who holds it</h2>").unwrap()..];
    assert!(
        section.contains("static http_retainers::HELD"),
        "the holder is not named: {section}"
    );
    assert!(section.contains("Unreachable"), "{section}");
}
