//! ADD and DEL latency of the manx plugin with manx-ipam, on the embedded
//! store (a SQLite file) and on a real etcd, beside Debian's reference
//! plugins `bridge` + `host-local` doing the same number of pods in the same
//! run, in network namespaces.
//!
//! For each store: 200 pods one after another, then 200 pods 20 at a time.
//! The two plugins take turns wave by wave (manx wave, bridge wave, bridge
//! wave, manx wave…) so that background load hits both alike. Prints p50/p99
//! of ADD and DEL and the ratio of the p99s (target: manx ADD p99 within
//! 1.0x of bridge+host-local, issue 17; 1.5x before), then where manx's
//! time goes (mean per step, from the plugin's `MANX_CNI_TIMING` records;
//! `exec` is from the spawn of `ip netns exec` to the plugin's first
//! instruction, `exit` the rest), then the IPAM blocks each node holds once
//! every pod is added, beside the fewest that can hold them (issue 17: no
//! over-claiming by concurrent ADD processes). manx-ipam's host claim lock
//! is in the bench's temporary directory (`MANX_IPAM_LOCK_DIR`).
//!
//! etcd (`/usr/bin/etcd`, skipped with a note if missing) runs inside the
//! node namespace, on its loopback, with its data in a temporary directory.
//! As on a real node, a node agent runs beside the plugins: a stand-in for
//! manx-node holds each store open and watches every Manx key (on a thread
//! that joined the node namespace; it also creates the pool). This matters
//! for the embedded store: a process that closes the last connection to the
//! SQLite file checkpoints its WAL (10 ms per ADD measured with the
//! earlier two-write IPAM, ~1 ms now; `MANX_BENCH_NO_AGENT=1` shows it).
//!
//! `cargo bench -p manx-cni --bench add_del` (root; skips otherwise). The
//! plugins are the bench profile's (optimised, release-like) binaries:
//! `manx` from this package and `manx-ipam` built with `--release`.
//! `MANX_BENCH_PODS` changes the pod count (default 200);
//! `MANX_BENCH_NO_AGENT=1` leaves out the node-agent stand-in;
//! `MANX_BENCH_NO_SOCKET=1` keeps it but without the IPAM socket, so
//! manx-ipam allocates directly (the fallback path). The stand-in serves
//! node1's CNI IPAM socket with manx-node's code (`ipam::service`) and
//! prints how many requests it served at the end.
//!
//! Measured 2026-11-22 05:57 UTC on the shared 2-core build machine (load
//! average 4-8 from other builds), 200 pods, p99 manx vs bridge+host-local:
//!
//! | store    | width | ADD p99           | ratio | DEL p99           | ratio |
//! |----------|-------|-------------------|-------|-------------------|-------|
//! | embedded | 1     | 31.4 vs 36.1 ms   | 0.87x | 44.3 vs 46.9 ms   | 0.94x |
//! | embedded | 20    | 275.8 vs 331.7 ms | 0.83x | 294.4 vs 221.6 ms | 1.33x |
//! | etcd     | 1     | 40.0 vs 32.5 ms   | 1.23x | 42.1 vs 46.0 ms   | 0.92x |
//! | etcd     | 20    | 352.9 vs 312.2 ms | 1.13x | 305.1 vs 293.4 ms | 1.04x |
//!
//! ADD p50 ratios 0.84x-1.03x. An earlier run the same morning: 0.87x,
//! 1.04x, 0.57x, 1.21x (p99 is the 2nd-worst of 200: noisy). Sequential
//! ADD on the embedded store, mean ms: exec 8.6 | open 0.6 | IPAM 8.8
//! (alongside: store connect 2.4, veth pair 2.4) | addresses+routes 0.9 |
//! endpoint write 1.2 | teardown 0.4 | exit 2.0. Before this round (manx-ipam writing handle and block apart,
//! ADD steps one after another, under heavier load): sequential ADD p99 245
//! vs 87 ms (2.81x), 20-wide 1604 vs 497 ms (3.23x). The 20-wide runs are
//! bound by the kernel's RTNL lock (both plugins create and delete veths)
//! and, on the embedded store, by SQLite's write lock between processes.

