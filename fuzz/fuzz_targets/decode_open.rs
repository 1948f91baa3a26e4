//! OPEN bodies (header made valid): optional parameters and capabilities.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let bytes = common::with_header(1, data);
    common::check(&bytes, &bgpd::packet::SessionCaps::default());
    if let Ok(Some((bgpd::packet::Message::Open(open), _))) =
        bgpd::packet::decode_message(&bytes, &bgpd::packet::SessionCaps::default())
    {
        // Negotiating against ourselves must not panic either.
        let _ = bgpd::packet::SessionCaps::negotiate(&open, &open);
        let _ = open.asn();
    }
});
