//! Typed client over the in-memory store: create/get/list/update (CAS)/
//! apply/delete/watch, validation before writes, key layout, error messages.

use std::sync::Arc;
use std::time::Duration;

use datastore::client::{Client, ClientError, ResourceEvent, kind_prefix, resource_key};
use datastore::memory::MemoryStore;
use datastore::model::{
    BGPPeer, BGPPeerSpec, EncapMode, IPPool, KindId, Node, Resource, WorkloadEndpoint,
    parse_manifests,
};
use datastore::{Datastore, Revision};
use futures::StreamExt;

fn setup() -> (Client, MemoryStore) {
    let store = MemoryStore::new();
    (Client::new(Arc::new(store.clone())), store)
}

fn pool(name: &str, cidr: &str) -> IPPool {
    IPPool::new(name, cidr.parse().unwrap())
}

fn rv(obj_rv: &Option<String>) -> Revision {
    obj_rv.as_deref().unwrap().parse().unwrap()
}

#[tokio::test]
async fn create_fills_metadata_and_stores_under_the_documented_key() {
    let (client, store) = setup();
    let created = client.create(&pool("pool1", "10.0.0.0/16")).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    assert_eq!(uid.len(), 36);
    let ts = created.metadata.creation_timestamp.clone().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");

    let kv = store
        .get("/manx/v3/projectcalico.org/ippools/pool1")
        .await
        .unwrap()
        .expect("stored under the documented key");
    assert_eq!(rv(&created.metadata.resource_version), kv.mod_revision);
    // resourceVersion is not stored; the value is the resource as JSON.
    let stored: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(stored["kind"], "IPPool");
    assert!(stored["metadata"].get("resourceVersion").is_none());

    let got = client.get::<IPPool>("pool1").await.unwrap().unwrap();
    assert_eq!(got, created);
    assert_eq!(client.get::<IPPool>("nope").await.unwrap(), None);
}

#[tokio::test]
async fn create_twice_is_already_exists() {
    let (client, _) = setup();
    client.create(&pool("pool1", "10.0.0.0/16")).await.unwrap();
    let e = client
        .create(&pool("pool1", "10.0.0.0/16"))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::AlreadyExists { .. }));
    assert_eq!(
        e.to_string(),
        "ippool pool1 already exists: use apply (or replace) to change it"
    );
}

#[tokio::test]
async fn create_validates_and_checks_pool_overlap() {
    let (client, store) = setup();
    let mut bad = pool("bad", "10.0.0.1/16");
    bad.spec.block_size = Some(40);
    let e = client.create(&bad).await.unwrap_err();
    assert!(matches!(e, ClientError::Invalid(_)));
    let msg = e.to_string();
    assert!(msg.contains("has host bits set"), "{msg}");
    assert!(msg.contains("spec.blockSize 40 is out of range"), "{msg}");

    client.create(&pool("a", "10.0.0.0/16")).await.unwrap();
    let e = client.create(&pool("b", "10.0.64.0/18")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "ippool b: spec.cidr 10.0.64.0/18 overlaps ippool a (10.0.0.0/16): pools must not overlap; pick a disjoint CIDR"
    );
    // Nothing was written for the rejected objects.
    let listing = store.list(&kind_prefix(KindId::IPPool)).await.unwrap();
    assert_eq!(listing.items.len(), 1);
}

#[tokio::test]
async fn update_is_cas_on_resource_version() {
    let (client, _) = setup();
    let created = client.create(&pool("pool1", "10.0.0.0/16")).await.unwrap();

    // Without resourceVersion: told to get it first.
    let mut no_rv = created.clone();
    no_rv.metadata.resource_version = None;
    let e = client.update(&no_rv).await.unwrap_err();
    assert!(matches!(e, ClientError::MissingResourceVersion { .. }));
    assert!(e.to_string().contains("get it first"), "{e}");

    let mut edit = created.clone();
    edit.spec.nat_outgoing = Some(true);
    let updated = client.update(&edit).await.unwrap();
    assert!(rv(&updated.metadata.resource_version) > rv(&created.metadata.resource_version));
    // uid and creationTimestamp are kept.
    assert_eq!(updated.metadata.uid, created.metadata.uid);
    assert_eq!(
        updated.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );

    // A stale writer loses.
    let mut stale = created.clone();
    stale.spec.disabled = Some(true);
    let e = client.update(&stale).await.unwrap_err();
    match &e {
        ClientError::Conflict {
            expected, found, ..
        } => {
            assert_eq!(*expected, rv(&created.metadata.resource_version));
            assert_eq!(*found, rv(&updated.metadata.resource_version));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().starts_with("ippool pool1 was modified"),
        "{e}"
    );
    let now = client.get::<IPPool>("pool1").await.unwrap().unwrap();
    assert_eq!(now.spec.nat_outgoing, Some(true));
    assert_eq!(now.spec.disabled, None);

    let mut garbage = updated.clone();
    garbage.metadata.resource_version = Some("abc".into());
    assert!(matches!(
        client.update(&garbage).await.unwrap_err(),
        ClientError::BadResourceVersion { .. }
    ));

    let mut missing = pool("ghost", "10.9.0.0/16");
    missing.metadata.resource_version = Some("1".into());
    let e = client.update(&missing).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "ippool ghost does not exist: create it first"
    );
}

