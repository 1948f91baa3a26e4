//! Graceful restart, helper side, on a paused clock (RFC 4724 §4.2): a
//! speaker keeps a dropped GR peer's routes for exactly the peer's restart
//! time, then sweeps them (`RouteUpdate::Remove`). Restart times 1 s, 30 s
//! and 120 s are swept in one run: nothing is removed 1 ms before each
//! deadline, exactly that peer's routes are removed at it.
//!
//! Clock discipline: sessions are set up on the real clock, then the clock
//! is paused. With a paused clock tokio jumps to the next timer whenever
//! the runtime is idle — including while a socket read is in flight — which
//! would fire the speaker's timers at unknown instants. Two things rule
//! that out: the scripted peers advertise hold time 0 (RFC 4271 §4.2), so
//! no keepalive or hold timer exists on any session; and while paused a
//! *spinner* task yields forever, so the runtime is never idle and time
//! moves only by `tokio::time::advance`. The remaining timers (IdleHold
//! restarts of the dropped peers, the initial-sync bound) change no route.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgpd::config::ListenConfig;
use bgpd::rib::RouteSource;
use bgpd::{PeerConfig, RouteUpdate, Speaker, SpeakerConfig, SpeakerHandle};
use ipnetwork::IpNetwork;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::speaker_golden::peer::{Attrs, PeerSpec, ScriptedPeer};

const AS: u32 = 64512;
/// Resolution of tokio's timers.
const TICK: Duration = Duration::from_millis(1);

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// A GR peer of the speaker under test.
struct GrPeer {
    addr: IpAddr,
    restart_time: u16,
    prefix: IpNetwork,
    session: Option<ScriptedPeer>,
}

fn start_speaker(
    subnet: u8,
    peers: &[(u8, u16)],
) -> (Speaker, mpsc::UnboundedReceiver<RouteUpdate>, Vec<GrPeer>) {
    let listen = IpAddr::V4(Ipv4Addr::new(127, 0, subnet, 1));
    let mut cfg = SpeakerConfig::new(AS, Ipv4Addr::new(10, subnet, 0, 1));
    cfg.listen = Some(ListenConfig {
        address: listen,
        port: 0,
    });
    let mut list = Vec::new();
    for (host, t) in peers {
        let addr = IpAddr::V4(Ipv4Addr::new(127, 0, subnet, *host));
        let mut p = PeerConfig::new(addr, AS);
        p.passive = true;
        cfg.peers.push(p);
        list.push(GrPeer {
            addr,
            restart_time: *t,
            prefix: net(&format!("10.{subnet}.{host}.0/26")),
            session: None,
        });
    }
    let (tx, rx) = mpsc::unbounded_channel();
    (Speaker::start(cfg, Some(tx)).unwrap(), rx, list)
}

fn spec(p: &GrPeer) -> PeerSpec {
    let IpAddr::V4(a) = p.addr else {
        unreachable!()
    };
    PeerSpec {
        asn: AS,
        router_id: Ipv4Addr::new(10, 99, a.octets()[2], a.octets()[3]),
        restart_time: Some(p.restart_time),
        notification: false,
    }
}

/// Real clock: connect every peer, announce its prefix and End-of-RIB,
/// wait until the speaker holds them all.
async fn bring_up(h: &SpeakerHandle, listen: SocketAddr, peers: &mut [GrPeer]) {
    for p in peers.iter_mut() {
        let mut s =
            ScriptedPeer::connect_retrying(p.addr, listen, &spec(p), Duration::from_secs(30)).await;
        let IpAddr::V4(nh) = p.addr else {
            unreachable!()
        };
        let mut attrs = Attrs::new(nh);
        attrs.local_pref = Some(100);
        s.announce(&[p.prefix], &attrs).await;
        s.end_of_rib().await;
        p.session = Some(s);
    }
    let want: Vec<IpNetwork> = peers.iter().map(|p| p.prefix).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while learnt(h).await != want {
        assert!(
            Instant::now() < deadline,
            "routes never arrived: {:?}",
            learnt(h).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn learnt(h: &SpeakerHandle) -> Vec<IpNetwork> {
    let mut v: Vec<IpNetwork> = h
        .routes()
        .await
        .into_iter()
        .filter(|r| matches!(r.source, RouteSource::Peer(_)))
        .map(|r| r.prefix)
        .collect();
    v.sort();
    v
}

/// Keeps the runtime busy so that a paused clock never auto-advances.
fn spinner() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        loop {
            tokio::task::yield_now().await;
        }
    })
}

/// Let the speaker act on everything that is due: many control round
/// trips (the actor's `select!` is random among ready branches, so a due
/// timer is taken within a few turns; 64 turns make missing it a 2^-64
/// event).
async fn settle(h: &SpeakerHandle) {
    for _ in 0..64 {
        h.peers().await;
        tokio::task::yield_now().await;
    }
}

fn removed(rx: &mut mpsc::UnboundedReceiver<RouteUpdate>) -> Vec<IpNetwork> {
    let mut v = Vec::new();
    while let Ok(u) = rx.try_recv() {
        match u {
            RouteUpdate::Remove { prefix } => v.push(prefix),
            RouteUpdate::Add { prefix, .. } => panic!("unexpected Add {prefix} during the sweep"),
        }
    }
    v
}

