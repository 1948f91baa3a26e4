//! IPIP and WireGuard end to end in a real kernel: `tests/vm/run.sh` builds
//! static Manx binaries and boots a Debian 6.1 kernel (with ipip and
//! wireguard) under qemu once, where `tests/vm/guest.sh` runs
//! - `tests/vm/ipip-cluster.sh`: a 4-node `manx-lab` cluster in ipipMode
//!   Always and then CrossSubnet, checking every node's `tunl0` (address =
//!   IPAM tunnel address, MTU = uplink − 20), the routes, and which path every
//!   pod pair takes (tunl0 packet counters);
//! - `tests/vm/wireguard-cluster.sh`: a 3-node cluster with WireGuard
//!   (`wireguard.manx`, published keys, routes), a tcpdump capture on a node's
//!   uplink that shows only WireGuard's UDP between nodes, and a key rotation
//!   (key file deleted, manx-node restarted) under pings every 10 ms whose
//!   longest gap it prints (`ROTATION:` lines; a timing, not asserted).
//!
//! The build machines' kernel has neither IPIP nor WireGuard, so this is the
//! only place those dataplanes meet a kernel. When the VM cannot be had (no
//! runner, qemu or kernel package), the test fails in CI (`CI=true`) and
//! prints "SKIP: <reason>" elsewhere.

use std::path::Path;
use std::process::Command;

/// `run.sh`'s exit status for "this machine cannot run the VM".
const EXIT_CANNOT_RUN: i32 = 77;

#[test]
fn heavy_vm_ipip_and_wireguard_clusters() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent: the repository root");
    let script = repo.join("tests/vm/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(repo)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e} (is bash installed?)", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = format!("--- guest output (stdout)\n{stdout}\n--- run.sh stderr\n{stderr}");
    if out.status.code() == Some(EXIT_CANNOT_RUN) {
        let reason = stderr
            .lines()
            .find_map(|l| l.strip_prefix("vm-skip: "))
            .unwrap_or("tests/vm/run.sh could not start the VM")
            .to_string();
        assert!(
            !testkit::in_ci(),
            "CI=true and the VM test cannot run: {reason}\n{shown}"
        );
        println!("SKIP: {reason}");
        return;
    }
    // Shown with --no-capture, and by nextest when the test fails.
    println!("{shown}");
    assert!(
        out.status.success(),
        "tests/vm/run.sh failed ({}): see the guest output above",
        out.status
    );
    // Exit 0 alone is not enough: the guest must have run every lab and said so.
    for result in ["RESULT: PASS (ipip", "RESULT: PASS (wireguard"] {
        assert!(
            stdout.contains(result),
            "run.sh exited 0 but the guest never printed {result}...)"
        );
    }
    for lab in [
        "[ipip] manx-lab up",
        "[xsub] manx-lab up",
        "[wg] manx-lab up",
        "[wg] node2 published a new public key",
        "[wg] rotation, flow in of node2: traffic recovered",
        "[wg] rotation, flow out of node2: traffic recovered",
        "[wg capture node1] the uplink carried no pod packet in clear",
        "[wg capture node2 during rotation] the uplink carried no pod packet in clear",
    ] {
        assert!(
            stdout.contains(&format!("PASS: {lab}")),
            "no PASS line for {lab}"
        );
    }
    assert!(
        !stdout.contains("FAIL:"),
        "a guest check failed though the exit status was 0"
    );
    // Both paths were proven by the counters: tunnel pairs in both labs,
    // direct (same-subnet) pairs in the CrossSubnet lab.
    assert!(
        stdout.contains("path direct") && stdout.contains("path tunnel"),
        "the guest's path table lacks direct or tunnel pairs"
    );
}
