//! The plugin with `manx-ipam` on an embedded datastore file: addresses from
//! an IPPool, WorkloadEndpoints written and removed, STATUS, GC, and 50
//! parallel ADDs on one node.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use datastore::Datastore;
use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::{IPPool, WorkloadEndpoint};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn open(db: &Path) -> Client {
    let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::open(db).await.unwrap());
    Client::new(store)
}

/// A store with one pool, 10.20.0.0/16.
fn store_with_pool(db: &Path) {
    rt().block_on(async {
        let client = open(db).await;
        client
            .create(&IPPool::new("pool1", "10.20.0.0/16".parse().unwrap()))
            .await
            .unwrap();
    });
}

fn weps(db: &Path) -> Vec<WorkloadEndpoint> {
    rt().block_on(async { open(db).await.list::<WorkloadEndpoint>().await.unwrap().0 })
}

/// IPAM problems with no live handles given: every allocation is a leak.
fn ipam_problems(db: &Path, live: &[String]) -> Vec<String> {
    rt().block_on(async {
        let store: Arc<dyn Datastore> = Arc::new(EmbeddedStore::open(db).await.unwrap());
        let topo = ipam::resources::DatastoreTopology::new(store.clone());
        let ipam = ipam::Ipam::new(store, Arc::new(topo));
        let live: HashSet<String> = live.iter().cloned().collect();
        ipam.check(Some(&live)).await.unwrap().problems()
    })
}

fn setup() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !prereqs().ok() {
        return None;
    }
    // Build (or find) manx-ipam before any namespace exists.
    let bin = manx_ipam_bin();
    assert!(bin.exists());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("manx.db");
    store_with_pool(&db);
    Some((dir, db))
}

fn ipam_call(call: Call) -> Call {
    let mut c = call;
    c.path = format!(
        "{}:{DEBIAN_CNI}",
        manx_ipam_bin().parent().unwrap().display()
    );
    c
}

