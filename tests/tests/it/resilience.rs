//! (f) `kill -9` of one manx-node and (g) etcd stopped for 30 s: continuous
//! pings between pods lose nothing, and the nodes resync without route flaps.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Lab, require};
use manx_e2e::lab::{self, LabState, Mode, StoreKind};
use manx_e2e::netns::{Netns, Proc, signal};
use testkit::eventually;

/// A continuous ping from `from` to `to` (pod names), `count` probes 100 ms apart.
pub(crate) fn ping(state: &LabState, from: &str, to: &str, count: u32) -> Proc {
    ping_family(state, from, to, count, false)
}

/// [`ping`] to the destination's IPv6 address with `v6`.
fn ping_family(state: &LabState, from: &str, to: &str, count: u32, v6: bool) -> Proc {
    let src = state.pods.iter().find(|p| p.name == from).unwrap();
    let dst = state.pods.iter().find(|p| p.name == to).unwrap();
    let ip = dst
        .addrs()
        .into_iter()
        .find(|a| a.is_ipv6() == v6)
        .unwrap_or_else(|| panic!("{to} has no address of that family: {:?}", dst.addrs()))
        .to_string();
    let mut cmd = Command::new("ping");
    cmd.args(["-n", "-i", "0.1", "-W", "1", "-c", &count.to_string(), &ip]);
    let family = if v6 { "-v6" } else { "" };
    Netns::adopt(&src.netns)
        .spawn(
            cmd,
            &state.dir.join(format!("ping-{from}-{to}{family}.log")),
        )
        .unwrap()
}

/// Wait for a ping to finish; returns (transmitted, received).
pub(crate) fn ping_result(mut p: Proc) -> (u32, u32) {
    // A ping still running after 2 min has no summary line: that fails below.
    let exited = eventually(Duration::from_secs(120), || !p.alive());
    let text = std::fs::read_to_string(p.log()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary (ping exited: {exited}):\n{text}"));
    let nums: Vec<u32> = line
        .split(',')
        .filter_map(|f| f.split_whitespace().next()?.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// `ip -o monitor route` in each node, to catch route flaps.
pub(crate) fn monitor_routes(state: &LabState) -> Vec<Proc> {
    state
        .nodes
        .iter()
        .map(|n| {
            let mut cmd = Command::new("ip");
            cmd.args(["-o", "monitor", "route"]);
            Netns::adopt(&n.netns)
                .spawn(cmd, &n.run_dir.join("route-monitor.log"))
                .unwrap()
        })
        .collect()
}

pub(crate) fn flaps(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Deleted") && l.contains("proto 77") && !l.contains("dev cali"))
        .map(String::from)
        .collect()
}

#[test]
fn heavy_etcd_down_for_30s_loses_no_ping_and_no_route_flaps() {
    if !require() {
        return;
    }
    let mut spec = Lab::spec("e2eg", 3, Mode::Direct);
    spec.datastore = StoreKind::Etcd;
    let mut lab = Lab::up(spec);
    lab.assert_all_ping();
    let pods: Vec<String> = lab.0.pods.iter().map(|p| p.name.clone()).collect();
    let monitors = monitor_routes(&lab.0);
    let p1 = ping(&lab.0, &pods[0], &pods[1], 450);
    let p2 = ping(&lab.0, &pods[2], &pods[0], 450);
    signal(lab.0.etcd_pid.unwrap() as i32, libc_sigkill());
    std::thread::sleep(Duration::from_secs(30));
    lab.0.etcd_pid = Some(lab::spawn_etcd(&lab.0).unwrap());
    let (t1, r1) = ping_result(p1);
    let (t2, r2) = ping_result(p2);
    drop(monitors);
    assert_eq!((t1, t2), (r1, r2), "pings lost packets while etcd was down");
    for n in &lab.0.nodes {
        let f = flaps(&n.run_dir.join("route-monitor.log"));
        assert!(f.is_empty(), "{}: routes flapped: {f:?}", n.name);
    }
    // The nodes are back on the store: a new pod gets an address and a route.
    let n2 = lab.0.nodes[1].clone();
    lab::add_pod(&mut lab.0, &n2, 9).unwrap();
    lab.assert_all_ping();
}

#[test]
fn heavy_kill_9_of_one_node_loses_no_ping() {
    if !require() {
        return;
    }
    let lab = &mut Lab::up(Lab::spec("e2ef", 3, Mode::Direct));
    lab.assert_all_ping();
    let pods: Vec<String> = lab.0.pods.iter().map(|p| p.name.clone()).collect();
    let monitors = monitor_routes(&lab.0);
    // node2 <-> node3 (neither is killed) and node2 -> node1 (across the killed node).
    let between = ping(&lab.0, &pods[1], &pods[2], 200);
    let across = ping(&lab.0, &pods[1], &pods[0], 200);
    let killed = lab.0.nodes[0].pid.unwrap();
    signal(killed as i32, libc_sigkill());
    std::thread::sleep(Duration::from_secs(3));
    lab::start_node(&mut lab.0, 0).unwrap();
    let (t, r) = ping_result(between);
    assert_eq!(t, r, "ping between the other nodes lost packets");
    let (t, r) = ping_result(across);
    assert_eq!(t, r, "ping across the restarted node lost packets");
    drop(monitors);
    for n in &lab.0.nodes {
        let f = flaps(&n.run_dir.join("route-monitor.log"));
        assert!(f.is_empty(), "{}: routes flapped: {f:?}", n.name);
    }
}

/// The same over IPv6 in a dual-stack lab: the killed node's IPv6 sessions
/// go down with it, its peers keep its IPv6 block (graceful restart) and
/// the restarted node keeps forwarding on the kernel's routes meanwhile.
#[test]
fn heavy_kill_9_of_one_node_loses_no_ipv6_ping() {
    if !require() {
        return;
    }
    let mut spec = Lab::spec("e2e6f", 3, Mode::Direct);
    spec.ip_family = manx_e2e::lab::IpFamily::Dual;
    let lab = &mut Lab::up(spec);
    lab.assert_all_ping();
    let pods: Vec<String> = lab.0.pods.iter().map(|p| p.name.clone()).collect();
    let monitors = monitor_routes(&lab.0);
    let between = ping_family(&lab.0, &pods[1], &pods[2], 200, true);
    let across = ping_family(&lab.0, &pods[1], &pods[0], 200, true);
    let killed = lab.0.nodes[0].pid.unwrap();
    signal(killed as i32, libc_sigkill());
    std::thread::sleep(Duration::from_secs(3));
    lab::start_node(&mut lab.0, 0).unwrap();
    let (t, r) = ping_result(between);
    assert_eq!(t, r, "IPv6 ping between the other nodes lost packets");
    let (t, r) = ping_result(across);
    assert_eq!(t, r, "IPv6 ping across the restarted node lost packets");
    drop(monitors);
    for n in &lab.0.nodes {
        let f = flaps(&n.run_dir.join("route-monitor.log"));
        assert!(f.is_empty(), "{}: routes flapped: {f:?}", n.name);
    }
    // The restarted node is back on both families.
    lab.assert_all_ping();
}

fn libc_sigkill() -> i32 {
    9
}
