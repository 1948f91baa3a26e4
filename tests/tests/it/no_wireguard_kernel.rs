//! On this host kernel (no WireGuard), FelixConfiguration `wireguardEnabled: true`
//! (`manx-lab up --mode wireguard`) gives one clear line per node, no `wireguard.manx`,
//! no public key in any Node, and the pools keep working unencrypted.

use std::time::Duration;

use crate::common::{Lab, require};
use manx_e2e::lab::Mode;
use manx_e2e::netns::wait_for;
use testkit::Netns;

const LINE: &str = "WireGuard is enabled (FelixConfiguration wireguardEnabled) but this kernel has no WireGuard (CONFIG_WIREGUARD)";

/// Whether a wireguard device can be made (in a scratch namespace, deleted on return).
fn kernel_has_wireguard() -> bool {
    let ns = Netns::new("mxnowg");
    ns.command("ip")
        .args(["link", "add", "w0", "type", "wireguard"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn wireguard_on_a_kernel_without_it_logs_one_line_and_pods_still_ping() {
    if !require() {
        return;
    }
    if kernel_has_wireguard() {
        eprintln!(
            "SKIP: this kernel has WireGuard; the no-WireGuard path needs one without it \
             (the encrypted path is for a VM test on a WireGuard kernel)"
        );
        return;
    }
    let mut spec = Lab::spec("e2enowg", 2, Mode::Wireguard);
    spec.pods_per_node = 1;
    let lab = Lab::up(spec);
    for n in &lab.0.nodes {
        let log = n.run_dir.join("manx-node.log");
        wait_for(
            "the no-WireGuard line in the node log",
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
        let links = manx_e2e::netns::Netns::adopt(&n.netns)
            .ip(&["-o", "link", "show"])
            .unwrap();
        assert!(!links.contains("wireguard.manx"), "{}: {links}", n.name);
        let node = lab
            .0
            .manxctl(n, &["get", "node", &n.name, "-o", "yaml"])
            .unwrap();
        assert!(!node.contains("wireguardPublicKey"), "{node}");
    }
    let fc = lab
        .0
        .manxctl(&lab.0.nodes[0], &["get", "felixconfig"])
        .unwrap();
    assert!(fc.contains("default") && fc.contains("true"), "{fc}");
    lab.assert_all_ping();
}
