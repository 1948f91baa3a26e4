//! UPDATE and message-framing tests with hand-made byte vectors, each
//! citing the RFC section it checks.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

const MARKER: [u8; 16] = [0xff; 16];

fn msg(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = MARKER.to_vec();
    out.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    out.push(msg_type);
    out.extend_from_slice(body);
    out
}

fn update_body(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut b = (withdrawn.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(withdrawn);
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(nlri);
    b
}

fn caps4() -> SessionCaps {
    SessionCaps {
        four_octet_as: true,
        ..SessionCaps::default()
    }
}

fn decode_update(bytes: &[u8], caps: &SessionCaps) -> Result<Update, DecodeError> {
    match decode_message(bytes, caps)? {
        Some((Message::Update(u), n)) => {
            assert_eq!(n, bytes.len());
            Ok(u)
        }
        other => panic!("not an UPDATE: {other:?}"),
    }
}

fn encode(m: &Message, caps: &SessionCaps) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(m, caps, &mut out).unwrap();
    out
}

/// ORIGIN IGP, AS_PATH [65001] (4-octet), NEXT_HOP 198.18.200.1.
const BASE_ATTRS: [u8; 21] = [
    0x40, 1, 1, 0, //
    0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9, //
    0x40, 3, 4, 198, 18, 200, 1, // placeholder octet replaced in tests that append
    0,
];

fn base_attrs() -> Vec<u8> {
    BASE_ATTRS[..20].to_vec()
}

const NLRI_10_1_2: [u8; 4] = [24, 10, 1, 2];

// RFC 4271 §4.3: a plain IPv4 UPDATE decodes and re-encodes byte for byte.
#[test]
fn ipv4_update_round_trip() {
    let mut attrs = base_attrs();
    attrs.extend_from_slice(&[0xc0, 8, 4, 0xfd, 0xe9, 0, 100]); // COMMUNITIES 65001:100
    let bytes = msg(2, &update_body(&[16, 10, 9], &attrs, &NLRI_10_1_2));
    let u = decode_update(&bytes, &caps4()).unwrap();
    assert!(!u.treat_as_withdraw);
    assert_eq!(u.origin(), Some(Origin::Igp));
    assert_eq!(u.as_path().unwrap().to_string(), "65001");
    assert_eq!(u.next_hop(), Some(Ipv4Addr::new(198, 18, 200, 1)));
    assert_eq!(u.communities(), &[0xfde9_0064]);
    assert_eq!(u.withdrawn[0].prefix, "10.9.0.0/16".parse().unwrap());
    assert_eq!(encode(&Message::Update(u), &caps4()), bytes);
}

// RFC 4724 §2: End-of-RIB markers.
#[test]
fn end_of_rib_markers() {
    let v4 = Update::end_of_rib(AfiSafi::IPV4_UNICAST);
    assert_eq!(
        encode(&Message::Update(v4.clone()), &caps4()),
        msg(2, &[0, 0, 0, 0])
    );
    let v6 = Update::end_of_rib(AfiSafi::IPV6_UNICAST);
    let bytes = encode(&Message::Update(v6), &caps4());
    assert_eq!(bytes, msg(2, &[0, 0, 0, 6, 0x80, 15, 3, 0, 2, 1]));
    let back = decode_update(&bytes, &caps4()).unwrap();
    assert_eq!(back.is_end_of_rib(), Some(AfiSafi::IPV6_UNICAST));
    assert_eq!(v4.is_end_of_rib(), Some(AfiSafi::IPV4_UNICAST));
}

