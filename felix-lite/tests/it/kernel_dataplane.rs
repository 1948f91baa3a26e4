//! The real netlink implementation against the kernel, inside network namespaces: what
//! `ip route`, `ip neigh` and `bridge fdb` show after each desired state, and pod-to-pod
//! traffic over direct routes and over VXLAN.

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

struct Cluster {
    a: Netns,
    b: Netns,
    pod_a: Netns,
    pod_b: Netns,
}

/// Two nodes on 198.19.1.0/24, each with one pod (10.19.1.5 on a, 10.19.2.5 on b).
fn cluster() -> Cluster {
    let a = netns();
    let b = netns();
    veth(&a, "eth0", &b, "eth0");
    a.ip(&["addr", "add", "198.19.1.1/24", "dev", "eth0"]);
    b.ip(&["addr", "add", "198.19.1.2/24", "dev", "eth0"]);
    // A default route makes 169.254.1.1 routable, so proxy ARP answers the pods.
    a.ip(&["route", "add", "default", "dev", "eth0"]);
    b.ip(&["route", "add", "default", "dev", "eth0"]);
    let pod_a = pod(&a, "cali1a", "10.19.1.5");
    let pod_b = pod(&b, "cali2b", "10.19.2.5");
    Cluster { a, b, pod_a, pod_b }
}

/// A peer with its IPv4 VXLAN VTEP (MAC derived from its name).
fn vxlan_peer(name: &str, node_ip: &str, vtep: &str) -> PeerNode {
    let mut p = PeerNode::new(name, ip(node_ip));
    p.vteps.insert(
        Tunnel::Vxlan,
        Vtep {
            addr: ip(vtep),
            mac: MacAddr::from_seed(name),
        },
    );
    p
}

fn node_input(me: &str, mode: EncapMode) -> DataplaneInput {
    let (my_ip, my_block, my_pod, cali) = if me == "a" {
        ("198.19.1.1", "10.19.1.0/26", "10.19.1.5", "cali1a")
    } else {
        ("198.19.1.2", "10.19.2.0/26", "10.19.2.5", "cali2b")
    };
    let mut pool = PoolInfo::new(net("10.19.0.0/16"));
    pool.encap = Tunnel::for_pool(&pool.cidr, EncapMode::Never, mode, EncapMode::Never);
    let peers = vec![
        vxlan_peer("a", "198.19.1.1", "10.19.1.0"),
        vxlan_peer("b", "198.19.1.2", "10.19.2.0"),
    ];
    let other = if me == "a" {
        RemoteBlock {
            block: net("10.19.2.0/26"),
            node: "b".into(),
            node_ip: ip("198.19.1.2"),
        }
    } else {
        RemoteBlock {
            block: net("10.19.1.0/26"),
            node: "a".into(),
            node_ip: ip("198.19.1.1"),
        }
    };
    DataplaneInput {
        node_name: me.into(),
        pools: vec![pool],
        remote_blocks: vec![other],
        local_blocks: vec![net(my_block)],
        peers,
        workloads: vec![LocalWorkload {
            ip: ip(my_pod),
            iface: cali.into(),
        }],
        uplink: Some(Uplink {
            iface: "eth0".into(),
            v4: Some(net(&format!("{my_ip}/24"))),
            v6: None,
            mtu: 1500,
        }),
        tunnel_addrs: [(
            Tunnel::Vxlan,
            ip(if me == "a" { "10.19.1.0" } else { "10.19.2.0" }),
        )]
        .into(),
        ..DataplaneInput::default()
    }
}

fn routes(ns: &Netns) -> String {
    ns.ip(&["route", "show", "proto", &MANX_ROUTE_PROTOCOL.to_string()])
}

