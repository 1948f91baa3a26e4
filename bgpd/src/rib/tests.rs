//! RIB unit tests (RFC 4271 §9.1).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use super::export::{ExportTarget, Exporter, build_updates, export};
use super::*;
use crate::packet::{AfiSafi, AsPath, MpReach, Nlri, Origin, PathAttribute, Update};

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn announce(
    prefixes: &[&str],
    as_path: Vec<u32>,
    next_hop: Ipv4Addr,
    local_pref: Option<u32>,
) -> Update {
    let mut attributes = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(AsPath::from_sequence(as_path)),
        PathAttribute::NextHop(next_hop),
    ];
    if let Some(lp) = local_pref {
        attributes.push(PathAttribute::LocalPref(lp));
    }
    Update {
        attributes,
        nlri: prefixes.iter().map(|p| Nlri::new(net(p))).collect(),
        ..Default::default()
    }
}

fn rib_with_peers() -> Rib {
    let mut rib = Rib::new(64512, Ipv4Addr::new(198, 18, 0, 1));
    rib.peer_up(PeerMeta {
        address: ip("198.18.0.2"),
        ibgp: true,
        router_id: Ipv4Addr::new(198, 18, 0, 2),
        rr_client: false,
        allow_local_as: 0,
    });
    rib.peer_up(PeerMeta {
        address: ip("198.18.0.3"),
        ibgp: false,
        router_id: Ipv4Addr::new(198, 18, 0, 3),
        rr_client: false,
        allow_local_as: 0,
    });
    rib
}

fn target(peer: &str, ibgp: bool, local: &str) -> ExportTarget {
    ExportTarget {
        peer: ip(peer),
        ibgp,
        local_as: 64512,
        local_addr: ip(local),
        families: BTreeSet::from([AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]),
        rr_client: false,
        cluster_id: None,
        next_hop_mode: crate::config::NextHopMode::Auto,
        policy: None,
    }
}

/// §9.1.2.2 a: the shorter AS_PATH wins; withdrawing it falls back to the other.
#[test]
fn shorter_as_path_wins_and_withdraw_falls_back() {
    let mut rib = rib_with_peers();
    let p = net("10.1.0.0/24");
    rib.apply_update(
        ip("198.18.0.2"),
        &announce(
            &["10.1.0.0/24"],
            vec![65001, 65002],
            Ipv4Addr::new(198, 18, 0, 2),
            None,
        ),
    );
    let changed = rib.apply_update(
        ip("198.18.0.3"),
        &announce(
            &["10.1.0.0/24"],
            vec![65010],
            Ipv4Addr::new(198, 18, 0, 3),
            None,
        ),
    );
    assert_eq!(changed, vec![p]);
    assert_eq!(
        rib.best(&p).unwrap().source(),
        RouteSource::Peer(ip("198.18.0.3"))
    );
    let withdraw = Update {
        withdrawn: vec![Nlri::new(p)],
        ..Default::default()
    };
    rib.apply_update(ip("198.18.0.3"), &withdraw);
    assert_eq!(
        rib.best(&p).unwrap().source(),
        RouteSource::Peer(ip("198.18.0.2"))
    );
    assert_eq!(
        rib.route_update(p),
        Some(RouteUpdate::Add {
            prefix: p,
            next_hops: vec![ip("198.18.0.2")],
            peer: ip("198.18.0.2")
        })
    );
}

/// §9.1.1: higher LOCAL_PREF beats a shorter path.
#[test]
fn local_pref_beats_path_length() {
    let mut rib = rib_with_peers();
    rib.apply_update(
        ip("198.18.0.2"),
        &announce(
            &["10.1.0.0/24"],
            vec![1, 2, 3],
            Ipv4Addr::new(198, 18, 0, 2),
            Some(200),
        ),
    );
    rib.apply_update(
        ip("198.18.0.3"),
        &announce(
            &["10.1.0.0/24"],
            vec![65010],
            Ipv4Addr::new(198, 18, 0, 3),
            None,
        ),
    );
    assert_eq!(
        rib.best(&net("10.1.0.0/24")).unwrap().source(),
        RouteSource::Peer(ip("198.18.0.2"))
    );
}

