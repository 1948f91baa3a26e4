use super::*;
use crate::tunnel::Vtep;
use crate::types::{LocalWorkload, RemoteBlock};

/// No kind missing from the kernel.
fn all() -> BTreeSet<Tunnel> {
    BTreeSet::new()
}
/// A kernel without IPIP.
fn no_ipip() -> BTreeSet<Tunnel> {
    BTreeSet::from([Tunnel::Ipip])
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

use fixture::input;

fn via(gw: &str, dev: &str, onlink: bool) -> NextHop {
    NextHop::Via {
        gateway: ip(gw),
        dev: dev.into(),
        onlink,
    }
}

#[test]
fn ipip_always_routes_through_tunl0_onlink() {
    let d = compute(
        &input(EncapMode::Always, EncapMode::Never),
        &DataplaneConfig::default(),
        &all(),
    );
    assert_eq!(
        d.routes[&net("10.19.1.0/26")],
        via("198.19.1.2", "tunl0", true)
    );
    assert_eq!(
        d.routes[&net("10.19.2.0/26")],
        via("198.19.9.3", "tunl0", true)
    );
    assert_eq!(d.tunnels[&Tunnel::Ipip].mtu, 1480);
    assert!(!d.tunnels.contains_key(&Tunnel::Vxlan));
    assert_eq!(d.routes[&net("10.19.0.0/26")], NextHop::Blackhole);
    assert_eq!(
        d.routes[&net("10.19.0.5/32")],
        NextHop::Device("cali0123456789a".into())
    );
}

#[test]
fn vxlan_always_routes_via_vtep_and_programs_arp_and_fdb() {
    let d = compute(
        &input(EncapMode::Never, EncapMode::Always),
        &DataplaneConfig::default(),
        &all(),
    );
    assert_eq!(
        d.routes[&net("10.19.1.0/26")],
        via("10.19.1.0", "vxlan.manx", true)
    );
    let dev = &d.tunnels[&Tunnel::Vxlan];
    assert_eq!(dev.mtu, 1450);
    assert_eq!(dev.local, Some(ip("198.19.1.1")));
    assert_eq!(dev.mac, Some(MacAddr::from_seed("a")));
    assert_eq!(
        dev.neighbours[&ip("10.19.2.0")],
        MacAddr([2, 0, 0, 0, 0, 0xc])
    );
    assert_eq!(dev.fdb[&MacAddr([2, 0, 0, 0, 0, 0xc])], ip("198.19.9.3"));
    assert!(!d.tunnels.contains_key(&Tunnel::Ipip));
}

#[test]
fn never_routes_directly_via_the_uplink() {
    let d = compute(
        &input(EncapMode::Never, EncapMode::Never),
        &DataplaneConfig::default(),
        &all(),
    );
    assert_eq!(
        d.routes[&net("10.19.1.0/26")],
        via("198.19.1.2", "eth0", false)
    );
    assert!(d.tunnels.is_empty());
}

#[test]
fn cross_subnet_is_direct_inside_the_subnet_and_tunnelled_outside() {
    for (ipip, vxlan, dev, gw) in [
        (
            EncapMode::CrossSubnet,
            EncapMode::Never,
            "tunl0",
            "198.19.9.3",
        ),
        (
            EncapMode::Never,
            EncapMode::CrossSubnet,
            "vxlan.manx",
            "10.19.2.0",
        ),
    ] {
        let d = compute(&input(ipip, vxlan), &DataplaneConfig::default(), &all());
        assert_eq!(
            d.routes[&net("10.19.1.0/26")],
            via("198.19.1.2", "eth0", false)
        );
        assert_eq!(d.routes[&net("10.19.2.0/26")], via(gw, dev, true));
    }
}

#[test]
fn without_ipip_the_pool_is_degraded_and_its_remote_routes_skipped() {
    let mut i = input(EncapMode::Always, EncapMode::Never);
    let mut other = PoolInfo::new(net("10.20.0.0/16"));
    other.encap = Some((Tunnel::Vxlan, EncapMode::Always));
    i.pools.push(other);
    i.remote_blocks.push(RemoteBlock {
        block: net("10.20.5.0/26"),
        node: "b".into(),
        node_ip: ip("198.19.1.2"),
    });
    let d = compute(&i, &DataplaneConfig::default(), &no_ipip());
    assert_eq!(
        d.degraded.get(&net("10.19.0.0/16")),
        Some(&DegradeReason::Unsupported(Tunnel::Ipip))
    );
    assert!(!d.routes.contains_key(&net("10.19.1.0/26")));
    assert!(!d.tunnels.contains_key(&Tunnel::Ipip));
    // The VXLAN pool is still programmed, and local routes too.
    assert_eq!(
        d.routes[&net("10.20.5.0/26")],
        via("10.19.1.0", "vxlan.manx", true)
    );
    assert!(d.routes.contains_key(&net("10.19.0.5/32")));
}

#[test]
fn configured_mtu_wins_and_peer_without_vtep_is_skipped() {
    let mut i = input(EncapMode::Never, EncapMode::Always);
    i.peers[0].vteps.clear();
    let cfg = DataplaneConfig {
        tunnel_mtu: BTreeMap::from([(Tunnel::Vxlan, 1400)]),
        ..DataplaneConfig::default()
    };
    let d = compute(&i, &cfg, &all());
    assert_eq!(d.tunnels[&Tunnel::Vxlan].mtu, 1400);
    assert!(!d.routes.contains_key(&net("10.19.1.0/26")));
    assert!(d.routes.contains_key(&net("10.19.2.0/26")));
}

#[test]
fn ipv6_workloads_get_host_routes_and_v6_blocks_route_directly() {
    let mut i = input(EncapMode::Never, EncapMode::Never);
    i.pools.push(PoolInfo::new(net("fd42:19:1::/64")));
    i.uplink.as_mut().unwrap().v6 = Some(net("fd42:19::1/64"));
    i.remote_blocks.push(RemoteBlock {
        block: net("fd42:19:1:0:1::/122"),
        node: "b".into(),
        node_ip: ip("fd42:19::2"),
    });
    i.workloads.push(LocalWorkload {
        ip: ip("fd42:19:1::5"),
        iface: "cali0123456789a".into(),
    });
    let d = compute(&i, &DataplaneConfig::default(), &all());
    assert!(d.ipv6);
    assert_eq!(
        d.routes[&net("fd42:19:1::5/128")],
        NextHop::Device("cali0123456789a".into())
    );
    assert_eq!(
        d.routes[&net("fd42:19:1:0:1::/122")],
        via("fd42:19::2", "eth0", false)
    );
    assert_eq!(d.workload_ifaces["cali0123456789a"], (true, true));
}

#[test]
fn ipv6_vxlan_routes_via_the_v6_vtep_on_vxlan_v6() {
    let mut i = input(EncapMode::Never, EncapMode::Never);
    let mut pool6 = PoolInfo::new(net("fd42:19:1::/64"));
    pool6.encap = Some((Tunnel::Vxlan6, EncapMode::Always));
    i.pools.push(pool6);
    i.remote_blocks.push(RemoteBlock {
        block: net("fd42:19:1::40/122"),
        node: "b".into(),
        node_ip: ip("fd42:19::2"),
    });
    i.peers[0].ip_v6 = Some(ip("fd42:19::2"));
    i.peers[0].vteps.insert(
        Tunnel::Vxlan6,
        Vtep {
            addr: ip("fd42:19:1::41"),
            mac: MacAddr([2, 0, 0, 0, 6, 0xb]),
        },
    );
    // No IPv6 uplink address yet: degraded, nothing routed.
    let d = compute(&i, &DataplaneConfig::default(), &all());
    assert_eq!(
        d.degraded.get(&net("fd42:19:1::/64")),
        Some(&DegradeReason::NoUnderlay(Tunnel::Vxlan6))
    );
    assert!(!d.tunnels.contains_key(&Tunnel::Vxlan6));
    assert!(!d.routes.contains_key(&net("fd42:19:1::40/122")));
    i.uplink.as_mut().unwrap().v6 = Some(net("fd42:19::1/64"));
    let d = compute(&i, &DataplaneConfig::default(), &all());
    assert!(d.degraded.is_empty());
    let dev = &d.tunnels[&Tunnel::Vxlan6];
    assert_eq!((dev.mtu, dev.local), (1430, Some(ip("fd42:19::1"))));
    assert_eq!(dev.mac, Some(MacAddr::from_seed("a/v6")));
    assert_eq!(
        d.routes[&net("fd42:19:1::40/122")],
        via("fd42:19:1::41", "vxlan-v6.manx", true)
    );
    assert_eq!(
        dev.neighbours[&ip("fd42:19:1::41")],
        MacAddr([2, 0, 0, 0, 6, 0xb])
    );
    assert_eq!(dev.fdb[&MacAddr([2, 0, 0, 0, 6, 0xb])], ip("fd42:19::2"));
    // The IPv4 device is not wanted by an IPv6-only VXLAN pool.
    assert!(!d.tunnels.contains_key(&Tunnel::Vxlan));
}

// Routes from outside the pools. The fixture's node `a`: uplink eth0 198.19.1.1/24,
// pool 10.19.0.0/16, own block 10.19.0.0/26 and workload 10.19.0.5.

fn ext(routes: &[(&str, &str)]) -> DataplaneInput {
    let mut i = input(EncapMode::Never, EncapMode::Never);
    i.external_routes = routes
        .iter()
        .map(|(p, nh)| (net(p), vec![ip(nh)]))
        .collect();
    i
}

fn foreign(dst: &str, gw: Option<&str>, dev: Option<&str>, proto: u8) -> ForeignRoute {
    ForeignRoute {
        dst: net(dst),
        kind: RouteKind::Unicast,
        gateway: gw.map(ip),
        dev: dev.map(Into::into),
        onlink: false,
        protocol: proto,
        metric: 0,
    }
}

fn with(i: &DataplaneInput, view: &KernelView) -> DesiredDataplane {
    compute_with(i, &DataplaneConfig::default(), &all(), view)
}

fn outcome<'a>(d: &'a DesiredDataplane, prefix: &str) -> &'a ExternalOutcome {
    &d.external[&net(prefix)].outcome
}

