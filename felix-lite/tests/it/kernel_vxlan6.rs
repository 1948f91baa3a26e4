//! IPv6 pods across two nodes over `vxlan-v6.manx` (IPv6 underlay), on the kernel.

use std::net::IpAddr;

use crate::common::*;
use felix::types::*;
use felix::{DataplaneConfig, MANX_ROUTE_PROTOCOL, Tunnel, Vtep};
use ipnetwork::IpNetwork;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn no_dad(ns: &Netns) {
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
}

/// A v6 pod behind `node`, routed Calico-style via the host veth's link-local address.
fn pod6(node: &Netns, cali: &str, addr: &str) -> Netns {
    let p = netns();
    no_dad(&p);
    veth(node, cali, &p, "eth0");
    let show = node.ip(&["-6", "addr", "show", "dev", cali, "scope", "link"]);
    let ll = show
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no link-local address on {cali}: {show}"))
        .to_string();
    p.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{addr}/128"),
        "dev",
        "eth0",
        "nodad",
    ]);
    p.ip(&["-6", "route", "add", "default", "via", &ll, "dev", "eth0"]);
    p
}

fn peer(name: &str, v4: &str, v6: &str, vtep6: &str) -> PeerNode {
    let mut p = PeerNode::new(name, ip(v4));
    p.ip_v6 = Some(ip(v6));
    p.vteps.insert(
        Tunnel::Vxlan6,
        Vtep {
            addr: ip(vtep6),
            mac: MacAddr::from_seed(&format!("{name}/v6")),
        },
    );
    p
}

fn input(me: &str) -> DataplaneInput {
    let a = me == "a";
    let mut pool = PoolInfo::new(net("fd42:19:1::/64"));
    pool.encap = Some((Tunnel::Vxlan6, EncapMode::Always));
    let (my4, my6) = if a {
        ("198.19.1.1/24", "fd42:19::1/64")
    } else {
        ("198.19.1.2/24", "fd42:19::2/64")
    };
    DataplaneInput {
        node_name: me.into(),
        pools: vec![pool],
        remote_blocks: vec![if a {
            RemoteBlock {
                block: net("fd42:19:1::40/122"),
                node: "b".into(),
                node_ip: ip("fd42:19::2"),
            }
        } else {
            RemoteBlock {
                block: net("fd42:19:1::/122"),
                node: "a".into(),
                node_ip: ip("fd42:19::1"),
            }
        }],
        local_blocks: vec![net(if a {
            "fd42:19:1::/122"
        } else {
            "fd42:19:1::40/122"
        })],
        peers: vec![
            peer("a", "198.19.1.1", "fd42:19::1", "fd42:19:1::1"),
            peer("b", "198.19.1.2", "fd42:19::2", "fd42:19:1::41"),
        ],
        workloads: vec![LocalWorkload {
            ip: ip(if a { "fd42:19:1::5" } else { "fd42:19:1::45" }),
            iface: if a { "calia6" } else { "calib6" }.into(),
        }],
        uplink: Some(Uplink {
            iface: "eth0".into(),
            v4: Some(net(my4)),
            v6: Some(net(my6)),
            mtu: 1500,
        }),
        tunnel_addrs: [(
            Tunnel::Vxlan6,
            ip(if a { "fd42:19:1::1" } else { "fd42:19:1::41" }),
        )]
        .into(),
        ..DataplaneInput::default()
    }
}

#[test]
fn kernel_ipv6_vxlan_carries_pod_traffic() {
    if !Prereqs::new()
        .root()
        .commands(&["ip", "bridge", "ping", "sysctl", "nft"])
        .ok()
    {
        return;
    }
    let a = netns();
    let b = netns();
    no_dad(&a);
    no_dad(&b);
    veth(&a, "eth0", &b, "eth0");
    a.ip(&["addr", "add", "198.19.1.1/24", "dev", "eth0"]);
    b.ip(&["addr", "add", "198.19.1.2/24", "dev", "eth0"]);
    a.ip(&["-6", "addr", "add", "fd42:19::1/64", "dev", "eth0", "nodad"]);
    b.ip(&["-6", "addr", "add", "fd42:19::2/64", "dev", "eth0", "nodad"]);
    let pod_a = pod6(&a, "calia6", "fd42:19:1::5");
    let pod_b = pod6(&b, "calib6", "fd42:19:1::45");
    let cfg = DataplaneConfig::default();
    let ra = run_dataplane(&a, cfg.clone(), vec![input("a")]);
    let rb = run_dataplane(&b, cfg.clone(), vec![input("b")]);
    assert!(ra[0].errors.is_empty(), "{:?}", ra[0].errors);
    assert!(rb[0].errors.is_empty(), "{:?}", rb[0].errors);

    let link = a.ip(&["-d", "link", "show", "vxlan-v6.manx"]);
    assert!(link.contains("mtu 1430"), "{link}");
    assert!(link.contains("vxlan id 4096"), "{link}");
    assert!(link.contains("local fd42:19::1"), "{link}");
    let mac_b = MacAddr::from_seed("b/v6").to_string();
    let r = a.ip(&[
        "-6",
        "route",
        "show",
        "proto",
        &MANX_ROUTE_PROTOCOL.to_string(),
    ]);
    assert!(
        r.contains("fd42:19:1::40/122 via fd42:19:1::41 dev vxlan-v6.manx"),
        "{r}"
    );
    let neigh = a.ip(&["-6", "neigh", "show", "dev", "vxlan-v6.manx"]);
    assert!(
        neigh.contains(&format!("fd42:19:1::41 lladdr {mac_b} PERMANENT")),
        "{neigh}"
    );
    let fdb = a.exec("bridge", &["fdb", "show", "dev", "vxlan-v6.manx"]);
    assert!(
        fdb.contains(&format!("{mac_b} dst fd42:19::2 self permanent")),
        "{fdb}"
    );
    assert!(
        ping(&pod_a, "fd42:19:1::45"),
        "pod a cannot reach pod b over IPv6 VXLAN"
    );
    assert!(ping(&pod_b, "fd42:19:1::5"));

    // Restart: nothing to write.
    let again = run_dataplane(&a, cfg, vec![input("a")]);
    assert_eq!(again[0].writes(), 0, "{:?}", again[0]);
}