/// §9.1.2: an eBGP path containing our own AS is a loop and is not used.
#[test]
fn as_path_loop_is_not_eligible() {
    let mut rib = rib_with_peers();
    let changed = rib.apply_update(
        ip("198.18.0.3"),
        &announce(
            &["10.2.0.0/24"],
            vec![65010, 64512],
            Ipv4Addr::new(198, 18, 0, 3),
            None,
        ),
    );
    assert!(changed.is_empty());
    assert_eq!(
        rib.adj_in_stats(ip("198.18.0.3")),
        AdjInStats {
            received: 1,
            accepted: 0
        }
    );
}

/// RFC 7606 §2: treat-as-withdraw removes what the UPDATE announces.
#[test]
fn treat_as_withdraw_removes_the_prefixes() {
    let mut rib = rib_with_peers();
    rib.apply_update(
        ip("198.18.0.3"),
        &announce(
            &["10.3.0.0/24"],
            vec![65010],
            Ipv4Addr::new(198, 18, 0, 3),
            None,
        ),
    );
    let mut bad = announce(
        &["10.3.0.0/24"],
        vec![65010],
        Ipv4Addr::new(198, 18, 0, 3),
        None,
    );
    bad.treat_as_withdraw = true;
    let changed = rib.apply_update(ip("198.18.0.3"), &bad);
    assert_eq!(changed, vec![net("10.3.0.0/24")]);
    assert!(rib.best(&net("10.3.0.0/24")).is_none());
    assert_eq!(
        rib.route_update(net("10.3.0.0/24")),
        Some(RouteUpdate::Remove {
            prefix: net("10.3.0.0/24")
        })
    );
}

/// §9.1 / §8: when a session goes down its routes go.
#[test]
fn peer_down_flushes_adj_rib_in() {
    let mut rib = rib_with_peers();
    rib.apply_update(
        ip("198.18.0.3"),
        &announce(
            &["10.4.0.0/24", "10.5.0.0/24"],
            vec![65010],
            Ipv4Addr::new(198, 18, 0, 3),
            None,
        ),
    );
    let mut changed = rib.peer_down(ip("198.18.0.3"));
    changed.sort();
    assert_eq!(changed, vec![net("10.4.0.0/24"), net("10.5.0.0/24")]);
    assert_eq!(rib.loc_rib().count(), 0);
}

/// RFC 4760: IPv6 prefixes arrive in MP_REACH with their next hop.
#[test]
fn mp_reach_ipv6_is_installed() {
    let mut rib = rib_with_peers();
    let reach = MpReach {
        family: AfiSafi::IPV6_UNICAST,
        next_hops: vec![ip("fd42:18::3")],
        nlri: vec![Nlri::new(net("fd42:65::/64"))],
    };
    let u = Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(AsPath::from_sequence(vec![65010])),
            PathAttribute::MpReach(reach),
        ],
        ..Default::default()
    };
    rib.apply_update(ip("198.18.0.3"), &u);
    assert_eq!(
        rib.best(&net("fd42:65::/64")).unwrap().attrs.next_hop,
        Some(ip("fd42:18::3"))
    );
}