#[test]
fn kernel_direct_routes_carry_pod_traffic() {
    if !Prereqs::new().root().commands(&["ip", "ping", "nft"]).ok() {
        return;
    }
    let c = cluster();
    let cfg = DataplaneConfig::default();
    let ra = run_dataplane(&c.a, cfg.clone(), vec![node_input("a", EncapMode::Never)]);
    run_dataplane(&c.b, cfg.clone(), vec![node_input("b", EncapMode::Never)]);
    assert!(ra[0].errors.is_empty(), "{:?}", ra[0].errors);
    let r = routes(&c.a);
    assert!(r.contains("10.19.2.0/26 via 198.19.1.2 dev eth0"), "{r}");
    assert!(r.contains("blackhole 10.19.1.0/26"), "{r}");
    assert!(r.contains("10.19.1.5 dev cali1a scope link"), "{r}");
    assert_eq!(
        c.a.exec("cat", &["/proc/sys/net/ipv4/conf/cali1a/proxy_arp"])
            .trim(),
        "1"
    );
    assert_eq!(
        c.a.exec("cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(),
        "1"
    );
    assert!(
        ping(&c.pod_a, "10.19.2.5"),
        "pod a cannot reach pod b over direct routes"
    );
    assert!(ping(&c.pod_b, "10.19.1.5"));
}

#[test]
fn kernel_vxlan_carries_pod_traffic() {
    if !Prereqs::new()
        .root()
        .commands(&["ip", "bridge", "ping", "nft"])
        .ok()
    {
        return;
    }
    let c = cluster();
    let cfg = DataplaneConfig::default();
    let ra = run_dataplane(&c.a, cfg.clone(), vec![node_input("a", EncapMode::Always)]);
    run_dataplane(&c.b, cfg.clone(), vec![node_input("b", EncapMode::Always)]);
    assert!(ra[0].errors.is_empty(), "{:?}", ra[0].errors);
    let link = c.a.ip(&["-d", "link", "show", "vxlan.manx"]);
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(link.contains("vxlan id 4096"), "{link}");
    assert!(link.contains("local 198.19.1.1"), "{link}");
    assert!(link.contains("dstport 4789"), "{link}");
    assert!(link.contains("nolearning"), "{link}");
    assert!(
        link.contains(&MacAddr::from_seed("a").to_string()),
        "{link}"
    );
    let mac_b = MacAddr::from_seed("b").to_string();
    let r = routes(&c.a);
    assert!(
        r.contains("10.19.2.0/26 via 10.19.2.0 dev vxlan.manx onlink"),
        "{r}"
    );
    let neigh = c.a.ip(&["neigh", "show", "dev", "vxlan.manx"]);
    assert!(
        neigh.contains(&format!("10.19.2.0 lladdr {mac_b} PERMANENT")),
        "{neigh}"
    );
    let fdb = c.a.exec("bridge", &["fdb", "show", "dev", "vxlan.manx"]);
    assert!(
        fdb.contains(&format!("{mac_b} dst 198.19.1.2 self permanent")),
        "{fdb}"
    );
    let addr = c.a.ip(&["addr", "show", "dev", "vxlan.manx"]);
    assert!(addr.contains("inet 10.19.1.0/32"), "{addr}");
    assert!(
        ping(&c.pod_a, "10.19.2.5"),
        "pod a cannot reach pod b over VXLAN"
    );
    assert!(ping(&c.pod_b, "10.19.1.5"));

    // Restart with the same state: nothing written.
    let again = run_dataplane(&c.a, cfg.clone(), vec![node_input("a", EncapMode::Always)]);
    assert_eq!(again[0].writes(), 0, "{:?}", again[0]);

    // Switch the pool to Never: the device goes, routes go direct, traffic still flows.
    run_dataplane(&c.a, cfg.clone(), vec![node_input("a", EncapMode::Never)]);
    run_dataplane(&c.b, cfg, vec![node_input("b", EncapMode::Never)]);
    assert!(!c.a.ip(&["link", "show"]).contains("vxlan.manx"));
    assert!(routes(&c.a).contains("10.19.2.0/26 via 198.19.1.2 dev eth0"));
    assert!(ping(&c.pod_a, "10.19.2.5"));
}

#[test]
fn kernel_reconciler_purges_stale_keeps_foreign_and_writes_nothing_on_restart() {
    if !Prereqs::new().root().commands(&["ip", "nft"]).ok() {
        return;
    }
    let ns = netns();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["addr", "add", "198.19.1.1/24", "dev", "eth0"]);
    ns.ip(&["-6", "addr", "add", "fd42:19::1/64", "dev", "eth0", "nodad"]);
    let proto = MANX_ROUTE_PROTOCOL.to_string();
    // A stale route of ours from an "earlier run", and routes of other daemons.
    ns.ip(&[
        "route",
        "add",
        "10.19.99.0/24",
        "dev",
        "eth0",
        "proto",
        &proto,
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.19.98.0/24",
        "dev",
        "eth0",
        "proto",
        "static",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.19.97.0/24",
        "dev",
        "eth0",
        "proto",
        "bird",
    ]);

    let pool6 = PoolInfo::new(net("fd42:19:1::/64"));
    let mut input = DataplaneInput {
        node_name: "a".into(),
        pools: vec![PoolInfo::new(net("10.19.0.0/16")), pool6],
        remote_blocks: (0..50)
            .map(|i| RemoteBlock {
                block: net(&format!("10.19.{}.0/26", 100 + i)),
                node: "b".into(),
                node_ip: ip("198.19.1.2"),
            })
            .chain([RemoteBlock {
                block: net("fd42:19:1:0:1::/122"),
                node: "b".into(),
                node_ip: ip("fd42:19::2"),
            }])
            .collect(),
        local_blocks: vec![net("10.19.1.0/26"), net("fd42:19:1::/122")],
        uplink: Some(Uplink {
            iface: "eth0".into(),
            v4: Some(net("198.19.1.1/24")),
            v6: Some(net("fd42:19::1/64")),
            mtu: 1500,
        }),
        ..DataplaneInput::default()
    };
    let cfg = DataplaneConfig {
        nat: false,
        ..DataplaneConfig::default()
    };
    let first = input.clone();
    // Second state: one block gone (deleted behind our back first: ESRCH must be fine).
    input.remote_blocks.remove(0);
    let second = input.clone();
    let second_again = input.clone();
    let reports = ns.block_on(move || async move {
        use felix::sysctl::ProcSysctl;
        let nl = felix::RealNetlink::new().unwrap();
        let mut dp = felix::Dataplane::new(
            nl,
            ProcSysctl::default(),
            felix::nat::MemNat::default(),
            felix::SystemClock,
            cfg,
        );
        let r1 = dp.apply(&first).await.unwrap();
        let out = std::process::Command::new("ip")
            .args(["route", "del", "10.19.100.0/26"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let r2 = dp.apply(&second).await.unwrap();
        (r1, r2)
    });
    let (r1, r2) = reports;
    assert!(r1.errors.is_empty(), "{:?}", r1.errors);
    assert_eq!((r1.routes_added, r1.routes_deleted), (53, 1));
    assert_eq!(r2.routes_deleted, 1);
    assert!(
        r2.errors.is_empty(),
        "ESRCH on delete must count as done: {:?}",
        r2.errors
    );

    let v4 = routes(&ns);
    assert!(!v4.contains("10.19.99.0/24"), "stale route kept: {v4}");
    assert!(
        v4.contains("10.19.101.0/26 via 198.19.1.2 dev eth0"),
        "{v4}"
    );
    let all = ns.ip(&["route", "show"]);
    assert!(all.contains("10.19.98.0/24 dev eth0 proto static"), "{all}");
    assert!(all.contains("10.19.97.0/24 dev eth0 proto bird"), "{all}");
    let v6 = ns.ip(&["-6", "route", "show", "proto", &proto]);
    assert!(
        v6.contains("fd42:19:1:0:1::/122 via fd42:19::2 dev eth0"),
        "{v6}"
    );
    assert!(v6.contains("blackhole fd42:19:1::/122"), "{v6}");

    // Restart (a new Dataplane) with the same desired state: zero writes of any kind.
    let cfg = DataplaneConfig {
        nat: false,
        ..DataplaneConfig::default()
    };
    let r3 = run_dataplane(&ns, cfg, vec![second_again]);
    assert!(r3[0].full_resync);
    assert_eq!(r3[0].writes(), 0, "{:?}", r3[0]);
}

#[test]
fn kernel_without_ipip_reports_the_pool_in_one_line() {
    if !Prereqs::new().root().commands(&["ip", "nft"]).ok() {
        return;
    }
    let ns = netns();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["addr", "add", "198.19.1.1/24", "dev", "eth0"]);
    let mut ipip = PoolInfo::new(net("10.0.0.0/16"));
    ipip.encap = Some((Tunnel::Ipip, EncapMode::Always));
    let mut vx = PoolInfo::new(net("10.19.0.0/16"));
    vx.encap = Some((Tunnel::Vxlan, EncapMode::Always));
    let input = DataplaneInput {
        node_name: "a".into(),
        pools: vec![ipip, vx],
        remote_blocks: vec![
            RemoteBlock {
                block: net("10.0.1.0/26"),
                node: "b".into(),
                node_ip: ip("198.19.1.2"),
            },
            RemoteBlock {
                block: net("10.19.1.0/26"),
                node: "b".into(),
                node_ip: ip("198.19.1.2"),
            },
        ],
        peers: vec![vxlan_peer("b", "198.19.1.2", "10.19.1.0")],
        uplink: Some(Uplink {
            iface: "eth0".into(),
            v4: Some(net("198.19.1.1/24")),
            v6: None,
            mtu: 1500,
        }),
        tunnel_addrs: [(Tunnel::Ipip, ip("10.0.0.1"))].into(),
        ..DataplaneInput::default()
    };
    let (supported, degraded, reports) = ns.block_on(move || async move {
        let nl = felix::RealNetlink::new().unwrap();
        let mut dp = felix::Dataplane::new(
            nl,
            felix::sysctl::ProcSysctl::default(),
            felix::nat::MemNat::default(),
            felix::SystemClock,
            DataplaneConfig::default(),
        );
        let mut reports = Vec::new();
        for _ in 0..2 {
            dp.request_resync();
            reports.push(dp.apply(&input).await.unwrap());
        }
        (dp.supports(Tunnel::Ipip), dp.degraded_pools(), reports)
    });
    for r in &reports {
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    let r = routes(&ns);
    // The VXLAN pool is programmed either way.
    assert!(
        r.contains("10.19.1.0/26 via 10.19.1.0 dev vxlan.manx onlink"),
        "{r}"
    );
    if supported {
        // A kernel with IPIP (not this project's build machines).
        assert!(
            r.contains("10.0.1.0/26 via 198.19.1.2 dev tunl0 onlink"),
            "{r}"
        );
        assert!(degraded.is_empty());
    } else {
        assert_eq!(degraded.len(), 1);
        assert_eq!(
            degraded[0].reason,
            "IPIP pool 10.0.0.0/16 cannot be programmed: this kernel has no ipip support \
             (CONFIG_NET_IPIP); use vxlanMode or ipipMode: Never"
        );
        assert!(!r.contains("10.0.1.0/26"), "{r}");
    }
}

#[test]
fn kernel_errors_name_the_route_and_carry_the_kernel_reason() {
    if !Prereqs::new().root().command("ip").ok() {
        return;
    }
    let ns = netns();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["addr", "add", "198.19.1.1/24", "dev", "eth0"]);
    let errs = ns.block_on(|| async {
        use felix::Netlink;
        use felix::netlink::{RouteKind, RouteOp};
        use felix::reconcile::routes::manx_route;
        let nl = felix::RealNetlink::new().unwrap();
        let eth = nl
            .links()
            .await
            .unwrap()
            .into_iter()
            .find(|l| l.name == "eth0")
            .unwrap()
            .index;
        // Gateway outside every on-link prefix and no onlink flag: the kernel refuses.
        let bad = manx_route(
            net("10.19.5.0/26"),
            RouteKind::Unicast,
            Some(ip("198.19.77.1")),
            Some(eth),
            false,
        );
        let good = manx_route(
            net("10.19.6.0/26"),
            RouteKind::Unicast,
            Some(ip("198.19.1.2")),
            Some(eth),
            false,
        );
        nl.apply_routes(vec![RouteOp::Add(bad), RouteOp::Add(good)])
            .await
    });
    let e = errs[0].as_ref().unwrap_err();
    assert!(
        errs[1].is_ok(),
        "a failure must not sink the rest of the batch"
    );
    let text = e.to_string();
    // The kernel's extended-ACK reason rides along.
    assert!(text.contains("(Nexthop has invalid gateway)"), "{text}");
    assert!(
        text.starts_with("netlink add route 10.19.5.0/26 via 198.19.77.1"),
        "{text}"
    );
    assert_eq!(e.errno, Some(libc::ENETUNREACH), "{text}");
    assert!(routes(&ns).contains("10.19.6.0/26 via 198.19.1.2 dev eth0"));
}