fn refused(d: &DesiredDataplane, prefix: &str) -> String {
    assert!(!d.routes.contains_key(&net(prefix)), "{prefix} installed");
    match outcome(d, prefix) {
        ExternalOutcome::Refused(why) => why.clone(),
        other => panic!("{prefix}: {other:?}"),
    }
}

fn unreachable(d: &DesiredDataplane, prefix: &str) -> String {
    assert!(!d.routes.contains_key(&net(prefix)), "{prefix} installed");
    match outcome(d, prefix) {
        ExternalOutcome::Unreachable(why) => why.clone(),
        other => panic!("{prefix}: {other:?}"),
    }
}

#[test]
fn external_next_hop_on_a_connected_subnet_is_used_directly() {
    // A ToR on the uplink's subnet: known without reading the kernel.
    let i = ext(&[
        ("10.200.0.0/26", "198.19.1.254"),
        ("0.0.0.0/0", "198.19.1.254"),
    ]);
    let d = compute(&i, &DataplaneConfig::default(), &all());
    assert_eq!(
        d.routes[&net("10.200.0.0/26")],
        via("198.19.1.254", "eth0", false)
    );
    assert_eq!(
        d.routes[&net("0.0.0.0/0")],
        via("198.19.1.254", "eth0", false)
    );
    assert_eq!(
        outcome(&d, "10.200.0.0/26"),
        &ExternalOutcome::Installed {
            through: None,
            left_out: vec![]
        }
    );
    // Pool routes keep their shape.
    assert_eq!(d.routes[&net("10.19.0.0/26")], NextHop::Blackhole);
    assert_eq!(
        d.routes[&net("10.19.1.0/26")],
        via("198.19.1.2", "eth0", false)
    );

    // Any link's subnet counts, not only the uplink's.
    let view = KernelView {
        addresses: vec![(net("192.0.2.1/24"), "eth1".into())],
        routes: vec![],
    };
    let d = with(&ext(&[("10.201.0.0/24", "192.0.2.9")]), &view);
    assert_eq!(
        d.routes[&net("10.201.0.0/24")],
        via("192.0.2.9", "eth1", false)
    );
}

