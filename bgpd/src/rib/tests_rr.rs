//! Route reflection (RFC 4456), the full decision process (RFC 4271
//! §9.1.2.2 with RFC 4456 §9) and graceful-restart stale paths (RFC 4724).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use super::export::{ExportTarget, export};
use super::*;
use crate::config::NextHopMode;
use crate::packet::{AfiSafi, AsPath, Nlri, Origin, PathAttribute, Update};

const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLUSTER: Ipv4Addr = Ipv4Addr::new(244, 0, 0, 1);

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}
fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn update(prefix: &str, extra: Vec<PathAttribute>, as_path: Vec<u32>, nh: &str) -> Update {
    let mut attributes = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(AsPath::from_sequence(as_path)),
        PathAttribute::NextHop(v4(nh)),
    ];
    attributes.extend(extra);
    Update {
        attributes,
        nlri: vec![Nlri::new(net(prefix))],
        ..Default::default()
    }
}

fn meta(addr: &str, ibgp: bool, rr_client: bool) -> PeerMeta {
    PeerMeta {
        address: IpAddr::V4(v4(addr)),
        ibgp,
        router_id: v4(addr),
        rr_client,
        allow_local_as: 0,
    }
}

fn reflector() -> Rib {
    let mut rib = Rib::new(64512, ME);
    rib.set_cluster_id(Some(CLUSTER));
    rib.peer_up(meta("198.18.0.10", true, true)); // client
    rib.peer_up(meta("198.18.0.11", true, true)); // client
    rib.peer_up(meta("198.18.0.20", true, false)); // non-client
    rib.peer_up(meta("198.18.0.30", false, false)); // eBGP
    rib
}

fn target(addr: &str, ibgp: bool, rr_client: bool, cluster: Option<Ipv4Addr>) -> ExportTarget {
    ExportTarget {
        peer: IpAddr::V4(v4(addr)),
        ibgp,
        local_as: 64512,
        local_addr: IpAddr::V4(ME),
        families: BTreeSet::from([AfiSafi::IPV4_UNICAST]),
        rr_client,
        cluster_id: cluster,
        next_hop_mode: NextHopMode::Auto,
        policy: None,
    }
}

fn from(addr: &str) -> IpAddr {
    IpAddr::V4(v4(addr))
}

/// RFC 4456 §6: from a client → every client and non-client, with
/// ORIGINATOR_ID and our CLUSTER_ID prepended; next hop unchanged (§10).
#[test]
fn client_routes_reflect_to_everyone() {
    let mut rib = reflector();
    let p = net("10.65.0.0/26");
    rib.apply_update(
        from("198.18.0.10"),
        &update("10.65.0.0/26", vec![], vec![], "198.18.0.10"),
    );
    let best = rib.best(&p);
    let to_client = export(&p, best, &target("198.18.0.11", true, true, Some(CLUSTER))).unwrap();
    assert_eq!(to_client.originator_id, Some(v4("198.18.0.10")));
    assert_eq!(to_client.cluster_list, vec![CLUSTER]);
    assert_eq!(to_client.next_hop, Some(from("198.18.0.10")));
    assert!(export(&p, best, &target("198.18.0.20", true, false, Some(CLUSTER))).is_some());
    // Never back to the client it came from.
    assert!(export(&p, best, &target("198.18.0.10", true, true, Some(CLUSTER))).is_none());
    // eBGP: no RR attributes, next hop self.
    let ebgp = export(
        &p,
        best,
        &target("198.18.0.30", false, false, Some(CLUSTER)),
    )
    .unwrap();
    assert_eq!((ebgp.originator_id, ebgp.cluster_list.len()), (None, 0));
    assert_eq!(ebgp.next_hop, Some(IpAddr::V4(ME)));
    // Without a cluster id we are no reflector: iBGP → iBGP is not passed on.
    assert!(export(&p, best, &target("198.18.0.11", true, true, None)).is_none());
}