#[tokio::test]
async fn pool_cidr_and_block_size_are_immutable() {
    let (client, _) = setup();
    let created = client.create(&pool("pool1", "10.0.0.0/16")).await.unwrap();
    let mut moved = created.clone();
    moved.spec.cidr = "10.1.0.0/16".parse().unwrap();
    let e = client.update(&moved).await.unwrap_err().to_string();
    assert!(
        e.contains("spec.cidr cannot change from 10.0.0.0/16 to 10.1.0.0/16"),
        "{e}"
    );
    let mut resized = created.clone();
    resized.spec.block_size = Some(28);
    let e = client.apply(&resized).await.unwrap_err().to_string();
    assert!(
        e.contains("spec.blockSize cannot change from 26 to 28"),
        "{e}"
    );
    // Writing the default explicitly is not a change.
    let mut explicit = created.clone();
    explicit.spec.block_size = Some(26);
    explicit.spec.ipip_mode = Some(EncapMode::Always);
    client.update(&explicit).await.unwrap();
}

#[tokio::test]
async fn apply_creates_then_overwrites_ignoring_resource_version() {
    let (client, _) = setup();
    let mut p = pool("pool1", "10.0.0.0/16");
    p.metadata.resource_version = Some("999".into());
    let first = client.apply(&p).await.unwrap();
    p.spec.nat_outgoing = Some(true);
    let second = client.apply(&p).await.unwrap();
    assert_eq!(second.metadata.uid, first.metadata.uid);
    assert_eq!(second.spec.nat_outgoing, Some(true));
    let (all, _) = client.list::<IPPool>().await.unwrap();
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn concurrent_applies_all_land() {
    let (client, _) = setup();
    client.create(&Node::new("n1")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = Node::new("n1");
            n.metadata.labels.insert("writer".into(), i.to_string());
            client.apply(&n).await.map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let n = client.get::<Node>("n1").await.unwrap().unwrap();
    assert!(n.metadata.labels.contains_key("writer"));
}

#[tokio::test]
async fn delete_returns_the_object_and_honours_revision() {
    let (client, _) = setup();
    let created = client.create(&pool("pool1", "10.0.0.0/16")).await.unwrap();
    let e = client
        .delete::<IPPool>("pool1", Some(rv(&created.metadata.resource_version) + 100))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Conflict { .. }), "{e}");
    let deleted = client
        .delete::<IPPool>("pool1", Some(rv(&created.metadata.resource_version)))
        .await
        .unwrap();
    assert_eq!(deleted, created);
    let e = client.delete::<IPPool>("pool1", None).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "ippool pool1 does not exist: create it first"
    );

    client.create(&pool("pool2", "10.1.0.0/16")).await.unwrap();
    client.delete::<IPPool>("pool2", None).await.unwrap();
    assert_eq!(client.get::<IPPool>("pool2").await.unwrap(), None);
}

