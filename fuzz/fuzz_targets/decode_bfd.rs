//! BFD Control packets (RFC 5880 §4.1): any datagram decodes or is
//! refused, a decoded one re-encodes to the bytes it came from (its first
//! 24), and feeding it to a session never panics.
#![no_main]

use bgpd::bfd::{Config, ControlPacket, Input, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = ControlPacket::decode(data) else {
        return;
    };
    assert_eq!(&p.encode()[..4], &[data[0], data[1], data[2], 24][..4]);
    assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
    let mut s = Session::new(Config::new(1));
    for input in [
        Input::Received(p),
        Input::TxTimer,
        Input::Received(p),
        Input::DetectTimer,
    ] {
        let _ = s.process(input);
    }
});