/// Local prefixes win and are exported with next hop self; eBGP gets our AS prepended.
#[test]
fn export_rules_for_ibgp_and_ebgp() {
    let mut rib = rib_with_peers();
    rib.add_local(net("10.65.0.0/26"));
    rib.apply_update(
        ip("198.18.0.2"),
        &announce(
            &["10.7.0.0/24"],
            vec![],
            Ipv4Addr::new(198, 18, 0, 2),
            Some(100),
        ),
    );
    let local = net("10.65.0.0/26");

    let to_ibgp = export(
        &local,
        rib.best(&local),
        &target("198.18.0.9", true, "198.18.0.1"),
    )
    .unwrap();
    assert_eq!(to_ibgp.next_hop, Some(ip("198.18.0.1")));
    assert_eq!(to_ibgp.local_pref, Some(100));
    assert_eq!(to_ibgp.as_path.path_len(), 0);

    let to_ebgp = export(
        &local,
        rib.best(&local),
        &target("198.18.0.3", false, "198.18.0.1"),
    )
    .unwrap();
    assert_eq!(to_ebgp.as_path, AsPath::from_sequence(vec![64512]));
    assert_eq!(to_ebgp.local_pref, None);

    // iBGP-learnt routes are not sent to iBGP peers (no reflection), but go to eBGP peers.
    let learnt = net("10.7.0.0/24");
    assert!(
        export(
            &learnt,
            rib.best(&learnt),
            &target("198.18.0.9", true, "198.18.0.1"),
        )
        .is_none()
    );
    assert!(
        export(
            &learnt,
            rib.best(&learnt),
            &target("198.18.0.3", false, "198.18.0.1"),
        )
        .is_some()
    );
    // Never back to where it came from.
    assert!(
        export(
            &learnt,
            rib.best(&learnt),
            &target("198.18.0.2", true, "198.18.0.1"),
        )
        .is_none()
    );
    // IPv6 prefixes need an IPv6 session address for next hop self.
    rib.add_local(net("fd42:65::/122"));
    let v6 = net("fd42:65::/122");
    assert!(
        export(
            &v6,
            rib.best(&v6),
            &target("198.18.0.3", false, "198.18.0.1"),
        )
        .is_none()
    );
    let over_v6 = export(
        &v6,
        rib.best(&v6),
        &target("fd42:18::3", false, "fd42:18::1"),
    )
    .unwrap();
    assert_eq!(over_v6.next_hop, Some(ip("fd42:18::1")));
}

/// The exporter gives what `export` gives, one shared copy per distinct
/// result: prefixes of one UPDATE, and equal results from different
/// UPDATEs, point at the same attributes.
#[test]
fn exporter_shares_one_copy_per_distinct_result() {
    let mut rib = rib_with_peers();
    let eb = ip("198.18.0.3");
    let nh = Ipv4Addr::new(198, 18, 0, 3);
    rib.apply_update(
        eb,
        &announce(&["10.1.0.0/24", "10.1.1.0/24"], vec![65001], nh, None),
    );
    rib.apply_update(eb, &announce(&["10.1.2.0/24"], vec![65001], nh, None));
    rib.apply_update(eb, &announce(&["10.1.3.0/24"], vec![65002], nh, None));
    let t = target("198.18.0.9", true, "198.18.0.1");
    let mut exporter = Exporter::new(&t);
    let got: Vec<_> = ["10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"]
        .iter()
        .map(|p| {
            let p = net(p);
            let a = exporter.export(&p, rib.best(&p)).expect("exported");
            assert_eq!(*a, export(&p, rib.best(&p), &t).unwrap());
            a
        })
        .collect();
    assert!(Arc::ptr_eq(&got[0], &got[1]), "one UPDATE, one copy");
    assert!(Arc::ptr_eq(&got[0], &got[2]), "equal results share");
    assert!(!Arc::ptr_eq(&got[0], &got[3]));
    assert_eq!(exporter.export(&net("10.9.0.0/24"), None), None);
}

#[test]
fn build_updates_groups_and_splits_families() {
    let mut attrs = PathAttrs::local();
    attrs.next_hop = Some(ip("198.18.0.1"));
    let mut v6 = PathAttrs::local();
    v6.next_hop = Some(ip("fd42:18::1"));
    let (attrs, v6) = (Arc::new(attrs), Arc::new(v6));
    let updates = build_updates(vec![
        (net("10.0.0.0/24"), Some(attrs.clone())),
        (net("10.0.1.0/24"), Some(attrs)),
        (net("fd42::/64"), Some(v6)),
        (net("10.9.0.0/24"), None),
        (net("fd42:9::/64"), None),
    ]);
    assert_eq!(updates.len(), 4);
    assert_eq!(updates[0].withdrawn.len(), 1);
    assert!(updates[1].mp_unreach().is_some());
    assert_eq!(updates[2].nlri.len(), 2);
    assert_eq!(updates[2].next_hop(), Some(Ipv4Addr::new(198, 18, 0, 1)));
    assert_eq!(updates[3].mp_reach().unwrap().nlri.len(), 1);
    // Every UPDATE encodes within 4096 octets, even for many prefixes.
    let many: Vec<_> = (0..2000u32)
        .map(|i| {
            (
                IpNetwork::V4(
                    ipnetwork::Ipv4Network::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24)
                        .unwrap(),
                ),
                None,
            )
        })
        .collect();
    for u in build_updates(many) {
        let mut buf = Vec::new();
        crate::packet::encode_message(
            &crate::packet::Message::Update(u),
            &Default::default(),
            &mut buf,
        )
        .unwrap();
        assert!(buf.len() <= 4096);
    }
}

