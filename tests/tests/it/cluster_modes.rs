//! The lab cluster in each routing mode: every pod pings every other pod,
//! and each node's routes take the path the pool's mode asks for.

use crate::common::{Lab, require};
use manx_e2e::lab::{self, Mode};

/// (a) 3-node mesh with direct routes: remote blocks via the peer's address
/// on the uplink, a blackhole per local block.
#[test]
fn mesh_direct_routes() {
    if !require() {
        return;
    }
    let mut spec = Lab::spec("e2ea", 3, Mode::Direct);
    spec.pods_per_node = 2;
    let lab = Lab::up(spec);
    lab.assert_all_ping();
    let r = lab.routes(0);
    assert!(r.contains("via 172.30.0.12 dev eth0 proto 77"), "{r}");
    assert!(r.contains("via 172.30.0.13 dev eth0 proto 77"), "{r}");
    assert!(r.contains("blackhole 10.65."), "{r}");
    assert!(!r.contains("vxlan.manx"), "{r}");

    // bench-convergence's measurement on this lab: a route monitor per
    // node sees a new block's route arrive on each other node, and the
    // kernel's table agrees; the ADD's steps are in the timing file.
    let mut lab = lab;
    lab::convergence_setup(&lab.0).unwrap();
    let netns: Vec<String> = lab.0.nodes.iter().map(|n| n.netns.clone()).collect();
    let monitors = lab::RouteMonitors::start(&netns).unwrap();
    let trial = lab::convergence_trial(&mut lab.0, &monitors, 1, 900).unwrap();
    let (ip, arrivals) = &trial.arrivals[0];
    assert!(ip.to_string().starts_with("10.70."), "{ip}");
    let mut seen: Vec<usize> = arrivals.iter().map(|(n, _)| *n).collect();
    seen.sort();
    assert_eq!(seen, [0, 2], "{arrivals:?}");
    for n in [0, 2] {
        let r = lab.routes(n);
        assert!(
            r.lines()
                .any(|l| l.starts_with(&format!("{ip} via 172.30.0.12")) && l.contains("proto 77")),
            "node{} has no route to {ip} via node2: {r}",
            n + 1
        );
    }
    let steps: Vec<&str> = trial.steps.iter().map(|(s, _)| s.as_str()).collect();
    for s in ["exec", "ipam||veth", "endpoint", "exit"] {
        assert!(steps.contains(&s), "{s} missing from {steps:?}");
    }
}

/// (b) VXLAN Always: remote blocks through vxlan.manx.
#[test]
fn vxlan_always() {
    if !require() {
        return;
    }
    let lab = Lab::up(Lab::spec("e2eb", 3, Mode::Vxlan));
    lab.assert_all_ping();
    let r = lab.routes(0);
    assert_eq!(
        r.matches("dev vxlan.manx proto 77 onlink").count(),
        2,
        "{r}"
    );
    assert!(!r.contains("dev eth0 proto 77"), "{r}");
}

/// (c) CrossSubnet across two subnets joined by a router: the same-subnet
/// peer is routed directly, the other subnet's through the tunnel (VXLAN
/// here; IPIP needs a kernel with ipip, see tests/vm). Then the same pool
/// switched to `udpMode: CrossSubnet` (Flannel's UDP backend, a Manx
/// extension): the other subnet goes through `udp.manx` and its data path.
#[test]
fn crosssubnet_two_subnets() {
    if !require() {
        return;
    }
    let lab = Lab::up(Lab::spec("e2ec", 4, Mode::Crosssubnet));
    lab.assert_all_ping();
    // node1 and node2 share 172.30.0.0/24; node3 and node4 are behind the router.
    let r = lab.routes(0);
    assert!(
        r.contains("via 172.30.0.12 dev eth0 proto 77"),
        "same subnet is direct: {r}"
    );
    assert_eq!(
        r.matches("dev vxlan.manx proto 77 onlink").count(),
        2,
        "other subnet tunnelled: {r}"
    );

    let n1 = lab.0.nodes[0].clone();
    let udp = r#"{"spec":{"vxlanMode":"Never","udpMode":"CrossSubnet"}}"#;
    lab.0
        .manxctl(&n1, &["patch", "ippool", "default-ipv4-ippool", "-p", udp])
        .unwrap();
    let r = manx_e2e::netns::wait_for(
        "node1's routes through udp.manx",
        std::time::Duration::from_secs(20),
        || {
            let r = lab.routes(0);
            Ok((r.matches("dev udp.manx proto 77 onlink").count() == 2
                && !r.contains("vxlan.manx"))
            .then_some(r))
        },
    )
    .unwrap();
    assert!(
        r.contains("via 172.30.0.12 dev eth0 proto 77"),
        "same subnet still direct: {r}"
    );
    let (rx0, tx0) = link_packets(&n1.netns, "udp.manx");
    lab.assert_all_ping();
    let (rx1, tx1) = link_packets(&n1.netns, "udp.manx");
    assert!(
        rx1 > rx0 && tx1 > tx0,
        "pings through udp.manx: rx {rx0}->{rx1} tx {tx0}->{tx1}"
    );
    assert_eq!(procs_with(&n1.netns, "udp-datapath"), 1);
}

