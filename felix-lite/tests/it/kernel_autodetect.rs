//! Uplink autodetection on the kernel: a node with two NICs on two subnets (and a docker0
//! bridge that first-found must skip); every method picks the expected NIC and address.

use crate::common::*;
use felix::autodetect::{AutodetectMethod, Detected, IpFamily, autodetect};

#[test]
fn kernel_autodetection_methods_pick_the_expected_nic() {
    if !Prereqs::new().root().command("ip").ok() {
        return;
    }
    let node = netns();
    let left = netns();
    let right = netns();
    node.ip(&["link", "add", "docker0", "type", "bridge"]);
    node.ip(&["link", "set", "docker0", "up"]);
    node.ip(&["addr", "add", "198.19.3.1/24", "dev", "docker0"]);
    veth(&node, "eth0", &left, "eth0");
    veth(&node, "eth1", &right, "eth0");
    node.ip(&["link", "set", "eth1", "mtu", "9000"]);
    node.ip(&["addr", "add", "198.19.1.1/24", "dev", "eth0"]);
    node.ip(&["addr", "add", "198.19.2.1/24", "dev", "eth1"]);
    node.ip(&[
        "-6",
        "addr",
        "add",
        "fd42:19:1::1/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    node.ip(&[
        "-6",
        "addr",
        "add",
        "fd42:19:2::1/64",
        "dev",
        "eth1",
        "nodad",
    ]);

    let cases: Vec<(&str, IpFamily, &str, &str)> = vec![
        ("first-found", IpFamily::V4, "eth0", "198.19.1.1/24"),
        ("interface=eth1", IpFamily::V4, "eth1", "198.19.2.1/24"),
        (
            "interface=^nope$,^eth1$",
            IpFamily::V4,
            "eth1",
            "198.19.2.1/24",
        ),
        (
            "skip-interface=docker0,eth0",
            IpFamily::V4,
            "eth1",
            "198.19.2.1/24",
        ),
        (
            "can-reach=198.19.2.77",
            IpFamily::V4,
            "eth1",
            "198.19.2.1/24",
        ),
        (
            "can-reach=198.19.1.77",
            IpFamily::V4,
            "eth0",
            "198.19.1.1/24",
        ),
        ("cidr=198.19.2.0/24", IpFamily::V4, "eth1", "198.19.2.1/24"),
        ("first-found", IpFamily::V6, "eth0", "fd42:19:1::1/64"),
        (
            "can-reach=fd42:19:2::9",
            IpFamily::V6,
            "eth1",
            "fd42:19:2::1/64",
        ),
        (
            "cidr=fd42:19:2::/64",
            IpFamily::V6,
            "eth1",
            "fd42:19:2::1/64",
        ),
    ];
    let results: Vec<(String, Result<Detected, String>)> = node.block_on(move || async move {
        let nl = felix::RealNetlink::new().unwrap();
        let mut out = Vec::new();
        for (m, fam, _, _) in &cases {
            let method: AutodetectMethod = m.parse().unwrap();
            out.push((
                m.to_string(),
                autodetect(&nl, &method, *fam)
                    .await
                    .map_err(|e| e.to_string()),
            ));
        }
        out
    });
    let expected = [
        ("eth0", "198.19.1.1/24", 1500),
        ("eth1", "198.19.2.1/24", 9000),
        ("eth1", "198.19.2.1/24", 9000),
        ("eth1", "198.19.2.1/24", 9000),
        ("eth1", "198.19.2.1/24", 9000),
        ("eth0", "198.19.1.1/24", 1500),
        ("eth1", "198.19.2.1/24", 9000),
        ("eth0", "fd42:19:1::1/64", 1500),
        ("eth1", "fd42:19:2::1/64", 9000),
        ("eth1", "fd42:19:2::1/64", 9000),
    ];
    for ((method, got), (iface, addr, mtu)) in results.iter().zip(expected) {
        let d = got.as_ref().unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(
            (d.iface.as_str(), d.addr.to_string().as_str(), d.mtu),
            (iface, addr, mtu),
            "{method}"
        );
    }

    // A failure names the method and what it looked at.
    let err = node.block_on(|| async {
        let nl = felix::RealNetlink::new().unwrap();
        let m: AutodetectMethod = "cidr=10.255.0.0/16".parse().unwrap();
        autodetect(&nl, &m, IpFamily::V4)
            .await
            .unwrap_err()
            .to_string()
    });
    assert!(err.starts_with("IP autodetection method cidr=10.255.0.0/16 found no IPv4 address"));
    assert!(
        err.contains("eth0 (no matching IPv4 address among 198.19.1.1/24"),
        "{err}"
    );
}
