//! NAT outgoing on the kernel: a pod reaches an "outside" namespace that has no route back to
//! the pool only when felix-lite masquerades, and tcpdump there sees the node's address;
//! the same for an IPv6 pool through the `ip6` table.

use std::net::IpAddr;
use std::process::Stdio;

use crate::common::*;
use felix::DataplaneConfig;
use felix::types::*;
use ipnetwork::IpNetwork;

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn input(nat: bool) -> DataplaneInput {
    let mut pool = PoolInfo::new(net("10.19.0.0/16"));
    pool.nat_outgoing = nat;
    DataplaneInput {
        node_name: "a".into(),
        pools: vec![pool],
        local_blocks: vec![net("10.19.1.0/26")],
        workloads: vec![LocalWorkload {
            ip: ip("10.19.1.5"),
            iface: "cali1a".into(),
        }],
        uplink: Some(Uplink {
            iface: "eth0".into(),
            v4: Some(net("198.19.2.1/24")),
            v6: None,
            mtu: 1500,
        }),
        ..DataplaneInput::default()
    }
}

#[test]
fn kernel_nat_outgoing_rewrites_the_source_address() {
    if !Prereqs::new()
        .root()
        .commands(&["ip", "nft", "ping", "tcpdump", "timeout"])
        .ok()
    {
        return;
    }
    let node = netns();
    let outside = netns();
    veth(&node, "eth0", &outside, "eth0");
    node.ip(&["addr", "add", "198.19.2.1/24", "dev", "eth0"]);
    node.ip(&["route", "add", "default", "via", "198.19.2.2"]);
    outside.ip(&["addr", "add", "198.19.2.2/24", "dev", "eth0"]);
    let pod = pod(&node, "cali1a", "10.19.1.5");
    let cfg = DataplaneConfig::default();

    // Without NAT the reply has no way back to 10.19.1.5.
    let r = run_dataplane(&node, cfg.clone(), vec![input(false)]);
    assert!(r[0].errors.is_empty(), "{:?}", r[0].errors);
    assert!(
        !ping(&pod, "198.19.2.2"),
        "reply reached the pod without NAT"
    );

    // With NAT: capture in the outside namespace while the pod pings.
    let r = run_dataplane(&node, cfg.clone(), vec![input(true)]);
    assert!(r[0].errors.is_empty(), "{:?}", r[0].errors);
    assert_eq!(r[0].nat_writes, 1);
    let table = node.exec("nft", &["list", "table", "ip", "manx"]);
    assert!(
        table.contains("ip saddr @pools ip daddr != @allpools masquerade"),
        "{table}"
    );
    let capture = outside
        .command("timeout")
        .args(["10", "tcpdump", "-l", "-n"])
        .args(["-i", "eth0", "-c", "1", "icmp[icmptype] == icmp-echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Give tcpdump time to attach; ping keeps trying for a few seconds anyway.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let mut reached = false;
    for _ in 0..3 {
        if ping(&pod, "198.19.2.2") {
            reached = true;
            break;
        }
    }
    let out = capture.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(reached, "pod cannot reach the outside with NAT outgoing");
    assert!(
        seen.contains("198.19.2.1 > 198.19.2.2: ICMP echo request"),
        "source not rewritten: {seen}"
    );

    // Restart with the same pools: no nft write. Then NAT off: the table goes.
    let r = run_dataplane(&node, cfg.clone(), vec![input(true)]);
    assert_eq!(r[0].nat_writes, 0);
    run_dataplane(&node, cfg, vec![input(false)]);
    let listed = node
        .command("nft")
        .args(["list", "table", "ip", "manx"])
        .output()
        .unwrap();
    assert!(!listed.status.success(), "table manx still present");
}

/// The same for an IPv6 pool with natOutgoing (issue 21): the `ip6` table
/// masquerades a pod's IPv6 packets to the node's IPv6 address, so an
/// outside host with no route back to the pool answers. The pod is wired
/// as the CNI plugin wires it (host veth MAC ee:ee:ee:ee:ee:ee, default
/// route via its link-local fe80::ecee:eeff:feee:eeee); fd19:1::/48 is the
/// pool, fd19:2::/64 the uplink.
#[test]
fn kernel_nat_outgoing_ipv6_masquerades_to_the_node_address() {
    if !Prereqs::new().root().commands(&["ip", "nft", "ping"]).ok() {
        return;
    }
    let node = netns();
    let outside = netns();
    veth(&node, "eth0", &outside, "eth0");
    node.ip(&["addr", "add", "fd19:2::1/64", "dev", "eth0", "nodad"]);
    node.ip(&["-6", "route", "add", "default", "via", "fd19:2::2"]);
    outside.ip(&["addr", "add", "fd19:2::2/64", "dev", "eth0", "nodad"]);
    let pod = netns();
    veth(&node, "cali6a", &pod, "eth0");
    node.sysctl("net.ipv6.conf.cali6a.accept_dad", "0");
    node.ip(&["link", "set", "cali6a", "down"]);
    node.ip(&[
        "link",
        "set",
        "cali6a",
        "address",
        "ee:ee:ee:ee:ee:ee",
        "up",
    ]);
    pod.ip(&["addr", "add", "fd19:1::5/128", "dev", "eth0", "nodad"]);
    pod.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fe80::ecee:eeff:feee:eeee",
        "dev",
        "eth0",
    ]);
    let input = |nat: bool| {
        let mut pool = PoolInfo::new(net("fd19:1::/48"));
        pool.nat_outgoing = nat;
        DataplaneInput {
            node_name: "a".into(),
            pools: vec![pool],
            local_blocks: vec![net("fd19:1::/122")],
            workloads: vec![LocalWorkload {
                ip: ip("fd19:1::5"),
                iface: "cali6a".into(),
            }],
            uplink: Some(Uplink {
                iface: "eth0".into(),
                v4: None,
                v6: Some(net("fd19:2::1/64")),
                mtu: 1500,
            }),
            ..DataplaneInput::default()
        }
    };
    let ping6 = |dst: &str| {
        pod.command("ping")
            .args(["-6", "-c", "1", "-w", "5", dst])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let cfg = DataplaneConfig::default();
    let r = run_dataplane(&node, cfg.clone(), vec![input(false)]);
    assert!(r[0].errors.is_empty(), "{:?}", r[0].errors);
    assert!(!ping6("fd19:2::2"), "reply reached the pod without NAT");

    let r = run_dataplane(&node, cfg.clone(), vec![input(true)]);
    assert!(r[0].errors.is_empty(), "{:?}", r[0].errors);
    let table = node.exec("nft", &["list", "table", "ip6", "manx"]);
    assert!(
        table.contains("ip6 saddr @pools ip6 daddr != @allpools masquerade"),
        "{table}"
    );
    assert!(
        ping6("fd19:2::2"),
        "pod cannot reach the outside with IPv6 NAT outgoing:\n{table}\n{}",
        node.ip(&["-6", "route", "show"])
    );
    // The IPv4 table is not made for an IPv6 pool.
    let v4 = node
        .command("nft")
        .args(["list", "table", "ip", "manx"])
        .output()
        .unwrap();
    assert!(!v4.status.success(), "an ip table for an IPv6 pool");

    run_dataplane(&node, cfg, vec![input(false)]);
    let listed = node
        .command("nft")
        .args(["list", "table", "ip6", "manx"])
        .output()
        .unwrap();
    assert!(!listed.status.success(), "table ip6 manx still present");
}