/// RFC 4456 §6: from a non-client → clients only; an existing
/// ORIGINATOR_ID is kept and the CLUSTER_LIST grows at the front.
#[test]
fn non_client_routes_reflect_to_clients_only() {
    let mut rib = reflector();
    let p = net("10.66.0.0/26");
    let extra = vec![
        PathAttribute::OriginatorId(v4("198.18.9.9")),
        PathAttribute::ClusterList(vec![v4("244.0.0.9")]),
    ];
    rib.apply_update(
        from("198.18.0.20"),
        &update("10.66.0.0/26", extra, vec![], "198.18.9.9"),
    );
    let best = rib.best(&p);
    let to_client = export(&p, best, &target("198.18.0.10", true, true, Some(CLUSTER))).unwrap();
    assert_eq!(to_client.originator_id, Some(v4("198.18.9.9")));
    assert_eq!(to_client.cluster_list, vec![CLUSTER, v4("244.0.0.9")]);
    assert!(export(&p, best, &target("198.18.0.21", true, false, Some(CLUSTER))).is_none());
}

/// RFC 4456 §8: our router id as ORIGINATOR_ID, or our cluster id in the
/// CLUSTER_LIST, makes a path ineligible.
#[test]
fn reflection_loops_are_rejected() {
    let mut rib = reflector();
    let own = vec![PathAttribute::OriginatorId(ME)];
    assert!(
        rib.apply_update(
            from("198.18.0.10"),
            &update("10.1.0.0/26", own, vec![], "198.18.0.10")
        )
        .is_empty()
    );
    let looped = vec![PathAttribute::ClusterList(vec![v4("244.0.0.7"), CLUSTER])];
    assert!(
        rib.apply_update(
            from("198.18.0.10"),
            &update("10.2.0.0/26", looped, vec![], "198.18.0.10")
        )
        .is_empty()
    );
    assert_eq!(
        rib.adj_in_stats(from("198.18.0.10")),
        AdjInStats {
            received: 2,
            accepted: 0
        }
    );
    // The same CLUSTER_LIST is fine for a speaker of another cluster.
    let mut other = Rib::new(64512, ME);
    other.peer_up(meta("198.18.0.10", true, false));
    let looped = vec![PathAttribute::ClusterList(vec![CLUSTER])];
    assert_eq!(
        other
            .apply_update(
                from("198.18.0.10"),
                &update("10.2.0.0/26", looped, vec![], "198.18.0.10")
            )
            .len(),
        1
    );
}

fn two_paths(
    a: Vec<PathAttribute>,
    a_path: Vec<u32>,
    b: Vec<PathAttribute>,
    b_path: Vec<u32>,
) -> IpAddr {
    let mut rib = Rib::new(64512, ME);
    rib.peer_up(meta("198.18.0.2", true, false));
    rib.peer_up(meta("198.18.0.3", true, false));
    rib.apply_update(
        from("198.18.0.3"),
        &update("10.9.0.0/24", b, b_path, "198.18.0.3"),
    );
    rib.apply_update(
        from("198.18.0.2"),
        &update("10.9.0.0/24", a, a_path, "198.18.0.2"),
    );
    match rib.best(&net("10.9.0.0/24")).unwrap().source() {
        RouteSource::Peer(p) => p,
        RouteSource::Local => unreachable!(),
    }
}

/// §9.1.2.2 (b): lower ORIGIN wins.
#[test]
fn lower_origin_wins() {
    let mut rib = Rib::new(64512, ME);
    rib.peer_up(meta("198.18.0.2", true, false));
    rib.peer_up(meta("198.18.0.3", true, false));
    let mut u = update("10.9.0.0/24", vec![], vec![65001], "198.18.0.2");
    u.attributes[0] = PathAttribute::Origin(Origin::Incomplete);
    rib.apply_update(from("198.18.0.2"), &u);
    rib.apply_update(
        from("198.18.0.3"),
        &update("10.9.0.0/24", vec![], vec![65001], "198.18.0.3"),
    );
    assert_eq!(
        rib.best(&net("10.9.0.0/24")).unwrap().source(),
        RouteSource::Peer(from("198.18.0.3"))
    );
}