//!
//! Issue 17 (host claim lock, empty-block sweep on DEL), 2026-12-04 04:17
//! UTC, same machine, load average 7-9, ADD p99 ratio manx/bridge+host-local
//! (sequential embedded, 20-wide embedded, sequential etcd, 20-wide etcd):
//! 1.05x, 0.81x, 0.90x, 0.61x (55.4 vs 52.8, 814 vs 1011, 39.0 vs 43.3,
//! 235 vs 382 ms). Three earlier runs that day: 0.80/0.76/0.71/0.88,
//! 0.87/0.89/0.64/1.59, 1.26/1.20/0.40/1.01: within 1.0x in 11 of 16, the
//! others noise of a loaded box (p99 is the 2nd-worst of 200). Blocks
//! with all 200 pods added: 4 on node1 (64, 64, 64, 8), the fewest that
//! hold 200, in every run and store; the 20-wide runs reuse the blocks
//! the sequential run claimed (emptied by its DELs, kept through the
//! grace), so this count shows no over-claiming but does not stress the
//! claim race: ipam's per_process test does (4 nodes x 40 processes).
//! manx-ipam's part of a sequential DEL, mean: 8.6 ms without the empty-
//! block sweep, 20.6 with it on every DEL, 11.0 with it once a minute.
//!
//! 2026-12-04 05:10 UTC, the machine otherwise idle (nothing else
//! building), release plugins, ADD p99 manx vs bridge+host-local:
//! sequential embedded 19.2 vs 21.5 ms (0.89x), 20-wide embedded 212.5 vs
//! 242.8 ms (0.88x), sequential etcd 26.3 vs 24.5 ms (1.08x), 20-wide etcd
//! 251.4 vs 235.0 ms (1.07x): the 1.0x target holds on the embedded store
//! and is missed by 7-8% on etcd, where manx-ipam's part is 8.8 ms mean
//! sequential (store connect 2.5 ms of it) against 6.0 on the embedded
//! store. Blocks: 4 on node1 in every run, the fewest.
//!
//! With the node agent's IPAM socket (ipam::service; the stand-in
//! served all 810 ADD/DEL of each store, none refused or fallen back),
//! 2026-12-04 19:24-19:45 UTC, the machine loaded by other helpers' builds
//! (load average 8-24), ADD p99 ratio manx/bridge+host-local (sequential
//! embedded, 20-wide embedded, sequential etcd, 20-wide etcd):
//! run 1 (load 12-24): 1.35x, 0.82x, 1.04x, 0.79x (361.8 vs 268.0,
//! 823.3 vs 1004.7, 101.2 vs 97.7, 797.2 vs 1007.4 ms); run 2 (load
//! 8-18): 0.63x, 1.01x, 1.75x, 0.71x (99.2 vs 156.6, 620.8 vs 612.6,
//! 179.9 vs 102.9, 712.0 vs 1001.0 ms). Back to back without the socket
//! (MANX_BENCH_NO_SOCKET=1, load 18): 2.15x, 1.05x, 1.22x, 1.13x. p99 (the
//! 2nd-worst of 200) is noise at this load; the means are steadier:
//! manx-ipam's part of a sequential ADD (exec of manx-ipam included) 10.0
//! ms served on both stores (run 2) against 21.2 ms embedded and 13.8 ms
//! etcd directly (run 3), ADD p50 ratio 0.80-0.81x served sequential vs
//! 0.91-0.96x direct. IPAM is still the longer of the two parallel
//! branches sequentially (the other: the plugin's own store connect 6-8
//! ms beside the veth pair 6 ms). Blocks: 4 on node1 in every run.
//!
//! On a quiet machine (2026-12-04 21:06-21:17 UTC, nothing else running,
//! load average 0.6-2 before each run; the bench's own 20-wide waves raise
//! it to ~8), release plugins, the stand-in serving the IPAM socket, three
//! runs back to back, ADD p99 manx vs bridge+host-local:
//!
//! | run | seq embedded        | 20-wide embedded      | seq etcd            | 20-wide etcd          |
//! |-----|---------------------|-----------------------|---------------------|-----------------------|
//! | 1   | 24.4 vs 30.3 (0.80x) | 209.3 vs 301.2 (0.69x) | 27.6 vs 28.1 (0.98x) | 244.1 vs 245.6 (0.99x) |
//! | 2   | 21.6 vs 30.4 (0.71x) | 197.8 vs 371.7 (0.53x) | 29.9 vs 33.3 (0.90x) | 206.0 vs 285.8 (0.72x) |
//! | 3   | 24.3 vs 30.0 (0.81x) | 180.8 vs 252.1 (0.72x) | 21.0 vs 25.1 (0.83x) | 146.0 vs 233.9 (0.62x) |
//!
//! ADD p50 0.74-0.93x; DEL p99 0.79-1.13x (DEL has no target). Issue 17's
//! ADD p99 <= 1.0x holds in all 12, closest on sequential etcd (0.83-0.98x)
//! where the plugin's own store connect (3.0 ms mean of a 7.7 ms
//! ipam||veth branch) is the step left to remove. Blocks: 4 on node1
//! (64, 64, 64, 8), the fewest, in every run and store; 810 requests of
//! each store served by the socket, none refused.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use datastore::Datastore;
use datastore::client::Client;
use datastore::config::DatastoreConfig;
use datastore::model::IPPool;
use futures::StreamExt;
use testkit::Daemon;