/// What a prefix costs in the RIB, before the maps' own overhead (a
/// B-tree filled in prefix order is about half full): each Adj-RIB-In path
/// and each Loc-RIB entry is a prefix and two pointers' worth, the
/// attributes and the peer shared by `Arc`. A 100k-prefix flood through a
/// reflector holds one of each per prefix.
#[test]
fn per_prefix_entries_stay_small() {
    use std::mem::size_of;
    assert_eq!(size_of::<IpNetwork>(), 18);
    assert_eq!(size_of::<BestPath>(), 16, "two pointers: attributes, peer");
    assert_eq!(size_of::<super::InPath>(), 16, "a pointer and two flags");
    assert_eq!(
        size_of::<super::LocEntry>(),
        24,
        "best path and change count"
    );
    assert_eq!(
        size_of::<Option<BestPath>>(),
        16,
        "previous best paths, per changed prefix"
    );
}

/// §9.1.2 loop check and allowas-in (BIRD's `allow local as N`): a path
/// from an eBGP peer with our AS in its AS_PATH is a loop unless the peer is
/// allowed that many occurrences (two racks in one AS behind a spine).
#[test]
fn allow_local_as_accepts_our_as_up_to_n_times() {
    let mut rib = Rib::new(64512, Ipv4Addr::new(198, 18, 0, 1));
    for (last, allow) in [(2u8, 0u8), (3, 1)] {
        rib.peer_up(PeerMeta {
            address: IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)),
            ibgp: false,
            router_id: Ipv4Addr::new(198, 18, 0, last),
            rr_client: false,
            allow_local_as: allow,
        });
    }
    let once = announce(
        &["10.90.1.0/26"],
        vec![65001, 64512],
        Ipv4Addr::new(198, 18, 0, 2),
        None,
    );
    let twice = announce(
        &["10.90.2.0/26"],
        vec![65001, 64512, 65002, 64512],
        Ipv4Addr::new(198, 18, 0, 3),
        None,
    );
    // Not allowed: a loop.
    rib.apply_update(ip("198.18.0.2"), &once);
    assert!(rib.best(&net("10.90.1.0/26")).is_none());
    assert_eq!(rib.adj_in_stats(ip("198.18.0.2")).accepted, 0);
    // Allowed once: accepted once, refused twice.
    let mut once3 = once.clone();
    if let PathAttribute::NextHop(nh) = &mut once3.attributes[2] {
        *nh = Ipv4Addr::new(198, 18, 0, 3);
    }
    rib.apply_update(ip("198.18.0.3"), &once3);
    assert_eq!(
        rib.best(&net("10.90.1.0/26")).unwrap().source(),
        RouteSource::Peer(ip("198.18.0.3"))
    );
    rib.apply_update(ip("198.18.0.3"), &twice);
    assert!(rib.best(&net("10.90.2.0/26")).is_none());
}

/// Calico's prefixAdvertisements: an originated prefix inside a CIDR of the
/// policy carries its standard and large communities (exported as
/// COMMUNITIES, RFC 1997, and LARGE_COMMUNITY, RFC 8092); one outside does
/// not; a policy change re-announces what changed.
#[test]
fn local_communities_go_on_the_originated_prefixes_inside_their_cidr() {
    let mut rib = Rib::new(64512, Ipv4Addr::new(198, 18, 0, 1));
    rib.add_local(net("10.96.0.0/12"));
    rib.add_local(net("10.65.1.0/26"));
    let changed = rib.set_local_communities(vec![LocalCommunities {
        cidr: net("10.64.0.0/10"),
        standard: vec![(65001 << 16) | 100],
        large: vec![(65001, 1, 2)],
    }]);
    assert_eq!(changed.len(), 2);
    let best = rib.best(&net("10.96.0.0/12")).unwrap();
    assert_eq!(best.attrs.communities, [(65001 << 16) | 100]);
    assert_eq!(
        best.attrs.transitive,
        [PathAttribute::LargeCommunities(vec![(65001, 1, 2)])]
    );
    // Outside the CIDR (10.128.0.0/10 holds neither): nothing.
    rib.add_local(net("10.200.0.0/24"));
    assert!(
        rib.best(&net("10.200.0.0/24"))
            .unwrap()
            .attrs
            .communities
            .is_empty()
    );
    // The same policy again changes nothing; none clears them.
    assert!(
        rib.set_local_communities(vec![LocalCommunities {
            cidr: net("10.64.0.0/10"),
            standard: vec![(65001 << 16) | 100],
            large: vec![(65001, 1, 2)],
        }])
        .is_empty()
    );
    rib.set_local_communities(Vec::new());
    assert!(
        rib.best(&net("10.96.0.0/12"))
            .unwrap()
            .attrs
            .communities
            .is_empty()
    );
}

