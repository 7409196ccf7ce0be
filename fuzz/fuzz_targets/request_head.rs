//! The request head as the built-in server reads it: any bytes are a whole
//! head, a partial one or a 4xx, never a panic; and a head that parses
//! whole is only partial (never an error) cut anywhere before its end, as
//! the event loop sees it arrive a few bytes at a time.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = leakscope::http::fuzz::request_head(data);
    if let Ok(Some(len)) = whole {
        assert!(len <= data.len());
        // A cut chosen by the data itself, before the end of the head.
        let cut = data.first().map_or(0, |&b| b as usize) * len / 256;
        if cut > 0 && cut < len {
            let part = leakscope::http::fuzz::request_head(&data[..cut]);
            assert!(
                part == Ok(None),
                "a prefix of {cut} of a {len}-byte head parsed whole: {part:?}"
            );
        }
    }
    if let Err(status) = whole {
        assert!((400..500).contains(&status), "status {status}");
    }
});
