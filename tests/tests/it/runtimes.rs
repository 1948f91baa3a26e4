//! Real container runtimes on Manx (issue 16): containerd 1.6 (`ctr run
//! --cni`, go-cni) and podman 4.3 (CNI backend, libcni 1.1) each run a
//! busybox container per node of a 2-node lab, inside the node's network
//! namespace with a private mount namespace for /etc/cni/net.d,
//! /opt/cni/bin, /var/lib/cni and /run/netns (manx_e2e::lab::runtime). The
//! containers get pool addresses, ping each other across nodes from inside,
//! and are deleted the runtime's way; then nothing is left: no cali* veth,
//! the addresses free, no WorkloadEndpoint, an empty libcni cache, and the
//! host's own CNI directories as they were.

use std::path::Path;
use std::time::{Duration, Instant};

use manx_e2e::lab::{self, LabState, Mode, Runtime, runtime};
use manx_e2e::netns::Netns;
use testkit::Prereqs;

use crate::common::{Lab, require};

fn require_runtime(rt: Runtime) -> bool {
    if !require() {
        return false;
    }
    let missing = rt.missing();
    Prereqs::new()
        .check(missing.is_empty(), missing.join(", "))
        .ok()
}

/// What the root mount namespace has under the paths the runtimes use.
fn host_cni_dirs() -> Vec<String> {
    let mut seen = Vec::new();
    for d in [
        "/etc/cni/net.d",
        "/opt/cni",
        "/opt/containerd",
        "/var/lib/cni",
        "/var/lib/containers",
        "/run/containerd",
        "/run/containers",
        "/run/runc",
    ] {
        match std::fs::read_dir(d) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .flatten()
                    .map(|e| format!("{d}/{}", e.file_name().to_string_lossy()))
                    .collect();
                names.sort();
                seen.push(format!("{d}: {names:?}"));
            }
            Err(_) => seen.push(format!("{d}: absent")),
        }
    }
    // podman names its pod namespaces netns-<uuid>, CNI tools cni-<uuid>:
    // they must stay in the node's private /run/netns.
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        let mut runtime_made: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("netns-") || n.starts_with("cni-"))
            .collect();
        runtime_made.sort();
        seen.push(format!("/run/netns runtime-made: {runtime_made:?}"));
    }
    seen
}

fn manxctl(state: &LabState, args: &[&str]) -> String {
    state
        .manxctl(&state.nodes[0], args)
        .unwrap_or_else(|e| panic!("manxctl {args:?}: {e:#}"))
}