const PARALLEL: usize = 20;
const POOL: &str = "10.20.0.0/17";
const BRIDGE_SUBNET: &str = "10.20.128.0/17";

/// Latencies of one plugin, and for manx the plugin's own timing records.
#[derive(Debug, Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
    /// (phase, container id) -> (spawned, exited) wall clock in ns.
    spawns: HashMap<(String, String), (u128, u128)>,
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One plugin under test: binary, stdin, and how its calls are named.
struct Plugin<'a> {
    bin: &'a Path,
    conf: &'a str,
    tag: String,
    pods: &'a [Netns],
    /// `MANX_CNI_TIMING` file, for manx.
    timing: Option<PathBuf>,
    /// `MANX_IPAM_LOCK_DIR` (the host claim lock), for manx: the bench's
    /// temporary directory, not the host's /var/run/manx.
    lock_dir: Option<PathBuf>,
}

impl Plugin<'_> {
    fn call(&self, i: usize, phase: &str, path: &str) -> Call {
        let id = format!("{}-{i}", self.tag);
        let mut c = Call::new(phase, &id, &self.pods[i], &id);
        c.path = path.to_string();
        if let Some(t) = &self.timing {
            c.extra
                .push(("MANX_CNI_TIMING".into(), t.display().to_string()));
        }
        if let Some(d) = &self.lock_dir {
            c.extra
                .push(("MANX_IPAM_LOCK_DIR".into(), d.display().to_string()));
        }
        c
    }

    /// Runs `phase` for pods `range` at once; records each call's time.
    fn wave(
        &self,
        node: &Netns,
        phase: &str,
        range: std::ops::Range<usize>,
        path: &str,
        out: &mut Samples,
    ) {
        let calls: Vec<Call> = range.map(|i| self.call(i, phase, path)).collect();
        let results: Vec<(String, Duration, u128, u128)> = std::thread::scope(|s| {
            let hs: Vec<_> = calls
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let spawned = unix_ns();
                        let t = Instant::now();
                        let res = run(node, self.bin, c, self.conf);
                        let d = t.elapsed();
                        let exited = unix_ns();
                        assert_eq!(res.code, 0, "{phase} {} failed: {res:?}", c.container_id);
                        (c.container_id.clone(), d, spawned, exited)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (id, d, spawned, exited) in results {
            if phase == "ADD" {
                out.add.push(d);
            } else {
                out.del.push(d);
            }
            out.spawns
                .insert((phase.to_string(), id), (spawned, exited));
        }
    }
}

/// ADD for every pod in waves of `width`, then DEL, the two plugins taking
/// turns wave by wave (and swapping who goes first each wave); `after_add`
/// runs between the two phases (every pod added).
fn run_pair(
    node: &Netns,
    manx: &Plugin<'_>,
    base: &Plugin<'_>,
    path: &str,
    pods: usize,
    width: usize,
    after_add: &dyn Fn(),
) -> (Samples, Samples) {
    let (mut m, mut b) = (Samples::default(), Samples::default());
    for phase in ["ADD", "DEL"] {
        if phase == "DEL" {
            after_add();
        }
        for (n, start) in (0..pods).step_by(width).enumerate() {
            let range = start..(start + width).min(pods);
            if n % 2 == 0 {
                manx.wave(node, phase, range.clone(), path, &mut m);
                base.wave(node, phase, range, path, &mut b);
            } else {
                base.wave(node, phase, range.clone(), path, &mut b);
                manx.wave(node, phase, range, path, &mut m);
            }
        }
    }
    (m, b)
}

fn report(label: &str, store: &str, manx: &Samples, base: &Samples, timing: &Path) {
    println!("\n== {label}, {store} ==");
    let name = format!("manx+manx-ipam({store})");
    for (name, s) in [(name.as_str(), manx), ("bridge+host-local", base)] {
        println!(
            "{name:<28} ADD p50 {:>7.2} ms  p99 {:>7.2} ms | DEL p50 {:>7.2} ms  p99 {:>7.2} ms",
            ms(pct(&s.add, 0.5)),
            ms(pct(&s.add, 0.99)),
            ms(pct(&s.del, 0.5)),
            ms(pct(&s.del, 0.99))
        );
    }
    let add_ratio = ms(pct(&manx.add, 0.99)) / ms(pct(&base.add, 0.99));
    let del_ratio = ms(pct(&manx.del, 0.99)) / ms(pct(&base.del, 0.99));
    let add50 = ms(pct(&manx.add, 0.5)) / ms(pct(&base.add, 0.5));
    println!(
        "ratio manx/bridge+host-local: ADD p99 {add_ratio:.2}x (target <= 1.0x, issue 17), \
         ADD p50 {add50:.2}x, DEL p99 {del_ratio:.2}x"
    );
    breakdown(manx, timing);
}

/// Mean time per step of manx's ADD and DEL, from its timing records.
fn breakdown(manx: &Samples, timing: &Path) {
    let Ok(text) = std::fs::read_to_string(timing) else {
        println!("(no timing records in {})", timing.display());
        return;
    };
    for phase in ["ADD", "DEL"] {
        // Step order as first seen; sums in microseconds.
        let mut order: Vec<String> = vec!["exec".into()];
        let mut sums: HashMap<String, f64> = HashMap::new();
        let mut n = 0.0;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["cmd"] != phase {
                continue;
            }
            let id = v["container"].as_str().unwrap_or_default().to_string();
            let Some((spawned, exited)) = manx.spawns.get(&(phase.to_string(), id)) else {
                continue;
            };
            let start = v["start_unix_ns"].as_u64().unwrap_or(0) as u128;
            let total_us = v["total_us"].as_f64().unwrap_or(0.0);
            n += 1.0;
            *sums.entry("exec".into()).or_default() +=
                start.saturating_sub(*spawned) as f64 / 1000.0;
            for s in v["steps"].as_array().into_iter().flatten() {
                let name = s[0].as_str().unwrap_or("?").to_string();
                if !order.contains(&name) {
                    order.push(name.clone());
                }
                *sums.entry(name).or_default() += s[1].as_f64().unwrap_or(0.0);
            }
            let end = start + (total_us * 1000.0) as u128;
            *sums.entry("exit".into()).or_default() += exited.saturating_sub(end) as f64 / 1000.0;
        }
        if n == 0.0 {
            continue;
        }
        order.push("exit".into());
        let parts: Vec<String> = order
            .iter()
            .map(|s| format!("{s} {:.1}", sums[s] / n / 1000.0))
            .collect();
        println!("  manx {phase} mean ms: {}", parts.join(" | "));
    }
}

