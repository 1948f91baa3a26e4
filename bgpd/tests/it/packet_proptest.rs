//! Property tests: for every message kind, encode → decode gives the value
//! back and encode(decode(bytes)) gives the bytes back (RFC 4271 §4 wire
//! forms, RFC 4760, RFC 6793, RFC 7911, RFC 8654); generated UPDATEs also
//! decode the same with `bgp-rs`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgpd::packet::*;
use proptest::prelude::*;

use crate::packet_support;

fn v4_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u32>(), 0u8..=32).prop_map(|(bits, len)| {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Prefix::new(IpAddr::V4(Ipv4Addr::from(bits & mask)), len).unwrap()
    })
}

fn v6_prefix() -> impl Strategy<Value = Prefix> {
    (any::<u128>(), 0u8..=128).prop_map(|(bits, len)| {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        Prefix::new(IpAddr::V6(Ipv6Addr::from(bits & mask)), len).unwrap()
    })
}

fn nlri_list(
    prefix: impl Strategy<Value = Prefix>,
    add_path: bool,
    max: usize,
) -> impl Strategy<Value = Vec<Nlri>> {
    prop::collection::vec((prefix, any::<u32>()), 0..max).prop_map(move |v| {
        v.into_iter()
            .map(|(prefix, id)| Nlri {
                path_id: add_path.then_some(id),
                prefix,
            })
            .collect()
    })
}

fn unicast_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("usable next hop", |ip| {
            !ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast()
        })
}

fn unicast_v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>()
        .prop_map(Ipv6Addr::from)
        .prop_filter("usable next hop", |ip| {
            !ip.is_unspecified() && !ip.is_multicast()
        })
}

fn as_path(asn: impl Strategy<Value = u32> + Clone, confed: bool) -> impl Strategy<Value = AsPath> {
    let segment = (
        0u8..if confed { 4 } else { 2 },
        prop::collection::vec(asn, 1..8),
    )
        .prop_map(|(kind, asns)| match kind {
            0 => AsSegment::Sequence(asns),
            1 => AsSegment::Set(asns),
            2 => AsSegment::ConfedSequence(asns),
            _ => AsSegment::ConfedSet(asns),
        });
    prop::collection::vec(segment, 0..4).prop_map(|segments| AsPath { segments })
}

/// Optional attributes besides the mandatory three, any subset, any order.
fn optional_attributes(
    two_octet_asn: bool,
    unknown: bool,
) -> impl Strategy<Value = Vec<PathAttribute>> {
    let asn = if two_octet_asn {
        0u32..=65535
    } else {
        0u32..=u32::MAX
    };
    let unknown_code = (19u8..=255).prop_filter("unknown code", |c| *c != 32);
    (
        any::<u32>(),
        any::<u32>(),
        (asn, any::<u32>()),
        prop::collection::vec(any::<u32>(), 1..20),
        any::<u32>(),
        prop::collection::vec(any::<u32>(), 1..5),
        prop::collection::vec(any::<[u8; 8]>(), 0..6),
        prop::collection::vec(any::<(u32, u32, u32)>(), 1..6),
        (unknown_code, prop::collection::vec(any::<u8>(), 0..300)),
        any::<u16>(),
    )
        .prop_flat_map(
            move |(
                med,
                lp,
                (aggr_as, aggr_ip),
                comms,
                orig,
                clusters,
                ext,
                large,
                (code, data),
                pick,
            )| {
                let mut attrs = vec![
                    PathAttribute::MultiExitDisc(med),
                    PathAttribute::LocalPref(lp),
                    PathAttribute::AtomicAggregate,
                    PathAttribute::Aggregator {
                        asn: aggr_as,
                        address: Ipv4Addr::from(aggr_ip),
                    },
                    PathAttribute::Communities(comms),
                    PathAttribute::OriginatorId(Ipv4Addr::from(orig)),
                    PathAttribute::ClusterList(clusters.into_iter().map(Ipv4Addr::from).collect()),
                    PathAttribute::ExtendedCommunities(ext),
                    PathAttribute::LargeCommunities(large),
                ];
                if unknown {
                    attrs.push(PathAttribute::Unknown {
                        flags: 0xe0,
                        code,
                        data,
                    });
                }
                // A random subset (bit i of `pick`), shuffled.
                let chosen: Vec<_> = attrs
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| pick & (1 << i) != 0)
                    .map(|(_, a)| a)
                    .collect();
                Just(chosen).prop_shuffle()
            },
        )
}

fn mp_reach(add_path: bool) -> impl Strategy<Value = PathAttribute> {
    (
        unicast_v6(),
        prop::option::of(unicast_v6()),
        nlri_list(v6_prefix(), add_path, 30),
    )
        .prop_map(|(global, link_local, nlri)| {
            let mut next_hops = vec![IpAddr::V6(global)];
            next_hops.extend(link_local.map(IpAddr::V6));
            PathAttribute::MpReach(MpReach {
                family: AfiSafi::IPV6_UNICAST,
                next_hops,
                nlri,
            })
        })
}

