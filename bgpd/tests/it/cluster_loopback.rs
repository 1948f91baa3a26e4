//! Route reflection (RFC 4456) and graceful restart (RFC 4724) end to end
//! between in-process speakers on 127.0.3.0/24 (no namespaces needed).

use std::net::IpAddr;
use std::time::Duration;

use bgpd::config::ListenConfig;
use bgpd::fsm::State;
use bgpd::{PeerConfig, RouteUpdate, Speaker, SpeakerConfig};
use ipnetwork::IpNetwork;
use testkit::eventually_async;
use tokio::sync::mpsc;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn speaker_config(addr: &str) -> SpeakerConfig {
    let mut cfg = SpeakerConfig::new(64512, addr.parse().unwrap());
    cfg.listen = Some(ListenConfig {
        address: ip(addr),
        port: 0,
    });
    cfg.hold_time = 9;
    cfg.connect_retry_time = 1;
    cfg
}

fn peer(addr: &str, port: u16, source: &str) -> PeerConfig {
    let mut p = PeerConfig::new(ip(addr), 64512);
    p.port = port;
    p.source_address = Some(ip(source));
    p
}

/// How long sessions and routes may take.
const LIMIT: Duration = Duration::from_secs(20);

async fn learnt(s: &bgpd::SpeakerHandle) -> Vec<(IpNetwork, Option<IpAddr>)> {
    s.routes()
        .await
        .into_iter()
        .filter(|r| matches!(r.source, bgpd::rib::RouteSource::Peer(_)))
        .map(|r| (r.prefix, r.next_hop))
        .collect()
}

/// RFC 4456 §6: two clients of one reflector learn each other's prefix,
/// next hop unchanged; the reflector's own speakers see ORIGINATOR_ID loop
/// protection indirectly (no route comes back to its originator).
#[tokio::test]
async fn reflector_passes_client_routes_between_clients() {
    let mut rr_cfg = speaker_config("127.0.3.1");
    rr_cfg.cluster_id = Some("244.0.0.1".parse().unwrap());
    for c in ["127.0.3.11", "127.0.3.12"] {
        let mut p = PeerConfig::new(ip(c), 64512);
        p.passive = true;
        p.rr_client = true;
        rr_cfg.peers.push(p);
    }
    let rr = Speaker::start(rr_cfg, None).unwrap();
    let port = rr.listen_addr().unwrap().port();
    let mut clients = Vec::new();
    for (i, c) in ["127.0.3.11", "127.0.3.12"].iter().enumerate() {
        let mut cfg = speaker_config(c);
        cfg.networks = vec![net(&format!("10.70.{i}.0/26"))];
        cfg.peers.push(peer("127.0.3.1", port, c));
        clients.push(Speaker::start(cfg, None).unwrap());
    }
    let h1 = clients[0].handle();
    let h2 = clients[1].handle();
    assert!(
        eventually_async(LIMIT, || async {
            learnt(&h2).await == vec![(net("10.70.0.0/26"), Some(ip("127.0.3.11")))]
        })
        .await,
        "client 2 routes: {:?}",
        learnt(&h2).await
    );
    assert!(
        eventually_async(LIMIT, || async {
            learnt(&h1).await == vec![(net("10.70.1.0/26"), Some(ip("127.0.3.12")))]
        })
        .await,
        "client 1 routes: {:?}",
        learnt(&h1).await
    );
    for c in clients {
        c.shutdown("done").await;
    }
    rr.shutdown("done").await;
}

/// RFC 4724: A stops for a restart (no CEASE); B keeps A's routes (no
/// Remove, still in the Loc-RIB); A comes back restarting without one
/// prefix; after A's End-of-RIB only that prefix is removed, and the kept
/// one never changed.
#[tokio::test]
async fn graceful_restart_keeps_routes_and_sweeps_after_end_of_rib() {
    let mut b_cfg = speaker_config("127.0.3.22");
    let mut pa = PeerConfig::new(ip("127.0.3.21"), 64512);
    pa.passive = true;
    b_cfg.peers.push(pa);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let b = Speaker::start(b_cfg, Some(tx)).unwrap();
    let hb = b.handle();
    let port = b.listen_addr().unwrap().port();
    let a_cfg = |restarting: bool, networks: Vec<IpNetwork>| {
        let mut c = speaker_config("127.0.3.21");
        c.listen = None;
        c.restarting = restarting;
        c.networks = networks;
        c.peers.push(peer("127.0.3.22", port, "127.0.3.21"));
        c
    };
    let keep = net("10.71.0.0/26");
    let gone = net("10.71.1.0/26");
    let a = Speaker::start(a_cfg(false, vec![keep, gone]), None).unwrap();
    assert!(eventually_async(LIMIT, || async { learnt(&hb).await.len() == 2 }).await);
    a.shutdown_for_restart().await;
    assert!(
        eventually_async(LIMIT, || async {
            hb.peers()
                .await
                .iter()
                .all(|p| p.state != State::Established)
        })
        .await
    );
    assert_eq!(
        learnt(&hb).await.len(),
        2,
        "routes kept through the restart"
    );

    let a = Speaker::start(a_cfg(true, vec![keep]), None).unwrap();
    let ha = a.handle();
    tokio::time::timeout(Duration::from_secs(20), ha.synced())
        .await
        .expect("A synced");
    assert!(
        eventually_async(LIMIT, || async { learnt(&hb).await.len() == 1 }).await,
        "{:?}",
        learnt(&hb).await
    );
    let routes = hb.routes().await;
    let kept = routes
        .iter()
        .find(|r| r.prefix == keep)
        .expect("kept prefix");
    assert_eq!(
        kept.changes, 1,
        "no withdraw / re-announce flap of the kept prefix"
    );
    let mut updates = Vec::new();
    while let Ok(u) = rx.try_recv() {
        updates.push(u);
    }
    assert!(
        !updates.contains(&RouteUpdate::Remove { prefix: keep }),
        "{updates:?}"
    );
    assert_eq!(
        updates
            .iter()
            .filter(|u| **u == RouteUpdate::Remove { prefix: gone })
            .count(),
        1,
        "{updates:?}"
    );
    a.shutdown("done").await;
    b.shutdown("done").await;
}