/// `text` names address `ip` (not just a longer one starting with it).
fn mentions(text: &str, ip: &str) -> bool {
    text.match_indices(ip).any(|(i, _)| {
        !text[i + ip.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// `manxctl ipam check`'s report, whatever its exit status (1 when it
/// finds problems).
fn ipam_check(state: &LabState) -> String {
    let node = &state.nodes[0];
    let out = Netns::adopt(&node.netns)
        .command(state.bin("manxctl"))
        .args(["ipam", "check"])
        .envs(state.store_env())
        .env("MANX_RUN_DIR", &node.run_dir)
        .output()
        .expect("run manxctl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// After the pods are gone: nothing of them anywhere.
fn assert_nothing_left(state: &LabState, gone: &[(String, String)]) {
    for node in &state.nodes {
        let links = Netns::adopt(&node.netns)
            .ip(&["-o", "link", "show"])
            .unwrap();
        assert!(
            !links.contains("cali"),
            "{} still has a workload veth:\n{links}",
            node.name
        );
        let rt = node.runtime.as_ref().expect("a runtime node");
        let results = rt.cni_cache().join("results");
        let cached: Vec<String> = std::fs::read_dir(&results)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            cached.is_empty(),
            "{}: libcni cache {} not empty: {cached:?}",
            node.name,
            results.display()
        );
    }
    let weps = manxctl(state, &["get", "wep", "-A"]);
    for (name, ip) in gone {
        // Endpoints are named by the runtime's id (podman: the container
        // id, ctr: <namespace>-<name>): match on the address.
        assert!(
            !weps.contains(&format!(" {ip}/32 ")),
            "WorkloadEndpoint of {name} left:\n{weps}"
        );
        let show = manxctl(state, &["ipam", "show", "--ip", ip]);
        assert!(
            show.contains("is not assigned"),
            "{name}'s {ip} still allocated: {show}"
        );
    }
    let check = ipam_check(state);
    assert!(check.contains("no problems found"), "{check}");
}

/// 2 nodes, a container on each through `rt`; ping across from inside;
/// delete; nothing left.
fn create_ping_delete(id: &str, rt: Runtime) {
    let before = host_cni_dirs();
    let mut spec = Lab::spec(id, 2, Mode::Direct);
    spec.runtime = rt;
    // manx-node checks its endpoints often: a live container must never
    // be reported stale (its netns path is the runtime's, in the node's
    // mount namespace).
    spec.stale_scan_secs = Some(0.3);
    let mut lab = Lab::up(spec);
    let pods = lab.0.pods.clone();
    assert_eq!(pods.len(), 2, "{pods:?}");
    for p in &pods {
        assert!(p.container, "{p:?}");
        assert!(
            p.ip.starts_with("10.65."),
            "{} got {} outside the pool",
            p.name,
            p.ip
        );
    }
    // From inside each container, across nodes.
    lab.assert_all_ping();
    let weps = manxctl(&lab.0, &["get", "wep", "-A"]);
    for p in &pods {
        assert!(
            weps.contains(&format!(" {}/32 ", p.ip)),
            "no WorkloadEndpoint for {}:\n{weps}",
            p.name
        );
    }
    assert_eq!(
        host_cni_dirs(),
        before,
        "the runtimes wrote to the host's dirs"
    );
    // Several scans (0.3 s each; a dead container is reported within about
    // 2 s, see the leak test): never reported.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let check = ipam_check(&lab.0);
        assert!(
            check.contains("no problems found"),
            "live containers reported after {:?}: {check}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for p in &pods {
        lab::del_pod(&mut lab.0, &p.name).unwrap_or_else(|e| panic!("deleting {}: {e:#}", p.name));
    }
    let gone: Vec<(String, String)> = pods
        .iter()
        .map(|p| (p.name.clone(), p.ip.clone()))
        .collect();
    assert_nothing_left(&lab.0, &gone);
    assert_eq!(
        host_cni_dirs(),
        before,
        "the runtimes wrote to the host's dirs"
    );
    let id = lab.0.spec.id.clone();
    drop(lab);
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory/mxlab-{id}")).exists(),
        "down left the lab's cgroups"
    );
}

/// containerd: `ctr run --rm --cni` (foreground), the task killed: ctr
/// calls DEL and removes the container.
#[test]
fn containerd_ctr_run_cni_ping_and_clean_delete() {
    if !require_runtime(Runtime::Containerd) {
        return;
    }
    create_ping_delete("rtctr", Runtime::Containerd);
}

/// podman: `podman run --network manx-pods`, `podman rm -f` (DEL).
#[test]
fn podman_run_network_ping_and_clean_delete() {
    if !require_runtime(Runtime::Podman) {
        return;
    }
    create_ping_delete("rtpod", Runtime::Podman);
}

/// `ctr run -d --cni`, task killed, container removed: ctr never calls DEL.
/// manx-node sees the pod netns and veth gone: `ipam check` reports the
/// endpoint within a scan, and after the grace the endpoint and address are
/// gone; the live containers on both nodes are never reported or touched.
#[test]
fn containerd_leak_without_del_is_reclaimed() {
    if !require_runtime(Runtime::Containerd) {
        return;
    }
    const GRACE: u64 = 3;
    let mut spec = Lab::spec("rtleak", 2, Mode::Direct);
    spec.runtime = Runtime::Containerd;
    spec.stale_grace_secs = Some(GRACE);
    spec.stale_scan_secs = Some(0.3);
    let lab = Lab::up(spec);
    let live = lab.0.pods.clone();
    let node1 = lab.0.nodes[0].clone();
    let name = "mxlab-rtleak-leaked";
    let leaked = runtime::create(&lab.0, &node1, name, true).expect("ctr run -d --cni");
    assert!(leaked.ip.starts_with("10.65."), "{leaked:?}");
    // The live pod on node2 reaches it: it is a real workload.
    let from = live.iter().find(|p| p.node == "node2").unwrap();
    assert!(
        testkit::eventually(Duration::from_secs(10), || {
            runtime::ping(&lab.0, from, &leaked.ip).unwrap_or(false)
        }),
        "{} cannot ping the detached container {}",
        from.name,
        leaked.ip
    );
    let t0 = Instant::now();
    runtime::delete(&lab.0, &node1, name, true).expect("ctr task kill + rm, no DEL");
    let weps = manxctl(&lab.0, &["get", "wep", "-A"]);
    assert!(
        weps.contains(&format!(" {}/32 ", leaked.ip)),
        "ctr called DEL after all? {weps}"
    );
    let assert_live_untouched = |check: &str| {
        for p in &live {
            assert!(
                !mentions(check, &p.ip),
                "live container {} ({}) reported: {check}",
                p.name,
                p.ip
            );
            let show = manxctl(&lab.0, &["ipam", "show", "--ip", &p.ip]);
            assert!(show.contains("is in use"), "live {}: {show}", p.name);
        }
    };
    // Reported at the next scan, long before the grace ends.
    let mut flagged = String::new();
    assert!(
        testkit::eventually(Duration::from_secs(GRACE), || {
            flagged = ipam_check(&lab.0);
            mentions(&flagged, &leaked.ip)
        }),
        "ipam check does not report the leaked endpoint: {flagged}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(GRACE),
        "reported only after {:?}",
        t0.elapsed()
    );
    assert!(flagged.contains("is gone"), "{flagged}");
    assert_live_untouched(&flagged);
    // Reclaimed after the grace: endpoint deleted, address free.
    let mut last = String::new();
    assert!(
        testkit::eventually(Duration::from_secs(GRACE + 10), || {
            let weps = manxctl(&lab.0, &["get", "wep", "-A"]);
            last = manxctl(&lab.0, &["ipam", "show", "--ip", &leaked.ip]);
            for p in &live {
                assert!(
                    weps.contains(&format!(" {}/32 ", p.ip)),
                    "live {} reclaimed: {weps}",
                    p.name
                );
            }
            !weps.contains(&format!(" {}/32 ", leaked.ip)) && last.contains("is not assigned")
        }),
        "not reclaimed {:?} after the kill: {last}",
        t0.elapsed()
    );
    // manx.dev/stale-since is whole Unix seconds: up to 1 s early.
    assert!(
        t0.elapsed() >= Duration::from_secs(GRACE - 1),
        "reclaimed after {:?}, before the {GRACE} s grace",
        t0.elapsed()
    );
    let check = ipam_check(&lab.0);
    assert!(check.contains("no problems found"), "{check}");
    let weps = manxctl(&lab.0, &["get", "wep", "-A"]);
    for p in &live {
        assert!(
            weps.contains(&format!(" {}/32 ", p.ip)),
            "{} reclaimed: {weps}",
            p.name
        );
    }
    lab.assert_all_ping();
}
