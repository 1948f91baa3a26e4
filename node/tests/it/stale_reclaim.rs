//! Stale-workload reclaim (issue 16) end to end: manx-node in a namespace
//! on an embedded store, grace 3 s and a scan every 0.5 s; pods added
//! through the real `manx` CNI plugin with `manx-ipam`, then their runtime
//! "dies" without CNI DEL:
//!
//! * pod A: netns deleted (its veth goes with it) → endpoint marked, and
//!   `ipam check` reports it with its reclaim time → after the grace, the
//!   endpoint is gone and its address free; a kubelet DEL afterwards still
//!   succeeds;
//! * pod B: netns path deleted while a process keeps the namespace (and so
//!   the veth) alive → marked, never reclaimed while its veth exists; once
//!   the process ends (the veth goes), reclaimed;
//! * pod C: alive throughout, never marked.
//!
//! Everything lives in test namespaces on 198.19.52.0/24, pool
//! 10.23.0.0/16.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use datastore::Datastore;
use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::WorkloadEndpoint;
use testkit::netns::veth;
use testkit::{Daemon, Netns, Prereqs, eventually};

const NODE: &str = "mxrc-node";
const NETWORK: &str = "k8s-pod-network";
const LIMIT: Duration = Duration::from_secs(60);

/// `manx` and `manx-ipam` from their packages, built into this test's
/// target directory (cargo gives tests only their own package's binaries;
/// a no-op when up to date). The variables cargo gives this test
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`…) are removed first: `ring`'s build
/// script reruns when they change, which would rebuild half the workspace
/// on every run.
pub(crate) fn cni_bin_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let me = PathBuf::from(env!("CARGO_BIN_EXE_manx-node"));
        let profile_dir = me.parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let mut cmd = Command::new(cargo);
        for (k, _) in std::env::vars() {
            if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "OUT_DIR" {
                cmd.env_remove(k);
            }
        }
        cmd.args([
            "build",
            "-q",
            "-p",
            "manx-cni",
            "--bin",
            "manx",
            "-p",
            "manx-ipam",
            "--bin",
            "manx-ipam",
            "--manifest-path",
            manifest,
        ])
        .env("CARGO_TARGET_DIR", &target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd
            .output()
            .expect("run cargo build for manx and manx-ipam");
        assert!(
            out.status.success(),
            "cargo build -p manx-cni -p manx-ipam failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir
    })
    .clone()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

struct Lab {
    dir: tempfile::TempDir,
    node: Netns,
    _peer: Netns,
}

impl Lab {
    fn db(&self) -> PathBuf {
        self.dir.path().join("manx.db")
    }

    fn conf(&self) -> String {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "type": "manx",
            "datastore_type": "embedded",
            "manx_db": self.db().display().to_string(),
            "nodename": NODE,
            "mtu": 1400,
            "ipam": {"type": "manx-ipam", "assign_ipv4": "true"}
        })
        .to_string()
    }

    /// Runs the plugin in the node namespace; (exit code, stdout, stderr).
    fn cni(&self, command: &str, cid: &str, netns: &Path, pod: &str) -> (i32, String, String) {
        let bins = cni_bin_dir();
        let mut cmd = self.node.command(bins.join("manx"));
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            )
            .env("CNI_PATH", &bins)
            .env("MANX_IPAM_LOCK_DIR", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the manx plugin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(self.conf().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// ADD; the pod's address.
    fn add(&self, cid: &str, pod: &Netns, name: &str) -> String {
        let (code, out, err) = self.cni("ADD", cid, &pod.path(), name);
        assert_eq!(code, 0, "ADD {cid}: {out} {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let addr = v["ips"][0]["address"].as_str().unwrap();
        addr.split('/').next().unwrap().to_string()
    }

    fn endpoint(&self, pod: &str) -> Option<WorkloadEndpoint> {
        let db = self.db();
        let name = format!(
            "{}-k8s-{}-eth0",
            NODE.replace('-', "--"),
            pod.replace('-', "--")
        );
        rt().block_on(async move {
            let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::open(&db).await.unwrap());
            Client::new(store)
                .get_namespaced::<WorkloadEndpoint>("default", &name)
                .await
                .unwrap()
        })
    }

    fn annotation(&self, pod: &str, key: &str) -> Option<String> {
        self.endpoint(pod)?.metadata.annotations.get(key).cloned()
    }

    /// (`ipam check` problem lines, addresses of the pod's handle).
    fn ipam(&self, cid: &str) -> (Vec<String>, Vec<String>) {
        let db = self.db();
        let handle = format!("{NETWORK}.{cid}");
        rt().block_on(async move {
            let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::open(&db).await.unwrap());
            let topo = ipam::resources::DatastoreTopology::new(store.clone());
            let ipam = ipam::Ipam::new(store, Arc::new(topo));
            let problems = ipam.check(None).await.unwrap().problems();
            let held = ipam
                .ips_by_handle(&handle)
                .await
                .unwrap()
                .iter()
                .map(|ip| ip.to_string())
                .collect();
            (problems, held)
        })
    }

    fn has_link(&self, name: &str) -> bool {
        self.node
            .ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["ifname"] == name)
    }
}

fn start_node(lab: &Lab) -> Daemon {
    crate::support::start_manx_node(
        &lab.node,
        lab.dir.path(),
        NODE,
        "10.23.0.0/16",
        &[
            ("MANX_STALE_WORKLOAD_GRACE_SECS", "3"),
            ("MANX_STALE_WORKLOAD_SCAN_SECS", "0.5"),
        ],
    )
}

#[test]
fn workloads_whose_runtime_never_said_del_are_reclaimed_but_never_with_a_veth() {
    if !Prereqs::new().root().commands(&["ip", "sleep"]).ok() {
        return;
    }
    let _ = cni_bin_dir();
    let lab = Lab {
        dir: tempfile::tempdir().unwrap(),
        node: Netns::new("mxrc"),
        _peer: Netns::new("mxrc"),
    };
    veth(&lab._peer, "eth0", &lab.node, "eth0");
    lab._peer
        .ip(&["addr", "add", "198.19.52.1/24", "dev", "eth0"]);
    lab.node
        .ip(&["addr", "add", "198.19.52.2/24", "dev", "eth0"]);
    lab.node
        .ip(&["route", "add", "default", "via", "198.19.52.1"]);
    let mut manx = start_node(&lab);
    // Running once its Node exists and its pool is there.
    assert!(
        eventually(LIMIT, || lab.dir.path().join("nodename").exists()),
        "{}",
        manx.log_text()
    );

    let (a, b, c) = (Netns::new("mxrc"), Netns::new("mxrc"), Netns::new("mxrc"));
    let ip_a = lab.add("ctr-a", &a, "pod-a");
    let ip_b = lab.add("ctr-b", &b, "pod-b");
    let ip_c = lab.add("ctr-c", &c, "pod-c");
    let veth_b = lab.endpoint("pod-b").unwrap().spec.interface_name.unwrap();
    // Live pods stay unmarked over several scans.
    std::thread::sleep(Duration::from_secs(2));
    for p in ["pod-a", "pod-b", "pod-c"] {
        assert_eq!(
            lab.annotation(p, "manx.dev/stale-since"),
            None,
            "{}",
            manx.log_text()
        );
    }
    assert!(lab.ipam("ctr-a").0.is_empty(), "{:?}", lab.ipam("ctr-a"));

    // B: a process keeps the namespace (and its veth) while its path goes.
    let _holder = Daemon::spawn(&b, lab.dir.path(), "holder", "sleep", &["600"], &[]);
    assert!(eventually(LIMIT, || Command::new("ip")
        .args(["netns", "pids", b.name()])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())));
    testkit::run(Command::new("ip").args(["netns", "del", b.name()]));
    // A: the runtime deletes the netns without DEL; the veth goes with it.
    drop(a);

    // A is marked and `ipam check` reports it, naming its reclaim time.
    let mut seen = Vec::new();
    assert!(
        eventually(LIMIT, || {
            seen = lab.ipam("ctr-a").0;
            seen.iter()
                .any(|l| l.contains("-k8s-pod--a-eth0") && l.contains("reclaimed in"))
                || lab.endpoint("pod-a").is_none()
        }),
        "{seen:?}\n{}",
        manx.log_text()
    );
    assert!(
        seen.iter().any(|l| l.contains("-k8s-pod--a-eth0")
            && l.contains("container ctr-a")
            && l.contains(&ip_a)),
        "the mark was seen before the reclaim: {seen:?}"
    );
    // After the grace: A's endpoint is gone and its address free.
    assert!(
        eventually(LIMIT, || lab.endpoint("pod-a").is_none()),
        "{}",
        manx.log_text()
    );
    assert!(lab.ipam("ctr-a").1.is_empty());
    let log = manx.log_text();
    assert!(
        log.lines().any(|l| l.contains("stale workload marked")
            && l.contains("ctr-a")
            && l.contains(&ip_a)),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("stale workload reclaimed")
            && l.contains("ctr-a")
            && l.contains(&ip_a)),
        "{log}"
    );
    // The kubelet's DEL, late: success, nothing to do.
    let gone = lab.dir.path().join("no-such-netns");
    let (code, out, err) = lab.cni("DEL", "ctr-a", &gone, "pod-a");
    assert_eq!(code, 0, "late DEL: {out} {err}");

    // B: marked (netns gone), but its veth exists: kept well past the grace.
    assert!(
        eventually(LIMIT, || lab
            .annotation("pod-b", "manx.dev/stale-since")
            .is_some()),
        "{}",
        manx.log_text()
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(lab.has_link(&veth_b));
    let wb = lab
        .endpoint("pod-b")
        .expect("B is never reclaimed with a veth");
    assert!(
        !wb.metadata.annotations.contains_key("manx.dev/reclaim-at"),
        "{:?}",
        wb.metadata.annotations
    );
    assert_eq!(lab.ipam("ctr-b").1, vec![ip_b.clone()]);
    let (problems, _) = lab.ipam("ctr-b");
    assert!(
        problems
            .iter()
            .any(|l| l.contains("-k8s-pod--b-eth0") && l.contains("kept while its veth exists")),
        "{problems:?}"
    );
    // Its last process ends: the namespace and the veth go, then B does.
    drop(_holder);
    assert!(
        eventually(LIMIT, || lab.endpoint("pod-b").is_none()),
        "{}",
        manx.log_text()
    );
    assert!(lab.ipam("ctr-b").1.is_empty());

    // C, alive throughout: untouched, nothing left to report.
    let wc = lab.endpoint("pod-c").unwrap();
    assert!(
        !wc.metadata.annotations.contains_key("manx.dev/stale-since"),
        "{:?}",
        wc.metadata.annotations
    );
    let (problems, held) = lab.ipam("ctr-c");
    assert_eq!(held, vec![ip_c]);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(manx.alive(), "{}", manx.log_text());
    drop(c);
}
