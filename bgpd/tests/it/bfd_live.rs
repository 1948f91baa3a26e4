//! BFD over real UDP in namespaces (issue 20, first part: the protocol):
//! two Manx BFD tasks come Up and notice a dead link within the detection
//! time; GTSM drops a packet from further than one hop; bird2's
//! `protocol bfd` comes Up with Manx and is noticed when it dies.
//! Detection times are printed, not asserted (noisy machines).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgpd::bfd::io::{self, Event, Hops, PeerSpec, Sockets};
use bgpd::bfd::{ControlPacket, Diag, State};
use testkit::{Daemon, Prereqs};
use tokio::sync::mpsc;

use crate::support::peers::{BIRD2, BIRDC2, birdc};
use crate::support::{Lab, MANX_V4, PEER_V4};

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn spec(peer: &str, ms: u64) -> PeerSpec {
    PeerSpec {
        peer: v4(peer),
        hops: Hops::Single,
        desired_min_tx: Duration::from_millis(ms),
        required_min_rx: Duration::from_millis(ms),
        detect_mult: 3,
        passive: false,
    }
}

/// Wait for an event of `peer` reaching `to`; its time.
async fn wait_for(rx: &mut mpsc::Receiver<Event>, to: State, limit: Duration) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if e.to == to => return Some(e),
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

fn bird2_prereqs() -> bool {
    Prereqs::new()
        .root()
        .command("ip")
        .file(BIRD2, "bird2")
        .file(BIRDC2, "bird2")
        .ok()
}

/// bird2 in the lab's peer namespace with `conf`; its control socket.
fn spawn_bird2(lab: &Lab, name: &str, conf: &str) -> (Daemon, std::path::PathBuf) {
    let path = lab.path(&format!("{name}.conf"));
    let sock = lab.path(&format!("{name}.ctl"));
    std::fs::write(&path, conf).unwrap();
    let daemon = Daemon::spawn(
        &lab.peer,
        lab.dir.path(),
        name,
        BIRD2,
        &[
            "-f",
            "-s",
            sock.to_str().unwrap(),
            "-c",
            path.to_str().unwrap(),
        ],
        &[],
    );
    (daemon, sock)
}

#[test]
fn two_manx_sessions_come_up_and_detect_a_dead_link() {
    if !Prereqs::new().root().command("ip").ok() {
        return;
    }
    let lab = Lab::new();
    let a = lab.manx.run_in(|| Sockets::bind(v4(MANX_V4)).unwrap());
    let b = lab.peer.run_in(|| Sockets::bind(v4(PEER_V4)).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (tx_a, mut rx_a) = mpsc::channel(16);
        let (tx_b, mut rx_b) = mpsc::channel(16);
        let ha = io::spawn(a, tx_a).unwrap();
        let hb = io::spawn(b, tx_b).unwrap();
        ha.add(spec(PEER_V4, 100)).await;
        hb.add(spec(MANX_V4, 100)).await;
        assert!(
            wait_for(&mut rx_a, State::Up, Duration::from_secs(10))
                .await
                .is_some()
        );
        assert!(
            wait_for(&mut rx_b, State::Up, Duration::from_secs(10))
                .await
                .is_some()
        );
        // After the Poll Sequence both send at the negotiated 100 ms.
        let mut fast = false;
        for _ in 0..40 {
            let st = ha.status().await;
            if st[0].tx_interval_ms == 100 && st[0].detection_time_ms == 300 {
                fast = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(fast, "{:?}", ha.status().await);

        // The link dies: a's session goes Down on detection time.
        let cut = Instant::now();
        lab.peer.ip(&["link", "set", "mxb", "down"]);
        let down = wait_for(&mut rx_a, State::Down, Duration::from_secs(10))
            .await
            .expect("a never noticed the dead link");
        println!(
            "BFD 100 ms x 3: link down -> session Down after {:?}",
            cut.elapsed()
        );
        assert_eq!(down.diag, Diag::ControlDetectionTimeExpired);

        // Back up, then an administrative down is signalled, not timed out.
        lab.peer.ip(&["link", "set", "mxb", "up"]);
        assert!(
            wait_for(&mut rx_a, State::Up, Duration::from_secs(15))
                .await
                .is_some()
        );
        hb.admin_down(v4(MANX_V4), true).await;
        let down = wait_for(&mut rx_a, State::Down, Duration::from_secs(5))
            .await
            .expect("AdminDown not seen");
        assert_eq!(down.diag, Diag::NeighborSignaledSessionDown);
    });
}

#[test]
fn a_packet_from_more_than_one_hop_is_dropped() {
    if !Prereqs::new().root().command("ip").ok() {
        return;
    }
    let lab = Lab::new();
    let a = lab.manx.run_in(|| Sockets::bind(v4(MANX_V4)).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (tx_a, mut rx_a) = mpsc::channel(16);
        let ha = io::spawn(a, tx_a).unwrap();
        let mut passive = spec(PEER_V4, 300);
        passive.passive = true;
        ha.add(passive).await;
        let hello = ControlPacket {
            diag: Diag::None,
            state: State::Down,
            poll: false,
            final_: false,
            cpi: false,
            auth: false,
            demand: false,
            detect_mult: 3,
            my_discr: 4242,
            your_discr: 0,
            desired_min_tx: Duration::from_secs(1),
            required_min_rx: Duration::from_millis(300),
            required_min_echo_rx: Duration::ZERO,
        }
        .encode();
        let send = move |ttl: u32| {
            lab.peer.run_in(move || {
                let s = std::net::UdpSocket::bind((v4(PEER_V4), 0)).unwrap();
                s.set_ttl(ttl).unwrap();
                s.send_to(&hello, (v4(MANX_V4), 3784)).unwrap();
            })
        };
        send(64);
        assert!(
            wait_for(&mut rx_a, State::Init, Duration::from_millis(700))
                .await
                .is_none(),
            "a TTL 64 packet moved the session"
        );
        send(255);
        assert!(
            wait_for(&mut rx_a, State::Init, Duration::from_secs(5))
                .await
                .is_some(),
            "a TTL 255 packet was not taken"
        );
    });
}

