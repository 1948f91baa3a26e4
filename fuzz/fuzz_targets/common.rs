//! Shared checks for every fuzz target: decoding never panics, and what
//! decodes re-encodes into something that decodes to a fixed point.
#![allow(dead_code)] // each target uses a subset

use std::collections::BTreeSet;

use bgpd::packet::{AfiSafi, EncodeError, HEADER_LEN, SessionCaps, decode_message, encode_message};

/// Session caps picked by one input byte: 4-octet AS, extended messages and
/// ADD-PATH per family each on or off.
pub fn caps_from(selector: u8) -> SessionCaps {
    let mut add_path_rx = BTreeSet::new();
    if selector & 4 != 0 {
        add_path_rx.insert(AfiSafi::IPV4_UNICAST);
    }
    if selector & 8 != 0 {
        add_path_rx.insert(AfiSafi::IPV6_UNICAST);
    }
    SessionCaps {
        four_octet_as: selector & 1 != 0,
        extended_message: selector & 2 != 0,
        add_path_rx,
        ..SessionCaps::default()
    }
}

/// Wrap `body` in a header of type `msg_type` (length clamped to 16 bits).
pub fn with_header(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let body = &body[..body.len().min(usize::from(u16::MAX) - HEADER_LEN)];
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    out.push(msg_type);
    out.extend_from_slice(body);
    out
}

/// Decode; if it decodes, encode as the peer would (caps reversed) and check
/// that our own encoding decodes, and that one more round is a fixed point
/// (the first round may normalise, e.g. merge AS4_PATH or drop malformed
/// attributes under RFC 7606).
pub fn check(bytes: &[u8], caps: &SessionCaps) {
    let Ok(Some((first, used))) = decode_message(bytes, caps) else {
        return;
    };
    assert!(used <= bytes.len());
    let sender = caps.reversed();
    let mut b1 = Vec::new();
    match encode_message(&first, &sender, &mut b1) {
        Ok(()) => {}
        // Normalisation (a derived AS4_PATH) can make it longer.
        Err(EncodeError::MessageTooLong { .. }) => return,
        Err(e) => panic!("decoded message does not encode: {e}: {first:?}"),
    }
    let (m2, _) = decode_message(&b1, caps)
        .unwrap_or_else(|e| panic!("our encoding does not decode: {e}: {first:?}"))
        .expect("complete message");
    let mut b2 = Vec::new();
    if encode_message(&m2, &sender, &mut b2).is_err() {
        return;
    }
    let (m3, _) = decode_message(&b2, caps)
        .expect("second encoding decodes")
        .expect("complete message");
    assert_eq!(m2, m3, "decode/encode is not a fixed point");
    let mut b3 = Vec::new();
    encode_message(&m3, &sender, &mut b3).expect("third encoding");
    assert_eq!(b2, b3, "encoding is not deterministic");
}
