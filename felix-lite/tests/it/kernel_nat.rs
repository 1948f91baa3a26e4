//! NAT outgoing on the kernel: a pod reaches an "outside" namespace that has no route back to
//! the pool only when felix-lite masquerades, and tcpdump there sees the node's address.

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
