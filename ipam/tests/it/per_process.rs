//! Per-process torture (issue 17): the allocators are separate `manx-ipam`
//! processes, as the kubelet runs them, not tasks in one process, so the
//! in-process claim serialisation and group commit do not help; only the
//! host-wide claim lock (`MANX_IPAM_LOCK_DIR`, one per node here, as each
//! node is one host) keeps concurrent ADDs from each claiming a block.
//!
//! 4 nodes x 40 concurrent ADD processes (160 at once) into 10.77.0.0/22
//! (16 /26 blocks) on one embedded store file: 160 distinct addresses, each
//! node with at most 2 blocks (1 when no claim race happened), and
//! `check` clean with the 160 handles as the live set.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use datastore::Datastore;
use datastore::client::Client;
use datastore::model::IPPool;
use ipam::Ipam;
use ipam::affinity::release_empty_blocks;
use ipnetwork::IpNetwork;

use crate::support::torture::{self, TortureOutcome};

const NET: &str = "pernet";
const POOL: &str = "10.77.0.0/22";
const NODES: usize = 4;
const PER_NODE: usize = 40;

/// One host's view: its node name and its claim lock folder.
pub(crate) struct Host {
    pub node: String,
    pub lock_dir: PathBuf,
}

/// A store file with the pool, and one lock folder per node.
pub(crate) struct Lab {
    /// Holds the store file and the lock folders.
    _dir: tempfile::TempDir,
    pub db: PathBuf,
    pub store: Arc<dyn Datastore>,
    pub hosts: Vec<Host>,
}

impl Lab {
    pub(crate) async fn new(nodes: usize) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("manx.db");
        let store: Arc<dyn Datastore> =
            Arc::new(datastore::embedded::EmbeddedStore::open(&db).await.unwrap());
        let mut pool = IPPool::new("per-process", POOL.parse().unwrap());
        pool.spec.block_size = Some(26);
        Client::new(store.clone()).create(&pool).await.unwrap();
        let hosts = (1..=nodes)
            .map(|n| Host {
                node: format!("n{n}"),
                lock_dir: dir.path().join(format!("lock-n{n}")),
            })
            .collect();
        Lab {
            _dir: dir,
            db,
            store,
            hosts,
        }
    }

    /// An allocator over the same store (for check and the counts).
    pub(crate) fn ipam(&self) -> Ipam {
        let topo = ipam::resources::DatastoreTopology::new(self.store.clone());
        Ipam::new(self.store.clone(), Arc::new(topo))
    }
}

/// The `manx-ipam` plugin's stdin for `node` on the store file `db`.
fn conf(db: &Path, node: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": NET, "type": "manx",
        "datastore_type": "embedded", "manx_db": db.display().to_string(),
        "nodename": node, "ipam": {"type": "manx-ipam"}
    })
    .to_string()
}

/// The handle manx-ipam gives container `cid`.
pub(crate) fn handle(cid: &str) -> String {
    format!("{NET}.{cid}")
}

/// Starts `manx-ipam` with `command` for container `cid` on `host`; its
/// stdin is written later (the plugin waits for it, so writing every
/// child's stdin after all are spawned starts them together).
fn spawn(command: &str, host: &Host, cid: &str, extra_env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manx-ipam"));
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        // manx-ipam checks CNI_NETNS as the manx plugin does (an absolute
        // path that exists); it configures nothing in it.
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("MANX_IPAM_LOCK_DIR", &host.lock_dir);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn manx-ipam")
}

/// Runs `command` for every (host index, container id) at once: all
/// processes are spawned, then all are given their stdin, then awaited.
/// Returns each container's stdout; panics naming the first that failed.
pub(crate) fn run_at_once(
    lab: &Lab,
    command: &str,
    calls: &[(usize, String)],
    extra_env: &[(&str, &str)],
) -> Vec<(String, Vec<u8>)> {
    let mut children: Vec<(String, usize, Child)> = calls
        .iter()
        .map(|(h, cid)| {
            let child = spawn(command, &lab.hosts[*h], cid, extra_env);
            (cid.clone(), *h, child)
        })
        .collect();
    for (_, h, child) in &mut children {
        let conf = conf(&lab.db, &lab.hosts[*h].node);
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(conf.as_bytes()).unwrap();
        // Dropped: EOF.
    }
    children
        .into_iter()
        .map(|(cid, _, child)| {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{command} {cid} failed: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (cid, out.stdout)
        })
        .collect()
}

