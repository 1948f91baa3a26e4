//! The lab itself at scale's edges: `down` of lab `x` leaves lab `x-more`
//! alone, every manx-node leads a process group of its own (a Ctrl-C on
//! `manx-lab up` does not reach it) and `down` ends it, the lab's links use
//! permanent neighbour entries, and the sampled parallel ping covers every
//! node pair.

use std::path::Path;
use std::time::Duration;

use crate::common::{Lab, require};
use manx_e2e::lab::{self, PingPlan};

/// Running (a killed child of this test stays a zombie until reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X")
    })
}

#[test]
fn down_is_exact_nodes_own_their_process_groups_links_are_permanent() {
    if !require() {
        return;
    }
    let a = Lab::up(Lab::spec("e2elh", 3, lab::Mode::Direct));
    let mut spec = Lab::spec("e2elh-more", 2, lab::Mode::Direct);
    spec.pods_per_node = 0;
    let b = Lab::up(spec);
    // Process groups: each node leads its own, not this test's.
    let ours = lab::process_group(std::process::id()).unwrap().0;
    for node in a.0.nodes.iter().chain(&b.0.nodes) {
        let pid = node.pid.unwrap();
        let (group, comm) = lab::process_group(pid).unwrap();
        assert_eq!(comm, "manx-node");
        assert_eq!(group, pid, "{} is not its own group's leader", node.name);
        assert_ne!(group, ours);
    }
    // Permanent neighbours on the node links, one per other node.
    let ns = manx_e2e::netns::Netns::adopt(&a.0.nodes[0].netns);
    let neigh = ns.ip(&["neigh", "show", "dev", "eth0"]).unwrap();
    for ip in ["172.30.0.12", "172.30.0.13"] {
        assert!(
            neigh
                .lines()
                .any(|l| l.starts_with(&format!("{ip} ")) && l.contains("PERMANENT")),
            "{ip} not permanent on node1: {neigh}"
        );
    }
    // A sample still reaches across every node pair.
    let m = lab::ping(&a.0, PingPlan::Sample { k: 1 }, Duration::from_secs(15));
    assert!(m.failed.is_empty(), "{:?}", m.failed);
    assert!(m.ok.len() >= 3, "{:?}", m.ok);
    let full = lab::ping_all(&a.0, Duration::from_secs(15));
    assert_eq!((full.ok.len(), full.failed.len()), (6, 0), "{full:?}");
    // `down e2elh` leaves e2elh-more whole.
    let a_pids: Vec<u32> = a.0.nodes.iter().filter_map(|n| n.pid).collect();
    lab::down("e2elh").unwrap();
    for pid in a_pids {
        assert!(
            testkit::eventually(Duration::from_secs(5), || !alive(pid)),
            "manx-node {pid} of e2elh still running after down"
        );
    }
    assert!(!Path::new("/run/netns/mxlab-e2elh-hub").exists());
    for ns in &b.0.namespaces {
        assert!(
            Path::new("/run/netns").join(ns).exists(),
            "down e2elh removed {ns} of lab e2elh-more"
        );
    }
    for node in &b.0.nodes {
        assert!(alive(node.pid.unwrap()), "down e2elh killed {}", node.name);
    }
    assert!(lab::LabState::load("e2elh-more").is_ok());
    drop(a);
    drop(b);
    assert!(!Path::new("/run/netns/mxlab-e2elh-more-hub").exists());
}