// RFC 4760 §3, RFC 2545 §3: IPv6 MP_REACH with global + link-local next hop.
#[test]
fn mp_reach_ipv6_round_trip() {
    let mut attrs = base_attrs()[..13].to_vec(); // ORIGIN, AS_PATH
    let mut reach = vec![0, 2, 1, 32];
    reach.extend_from_slice(
        &"fd42:18:200::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    reach.extend_from_slice(&"fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    reach.push(0);
    reach.extend_from_slice(&[64, 0xfd, 0x42, 0, 0x18, 0x02, 0x10, 0, 0]);
    attrs.extend_from_slice(&[0x80, 14, reach.len() as u8]);
    attrs.extend_from_slice(&reach);
    let bytes = msg(2, &update_body(&[], &attrs, &[]));
    let u = decode_update(&bytes, &caps4()).unwrap();
    assert!(
        !u.treat_as_withdraw,
        "NEXT_HOP is not needed for MP_REACH only"
    );
    let r = u.mp_reach().unwrap();
    assert_eq!(r.family, AfiSafi::IPV6_UNICAST);
    assert_eq!(r.next_hops.len(), 2);
    assert_eq!(r.nlri[0].prefix, "fd42:18:210::/64".parse().unwrap());
    assert_eq!(encode(&Message::Update(u), &caps4()), bytes);
}

// RFC 4271 §4.3: attributes over 255 octets use the extended-length flag;
// a received extended-length flag on a short attribute is kept.
#[test]
fn extended_length_flag() {
    let communities: Vec<u32> = (0..100).collect();
    let u = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::from_sequence(vec![65001])),
            PathAttribute::NextHop(Ipv4Addr::new(198, 18, 200, 1)),
            PathAttribute::Communities(communities),
        ],
        nlri: vec![Nlri::new("10.1.2.0/24".parse().unwrap())],
        ..Update::default()
    };
    let bytes = encode(&Message::Update(u.clone()), &caps4());
    let at = 19 + 4 + 20;
    assert_eq!(&bytes[at..at + 4], &[0xd0, 8, 1, 144]);
    assert_eq!(decode_update(&bytes, &caps4()).unwrap(), u);

    let mut attrs = base_attrs();
    attrs[0] = 0x50; // ORIGIN with extended length
    attrs.splice(2..3, [0, 1]);
    let bytes = msg(2, &update_body(&[], &attrs, &NLRI_10_1_2));
    let u = decode_update(&bytes, &caps4()).unwrap();
    assert_eq!(u.attribute_flags, vec![(1, 0x50)]);
    assert_eq!(encode(&Message::Update(u), &caps4()), bytes);
}

// RFC 7606 §3.d: missing well-known attribute with NLRI → treat-as-withdraw.
#[test]
fn missing_next_hop_is_treat_as_withdraw() {
    let attrs = &base_attrs()[..13];
    let bytes = msg(2, &update_body(&[], attrs, &NLRI_10_1_2));
    let u = decode_update(&bytes, &caps4()).unwrap();
    assert!(u.treat_as_withdraw);
    assert!(u.announcements().is_empty());
    assert_eq!(u.withdrawals().len(), 1, "the NLRI must be withdrawn");
    assert!(matches!(
        u.validate_mandatory(),
        Err(DecodeError::MissingWellKnownAttribute { type_code: 3 })
    ));
}

// RFC 7606 §7.1: bad ORIGIN value; §7.2: malformed AS_PATH; §7.8: bad
// COMMUNITIES length → treat-as-withdraw, NLRI still parsed.
#[test]
fn malformed_attribute_contents_are_treat_as_withdraw() {
    let cases: [(usize, &[u8]); 3] = [
        (3, &[7]), // ORIGIN value 7
        (7, &[0]), // AS_PATH segment type 2 → count 0 at [8]? see below
        (0, &[]),  // COMMUNITIES of 3 octets (appended)
    ];
    for (i, (at, patch)) in cases.iter().enumerate() {
        let mut attrs = base_attrs();
        match i {
            0 => attrs[*at] = patch[0],
            1 => attrs[8] = 0, // AS_PATH segment length 0 (§7.2)
            _ => attrs.extend_from_slice(&[0xc0, 8, 3, 1, 2, 3]),
        }
        let bytes = msg(2, &update_body(&[], &attrs, &NLRI_10_1_2));
        let u = decode_update(&bytes, &caps4()).unwrap();
        assert!(u.treat_as_withdraw, "case {i}");
        assert_eq!(u.nlri.len(), 1, "case {i}: NLRI still parsed");
    }
}

