//! Allocation throughput and latency, against the ceiling of the same store.
//!
//! For each backend (embedded SQLite file, a real single-member etcd) and
//! each concurrency (1, 8, 64 allocators spread over 4 nodes), measures:
//!
//! * the raw CAS rate: the same number of tasks each doing get-free
//!   compare-and-swap updates of its own key, back to back (the ceiling: an
//!   allocation must write at least its block);
//! * allocations/s and p50/p99 latency of `auto_assign` (one IPv4 address,
//!   fresh handle each: one transaction of block CAS + handle create,
//!   concurrent requests on a block sharing it);
//!
//! and prints allocations/s ÷ CAS/s. Targets: ≥ 0.5, and p99 < 10 ms at
//! concurrency 8 on etcd. `MANX_BENCH_SECS` sets each phase's length
//! (default 3).
//!
//! Measured 2026-11-22 on the 2-core build machine (load ~3), release,
//! two runs: alloc/CAS ratio embedded 0.61-0.65 / 1.11-1.14 / 1.36-1.49
//! and etcd 0.60-0.61 / 0.68-0.75 / 0.64-0.72 at concurrency 1 / 8 / 64;
//! etcd p99 at concurrency 8: 7.7-8.1 ms (p50 1.5-1.6 ms). Before the
//! one-transaction writes: ratios 0.17-0.30 and etcd p99 83 ms at 8.

#[path = "../tests/it/support/torture.rs"]
mod torture;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::Datastore;
use ipam::{AutoAssignArgs, Ipam, IpamOptions};

const NODES: usize = 4;

fn phase() -> Duration {
    Duration::from_secs_f64(
        std::env::var("MANX_BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3.0),
    )
}

/// CAS updates per second with `conc` tasks, each on its own key.
async fn cas_rate(store: &Arc<dyn Datastore>, conc: usize, tag: &str) -> f64 {
    let deadline = Instant::now() + phase();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let store = store.clone();
        let key = format!("/bench/cas/{tag}/{t}");
        tasks.push(tokio::spawn(async move {
            let mut rev = store.create(&key, b"0".to_vec()).await.unwrap();
            let mut n = 0u64;
            while Instant::now() < deadline {
                rev = store
                    .update(&key, n.to_string().into_bytes(), rev)
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let start = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Allocations per second and latencies with `conc` allocators over 4 nodes.
async fn alloc_rate(ipams: &[Arc<Ipam>], conc: usize, tag: &str) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + phase();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let ipam = ipams[t % NODES].clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let args = AutoAssignArgs {
                    num_v4: 1,
                    handle_id: format!("{tag}.{t}.{i}"),
                    hostname: format!("n{}", t % NODES),
                    ..AutoAssignArgs::default()
                };
                let s = Instant::now();
                ipam.auto_assign(&args).await.unwrap();
                lat.push(s.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let start = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    let (p50, p99) = torture::percentiles(&lat);
    (rate, p50, p99)
}

async fn bench_backend(name: &str, store: Arc<dyn Datastore>) {
    let topo = torture::topology(NODES, "10.0.0.0/8");
    let ipams: Vec<Arc<Ipam>> = (0..NODES)
        .map(|_| {
            Arc::new(
                Ipam::new(store.clone(), Arc::new(topo.clone())).with_options(IpamOptions {
                    max_retries: 1000,
                    ..IpamOptions::default()
                }),
            )
        })
        .collect();
    // Warm up: every node claims its first block.
    for (n, ipam) in ipams.iter().enumerate() {
        ipam.auto_assign(&AutoAssignArgs {
            num_v4: 1,
            handle_id: format!("warm.{n}"),
            hostname: format!("n{n}"),
            ..AutoAssignArgs::default()
        })
        .await
        .unwrap();
    }
    for conc in [1, 8, 64] {
        let cas = cas_rate(&store, conc, &format!("{name}-{conc}")).await;
        let (rate, p50, p99) = alloc_rate(&ipams, conc, &format!("{name}-c{conc}")).await;
        println!(
            "{name:<8} conc {conc:>2}: {rate:>8.0} alloc/s  p50 {:>7.2} ms  p99 {:>7.2} ms | baseline raw CAS {cas:>8.0}/s | ratio alloc/CAS {:.2}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            rate / cas
        );
    }
}

fn main() {
    // `cargo test --benches` runs benches with --test-ish args; only run when benching.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("ipam allocation bench ({}s per phase; targets: ratio >= 0.5, etcd p99 < 10 ms at conc 8)", phase().as_secs_f64());
        let dir = tempfile::tempdir().unwrap();
        let embedded = datastore::embedded::EmbeddedStore::open(dir.path().join("bench.db"))
            .await
            .unwrap();
        bench_backend("embedded", Arc::new(embedded)).await;
        if datastore::testing::etcd_available() {
            let etcd = datastore::testing::EtcdServer::start().await.unwrap();
            let store = datastore::etcd::EtcdStore::connect(etcd.config()).await.unwrap();
            bench_backend("etcd", Arc::new(store)).await;
        } else {
            println!("etcd: skipped (/usr/bin/etcd not installed)");
        }
    });
}
