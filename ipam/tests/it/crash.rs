//! Crash safety.
//!
//! 1. Fault injection: concurrent allocators and releasers run with crashes
//!    planned at random write boundaries (every [`FaultPoint`]). Afterwards
//!    `check` reports every leftover, two GC rounds a grace period apart
//!    repair them, `check` is clean, and every allocation an allocator saw
//!    succeed is still held.
//! 2. `kill -9`: the real `manx-ipam` CNI plugin runs ADDs against an
//!    embedded store file and is killed at random moments. Afterwards
//!    `check` (given the handles whose ADD succeeded as the live set) reports
//!    exactly the allocations of killed ADDs, GC reclaims them, and no
//!    address of a live handle is touched.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datastore::Datastore;
use datastore::client::Client;
use datastore::memory::MemoryStore;
use datastore::model::IPPool;
use ipam::allocator::ManualClock;
use ipam::blockrw::{FaultPlan, FaultPoint};
use ipam::check::{Gc, GcOptions};
use ipam::topology::{Pool, StaticTopology};
use ipam::{AutoAssignArgs, Ipam, IpamError, IpamOptions};

fn rand_below(n: u64) -> u64 {
    rand::random_range(0..n.max(1))
}

async fn gc_until_clean(ipam: &Ipam, clock: &ManualClock, live: Option<&HashSet<String>>) {
    let mut gc = Gc::new(GcOptions {
        grace: Duration::from_secs(60),
        reclaim_deleted_nodes: true,
    });
    for round in 0..4 {
        gc.run(ipam, live).await.unwrap();
        clock.advance(Duration::from_secs(61));
        let r = ipam.check(live).await.unwrap();
        if r.is_clean() {
            return;
        }
        if round > 0 {
            eprintln!("after GC round {round}: {r}");
        }
    }
    panic!("GC did not converge: {}", ipam.check(live).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_crash_fault_injection_at_every_write_boundary() {
    for round in 0..12 {
        let topo = StaticTopology::new();
        topo.add_pool(Pool::new("p", "10.70.0.0/20").unwrap().with_block_size(28));
        for n in 0..3 {
            topo.add_node(&format!("n{n}"), &[]);
        }
        let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(1_000_000_000);
        let faults = FaultPlan::new();
        for p in FaultPoint::ALL {
            faults.arm(p, 1 + rand_below(20));
        }
        let ipam = Arc::new(
            Ipam::new(store.clone(), Arc::new(topo.clone()))
                .with_clock(clock.clone())
                .with_faults(faults.clone())
                .with_options(IpamOptions {
                    empty_block_grace: Duration::from_secs(30),
                    max_retries: 200,
                    ..IpamOptions::default()
                }),
        );
        let mut tasks = Vec::new();
        for w in 0..12 {
            let ipam = ipam.clone();
            let clock = clock.clone();
            tasks.push(tokio::spawn(async move {
                let node = format!("n{}", w % 3);
                let mut held: Vec<(String, IpAddr)> = Vec::new();
                for i in 0..30 {
                    let h = format!("w{w}-{i}");
                    let args = AutoAssignArgs {
                        num_v4: 1,
                        handle_id: h.clone(),
                        hostname: node.clone(),
                        ..AutoAssignArgs::default()
                    };
                    match ipam.auto_assign(&args).await {
                        Ok(r) => held.push((h, r.ipv4[0].ip())),
                        Err(IpamError::InjectedCrash(_)) => {}
                        Err(e) => panic!("{h}: {e}"),
                    }
                    if i % 4 == 3 && !held.is_empty() {
                        let (h, _) = held.remove(rand_below(held.len() as u64) as usize);
                        match ipam.release_by_handle(&h).await {
                            Ok(_) => {}
                            // A crashed release: the pod is gone either way.
                            Err(IpamError::InjectedCrash(_)) => {}
                            Err(e) => panic!("release {h}: {e}"),
                        }
                    }
                    if i % 10 == 9 {
                        clock.advance(Duration::from_secs(31));
                        match ipam.release_empty_blocks(Some(&node)).await {
                            Ok(_) | Err(IpamError::InjectedCrash(_)) => {}
                            Err(e) => panic!("release empty blocks: {e}"),
                        }
                    }
                }
                held
            }));
        }
        let mut live: HashMap<String, IpAddr> = HashMap::new();
        for t in tasks {
            live.extend(t.await.unwrap());
        }
        let crashed = faults.crashed();
        let live_set: HashSet<String> = live.keys().cloned().collect();
        let before = ipam.check(Some(&live_set)).await.unwrap();
        // Every stored allocation is either live or reported as leaked.
        let mut reported: HashSet<IpAddr> = before.leaked_addresses.iter().map(|l| l.ip).collect();
        for b in ipam.rw().list_blocks().await.unwrap() {
            for (ip, attr, _) in b.value.allocated() {
                let h = attr.handle_id.clone().unwrap();
                if !live_set.contains(&h) {
                    assert!(
                        reported.remove(&ip),
                        "round {round}: leak {ip} ({h}) not reported"
                    );
                }
            }
        }
        assert!(
            reported.is_empty(),
            "round {round}: reported non-leaks {reported:?}"
        );
        eprintln!(
            "round {round}: crashes at {crashed:?}; check found {} problem(s)",
            before.problems().len()
        );
        gc_until_clean(&ipam, &clock, Some(&live_set)).await;
        for (h, ip) in &live {
            assert_eq!(
                ipam.ips_by_handle(h).await.unwrap(),
                vec![*ip],
                "round {round}: live handle {h} lost its address"
            );
        }
        // And the allocator still works.
        let fresh = Ipam::new(store, Arc::new(topo));
        fresh
            .auto_assign(&AutoAssignArgs {
                num_v4: 1,
                handle_id: "after".into(),
                hostname: "n0".into(),
                ..AutoAssignArgs::default()
            })
            .await
            .unwrap();
    }
}

fn cni_conf(db: &str) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0", "name": "crashnet", "type": "manx",
        "datastore_type": "embedded", "manx_db": db, "nodename": "n0",
        "ipam": {"type": "manx-ipam"}
    })
    .to_string()
}