// RFC 7606 §7.6, §7.7: bad ATOMIC_AGGREGATE / AGGREGATOR are discarded.
#[test]
fn malformed_aggregator_is_discarded() {
    let mut attrs = base_attrs();
    attrs.extend_from_slice(&[0x40, 6, 1, 0]); // ATOMIC_AGGREGATE of length 1
    attrs.extend_from_slice(&[0xc0, 7, 6, 0, 1, 1, 2, 3, 4]); // 2-octet form on 4-octet session
    let bytes = msg(2, &update_body(&[], &attrs, &NLRI_10_1_2));
    let u = decode_update(&bytes, &caps4()).unwrap();
    assert!(!u.treat_as_withdraw);
    assert_eq!(u.attributes.len(), 3);
}

// RFC 7606 §3.g: duplicates keep the first; MP_REACH twice resets (3/1).
#[test]
fn duplicate_attributes() {
    let mut attrs = base_attrs();
    attrs.extend_from_slice(&[0x40, 1, 1, 2]); // second ORIGIN
    let u = decode_update(&msg(2, &update_body(&[], &attrs, &NLRI_10_1_2)), &caps4()).unwrap();
    assert_eq!(u.origin(), Some(Origin::Igp));
    assert!(!u.treat_as_withdraw);

    let unreach = [0x80, 15, 3, 0, 2, 1];
    let mut attrs = unreach.to_vec();
    attrs.extend_from_slice(&unreach);
    let err = decode_update(&msg(2, &update_body(&[], &attrs, &[])), &caps4()).unwrap_err();
    assert_eq!(err.notification().subcode, notif::MALFORMED_ATTRIBUTE_LIST);
}

// RFC 4271 §6.3: unrecognized well-known attribute → 3/2 with the attribute.
#[test]
fn unknown_well_known_attribute_resets() {
    let mut attrs = base_attrs();
    attrs.extend_from_slice(&[0x40, 99, 1, 5]);
    let err =
        decode_update(&msg(2, &update_body(&[], &attrs, &NLRI_10_1_2)), &caps4()).unwrap_err();
    let n = err.notification();
    assert_eq!((n.code, n.subcode, n.data), (3, 2, vec![0x40, 99, 1, 5]));
}

// RFC 4271 §5 / §9: unknown optional transitive kept with Partial set;
// unknown optional non-transitive dropped.
#[test]
fn unknown_optional_attributes() {
    let mut attrs = base_attrs();
    attrs.extend_from_slice(&[0xc0, 99, 2, 5, 6]);
    attrs.extend_from_slice(&[0x80, 98, 1, 7]);
    let u = decode_update(&msg(2, &update_body(&[], &attrs, &NLRI_10_1_2)), &caps4()).unwrap();
    assert_eq!(
        u.attributes.last(),
        Some(&PathAttribute::Unknown {
            flags: 0xe0,
            code: 99,
            data: vec![5, 6]
        })
    );
    let out = encode(&Message::Update(u), &caps4());
    assert_eq!(&out[out.len() - 9..out.len() - 4], &[0xe0, 99, 2, 5, 6]);
}

// RFC 7606 §4: an attribute overrunning the attribute field →
// treat-as-withdraw, NLRI located by the total attribute length.
#[test]
fn attribute_overrun_is_treat_as_withdraw() {
    let mut attrs = base_attrs();
    attrs.extend_from_slice(&[0xc0, 8, 200, 1, 2, 3, 4]);
    let u = decode_update(&msg(2, &update_body(&[], &attrs, &NLRI_10_1_2)), &caps4()).unwrap();
    assert!(u.treat_as_withdraw);
    assert_eq!(u.nlri.len(), 1);
}

// RFC 4271 §6.3, RFC 7606 §5.3: unparseable NLRI → 3/10; lengths that
// overrun the message → 3/1.
#[test]
fn framing_errors_reset() {
    let err = decode_update(
        &msg(2, &update_body(&[], &base_attrs(), &[33, 1, 2, 3, 4, 5])),
        &caps4(),
    )
    .unwrap_err();
    assert_eq!(err.notification().subcode, notif::INVALID_NETWORK_FIELD);
    let err = decode_update(&msg(2, &[0, 9, 0, 0]), &caps4()).unwrap_err();
    assert_eq!(err.notification().subcode, notif::MALFORMED_ATTRIBUTE_LIST);
    let err = decode_update(&msg(2, &[0, 0, 0, 9]), &caps4()).unwrap_err();
    assert_eq!(err.notification().subcode, notif::MALFORMED_ATTRIBUTE_LIST);
}

