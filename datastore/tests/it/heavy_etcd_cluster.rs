//! A 3-member etcd cluster on loopback loses its leader in the middle of a
//! write loop: writes go on against the other members, no acknowledged write
//! is lost, and a watch running throughout sees every acknowledged write
//! once, in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use datastore::etcd::{EtcdConfig, EtcdStore};
use datastore::testing::{EtcdCluster, require_etcd};
use datastore::{Datastore, Revision, StoreError, WatchEvent};
use futures::StreamExt;
use testkit::eventually_async;

const WRITERS: usize = 4;
const PER_WRITER: usize = 60;

/// Create `key` = `value`, retrying transient errors for up to a minute.
/// An `AlreadyExists` after a retry means an earlier attempt landed (its
/// reply was lost): that is an acknowledgement too, if the value is ours.
async fn acked_create(store: &EtcdStore, key: &str, value: &[u8]) -> Revision {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut retried = false;
    loop {
        match store.create(key, value.to_vec()).await {
            Ok(rev) => return rev,
            Err(StoreError::AlreadyExists { .. }) if retried => {
                let kv = loop {
                    match store.get(key).await {
                        Ok(kv) => break kv.expect("AlreadyExists, yet the key is missing"),
                        Err(e) if e.is_transient() => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("get {key}: {e}"),
                    }
                };
                assert_eq!(kv.value, value, "{key} holds someone else's value");
                return kv.mod_revision;
            }
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                retried = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("create {key}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_etcd_cluster_survives_leader_kill() {
    if !require_etcd() {
        return;
    }
    let mut cluster = EtcdCluster::start(3).await.unwrap();
    // A cluster that has just elected its leader can still answer the first
    // requests with a transient error (seen once on a loaded machine): retry
    // those, as every Manx client does, and fail on anything else.
    let (store, mut watch) = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = async {
                let store = EtcdStore::connect(cluster.config()).await?;
                let start = store.revision().await?;
                let watch = store.watch("/acked/", start).await?;
                Ok::<_, StoreError>((store, watch))
            };
            match attempt.await {
                Ok(ready) => break ready,
                Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                    eprintln!("setting up against the new cluster: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("setting up against the new cluster: {e}"),
            }
        }
    };

    let progress = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..PER_WRITER {
                    let key = format!("/acked/{w}/{i:03}");
                    let value = format!("{w}:{i}").into_bytes();
                    let rev = acked_create(&store, &key, &value).await;
                    acked.push((key, value, rev));
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                acked
            })
        })
        .collect();

    // Kill the leader once a third of the writes are in.
    while progress.load(Ordering::Relaxed) < WRITERS * PER_WRITER / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = cluster.leader().await.expect("cluster has a leader");
    cluster.kill(leader);
    let killed_at = progress.load(Ordering::Relaxed);

    let mut acked = BTreeMap::new();
    for w in writers {
        for (key, value, rev) in w.await.unwrap() {
            acked.insert(key, (value, rev));
        }
    }
    assert!(
        killed_at < WRITERS * PER_WRITER,
        "the leader died only after the writes ended"
    );
    assert_eq!(
        acked.len(),
        WRITERS * PER_WRITER,
        "some writes never got through"
    );

    // Every acknowledged write is readable...
    let listing = store.list("/acked/").await.unwrap();
    let stored: BTreeMap<_, _> = listing
        .items
        .iter()
        .map(|kv| (kv.key.clone(), (kv.value.clone(), kv.mod_revision)))
        .collect();
    assert_eq!(stored, acked);

    // ...and the watch saw each once, in revision order.
    let mut revs: Vec<Revision> = acked.values().map(|(_, rev)| *rev).collect();
    revs.sort();
    let mut seen = Vec::new();
    while seen.len() < revs.len() {
        let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("watch: no event within 30 s")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Put(kv) => seen.push(kv.mod_revision),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, revs);

    // The old leader rejoins and catches up.
    cluster.restart(leader).await.unwrap();
    let only_old_leader = EtcdStore::connect(EtcdConfig {
        endpoints: vec![cluster.endpoints()[leader].clone()],
        ..cluster.config()
    })
    .await
    .unwrap();
    let caught_up = eventually_async(Duration::from_secs(30), || async {
        only_old_leader
            .list("/acked/")
            .await
            .is_ok_and(|l| l.items.len() == acked.len())
    })
    .await;
    assert!(
        caught_up,
        "restarted member did not catch up: {:?}",
        only_old_leader.list("/acked/").await
    );
}
