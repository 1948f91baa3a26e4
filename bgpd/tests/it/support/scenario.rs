//! Interop scenarios shared by the interop_* test files.

use std::time::Duration;

use testkit::eventually;

use super::peers::{GrNotification, Kind, PEER_NET_V4, PEER_NET_V6, PeerDaemon, PeerOpts, gobgp};
use super::{Lab, MANX_V4, Manx, ManxPeer, PEER_V4, PEER_V6};

pub const MANX_AS: u32 = 64512;
pub const PEER_EBGP_AS: u32 = 65002;
pub const MANX_NET_V4: &str = "10.65.0.0/26";
pub const MANX_NET_V6: &str = "fd42:65::/122";

/// Generous bound for "eventually": sessions come up in seconds.
pub const SETTLE: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd daemon gets to send CEASE and exit.
pub const STOP: Duration = Duration::from_secs(10);

fn fail(what: &str, manx: &Manx, peer: &PeerDaemon) -> ! {
    panic!(
        "{what}\nmanx peers: {:#?}\nmanx learnt: {:?}\npeer routes:\n{}\npeer logs:\n{}",
        manx.peers(),
        manx.learnt(),
        peer.routes(),
        peer.logs()
    );
}

pub fn require(kind: Kind) -> bool {
    kind.prereqs().ok()
}

/// Knobs of a lab.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub ibgp: bool,
    pub peer_password: Option<&'static str>,
    pub manx_password: Option<&'static str>,
    pub peer_gtsm: bool,
    pub manx_gtsm: bool,
    pub peer_graceful_restart: Option<GrNotification>,
}

pub fn start(kind: Kind, o: Opts) -> (Lab, PeerDaemon, Manx) {
    let lab = Lab::new();
    let peer_as = if o.ibgp { MANX_AS } else { PEER_EBGP_AS };
    let peer = PeerDaemon::start(
        kind,
        &lab,
        PeerOpts {
            asn: peer_as,
            manx_asn: MANX_AS,
            password: o.peer_password.map(String::from),
            ttl_security: o.peer_gtsm,
            graceful_restart: o.peer_graceful_restart,
        },
    );
    let mut peers = vec![
        ManxPeer::new(PEER_V4, peer_as),
        ManxPeer::new(PEER_V6, peer_as),
    ];
    for p in &mut peers {
        p.password = o.manx_password.map(String::from);
        p.ttl_security = o.manx_gtsm;
    }
    let manx = Manx::start(&lab, MANX_AS, &peers, &[MANX_NET_V4, MANX_NET_V6]);
    (lab, peer, manx)
}

pub fn wait_established(manx: &Manx, peer: &PeerDaemon) {
    if !eventually(SETTLE, || {
        manx.established(PEER_V4) && manx.established(PEER_V6)
    }) {
        fail("sessions never reached Established", manx, peer);
    }
}