// RFC 7606 §7.11: an MP_REACH next-hop length that hides the NLRI resets.
#[test]
fn mp_reach_bad_next_hop_length_resets() {
    let mut attrs = base_attrs()[..13].to_vec();
    attrs.extend_from_slice(&[0x80, 14, 8, 0, 2, 1, 3, 1, 2, 3, 0]);
    let err = decode_update(&msg(2, &update_body(&[], &attrs, &[])), &caps4()).unwrap_err();
    assert_eq!(err.notification().subcode, notif::OPTIONAL_ATTRIBUTE_ERROR);
}

// RFC 7606 §3.c: O/T flags conflicting with a known attribute →
// treat-as-withdraw (here ORIGIN sent as optional).
#[test]
fn flag_conflict_is_treat_as_withdraw() {
    let mut attrs = base_attrs();
    attrs[0] = 0xc0;
    let u = decode_update(&msg(2, &update_body(&[], &attrs, &NLRI_10_1_2)), &caps4()).unwrap();
    assert!(u.treat_as_withdraw);
}

// RFC 6793 §4.2.2: to a 2-octet peer, AS_TRANS in AS_PATH and the real
// path in AS4_PATH; §4.2.3: the receiver merges them back.
#[test]
fn as4_path_for_two_octet_peers() {
    let two = SessionCaps::default();
    let u = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::from_sequence(vec![4_200_000_002, 65001])),
            PathAttribute::NextHop(Ipv4Addr::new(198, 18, 200, 2)),
            PathAttribute::Aggregator {
                asn: 4_200_000_002,
                address: Ipv4Addr::new(198, 18, 200, 2),
            },
        ],
        nlri: vec![Nlri::new("10.20.0.0/24".parse().unwrap())],
        ..Update::default()
    };
    let bytes = encode(&Message::Update(u.clone()), &two);
    let body = &bytes[19 + 4..];
    // AS_PATH: one sequence [23456, 65001].
    assert_eq!(&body[4..13], &[0x40, 2, 6, 2, 2, 0x5b, 0xa0, 0xfd, 0xe9]);
    // AS4_PATH right after it with the real path.
    assert_eq!(&body[13..16], &[0xc0, 17, 10]);
    let back = decode_update(&bytes, &two).unwrap();
    assert_eq!(back.as_path(), u.as_path());
    assert!(matches!(
        back.attribute(attr_type::AGGREGATOR),
        Some(PathAttribute::Aggregator {
            asn: 4_200_000_002,
            ..
        })
    ));
    // Re-encoding the decoded form gives the same bytes (markers kept).
    assert_eq!(encode(&Message::Update(back.clone()), &two), bytes);
    // To a 4-octet peer the AS4_* attributes are left out.
    let four = decode_update(&encode(&Message::Update(back), &caps4()), &caps4()).unwrap();
    assert_eq!(four.attributes.len(), 4);
}

// RFC 7911 §3: path ids only in the negotiated direction.
#[test]
fn add_path_direction() {
    let mut caps = caps4();
    caps.add_path_tx.insert(AfiSafi::IPV4_UNICAST);
    let u = Update {
        withdrawn: vec![Nlri {
            path_id: Some(9),
            prefix: "10.1.0.0/16".parse().unwrap(),
        }],
        ..Update::default()
    };
    let bytes = encode(&Message::Update(u.clone()), &caps);
    assert_eq!(&bytes[19..28], &[0, 7, 0, 0, 0, 9, 16, 10, 1]);
    assert_eq!(decode_update(&bytes, &caps.reversed()).unwrap(), u);
    // Without rx ADD-PATH the same bytes are a different (bad) prefix list.
    assert!(decode_update(&bytes, &caps).is_err());
}

