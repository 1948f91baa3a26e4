//! Dual stack and IPv6 only (issue 21): every pod has an address of each
//! family, every node a BGP session per family with each peer (between the
//! nodes' IPv6 addresses for the IPv6 blocks, as calico-node runs it), and
//! every pod pings every other pod over IPv4 and IPv6 in each routing mode.
//! One lab per case, three or four nodes, one pod per node: a few seconds
//! each.

use crate::common::{Lab, require};
use manx_e2e::lab::{IpFamily, Mode};

fn dual(id: &str, nodes: usize, mode: Mode) -> Lab {
    let mut spec = Lab::spec(id, nodes, mode);
    spec.ip_family = IpFamily::Dual;
    let lab = Lab::up(spec);
    for pod in &lab.0.pods {
        let addrs = pod.addrs();
        assert!(
            addrs.len() == 2 && addrs[0].is_ipv4() && addrs[1].is_ipv6(),
            "{}: {addrs:?}",
            pod.name
        );
    }
    lab
}

/// The peers of `node`'s BGP status table of one family (`IPv4` / `IPv6`),
/// as (address, state) pairs.
fn peers(lab: &Lab, node: usize, family: &str) -> Vec<(String, String)> {
    let status = lab
        .0
        .manxctl(&lab.0.nodes[node], &["node", "status"])
        .unwrap();
    let Some((_, table)) = status.split_once(&format!("{family} BGP status")) else {
        return vec![];
    };
    table
        .lines()
        .skip(4)
        .take_while(|l| l.starts_with("| "))
        .map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            (cols[1].to_string(), cols[5].to_string())
        })
        .collect()
}

/// Direct routes: IPv6 blocks via the peers' IPv6 addresses on the uplink,
/// learnt over IPv6 sessions between those addresses.
#[test]
fn dual_stack_direct() {
    if !require() {
        return;
    }
    let lab = dual("e2e6a", 3, Mode::Direct);
    lab.assert_all_ping();
    let v6 = peers(&lab, 0, "IPv6");
    assert_eq!(
        v6,
        [
            ("fd30::12".to_string(), "Established".to_string()),
            ("fd30::13".to_string(), "Established".to_string())
        ]
    );
    assert_eq!(peers(&lab, 0, "IPv4").len(), 2);
    let r = lab.routes(0);
    assert!(r.contains("/122 via fd30::12 dev eth0 proto 77"), "{r}");
    assert!(r.contains("/122 via fd30::13 dev eth0 proto 77"), "{r}");
    assert!(r.contains("via 172.30.0.12 dev eth0 proto 77"), "{r}");
    assert!(!r.contains("vxlan"), "{r}");
}

/// VXLAN Always: IPv4 blocks through vxlan.manx, IPv6 blocks through
/// vxlan-v6.manx over the IPv6 underlay.
#[test]
fn dual_stack_vxlan() {
    if !require() {
        return;
    }
    let lab = dual("e2e6b", 3, Mode::Vxlan);
    lab.assert_all_ping();
    let r = lab.routes(0);
    assert_eq!(
        r.matches("dev vxlan.manx proto 77 onlink").count(),
        2,
        "{r}"
    );
    assert_eq!(r.matches("dev vxlan-v6.manx proto 77").count(), 2, "{r}");
    assert!(!r.contains("dev eth0 proto 77"), "{r}");
}

/// CrossSubnet: node1 and node2 share a subnet (direct, both families),
/// node3 is behind the router (tunnelled, both families).
#[test]
fn dual_stack_crosssubnet() {
    if !require() {
        return;
    }
    let lab = dual("e2e6c", 3, Mode::Crosssubnet);
    lab.assert_all_ping();
    let r = lab.routes(0);
    assert!(r.contains("via 172.30.0.12 dev eth0 proto 77"), "{r}");
    assert!(r.contains("/122 via fd30::12 dev eth0 proto 77"), "{r}");
    assert_eq!(
        r.matches("dev vxlan.manx proto 77 onlink").count(),
        1,
        "{r}"
    );
    assert_eq!(r.matches("dev vxlan-v6.manx proto 77").count(), 1, "{r}");
}

/// Two route reflectors and two clients, mesh off: a client has an IPv4
/// and an IPv6 session with each reflector and nothing else, and the
/// clients' IPv6 blocks reach each other reflected.
#[test]
fn dual_stack_route_reflectors() {
    if !require() {
        return;
    }
    let mut spec = Lab::spec("e2e6d", 4, Mode::Direct);
    spec.ip_family = IpFamily::Dual;
    spec.route_reflectors = 2;
    let lab = Lab::up(spec);
    lab.assert_all_ping();
    let client = 3;
    for (family, rr) in [
        ("IPv4", ["172.30.0.11", "172.30.0.12"]),
        ("IPv6", ["fd30::11", "fd30::12"]),
    ] {
        let p = peers(&lab, client, family);
        let addrs: Vec<&str> = p.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(addrs, rr, "{family}: {p:?}");
        assert!(p.iter().all(|(_, s)| s == "Established"), "{family}: {p:?}");
    }
    // node4 routes node3's IPv6 block via node3 (a reflected route keeps
    // its next hop).
    let r = lab.routes(client);
    assert!(r.contains("/122 via fd30::13 dev eth0 proto 77"), "{r}");
}

/// IPv6 only (`IP=none`): no IPv4 pool, no IPv4 session, IPv6 pods over
/// VXLAN on the IPv6 underlay.
#[test]
fn ipv6_only_vxlan() {
    if !require() {
        return;
    }
    let mut spec = Lab::spec("e2e6e", 3, Mode::Vxlan);
    spec.ip_family = IpFamily::Ipv6;
    let lab = Lab::up(spec);
    for pod in &lab.0.pods {
        let addrs = pod.addrs();
        assert!(
            addrs.len() == 1 && addrs[0].is_ipv6(),
            "{}: {addrs:?}",
            pod.name
        );
    }
    lab.assert_all_ping();
    assert!(peers(&lab, 0, "IPv4").is_empty());
    assert_eq!(peers(&lab, 0, "IPv6").len(), 2);
    let pools = lab
        .0
        .manxctl(&lab.0.nodes[0], &["get", "ippools", "-o", "wide"])
        .unwrap();
    assert!(
        pools.contains("fd65::/48") && !pools.contains("192.168."),
        "{pools}"
    );
    let r = lab.routes(0);
    assert_eq!(r.matches("dev vxlan-v6.manx proto 77").count(), 2, "{r}");
    assert!(!r.contains("vxlan.manx"), "{r}");
    // The IPv6 VXLAN device's address from IPAM and its MAC are in the
    // Node, Calico's fields; the device carries that MAC.
    let node = lab
        .0
        .manxctl(&lab.0.nodes[0], &["get", "node", "node1", "-o", "yaml"])
        .unwrap();
    let field = |name: &str| {
        node.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no {name} in node1:\n{node}"))
    };
    assert!(field("ipv6VXLANTunnelAddr").starts_with("fd65:"), "{node}");
    let mac = field("vxlanTunnelMACAddrV6");
    let ns = manx_e2e::netns::Netns::adopt(&lab.0.nodes[0].netns);
    let dev = ns.ip(&["link", "show", "vxlan-v6.manx"]).unwrap();
    assert!(dev.contains(&format!("link/ether {mac} ")), "{mac}: {dev}");
}
