//! The plugin with `manx-ipam` on an embedded datastore file: addresses from
//! an IPPool, WorkloadEndpoints written and removed, STATUS, GC, 50
//! parallel ADDs on one node, and dual-stack and IPv6-only ADDs.

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

/// A store with an IPv4 pool (10.20.0.0/16) and an IPv6 pool (fd20:20::/48).
fn store_with_dual_pools(db: &Path) {
    rt().block_on(async {
        let client = open(db).await;
        for (name, cidr) in [("pool4", "10.20.0.0/16"), ("pool6", "fd20:20::/48")] {
            client
                .create(&IPPool::new(name, cidr.parse().unwrap()))
                .await
                .unwrap();
        }
    });
}

/// IPv6 addresses (`x::y/len`, global scope) on `ifname` in `ns`.
fn addrs6(ns: &testkit::Netns, ifname: &str) -> Vec<String> {
    let v = ns.ip_json(&["-6", "addr", "show", "dev", ifname, "scope", "global"]);
    v[0]["addr_info"]
        .as_array()
        .map(|a| {
            // `ip -j` leaves the addresses its scope filter drops as `{}`.
            a.iter()
                .filter_map(|i| Some(format!("{}/{}", i["local"].as_str()?, i["prefixlen"])))
                .collect()
        })
        .unwrap_or_default()
}

/// One ADD with the given families (issue 21): the result, the pod's
/// addresses and routes, the node's /128 route and the pod reachable from
/// the node over each family, CHECK, then DEL leaving nothing. Returns the
/// addresses the ADD gave.
fn add_families(v4: bool, v6: bool, cid: &str) -> Vec<String> {
    if !prereqs().ok() {
        return vec![];
    }
    let bin = manx_ipam_bin();
    assert!(bin.exists());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("manx.db");
    store_with_dual_pools(&db);
    let node = node_netns();
    // An IPv6 node: forwarding, and a global address on its uplink (the
    // source of its own packets to the pod).
    node.sysctl("net.ipv6.conf.all.forwarding", "1");
    node.ip(&["addr", "add", "fd20:100::2/64", "dev", "uplink0", "nodad"]);
    let pod = netns();
    let mut conf = manx_ipam_conf("1.0.0", &db);
    conf["ipam"]["assign_ipv4"] = v4.to_string().into();
    conf["ipam"]["assign_ipv6"] = v6.to_string().into();
    let call = ipam_call(Call::new("ADD", cid, &pod, "web-6"));
    let result = manx(&node, &call, &conf.to_string()).ok();

    // Both families in one result (no routes in it, as Calico's plugin).
    let ips: Vec<String> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), usize::from(v4) + usize::from(v6), "{result}");
    assert_eq!(ips.iter().any(|a| a.starts_with("10.20.")), v4, "{result}");
    assert_eq!(
        ips.iter().any(|a| a.starts_with("fd20:20:")),
        v6,
        "{result}"
    );
    // In the pod: the addresses as /32 and /128, the default routes via
    // 169.254.1.1 and the host veth's link-local fe80::ecee:eeff:feee:eeee.
    let v4_addr = ips.iter().find(|a| !a.contains(':'));
    let v6_addr = ips.iter().find(|a| a.contains(':'));
    assert_eq!(
        pod.addrs("eth0"),
        v4_addr
            .map(|a| a.replace("/26", "/32"))
            .into_iter()
            .collect::<Vec<_>>()
    );
    let pod6: Vec<String> = addrs6(&pod, "eth0");
    assert_eq!(pod6.len(), usize::from(v6), "{pod6:?}");
    let pod_routes6 = pod.ip(&["-6", "route", "show"]);
    assert_eq!(
        pod_routes6.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        v6,
        "{pod_routes6}"
    );
    assert_eq!(
        pod.routes().contains("default via 169.254.1.1 dev eth0"),
        v4
    );

    // On the node: the host veth has the gateway's link-local address, a
    // /128 route to the pod, and the pod answers over each family.
    let host_if = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    if let Some(a) = v6_addr {
        let ip = a.split('/').next().unwrap();
        let local = node.ip(&["-6", "addr", "show", "dev", &host_if]);
        assert!(local.contains("fe80::ecee:eeff:feee:eeee/64"), "{local}");
        let r = node.ip(&["-6", "route", "show", &format!("{ip}/128")]);
        assert!(r.contains(&format!("dev {host_if}")), "{r}");
        assert!(
            node.try_exec("ping", &["-6", "-c", "1", "-w", "10", ip]),
            "the node cannot reach the pod's {ip}"
        );
    }
    if let Some(a) = v4_addr {
        let ip = a.split('/').next().unwrap();
        assert!(node.try_exec("ping", &["-c", "1", "-W", "5", ip]));
    }
    let eps = weps(&db);
    assert_eq!(
        eps[0].spec.ip_networks.len(),
        ips.len(),
        "{:?}",
        eps[0].spec
    );

    // CHECK passes on both families; DEL leaves nothing.
    let check_conf = with_prev(&conf, &result).to_string();
    manx(&node, &call.clone().command("CHECK"), &check_conf).ok();
    manx(&node, &call.command("DEL"), &check_conf).ok();
    assert!(weps(&db).is_empty());
    assert!(node.cali_links().is_empty());
    assert_eq!(ipam_problems(&db, &[]), Vec::<String>::new());
    ips
}

#[test]
fn dual_stack_add_gives_both_families_in_one_result() {
    add_families(true, true, "ctr-dual");
}

#[test]
fn ipv6_only_add() {
    add_families(false, true, "ctr-v6only");
}
