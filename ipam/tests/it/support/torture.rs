//! Shared by the torture test and the allocation bench: many concurrent
//! allocators across nodes against one store, then a full verification.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::Datastore;
use ipam::topology::{Pool, StaticTopology};
use ipam::{AutoAssignArgs, Ipam, IpamOptions};

/// What the allocators did.
#[derive(Debug, Default)]
pub struct TortureOutcome {
    /// handle -> address, for allocations still held.
    pub held: HashMap<String, IpAddr>,
    /// Allocations made (including later released ones).
    pub allocations: usize,
    pub releases: usize,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

/// A topology with one big IPv4 pool and nodes `n0..n{nodes}`.
pub fn topology(nodes: usize, pool: &str) -> StaticTopology {
    let topo = StaticTopology::new();
    topo.add_pool(Pool::new("torture", pool).unwrap());
    for n in 0..nodes {
        topo.add_node(&format!("n{n}"), &[]);
    }
    topo
}

/// One allocator instance per node (as one process per node would be).
pub fn node_allocators(
    store: &Arc<dyn Datastore>,
    topo: &StaticTopology,
    nodes: usize,
) -> Vec<Arc<Ipam>> {
    (0..nodes)
        .map(|_| {
            Arc::new(
                Ipam::new(store.clone(), Arc::new(topo.clone())).with_options(IpamOptions {
                    max_retries: 1000,
                    ..IpamOptions::default()
                }),
            )
        })
        .collect()
}

/// `per_node` concurrent allocators on each node each make `per_allocator`
/// allocations; with `release_every = Some(k)` every k-th allocation is
/// followed by releasing the allocator's oldest held address.
pub async fn run(
    ipams: &[Arc<Ipam>],
    per_node: usize,
    per_allocator: usize,
    release_every: Option<usize>,
    tag: &str,
) -> TortureOutcome {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (n, ipam) in ipams.iter().enumerate() {
        for a in 0..per_node {
            let ipam = ipam.clone();
            let tag = tag.to_string();
            tasks.push(tokio::spawn(async move {
                let mut held: Vec<(String, IpAddr)> = Vec::new();
                let mut lat = Vec::with_capacity(per_allocator);
                let mut releases = 0;
                for i in 0..per_allocator {
                    let handle = format!("{tag}.n{n}-a{a}-{i}");
                    let args = AutoAssignArgs {
                        num_v4: 1,
                        handle_id: handle.clone(),
                        hostname: format!("n{n}"),
                        ..AutoAssignArgs::default()
                    };
                    let t = Instant::now();
                    let r = ipam
                        .auto_assign(&args)
                        .await
                        .unwrap_or_else(|e| panic!("{handle}: {e}"));
                    lat.push(t.elapsed());
                    assert_eq!(r.ipv4.len(), 1);
                    held.push((handle, r.ipv4[0].ip()));
                    if let Some(k) = release_every
                        && i % k == k - 1
                    {
                        let (h, ip) = held.remove(0);
                        let freed = ipam.release_by_handle(&h).await.unwrap();
                        assert_eq!(freed, vec![ip], "{h}");
                        releases += 1;
                    }
                }
                (held, lat, releases)
            }));
        }
    }
    let mut out = TortureOutcome::default();
    for t in tasks {
        let (held, lat, releases) = t.await.expect("allocator task panicked");
        out.allocations += lat.len();
        out.latencies.extend(lat);
        out.releases += releases;
        for (h, ip) in held {
            assert!(out.held.insert(h, ip).is_none());
        }
    }
    out.elapsed = start.elapsed();
    out
}

/// Verify the store against what the allocators report: every address once,
/// every allocation with its handle, the same handle→address map, and a
/// clean `check`.
pub async fn verify(ipam: &Ipam, out: &TortureOutcome) {
    let blocks = ipam.rw().list_blocks().await.unwrap();
    let mut seen: HashSet<IpAddr> = HashSet::new();
    let mut stored: HashMap<String, IpAddr> = HashMap::new();
    for b in &blocks {
        for (ip, attr, _) in b.value.allocated() {
            assert!(seen.insert(ip), "{ip} appears twice across blocks");
            let h = attr
                .handle_id
                .clone()
                .unwrap_or_else(|| panic!("{ip} has no handle"));
            assert!(
                stored.insert(h.clone(), ip).is_none(),
                "handle {h} holds two addresses"
            );
        }
    }
    assert_eq!(
        stored.len(),
        out.held.len(),
        "stored allocations vs reported"
    );
    assert_eq!(
        stored, out.held,
        "stored handle->address map differs from what allocators got"
    );
    let handles = ipam.rw().list_handles().await.unwrap();
    assert_eq!(handles.len(), out.held.len(), "handle objects");
    let report = ipam.check(None).await.unwrap();
    assert!(report.is_clean(), "{report}");
    let live: HashSet<String> = out.held.keys().cloned().collect();
    let report = ipam.check(Some(&live)).await.unwrap();
    assert!(report.is_clean(), "{report}");
}

/// p50 / p99 of latencies.
pub fn percentiles(lat: &[Duration]) -> (Duration, Duration) {
    let mut v = lat.to_vec();
    v.sort();
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Blocks per node, for the log.
pub async fn blocks_per_node(ipam: &Ipam) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for b in ipam.rw().list_blocks().await.unwrap() {
        *m.entry(b.value.affine_node().unwrap_or("-").to_string())
            .or_default() += 1;
    }
    m
}
