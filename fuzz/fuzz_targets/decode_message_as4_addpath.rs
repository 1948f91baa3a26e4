//! Any bytes as a message stream, 4-octet AS + ADD-PATH (both families) +
//! extended messages negotiated.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    common::check(data, &common::caps_from(0x0f));
});