#[test]
fn bird2_protocol_bfd_comes_up_with_manx() {
    if !bird2_prereqs() {
        return;
    }
    let lab = Lab::new();
    // As bird2's documentation writes a BFD session without a protocol
    // that needs it: a `neighbor` in `protocol bfd`.
    let (mut bird, sock) = spawn_bird2(
        &lab,
        "bird-bfd",
        &format!(
            "router id {PEER_V4};\nprotocol device {{}}\nprotocol bfd {{\n  interface \"mxb\" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }};\n  neighbor {MANX_V4} dev \"mxb\" local {PEER_V4};\n}}\n"
        ),
    );
    let a = lab.manx.run_in(|| Sockets::bind(v4(MANX_V4)).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (tx_a, mut rx_a) = mpsc::channel(16);
        let ha = io::spawn(a, tx_a).unwrap();
        ha.add(spec(PEER_V4, 100)).await;
        let up = wait_for(&mut rx_a, State::Up, Duration::from_secs(15)).await;
        let sessions = birdc(BIRDC2, &sock, &["show", "bfd", "sessions"]);
        assert!(
            up.is_some(),
            "no Up with bird2:\n{sessions}\n{}",
            bird.log_text()
        );
        let mut bird_up = false;
        for _ in 0..50 {
            let s = birdc(BIRDC2, &sock, &["show", "bfd", "sessions"]);
            if s.lines().any(|l| l.contains(MANX_V4) && l.contains("Up")) {
                bird_up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            bird_up,
            "bird2 does not show Up:\n{}",
            birdc(BIRDC2, &sock, &["show", "bfd", "sessions"])
        );

        // bird2 dies: Manx notices on detection time.
        let t = Instant::now();
        bird.kill9();
        let down = wait_for(&mut rx_a, State::Down, Duration::from_secs(10))
            .await
            .expect("bird2's death not noticed");
        println!("bird2 killed -> Manx BFD Down after {:?}", t.elapsed());
        assert_eq!(down.diag, Diag::ControlDetectionTimeExpired);
    });
}

/// RFC 5882 end to end: manx-bgpd peers with a bird2 "ToR" over eBGP with
/// `bfd on` on both sides (hold time 30 s). When the link dies the BFD
/// session goes Down within its 300 ms detection time, the BGP session is
/// taken down at once and the ToR's route leaves manx-bgpd's Loc-RIB: no
/// waiting for the hold timer, and no graceful-restart retention (the
/// forwarding path is what failed).
#[test]
fn bfd_down_takes_the_bgp_session_and_its_routes_down_at_once() {
    use crate::support::{Manx, ManxPeer};
    if !bird2_prereqs() {
        return;
    }
    let lab = Lab::new();
    let (_bird, sock) = spawn_bird2(
        &lab,
        "bird-bgp-bfd",
        &format!(
            "router id {PEER_V4};\nprotocol device {{}}\n\
             protocol bfd {{ interface \"mxb\" {{ min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }}; }}\n\
             protocol static tor {{ ipv4; route 10.210.0.0/24 blackhole; }}\n\
             protocol bgp manx {{\n  local {PEER_V4} as 65001;\n  neighbor {MANX_V4} as 64512;\n  \
             hold time 30; connect retry time 1; error wait time 1, 5;\n  bfd on;\n  \
             ipv4 {{ import all; export where source = RTS_STATIC; }};\n}}\n"
        ),
    );
    let mut peer = ManxPeer::new(PEER_V4, 65001);
    peer.hold_time = Some(30);
    peer.bfd = true;
    let manx = Manx::start(&lab, 64512, &[peer], &[]);
    let up = testkit::eventually(Duration::from_secs(30), || {
        manx.has_route("10.210.0.0/24") && manx.peers().iter().any(|p| p.bfd == Some(State::Up))
    });
    assert!(
        up,
        "no BGP route with BFD Up: {:?}\n{}\n{}",
        manx.peers(),
        birdc(BIRDC2, &sock, &["show", "bfd", "sessions"]),
        manx.daemon.log_text()
    );

    let cut = Instant::now();
    lab.peer.ip(&["link", "set", "mxb", "down"]);
    let gone = testkit::eventually(Duration::from_secs(20), || !manx.has_route("10.210.0.0/24"));
    let took = cut.elapsed();
    println!("BFD 100 ms x 3, hold 30 s: link down -> bird2's route withdrawn after {took:?}");
    assert!(gone, "route still there: {:?}", manx.peers());
    let p = &manx.peers()[0];
    assert_ne!(p.state, bgpd::fsm::State::Established);
    assert!(
        p.last_error
            .as_deref()
            .unwrap_or("")
            .contains("BFD session down"),
        "{p:?}"
    );
    // Well before the hold timer could have fired.
    assert!(took < Duration::from_secs(30), "{took:?}");
}