/// §9.1.2.2 (c): MED is compared only between paths from the same
/// neighbouring AS.
#[test]
fn med_only_within_the_same_neighbour_as() {
    let med = |m| vec![PathAttribute::MultiExitDisc(m)];
    // Same neighbour AS: lower MED (from .3) wins over the lower router id.
    assert_eq!(
        two_paths(med(50), vec![65001], med(10), vec![65001]),
        from("198.18.0.3")
    );
    // Different neighbour AS: MED ignored, lower router id (.2) wins.
    assert_eq!(
        two_paths(med(50), vec![65001], med(10), vec![65002]),
        from("198.18.0.2")
    );
}

/// §9.1.2.2 (d): eBGP-learnt over iBGP-learnt.
#[test]
fn ebgp_beats_ibgp() {
    let mut rib = Rib::new(64512, ME);
    rib.peer_up(meta("198.18.0.2", true, false));
    rib.peer_up(meta("198.18.0.3", false, false));
    rib.apply_update(
        from("198.18.0.2"),
        &update("10.9.0.0/24", vec![], vec![65001], "198.18.0.2"),
    );
    rib.apply_update(
        from("198.18.0.3"),
        &update("10.9.0.0/24", vec![], vec![65001], "198.18.0.3"),
    );
    assert_eq!(
        rib.best(&net("10.9.0.0/24")).unwrap().source(),
        RouteSource::Peer(from("198.18.0.3"))
    );
}

/// RFC 4456 §9: ORIGINATOR_ID replaces the router id in (f), then the
/// shorter CLUSTER_LIST wins, then (g) the lower peer address.
#[test]
fn originator_id_then_cluster_list_then_address() {
    let orig = |id: &str| PathAttribute::OriginatorId(v4(id));
    // .2's path carries originator 200.0.0.1 (> .3's router id) → .3 wins.
    assert_eq!(
        two_paths(vec![orig("200.0.0.1")], vec![], vec![], vec![]),
        from("198.18.0.3")
    );
    // Same originator: the shorter CLUSTER_LIST (.3) wins.
    let cl = |n: usize| PathAttribute::ClusterList(vec![v4("244.0.0.5"); n]);
    assert_eq!(
        two_paths(
            vec![orig("1.1.1.1"), cl(2)],
            vec![],
            vec![orig("1.1.1.1"), cl(1)],
            vec![]
        ),
        from("198.18.0.3")
    );
    // Everything equal: the lower peer address (.2).
    assert_eq!(
        two_paths(
            vec![orig("1.1.1.1"), cl(1)],
            vec![],
            vec![orig("1.1.1.1"), cl(1)],
            vec![]
        ),
        from("198.18.0.2")
    );
}

/// RFC 4724 §4.2: stale paths stay best (no change, so no Remove) until
/// swept; re-announced ones survive the sweep; the rest go.
#[test]
fn graceful_restart_keeps_then_sweeps_stale_paths() {
    let mut rib = reflector();
    let peer = from("198.18.0.10");
    for p in ["10.1.0.0/26", "10.2.0.0/26"] {
        rib.apply_update(peer, &update(p, vec![], vec![], "198.18.0.10"));
    }
    rib.take_previous();
    assert_eq!(rib.peer_down_graceful(peer), 2);
    assert!(
        rib.take_previous().is_empty(),
        "marking stale changes no best path"
    );
    assert!(rib.best(&net("10.1.0.0/26")).is_some());
    assert!(rib.has_stale(peer));
    // Back: re-announces 10.1 only (same attributes: no best-path change).
    assert!(
        rib.apply_update(peer, &update("10.1.0.0/26", vec![], vec![], "198.18.0.10"))
            .is_empty()
    );
    assert_eq!(rib.change_count(&net("10.1.0.0/26")), 1);
    // End-of-RIB: 10.2 is swept.
    assert_eq!(
        rib.sweep_stale(peer, Some(AfiSafi::IPV4_UNICAST)),
        vec![net("10.2.0.0/26")]
    );
    assert_eq!(
        rib.route_update(net("10.2.0.0/26")),
        Some(RouteUpdate::Remove {
            prefix: net("10.2.0.0/26")
        })
    );
    assert!(!rib.has_stale(peer));
    assert!(rib.best(&net("10.1.0.0/26")).is_some());
}