fn mp_unreach(add_path: bool) -> impl Strategy<Value = PathAttribute> {
    nlri_list(v6_prefix(), add_path, 30).prop_map(|withdrawn| {
        PathAttribute::MpUnreach(MpUnreach {
            family: AfiSafi::IPV6_UNICAST,
            withdrawn,
        })
    })
}

/// Sender-side caps (what the encoder uses).
fn caps() -> impl Strategy<Value = SessionCaps> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(four, ap4, ap6)| {
        let mut tx = BTreeSet::new();
        if ap4 {
            tx.insert(AfiSafi::IPV4_UNICAST);
        }
        if ap6 {
            tx.insert(AfiSafi::IPV6_UNICAST);
        }
        SessionCaps {
            four_octet_as: four,
            extended_message: true,
            add_path_tx: tx,
            ..SessionCaps::default()
        }
    })
}

fn update_for(caps: SessionCaps, unknown: bool) -> impl Strategy<Value = (SessionCaps, Update)> {
    let ap4 = caps.tx_path_ids(AfiSafi::IPV4_UNICAST);
    let ap6 = caps.tx_path_ids(AfiSafi::IPV6_UNICAST);
    let two = !caps.four_octet_as;
    let asn = if two { 0u32..=65535 } else { 0u32..=u32::MAX };
    (
        nlri_list(v4_prefix(), ap4, 40),
        nlri_list(v4_prefix(), ap4, 40),
        prop::sample::select(vec![Origin::Igp, Origin::Egp, Origin::Incomplete]),
        as_path(asn, true),
        unicast_v4(),
        optional_attributes(two, unknown),
        prop::option::of(mp_reach(ap6)),
        prop::option::of(mp_unreach(ap6)),
    )
        .prop_map(
            move |(withdrawn, nlri, origin, path, hop, optional, reach, unreach)| {
                let mut attributes = vec![
                    PathAttribute::Origin(origin),
                    PathAttribute::AsPath(path),
                    PathAttribute::NextHop(hop),
                ];
                attributes.extend(reach);
                attributes.extend(optional);
                attributes.extend(unreach);
                let update = Update {
                    withdrawn,
                    attributes,
                    nlri,
                    ..Update::default()
                };
                (caps.clone(), update)
            },
        )
}

fn any_update() -> impl Strategy<Value = (SessionCaps, Update)> {
    caps().prop_flat_map(|c| update_for(c, true))
}

fn encode(msg: &Message, caps: &SessionCaps) -> Vec<u8> {
    let mut out = Vec::new();
    encode_message(msg, caps, &mut out).expect("encodes");
    out
}

fn decode(bytes: &[u8], caps: &SessionCaps) -> Message {
    let (msg, used) = decode_message(bytes, caps)
        .expect("decodes")
        .expect("complete");
    assert_eq!(used, bytes.len());
    msg
}

