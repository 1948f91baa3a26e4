//! Issue 20: BFD from the datastore. `BGPConfiguration default` with
//! `nodeMeshBFD` gives the mesh BFD (turned on in a running cluster, no
//! session restarts), `manxctl node status` shows it, and a node whose
//! uplink goes down loses its routes on every other node in well under the
//! 90 s hold time. The time is printed; the assertion is a generous bound
//! (the 1 s target lives in the failover benchmark).

use std::time::{Duration, Instant};

use crate::common::{Lab, require};
use crate::resilience::{flaps, monitor_routes, ping, ping_result};
use manx_e2e::lab::{self, Mode};
use manx_e2e::netns::{Netns, signal};
use testkit::eventually;

const MESH_BFD: &str = "apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  nodeMeshBFD:
    minRx: 100ms
    minTx: 100ms
    multiplier: 3
";

/// The peer rows of `manxctl node status` (`| 172.30.…` lines).
fn peer_rows(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| l.starts_with("| 172.30."))
        .map(String::from)
        .collect()
}

/// Manx routes in `netns` via `gateway`.
fn routes_via(netns: &str, gateway: &str) -> usize {
    let via = format!("via {gateway} ");
    Netns::adopt(netns)
        .ip(&["route", "show", "proto", "77"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&via))
        .count()
}

/// Apply `nodeMeshBFD` and wait until every node shows BFD up on both of
/// its mesh peers.
fn mesh_bfd_up(lab: &Lab) {
    let n1 = &lab.0.nodes[0];
    let manifest = lab.0.dir.join("mesh-bfd.yaml");
    std::fs::write(&manifest, MESH_BFD).unwrap();
    lab.0
        .manxctl(n1, &["apply", "-f", &manifest.display().to_string()])
        .unwrap();
    for n in &lab.0.nodes {
        let mut last = String::new();
        let up = eventually(Duration::from_secs(20), || {
            last = lab.0.manxctl(n, &["node", "status"]).unwrap_or_default();
            let rows = peer_rows(&last);
            rows.len() == 2 && rows.iter().all(|r| r.contains("| up    | up  |"))
        });
        assert!(up, "{}: BFD not up on both peers:\n{last}", n.name);
    }
}

/// kill -9 of manx-node with BFD on: manx-bfdd keeps the BFD sessions Up
/// (C bit), so the peers see an agent restart, keep the routes through
/// graceful restart, and no ping is lost; no peer logs a BFD Down.
#[test]
fn heavy_kill_9_with_bfd_loses_no_ping_and_no_bfd_down() {
    if !require() {
        return;
    }
    let lab = &mut Lab::up(Lab::spec("e2ebfk", 3, Mode::Direct));
    lab.assert_all_ping();
    mesh_bfd_up(lab);
    let pods: Vec<String> = lab.0.pods.iter().map(|p| p.name.clone()).collect();
    let monitors = monitor_routes(&lab.0);
    let between = ping(&lab.0, &pods[1], &pods[2], 200);
    let across = ping(&lab.0, &pods[1], &pods[0], 200);
    let killed = lab.0.nodes[0].pid.unwrap();
    signal(killed as i32, 9);
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
    for n in &lab.0.nodes[1..] {
        let log = std::fs::read_to_string(n.run_dir.join("manx-node.log")).unwrap_or_default();
        let downs: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("BFD session down"))
            .collect();
        assert!(downs.is_empty(), "{}: BFD went down: {downs:?}", n.name);
    }
    // manx-bfdd served node1's sessions and was started once: the
    // restarted node uses the one its predecessor started.
    let bfdd_log =
        std::fs::read_to_string(lab.0.nodes[0].run_dir.join("bfdd.log")).unwrap_or_default();
    assert_eq!(
        bfdd_log.matches("manx-bfdd serving").count(),
        1,
        "manx-bfdd did not run once for node1:\n{bfdd_log}"
    );
    // The restarted node uses the manx-bfdd its predecessor started.
    let status = lab.0.manxctl(&lab.0.nodes[0], &["node", "status"]).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            let s = lab
                .0
                .manxctl(&lab.0.nodes[0], &["node", "status"])
                .unwrap_or_default();
            let rows = peer_rows(&s);
            rows.len() == 2 && rows.iter().all(|r| r.contains("| up    | up  |"))
        }),
        "{status}"
    );
}

#[test]
fn node_mesh_bfd_from_the_datastore_drops_a_dead_nodes_routes() {
    if !require() {
        return;
    }
    let lab = Lab::up(Lab::spec("e2ebfd", 3, Mode::Direct));
    lab.assert_all_ping();
    let n1 = lab.0.nodes[0].clone();
    let since_before: Vec<String> = peer_rows(&lab.0.manxctl(&n1, &["node", "status"]).unwrap());

    let manifest = lab.0.dir.join("mesh-bfd.yaml");
    std::fs::write(&manifest, MESH_BFD).unwrap();
    lab.0
        .manxctl(&n1, &["apply", "-f", &manifest.display().to_string()])
        .unwrap();
    // Every node's two mesh peers show BFD up.
    for n in &lab.0.nodes {
        let mut last = String::new();
        let up = eventually(Duration::from_secs(20), || {
            last = lab.0.manxctl(n, &["node", "status"]).unwrap_or_default();
            let rows = peer_rows(&last);
            rows.len() == 2 && rows.iter().all(|r| r.contains("| up    | up  |"))
        });
        assert!(up, "{}: BFD not up on both peers:\n{last}", n.name);
        assert!(last.contains("| BFD |"), "{last}");
    }
    // Turning BFD on reconfigured BFD only: the BGP sessions stayed up
    // (same SINCE as before).
    let after = peer_rows(&lab.0.manxctl(&n1, &["node", "status"]).unwrap());
    // `| addr | type | state | since | info |`, BFD after state once on.
    let column = |row: &str, i: usize| row.split('|').nth(i).unwrap_or("").trim().to_string();
    let since_after: Vec<String> = after.iter().map(|r| column(r, 5)).collect();
    let since_before: Vec<String> = since_before.iter().map(|r| column(r, 4)).collect();
    assert_eq!(since_before, since_after, "sessions restarted: {after:?}");

    // node3 dies to the network: its uplink goes down.
    let dead = lab.0.nodes[2].clone();
    let gateway = dead.ip.to_string();
    for n in &lab.0.nodes[..2] {
        assert!(
            routes_via(&n.netns, &gateway) > 0,
            "{}: no route via node3",
            n.name
        );
    }
    let t0 = Instant::now();
    Netns::adopt(&dead.netns)
        .ip(&["link", "set", "eth0", "down"])
        .unwrap();
    let mut gone = Vec::new();
    for n in &lab.0.nodes[..2] {
        let ok = eventually(Duration::from_secs(15), || {
            routes_via(&n.netns, &gateway) == 0
        });
        gone.push((n.name.clone(), t0.elapsed()));
        assert!(
            ok,
            "{}: node3's routes still there after 15 s (hold time 90 s: BFD did not act)",
            n.name
        );
    }
    println!("node3's uplink down -> its routes gone on: {gone:?} (BFD 100 ms x 3)");
    let log = std::fs::read_to_string(n1.run_dir.join("manx-node.log")).unwrap_or_default();
    assert!(
        log.lines().any(
            |l| l.contains("BFD session down: taking the BGP session down") && l.contains(&gateway)
        ),
        "node1's log does not say BFD took node3's session down"
    );
}
