//! Multi-node BGP topologies in network namespaces (issue #5): real
//! `manx-bgpd` processes, and BIRD 2 on either side of route reflection.
//!
//! Every node i sits on one bridge at 198.19.0.(10+i) and originates
//! 10.66.i.0/26; all are iBGP in AS 64512. Support code: `netns_topo/`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bgpd::fsm::State;
use testkit::{Daemon, Netns, eventually};

use crate::netns_topo;
use crate::netns_topo::bird::{self, BirdNode};
use crate::netns_topo::labs::*;
use crate::netns_topo::manx::{ManxNode, Neighbor, NodeSpec};
use crate::netns_topo::observer::Observer;
use crate::netns_topo::{Topo, needs, needs_bird2, node_addr, node_block};
use crate::support::MANX_LOG;

/// Issue #5: a 4-node iBGP full mesh of manx-bgpd. Every node ends with the
/// other three blocks, next hop = the originating node (RFC 4271 §5.1.3:
/// the originator sets its own address; an iBGP receiver keeps it).
#[test]
fn heavy_mesh_four_manx_nodes() {
    if !needs().ok() {
        return;
    }
    let ids = [1u8, 2, 3, 4];
    let topo = Topo::new(&ids);
    let nodes = start_mesh(&topo, &ids, |_| {});
    let converged = eventually(CONVERGE, || mesh_converged(&nodes, &ids));
    assert!(
        converged,
        "the mesh did not converge:\n{}",
        nodes
            .iter()
            .map(ManxNode::describe)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for n in &nodes {
        // Each peer sent exactly its own block (no iBGP re-advertisement
        // of iBGP-learnt routes, RFC 4271 §9.2).
        for p in n.peers() {
            assert_eq!(
                (p.prefixes_received, p.prefixes_accepted),
                (1, 1),
                "node {} from {}: {p:?}",
                n.spec.index,
                p.address
            );
        }
    }
}

/// Issue #5: two redundant manx route reflectors with the same cluster id
/// (RFC 4456 §7) and six manx clients, no mesh. Every client ends with the
/// five other clients' blocks (next hop kept: RFC 4456 §10), and holds them
/// from *both* reflectors; between the reflectors, reflected routes carry
/// their shared cluster id and are rejected (CLUSTER_LIST loop, §8).
#[test]
fn heavy_two_reflectors_six_clients() {
    if !needs().ok() {
        return;
    }
    let rrs = [1u8, 2];
    let clients = [3u8, 4, 5, 6, 7, 8];
    let cluster: Ipv4Addr = "244.0.0.1".parse().unwrap();
    let all: Vec<u8> = rrs.iter().chain(&clients).copied().collect();
    let topo = Topo::new(&all);
    let mut reflectors = Vec::new();
    for &r in &rrs {
        // A dedicated reflector: originates nothing (Calico's RR deployment).
        let mut s = NodeSpec::new(r);
        s.cluster_id = Some(cluster);
        for &c in &clients {
            s.neighbors
                .push(Neighbor::client(node_addr(r), node_addr(c)));
        }
        for &o in rrs.iter().filter(|&&o| o != r) {
            s.neighbors.push(Neighbor::ibgp(node_addr(r), node_addr(o)));
        }
        reflectors.push(ManxNode::start(&topo, s));
    }
    let mut cnodes = Vec::new();
    for &c in &clients {
        let mut s = block_node(c);
        for &r in &rrs {
            s.neighbors.push(Neighbor::ibgp(node_addr(c), node_addr(r)));
        }
        cnodes.push(ManxNode::start(&topo, s));
    }
    let client_has_all = |n: &ManxNode| {
        let got: Vec<(String, Option<IpAddr>)> =
            n.learnt().into_iter().map(|(p, nh, _)| (p, nh)).collect();
        let want: Vec<(String, Option<IpAddr>)> = expected(n.spec.index, &clients, None)
            .into_iter()
            .map(|(p, nh, _)| (p, nh))
            .collect();
        got == want
    };
    // Through both reflectors: each one's session delivered all five.
    let via_both = |n: &ManxNode| {
        rrs.iter().all(|&r| {
            n.peer(node_addr(r)).is_some_and(|p| {
                p.state == State::Established
                    && (p.prefixes_received, p.prefixes_accepted) == (5, 5)
            })
        })
    };
    let converged = eventually(CONVERGE, || {
        reflectors.iter().all(ManxNode::all_established)
            && cnodes
                .iter()
                .all(|n| n.all_established() && client_has_all(n) && via_both(n))
    });
    assert!(
        converged,
        "RR topology did not converge:\n{}",
        reflectors
            .iter()
            .chain(&cnodes)
            .map(ManxNode::describe)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for rr in &reflectors {
        // The reflector's best path to each block is the client that
        // originated it, never the other reflector.
        assert_eq!(
            rr.learnt(),
            expected(rr.spec.index, &clients, None),
            "{}",
            rr.describe()
        );
        let other = rrs.iter().find(|&&o| o != rr.spec.index).unwrap();
        let p = rr.peer(node_addr(*other)).expect("the other reflector");
        assert_eq!(
            (p.prefixes_received, p.prefixes_accepted),
            (6, 0),
            "reflector {} accepted routes from its twin in the same cluster (CLUSTER_LIST loop, RFC 4456 §8): {p:?}",
            rr.spec.index
        );
        for &c in &clients {
            let p = rr.peer(node_addr(c)).expect("client");
            assert_eq!(p.prefixes_accepted, 1, "{p:?}");
            // Split horizon: a client is not sent its own block back.
            assert_eq!(
                p.prefixes_advertised, 5,
                "reflector {} to client {c}: want the 5 other blocks",
                rr.spec.index,
            );
        }
    }
    // Either reflector alone is enough: stop one, the clients keep every
    // block through the other (no graceful restart here: it sends CEASE).
    let mut reflectors = reflectors;
    let mut gone = reflectors.remove(0);
    gone.daemon.terminate(Duration::from_secs(10));
    assert!(
        eventually(CONVERGE, || cnodes.iter().all(|n| {
            n.peer(node_addr(rrs[0]))
                .is_some_and(|p| p.state != State::Established)
                && client_has_all(n)
                && n.learnt()
                    .iter()
                    .all(|(_, _, from)| *from == ip(node_addr(rrs[1])))
        })),
        "with reflector {} stopped, clients lost routes:\n{}",
        rrs[0],
        cnodes
            .iter()
            .map(ManxNode::describe)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Issue #5: BIRD 2 as the route reflector of four manx clients. Every
/// client ends with the three other blocks, next hop the originating
/// client (BIRD keeps iBGP next hops when reflecting, RFC 4456 §10).
#[test]
fn heavy_bird2_reflector_for_manx_clients() {
    if !needs_bird2().ok() {
        return;
    }
    let lab = BirdRrLab::start();
    // BIRD holds every client's block, next hop the client.
    let want: Vec<(String, IpAddr)> = BIRD_RR_CLIENTS
        .iter()
        .map(|&c| (node_block(c), ip(node_addr(c))))
        .collect();
    assert_eq!(lab.bird.routes(), want, "{}", lab.describe());
    assert_eq!(lab.bird.established(), BIRD_RR_CLIENTS.len());
}

/// Interop of our graceful-restart helper with BIRD as the restarting
/// speaker (RFC 4724): `kill -9` of the BIRD reflector, restarted with
/// `-R`. The manx clients keep the reflected routes while it is down
/// (BIRD advertised restart time 120 s) and, once BIRD is back and has
/// sent End-of-RIB, no client route changed.
#[test]
fn heavy_kill9_bird2_reflector_manx_clients_keep_routes() {
    if !needs_bird2().ok() {
        return;
    }
    let mut lab = BirdRrLab::start();
    let before = lab.counters();
    assert_eq!(before.len(), 4 * 3, "{before:?}");
    lab.bird.kill9();
    let rr = node_addr(BIRD_RR);
    assert!(
        eventually(Duration::from_secs(20), || lab
            .clients
            .iter()
            .all(|n| n.peer(rr).is_some_and(|p| p.state != State::Established))),
        "the clients never noticed the killed BIRD:\n{}",
        lab.describe()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.counters(),
        before,
        "while BIRD was down, client routes changed or vanished:\n{}",
        lab.describe()
    );
    let BirdRrLab { topo, bird, .. } = &mut lab;
    bird.restart_graceful(topo);
    assert!(
        eventually(CONVERGE, || lab.converged()
            && lab
                .clients
                .iter()
                .all(|n| n.peer(rr).is_some_and(|p| p.prefixes_received == 3))),
        "manx clients did not resync with the restarted BIRD:\n{}",
        lab.describe()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.counters(),
        before,
        "BIRD's graceful restart flapped client routes:\n{}",
        lab.describe()
    );
}

/// Issue #5: a manx route reflector for four BIRD 2 clients; read the
/// clients' tables with `birdc -s <sock> show route`.
#[test]
fn heavy_manx_reflector_for_bird2_clients() {
    if !needs_bird2().ok() {
        return;
    }
    let rr = 0u8;
    let clients = [1u8, 2, 3, 4];
    let all: Vec<u8> = std::iter::once(rr).chain(clients).collect();
    let topo = Topo::new(&all);
    let mut s = NodeSpec::new(rr);
    s.cluster_id = Some("244.0.0.1".parse().unwrap());
    for &c in &clients {
        s.neighbors
            .push(Neighbor::client(node_addr(rr), node_addr(c)));
    }
    let manx = ManxNode::start(&topo, s);
    let birds: Vec<BirdNode> = clients
        .iter()
        .map(|&c| BirdNode::start(&topo, c, &bird::client_conf(c, rr)))
        .collect();
    // A BIRD client's BGP routes: the three other blocks via their originators.
    let bird_want = |me: u8| -> Vec<(String, IpAddr)> {
        clients
            .iter()
            .filter(|&&c| c != me)
            .map(|&c| (node_block(c), ip(node_addr(c))))
            .collect()
    };
    let converged = eventually(CONVERGE, || {
        manx.all_established()
            && manx.learnt() == expected(rr, &clients, None)
            && birds.iter().all(|b| b.routes() == bird_want(b.index))
    });
    assert!(
        converged,
        "BIRD clients of manx did not converge:\n{}\n{}",
        manx.describe(),
        birds
            .iter()
            .map(|b| format!(
                "---- bird{} show route ----\n{}",
                b.index,
                b.birdc(&["show", "route", "all"])
            ))
            .collect::<String>()
    );
    // RFC 4456 §8: the reflected routes carry ORIGINATOR_ID (the client
    // that sent them) and CLUSTER_LIST (our cluster id).
    let all_attrs = birds[0].birdc(&["show", "route", "all", &node_block(2)]);
    assert!(
        all_attrs.contains("BGP.originator_id: 198.19.0.12"),
        "{all_attrs}"
    );
    assert!(
        all_attrs.contains("BGP.cluster_list: 244.0.0.1"),
        "{all_attrs}"
    );
    for b in &birds {
        assert_eq!(b.established(), 1, "bird{}", b.index);
    }
}

/// Issue #5, RFC 4724: `kill -9` of one manx client's speaker. Its peer
/// (the reflector, a GR helper) keeps its route, still reflected, while
/// it is down; the client restarts as the restarting speaker (R bit,
/// deferred initial table) and nothing flaps: the observer, an RR client
/// like the others, sees the victim's block announced exactly once and
/// never withdrawn, and every node's per-prefix change counter stays where
/// it was before the kill.
#[test]
fn heavy_kill9_client_graceful_restart_no_flap() {
    if !needs().ok() {
        return;
    }
    let mut lab = GrLab::start(120);
    let block = node_block(VICTIM);
    let before = lab.victim_route_changes();
    assert!(
        before.iter().all(|(_, c)| c.is_some()),
        "victim's block missing before the kill: {before:?}"
    );

    lab.victim().kill9();
    let victim_addr = node_addr(VICTIM);
    assert!(
        eventually(Duration::from_secs(20), || lab
            .rr
            .peer(victim_addr)
            .is_some_and(|p| p.state != State::Established)),
        "the reflector never noticed the killed client:\n{}",
        lab.describe()
    );
    // Down, and still kept (stale) and reflected: give a withdrawal every
    // chance to show (several keepalive rounds) before looking.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.victim_route_changes(),
        before,
        "while the client was down its route changed or vanished:\n{}",
        lab.describe()
    );
    assert_eq!(lab.observer.counts(&block), (1, 0), "{}", lab.describe());

    let GrLab { topo, clients, .. } = &mut lab;
    clients[0].restart(topo);
    let back = eventually(CONVERGE, || {
        let v = &lab.clients[0];
        v.all_established()
            && v.learnt() == expected(VICTIM, &GR_CLIENTS, Some(GR_RR))
            && lab
                .rr
                .peer(victim_addr)
                .is_some_and(|p| p.state == State::Established && p.prefixes_accepted == 1)
    });
    assert!(
        back,
        "the restarted client did not resync:\n{}",
        lab.describe()
    );
    // The restarted client's End-of-RIB has swept what it did not re-send;
    // let any late UPDATE arrive before the final count.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.victim_route_changes(),
        before,
        "the restart flapped the victim's route (change counters moved):\n{}",
        lab.describe()
    );
    assert_eq!(
        lab.observer.counts(&block),
        (1, 0),
        "the observer saw the victim's block re-announced or withdrawn:\n{}",
        lab.describe()
    );
    assert_eq!(lab.observer.sessions(), (1, 0), "{}", lab.describe());
    // Nothing else moved either: the other clients' blocks were announced once.
    for &c in &GR_CLIENTS[1..] {
        assert_eq!(lab.observer.counts(&node_block(c)), (1, 0));
    }
}

/// The control for the test above (it proves the observer and the change
/// counters do see a withdrawal): a killed client that does not come back
/// within its restart time (3 s) loses its route everywhere, exactly once
/// (RFC 4724 §4.2: the helper deletes the stale routes when the restart
/// timer expires).
#[test]
fn heavy_kill9_client_not_back_in_restart_time_is_withdrawn() {
    if !needs().ok() {
        return;
    }
    let mut lab = GrLab::start(3);
    let block = node_block(VICTIM);
    lab.victim().kill9();
    let gone = eventually(CONVERGE, || {
        lab.victim_route_changes().iter().all(|(_, c)| c.is_none()) && !lab.observer.holds(&block)
    });
    assert!(
        gone,
        "the dead client's route outlived its restart time:\n{}",
        lab.describe()
    );
    assert_eq!(lab.observer.counts(&block), (1, 1), "{}", lab.describe());
    assert_eq!(lab.observer.sessions(), (1, 0), "{}", lab.describe());
    // The survivors keep each other's blocks.
    for n in &lab.clients[1..] {
        let others: Vec<u8> = GR_CLIENTS
            .iter()
            .copied()
            .filter(|&c| c != VICTIM)
            .collect();
        assert_eq!(
            n.learnt(),
            expected(n.spec.index, &others, Some(GR_RR)),
            "{}",
            n.describe()
        );
    }
}

/// RFC 4724 with the route reflector as the restarting speaker: `kill -9`
/// of the reflector, restarted with `restarting: true`. Its clients (GR
/// helpers) keep the reflected routes while it is down; back, it defers
/// its initial tables until every client sent End-of-RIB (§4.1), so no
/// client gets a partial table followed by End-of-RIB and none sweeps a
/// route: every client's change counters end where they started.
#[test]
fn heavy_kill9_reflector_graceful_restart_no_flap() {
    if !needs().ok() {
        return;
    }
    let mut lab = GrLab::start(120);
    let before = client_counters(&lab);
    assert_eq!(before.len(), GR_CLIENTS.len() * 3, "{before:?}");
    lab.rr.kill9();
    let rr_addr = node_addr(GR_RR);
    assert!(
        eventually(Duration::from_secs(20), || lab.clients.iter().all(|n| n
            .peer(rr_addr)
            .is_some_and(|p| p.state != State::Established))),
        "the clients never noticed the killed reflector:\n{}",
        lab.describe()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        client_counters(&lab),
        before,
        "while the reflector was down, clients' routes changed or vanished:\n{}",
        lab.describe()
    );
    let GrLab { topo, rr, .. } = &mut lab;
    rr.restart(topo);
    let back = eventually(CONVERGE, || {
        lab.rr.all_established()
            && lab.rr.learnt() == expected(GR_RR, &GR_CLIENTS, None)
            && lab.clients.iter().all(|n| {
                n.peer(rr_addr)
                    .is_some_and(|p| p.state == State::Established && p.prefixes_accepted == 3)
            })
    });
    assert!(
        back,
        "the restarted reflector did not resync:\n{}",
        lab.describe()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        client_counters(&lab),
        before,
        "the reflector's restart flapped client routes (change counters moved):\n{}",
        lab.describe()
    );
}

/// The Drop guards hold on a panic: a test that panics with a running
/// node leaves no namespace and no process behind.
#[test]
fn heavy_topology_cleans_up_on_panic() {
    if !needs().ok() {
        return;
    }
    let seen = std::sync::Mutex::new((Vec::new(), 0u32));
    let result = std::panic::catch_unwind(|| {
        let topo = Topo::new(&[1, 2]);
        let node = ManxNode::start(&topo, block_node(1));
        *seen.lock().unwrap() = (topo.namespaces(), node.daemon.pid());
        panic!("deliberate panic with a running topology");
    });
    assert!(result.is_err());
    let (names, pid) = seen.into_inner().unwrap();
    assert_eq!(names.len(), 3, "{names:?}");
    for n in &names {
        assert!(
            !std::path::Path::new("/run/netns").join(n).exists(),
            "namespace {n} survived the panic"
        );
    }
    assert_ne!(pid, 0);
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
    assert!(!alive, "manx-bgpd (pid {pid}) survived the panic");
}

/// Issue #5, RFC 4724 in the full mesh: `kill -9` of mesh node 1, restarted
/// with `restarting: true`. Its three peers keep its block while it is
/// down and nothing flaps when it is back: their change counters do not
/// move, and an eBGP observer of node 2 (AS 65099, our codec) is sent the
/// block once, next hop node 2 (next-hop-self toward eBGP, RFC 4271
/// §5.1.3), and never a withdrawal.
#[test]
fn heavy_kill9_mesh_node_graceful_restart_no_flap() {
    if !needs().ok() {
        return;
    }
    let ids = [1u8, 2, 3, 4];
    let obs_ix = 9u8;
    let topo = Topo::new(&[1, 2, 3, 4, obs_ix]);
    let mut nodes = start_mesh(&topo, &ids, |s| {
        if s.index == 2 {
            s.neighbors.push(Neighbor {
                address: node_addr(obs_ix),
                asn: 65099,
                passive: true,
                rr_client: false,
            });
        }
    });
    let observer = Observer::start(topo.ns(obs_ix), node_addr(obs_ix), node_addr(2), 65099);
    let victim = node_block(1);
    let describe = |nodes: &[ManxNode]| {
        format!(
            "{}\nobserver: {:?}",
            nodes
                .iter()
                .map(ManxNode::describe)
                .collect::<Vec<_>>()
                .join("\n"),
            observer.events()
        )
    };
    assert!(
        eventually(CONVERGE, || mesh_converged(&nodes, &ids)
            && ids.iter().all(|&i| observer.holds(&node_block(i)))),
        "the mesh did not converge:\n{}",
        describe(&nodes)
    );
    let before = route_counters(&nodes[1..]);
    nodes[0].kill9();
    assert!(
        eventually(Duration::from_secs(20), || nodes[1..].iter().all(|n| n
            .peer(node_addr(1))
            .is_some_and(|p| p.state != State::Established))),
        "the peers never noticed the killed node:\n{}",
        describe(&nodes)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        route_counters(&nodes[1..]),
        before,
        "while node 1 was down its peers' routes changed:\n{}",
        describe(&nodes)
    );
    nodes[0].restart(&topo);
    assert!(
        eventually(CONVERGE, || mesh_converged(&nodes, &ids)),
        "node 1 did not resync:\n{}",
        describe(&nodes)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        route_counters(&nodes[1..]),
        before,
        "node 1's restart flapped its peers' routes:\n{}",
        describe(&nodes)
    );
    let announced: Vec<_> = observer
        .events()
        .into_iter()
        .filter(|e| matches!(e, netns_topo::observer::Event::Announce(p, _) if *p == victim))
        .collect();
    assert_eq!(
        announced,
        vec![netns_topo::observer::Event::Announce(
            victim.clone(),
            Some(ip(node_addr(2)))
        )],
        "{}",
        describe(&nodes)
    );
    assert_eq!(observer.counts(&victim), (1, 0), "{}", describe(&nodes));
    assert_eq!(observer.sessions(), (1, 0), "{}", describe(&nodes));
}

/// The 4-node mesh with every node dialling every peer (no passive side,
/// unlike Calico's rule): one session per pair survives whichever way the
/// connections race (RFC 4271 §6.8 when they cross, the accepted
/// connection taking over a pending dial otherwise), the mesh converges,
/// and then stays put: no session restarts afterwards (every peer's
/// `since` is unchanged a few seconds later). Whether the two connections
/// of a pair actually cross is up to timing; the golden FSM tests cover
/// the collision rules deterministically.
#[test]
fn heavy_mesh_all_active_converges_and_stays_up() {
    if !needs().ok() {
        return;
    }
    let ids = [1u8, 2, 3, 4];
    let topo = Topo::new(&ids);
    let nodes = start_mesh(&topo, &ids, |s| {
        for n in &mut s.neighbors {
            n.passive = false;
        }
    });
    let describe = || {
        nodes
            .iter()
            .map(ManxNode::describe)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        eventually(CONVERGE, || mesh_converged(&nodes, &ids)),
        "the all-active mesh did not converge:\n{}",
        describe()
    );
    let since = |n: &ManxNode| {
        let mut v: Vec<_> = n
            .peers()
            .into_iter()
            .map(|p| (p.address, p.state.to_string(), p.since_unix))
            .collect();
        v.sort();
        v
    };
    let before: Vec<_> = nodes.iter().map(since).collect();
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<_> = nodes.iter().map(since).collect();
    assert_eq!(before, after, "sessions restarted:\n{}", describe());
    assert!(mesh_converged(&nodes, &ids), "{}", describe());
}

/// RFC 4724 §4.2: "if the Graceful Restart Capability is received but the
/// 'Forwarding State' bit for an address family is not set, then the
/// Receiving Speaker MUST immediately remove all the stale routes from the
/// peer that it is retaining for that address family." BIRD restarted
/// without `-R` advertises GR with the F bit clear (it kept no forwarding
/// state), so every manx client must drop the stale routes as soon as the
/// session is back, then learn them again: every counter moves by ≥ 2.
/// (Before the fix in speaker.rs, `Output::SessionEstablished`, the stale
/// routes were kept until BIRD's End-of-RIB and most counters stayed at 1.)
#[test]
fn heavy_bird2_restart_without_forwarding_state_sweeps_stale() {
    if !needs_bird2().ok() {
        return;
    }
    let mut lab = BirdRrLab::start();
    let before = lab.counters();
    lab.bird.kill9();
    let rr = node_addr(BIRD_RR);
    assert!(
        eventually(Duration::from_secs(20), || lab
            .clients
            .iter()
            .all(|n| n.peer(rr).is_some_and(|p| p.state != State::Established))),
        "the clients never noticed the killed BIRD:\n{}",
        lab.describe()
    );
    let BirdRrLab { topo, bird, .. } = &mut lab;
    bird.restart(topo, false);
    assert!(
        eventually(CONVERGE, || lab.converged()),
        "manx clients did not resync with the restarted BIRD:\n{}",
        lab.describe()
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = lab.counters();
    let unswept: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| a.2 < b.2 + 2)
        .map(|(b, _)| b)
        .collect();
    assert!(
        unswept.is_empty(),
        "stale routes kept across a restart without forwarding state (F bit clear): {unswept:?}\nbefore {before:?}\nafter {after:?}"
    );
}

/// `ttlSecurity` is a hop count (RFC 5082 §3, BIRD's `ttl security` with
/// `multihop`): two manx-bgpd nodes with a router between them are two hops
/// apart, so their TTL-255 segments arrive with TTL 254. With ttlSecurity 2
/// (minimum TTL 254) the session comes up; with ttlSecurity 1 (minimum 255,
/// a directly connected peer) the kernel drops every segment and it never
/// does. (The old code fixed the minimum at 254 whatever the hop count.)
#[test]
fn heavy_gtsm_ttl_security_counts_hops_through_a_router() {
    if !needs().ok() {
        return;
    }
    // a (198.19.1.1) — r (forwards) — b (198.19.2.1)
    let a = Netns::new("mxgt");
    let r = Netns::new("mxgt");
    let b = Netns::new("mxgt");
    for (side, ns, net) in [("ra", &a, 1), ("rb", &b, 2)] {
        testkit::netns::veth(&r, side, ns, "eth0");
        r.ip(&["addr", "add", &format!("198.19.{net}.254/24"), "dev", side]);
        ns.ip(&["addr", "add", &format!("198.19.{net}.1/24"), "dev", "eth0"]);
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("198.19.{net}.254"),
        ]);
    }
    r.sysctl("net.ipv4.ip_forward", "1");
    let dir = tempfile::tempdir().unwrap();
    let start = |ns: &Netns, me: &str, peer: &str, passive: bool, hops: u8| {
        let control = dir.path().join(format!("{me}-{hops}.sock"));
        let config = dir.path().join(format!("{me}-{hops}.yaml"));
        std::fs::write(
            &config,
            format!(
                "asNumber: 64512\nrouterId: {me}\nlisten: {{address: \"{me}\", port: 179}}\nholdTime: 9\nconnectRetryTime: 1\ncontrolSocket: {}\npeers:\n  - address: {peer}\n    asNumber: 64512\n    passive: {passive}\n    sourceAddress: {me}\n    ttlSecurity: {hops}\n",
                control.display()
            ),
        )
        .unwrap();
        let d = Daemon::spawn(
            ns,
            dir.path(),
            &format!("manx-{me}-{hops}"),
            env!("CARGO_BIN_EXE_manx-bgpd"),
            &["--config", config.to_str().unwrap()],
            &[MANX_LOG],
        );
        assert!(eventually(Duration::from_secs(10), || control.exists()));
        (d, control)
    };
    let established = |control: &std::path::Path| {
        bgpd::query_peers(control)
            .unwrap_or_default()
            .iter()
            .any(|p| p.state == State::Established)
    };
    // Two hops, ttlSecurity 2: up.
    {
        let (_da, ca) = start(&a, "198.19.1.1", "198.19.2.1", false, 2);
        let (_db, cb) = start(&b, "198.19.2.1", "198.19.1.1", true, 2);
        assert!(
            eventually(Duration::from_secs(20), || established(&ca)
                && established(&cb)),
            "ttlSecurity 2 across one router must establish: {:?}",
            bgpd::query_peers(&ca)
        );
    }
    // Two hops, ttlSecurity 1: never up (several connect retries).
    let (_da, ca) = start(&a, "198.19.1.1", "198.19.2.1", false, 1);
    let (_db, cb) = start(&b, "198.19.2.1", "198.19.1.1", true, 1);
    assert!(
        !eventually(Duration::from_secs(8), || established(&ca)
            || established(&cb)),
        "ttlSecurity 1 must refuse a peer two hops away"
    );
}
