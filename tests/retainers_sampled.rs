//! `retainers()` in sampled mode (the default interval): a static `HashMap`
//! of 1 KiB values. Most values are not sampled, so the words pointing at
//! the sampled ones sit in memory that is not a recorded block; none of them
//! may be called unreachable, and the static that holds the map is named.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use leakscope::{RetainerOptions, Root};

#[global_allocator]
static GLOBAL: leakscope::Tracker = leakscope::Tracker::system();

static CACHE: Mutex<Option<HashMap<u64, Vec<u8>>>> = Mutex::new(None);

#[inline(never)]
fn value(i: u64) -> Vec<u8> {
    vec![i as u8; 1024]
}

#[inline(never)]
fn fill_cache() {
    let mut c = CACHE.lock().unwrap();
    // A table of several MiB: sampled for sure (the interval is 512 KiB), so
    // the static points straight at a sampled block.
    let map = c.get_or_insert_with(|| HashMap::with_capacity(1 << 17));
    for i in 0..40_000 {
        map.insert(i, value(i));
    }
}

#[test]
fn a_static_maps_values_are_all_reachable_and_the_static_is_named() {
    std::thread::spawn(fill_cache).join().unwrap();
    let snap = leakscope::snapshot();
    let values: Vec<u32> = snap
        .sites()
        .iter()
        .filter(|s| s.live_bytes() > 0 && s.frames().iter().any(|f| f.function().contains("value")))
        .map(|s| s.id())
        .collect();
    assert!(!values.is_empty(), "no value was sampled");
    let r = leakscope::retainers_with(RetainerOptions::new().min_age(Duration::ZERO)).unwrap();
    assert!(r.is_sampled());
    for &id in &values {
        let site = r.site(id).expect("the values' site");
        assert!(site.live_bytes() > 0);
        assert_eq!(site.unreachable_bytes(), 0, "{r}");
        assert_eq!(site.reachable_bytes(), site.live_bytes(), "{r}");
    }
    // The static is named, and the values' largest path starts there and
    // goes through the map's table (a sampled block).
    let cache = Root::Static {
        name: "retainers_sampled::CACHE".into(),
    };
    let text = r.to_string();
    assert!(text.contains("static retainers_sampled::CACHE"), "{text}");
    let site = r.site(values[0]).unwrap();
    let top = &site.paths()[0];
    assert_eq!(top.root(), &cache, "{text}");
    assert_eq!(top.via().len(), 1, "{text}");
    let table = r.site(top.via()[0]).unwrap();
    assert!(
        table
            .frames()
            .iter()
            .any(|f| f.function().contains("fill_cache"))
    );
    assert!(top.bytes() * 2 > site.live_bytes(), "{text}");
    black_box(&snap);
}