/// Sessions up, IPv4 and IPv6 routes flow both ways and are withdrawn both
/// ways, and SIGTERM stops manx-bgpd cleanly.
pub fn exchange(kind: Kind, ibgp: bool) {
    if !require(kind) {
        return;
    }
    let (_lab, peer, mut manx) = start(
        kind,
        Opts {
            ibgp,
            ..Opts::default()
        },
    );
    wait_established(&manx, &peer);

    // Peer → manx (IPv4 in NLRI, IPv6 in MP_REACH).
    if !eventually(SETTLE, || {
        manx.has_route(PEER_NET_V4) && manx.has_route(PEER_NET_V6)
    }) {
        fail("manx-bgpd never learnt the peer's prefixes", &manx, &peer);
    }
    // manx → peer.
    if !eventually(SETTLE, || {
        peer.has_route(MANX_NET_V4) && peer.has_route(MANX_NET_V6)
    }) {
        fail("the peer never learnt manx-bgpd's prefixes", &manx, &peer);
    }
    let status = manx.peers();
    for s in &status {
        assert_eq!(s.prefixes_advertised, 1, "{s:?}");
        assert_eq!(s.prefixes_received, 1, "{s:?}");
        assert_eq!(s.prefixes_accepted, 1, "{s:?}");
    }

    // Withdraw manx → peer.
    manx.withdraw(MANX_NET_V4);
    manx.withdraw(MANX_NET_V6);
    if !eventually(SETTLE, || {
        !peer.has_route(MANX_NET_V4) && !peer.has_route(MANX_NET_V6)
    }) {
        fail("the peer kept manx-bgpd's withdrawn prefixes", &manx, &peer);
    }
    // Withdraw peer → manx.
    peer.withdraw_own();
    if !eventually(SETTLE, || {
        !manx.has_route(PEER_NET_V4) && !manx.has_route(PEER_NET_V6)
    }) {
        fail("manx-bgpd kept the peer's withdrawn prefixes", &manx, &peer);
    }
    // Sessions stayed up throughout.
    assert!(manx.established(PEER_V4) && manx.established(PEER_V6));

    // SIGTERM: CEASE to every peer and exit 0.
    assert_eq!(
        manx.daemon.terminate(STOP),
        Some(0),
        "manx-bgpd did not exit 0 on SIGTERM"
    );
    // RFC 8203: the peer logged our shutdown communication.
    assert!(
        eventually(Duration::from_secs(10), || peer
            .logs()
            .contains("manx-bgpd shutting down")),
        "the peer never logged the CEASE shutdown message:\n{}",
        peer.logs()
    );
}

/// The peer restarts; the session comes back on its own.
pub fn peer_restart(kind: Kind) {
    if !require(kind) {
        return;
    }
    let (lab, mut peer, manx) = start(kind, Opts::default());
    wait_established(&manx, &peer);
    if !eventually(SETTLE, || manx.has_route(PEER_NET_V4)) {
        fail("no route before the restart", &manx, &peer);
    }
    peer.restart(&lab);
    wait_established(&manx, &peer);
    if !eventually(SETTLE, || {
        manx.has_route(PEER_NET_V4) && peer.has_route(MANX_NET_V4)
    }) {
        fail(
            "routes did not come back after the peer restarted",
            &manx,
            &peer,
        );
    }
}

/// TCP-MD5: the right password establishes, a wrong one never does.
pub fn md5(kind: Kind, right: bool) {
    if !require(kind) {
        return;
    }
    let manx_pw = if right { "s3cret-pw" } else { "wrong-pw" };
    let opts = Opts {
        peer_password: Some("s3cret-pw"),
        manx_password: Some(manx_pw),
        ..Opts::default()
    };
    let (_lab, peer, manx) = start(kind, opts);
    if right {
        wait_established(&manx, &peer);
        if !eventually(SETTLE, || {
            manx.has_route(PEER_NET_V4) && peer.has_route(MANX_NET_V4)
        }) {
            fail("no routes over the MD5 session", &manx, &peer);
        }
    } else {
        // Both sides retry every 2 s: 15 s is several attempts each way.
        let mut reached = None;
        eventually(Duration::from_secs(15), || {
            reached = manx.peers().into_iter().find(|p| {
                p.state != bgpd::fsm::State::Idle
                    && p.state != bgpd::fsm::State::Active
                    && p.state != bgpd::fsm::State::Connect
            });
            reached.is_some()
        });
        assert!(
            reached.is_none(),
            "a session with a wrong TCP-MD5 password got to {reached:?}"
        );
    }
}