/// `reachableBy` (calico-node's BIRD: static `route <peer>/32 via <gateway>`): a host
/// route via the gateway on its connected subnet; the peer's BGP routes, next hop the
/// peer, resolve through it ahead of a covering kernel route; a gateway off every
/// connected subnet, or a prefix another protocol already routes, is not installed.
#[test]
fn reachable_by_peer_gets_a_host_route_that_its_next_hops_follow() {
    let mut i = ext(&[("10.210.0.0/24", "203.0.113.7")]);
    i.peer_routes = [
        (ip("203.0.113.7"), ip("198.19.1.254")),
        (ip("203.0.113.8"), ip("192.0.2.1")),
        (ip("203.0.113.9"), ip("198.19.1.253")),
    ]
    .into();
    let view = KernelView {
        addresses: vec![],
        routes: vec![
            // The host's default route would take the peer elsewhere.
            foreign("0.0.0.0/0", Some("198.19.1.250"), Some("eth0"), 16),
            foreign("203.0.113.9/32", Some("198.19.1.250"), Some("eth0"), 4),
        ],
    };
    let d = with(&i, &view);
    assert_eq!(
        d.routes[&net("203.0.113.7/32")],
        via("198.19.1.254", "eth0", false)
    );
    assert_eq!(d.peer_routes[&ip("203.0.113.7")], Ok(()));
    assert_eq!(
        d.routes[&net("10.210.0.0/24")],
        via("198.19.1.254", "eth0", false)
    );
    assert_eq!(
        outcome(&d, "10.210.0.0/24"),
        &ExternalOutcome::Installed {
            through: Some(net("203.0.113.7/32")),
            left_out: vec![]
        }
    );
    assert!(!d.routes.contains_key(&net("203.0.113.8/32")));
    assert_eq!(
        d.peer_routes[&ip("203.0.113.8")],
        Err("gateway 192.0.2.1 is not on a connected subnet".into())
    );
    assert!(!d.routes.contains_key(&net("203.0.113.9/32")));
    assert_eq!(
        d.peer_routes[&ip("203.0.113.9")],
        Err("kernel already has a route for 203.0.113.9/32 (proto static); not replaced".into())
    );
    // Without the peer route the next hop follows the default route.
    i.peer_routes.clear();
    let d = with(&i, &view);
    assert_eq!(
        d.routes[&net("10.210.0.0/24")],
        via("198.19.1.250", "eth0", false)
    );
    assert!(d.peer_routes.is_empty());
}