fn policy(filter: crate::policy::Filter) -> Option<Arc<crate::policy::Policy>> {
    Some(Arc::new(crate::policy::Policy::new(vec![filter])))
}

fn reject(cidr: &str) -> crate::policy::Rule {
    use crate::policy::{Action, MatchOperator, PrefixMatch, Rule};
    Rule::prefix(
        Action::Reject,
        PrefixMatch::new(MatchOperator::Equal, net(cidr), None, None),
    )
}

/// Import filters: a rejected path is held but never best, and a changed
/// policy is applied to what is held (no ROUTE-REFRESH needed, RFC 2918).
#[test]
fn import_policy_holds_rejected_paths_and_reapplies_live() {
    let mut rib = rib_with_peers();
    let tor = ip("198.18.0.3");
    let filter = crate::policy::Filter {
        name: "tor".into(),
        import_v4: vec![reject("10.200.1.0/26")],
        ..Default::default()
    };
    assert!(rib.set_import_policy(tor, policy(filter)).is_empty());
    let changed = rib.apply_update(
        tor,
        &announce(
            &["10.200.0.0/26", "10.200.1.0/26"],
            vec![65001],
            Ipv4Addr::new(198, 18, 0, 3),
            None,
        ),
    );
    assert_eq!(changed, vec![net("10.200.0.0/26")]);
    assert!(rib.best(&net("10.200.1.0/26")).is_none());
    assert_eq!(
        rib.adj_in_stats(tor),
        AdjInStats {
            received: 2,
            accepted: 1
        }
    );
    // The filter goes: the held path becomes best, nothing asked of the peer.
    assert_eq!(rib.set_import_policy(tor, None), vec![net("10.200.1.0/26")]);
    assert!(rib.best(&net("10.200.1.0/26")).is_some());
    // A policy without rules is none; setting the same again changes nothing.
    let empty = policy(crate::policy::Filter::default());
    assert!(rib.set_import_policy(tor, empty).is_empty());
    // Back: the path leaves the Loc-RIB again.
    let filter = crate::policy::Filter {
        name: "tor".into(),
        import_v4: vec![reject("10.200.0.0/26")],
        ..Default::default()
    };
    assert_eq!(
        rib.set_import_policy(tor, policy(filter.clone())),
        vec![net("10.200.0.0/26")]
    );
    assert!(rib.set_import_policy(tor, policy(filter)).is_empty());
    assert!(rib.best(&net("10.200.0.0/26")).is_none());
}

/// Export filters: a rejected prefix is not exported, whatever the cache
/// holds for paths with the same attributes; others follow the rules.
#[test]
fn export_policy_rejects_by_prefix_before_the_cache() {
    let mut rib = rib_with_peers();
    rib.add_local(net("10.67.0.0/26"));
    rib.add_local(net("10.67.1.0/26"));
    let mut t = target("198.18.0.3", false, "198.18.0.1");
    t.policy = policy(crate::policy::Filter {
        name: "tor".into(),
        export_v4: vec![reject("10.67.1.0/26")],
        ..Default::default()
    });
    let mut ex = Exporter::new(&t);
    let a = net("10.67.0.0/26");
    let b = net("10.67.1.0/26");
    assert!(ex.export(&a, rib.best(&a)).is_some());
    assert!(ex.export(&b, rib.best(&b)).is_none());
    assert!(export(&b, rib.best(&b), &t).is_none());
    t.policy = None;
    assert!(export(&b, rib.best(&b), &t).is_some());
}