/// (d) Two route reflectors (same cluster id) and four clients with the
/// node-to-node mesh off, written the way Calico's docs write it.
#[test]
fn route_reflectors_with_mesh_off() {
    if !require() {
        return;
    }
    let mut spec = Lab::spec("e2ed", 6, Mode::Direct);
    spec.route_reflectors = 2;
    let lab = Lab::up(spec);
    lab.assert_all_ping();
    // A client peers with the two reflectors only.
    let client = &lab.0.nodes[3];
    let status = lab.0.manxctl(client, &["node", "status"]).unwrap();
    let peers: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("| 172.30."))
        .collect();
    assert_eq!(peers.len(), 2, "{status}");
    assert!(peers.iter().all(|l| l.contains("Established")), "{status}");
    assert!(
        status.contains("| 172.30.0.11") && status.contains("| 172.30.0.12"),
        "{status}"
    );
    // A reflector peers with the other reflector and the four clients.
    let rr = lab.0.manxctl(&lab.0.nodes[0], &["node", "status"]).unwrap();
    assert_eq!(
        rr.lines().filter(|l| l.starts_with("| 172.30.")).count(),
        5,
        "{rr}"
    );
    // Built as reflectors from the start: no client ever had a session with
    // another client (a full mesh first, then torn down, would show them).
    for client in &lab.0.nodes[2..] {
        let log =
            strip_ansi(&std::fs::read_to_string(client.run_dir.join("manx-node.log")).unwrap());
        let meshed: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("session established"))
            .filter(|l| !l.contains("peer=172.30.0.11") && !l.contains("peer=172.30.0.12"))
            .collect();
        assert!(meshed.is_empty(), "{}: {meshed:?}", client.name);
    }
    // Every client routes every other client's block via that client.
    let r = lab.routes(3);
    for other in ["172.30.0.13", "172.30.0.15", "172.30.0.16"] {
        assert!(r.contains(&format!("via {other} dev eth0 proto 77")), "{r}");
    }
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The processes in namespace `netns` whose command line has `needle`.
fn procs_with(netns: &str, needle: &str) -> usize {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .count()
}

/// TUN offloads on the UDP backend: the data path took TSO (`IFF_VNET_HDR`), 16 MiB of
/// random bytes sent by TCP from a pod on node1 to one on node2 arrive intact (every
/// segment cut in userspace on node1, runs joined into TSO writes on node2), and the
/// TUNs saw 64 KiB packets: node1's `udp.manx` sent (kernel to data path) and node2's
/// received (data path to kernel) fewer packets than 1472-byte segments would need.
fn udp_offloads_carry_tcp_intact(lab: &Lab) {
    let (n1, n2) = (&lab.0.nodes[0], &lab.0.nodes[1]);
    let log = std::fs::read_to_string(n1.run_dir.join("udp-datapath.log")).unwrap();
    // The log's fields are coloured: drop the escape sequences.
    let mut plain = String::new();
    let mut esc = false;
    for ch in log.chars() {
        match (esc, ch) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (false, c) => plain.push(c),
            _ => {}
        }
    }
    assert!(plain.contains("TUN offloads vnet_hdr=true"), "{plain}");
    let src = lab.0.pods.iter().find(|p| p.node == n1.name).unwrap();
    let dst = lab.0.pods.iter().find(|p| p.node == n2.name).unwrap();
    let mut data = vec![0u8; 16 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let sent_by_n1 = || {
        let (p, b) = (
            link_packets(&n1.netns, "udp.manx").1,
            link_bytes(&n1.netns, "udp.manx").1,
        );
        (p, b)
    };
    let written_on_n2 = || {
        let (p, b) = (
            link_packets(&n2.netns, "udp.manx").0,
            link_bytes(&n2.netns, "udp.manx").0,
        );
        (p, b)
    };
    let (tx0, rx0) = (sent_by_n1(), written_on_n2());
    // Sockets made by threads inside the pods' namespaces (they stay there).
    let ns =
        |p: &manx_e2e::lab::LabPod| std::path::PathBuf::from(format!("/run/netns/{}", p.netns));
    let listener = testkit::netns::run_in_path(ns(dst), || {
        std::net::TcpListener::bind("0.0.0.0:5298").unwrap()
    });
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).map(|_| v)
    });
    let addr = format!("{}:5298", dst.ip);
    let mut client =
        testkit::netns::run_in_path(ns(src), move || std::net::TcpStream::connect(addr).unwrap());
    client
        .set_write_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    std::io::Write::write_all(&mut client, &data).unwrap();
    drop(client);
    let recv = reader.join().unwrap().unwrap();
    assert!(
        recv == data,
        "received {} of {} bytes, first difference at {:?}",
        recv.len(),
        data.len(),
        recv.iter().zip(&data).position(|(a, b)| a != b)
    );
    let (tx1, rx1) = (sent_by_n1(), written_on_n2());
    let (tx, rx) = (
        (tx1.0 - tx0.0, tx1.1 - tx0.1),
        (rx1.0 - rx0.0, rx1.1 - rx0.1),
    );
    // Without offloads every packet is at most the TUN's MTU (1472).
    assert!(
        tx.1 > 1472 * tx.0,
        "node1 udp.manx: {} packets for {} bytes",
        tx.0,
        tx.1
    );
    assert!(
        rx.1 > 1472 * rx.0,
        "node2 udp.manx: {} packets for {} bytes",
        rx.0,
        rx.1
    );
}