/// etcd running inside the node namespace; killed on drop.
struct Etcd {
    _daemon: Daemon,
    endpoint: String,
}

impl Etcd {
    fn start(node: &Netns, dir: &Path) -> Option<Etcd> {
        if !Path::new("/usr/bin/etcd").exists() {
            println!("\netcd variant skipped: /usr/bin/etcd is not installed (etcd-server)");
            return None;
        }
        let endpoint = "http://127.0.0.1:2379".to_string();
        let data_dir = dir.join("etcd").display().to_string();
        let daemon = Daemon::spawn(
            node,
            dir,
            "etcd",
            "/usr/bin/etcd",
            &[
                "--name",
                "mxcn-bench",
                "--data-dir",
                &data_dir,
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "mxcn-bench=http://127.0.0.1:2380",
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ],
            &[],
        );
        Some(Etcd {
            _daemon: daemon,
            endpoint,
        })
    }
}

/// A stand-in for manx-node, which on a real node always runs beside the
/// plugins: it holds the datastore open and watches every Manx key. It also
/// creates the bench pool. Runs on a thread inside `node` (etcd listens on
/// the node's loopback); stopped on drop.
struct Agent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    /// `hold: false` only creates the pool (`MANX_BENCH_NO_AGENT=1`: what
    /// the plugins cost with nothing else holding the store open). With
    /// `serve`, the stand-in also serves node1's CNI IPAM socket in
    /// `lock_dir` with the same code manx-node runs
    /// (`ipam::service::Server`), as manx-node does.
    fn start(
        node: &Netns,
        vars: Vec<(String, String)>,
        hold: bool,
        serve: Option<PathBuf>,
    ) -> Agent {
        let path = node.path();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            testkit::netns::run_in_path(path, move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let cfg = DatastoreConfig::from_vars(vars).unwrap();
                    let store = connect_with_retry(&cfg).await;
                    Client::new(store.clone())
                        .apply(&IPPool::new("bench", POOL.parse().unwrap()))
                        .await
                        .unwrap_or_else(|e| panic!("creating the bench pool: {e}"));
                    if !hold {
                        drop(store);
                        ready_tx.send(()).unwrap();
                        return;
                    }
                    let _served = serve.map(|dir| {
                        let opts = ipam::IpamOptions {
                            claim_lock_dir: Some(dir.clone()),
                            ..Default::default()
                        };
                        let topo = ipam::resources::DatastoreTopology::new(store.clone());
                        let ipam = Arc::new(
                            ipam::Ipam::new(store.clone(), Arc::new(topo)).with_options(opts),
                        );
                        let server = ipam::service::Server::new(ipam, "node1", &cfg.describe());
                        let (listener, _) = server.bind(&dir).unwrap();
                        let task = tokio::spawn(server.clone().serve(listener));
                        (server, task)
                    });
                    let from = store.revision().await.unwrap();
                    let mut events = store.watch("/manx/", from).await.unwrap();
                    ready_tx.send(()).unwrap();
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            ev = events.next() => if ev.is_none() { break },
                        }
                    }
                    if let Some((server, task)) = _served {
                        task.abort();
                        println!(
                            "  node agent stand-in ({}): {} IPAM requests served on its socket, {} refused",
                            cfg.describe(),
                            server.stats.served.load(std::sync::atomic::Ordering::Relaxed),
                            server.stats.refused.load(std::sync::atomic::Ordering::Relaxed)
                        );
                    }
                })
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the agent stand-in did not come up (see the panic above)");
        Agent {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The IPAM blocks in the store, per affine node, as printed: `node1: 4
/// blocks (10.20.0.0/26 64, ...)`, with the fewest that can hold `pods`
/// (the block size read from the blocks). Reads from a thread inside
/// `node` (etcd listens on its loopback).
fn blocks_per_node(node: &Netns, vars: &[(String, String)], pods: usize) -> String {
    let path = node.path();
    let vars = vars.to_vec();
    let blocks = testkit::netns::run_in_path(path, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cfg = DatastoreConfig::from_vars(vars).unwrap();
            let store = connect_with_retry(&cfg).await;
            let ipam = ipam::Ipam::new(store, Arc::new(ipam::StaticTopology::new()));
            ipam.rw().list_blocks().await.unwrap()
        })
    });
    let mut by_node: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut size = 0;
    let mut blocks = blocks;
    blocks.sort_by_key(|b| b.value.cidr());
    for b in &blocks {
        let node = b.value.affine_node().unwrap_or("(no affinity)").to_string();
        let cidr = b.value.cidr();
        size = 1usize << (32 - cidr.prefix());
        by_node
            .entry(node)
            .or_default()
            .push(format!("{cidr} {}", b.value.allocated().count()));
    }
    let nodes: Vec<String> = by_node
        .iter()
        .map(|(n, bs)| format!("{n}: {} blocks ({})", bs.len(), bs.join(", ")))
        .collect();
    format!(
        "{} (fewest possible: {})",
        nodes.join("; "),
        pods.div_ceil(size.max(1))
    )
}

