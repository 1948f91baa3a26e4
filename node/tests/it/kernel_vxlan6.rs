//! manx-node's IPv6 VXLAN wiring on the kernel: two nodes' `Node`s (as
//! manx-node records them) and an IPv6 VXLAN pool go through the node-side
//! translation into felix-lite, inside two network namespaces; each node's
//! remote IPv6 block gets its route via `vxlan-v6.manx`, and the VTEPs reach
//! each other through it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use datastore::model::{EncapMode, IPPool, IPPoolSpec, Node, ObjectMeta};
use felix::{DataplaneConfig, MacAddr, Tunnel, Uplink};
use ipnetwork::IpNetwork;
use manx_node::cluster::ClusterView;
use manx_node::startup::Tunnels;
use testkit::{Netns, Prereqs};

fn netns() -> Netns {
    Netns::new("mxnd")
}

struct NodeSide {
    name: &'static str,
    v6: &'static str,
    vtep: &'static str,
    block: &'static str,
}

const A: NodeSide = NodeSide {
    name: "a",
    v6: "fd42:29::1",
    vtep: "fd42:29:1::1",
    block: "fd42:29:1::/122",
};
const B: NodeSide = NodeSide {
    name: "b",
    v6: "fd42:29::2",
    vtep: "fd42:29:1::41",
    block: "fd42:29:1::40/122",
};

fn tunnels(n: &NodeSide) -> Tunnels {
    Tunnels {
        addrs: BTreeMap::from([(Tunnel::Vxlan6, n.vtep.parse().unwrap())]),
        macs: BTreeMap::from([
            (Tunnel::Vxlan, MacAddr::from_seed(n.name)),
            (
                Tunnel::Vxlan6,
                MacAddr::from_seed(&format!("{}/v6", n.name)),
            ),
        ]),
    }
}

fn node(n: &NodeSide) -> Node {
    let mut node = Node::new(n.name);
    let bgp = node.spec.bgp.get_or_insert_with(Default::default);
    bgp.ipv4_address = Some(
        if n.name == "a" {
            "198.19.29.1/24"
        } else {
            "198.19.29.2/24"
        }
        .into(),
    );
    bgp.ipv6_address = Some(format!("{}/64", n.v6));
    tunnels(n).record(&mut node);
    node
}

/// The view node `me` has: the pool, both Nodes, its own block.
fn view(me: &NodeSide) -> ClusterView {
    let mut spec = IPPoolSpec::new("fd42:29:1::/64".parse().unwrap());
    spec.vxlan_mode = Some(EncapMode::Always);
    ClusterView {
        pools: vec![IPPool {
            metadata: ObjectMeta::named("v6"),
            spec,
        }],
        nodes: vec![node(&A), node(&B)],
        local_blocks: vec![me.block.parse().unwrap()],
        ..Default::default()
    }
}

/// Translate for `me` (the other node's block learnt by BGP) and apply in `ns`.
fn program(ns: &Netns, me: &NodeSide, other: &NodeSide) {
    let uplink = Uplink {
        iface: "eth0".into(),
        v4: Some(
            if me.name == "a" {
                "198.19.29.1/24"
            } else {
                "198.19.29.2/24"
            }
            .parse()
            .unwrap(),
        ),
        v6: Some(format!("{}/64", me.v6).parse().unwrap()),
        mtu: 1500,
    };
    let nh: IpAddr = other.v6.parse().unwrap();
    let block: IpNetwork = other.block.parse().unwrap();
    let remote = BTreeMap::from([(block, (vec![nh], nh))]);
    let input = view(me).dataplane_input(me.name, &uplink, &remote, &tunnels(me));
    let report = ns.block_on(move || async move {
        let mut dp = felix::Dataplane::new(
            felix::RealNetlink::new().expect("netlink socket"),
            felix::sysctl::ProcSysctl::default(),
            felix::nat::NftCli::default(),
            felix::SystemClock,
            DataplaneConfig {
                nat: false,
                ..DataplaneConfig::default()
            },
        );
        dp.apply(&input).await.expect("dataplane apply")
    });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}

#[test]
fn remote_ipv6_vxlan_block_is_routed_via_vxlan_v6_from_the_node_resources() {
    if !Prereqs::new().root().command("ip").ok() {
        return;
    }
    let a = netns();
    let b = netns();
    for ns in [&a, &b] {
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
    }
    testkit::netns::veth(&a, "eth0", &b, "eth0");
    for (ns, n) in [(&a, &A), (&b, &B)] {
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/64", n.v6),
            "dev",
            "eth0",
            "nodad",
        ]);
    }
    program(&a, &A, &B);
    program(&b, &B, &A);

    let routes = a.ip(&["-6", "route", "show", "proto", "77"]);
    assert!(
        routes.contains("fd42:29:1::40/122 via fd42:29:1::41 dev vxlan-v6.manx"),
        "{routes}"
    );
    let mac_b = MacAddr::from_seed("b/v6").to_string();
    let fdb = a.exec("bridge", &["fdb", "show", "dev", "vxlan-v6.manx"]);
    assert!(
        fdb.contains(&format!("{mac_b} dst fd42:29::2 self permanent")),
        "{fdb}"
    );
    let ping = a
        .command("ping")
        .args(["-6", "-c", "1", "-W", "2"])
        .args(["-I", A.vtep, B.vtep])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "a's VTEP cannot reach b's over vxlan-v6.manx: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
}