/// Run one ADD; kill -9 it after `kill_after` if given. `Some(ip)` if it
/// completed successfully.
fn cni_add(conf: &str, lock_dir: &Path, cid: &str, kill_after: Option<Duration>) -> Option<IpAddr> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_manx-ipam"))
        .env_clear()
        // The host claim lock in the test's folder, not /var/run/manx.
        .env("MANX_IPAM_LOCK_DIR", lock_dir)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        // The plugin checks CNI_NETNS as the manx plugin does: an absolute
        // path that exists (the addresses are not configured in it).
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn manx-ipam");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    if let Some(d) = kill_after {
        let deadline = Instant::now() + d;
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                // SIGKILL, like kubelet's runtime dying mid-ADD.
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let addr = v["ips"][0]["address"].as_str()?;
    addr.parse::<ipnetwork::IpNetwork>().ok().map(|n| n.ip())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_crash_kill_9_cni_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("manx.db");
    let locks = dir.path().join("locks");
    let db_s = db.to_str().unwrap().to_string();
    let store: Arc<dyn Datastore> =
        Arc::new(datastore::embedded::EmbeddedStore::open(&db).await.unwrap());
    let mut pool = IPPool::new("crash", "10.80.0.0/22".parse().unwrap());
    pool.spec.block_size = Some(28);
    Client::new(store.clone()).create(&pool).await.unwrap();
    let conf = cni_conf(&db_s);

    // How long an uninterrupted ADD takes here, to aim the kills.
    let t = Instant::now();
    assert!(
        cni_add(&conf, &locks, "probe", None).is_some(),
        "a plain ADD works"
    );
    let typical = t.elapsed();
    eprintln!("one ADD takes {typical:?}; killing at random points within 1.5x that");

    let total = 120;
    let conf2 = conf.clone();
    let locks2 = locks.clone();
    let results = tokio::task::spawn_blocking(move || {
        let mut handles = Vec::new();
        for worker in 0..4 {
            let conf = conf2.clone();
            let locks = locks2.clone();
            handles.push(std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..total / 4 {
                    let cid = format!("c{worker}-{i}");
                    let kill = if i % 3 != 2 {
                        let us = rand_below((typical.as_micros() as u64) * 3 / 2);
                        Some(Duration::from_micros(us))
                    } else {
                        None
                    };
                    out.push((
                        cid.clone(),
                        kill.is_some(),
                        cni_add(&conf, &locks, &cid, kill),
                    ));
                }
                out
            }));
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let mut live: HashMap<String, IpAddr> = HashMap::new();
    live.insert(
        "crashnet.probe".into(),
        cni_add(&conf, &locks, "probe", None).unwrap(),
    );
    let mut killed = 0;
    for (cid, was_killed, ip) in &results {
        killed += *was_killed as usize;
        if let Some(ip) = ip {
            live.insert(format!("crashnet.{cid}"), *ip);
        } else {
            assert!(*was_killed, "ADD {cid} failed without being killed");
        }
    }
    eprintln!(
        "{} ADDs, {killed} killed, {} succeeded",
        results.len(),
        live.len()
    );

    let topo = ipam::resources::DatastoreTopology::new(store.clone());
    let clock = ManualClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    );
    let ipam = Ipam::new(store.clone(), Arc::new(topo)).with_clock(clock.clone());
    let live_set: HashSet<String> = live.keys().cloned().collect();
    let report = ipam.check(Some(&live_set)).await.unwrap();
    eprintln!("{report}");
    // Every allocation is either live (with the address its ADD returned) or reported.
    let reported: HashSet<IpAddr> = report.leaked_addresses.iter().map(|l| l.ip).collect();
    for b in ipam.rw().list_blocks().await.unwrap() {
        for (ip, attr, _) in b.value.allocated() {
            let h = attr.handle_id.clone().unwrap_or_default();
            match live.get(&h) {
                Some(lip) => assert_eq!(*lip, ip, "live handle {h} holds another address"),
                None => assert!(reported.contains(&ip), "leak {ip} ({h}) not reported"),
            }
        }
    }
    gc_until_clean(&ipam, &clock, Some(&live_set)).await;
    for (h, ip) in &live {
        assert_eq!(
            ipam.ips_by_handle(h).await.unwrap(),
            vec![*ip],
            "live {h} reclaimed"
        );
    }
}
