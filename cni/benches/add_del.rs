//! ADD and DEL latency of the manx plugin (with manx-ipam on an embedded
//! store file) beside Debian's reference plugins `bridge` + `host-local`
//! doing the same pods in the same run, in network namespaces.
//!
//! Runs: 200 pods one after another, then 200 pods 20 at a time; prints
//! p50/p99 of ADD and DEL for each plugin and the ratio of the p99s
//! (target: manx ADD p99 within 1.5x of bridge+host-local).
//!
//! `cargo bench -p manx-cni --bench add_del` (root; skips otherwise).
//!
//! Measured 2026-11-22 on the shared 2-core build machine (under load):
//! sequential ADD p99 245 ms vs 87 ms (2.81x), DEL p99 156 vs 73 ms;
//! 20-wide ADD p99 1604 vs 497 ms (3.23x). The 1.5x target is NOT met yet:
//! manx's ADD is two processes (manx + manx-ipam) each opening the SQLite
//! store and doing several fsynced CAS writes (handle, block, endpoint).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use datastore::Datastore;
use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::IPPool;

const PODS: usize = 200;
const PARALLEL: usize = 20;

#[derive(Debug, Default)]
struct Samples {
    add: Vec<Duration>,
    del: Vec<Duration>,
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

/// Runs ADD for every pod (in waves of `width`), then DEL, timing each call.
fn run_plugin(
    node: &Netns,
    pods: &[Netns],
    bin: &Path,
    conf: &str,
    path: &str,
    tag: &str,
    width: usize,
) -> Samples {
    let calls: Vec<Call> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = Call::new("ADD", &format!("{tag}-{i}"), p, &format!("{tag}-{i}"));
            c.path = path.to_string();
            c
        })
        .collect();
    let mut samples = Samples::default();
    for phase in ["ADD", "DEL"] {
        for wave in calls.chunks(width) {
            let times: Vec<Duration> = std::thread::scope(|s| {
                let hs: Vec<_> = wave
                    .iter()
                    .map(|c| {
                        s.spawn(move || {
                            let call = c.clone().command(phase);
                            let t = Instant::now();
                            let out = run(node, bin, &call, conf);
                            let d = t.elapsed();
                            assert_eq!(out.code, 0, "{phase} failed: {out:?}");
                            d
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            if phase == "ADD" {
                samples.add.extend(times);
            } else {
                samples.del.extend(times);
            }
        }
    }
    samples
}

fn report(label: &str, manx: &Samples, base: &Samples) {
    println!("\n== {label} ==");
    for (name, s) in [
        ("manx+manx-ipam(embedded)", manx),
        ("bridge+host-local", base),
    ] {
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
    println!(
        "ratio manx/bridge+host-local: ADD p99 {add_ratio:.2}x (target <= 1.5x), DEL p99 {del_ratio:.2}x"
    );
}

fn main() {
    if !can_run() || !Path::new(DEBIAN_CNI).join("bridge").exists() {
        println!("add_del bench skipped: needs root, iproute2 and {DEBIAN_CNI}/bridge");
        return;
    }
    let manx_bin = manx_bin();
    let ipam_dir = manx_ipam_bin().parent().unwrap().display().to_string();
    let path = format!("{ipam_dir}:{DEBIAN_CNI}");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::open(&db).await.unwrap());
            Client::new(store)
                .create(&IPPool::new("bench", "10.20.0.0/17".parse().unwrap()))
                .await
                .unwrap();
        });
    let manx_conf = manx_ipam_conf("1.0.0", &db).to_string();
    let bridge_conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "mxcn-bench-br", "type": "bridge",
        "bridge": "mxcnbr0", "isGateway": true, "mtu": 1400,
        "ipam": {"type": "host-local", "dataDir": dir.path().join("hl").display().to_string(),
                 "ranges": [[{"subnet": "10.20.128.0/17"}]]}
    })
    .to_string();

    let node = Netns::node();
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new()).collect();
    let debian = Path::new(DEBIAN_CNI).join("bridge");
    // Warm-up (page cache, store file, bridge creation), not measured.
    let _ = run_plugin(&node, &pods[..5], &manx_bin, &manx_conf, &path, "warm", 1);
    let _ = run_plugin(&node, &pods[..5], &debian, &bridge_conf, &path, "warmb", 1);

    let started = Instant::now();
    for (label, width) in [
        ("200 pods one after another", 1),
        ("200 pods, 20 at a time", PARALLEL),
    ] {
        let m = run_plugin(
            &node,
            &pods,
            &manx_bin,
            &manx_conf,
            &path,
            &format!("m{width}"),
            width,
        );
        let b = run_plugin(
            &node,
            &pods,
            &debian,
            &bridge_conf,
            &path,
            &format!("b{width}"),
            width,
        );
        report(label, &m, &b);
    }
    println!("\n(total {:.1} s)", started.elapsed().as_secs_f64());
}
