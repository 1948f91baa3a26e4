//! The node agent's IPAM socket: served ADD/DEL, refusals, the plugin's
//! fallback from an absent, closed or hung socket, the socket's
//! permissions. In-memory store; the per-process test with real
//! `manx-ipam` processes is in tests/it/per_process.rs.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use datastore::memory::MemoryStore;
use serde_json::json;

use super::*;
use crate::cni_plugin::{Connector, run};
use crate::topology::{Pool, StaticTopology};

const STORE: &str = "embedded /nonexistent/test.db";

struct Setup {
    dir: tempfile::TempDir,
    ipam: Arc<Ipam>,
    /// Times the plugin connected to the store itself (the direct path).
    direct: Arc<AtomicUsize>,
}

impl Setup {
    fn new() -> Setup {
        let topo = StaticTopology::new();
        topo.add_pool(Pool::new("v4", "10.31.0.0/24").unwrap());
        let ipam = Arc::new(Ipam::new(Arc::new(MemoryStore::new()), Arc::new(topo)));
        Setup {
            dir: tempfile::tempdir().unwrap(),
            ipam,
            direct: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A server for `n1` on the setup's allocator, serving in the background.
    fn serve(&self) -> Arc<Server> {
        let server = Server::new(self.ipam.clone(), "n1", STORE);
        let (listener, _) = server.bind(self.dir.path()).unwrap();
        tokio::spawn(server.clone().serve(listener));
        server
    }

    fn connector(&self) -> Connector {
        let (ipam, direct) = (self.ipam.clone(), self.direct.clone());
        Box::new(move |_, _| {
            direct.fetch_add(1, Ordering::SeqCst);
            let ipam = ipam.clone();
            Box::pin(async move { Ok(ipam) })
        })
    }

    fn vars(&self, cmd: &str, cid: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let dir = self.dir.path().display().to_string();
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", "/proc/self/ns/net"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            ("MANX_IPAM_LOCK_DIR", dir.as_str()),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The plugin's ADD for `cid` on node `n1`: the address.
    async fn add(&self, cid: &str, extra: &[(&str, &str)]) -> IpAddr {
        let out = run(&self.vars("ADD", cid, extra), &conf(), &self.connector())
            .await
            .unwrap()
            .unwrap();
        let addr = out["ips"][0]["address"].as_str().unwrap();
        addr.parse::<ipnetwork::IpNetwork>().unwrap().ip()
    }

    fn direct(&self) -> usize {
        self.direct.load(Ordering::SeqCst)
    }
}

fn conf() -> Vec<u8> {
    json!({
        "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "manx",
        "nodename": "n1", "datastore_type": "embedded", "manx_db": "/nonexistent/test.db",
        "ipam": {"type": "manx-ipam"}
    })
    .to_string()
    .into_bytes()
}

fn request(node: &str, cid: &str) -> Request {
    Request {
        op: Op::Add,
        node: node.into(),
        datastore: STORE.into(),
        network: "k8s-pod-network".into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
        namespace: None,
        pod: None,
        v4: true,
        v6: false,
        ipv4_pools: Vec::new(),
        ipv6_pools: Vec::new(),
        empty_block_grace_secs: None,
    }
}

#[tokio::test]
async fn served_add_and_del_do_not_touch_the_plugins_store_connection() {
    let s = Setup::new();
    let server = s.serve();
    let ip = s.add("c1", &[]).await;
    assert_eq!(s.direct(), 0, "the ADD went to the store directly");
    assert_eq!(
        s.ipam.ips_by_handle("k8s-pod-network.c1").await.unwrap(),
        vec![ip]
    );
    // A repeated ADD returns the held address, as directly.
    assert_eq!(s.add("c1", &[]).await, ip);
    let del = run(&s.vars("DEL", "c1", &[]), &conf(), &s.connector())
        .await
        .unwrap();
    assert!(del.is_none());
    assert_eq!(s.direct(), 0);
    assert!(
        s.ipam
            .ips_by_handle("k8s-pod-network.c1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(server.stats.served.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_request_for_another_node_is_refused_and_the_plugin_allocates_directly() {
    let s = Setup::new();
    let server = s.serve();
    let path = socket_path(s.dir.path(), "n1");
    let answer = call(&path, &request("n2", "c1"), DEFAULT_TIMEOUT)
        .await
        .unwrap();
    let Response::Refused { msg } = answer else {
        panic!("served a request for n2: {answer:?}");
    };
    assert!(msg.contains("\"n1\"") && msg.contains("\"n2\""), "{msg}");
    assert!(
        s.ipam
            .ips_by_handle("k8s-pod-network.c1")
            .await
            .unwrap()
            .is_empty(),
        "allocated for a refused request"
    );
    // Another datastore, a bad container id, another grace: refused too.
    let mut other_store = request("n1", "c1");
    other_store.datastore = "etcdv3 http://192.0.2.1:2379".into();
    let mut bad_id = request("n1", "-c1");
    bad_id.container_id = "../c1".into();
    let mut other_grace = request("n1", "c1");
    other_grace.empty_block_grace_secs = Some(1);
    for req in [other_store, bad_id, other_grace] {
        let answer = call(&path, &req, DEFAULT_TIMEOUT).await.unwrap();
        assert!(matches!(answer, Response::Refused { .. }), "{answer:?}");
    }
    assert_eq!(server.stats.refused.load(Ordering::SeqCst), 4);
    assert_eq!(server.stats.served.load(Ordering::SeqCst), 0);
    // The plugin with a grace other than the agent's: refused, so the
    // direct path applies it.
    s.add("c2", &[("MANX_IPAM_EMPTY_BLOCK_GRACE_SECS", "1")])
        .await;
    assert_eq!(s.direct(), 1);
}

#[tokio::test]
async fn oversized_or_unknown_requests_are_refused() {
    let s = Setup::new();
    let server = s.serve();
    let path = socket_path(s.dir.path(), "n1");
    // A length over the bound: refused without reading the body.
    let mut stream = UnixStream::connect(&path).await.unwrap();
    stream
        .write_all(&((MAX_REQUEST as u32 + 1).to_be_bytes()))
        .await
        .unwrap();
    let answer: Response = serde_json::from_slice(&read_frame(&mut stream).await.unwrap()).unwrap();
    assert!(
        matches!(&answer, Response::Refused { msg } if msg.contains("more than")),
        "{answer:?}"
    );
    // An unknown field.
    let mut v = serde_json::to_value(request("n1", "c1")).unwrap();
    v["surprise"] = json!(1);
    let mut stream = UnixStream::connect(&path).await.unwrap();
    write_frame(&mut stream, &v).await.unwrap();
    let answer: Response = serde_json::from_slice(&read_frame(&mut stream).await.unwrap()).unwrap();
    assert!(
        matches!(&answer, Response::Refused { msg } if msg.contains("surprise")),
        "{answer:?}"
    );
    assert_eq!(server.stats.served.load(Ordering::SeqCst), 0);
}

/// A socket nobody answers on (an agent stopped with SIGSTOP, wedged):
/// the ADD falls back within the timeout; a socket that closes at once
/// (agent dying) or has no listener (agent stopped, file left) falls back
/// at once.
#[tokio::test]
async fn hung_closed_or_stale_sockets_fall_back_within_the_timeout() {
    let s = Setup::new();
    let path = socket_path(s.dir.path(), "n1");
    // Hung: bound and listening, never accepting.
    let hung = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = Instant::now();
    s.add("c1", &[(TIMEOUT_VAR, "300")]).await;
    let took = t.elapsed();
    assert_eq!(s.direct(), 1);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "fallback took {took:?} for a 300 ms budget"
    );
    drop(hung);
    // Stale: the file is left, nobody listens.
    assert!(path.exists());
    s.add("c2", &[]).await;
    assert_eq!(s.direct(), 2);
    // Closed: accepted, then closed without an answer.
    std::fs::remove_file(&path).unwrap();
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    s.add("c3", &[]).await;
    assert_eq!(s.direct(), 3);
    // 0: never the agent.
    let _server = {
        std::fs::remove_file(&path).unwrap();
        s.serve()
    };
    s.add("c4", &[(TIMEOUT_VAR, "0")]).await;
    assert_eq!(s.direct(), 4);
    s.add("c5", &[]).await;
    assert_eq!(s.direct(), 4, "served once the agent is back");
}

#[tokio::test]
async fn a_bad_timeout_is_refused_by_name() {
    let s = Setup::new();
    let e = run(
        &s.vars("ADD", "c1", &[(TIMEOUT_VAR, "2s")]),
        &conf(),
        &s.connector(),
    )
    .await
    .unwrap_err();
    assert!(
        e.msg.contains(TIMEOUT_VAR) && e.msg.contains("\"2s\""),
        "{e:?}"
    );
    assert_eq!(s.direct(), 0);
}

#[tokio::test]
async fn the_socket_is_0600_in_a_folder_nobody_else_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    let server = Server::new(s.ipam.clone(), "n1", STORE);
    // A missing folder is made 0700.
    let dir = s.dir.path().join("run");
    let (_l, path) = server.bind(&dir).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&path), 0o600);
    // Rebinding replaces the socket (an agent restarted).
    let (_l2, _) = server.bind(&dir).unwrap();
    // A folder others can write is refused, naming the fix.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = server.bind(&dir).unwrap_err();
    assert!(
        e.contains("writable by nobody else") && e.contains("chmod go-w"),
        "{e}"
    );
    // A file that is not a socket is left alone.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"x").unwrap();
    let e = server.bind(&dir).unwrap_err();
    assert!(e.contains("not a socket"), "{e}");
}
