//! Malformed input (RFC 4271 §6, RFC 7606): a raw injector in the peer
//! namespace sends broken messages to manx-bgpd; we check the NOTIFICATION
//! code/subcode (or, for RFC 7606 treat-as-withdraw, that the session stays
//! up and the prefix is withdrawn), and that a BIRD session next to it stays
//! Established throughout and nothing panics.

use std::net::Ipv4Addr;
use std::time::Duration;

use bgpd::fsm::State;
use testkit::eventually;

use crate::support::inject::{self, Injector, as_path, message, next_hop, open, origin, update};
use crate::support::peers::{Kind, PEER_NET_V4, PeerDaemon, PeerOpts};
use crate::support::{EXTRA_V4, Lab, Manx, ManxPeer, PEER_V4};

const MANX_AS: u32 = 64512;
const BIRD_AS: u32 = 65002;
const INJECT_AS: u32 = 65003;
const T: Duration = Duration::from_secs(10);

struct Setup {
    lab: Lab,
    bird: PeerDaemon,
    manx: Manx,
    bird_since: u64,
}

fn setup() -> Option<Setup> {
    if !Kind::Bird2.prereqs().ok() {
        return None;
    }
    let lab = Lab::new();
    let bird = PeerDaemon::start(
        Kind::Bird2,
        &lab,
        PeerOpts {
            asn: BIRD_AS,
            manx_asn: MANX_AS,
            password: None,
            ttl_security: false,
            graceful_restart: None,
        },
    );
    let mut peers = vec![ManxPeer::new(PEER_V4, BIRD_AS)];
    for a in EXTRA_V4 {
        let mut p = ManxPeer::new(a, INJECT_AS);
        p.passive = true;
        peers.push(p);
    }
    let manx = Manx::start(&lab, MANX_AS, &peers, &["10.65.0.0/26"]);
    assert!(
        eventually(Duration::from_secs(60), || manx.established(PEER_V4)
            && manx.has_route(PEER_NET_V4)),
        "the BIRD session never came up: {:#?}\n{}",
        manx.peers(),
        bird.logs()
    );
    let bird_since = manx
        .peers()
        .into_iter()
        .find(|p| p.address.to_string() == PEER_V4)
        .unwrap()
        .since_unix;
    Some(Setup {
        lab,
        bird,
        manx,
        bird_since,
    })
}

impl Setup {
    /// The good session never left Established, and manx-bgpd is alive and sane.
    fn check_bystander(&mut self) {
        let s = self
            .manx
            .peers()
            .into_iter()
            .find(|p| p.address.to_string() == PEER_V4)
            .expect("bird peer");
        assert_eq!(
            s.state,
            State::Established,
            "the BIRD session went down: {s:?}\n{}",
            self.bird.logs()
        );
        assert_eq!(
            s.since_unix, self.bird_since,
            "the BIRD session flapped: {s:?}"
        );
        assert!(self.manx.has_route(PEER_NET_V4));
        assert!(self.manx.daemon.alive(), "manx-bgpd died");
        assert!(
            !self.manx.daemon.log_text().contains("panicked"),
            "manx-bgpd panicked"
        );
    }

    /// Wait until manx-bgpd accepts connections from `addr` again (Active).
    fn ready(&self, addr: Ipv4Addr) {
        let a = addr.to_string();
        assert!(
            eventually(T * 3, || self.manx.peer_state(&a) == Some(State::Active)),
            "peer {a} never returned to Active: {:?}",
            self.manx.peer_state(&a)
        );
    }

    /// Connect from `addr`, send `bytes` first, expect NOTIFICATION code/subcode.
    fn expect(
        &mut self,
        addr: Ipv4Addr,
        bytes: &[u8],
        code: u8,
        subcode: u8,
        what: &str,
    ) -> Vec<u8> {
        self.ready(addr);
        let mut inj = Injector::connect(&self.lab, addr);
        inj.send(bytes);
        let (c, s, data) = inj.expect_notification(T);
        assert_eq!(
            (c, s),
            (code, subcode),
            "{what}: wrong NOTIFICATION (data {data:?})"
        );
        let last_error = self
            .manx
            .peers()
            .into_iter()
            .find(|p| p.address.to_string() == addr.to_string())
            .and_then(|p| p.last_error);
        assert!(
            last_error.is_some_and(|e| e.contains(&format!("{code}/{subcode}"))),
            "{what}: last error not reported"
        );
        data
    }
}

fn addr(i: usize) -> Ipv4Addr {
    EXTRA_V4[i].parse().unwrap()
}

