//! Messages captured from real peers (BIRD 2 and GoBGP, see
//! `tests/it/data/captures/capture.sh`) decode, carry what the peers were told
//! to send, re-encode byte for byte, and agree with the independent `bgp-rs`
//! decoder.

use bgpd::packet::{
    AfiSafi, Capability, Message, SessionCaps, decode_message, encode_message, notif,
};

use crate::packet_support::*;

fn decode_all(name: &str, reply: &str) -> (Capture, SessionCaps, Vec<Message>) {
    let sent = load_capture(name);
    let caps = receiver_caps(&sent, &load_capture(reply));
    let msgs = sent
        .messages
        .iter()
        .enumerate()
        .map(|(i, bytes)| match decode_message(bytes, &caps) {
            Ok(Some((msg, used))) => {
                assert_eq!(used, bytes.len(), "{name} message {i}: consumed length");
                msg
            }
            other => panic!("{name} message {i} ({}): {other:?}", hex(bytes)),
        })
        .collect();
    (sent, caps, msgs)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// RFC 4271 §4: every captured message decodes and re-encodes to the very
// same bytes (the sender's view of the session: caps reversed).
#[test]
fn captured_messages_round_trip_byte_for_byte() {
    for (a, b) in SESSIONS {
        for (name, reply) in [(a, b), (b, a)] {
            let (sent, caps, msgs) = decode_all(name, reply);
            assert!(sent.messages.len() >= 5, "{name}: capture too small");
            let sender_caps = caps.reversed();
            for (i, (msg, bytes)) in msgs.iter().zip(&sent.messages).enumerate() {
                let mut out = Vec::new();
                encode_message(msg, &sender_caps, &mut out)
                    .unwrap_or_else(|e| panic!("{name} message {i}: {e}"));
                assert_eq!(hex(&out), hex(bytes), "{name} message {i}: {msg:?}");
            }
        }
    }
}

// The captures exercise what capture.sh asked the peers to do; if a
// regenerated capture lost some of it, this fails instead of silently
// testing less.
#[test]
fn captures_cover_the_interesting_cases() {
    let (_, caps, bird) = decode_all("bird2-to-gobgpd.hex", "gobgpd-to-bird2.hex");
    let (_, _, gobgp) = decode_all("gobgpd-to-bird2.hex", "bird2-to-gobgpd.hex");
    // RFC 6793, RFC 7911: negotiated by both.
    assert!(caps.four_octet_as);
    assert!(caps.add_path_rx.contains(&AfiSafi::IPV4_UNICAST));
    assert!(caps.add_path_rx.contains(&AfiSafi::IPV6_UNICAST));

    let Message::Open(bird_open) = &bird[0] else {
        panic!("no OPEN")
    };
    assert_eq!(bird_open.asn(), 65001);
    for cap in [
        Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
        Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
        Capability::RouteRefresh,
        Capability::EnhancedRouteRefresh,
        Capability::ExtendedMessage,
        Capability::FourOctetAs(65001),
    ] {
        assert!(bird_open.has(&cap), "BIRD OPEN lacks {cap:?}");
    }
    assert!(bird_open.graceful_restart().is_some());
    assert!(
        bird_open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::AddPath(_)))
    );
    let Message::Open(gobgp_open) = &gobgp[0] else {
        panic!("no OPEN")
    };
    assert_eq!(gobgp_open.asn(), 4_200_000_002);
    assert_eq!(gobgp_open.my_as, bgpd::packet::AS_TRANS);
    assert!(gobgp_open.graceful_restart().is_some());

    let updates = |msgs: &[Message]| -> Vec<bgpd::packet::Update> {
        msgs.iter()
            .filter_map(|m| match m {
                Message::Update(u) => Some(u.clone()),
                _ => None,
            })
            .collect()
    };
    let bird_updates = updates(&bird);
    let gobgp_updates = updates(&gobgp);
    for (who, ups) in [("bird", &bird_updates), ("gobgp", &gobgp_updates)] {
        assert!(
            ups.iter().all(|u| !u.treat_as_withdraw),
            "{who}: treat-as-withdraw"
        );
        assert!(
            ups.iter().any(|u| !u.nlri.is_empty()),
            "{who}: no IPv4 NLRI"
        );
        assert!(
            ups.iter().any(|u| u.mp_reach().is_some()),
            "{who}: no MP_REACH"
        );
        assert!(
            ups.iter()
                .any(|u| u.mp_unreach().is_some_and(|r| !r.withdrawn.is_empty())),
            "{who}: no MP_UNREACH"
        );
        assert!(
            ups.iter().any(|u| !u.withdrawn.is_empty()),
            "{who}: no IPv4 withdrawal"
        );
        assert!(
            ups.iter().any(|u| u.is_end_of_rib().is_some()),
            "{who}: no End-of-RIB"
        );
        assert!(
            ups.iter().any(|u| !u.communities().is_empty()),
            "{who}: no communities"
        );
        assert!(
            ups.iter().any(|u| !u.large_communities().is_empty()),
            "{who}: no large communities"
        );
        assert!(
            ups.iter()
                .all(|u| u.nlri.iter().all(|n| n.path_id.is_some())),
            "{who}: ADD-PATH ids"
        );
    }
    assert!(
        bird_updates
            .iter()
            .any(|u| u.large_communities().contains(&(65001, 1, 2)))
    );
    assert!(
        bird_updates
            .iter()
            .any(|u| u.communities().contains(&0xffff_ff01))
    );
    assert!(
        bird_updates
            .iter()
            .any(|u| !u.extended_communities().is_empty())
    );
    assert!(gobgp_updates.iter().any(|u| u.med() == Some(10)));
    assert!(
        bird_updates
            .iter()
            .any(|u| u.as_path().is_some_and(|p| p.to_string() == "65001 65001"))
    );
    assert!(
        gobgp_updates
            .iter()
            .any(|u| u.large_communities().contains(&(4_200_000_002, 1, 2)))
    );
    assert!(gobgp_updates.iter().any(|u| {
        u.as_path()
            .is_some_and(|p| p.first_as() == Some(4_200_000_002))
    }));

    assert!(bird.iter().any(|m| matches!(m, Message::Keepalive)));
    assert!(
        bird.iter()
            .any(|m| matches!(m, Message::RouteRefresh(r) if r.family == AfiSafi::IPV6_UNICAST))
    );
    let Some(Message::Notification(n)) = bird.last() else {
        panic!("BIRD did not end with a NOTIFICATION")
    };
    assert_eq!(
        (n.code, n.subcode),
        (notif::CEASE, notif::CEASE_ADMIN_SHUTDOWN)
    );
    assert_eq!(
        n.shutdown_message().as_deref(),
        Some("manx capture: maintenance")
    );
}

// Differential: bgp-rs reads the same captured UPDATE bytes; prefixes,
// path ids, AS path, next hop and communities agree with ours.
#[test]
fn captured_updates_agree_with_bgp_rs() {
    let mut compared = 0;
    for (a, b) in SESSIONS {
        for (name, reply) in [(a, b), (b, a)] {
            let (sent, caps, msgs) = decode_all(name, reply);
            for (i, (msg, bytes)) in msgs.iter().zip(&sent.messages).enumerate() {
                let Message::Update(update) = msg else {
                    continue;
                };
                assert_eq!(
                    our_fields(update),
                    bgp_rs_fields(bytes, &caps),
                    "{name} message {i}"
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 10, "only {compared} UPDATEs compared");
}