fn add_check_del(version: &str) {
    let Some((_dir, db)) = setup() else { return };
    let node = node_netns();
    let pod = netns();
    let conf = manx_ipam_conf(version, &db);
    let call = ipam_call(Call::new("ADD", "ctr-m1", &pod, "web-0"));
    let result = manx(&node, &call, &conf.to_string()).ok();
    assert_eq!(result["cniVersion"], version);
    let ip = result_ip(&result);
    assert!(ip.starts_with("10.20."), "{result}");
    assert_eq!(pod.addrs("eth0"), vec![format!("{ip}/32")]);

    // The WorkloadEndpoint, Calico-shaped.
    let eps = weps(&db);
    assert_eq!(eps.len(), 1);
    let ep = &eps[0];
    assert_eq!(ep.metadata.name, "node1-k8s-web--0-eth0");
    assert_eq!(ep.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(ep.spec.node.as_deref(), Some("node1"));
    assert_eq!(ep.spec.orchestrator.as_deref(), Some("k8s"));
    assert_eq!(ep.spec.pod.as_deref(), Some("web-0"));
    assert_eq!(ep.spec.container_id.as_deref(), Some("ctr-m1"));
    assert_eq!(ep.spec.endpoint.as_deref(), Some("eth0"));
    assert_eq!(ep.spec.ip_networks[0].to_string(), format!("{ip}/32"));
    assert_eq!(
        ep.spec.interface_name.as_deref(),
        result["interfaces"][0]["name"].as_str()
    );
    assert_eq!(
        ep.spec.mac.as_deref(),
        result["interfaces"][1]["mac"].as_str()
    );
    assert_eq!(ep.spec.profiles, vec!["kns.default".to_string()]);

    // CHECK: passes; fails when the endpoint is gone from the datastore.
    let check_conf = with_prev(&conf, &result).to_string();
    manx(&node, &call.clone().command("CHECK"), &check_conf).ok();
    rt().block_on(async {
        open(&db)
            .await
            .delete_namespaced::<WorkloadEndpoint>("default", "node1-k8s-web--0-eth0", None)
            .await
            .unwrap();
    });
    manx(&node, &call.clone().command("CHECK"), &check_conf).err(100, "missing from the datastore");

    manx(&node, &call.clone().command("DEL"), &check_conf).ok();
    assert!(weps(&db).is_empty());
    assert!(node.cali_links().is_empty());
    assert_eq!(ipam_problems(&db, &[]), Vec::<String>::new());
    manx(&node, &call.command("DEL"), &check_conf).ok();
}

#[test]
fn manx_ipam_add_check_del_cni_1_0_0() {
    add_check_del("1.0.0");
}

#[test]
fn manx_ipam_add_check_del_cni_0_4_0() {
    add_check_del("0.4.0");
}

#[test]
fn status_and_gc() {
    let Some((dir, db)) = setup() else { return };
    let node = node_netns();
    let a = netns();
    let b = netns();
    let conf = manx_ipam_conf("1.1.0", &db);
    let ca = ipam_call(Call::new("ADD", "ctr-live", &a, "live"));
    let cb = ipam_call(Call::new("ADD", "ctr-stale", &b, "stale"));
    manx(&node, &ca, &conf.to_string()).ok();
    let rb = manx(&node, &cb, &conf.to_string()).ok();
    assert_eq!(weps(&db).len(), 2);

    // STATUS: ready with a pool.
    let mut status = ipam_call(Call::new("STATUS", "", &a, "x"));
    status.container_id.clear();
    status.netns.clear();
    status.ifname.clear();
    status.args.clear();
    manx(&node, &status, &conf.to_string()).ok();
    // STATUS with 1.0.0 is not defined.
    let mut old = conf.clone();
    old["cniVersion"] = "1.0.0".into();
    manx(&node, &status, &old.to_string()).err(1, "1.1.0");

    // GC: only ctr-live is valid; ctr-stale's veth, address and endpoint go.
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": "ctr-live", "ifname": "eth0"}]);
    let gc = status.clone().command("GC");
    manx(&node, &gc, &gc_conf.to_string()).ok();
    let eps = weps(&db);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].spec.container_id.as_deref(), Some("ctr-live"));
    assert_eq!(node.cali_links().len(), 1);
    let stale_ip = result_ip(&rb);
    assert!(!node.routes().contains(&format!("{stale_ip} ")));
    assert_eq!(
        ipam_problems(&db, &["k8s-pod-network.ctr-live".to_string()]),
        Vec::<String>::new()
    );

    manx(&node, &ca.command("DEL"), &conf.to_string()).ok();
    assert!(weps(&db).is_empty());

    // STATUS with no enabled pool: code 50.
    let empty = dir.path().join("empty.db");
    rt().block_on(async {
        open(&empty).await;
    });
    let conf2 = manx_ipam_conf("1.1.0", &empty);
    manx(&node, &status, &conf2.to_string()).err(50, "not ready");
}

/// 50 ADDs at once on one node, then 50 DELs at once: distinct addresses,
/// every pod wired, then no veth, endpoint or allocation left.
#[test]
fn heavy_parallel_adds_and_dels() {
    let Some((_dir, db)) = setup() else { return };
    let node = node_netns();
    let pods: Vec<Netns> = (0..50).map(|_| netns()).collect();
    let conf = manx_ipam_conf("1.0.0", &db).to_string();
    let calls: Vec<Call> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            ipam_call(Call::new(
                "ADD",
                &format!("ctr-par-{i}"),
                p,
                &format!("par-{i}"),
            ))
        })
        .collect();
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let handles: Vec<_> = calls
            .iter()
            .map(|c| s.spawn(|| manx(&node, c, &conf).ok()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<String> = results.iter().map(result_ip).collect();
    assert_eq!(ips.len(), 50, "duplicate addresses");
    assert_eq!(node.cali_links().len(), 50);
    assert_eq!(weps(&db).len(), 50);
    for (pod, r) in pods.iter().zip(&results) {
        assert_eq!(pod.addrs("eth0"), vec![format!("{}/32", result_ip(r))]);
    }
    let live: Vec<String> = (0..50)
        .map(|i| format!("k8s-pod-network.ctr-par-{i}"))
        .collect();
    assert_eq!(ipam_problems(&db, &live), Vec::<String>::new());

    std::thread::scope(|s| {
        for c in &calls {
            let conf = &conf;
            let node = &node;
            s.spawn(move || manx(node, &c.clone().command("DEL"), conf).ok());
        }
    });
    assert!(node.cali_links().is_empty());
    assert!(weps(&db).is_empty());
    assert_eq!(ipam_problems(&db, &[]), Vec::<String>::new());
}
