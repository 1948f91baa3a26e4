//! UPDATE bodies (header made valid) under caps picked by the first byte.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    common::check(&common::with_header(2, body), &common::caps_from(selector));
});