#[tokio::test]
async fn workload_endpoints_are_namespaced() {
    let (client, store) = setup();
    let mut w = WorkloadEndpoint::new("prod", "n1-k8s-web-eth0");
    w.spec.ip_networks = vec!["10.65.0.5/32".parse().unwrap()];
    client.create(&w).await.unwrap();
    let mut w2 = WorkloadEndpoint::new("dev", "n1-k8s-web-eth0");
    w2.spec.node = Some("n1".into());
    client.create(&w2).await.unwrap();

    assert!(
        store
            .get("/manx/v3/projectcalico.org/workloadendpoints/prod/n1-k8s-web-eth0")
            .await
            .unwrap()
            .is_some()
    );
    let got = client
        .get_namespaced::<WorkloadEndpoint>("prod", "n1-k8s-web-eth0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.spec.ip_networks, w.spec.ip_networks);
    let (all, _) = client.list::<WorkloadEndpoint>().await.unwrap();
    assert_eq!(all.len(), 2);
    let (dev, _) = client
        .list_namespaced::<WorkloadEndpoint>("dev")
        .await
        .unwrap();
    assert_eq!(dev.len(), 1);
    assert_eq!(dev[0].spec.node.as_deref(), Some("n1"));

    let mut no_ns = w.clone();
    no_ns.metadata.namespace = None;
    let e = client.create(&no_ns).await.unwrap_err();
    assert!(matches!(e, ClientError::MissingNamespace { .. }), "{e}");

    client
        .delete_namespaced::<WorkloadEndpoint>("dev", "n1-k8s-web-eth0", None)
        .await
        .unwrap();
    assert_eq!(client.list::<WorkloadEndpoint>().await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn bad_names_never_reach_the_store() {
    let (client, _) = setup();
    let e = client.get::<IPPool>("a/b").await.unwrap_err();
    assert!(matches!(e, ClientError::BadName { .. }), "{e}");
}

#[tokio::test]
async fn corrupt_values_name_the_key() {
    let (client, store) = setup();
    let key = resource_key(KindId::Node, None, "broken");
    store.create(&key, b"{not json".to_vec()).await.unwrap();
    let e = client.get::<Node>("broken").await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("cannot decode /manx/v3/projectcalico.org/nodes/broken:"),
        "{msg}"
    );
    assert!(client.list::<Node>().await.is_err());
}

async fn next<K>(w: &mut datastore::client::ResourceWatch<K>) -> ResourceEvent<K> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("watch event within 10s")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test]
async fn watch_streams_typed_events_from_a_listing() {
    let (client, store) = setup();
    client.create(&pool("before", "10.0.0.0/16")).await.unwrap();
    let (items, rev) = client.list::<IPPool>().await.unwrap();
    assert_eq!(items.len(), 1);
    let mut w = client.watch::<IPPool>(rev).await.unwrap();

    // Writes of other kinds are not seen.
    client.create(&Node::new("n1")).await.unwrap();
    let created = client.create(&pool("after", "10.1.0.0/16")).await.unwrap();
    match next(&mut w).await {
        ResourceEvent::Put(p) => assert_eq!(p, created),
        other => panic!("{other:?}"),
    }
    client.delete::<IPPool>("before", None).await.unwrap();
    match next(&mut w).await {
        ResourceEvent::Deleted {
            namespace, name, ..
        } => {
            assert_eq!(namespace, None);
            assert_eq!(name, "before");
        }
        other => panic!("{other:?}"),
    }

    // After compaction past a watcher's start, it gets the full state.
    let cur = store.revision().await.unwrap();
    store.compact(cur);
    let mut late = client.watch::<IPPool>(rev).await.unwrap();
    match next(&mut late).await {
        ResourceEvent::Resync { items, .. } => {
            let names: Vec<_> = items.iter().map(|p| p.metadata.name.clone()).collect();
            assert_eq!(names, ["after"]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn watch_namespaced_deletes_carry_the_namespace() {
    let (client, _) = setup();
    let rev = client.store().revision().await.unwrap();
    let mut w = client.watch::<WorkloadEndpoint>(rev).await.unwrap();
    client
        .create(&WorkloadEndpoint::new("prod", "w1"))
        .await
        .unwrap();
    assert!(matches!(next(&mut w).await, ResourceEvent::Put(_)));
    client
        .delete_namespaced::<WorkloadEndpoint>("prod", "w1", None)
        .await
        .unwrap();
    match next(&mut w).await {
        ResourceEvent::Deleted {
            namespace, name, ..
        } => {
            assert_eq!(namespace.as_deref(), Some("prod"));
            assert_eq!(name, "w1");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn untyped_resources_for_the_cli() {
    let (client, _) = setup();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/testdata/manifests/bgppeer-rr.yaml"
    ))
    .unwrap();
    let resources = parse_manifests(&text, "bgppeer-rr.yaml").unwrap();
    for r in &resources {
        client.apply_resource(r).await.unwrap();
    }
    let (peers, _) = client.list_resources(KindId::BGPPeer, None).await.unwrap();
    assert_eq!(peers.len(), 3);
    let got = client
        .get_resource(KindId::BGPPeer, None, "rack1-peers")
        .await
        .unwrap()
        .unwrap();
    let Resource::BGPPeer(p) = &got else {
        panic!("{got:?}")
    };
    assert_eq!(
        p.spec.next_hop_mode,
        Some(datastore::model::NextHopMode::SelfHop)
    );
    // Re-creating is refused; updating with the read version works.
    assert!(client.create_resource(&got).await.is_err());
    client.update_resource(&got).await.unwrap();
    let deleted = client
        .delete_resource(KindId::BGPPeer, None, "rack1-peers", None)
        .await
        .unwrap();
    assert_eq!(deleted.name(), "rack1-peers");
    assert!(
        client
            .get_resource(KindId::WorkloadEndpoint, None, "x")
            .await
            .is_err()
    );
    // Typed and untyped agree.
    let typed = client
        .get::<BGPPeer>("ipv6-peer-port")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        typed.spec.peer_addr(),
        BGPPeerSpec {
            peer_ip: Some("[2001:db8::1]:1179".into()),
            ..Default::default()
        }
        .peer_addr()
    );
}