fn capability() -> impl Strategy<Value = Capability> {
    let family = (1u16..=3, prop::sample::select(vec![1u8, 2, 128]))
        .prop_map(|(afi, safi)| AfiSafi::from_codes(afi, safi));
    prop_oneof![
        family.clone().prop_map(Capability::Multiprotocol),
        Just(Capability::RouteRefresh),
        Just(Capability::ExtendedMessage),
        Just(Capability::EnhancedRouteRefresh),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..4096,
            prop::collection::vec((family.clone(), any::<bool>()), 0..4)
        )
            .prop_map(|(restart_state, notification, restart_time, families)| {
                Capability::GracefulRestart(GracefulRestart {
                    restart_state,
                    notification,
                    restart_time,
                    families,
                })
            }),
        prop::collection::vec((family, any::<bool>(), any::<bool>()), 1..4).prop_map(|v| {
            Capability::AddPath(
                v.into_iter()
                    .map(|(family, send, receive)| AddPathEntry {
                        family,
                        send,
                        receive,
                    })
                    .collect(),
            )
        }),
        (
            prop::sample::select(vec![5u8, 9, 71, 73, 128, 200]),
            prop::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(|(code, data)| Capability::Unknown { code, data }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    // RFC 4271 §4.3: UPDATE value → bytes → value, and bytes → value → bytes.
    #[test]
    fn update_round_trip((caps, update) in any_update()) {
        let msg = Message::Update(update);
        let bytes = encode(&msg, &caps);
        let back = decode(&bytes, &caps.reversed());
        // Generated updates are canonical and valid: no flag hints, no
        // treat-as-withdraw, so the decoded value equals the original.
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(encode(&back, &caps), bytes);
    }

    // RFC 6793 §4.2.2/§4.2.3: a path with 4-octet ASes sent to a 2-octet
    // peer comes back whole through AS_PATH + AS4_PATH.
    #[test]
    fn as4_path_round_trip(
        asns in prop::collection::vec(0u32..=u32::MAX, 1..40),
        aggr in any::<u32>(),
        prefix in v4_prefix(),
    ) {
        let two = SessionCaps::default();
        let path = AsPath::from_sequence(asns);
        let update = Update {
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(path.clone()),
                PathAttribute::NextHop(Ipv4Addr::new(198, 18, 200, 1)),
                PathAttribute::Aggregator { asn: aggr, address: Ipv4Addr::new(198, 18, 200, 9) },
            ],
            nlri: vec![Nlri::new(prefix)],
            ..Update::default()
        };
        let bytes = encode(&Message::Update(update), &two);
        let Message::Update(back) = decode(&bytes, &two) else { panic!("not an UPDATE") };
        prop_assert_eq!(back.as_path(), Some(&path));
        let aggregator = back.attribute(attr_type::AGGREGATOR).cloned();
        prop_assert_eq!(aggregator, Some(PathAttribute::Aggregator { asn: aggr, address: Ipv4Addr::new(198, 18, 200, 9) }));
        prop_assert_eq!(encode(&Message::Update(back), &two), bytes);
    }

    // RFC 4271 §4.2, RFC 5492: OPEN with any capabilities.
    #[test]
    fn open_round_trip(
        asn in any::<u32>(),
        hold in any::<u16>(),
        id in any::<u32>(),
        caps in prop::collection::vec(capability(), 0..8),
        split in any::<bool>(),
    ) {
        let mut open = Open::new(asn, hold, Ipv4Addr::from(id), caps);
        if split && open.capabilities.len() > 1 {
            // GoBGP style: one capability per optional parameter.
            open.capability_params = vec![1; open.capabilities.len()];
        }
        let msg = Message::Open(open);
        let bytes = encode(&msg, &SessionCaps::default());
        let back = decode(&bytes, &SessionCaps::default());
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(encode(&back, &SessionCaps::default()), bytes);
    }

    // RFC 4271 §4.5.
    #[test]
    fn notification_round_trip(code in any::<u8>(), subcode in any::<u8>(), data in prop::collection::vec(any::<u8>(), 0..200)) {
        let msg = Message::Notification(Notification::new(code, subcode, data));
        let bytes = encode(&msg, &SessionCaps::default());
        prop_assert_eq!(decode(&bytes, &SessionCaps::default()), msg);
    }

    // RFC 2918 §3, RFC 7313 §3.2.
    #[test]
    fn route_refresh_round_trip(afi in any::<u16>(), safi in any::<u8>(), subtype in any::<u8>()) {
        let msg = Message::RouteRefresh(RouteRefresh { family: AfiSafi::from_codes(afi, safi), subtype });
        let bytes = encode(&msg, &SessionCaps::default());
        prop_assert_eq!(bytes.len(), 23);
        prop_assert_eq!(decode(&bytes, &SessionCaps::default()), msg);
    }

    // Differential: bgp-rs reads our encodings the same way. bgp-rs guesses
    // the AS size from the bytes, so ASes here have no octet below 3, which
    // makes its 2-octet guess fail (see bgp-rs parse_unknown_segments).
    #[test]
    fn generated_updates_agree_with_bgp_rs(
        (caps, mut update) in caps().prop_flat_map(|c| {
            let c = SessionCaps { four_octet_as: true, ..c };
            update_for(c, false)
        }),
        asns in prop::collection::vec(any::<[u8; 4]>().prop_map(|b| u32::from_be_bytes(b.map(|x| x.max(3)))), 1..10),
    ) {
        for attr in &mut update.attributes {
            if let PathAttribute::AsPath(p) = attr {
                *p = AsPath::from_sequence(asns.clone());
            }
        }
        // bgp-rs has no path-id per family: only all-or-nothing ADD-PATH.
        let ap = !caps.add_path_tx.is_empty();
        let caps = SessionCaps {
            add_path_tx: if ap { BTreeSet::from([AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]) } else { BTreeSet::new() },
            ..caps
        };
        // bgp-rs guesses ADD-PATH in the IPv4 NLRI field from the bytes
        // (util::detect_add_path_prefix): a /0 or a path id whose first
        // octet is a plausible prefix length fools it, so avoid both there.
        update.nlri.retain(|n| n.prefix.prefix() > 0);
        for n in update.nlri.iter_mut() {
            n.path_id = ap.then_some(0x8000_0000 | n.path_id.unwrap_or(1));
        }
        for n in update.withdrawn.iter_mut() {
            n.path_id = ap.then_some(n.path_id.unwrap_or(1));
        }
        for attr in &mut update.attributes {
            match attr {
                PathAttribute::MpReach(r) => r.nlri.iter_mut().for_each(|n| n.path_id = ap.then_some(n.path_id.unwrap_or(1))),
                PathAttribute::MpUnreach(u) => u.withdrawn.iter_mut().for_each(|n| n.path_id = ap.then_some(n.path_id.unwrap_or(1))),
                _ => {}
            }
        }
        let bytes = encode(&Message::Update(update.clone()), &caps);
        prop_assume!(bytes.len() <= MAX_MESSAGE_LEN); // bgp-rs reads 4096 at most
        let rx = caps.reversed();
        prop_assert_eq!(packet_support::our_fields(&update), packet_support::bgp_rs_fields(&bytes, &rx));
    }
}
