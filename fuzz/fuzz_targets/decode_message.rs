//! Any bytes as a message stream, default (pre-OPEN) session caps.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    common::check(data, &bgpd::packet::SessionCaps::default());
});