/// GTSM (RFC 5082): with both sides on, the session comes up; with only
/// manx-bgpd on, the peer's TTL-1 eBGP packets are dropped and it never does.
pub fn gtsm(kind: Kind, peer_gtsm: bool) {
    if !require(kind) {
        return;
    }
    let opts = Opts {
        peer_gtsm,
        manx_gtsm: true,
        ..Opts::default()
    };
    let (_lab, peer, manx) = start(kind, opts);
    if peer_gtsm {
        wait_established(&manx, &peer);
        if !eventually(SETTLE, || {
            manx.has_route(PEER_NET_V4) && peer.has_route(MANX_NET_V4)
        }) {
            fail("no routes over the GTSM session", &manx, &peer);
        }
    } else {
        let mut up = false;
        eventually(Duration::from_secs(15), || {
            up = manx.established(PEER_V4);
            up
        });
        assert!(!up, "a TTL-1 peer got past GTSM");
    }
}

/// Graceful restart with notification (RFC 8538) against GoBGP, both sides
/// advertising graceful restart (restart time 120 s), GoBGP with the N bit
/// `n`. GoBGP resets the session with a Cease (6/4): with the N bit on both
/// sides manx-bgpd keeps GoBGP's route through the reset (it is never
/// missing while the session is down and back); without it the route goes
/// at once. Then manx-bgpd stops (SIGTERM: Administrative Shutdown): with
/// the N bit that Cease goes as a Hard Reset, and GoBGP drops manx's route
/// at once instead of keeping it as stale for 120 s.
pub fn graceful_notification(n: GrNotification) {
    let kind = Kind::Gobgp;
    if !require(kind) {
        return;
    }
    let opts = Opts {
        ibgp: true,
        peer_graceful_restart: Some(n),
        ..Opts::default()
    };
    let (lab, peer, mut manx) = start(kind, opts);
    wait_established(&manx, &peer);
    if !eventually(SETTLE, || {
        manx.has_route(PEER_NET_V4) && peer.has_route(MANX_NET_V4)
    }) {
        fail("no routes before the reset", &manx, &peer);
    }
    let since = |manx: &Manx| {
        manx.peers()
            .into_iter()
            .find(|p| p.address.to_string() == PEER_V4)
            .map(|p| (p.state, p.since_unix))
    };
    let (_, up_since) = since(&manx).expect("GoBGP's IPv4 session");
    gobgp(lab.peer.name(), &["neighbor", MANX_V4, "reset"]).expect("gobgp neighbor reset");
    // At every poll until the session is back after the reset (a new
    // Established): was GoBGP's route ever missing meanwhile?
    let mut missing_at = None;
    let t0 = std::time::Instant::now();
    let back = eventually(SETTLE, || {
        if !manx.has_route(PEER_NET_V4) && missing_at.is_none() {
            missing_at = Some(t0.elapsed());
        }
        since(&manx)
            .is_some_and(|(state, t)| state == bgpd::fsm::State::Established && t != up_since)
            && manx.has_route(PEER_NET_V4)
    });
    if !back {
        fail(
            "the session did not come back after GoBGP's reset",
            &manx,
            &peer,
        );
    }
    match n {
        GrNotification::On => assert_eq!(
            missing_at, None,
            "N bit on both sides: the route must be kept through a Cease (RFC 8538 §4)"
        ),
        GrNotification::Off => assert!(
            missing_at.is_some(),
            "without the N bit a Cease ends graceful restart: the route must go"
        ),
    }
    manx.daemon.terminate(STOP);
    let t1 = std::time::Instant::now();
    // Either way the route goes at once: without the N bit a Cease ends
    // graceful restart (RFC 4724), with it only because it is a Hard Reset.
    let dropped = eventually(Duration::from_secs(10), || !peer.has_route(MANX_NET_V4));
    assert!(
        dropped,
        "GoBGP still holds {MANX_NET_V4} {:?} after manx-bgpd's Cease:\n{}",
        t1.elapsed(),
        peer.logs()
    );
    // GoBGP names what it got: "hard-reset" (RFC 8538 §3) only with the N bit.
    let logs = peer.logs();
    let hard = logs.contains("\"Reason\":\"hard-reset\"");
    assert_eq!(
        hard,
        n == GrNotification::On,
        "GoBGP's session-down reason for manx-bgpd's Cease:\n{logs}"
    );
}
