//! One conformance suite for every `Datastore` backend: in-memory, embedded
//! SQLite and etcd (a real `/usr/bin/etcd` per test). The `backend_suite!`
//! macro instantiates every check once per backend.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use datastore::embedded::EmbeddedStore;
use datastore::etcd::EtcdStore;
use datastore::memory::MemoryStore;
use datastore::testing::{EtcdServer, require_etcd};
use datastore::{Datastore, KeyValue, Revision, StoreError, WatchEvent, WatchStream, WriteOp};
use futures::StreamExt;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Embedded,
    Etcd,
}

/// A backend under test, with the knobs the checks need.
// One per test: the size of the etcd variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Harness {
    Memory(MemoryStore),
    Embedded {
        store: EmbeddedStore,
        _dir: tempfile::TempDir,
    },
    Etcd {
        store: EtcdStore,
        server: EtcdServer,
    },
}

impl Harness {
    /// `None` when the backend cannot run here (etcd missing, not in CI).
    async fn new(kind: Kind) -> Option<Harness> {
        Some(match kind {
            Kind::Memory => Harness::Memory(MemoryStore::new()),
            Kind::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let store = EmbeddedStore::open(dir.path().join("manx.db"))
                    .await
                    .unwrap();
                Harness::Embedded { store, _dir: dir }
            }
            Kind::Etcd => {
                if !require_etcd() {
                    return None;
                }
                let server = EtcdServer::start().await.unwrap();
                let store = EtcdStore::connect(server.config()).await.unwrap();
                Harness::Etcd { store, server }
            }
        })
    }

    fn store(&self) -> Arc<dyn Datastore> {
        match self {
            Harness::Memory(s) => Arc::new(s.clone()),
            Harness::Embedded { store, .. } => Arc::new(store.clone()),
            Harness::Etcd { store, .. } => Arc::new(store.clone()),
        }
    }

    async fn compact(&self, revision: Revision) {
        match self {
            Harness::Memory(s) => s.compact(revision),
            Harness::Embedded { store, .. } => store.compact(revision).await.unwrap(),
            Harness::Etcd { store, .. } => store.compact(revision).await.unwrap(),
        }
    }

    /// Break the connection under running watches. etcd: restart the
    /// server process (same data dir and ports). Embedded: hand back a
    /// second, independent handle on the file (as another process would
    /// have), so watchers on the first see its writes only by polling.
    /// Memory: nothing to break. Returns the store to write with next.
    async fn disrupt(&mut self) -> Arc<dyn Datastore> {
        match self {
            Harness::Memory(s) => Arc::new(s.clone()),
            Harness::Embedded { store, .. } => {
                Arc::new(EmbeddedStore::open(store.path()).await.unwrap())
            }
            Harness::Etcd { store, server } => {
                server.kill();
                tokio::time::sleep(Duration::from_millis(200)).await;
                server.restart().await.unwrap();
                Arc::new(store.clone())
            }
        }
    }
}

fn num(kv: &KeyValue) -> u64 {
    std::str::from_utf8(&kv.value).unwrap().parse().unwrap()
}

/// Retry `op` while the store reports a transient error (a restarting
/// server), for up to a minute.
async fn retry<T, F, Fut>(mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match op().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Next event, failing the test after 30 s of silence.
async fn next_event(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("watch: no event within 30 s")
        .expect("watch stream ended")
        .expect("watch error")
}

/// One CAS increment: read, add one, compare-and-swap; retried on conflict.
/// Returns the winning revision and the value written.
async fn increment(store: &dyn Datastore, key: &str) -> (Revision, u64) {
    loop {
        let kv = store.get(key).await.unwrap().unwrap();
        let next = num(&kv) + 1;
        match store
            .update(key, next.to_string().into_bytes(), kv.mod_revision)
            .await
        {
            Ok(rev) => return (rev, next),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => panic!("increment {key}: {e}"),
        }
    }
}

/// 16 writers CAS-increment one key: each revision has one winner, every
/// value is written exactly once, and the final value counts every success.
async fn concurrent_cas(h: Harness, per_writer: u64) {
    const WRITERS: u64 = 16;
    let store = h.store();
    store.create("/cas/counter", b"0".to_vec()).await.unwrap();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                for _ in 0..per_writer {
                    won.push(increment(store.as_ref(), "/cas/counter").await);
                }
                won
            })
        })
        .collect();
    let mut revisions = HashSet::new();
    let mut values = HashSet::new();
    for t in tasks {
        for (rev, value) in t.await.unwrap() {
            assert!(revisions.insert(rev), "revision {rev} won twice");
            assert!(values.insert(value), "value {value} written twice");
        }
    }
    let total = WRITERS * per_writer;
    let kv = store.get("/cas/counter").await.unwrap().unwrap();
    assert_eq!(num(&kv), total);
    assert_eq!(values, (1..=total).collect::<HashSet<_>>());
    assert_eq!(kv.mod_revision, *revisions.iter().max().unwrap());
}

