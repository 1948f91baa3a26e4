//! CNI GC (spec 1.1, issue 16) through the plugin binary, with manx-ipam
//! on an embedded store: two attachments of `k8s-pod-network` on node1,
//! `cni.dev/valid-attachments` lists one; the other's veth, addresses and
//! endpoint go, the listed one is untouched, and so are an attachment of
//! another network on node1 and one of the same network on node2 (GC is
//! per runtime, so per node: manx-ipam's handles are cluster-wide). A GC
//! without the list removes nothing and fails with code 7 naming it.

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

async fn store(db: &Path) -> Arc<dyn Datastore> {
    Arc::new(EmbeddedStore::open(db).await.unwrap())
}

/// Container ids of the endpoints in the store.
fn endpoint_containers(db: &Path) -> Vec<String> {
    let mut v: Vec<String> = rt()
        .block_on(async {
            let client = Client::new(store(db).await);
            client.list::<WorkloadEndpoint>().await.unwrap().0
        })
        .into_iter()
        .filter_map(|w| w.spec.container_id)
        .collect();
    v.sort();
    v
}

/// The addresses IPAM handle `handle` holds.
fn held(db: &Path, handle: &str) -> Vec<String> {
    rt().block_on(async {
        let s = store(db).await;
        let topo = ipam::resources::DatastoreTopology::new(s.clone());
        let ipam = ipam::Ipam::new(s, Arc::new(topo));
        ipam.ips_by_handle(handle).await.unwrap()
    })
    .into_iter()
    .map(|ip| ip.to_string())
    .collect()
}

fn with_ipam_path(mut c: Call) -> Call {
    c.path = format!(
        "{}:{DEBIAN_CNI}",
        manx_ipam_bin().parent().unwrap().display()
    );
    c
}

#[test]
fn gc_removes_only_unlisted_attachments_of_its_network_on_its_node() {
    if !prereqs().ok() {
        return;
    }
    let _ = manx_ipam_bin();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("manx.db");
    rt().block_on(async {
        Client::new(store(&db).await)
            .create(&IPPool::new("pool1", "10.20.0.0/16".parse().unwrap()))
            .await
            .unwrap();
    });
    let node1 = node_netns();
    let node2 = node_netns();
    let (live, stale, other, far) = (netns(), netns(), netns(), netns());
    let conf = manx_ipam_conf("1.1.0", &db);
    let mut other_conf = conf.clone();
    other_conf["name"] = "other-net".into();
    let mut node2_conf = conf.clone();
    node2_conf["nodename"] = "node2".into();
    let add = |node: &Netns, cid: &str, pod: &Netns, name: &str, conf: &serde_json::Value| {
        let call = with_ipam_path(Call::new("ADD", cid, pod, name));
        result_ip(&manx(node, &call, &conf.to_string()).ok())
    };
    let live_ip = add(&node1, "ctr-live", &live, "live", &conf);
    let stale_ip = add(&node1, "ctr-stale", &stale, "stale", &conf);
    add(&node1, "ctr-other", &other, "other", &other_conf);
    add(&node2, "ctr-far", &far, "far", &node2_conf);
    assert_eq!(node1.cali_links().len(), 3);
    let all = ["ctr-far", "ctr-live", "ctr-other", "ctr-stale"];
    assert_eq!(endpoint_containers(&db), all);

    let mut gc = with_ipam_path(Call::new("GC", "", &live, "x"));
    gc.container_id.clear();
    gc.netns.clear();
    gc.ifname.clear();
    gc.args.clear();

    // No list: nothing removed, code 7 naming the field.
    let out = manx(&node1, &gc, &conf.to_string());
    out.err(7, "cni.dev/valid-attachments");
    assert_eq!(endpoint_containers(&db), all);
    assert_eq!(node1.cali_links().len(), 3);
    assert_eq!(
        held(&db, "k8s-pod-network.ctr-stale"),
        vec![stale_ip.clone()]
    );

    // ctr-live listed: only ctr-stale goes.
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": "ctr-live", "ifname": "eth0"}]);
    manx(&node1, &gc, &gc_conf.to_string()).ok();
    assert_eq!(
        endpoint_containers(&db),
        ["ctr-far", "ctr-live", "ctr-other"]
    );
    assert!(held(&db, "k8s-pod-network.ctr-stale").is_empty());
    assert_eq!(held(&db, "k8s-pod-network.ctr-live"), vec![live_ip.clone()]);
    assert_eq!(held(&db, "other-net.ctr-other").len(), 1);
    assert_eq!(held(&db, "k8s-pod-network.ctr-far").len(), 1, "node2's pod");
    assert_eq!(node1.cali_links().len(), 2, "{:?}", node1.links());
    assert!(!node1.routes().contains(&format!("{stale_ip} ")));
    assert!(node1.routes().contains(&format!("{live_ip} ")));
    assert_eq!(live.addrs("eth0"), vec![format!("{live_ip}/32")]);
    assert_eq!(node2.cali_links().len(), 1);

    // Idempotent; and an empty list on node2 removes node2's pod only.
    manx(&node1, &gc, &gc_conf.to_string()).ok();
    let mut gc2 = node2_conf.clone();
    gc2["cni.dev/valid-attachments"] = serde_json::json!([]);
    manx(&node2, &gc, &gc2.to_string()).ok();
    assert_eq!(endpoint_containers(&db), ["ctr-live", "ctr-other"]);
    assert!(held(&db, "k8s-pod-network.ctr-far").is_empty());
    assert!(node2.cali_links().is_empty());
    assert_eq!(held(&db, "k8s-pod-network.ctr-live"), vec![live_ip]);
}