// RFC 4271 §6.1: marker, length and type checks.
#[test]
fn header_errors() {
    let caps = SessionCaps::default();
    let mut bad = msg(4, &[]);
    bad[3] = 0;
    assert_eq!(
        decode_message(&bad, &caps),
        Err(DecodeError::ConnectionNotSynchronized)
    );
    let mut long = msg(4, &[]);
    long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    assert_eq!(
        decode_message(&long, &caps),
        Err(DecodeError::BadMessageLength { length: 5000 })
    );
    assert_eq!(
        decode_message(&msg(4, &[0]), &caps),
        Err(DecodeError::BadMessageLength { length: 20 })
    );
    assert_eq!(
        decode_message(&msg(9, &[]), &caps),
        Err(DecodeError::BadMessageType { msg_type: 9 })
    );
    // Partial input: need more bytes.
    let ka = msg(4, &[]);
    assert_eq!(decode_message(&ka[..10], &caps), Ok(None));
    let upd = msg(2, &[0, 0, 0, 0]);
    assert_eq!(decode_message(&upd[..20], &caps), Ok(None));
    assert_eq!(
        decode_message(&ka, &caps),
        Ok(Some((Message::Keepalive, 19)))
    );
}

// RFC 8654 §4: extended messages only when negotiated, never for OPEN.
#[test]
fn extended_message_limits() {
    let big = Update {
        withdrawn: (0..2000u32)
            .map(|i| {
                Nlri::new(
                    Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i << 8))), 24).unwrap(),
                )
            })
            .collect(),
        ..Update::default()
    };
    let mut out = vec![1, 2, 3];
    let err = encode_message(&Message::Update(big.clone()), &caps4(), &mut out).unwrap_err();
    assert!(matches!(err, EncodeError::MessageTooLong { max: 4096, .. }));
    assert_eq!(out, [1, 2, 3], "buffer restored on error");
    let ext = SessionCaps {
        extended_message: true,
        ..caps4()
    };
    let bytes = encode(&Message::Update(big.clone()), &ext);
    assert!(bytes.len() > 4096);
    assert_eq!(decode_update(&bytes, &ext).unwrap(), big);
    assert!(matches!(
        decode_message(&bytes, &caps4()),
        Err(DecodeError::BadMessageLength { .. })
    ));
}

// RFC 2918 §3, RFC 7313 §3.2 and §5.
#[test]
fn route_refresh() {
    let caps = SessionCaps::default();
    let rr = Message::RouteRefresh(RouteRefresh {
        family: AfiSafi::IPV6_UNICAST,
        subtype: RouteRefresh::BORR,
    });
    let bytes = encode(&rr, &caps);
    assert_eq!(&bytes[16..], &[0, 23, 5, 0, 2, 1, 1]);
    assert_eq!(decode_message(&bytes, &caps), Ok(Some((rr, 23))));
    let err = decode_message(&msg(5, &[0, 1, 0, 1, 0]), &caps).unwrap_err();
    let n = err.notification();
    assert_eq!((n.code, n.subcode), (7, 1));
}

// RFC 4271 §4.5 + RFC 8203.
#[test]
fn notification_round_trip() {
    let caps = SessionCaps::default();
    let n = Message::Notification(Notification::cease_shutdown("bye"));
    let bytes = encode(&n, &caps);
    assert_eq!(&bytes[18..], &[3, 6, 2, 3, b'b', b'y', b'e']);
    assert_eq!(decode_message(&bytes, &caps), Ok(Some((n, 25))));
}

// RFC 4271 §4.2: OPEN through the message layer; several messages in one
// buffer are consumed one at a time.
#[test]
fn open_and_stream_decoding() {
    let caps = SessionCaps::default();
    let open = Open::new(
        65001,
        90,
        Ipv4Addr::new(198, 18, 200, 1),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::FourOctetAs(65001),
        ],
    );
    let mut stream = encode(&Message::Open(open.clone()), &caps);
    encode_message(&Message::Keepalive, &caps, &mut stream).unwrap();
    let (first, n) = decode_message(&stream, &caps).unwrap().unwrap();
    assert_eq!(first, Message::Open(open));
    let (second, m) = decode_message(&stream[n..], &caps).unwrap().unwrap();
    assert_eq!((second, n + m), (Message::Keepalive, stream.len()));
}
