//! Actor internals: timer slots on a paused clock, family negotiation.

use std::time::Duration;

use super::peer::{Slot, negotiated_families};
use crate::fsm::{Fsm, FsmConfig, Input, Output, Timer};
use crate::packet::{AfiSafi, Capability, Open};

fn fsm() -> Fsm {
    Fsm::new(FsmConfig {
        local_as: 64512,
        router_id: "198.18.0.1".parse().unwrap(),
        peer_as: 64512,
        hold_time: 90,
        connect_retry: Duration::from_secs(5),
        capabilities: FsmConfig::default_capabilities(64512),
    })
}

/// The actor arms the slot timers the FSM asks for and fires exactly the
/// due ones: ConnectRetry after 5 s (RFC 4271 §8.2.2, Manx default).
#[tokio::test(start_paused = true)]
async fn slot_timers_fire_when_due() {
    let mut slot = Slot::new(fsm());
    for o in slot.fsm.process(Input::ManualStart) {
        if let Output::StartTimer(t, d) = o {
            slot.timers[t.index()] = Some(tokio::time::Instant::now() + d);
        }
    }
    let deadline = slot.next_deadline().expect("ConnectRetry armed");
    tokio::time::advance(Duration::from_millis(4999)).await;
    assert!(slot.take_expired(tokio::time::Instant::now()).is_empty());
    tokio::time::sleep_until(deadline).await;
    assert_eq!(
        slot.take_expired(tokio::time::Instant::now()),
        vec![Timer::ConnectRetry]
    );
    assert!(slot.next_deadline().is_none(), "fired timers are cleared");
}

/// RFC 4760 §8: only families both sides announce; none announced means IPv4.
#[test]
fn families_are_the_intersection() {
    let local = FsmConfig::default_capabilities(64512);
    let v6_only = Open::new(
        65001,
        90,
        "198.18.0.2".parse().unwrap(),
        vec![Capability::Multiprotocol(AfiSafi::IPV6_UNICAST)],
    );
    assert_eq!(
        negotiated_families(&local, &v6_only)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![AfiSafi::IPV6_UNICAST]
    );
    let plain = Open::new(65001, 90, "198.18.0.2".parse().unwrap(), vec![]);
    assert_eq!(
        negotiated_families(&local, &plain)
            .into_iter()
            .collect::<Vec<_>>(),
        vec![AfiSafi::IPV4_UNICAST]
    );
}

/// A speaker stopped and started again in the same process on the same
/// port (manx-node does this when its route-reflector cluster id changes)
/// binds at once: the old listener is closed before `shutdown` returns.
/// Repeated, since the race only shows when the runtime is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_speaker_rebinds_its_port_at_once() {
    use crate::config::{ListenConfig, SpeakerConfig};
    use crate::speaker::Speaker;
    let mut cfg = SpeakerConfig::new(64512, "127.0.0.1".parse().unwrap());
    cfg.listen = Some(ListenConfig {
        address: "127.0.0.1".parse().unwrap(),
        port: 0,
    });
    let first = Speaker::start(cfg.clone(), None).expect("first speaker");
    let port = first.listen_addr().expect("listening").port();
    cfg.listen = Some(ListenConfig {
        address: "127.0.0.1".parse().unwrap(),
        port,
    });
    let mut sp = first;
    for round in 0..20 {
        // Keep the runtime busy so an aborted task is not dropped at once.
        let busy: Vec<_> = (0..8)
            .map(|_| {
                tokio::spawn(async {
                    for _ in 0..200 {
                        tokio::task::yield_now().await
                    }
                })
            })
            .collect();
        if round % 2 == 0 {
            sp.shutdown("restart").await;
        } else {
            sp.shutdown_for_restart().await;
        }
        sp = Speaker::start(cfg.clone(), None)
            .unwrap_or_else(|e| panic!("round {round}: restart failed: {e}"));
        for b in busy {
            b.await.unwrap();
        }
    }
    sp.shutdown("done").await;
}

/// Desired state collapses to the latest: a flood of set_networks and
/// announce/withdraw calls while the actor is busy is applied as its end
/// state, in call order (set_networks overrides what came before it,
/// announce/withdraw after it add to it), and a query sees everything set
/// before it was asked.
#[tokio::test]
async fn desired_state_collapses_to_the_latest() {
    use crate::config::{PeerConfig, SpeakerConfig};
    use crate::speaker::Speaker;
    let cfg = SpeakerConfig::new(64512, "127.0.0.1".parse().unwrap());
    let sp = Speaker::start(cfg, None).expect("speaker");
    let h = sp.handle();
    let net = |i: u32| -> ipnetwork::IpNetwork {
        ipnetwork::Ipv4Network::new((0x0a00_0000 + (i << 6)).into(), 26)
            .unwrap()
            .into()
    };
    // The current-thread runtime runs the actor only when we await: all
    // of these wait in the slot, latest per kind.
    for round in 0..10_000 {
        h.set_networks((0..50).map(|i| net(round * 50 + i)).collect());
        h.set_peers(vec![PeerConfig::new(
            format!("127.0.9.{}", round % 200 + 1).parse().unwrap(),
            64512,
        )]);
    }
    {
        let d = h.desired.state.lock().unwrap();
        assert_eq!(d.networks.as_ref().map(Vec::len), Some(50));
        assert!(d.originate.is_empty());
    }
    // After the last set_networks: these add to it, latest per prefix.
    let last: Vec<_> = (0..50).map(|i| net(9_999 * 50 + i)).collect();
    let extra = net(1_000_000);
    h.desired.update(|d| {
        d.originate.insert(extra, true);
        d.originate.insert(last[0], false);
    });
    let routes = h.routes().await;
    let mut want: Vec<_> = last[1..].to_vec();
    want.push(extra);
    want.sort();
    let got: Vec<_> = routes.iter().map(|r| r.prefix).collect();
    assert_eq!(got, want);
    let peers = h.peers().await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].address.to_string(), "127.0.9.200");
    // announce/withdraw answer once applied.
    h.withdraw(extra).await;
    h.announce(last[0]).await;
    assert_eq!(h.routes().await.len(), 50);
    sp.shutdown("done").await;
    // A stopped speaker answers at once.
    assert!(h.routes().await.is_empty());
    h.announce(extra).await;
}