/// `ignoredInterfaces` (calico-node: `protocol direct { interface -"eth1", -"cali*",
/// -"kube-ipvs*", "*"; }`): an ignored link's subnet is no connected subnet for BGP next
/// hops, and its device route is not followed either (BIRD never learns `proto
/// kernel` routes), so a next hop there resolves through another route or not at all;
/// a prefix inside that subnet is no longer refused as "inside a connected subnet".
#[test]
fn ignored_interfaces_are_not_connected_subnets_for_next_hops() {
    assert!(interface_matches("vpn*", "vpn0") && interface_matches("eth1", "eth1"));
    assert!(!interface_matches("eth1", "eth10") && !interface_matches("vpn*", "xvpn0"));
    assert!(interface_matches("e?h*", "eth1.100") && interface_matches("*", ""));
    let mut i = ext(&[
        ("10.220.0.0/24", "192.0.2.9"),
        ("192.0.2.128/25", "198.19.1.254"),
    ]);
    let view = KernelView {
        addresses: vec![(net("192.0.2.1/24"), "eth1".into())],
        routes: vec![foreign("192.0.2.0/24", None, Some("eth1"), RTPROT_KERNEL)],
    };
    let d = with(&i, &view);
    assert_eq!(
        d.routes[&net("10.220.0.0/24")],
        via("192.0.2.9", "eth1", false)
    );
    assert!(refused(&d, "192.0.2.128/25").starts_with("inside connected subnet 192.0.2.0/24"));

    i.ignored_interfaces = vec!["eth*".into()];
    // The uplink (eth0) matches too: its subnet is no longer connected either.
    let d = with(&i, &view);
    assert_eq!(
        unreachable(&d, "10.220.0.0/24"),
        "next hop 192.0.2.9 is on a subnet of eth1, which ignoredInterfaces (or cali*, \
         kube-ipvs*) leaves out, and no other kernel route covers it"
    );
    i.ignored_interfaces = vec!["eth1".into()];
    let mut with_default = view.clone();
    with_default
        .routes
        .push(foreign("0.0.0.0/0", Some("198.19.1.250"), Some("eth0"), 16));
    let d = with(&i, &with_default);
    assert_eq!(
        d.routes[&net("10.220.0.0/24")],
        via("198.19.1.250", "eth0", false)
    );
    assert_eq!(
        d.routes[&net("192.0.2.128/25")],
        via("198.19.1.254", "eth0", false)
    );
    // A reachableBy gateway on an ignored link still works (BIRD's static `via` finds
    // its neighbour on any interface).
    i.peer_routes = [(ip("203.0.113.7"), ip("192.0.2.254"))].into();
    let d = with(&i, &with_default);
    assert_eq!(
        d.routes[&net("203.0.113.7/32")],
        via("192.0.2.254", "eth1", false)
    );
}

