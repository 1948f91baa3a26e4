//! (e) Pod churn: 100 pods created and deleted across 3 nodes through the
//! real CNI plugin; afterwards `manxctl ipam check` is clean and every
//! node's routes match the blocks in use.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{Lab, require};
use manx_e2e::lab::{self, Mode, parse_routes};
use manx_e2e::netns::wait_for;

#[test]
fn churn_100_pods_leaves_ipam_clean_and_routes_consistent() {
    if !require() {
        return;
    }
    let mut spec = Lab::spec("e2ee", 3, Mode::Direct);
    spec.pods_per_node = 0;
    let mut lab = Lab::up(spec);
    let nodes = lab.0.nodes.clone();
    for i in 0..100 {
        let node = &nodes[i % nodes.len()];
        lab::add_pod(&mut lab.0, node, 100 + i).expect("CNI ADD");
    }
    // Addresses are unique across the cluster.
    let ips: BTreeSet<String> = lab.0.pods.iter().map(|p| p.ip.clone()).collect();
    assert_eq!(ips.len(), 100, "duplicate pod addresses: {:?}", lab.0.pods);
    // A sample of cross-node pairs reach each other while they all exist.
    let sample = lab::ping_all(
        &manx_e2e::lab::LabState {
            pods: lab.0.pods.iter().step_by(34).cloned().collect(),
            ..lab.0.clone()
        },
        Duration::from_secs(15),
    );
    assert!(sample.failed.is_empty(), "{:?}", sample.failed);
    let names: Vec<String> = lab.0.pods.iter().map(|p| p.name.clone()).collect();
    for name in names {
        lab::del_pod(&mut lab.0, &name).expect("CNI DEL");
    }
    let check = lab.0.manxctl(&nodes[0], &["ipam", "check"]);
    assert!(check.is_ok(), "ipam check not clean: {check:?}");
    // No workload routes left; every node routes to each other node's blocks
    // (blocks keep their affinity through the grace period) and blackholes its own.
    wait_for(
        "routes to match the blocks in use",
        Duration::from_secs(15),
        || {
            let parsed: Vec<_> = (0..nodes.len())
                .map(|i| parse_routes(&lab.routes(i)))
                .collect();
            for (i, r) in parsed.iter().enumerate() {
                if !r.workloads.is_empty() {
                    anyhow::bail!(
                        "{} still has workload routes {:?}",
                        nodes[i].name,
                        r.workloads
                    );
                }
                let others: BTreeSet<&String> = parsed
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, o)| o.blackholes.iter())
                    .collect();
                let remote: BTreeSet<&String> = r.remote.iter().collect();
                if remote != others {
                    anyhow::bail!(
                        "{}: remote routes {remote:?} != other nodes' blocks {others:?}",
                        nodes[i].name
                    );
                }
            }
            Ok(Some(()))
        },
    )
    .unwrap();
}