/// ADDs for `per_node` containers on each of `hosts` (indices into
/// `lab.hosts`) at once; handle -> address.
pub(crate) fn add_at_once(
    lab: &Lab,
    hosts: &[usize],
    per_node: usize,
    tag: &str,
    extra_env: &[(&str, &str)],
) -> HashMap<String, IpAddr> {
    let calls: Vec<(usize, String)> = hosts
        .iter()
        .flat_map(|&h| (0..per_node).map(move |i| (h, format!("{tag}-n{}-{i}", h + 1))))
        .collect();
    let mut got = HashMap::new();
    for (cid, stdout) in run_at_once(lab, "ADD", &calls, extra_env) {
        let v: serde_json::Value = serde_json::from_slice(&stdout)
            .unwrap_or_else(|e| panic!("ADD {cid}: bad output ({e}): {stdout:?}"));
        let addr = v["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("ADD {cid}: no address in {v}"));
        let ip = addr.parse::<IpNetwork>().unwrap().ip();
        assert!(got.insert(handle(&cid), ip).is_none());
    }
    got
}

/// node -> (block -> addresses allocated in it), for the log and the asserts.
pub(crate) async fn blocks_by_node(ipam: &Ipam) -> BTreeMap<String, BTreeMap<IpNetwork, usize>> {
    let mut m: BTreeMap<String, BTreeMap<IpNetwork, usize>> = BTreeMap::new();
    for b in ipam.rw().list_blocks().await.unwrap() {
        let node = b.value.affine_node().unwrap_or("-").to_string();
        m.entry(node)
            .or_default()
            .insert(b.value.cidr(), b.value.allocated().count());
    }
    m
}

/// The container id of a handle this module made.
fn container(handle: &str) -> &str {
    handle.strip_prefix(&format!("{NET}.")).expect("our handle")
}

/// `n1: 10.77.1.0/26=40 | n2: ...` for the log.
pub(crate) fn show(blocks: &BTreeMap<String, BTreeMap<IpNetwork, usize>>) -> String {
    blocks
        .iter()
        .map(|(node, bs)| {
            let list: Vec<String> = bs.iter().map(|(c, n)| format!("{c}={n}")).collect();
            format!("{node} ({}): {}", bs.len(), list.join(" "))
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Every address once, every handle with its address, check clean.
pub(crate) async fn verify(ipam: &Ipam, held: &HashMap<String, IpAddr>) {
    let mut distinct: Vec<IpAddr> = held.values().copied().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        held.len(),
        "an address was handed out twice"
    );
    let out = TortureOutcome {
        held: held.clone(),
        ..TortureOutcome::default()
    };
    torture::verify(ipam, &out).await;
}

/// The node agent's IPAM socket serving each node (issue 17): one
/// [`ipam::service::Server`] per node, as manx-node runs it, in this
/// process, with the node's claim lock folder; the 160 `manx-ipam`
/// processes find the sockets there and never connect to the store.
async fn serve_agents(lab: &Lab) -> Vec<Arc<ipam::service::Server>> {
    let store = datastore::config::DatastoreConfig::Embedded {
        path: lab.db.clone(),
    }
    .describe();
    lab.hosts
        .iter()
        .map(|host| {
            let topo = ipam::resources::DatastoreTopology::new(lab.store.clone());
            let opts = ipam::IpamOptions {
                claim_lock_dir: Some(host.lock_dir.clone()),
                ..Default::default()
            };
            let ipam = Arc::new(Ipam::new(lab.store.clone(), Arc::new(topo)).with_options(opts));
            let server = ipam::service::Server::new(ipam, &host.node, &store);
            let (listener, _) = server.bind(&host.lock_dir).unwrap();
            tokio::spawn(server.clone().serve(listener));
            server
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_per_process_adds_served_by_the_node_agents_socket() {
    use std::sync::atomic::Ordering;
    let lab = Lab::new(NODES).await;
    let agents = serve_agents(&lab).await;
    // The served path is under test: a budget no loaded test machine
    // reaches (the fallback on a slow agent is tested in ipam::service).
    let budget = [(ipam::service::TIMEOUT_VAR, "60000")];
    let t = std::time::Instant::now();
    let held =
        tokio::task::block_in_place(|| add_at_once(&lab, &[0, 1, 2, 3], PER_NODE, "c", &budget));
    let ipam = lab.ipam();
    let blocks = blocks_by_node(&ipam).await;
    eprintln!(
        "{} ADD processes ({NODES} nodes x {PER_NODE} at once, served by the agents' sockets) in {:.1?}; addresses per block: {}",
        held.len(),
        t.elapsed(),
        show(&blocks)
    );
    for (host, agent) in lab.hosts.iter().zip(&agents) {
        assert_eq!(
            agent.stats.served.load(Ordering::SeqCst),
            PER_NODE as u64,
            "{}'s agent served every ADD of its node (none fell back)",
            host.node
        );
        assert_eq!(agent.stats.refused.load(Ordering::SeqCst), 0);
    }
    assert_eq!(held.len(), NODES * PER_NODE);
    verify(&ipam, &held).await;
    for host in &lab.hosts {
        // One allocator per node claims for it: exactly one block.
        let n = blocks.get(&host.node).map_or(0, BTreeMap::len);
        assert_eq!(n, 1, "node {}: {}", host.node, show(&blocks));
    }
    assert!(!blocks.contains_key("-"), "a block without affinity");

    // DEL through the sockets too: every address back, check clean.
    let calls: Vec<(usize, String)> = held
        .keys()
        .map(|h| {
            let cid = container(h).to_string();
            let node: usize = cid
                .split("-n")
                .nth(1)
                .unwrap()
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (node - 1, cid)
        })
        .collect();
    tokio::task::block_in_place(|| run_at_once(&lab, "DEL", &calls, &budget));
    for agent in &agents {
        assert_eq!(
            agent.stats.served.load(Ordering::SeqCst),
            2 * PER_NODE as u64
        );
    }
    let after = blocks_by_node(&ipam).await;
    assert!(
        after.values().flat_map(BTreeMap::values).all(|n| *n == 0),
        "addresses left after DEL: {}",
        show(&after)
    );
    verify(&ipam, &HashMap::new()).await;
}

/// The fallback: no agent (no socket in the lock folders), every process
/// allocates directly under the host claim lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_per_process_concurrent_adds_claim_one_block_per_node() {
    let lab = Lab::new(NODES).await;
    let t = std::time::Instant::now();
    let held = tokio::task::block_in_place(|| add_at_once(&lab, &[0, 1, 2, 3], PER_NODE, "c", &[]));
    let ipam = lab.ipam();
    let blocks = blocks_by_node(&ipam).await;
    eprintln!(
        "{} ADD processes ({NODES} nodes x {PER_NODE} at once) in {:.1?}; addresses per block: {}",
        held.len(),
        t.elapsed(),
        show(&blocks)
    );
    assert_eq!(held.len(), NODES * PER_NODE);
    verify(&ipam, &held).await;
    for host in &lab.hosts {
        let n = blocks.get(&host.node).map_or(0, BTreeMap::len);
        // 40 pods fit one /26: 1 block, 2 at most while a claim race
        // resolves (issue 17 measured up to 7 without the host lock).
        assert!(
            (1..=2).contains(&n),
            "node {} holds {n} blocks for {PER_NODE} pods: {}",
            host.node,
            show(&blocks)
        );
    }
    assert!(!blocks.contains_key("-"), "a block without affinity");
}

/// Empty blocks go back to the pool after the grace period (issue 17,
/// Calico's behaviour), by a DEL on the node and by the node agent's sweep
/// ([`ipam::affinity::release_empty_blocks`]); within the grace they stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_per_process_empty_blocks_released_after_grace() {
    let lab = Lab::new(NODES).await;
    let ipam = lab.ipam();
    let mut held =
        tokio::task::block_in_place(|| add_at_once(&lab, &[0, 1, 2, 3], PER_NODE, "c", &[]));
    // Each node's first block: the one holding most of the first wave.
    let first: HashMap<String, IpNetwork> = blocks_by_node(&ipam)
        .await
        .into_iter()
        .map(|(node, bs)| {
            let top = bs.iter().max_by_key(|(_, n)| **n).map(|(c, _)| *c).unwrap();
            (node, top)
        })
        .collect();
    // 30 more pods on n1 and n2 at once: 70 > 64, a second block each.
    held.extend(tokio::task::block_in_place(|| {
        add_at_once(&lab, &[0, 1], 30, "more", &[])
    }));
    let before = blocks_by_node(&ipam).await;
    eprintln!("after 40 + 30 pods on n1, n2: {}", show(&before));
    for node in ["n1", "n2"] {
        assert!(before[node].len() >= 2, "{node}: {}", show(&before));
    }
    verify(&ipam, &held).await;

    // DEL every n1 and n2 pod outside the node's first block, at once.
    let gone: Vec<(usize, String)> = held
        .iter()
        .filter_map(|(h, ip)| {
            let host =
                (0..2).find(|&i| before[&lab.hosts[i].node].keys().any(|c| c.contains(*ip)))?;
            (!first[&lab.hosts[host].node].contains(*ip)).then(|| (host, container(h).to_string()))
        })
        .collect();
    assert!(!gone.is_empty());
    tokio::task::block_in_place(|| run_at_once(&lab, "DEL", &gone, &[]));
    for (_, cid) in &gone {
        held.remove(&handle(cid));
    }
    // Those DELs ran with the default grace (300 s): the emptied blocks stay.
    let emptied = blocks_by_node(&ipam).await;
    for node in ["n1", "n2"] {
        let empty: Vec<_> = emptied[node].iter().filter(|(_, n)| **n == 0).collect();
        assert!(!empty.is_empty(), "{node}: {}", show(&emptied));
        assert_eq!(
            emptied[node].len(),
            before[node].len(),
            "{node}: {}",
            show(&emptied)
        );
    }
    verify(&ipam, &held).await;

    // n1: the next DEL on the node (of an unknown container: DEL is
    // idempotent) with a grace of 0 s releases its empty blocks.
    tokio::task::block_in_place(|| {
        run_at_once(
            &lab,
            "DEL",
            &[(0, "never-added".to_string())],
            &[("MANX_IPAM_EMPTY_BLOCK_GRACE_SECS", "0")],
        )
    });
    // n2: the node agent's sweep keeps them within the grace, releases
    // them after it.
    let grace = std::time::Duration::from_secs(300);
    let now = std::time::SystemTime::now();
    let kept = release_empty_blocks(lab.store.clone(), "n2", grace, now)
        .await
        .unwrap();
    assert!(kept.is_empty(), "released within the grace: {kept:?}");
    let released = release_empty_blocks(lab.store.clone(), "n2", grace, now + grace)
        .await
        .unwrap();
    let after = blocks_by_node(&ipam).await;
    eprintln!(
        "released by the sweep on n2: {released:?}; after: {}",
        show(&after)
    );
    for node in ["n1", "n2"] {
        assert_eq!(
            after[node].keys().collect::<Vec<_>>(),
            vec![&first[node]],
            "{node} keeps exactly its first block: {}",
            show(&after)
        );
        assert!(
            ipam.rw().list_affinities(Some(node)).await.unwrap().len() == 1,
            "{node}: one affinity left"
        );
    }
    for node in ["n3", "n4"] {
        assert_eq!(after[node], before[node], "{node} untouched");
    }
    verify(&ipam, &held).await;
}

#[tokio::test]
async fn bad_empty_block_grace_is_refused_by_name() {
    let lab = Lab::new(1).await;
    let mut child = spawn(
        "DEL",
        &lab.hosts[0],
        "c1",
        &[("MANX_IPAM_EMPTY_BLOCK_GRACE_SECS", "5m")],
    );
    let conf = conf(&lab.db, &lab.hosts[0].node);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let msg = v["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("MANX_IPAM_EMPTY_BLOCK_GRACE_SECS") && msg.contains("\"5m\""),
        "{v}"
    );
}