#[test]
fn external_route_with_equal_next_hops_is_one_multipath_route() {
    // Two ToRs on two links (ECMP), and a third next hop nothing reaches.
    let view = KernelView {
        addresses: vec![(net("192.0.2.1/24"), "eth1".into())],
        routes: vec![],
    };
    let mut i = ext(&[]);
    i.external_routes.insert(
        net("10.200.0.0/26"),
        vec![ip("198.19.1.254"), ip("192.0.2.254"), ip("203.0.113.9")],
    );
    let d = with(&i, &view);
    let hop = |gw: &str, dev: &str| PathHop {
        gateway: ip(gw),
        dev: dev.into(),
        onlink: false,
    };
    assert_eq!(
        d.routes[&net("10.200.0.0/26")],
        NextHop::Multipath(vec![
            hop("192.0.2.254", "eth1"),
            hop("198.19.1.254", "eth0")
        ])
    );
    match outcome(&d, "10.200.0.0/26") {
        ExternalOutcome::Installed { left_out, .. } => {
            assert_eq!(left_out.len(), 1, "{left_out:?}");
            assert!(left_out[0].contains("203.0.113.9"), "{left_out:?}");
        }
        other => panic!("{other:?}"),
    }
    // Only one resolves: a plain route via it.
    i.external_routes.insert(
        net("10.200.0.0/26"),
        vec![ip("198.19.1.254"), ip("203.0.113.9")],
    );
    let d = with(&i, &view);
    assert_eq!(
        d.routes[&net("10.200.0.0/26")],
        via("198.19.1.254", "eth0", false)
    );
    // None resolves: unreachable, says why.
    i.external_routes
        .insert(net("10.200.0.0/26"), vec![ip("203.0.113.9")]);
    let d = with(&i, &view);
    assert!(unreachable(&d, "10.200.0.0/26").contains("203.0.113.9"));
}

#[test]
fn external_next_hop_resolves_recursively_through_the_kernel() {
    let mut longer = foreign("203.0.113.0/24", Some("198.19.1.250"), Some("eth0"), 4);
    longer.metric = 100;
    let view = KernelView {
        addresses: vec![(net("198.19.1.1/24"), "eth0".into())],
        routes: vec![
            foreign("198.19.1.0/24", None, Some("eth0"), 2),
            foreign("0.0.0.0/0", Some("198.19.1.253"), Some("eth0"), 16),
            longer,
            // Same destination, lower metric: the kernel's choice, and ours.
            foreign("203.0.113.0/24", Some("198.19.1.254"), Some("eth0"), 4),
            // A device route without a gateway: the next hop is on that link.
            foreign("100.64.0.0/10", None, Some("wg0"), 4),
        ],
    };
    let d = with(
        &ext(&[
            ("10.200.0.0/26", "203.0.113.7"),
            ("10.202.0.0/24", "100.64.1.1"),
            ("172.16.0.0/12", "192.0.2.1"),
        ]),
        &view,
    );
    assert_eq!(
        d.routes[&net("10.200.0.0/26")],
        via("198.19.1.254", "eth0", false)
    );
    assert_eq!(
        outcome(&d, "10.200.0.0/26"),
        &ExternalOutcome::Installed {
            through: Some(net("203.0.113.0/24")),
            left_out: vec![]
        }
    );
    assert_eq!(
        d.routes[&net("10.202.0.0/24")],
        via("100.64.1.1", "wg0", false)
    );
    // Only the host's default route covers 192.0.2.1.
    assert_eq!(
        d.routes[&net("172.16.0.0/12")],
        via("198.19.1.253", "eth0", false)
    );
    // An onlink gateway stays onlink.
    let mut onlink = foreign("203.0.113.0/24", Some("10.99.0.1"), Some("eth0"), 4);
    onlink.onlink = true;
    let view = KernelView {
        addresses: vec![],
        routes: vec![onlink],
    };
    let d = with(&ext(&[("10.200.0.0/26", "203.0.113.7")]), &view);
    assert_eq!(
        d.routes[&net("10.200.0.0/26")],
        via("10.99.0.1", "eth0", true)
    );
}