/// A watch delivers every write, in order, once, across a forced
/// reconnect.
async fn watch_survives_reconnect(mut h: Harness) {
    const N: usize = 40;
    let store = h.store();
    store.create("/other", b"x".to_vec()).await.unwrap();
    let start = store.revision().await.unwrap();
    let mut w = store.watch("/w/", start).await.unwrap();
    let mut written = Vec::new();
    for i in 0..N / 2 {
        written.push(
            store
                .create(&format!("/w/{i}"), vec![i as u8])
                .await
                .unwrap(),
        );
    }
    // Read part of the stream before the disruption, the rest after.
    let mut seen = Vec::new();
    for _ in 0..N / 4 {
        seen.push(next_event(&mut w).await);
    }
    let writer = h.disrupt().await;
    for i in N / 2..N {
        let key = format!("/w/{i}");
        // A retried create may hit its own first attempt: take that as done.
        let rev = match retry(|| writer.create(&key, vec![i as u8])).await {
            Ok(rev) => rev,
            Err(StoreError::AlreadyExists { .. }) => {
                writer.get(&key).await.unwrap().unwrap().mod_revision
            }
            Err(e) => panic!("create {key}: {e}"),
        };
        written.push(rev);
        if i % 5 == 0 {
            writer.create(&format!("/x/{i}"), vec![]).await.ok();
        }
    }
    while seen.len() < N {
        seen.push(next_event(&mut w).await);
    }
    let revs: Vec<Revision> = seen.iter().map(WatchEvent::revision).collect();
    assert_eq!(revs, written, "watch must see every write once, in order");
    for (i, ev) in seen.iter().enumerate() {
        match ev {
            WatchEvent::Put(kv) => {
                assert_eq!(kv.key, format!("/w/{i}"));
                assert_eq!(kv.value, vec![i as u8]);
                assert_eq!(kv.create_revision, kv.mod_revision);
            }
            other => panic!("expected a put, got {other:?}"),
        }
    }
}

