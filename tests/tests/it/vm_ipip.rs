//! IPIP end to end in a real kernel: `tests/vm/run.sh` builds static Manx
//! binaries and boots a Debian 6.1 kernel (with ipip) under qemu, where
//! `tests/vm/ipip-cluster.sh` brings up a 4-node `manx-lab` cluster in
//! ipipMode Always and then CrossSubnet, checks every node's `tunl0`
//! (address = IPAM tunnel address, MTU = uplink − 20), the routes, and which
//! path every pod pair takes (tunl0 packet counters).
//!
//! The build machines' kernel has no IPIP, so this is the only place the
//! tunnel dataplane meets a kernel. When the VM cannot be had (no runner,
//! qemu or kernel package), the test fails in CI (`CI=true`) and prints
//! "SKIP: <reason>" elsewhere.

use std::path::Path;
use std::process::Command;

/// `run.sh`'s exit status for "this machine cannot run the VM".
const EXIT_CANNOT_RUN: i32 = 77;

#[test]
fn heavy_vm_ipip_cluster_always_and_crosssubnet() {
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
            "CI=true and the IPIP VM test cannot run: {reason}\n{shown}"
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
    // Exit 0 alone is not enough: the guest must have run both labs and said so.
    assert!(
        stdout.contains("RESULT: PASS"),
        "run.sh exited 0 but the guest never printed RESULT: PASS"
    );
    for lab in ["[ipip] manx-lab up", "[xsub] manx-lab up"] {
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