#[test]
fn external_route_with_an_unreachable_next_hop_is_not_installed_and_says_why() {
    let mut bh = foreign("192.0.2.0/24", None, None, 4);
    bh.kind = RouteKind::Blackhole;
    let view = KernelView {
        addresses: vec![(net("198.19.1.1/24"), "eth0".into())],
        routes: vec![
            bh,
            foreign("198.51.100.0/24", Some("198.19.1.9"), None, 186),
        ],
    };
    let d = with(
        &ext(&[
            ("10.200.0.0/26", "203.0.113.7"),
            ("10.201.0.0/24", "192.0.2.1"),
            ("10.202.0.0/24", "198.51.100.1"),
            ("10.203.0.0/24", "198.19.1.1"),
            ("10.204.0.0/24", "fd42:19::9"),
        ]),
        &view,
    );
    assert_eq!(
        unreachable(&d, "10.200.0.0/26"),
        "next hop 203.0.113.7 is unreachable: no connected subnet or kernel route covers it"
    );
    assert_eq!(
        unreachable(&d, "10.201.0.0/24"),
        "next hop 192.0.2.1 resolves to a blackhole route 192.0.2.0/24 (proto static)"
    );
    let multipath = unreachable(&d, "10.202.0.0/24");
    assert!(multipath.contains("multipath"), "{multipath}");
    assert_eq!(
        unreachable(&d, "10.203.0.0/24"),
        "next hop 198.19.1.1 is this node's own address"
    );
    assert!(unreachable(&d, "10.204.0.0/24").contains("address family"));
    // Every outcome is one line.
    for e in d.external.values() {
        if let ExternalOutcome::Unreachable(w) | ExternalOutcome::Refused(w) = &e.outcome {
            assert!(!w.contains('\n'), "{w}");
        }
    }
    // The Manx routes are all there.
    assert_eq!(d.routes.len(), 4, "{:?}", d.routes);
}

#[test]
fn external_route_never_takes_over_manx_connected_or_host_routes() {
    let mut i = ext(&[
        // Inside the pool (another node's block as a ToR re-announces it).
        ("10.19.1.0/26", "198.19.1.254"),
        ("10.19.9.0/24", "198.19.1.254"),
        // A block and a workload of this node outside every pool (pool deleted).
        ("10.50.0.0/26", "198.19.1.254"),
        ("10.51.0.9/32", "198.19.1.254"),
        // Inside the uplink's subnet.
        ("198.19.1.128/25", "198.19.1.254"),
        ("198.19.1.0/24", "198.19.1.254"),
        // The host's own default route.
        ("0.0.0.0/0", "198.19.1.254"),
        // Wider than the pool: fine, longest match keeps the pool's routes.
        ("10.0.0.0/8", "198.19.1.254"),
    ]);
    i.local_blocks.push(net("10.50.0.0/26"));
    i.workloads.push(LocalWorkload {
        ip: ip("10.51.0.9"),
        iface: "cali0123456789a".into(),
    });
    let mut dhcp = foreign("0.0.0.0/0", Some("198.19.1.1"), Some("eth0"), 16);
    dhcp.metric = 100;
    let view = KernelView {
        addresses: vec![(net("198.19.1.1/24"), "eth0".into())],
        routes: vec![dhcp],
    };
    let d = with(&i, &view);
    assert_eq!(
        refused(&d, "0.0.0.0/0"),
        "kernel already has a route for 0.0.0.0/0 (proto dhcp); not replaced"
    );
    // The pool's own routes are unchanged...
    assert_eq!(
        d.routes[&net("10.19.1.0/26")],
        via("198.19.1.2", "eth0", false)
    );
    assert!(refused(&d, "10.19.9.0/24").contains("inside IP pool 10.19.0.0/16"));
    assert_eq!(
        outcome(&d, "10.19.1.0/26"),
        &ExternalOutcome::Refused(
            "inside Manx's own route for 10.19.1.0/26 (a block or a workload)".into()
        )
    );
    // ...and so are this node's block and workload.
    assert_eq!(d.routes[&net("10.50.0.0/26")], NextHop::Blackhole);
    assert_eq!(
        d.routes[&net("10.51.0.9/32")],
        NextHop::Device("cali0123456789a".into())
    );
    match (outcome(&d, "10.50.0.0/26"), outcome(&d, "10.51.0.9/32")) {
        (ExternalOutcome::Refused(a), ExternalOutcome::Refused(b)) => {
            assert!(a.contains("Manx's own route for 10.50.0.0/26"), "{a}");
            assert!(b.contains("Manx's own route for 10.51.0.9/32"), "{b}");
        }
        o => panic!("{o:?}"),
    }
    for p in ["198.19.1.128/25", "198.19.1.0/24"] {
        assert_eq!(
            refused(&d, p),
            "inside connected subnet 198.19.1.0/24 (dev eth0): not routed away from the link"
        );
    }
    assert_eq!(
        d.routes[&net("10.0.0.0/8")],
        via("198.19.1.254", "eth0", false)
    );

    // Without the host's default route, the ToR's is installed.
    let d = with(&i, &KernelView::default());
    assert_eq!(
        d.routes[&net("0.0.0.0/0")],
        via("198.19.1.254", "eth0", false)
    );
}

