//! Torture: 4 nodes × 32 concurrent allocators × N allocations (with some
//! releases mixed in) on the embedded store and on a real etcd, then: no
//! address twice, every allocation has its handle, the store's handle→address
//! map equals what the allocators got, and `check` is clean.
//!
//! N is `MANX_TORTURE_PER_ALLOCATOR` (the bench/full size is 1000; the test
//! default is 100 to keep the suite within minutes on 2 shared cores).

use std::sync::Arc;

use crate::support::torture;
use datastore::Datastore;

const NODES: usize = 4;
const PER_NODE: usize = 32;
const DEFAULT_PER_ALLOCATOR: usize = 100;

fn per_allocator() -> usize {
    std::env::var("MANX_TORTURE_PER_ALLOCATOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PER_ALLOCATOR)
}

async fn torture_on(store: Arc<dyn Datastore>, backend: &str) {
    let n = per_allocator();
    eprintln!(
        "{backend}: {NODES} nodes x {PER_NODE} allocators x {n} allocations (MANX_TORTURE_PER_ALLOCATOR; full size 1000)"
    );
    let topo = torture::topology(NODES, "10.64.0.0/14");
    let ipams = torture::node_allocators(&store, &topo, NODES);
    let out = torture::run(&ipams, PER_NODE, n, Some(10), "torture").await;
    assert_eq!(out.allocations, NODES * PER_NODE * n);
    let (p50, p99) = torture::percentiles(&out.latencies);
    eprintln!(
        "{backend}: {} allocations, {} releases in {:.1?} ({:.0}/s), p50 {p50:.1?} p99 {p99:.1?}, blocks {:?}",
        out.allocations,
        out.releases,
        out.elapsed,
        out.allocations as f64 / out.elapsed.as_secs_f64(),
        torture::blocks_per_node(&ipams[0]).await
    );
    torture::verify(&ipams[0], &out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_torture_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store = datastore::embedded::EmbeddedStore::open(dir.path().join("ipam.db"))
        .await
        .unwrap();
    torture_on(Arc::new(store), "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_torture_etcd() {
    if !datastore::testing::require_etcd() {
        return;
    }
    let etcd = datastore::testing::EtcdServer::start().await.unwrap();
    let store = datastore::etcd::EtcdStore::connect(etcd.config())
        .await
        .unwrap();
    torture_on(Arc::new(store), "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torture_memory_small() {
    let store = Arc::new(datastore::memory::MemoryStore::new());
    let topo = torture::topology(NODES, "10.64.0.0/14");
    let ipams = torture::node_allocators(&(store as Arc<dyn Datastore>), &topo, NODES);
    let out = torture::run(&ipams, 8, 20, Some(5), "mem").await;
    torture::verify(&ipams[0], &out).await;
}