async fn advance_to(t: Instant) {
    let now = Instant::now();
    assert!(t >= now, "the clock moved past {t:?} on its own");
    tokio::time::advance(t - now).await;
}

/// Drop every session at one paused instant; wait until the speaker saw it.
async fn drop_all_paused(h: &SpeakerHandle, peers: &mut [GrPeer]) -> Instant {
    tokio::time::pause();
    let t0 = Instant::now();
    for p in peers.iter_mut() {
        p.session.take().unwrap().close();
    }
    let addrs: Vec<IpAddr> = peers.iter().map(|p| p.addr).collect();
    for _ in 0..1_000_000 {
        let peers = h.peers().await;
        if peers
            .iter()
            .filter(|p| addrs.contains(&p.address))
            .all(|p| p.state != bgpd::fsm::State::Established)
        {
            assert_eq!(Instant::now(), t0, "the paused clock must not have moved");
            return t0;
        }
        tokio::task::yield_now().await;
    }
    panic!("the speaker never saw the sessions close");
}

/// RFC 4724 §4.2: "If the session does not get re-established within the
/// Restart Time that the peer advertised previously, the Receiving Speaker
/// MUST delete all the stale routes from the peer".
#[tokio::test]
async fn gr_helper_keeps_routes_for_the_restart_time_then_sweeps() {
    let (speaker, mut rx, mut peers) = start_speaker(66, &[(11, 1), (12, 30), (13, 120)]);
    let h = speaker.handle();
    let listen = speaker.listen_addr().unwrap();
    bring_up(&h, listen, &mut peers).await;
    while rx.try_recv().is_ok() {} // the Adds of the announcements

    let spin = spinner();
    let t0 = drop_all_paused(&h, &mut peers).await;
    settle(&h).await;
    assert!(
        removed(&mut rx).is_empty(),
        "a drop without NOTIFICATION removes nothing"
    );
    let mut left: Vec<IpNetwork> = peers.iter().map(|p| p.prefix).collect();
    for p in &peers {
        let deadline = t0 + Duration::from_secs(p.restart_time.into());
        // Just before: still there, nothing removed.
        advance_to(deadline - TICK).await;
        settle(&h).await;
        assert!(
            removed(&mut rx).is_empty(),
            "restart time {} s: routes removed before the deadline",
            p.restart_time
        );
        assert_eq!(learnt(&h).await, left, "restart time {} s", p.restart_time);
        // At the deadline (tokio's timer wheel has 1 ms ticks and rounds a
        // deadline up to the next tick: give it that tick): exactly this
        // peer's route goes.
        advance_to(deadline + TICK).await;
        let mut got = Vec::new();
        for _ in 0..10_000 {
            got.extend(removed(&mut rx));
            if !got.is_empty() {
                break;
            }
            h.peers().await;
            tokio::task::yield_now().await;
        }
        settle(&h).await;
        got.extend(removed(&mut rx));
        assert_eq!(
            got,
            [p.prefix],
            "restart time {} s: the sweep at the deadline",
            p.restart_time
        );
        left.retain(|x| *x != p.prefix);
        assert_eq!(learnt(&h).await, left);
    }
    spin.abort();
    speaker.shutdown("done").await;
}

/// RFC 4724 §4.2: once the peer is back the restart timer no longer
/// applies; its stale routes wait for its End-of-RIB (bounded by Manx's
/// stale-path time, 360 s like BIRD's). A peer back after 10 s of a 30 s
/// restart time that sends no End-of-RIB keeps its routes past 30 s.
#[tokio::test]
async fn gr_helper_restart_timer_stops_when_the_peer_is_back() {
    let (speaker, mut rx, mut peers) = start_speaker(67, &[(11, 30)]);
    let h = speaker.handle();
    let listen = speaker.listen_addr().unwrap();
    bring_up(&h, listen, &mut peers).await;
    while rx.try_recv().is_ok() {}

    let spin = spinner();
    let t0 = drop_all_paused(&h, &mut peers).await;
    // The speaker's IdleHold back-off (1 s) has passed at 10 s.
    advance_to(t0 + Duration::from_secs(10)).await;
    settle(&h).await;
    // The spinner keeps the clock still while the TCP handshake runs.
    let back = ScriptedPeer::connect(peers[0].addr, listen, &spec(&peers[0]))
        .await
        .expect("reconnect on the paused clock");
    assert_eq!(Instant::now(), t0 + Duration::from_secs(10));
    settle(&h).await;
    advance_to(t0 + Duration::from_secs(31)).await;
    settle(&h).await;
    assert!(
        removed(&mut rx).is_empty(),
        "swept by the old restart timer"
    );
    assert_eq!(learnt(&h).await, [peers[0].prefix]);
    // The stale-path bound: 360 s after the peer came back, not before.
    let bound = t0 + Duration::from_secs(10 + 360);
    advance_to(bound - TICK).await;
    settle(&h).await;
    assert!(
        removed(&mut rx).is_empty(),
        "swept before the stale-path bound"
    );
    advance_to(bound + TICK).await;
    let mut got = Vec::new();
    for _ in 0..10_000 {
        got.extend(removed(&mut rx));
        if !got.is_empty() {
            break;
        }
        h.peers().await;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        got,
        [peers[0].prefix],
        "stale routes swept at the stale-path bound"
    );
    drop(back);
    spin.abort();
    speaker.shutdown("done").await;
}