/// A listing taken while writes go on equals the replay of the history up
/// to the listing's revision.
async fn list_consistent_at_revision(h: Harness) {
    let store = h.store();
    let base = store.revision().await.unwrap();
    let mut w = store.watch("/l/", base).await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..60u32 {
                let key = format!("/l/{}", i % 7);
                match store.get(&key).await.unwrap() {
                    None => {
                        store.create(&key, i.to_be_bytes().to_vec()).await.unwrap();
                    }
                    Some(kv) if i % 3 == 0 => {
                        store.delete(&key, Some(kv.mod_revision)).await.unwrap();
                    }
                    Some(kv) => {
                        store
                            .update(&key, i.to_be_bytes().to_vec(), kv.mod_revision)
                            .await
                            .unwrap();
                    }
                }
            }
        })
    };
    let mut listings = Vec::new();
    while !writer.is_finished() {
        listings.push(store.list("/l/").await.unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    listings.push(store.list("/l/").await.unwrap());
    let end = store.revision().await.unwrap();
    let mut history = Vec::new();
    while history.last().map_or(base, WatchEvent::revision) < end {
        history.push(next_event(&mut w).await);
    }
    for listing in &listings {
        let mut state: BTreeMap<String, KeyValue> = BTreeMap::new();
        for ev in history
            .iter()
            .take_while(|e| e.revision() <= listing.revision)
        {
            match ev {
                WatchEvent::Put(kv) => {
                    state.insert(kv.key.clone(), kv.clone());
                }
                WatchEvent::Delete { key, .. } => {
                    state.remove(key);
                }
                WatchEvent::Resync(_) => panic!("unexpected resync"),
            }
        }
        let replayed: Vec<KeyValue> = state.into_values().collect();
        assert_eq!(
            listing.items, replayed,
            "listing at revision {} differs from the history",
            listing.revision
        );
    }
}

/// create twice, stale update, stale delete, missing keys.
async fn errors_and_guards(h: Harness) {
    let store = h.store();
    assert!(store.get("/g/a").await.unwrap().is_none());
    let r1 = store.create("/g/a", b"1".to_vec()).await.unwrap();
    assert!(matches!(
        store.create("/g/a", b"2".to_vec()).await,
        Err(StoreError::AlreadyExists { key }) if key == "/g/a"
    ));
    let r2 = store.update("/g/a", b"2".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    match store.update("/g/a", b"3".to_vec(), r1).await {
        Err(StoreError::Conflict {
            key,
            expected,
            found,
        }) => assert_eq!((key.as_str(), expected, found), ("/g/a", r1, r2)),
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    match store.delete("/g/a", Some(r1)).await {
        Err(StoreError::Conflict {
            expected, found, ..
        }) => assert_eq!((expected, found), (r1, r2)),
        other => panic!("stale delete: expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("/g/a").await.unwrap().unwrap().value, b"2");
    let r3 = store.delete("/g/a", Some(r2)).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(store.revision().await.unwrap(), r3);
    assert!(matches!(
        store.delete("/g/a", None).await,
        Err(StoreError::NotFound { .. })
    ));
    // An update at revision 0 must not create a missing key.
    assert!(matches!(
        store.update("/g/a", b"x".to_vec(), 0).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.get("/g/a").await.unwrap().is_none());
    let r4 = store.create("/g/a", b"new".to_vec()).await.unwrap();
    let kv = store.get("/g/a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r4, r4));
    // Unconditional delete.
    store.create("/g/b", vec![]).await.unwrap();
    store.delete("/g/b", None).await.unwrap();
    let listing = store.list("/g/").await.unwrap();
    assert_eq!(listing.items, vec![kv]);
    assert_eq!(listing.revision, store.revision().await.unwrap());
}

/// Multi-key transactions: all or nothing, the first failing op's error,
/// duplicate keys refused, watchers see every op.
async fn txn_all_or_nothing(h: Harness) {
    let store = h.store();
    let start = store.revision().await.unwrap();
    let mut w = store.watch("/t/", start).await.unwrap();
    let ra = store.create("/t/a", b"a1".to_vec()).await.unwrap();
    let rb = store.create("/t/b", b"b1".to_vec()).await.unwrap();
    let revs = store
        .txn(vec![
            WriteOp::Update {
                key: "/t/a".into(),
                value: b"a2".to_vec(),
                expected: ra,
            },
            WriteOp::Delete {
                key: "/t/b".into(),
                expected: Some(rb),
            },
            WriteOp::Create {
                key: "/t/c".into(),
                value: b"c1".to_vec(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(revs.len(), 3);
    assert!(revs.iter().all(|r| *r > rb), "{revs:?} after {rb}");
    assert!(revs.windows(2).all(|w| w[0] <= w[1]), "{revs:?}");
    assert_eq!(store.revision().await.unwrap(), revs[2]);
    let a = store.get("/t/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.mod_revision), (&b"a2"[..], revs[0]));
    assert!(store.get("/t/b").await.unwrap().is_none());
    assert_eq!(store.get("/t/c").await.unwrap().unwrap().value, b"c1");

    // One stale op: nothing at all is written, and its error comes back.
    let before = store.revision().await.unwrap();
    let stale = store
        .txn(vec![
            WriteOp::Create {
                key: "/t/d".into(),
                value: b"d".to_vec(),
            },
            WriteOp::Update {
                key: "/t/a".into(),
                value: b"a3".to_vec(),
                expected: ra,
            },
            WriteOp::Update {
                key: "/t/c".into(),
                value: b"c2".to_vec(),
                expected: revs[2],
            },
        ])
        .await;
    match stale {
        Err(StoreError::Conflict {
            key,
            expected,
            found,
        }) => assert_eq!((key.as_str(), expected, found), ("/t/a", ra, revs[0])),
        other => panic!("stale txn: expected Conflict on /t/a, got {other:?}"),
    }
    assert!(store.get("/t/d").await.unwrap().is_none(), "partial txn");
    assert_eq!(store.get("/t/c").await.unwrap().unwrap().value, b"c1");
    assert_eq!(store.revision().await.unwrap(), before);
    for (op, want) in [
        (
            WriteOp::Create {
                key: "/t/a".into(),
                value: vec![],
            },
            "AlreadyExists",
        ),
        (
            WriteOp::Delete {
                key: "/t/b".into(),
                expected: None,
            },
            "NotFound",
        ),
    ] {
        let got = store
            .txn(vec![
                WriteOp::Create {
                    key: "/t/e".into(),
                    value: vec![],
                },
                op,
            ])
            .await;
        let ok = matches!(
            (&got, want),
            (Err(StoreError::AlreadyExists { key }), "AlreadyExists") if key == "/t/a"
        ) || matches!(
            (&got, want),
            (Err(StoreError::NotFound { key }), "NotFound") if key == "/t/b"
        );
        assert!(ok, "expected {want}, got {got:?}");
        assert!(store.get("/t/e").await.unwrap().is_none(), "partial txn");
    }
    let dup = store
        .txn(vec![
            WriteOp::Create {
                key: "/t/f".into(),
                value: vec![],
            },
            WriteOp::Delete {
                key: "/t/f".into(),
                expected: None,
            },
        ])
        .await;
    assert!(
        matches!(&dup, Err(StoreError::Other(m)) if m.contains("/t/f")),
        "{dup:?}"
    );
    assert!(store.txn(vec![]).await.is_err());
    // The watcher saw the two creates and the three ops, in order.
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(match next_event(&mut w).await {
            WatchEvent::Put(kv) => format!("put {}", kv.key),
            WatchEvent::Delete { key, .. } => format!("del {key}"),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(
        seen,
        ["put /t/a", "put /t/b", "put /t/a", "del /t/b", "put /t/c"]
    );
}

/// A listing larger than gRPC's default 4 MiB message limit (thousands of
/// full IPAM blocks reach it) comes back whole, and so do its watch events.
async fn large_listing(h: Harness) {
    let store = h.store();
    let start = store.revision().await.unwrap();
    let mut w = store.watch("/big/", start).await.unwrap();
    let value = vec![b'x'; 128 << 10];
    for i in 0..48 {
        store
            .create(&format!("/big/{i:02}"), value.clone())
            .await
            .unwrap();
    }
    let listing = store.list("/big/").await.unwrap();
    assert_eq!(listing.items.len(), 48);
    assert!(listing.items.iter().all(|kv| kv.value == value));
    for _ in 0..48 {
        assert!(
            matches!(next_event(&mut w).await, WatchEvent::Put(kv) if kv.value.len() == value.len())
        );
    }
}

/// A watch from a compacted revision gets one Resync with the whole state,
/// then the live events.
async fn watch_after_compaction_resyncs(h: Harness) {
    let store = h.store();
    let base = store.revision().await.unwrap();
    for i in 0..10 {
        store.create(&format!("/c/{i}"), vec![i]).await.unwrap();
    }
    store.delete("/c/0", None).await.unwrap();
    let now = store.revision().await.unwrap();
    h.compact(now).await;
    let mut w = store.watch("/c/", base + 1).await.unwrap();
    match next_event(&mut w).await {
        WatchEvent::Resync(listing) => {
            assert_eq!(listing.revision, now);
            let keys: Vec<_> = listing.items.iter().map(|kv| kv.key.clone()).collect();
            assert_eq!(keys, (1..10).map(|i| format!("/c/{i}")).collect::<Vec<_>>());
        }
        other => panic!("expected Resync, got {other:?}"),
    }
    let rev = store.create("/c/new", vec![]).await.unwrap();
    match next_event(&mut w).await {
        WatchEvent::Put(kv) => assert_eq!((kv.key.as_str(), kv.mod_revision), ("/c/new", rev)),
        other => panic!("expected the new put, got {other:?}"),
    }
    // Watching from the compaction point itself needs no resync.
    let mut w = store.watch("/c/", now).await.unwrap();
    match next_event(&mut w).await {
        WatchEvent::Put(kv) => assert_eq!(kv.mod_revision, rev),
        other => panic!("expected the put at {rev}, got {other:?}"),
    }
}

macro_rules! backend_suite {
    ($module:ident, $kind:expr, $cas_per_writer:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_cas_one_winner_per_revision() {
                if let Some(h) = Harness::new($kind).await {
                    concurrent_cas(h, $cas_per_writer).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_sees_every_event_across_reconnect() {
                if let Some(h) = Harness::new($kind).await {
                    watch_survives_reconnect(h).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_is_consistent_at_its_revision() {
                if let Some(h) = Harness::new($kind).await {
                    list_consistent_at_revision(h).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_update_delete_guards() {
                if let Some(h) = Harness::new($kind).await {
                    errors_and_guards(h).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn listing_beyond_grpc_default_limit() {
                if let Some(h) = Harness::new($kind).await {
                    large_listing(h).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn txn_is_all_or_nothing() {
                if let Some(h) = Harness::new($kind).await {
                    txn_all_or_nothing(h).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_after_compaction_resyncs() {
                if let Some(h) = Harness::new($kind).await {
                    super::watch_after_compaction_resyncs(h).await;
                }
            }
        }
    };
}

backend_suite!(memory, Kind::Memory, 50);
backend_suite!(embedded, Kind::Embedded, 8);
backend_suite!(etcd, Kind::Etcd, 8);