/// `ip -s link` byte counters (rx, tx) of `dev` in `netns`.
fn link_bytes(netns: &str, dev: &str) -> (u64, u64) {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", netns, "ip", "-s", "-j", "link", "show", dev,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let s = &v[0]["stats64"];
    (
        s["rx"]["bytes"].as_u64().unwrap_or(0),
        s["tx"]["bytes"].as_u64().unwrap_or(0),
    )
}

/// `ip -s link` packet counters (rx, tx) of `dev` in `netns`.
fn link_packets(netns: &str, dev: &str) -> (u64, u64) {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", netns, "ip", "-s", "-j", "link", "show", dev,
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let s = &v[0]["stats64"];
    (
        s["rx"]["packets"].as_u64().unwrap_or(0),
        s["tx"]["packets"].as_u64().unwrap_or(0),
    )
}

/// (e) Flannel's UDP backend (`udpMode: Always`, a Manx extension): remote blocks through
/// the TUN `udp.manx` (MTU uplink − 28, the node's tunnel address from IPAM, recorded in its
/// Node), carried by the data path process; pods keep reaching each other while the agent
/// is killed and after it restarts, with one data path per node throughout.
#[test]
fn udp_always() {
    if !require() {
        return;
    }
    let mut lab = Lab::up(Lab::spec("e2eu", 3, Mode::Udp));
    lab.assert_all_ping();
    let r = lab.routes(0);
    assert_eq!(r.matches("dev udp.manx proto 77 onlink").count(), 2, "{r}");
    assert!(!r.contains("dev eth0 proto 77"), "{r}");
    let n1 = lab.0.nodes[0].clone();
    let link = std::process::Command::new("ip")
        .args([
            "netns", "exec", &n1.netns, "ip", "-d", "addr", "show", "udp.manx",
        ])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains("mtu 1472"), "{link}");
    assert!(link.contains("multi_queue"), "{link}");
    let node = lab
        .0
        .manxctl(&n1, &["get", "node", &n1.name, "-o", "yaml"])
        .unwrap();
    let addr = node
        .lines()
        .find_map(|l| l.trim().strip_prefix("ipv4UDPTunnelAddr: "))
        .unwrap_or_else(|| panic!("no ipv4UDPTunnelAddr in the Node:\n{node}"));
    assert!(link.contains(&format!("inet {addr}/32")), "{addr}: {link}");
    // The pings went through the TUN both ways (the kernel sent to it, the data path
    // wrote replies into it).
    let (rx, tx) = link_packets(&n1.netns, "udp.manx");
    assert!(rx > 0 && tx > 0, "udp.manx rx {rx} tx {tx}");
    assert_eq!(procs_with(&n1.netns, "udp-datapath"), 1);
    udp_offloads_carry_tcp_intact(&lab);

    // Agent down: traffic does not depend on it.
    manx_e2e::netns::signal(n1.pid.unwrap() as i32, 9);
    std::thread::sleep(std::time::Duration::from_millis(500));
    lab.assert_all_ping();
    manx_e2e::lab::start_node(&mut lab.0, 0).unwrap();
    lab.assert_all_ping();
    // Past the supervisor's 2 s check: it found the running data path and left it alone.
    std::thread::sleep(std::time::Duration::from_secs(3));
    // (The lab started the agent's log afresh.)
    let log = std::fs::read_to_string(n1.run_dir.join("manx-node.log")).unwrap();
    assert_eq!(
        log.matches("started the UDP data path").count(),
        0,
        "the restarted agent started a data path again:\n{log}"
    );
    assert_eq!(procs_with(&n1.netns, "udp-datapath"), 1);
}
