//! On this host kernel (no IPIP), an `ipipMode: Always` pool gives the one
//! clear line, and the node keeps serving its VXLAN and direct pools.

use std::process::Stdio;
use std::time::Duration;

use crate::common::{Lab, require};
use manx_e2e::lab::{self, Mode};
use manx_e2e::netns::wait_for;
use testkit::Netns;

const LINE: &str = "IPIP pool 10.65.0.0/16 cannot be programmed: this kernel has no ipip support (CONFIG_NET_IPIP); use vxlanMode or ipipMode: Never";

/// Whether an ipip device can be made (in a scratch namespace, deleted on
/// return).
fn kernel_has_ipip() -> bool {
    let ns = Netns::new("mxnoipip");
    ns.command("ip")
        .args(["link", "add", "t0", "type", "ipip", "local", "198.51.100.1"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn ipip_pool_degrades_with_one_line_and_vxlan_and_direct_pools_keep_working() {
    if !require() {
        return;
    }
    if kernel_has_ipip() {
        eprintln!(
            "SKIP: this kernel has IPIP; the degraded path is covered by tests/vm on such kernels"
        );
        return;
    }
    let mut spec = Lab::spec("e2enoipip", 2, Mode::Ipip);
    spec.pods_per_node = 0;
    let mut lab = Lab::up(spec);
    let nodes = lab.0.nodes.clone();
    for n in &nodes {
        let log = n.run_dir.join("manx-node.log");
        wait_for(
            "the no-IPIP line in the node log",
            Duration::from_secs(10),
            || {
                let text = std::fs::read_to_string(&log)?;
                Ok((text.matches(LINE).count() == 1).then_some(()))
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e:#}\n{}",
                n.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let status = lab.0.manxctl(n, &["node", "status"]).unwrap();
        assert!(status.contains(LINE), "node status should warn:\n{status}");
    }
    // A VXLAN pool serves new pods while the IPIP pool is disabled, then a
    // direct pool next to it.
    switch_pool(
        &mut lab,
        "default-ipv4-ippool",
        "vxlan-pool",
        "10.66",
        "vxlanMode: Always",
        10,
    );
    switch_pool(
        &mut lab,
        "vxlan-pool",
        "direct-pool",
        "10.67",
        "ipipMode: Never\n  vxlanMode: Never",
        20,
    );
    let r = lab.routes(0);
    assert!(r.contains("dev vxlan.manx proto 77 onlink"), "{r}");
    assert!(r.contains("via 172.30.0.12 dev eth0 proto 77"), "{r}");
    assert!(!r.contains("tunl0"), "{r}");
}

/// Create pool `new` (`<prefix>.0.0/16` with `modes`), disable pool `old`,
/// and check new pods on every node come from `new` and reach every pod.
fn switch_pool(lab: &mut Lab, old: &str, new: &str, prefix: &str, modes: &str, first_pod: usize) {
    let nodes = lab.0.nodes.clone();
    let manifest = lab.0.dir.join(format!("{new}.yaml"));
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {new}\nspec:\n  cidr: {prefix}.0.0/16\n  {modes}\n"
        ),
    )
    .unwrap();
    let first = &nodes[0];
    lab.0
        .manxctl(first, &["apply", "-f", &manifest.display().to_string()])
        .unwrap();
    let disable = r#"{"spec":{"disabled":true}}"#;
    lab.0
        .manxctl(first, &["patch", "ippool", old, "-p", disable])
        .unwrap();
    for (i, n) in nodes.iter().enumerate() {
        let pod = lab::add_pod(&mut lab.0, n, first_pod + i).unwrap();
        assert!(
            pod.ip.starts_with(&format!("{prefix}.")),
            "pod from {new}: {}",
            pod.ip
        );
    }
    lab.assert_all_ping();
}