/// RFC 4271 §6.1 (header) and §6.2 (OPEN) errors.
#[test]
fn heavy_malformed_header_and_open_errors() {
    let Some(mut s) = setup() else { return };
    // One source address per case: a failed peer backs off (IdleHold) before
    // it accepts again, and the back-off grows with each failure.
    let mut next = 2..;
    let mut id = || addr(next.next().unwrap());

    // §6.1: marker not all ones → 1/1 Connection Not Synchronized.
    let a = id();
    let mut bad_marker = open(4, INJECT_AS, 90, a);
    bad_marker[3] = 0;
    s.expect(a, &bad_marker, 1, 1, "bad marker");

    // §6.1: length below 19 → 1/2 Bad Message Length, data = the length.
    let mut bad_len = inject::keepalive();
    bad_len[16..18].copy_from_slice(&18u16.to_be_bytes());
    let data = s.expect(id(), &bad_len, 1, 2, "bad length");
    assert_eq!(data, vec![0, 18]);

    // §6.1: length above 4096 → 1/2.
    let mut too_long = inject::keepalive();
    too_long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    s.expect(id(), &too_long, 1, 2, "length above 4096");

    // §6.1: unknown type → 1/3 Bad Message Type.
    s.expect(id(), &message(9, &[]), 1, 3, "bad type");

    // §6.2: version 3 → 2/1 Unsupported Version Number, data = 4 (largest supported).
    let a = id();
    let data = s.expect(a, &open(3, INJECT_AS, 90, a), 2, 1, "unsupported version");
    assert_eq!(data, vec![0, 4]);

    // §6.2: wrong AS → 2/2 Bad Peer AS.
    let a = id();
    s.expect(a, &open(4, 65999, 90, a), 2, 2, "bad peer AS");

    // §6.2: hold time 2 → 2/6 Unacceptable Hold Time.
    let a = id();
    s.expect(a, &open(4, INJECT_AS, 2, a), 2, 6, "unacceptable hold time");

    // §6.2: BGP identifier 0 → 2/3 Bad BGP Identifier.
    s.expect(
        id(),
        &open(4, INJECT_AS, 90, Ipv4Addr::UNSPECIFIED),
        2,
        3,
        "bad identifier",
    );

    // RFC 6608: a KEEPALIVE before the OPEN → 5/1 FSM error in OpenSent.
    s.expect(id(), &inject::keepalive(), 5, 1, "keepalive in OpenSent");

    s.check_bystander();
}

/// RFC 7606: attribute errors are treat-as-withdraw (session stays up,
/// prefix withdrawn); a broken attribute list still resets the session.
#[test]
fn heavy_malformed_update_errors() {
    let Some(mut s) = setup() else { return };
    let src = addr(1);
    s.ready(src);
    let mut inj = Injector::connect(&s.lab, src);
    inj.establish(INJECT_AS);
    let src_s = src.to_string();
    assert!(
        eventually(T, || s.manx.established(&src_s)),
        "injector session never established"
    );

    let prefix = (Ipv4Addr::new(10, 203, 0, 0), 24);
    let good_attrs = [origin(), as_path(&[INJECT_AS]), next_hop(src)].concat();
    let announce = || update(&[], &good_attrs, &[prefix]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // RFC 7606 §7.2: AS_PATH segment overruns the attribute → treat-as-withdraw.
        ("malformed AS_PATH", {
            // One AS_SEQUENCE claiming 3 ASNs (12 octets) in a 6-octet attribute.
            let mut bad_path = vec![0x40, 2, 6, 2, 3];
            bad_path.extend_from_slice(&INJECT_AS.to_be_bytes());
            [origin(), bad_path, next_hop(src)].concat()
        }),
        // RFC 7606 §3.d: ORIGIN missing → treat-as-withdraw.
        (
            "missing well-known ORIGIN",
            [as_path(&[INJECT_AS]), next_hop(src)].concat(),
        ),
        // RFC 7606 §3.c: ORIGIN flagged optional → treat-as-withdraw.
        (
            "attribute flags error",
            [vec![0xc0, 1, 1, 0], as_path(&[INJECT_AS]), next_hop(src)].concat(),
        ),
    ];
    for (what, attrs) in cases {
        inj.send(&announce());
        assert!(
            eventually(T, || s.manx.has_route("10.203.0.0/24")),
            "{what}: the valid announcement was not installed"
        );
        inj.send(&update(&[], &attrs, &[prefix]));
        assert!(
            eventually(T, || !s.manx.has_route("10.203.0.0/24")),
            "{what}: the prefix was not withdrawn"
        );
        inj.stays_up(Duration::from_secs(1));
        assert!(s.manx.established(&src_s), "{what}: the session went down");
    }

    // RFC 7606 §4 / RFC 4271 §6.3: the withdrawn-routes length overruns the
    // message → 3/1 Malformed Attribute List, session reset.
    let mut body = 200u16.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 0]);
    inj.send(&message(inject::UPDATE, &body));
    let (c, sc, _) = inj.expect_notification(T);
    assert_eq!((c, sc), (3, 1), "overrunning withdrawn length");
    s.check_bystander();
}