/// Connects, retrying for 30 s while the store (etcd) comes up.
async fn connect_with_retry(cfg: &DatastoreConfig) -> Arc<dyn Datastore> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let store = cfg.connect().await?;
            store.revision().await.map(|_| store)
        };
        match attempt.await {
            Ok(store) => return store,
            Err(e) if Instant::now() > deadline => {
                panic!("cannot reach {}: {e}", cfg.describe())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn manx_conf(store: &serde_json::Value) -> String {
    let mut c = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "manx",
        "nodename": "node1",
        "mtu": 1400,
        "ipam": {"type": "manx-ipam", "assign_ipv4": "true"}
    });
    for (k, v) in store.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string()
}

fn main() {
    let bridge = Path::new(DEBIAN_CNI).join("bridge");
    if !prereqs().file(&bridge, "containernetworking-plugins").ok() {
        return;
    }
    let pods: usize = std::env::var("MANX_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let manx_bin = manx_bin();
    let ipam_bin = manx_ipam_bin();
    println!(
        "plugins: {} and {} (and {DEBIAN_CNI}/bridge, host-local)",
        manx_bin.display(),
        ipam_bin.display()
    );
    let path = format!("{}:{DEBIAN_CNI}", ipam_bin.parent().unwrap().display());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let bridge_conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "mxcn-bench-br", "type": "bridge",
        "bridge": "mxcnbr0", "isGateway": true, "mtu": 1400,
        "ipam": {"type": "host-local", "dataDir": dir.path().join("hl").display().to_string(),
                 "ranges": [[{"subnet": BRIDGE_SUBNET}]]}
    })
    .to_string();

    let node = node_netns();
    let manx_pods: Vec<Netns> = (0..pods).map(|_| netns()).collect();
    let bridge_pods: Vec<Netns> = (0..pods).map(|_| netns()).collect();
    let etcd = Etcd::start(&node, dir.path());

    let embedded_vars = vec![
        ("DATASTORE_TYPE".to_string(), "embedded".to_string()),
        ("MANX_DB".to_string(), db.display().to_string()),
    ];
    let mut stores = vec![(
        "embedded",
        serde_json::json!({"datastore_type": "embedded", "manx_db": db.display().to_string()}),
        embedded_vars.clone(),
    )];
    let hold = std::env::var("MANX_BENCH_NO_AGENT").as_deref() != Ok("1");
    if !hold {
        println!("MANX_BENCH_NO_AGENT=1: nothing holds the stores open between plugin runs");
    }
    let serve = hold && std::env::var("MANX_BENCH_NO_SOCKET").as_deref() != Ok("1");
    if !serve {
        println!("no IPAM socket: manx-ipam allocates directly (the fallback path)");
    }
    // One claim lock folder (and agent socket) per store: the two agents
    // serve the same node name on different stores.
    let lock_dir = |store: &str| dir.path().join(format!("locks-{store}"));
    let mut agents = vec![Agent::start(
        &node,
        embedded_vars,
        hold,
        serve.then(|| lock_dir("embedded")),
    )];
    if let Some(etcd) = &etcd {
        let etcd_vars = vec![
            ("DATASTORE_TYPE".to_string(), "etcdv3".to_string()),
            ("ETCD_ENDPOINTS".to_string(), etcd.endpoint.clone()),
        ];
        agents.push(Agent::start(
            &node,
            etcd_vars.clone(),
            hold,
            serve.then(|| lock_dir("etcd")),
        ));
        stores.push((
            "etcd",
            serde_json::json!({"datastore_type": "etcdv3", "etcd_endpoints": etcd.endpoint}),
            etcd_vars,
        ));
    }

    let started = Instant::now();
    for (store, settings, vars) in &stores {
        let conf = manx_conf(settings);
        let plugin = |tag: String, timing: Option<PathBuf>| Plugin {
            bin: &manx_bin,
            conf: &conf,
            tag,
            pods: &manx_pods,
            timing,
            lock_dir: Some(lock_dir(store)),
        };
        let bridge = |tag: String| Plugin {
            bin: &bridge,
            conf: &bridge_conf,
            tag,
            pods: &bridge_pods,
            timing: None,
            lock_dir: None,
        };
        // Warm-up (page cache, store, bridge creation), not measured.
        let warm = 5.min(pods);
        run_pair(
            &node,
            &plugin(format!("w{store}"), None),
            &bridge(format!("wb{store}")),
            &path,
            warm,
            1,
            &|| {},
        );
        for (label, width) in [
            (format!("{pods} pods one after another"), 1),
            (format!("{pods} pods, {PARALLEL} at a time"), PARALLEL),
        ] {
            let timing = dir.path().join(format!("timing-{store}-{width}.jsonl"));
            let blocks = std::cell::RefCell::new(String::new());
            let (m, b) = run_pair(
                &node,
                &plugin(format!("m{store}{width}"), Some(timing.clone())),
                &bridge(format!("b{store}{width}")),
                &path,
                pods,
                width,
                &|| *blocks.borrow_mut() = blocks_per_node(&node, vars, pods),
            );
            report(&label, store, &m, &b, &timing);
            println!(
                "  blocks claimed per node with all {pods} pods added: {}",
                blocks.borrow()
            );
        }
    }
    drop(agents);
    println!("\n(total {:.1} s)", started.elapsed().as_secs_f64());
}
