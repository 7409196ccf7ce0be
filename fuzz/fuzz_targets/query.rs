//! Query strings (and symbol request bodies) as the routes parse them:
//! any string is a valid query or a 400, never a panic, and a valid one
//! keeps Go's rules (checked inside `query`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let query = String::from_utf8_lossy(data);
    let status = leakscope::http::fuzz::query(&query);
    assert!(status == 200 || status == 400, "status {status}");
});