/// WireGuard on: peers with a published key get their IPv4 blocks as allowed IPs and
/// their blocks routed `dev wireguard.manx`; a peer without a key keeps the pool's own
/// encapsulation (as Calico leaves a node without a key unencrypted).
#[test]
fn wireguard_peers_follow_the_blocks_of_nodes_with_keys() {
    let mut i = input(EncapMode::Always, EncapMode::Never);
    i.wireguard = Some(crate::types::WireguardSettings {
        port: 51820,
        mtu: None,
    });
    let key_b = wireguard::base64_encode(&[0xb; 32]);
    i.peers[0].wireguard_public_key = Some(key_b);
    i.remote_blocks.push(RemoteBlock {
        block: net("10.19.3.0/26"),
        node: "b".into(),
        node_ip: ip("198.19.1.2"),
    });
    let d = compute(&i, &DataplaneConfig::default(), &BTreeSet::new());
    let wg = d.wireguard.as_ref().expect("device wanted");
    assert_eq!((wg.mtu, wg.port), (1440, 51820));
    assert_eq!(wg.peers.len(), 1);
    let b = &wg.peers[&[0xb; 32]];
    assert_eq!(b.endpoint, "198.19.1.2:51820".parse().unwrap());
    assert_eq!(
        b.allowed_ips,
        [
            net("10.19.1.0/26"),
            net("10.19.3.0/26"),
            net("198.19.1.2/32")
        ]
    );
    for block in ["10.19.1.0/26", "10.19.3.0/26"] {
        assert_eq!(
            d.routes[&net(block)],
            NextHop::Device(wireguard::DEVICE.into()),
            "{block}"
        );
    }
    // c has no key: its block goes through tunl0 as before.
    assert!(matches!(
        &d.routes[&net("10.19.2.0/26")],
        NextHop::Via { dev, .. } if dev == "tunl0"
    ));
    // Off: no device, no route through it.
    i.wireguard = None;
    let d = compute(&i, &DataplaneConfig::default(), &BTreeSet::new());
    assert!(d.wireguard.is_none());
    assert!(
        !d.routes
            .values()
            .any(|nh| *nh == NextHop::Device(wireguard::DEVICE.into()))
    );
}

#[test]
fn wireguard_mtu_is_configured_or_the_uplinks_minus_60_and_a_shared_key_is_used_once() {
    let mut i = input(EncapMode::Never, EncapMode::Never);
    i.wireguard = Some(crate::types::WireguardSettings {
        port: 6000,
        mtu: Some(1400),
    });
    let same = wireguard::base64_encode(&[7; 32]);
    i.peers[0].wireguard_public_key = Some(same.clone());
    i.peers[1].wireguard_public_key = Some(same);
    let d = compute(&i, &DataplaneConfig::default(), &BTreeSet::new());
    let wg = d.wireguard.unwrap();
    assert_eq!(wg.mtu, 1400);
    assert_eq!(wg.peers.len(), 1, "one key, one peer");
    assert_eq!(wg.peers[&[7; 32]].endpoint.port(), 6000);
}
