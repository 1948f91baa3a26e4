//! Path attribute lists: the input is the attribute field of an UPDATE that
//! also carries one IPv4 prefix, under caps picked by the first byte.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, attrs)) = data.split_first() else {
        return;
    };
    let attrs = &attrs[..attrs.len().min(4000)];
    let caps = common::caps_from(selector);
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    if caps
        .add_path_rx
        .contains(&bgpd::packet::AfiSafi::IPV4_UNICAST)
    {
        body.extend_from_slice(&[0, 0, 0, 1]);
    }
    body.extend_from_slice(&[24, 198, 18, 200]);
    common::check(&common::with_header(2, &body), &caps);
});
