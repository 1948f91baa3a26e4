//! manx-node serves CNI IPAM on its local socket (issue 17), and
//! `manx-ipam` falls back to allocating directly when the agent is hung
//! (SIGSTOP: bounded by `MANX_IPAM_AGENT_TIMEOUT_MS`) or stopped (socket
//! removed). Real manx-node in a test namespace (198.19.53.0/24, pool
//! 10.24.0.0/16) on an embedded store; `manx-ipam` run as the runtime runs
//! it, with its log at debug to see which path served each ADD.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::Datastore;
use datastore::embedded::EmbeddedStore;
use testkit::netns::veth;
use testkit::{Netns, Prereqs, eventually};

const NODE: &str = "mxis-node";
const LIMIT: Duration = Duration::from_secs(60);

/// `manx-ipam` `command` for `cid`; (success, stdout).
fn ipam(dir: &Path, command: &str, cid: &str, extra: &[(&str, &str)]) -> (bool, String) {
    let bin = crate::stale_reclaim::cni_bin_dir().join("manx-ipam");
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "manx",
        "datastore_type": "embedded", "manx_db": dir.join("manx.db").display().to_string(),
        "nodename": NODE, "log_level": "debug",
        "log_file_path": dir.join("ipam.log").display().to_string(),
        "ipam": {"type": "manx-ipam"}
    });
    let mut child = Command::new(bin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("MANX_IPAM_LOCK_DIR", dir.join("run"))
        .envs(extra.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn manx-ipam");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The plugin log's lines since `from` (a length read before).
fn log_since(dir: &Path, from: usize) -> String {
    let text = std::fs::read_to_string(dir.join("ipam.log")).unwrap_or_default();
    text.get(from..).unwrap_or_default().to_string()
}

fn log_len(dir: &Path) -> usize {
    std::fs::metadata(dir.join("ipam.log")).map_or(0, |m| m.len() as usize)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn node_agent_serves_ipam_and_the_plugin_falls_back_when_it_is_hung_or_stopped() {
    if !Prereqs::new().root().commands(&["ip", "kill"]).ok() {
        return;
    }
    let _ = crate::stale_reclaim::cni_bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let (node, peer) = (Netns::new("mxis"), Netns::new("mxis"));
    veth(&peer, "eth0", &node, "eth0");
    peer.ip(&["addr", "add", "198.19.53.1/24", "dev", "eth0"]);
    node.ip(&["addr", "add", "198.19.53.2/24", "dev", "eth0"]);
    node.ip(&["route", "add", "default", "via", "198.19.53.1"]);
    let mut manx = crate::support::start_manx_node(&node, dir.path(), NODE, "10.24.0.0/16", &[]);
    let socket = ipam::service::socket_path(&dir.path().join("run"), NODE);
    assert!(
        eventually(LIMIT, || socket.exists()),
        "no IPAM socket at {}: {}",
        socket.display(),
        manx.log_text()
    );

    // Served: the agent answers, the plugin never opens the store.
    let (ok, out) = ipam(dir.path(), "ADD", "ctr-1", &[]);
    assert!(ok, "ADD: {out}");
    assert!(out.contains("10.24."), "{out}");
    let log = log_since(dir.path(), 0);
    assert!(log.contains("served by the node agent"), "{log}");

    // Hung (SIGSTOP): the ADD falls back within its 500 ms budget.
    signal(manx.pid(), "-STOP");
    let from = log_len(dir.path());
    let t = Instant::now();
    let (ok, out) = ipam(
        dir.path(),
        "ADD",
        "ctr-2",
        &[("MANX_IPAM_AGENT_TIMEOUT_MS", "500")],
    );
    let took = t.elapsed();
    signal(manx.pid(), "-CONT");
    assert!(ok, "ADD with the agent stopped: {out}");
    let log = log_since(dir.path(), from);
    assert!(log.contains("did not answer; allocating directly"), "{log}");
    assert!(
        took < Duration::from_secs(10),
        "the fallback took {took:?} for a 500 ms budget"
    );

    // DEL through the agent again.
    let from = log_len(dir.path());
    let (ok, out) = ipam(dir.path(), "DEL", "ctr-1", &[]);
    assert!(ok, "DEL: {out}");
    assert!(log_since(dir.path(), from).contains("served by the node agent"));

    // Stopped: the socket is removed, the plugin allocates directly.
    manx.terminate(Duration::from_secs(10));
    assert!(!socket.exists(), "socket left by a stopped agent");
    let from = log_len(dir.path());
    let (ok, out) = ipam(dir.path(), "ADD", "ctr-3", &[]);
    assert!(ok, "ADD without the agent: {out}");
    assert!(!log_since(dir.path(), from).contains("served by the node agent"));

    // Both paths kept the store consistent: ctr-2 and ctr-3 hold one
    // address each, ctr-1 none, `ipam check` clean.
    let db = dir.path().join("manx.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::open(&db).await.unwrap());
        let topo = ipam::resources::DatastoreTopology::new(store.clone());
        let ipam = ipam::Ipam::new(store, Arc::new(topo));
        for (cid, n) in [("ctr-1", 0), ("ctr-2", 1), ("ctr-3", 1)] {
            let held = ipam
                .ips_by_handle(&format!("k8s-pod-network.{cid}"))
                .await
                .unwrap();
            assert_eq!(held.len(), n, "{cid}: {held:?}");
        }
        let problems = ipam.check(None).await.unwrap().problems();
        assert!(problems.is_empty(), "{problems:?}");
    });
}
