//! `Client::write_all`: a whole manifest written all or nothing, in
//! O(N log N), on the memory, embedded and etcd stores, with failures
//! injected half-way.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use datastore::client::{BulkError, BulkVerb, Client, ClientError, kind_prefix};
use datastore::embedded::EmbeddedStore;
use datastore::etcd::EtcdStore;
use datastore::memory::MemoryStore;
use datastore::model::{IPPool, KindId, Resource};
use datastore::store::{Listing, WatchStream, WriteOp};
use datastore::{Datastore, KeyValue, Revision, StoreError};

/// `n` disjoint /26 pools, 10.64.0.0 on.
fn pools(n: usize) -> Vec<Resource> {
    (0..n)
        .map(|i| {
            let base = (10u32 << 24) | (64 << 16);
            let net = std::net::Ipv4Addr::from(base + (i as u32) * 64);
            Resource::IPPool(IPPool::new(
                format!("pool-{i}"),
                format!("{net}/26").parse().unwrap(),
            ))
        })
        .collect()
}

async fn pool_count(store: &dyn Datastore) -> usize {
    store
        .list(&kind_prefix(KindId::IPPool))
        .await
        .unwrap()
        .items
        .len()
}

/// A store that caps transactions at `max_ops` and fails the `fail_at`-th
/// transaction (1-based) and every one after `fail_from` with Unavailable.
#[derive(Debug)]
struct Faulty {
    inner: MemoryStore,
    max_ops: usize,
    txns: AtomicUsize,
    fail_at: usize,
    fail_from: usize,
    /// Before the first txn, rewrite the key of its first op (another
    /// writer between the plan and the commit).
    race_once: std::sync::atomic::AtomicBool,
}

impl Faulty {
    fn new(max_ops: usize, fail_at: usize, fail_from: usize) -> Faulty {
        Faulty {
            inner: MemoryStore::new(),
            max_ops,
            txns: AtomicUsize::new(0),
            fail_at,
            fail_from,
            race_once: false.into(),
        }
    }
}

#[async_trait]
impl Datastore for Faulty {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.inner.list(prefix).await
    }
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.inner.create(key, value).await
    }
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.inner.delete(key, expected).await
    }
    async fn txn(&self, ops: Vec<WriteOp>) -> Result<Vec<Revision>, StoreError> {
        assert!(ops.len() <= self.max_ops, "txn of {} ops", ops.len());
        let n = self.txns.fetch_add(1, Ordering::SeqCst) + 1;
        if self.race_once.swap(false, Ordering::SeqCst)
            && let Some(kv) = self.inner.get(ops[0].key()).await?
        {
            self.inner
                .update(&kv.key, kv.value, kv.mod_revision)
                .await?;
        }
        if n == self.fail_at || n >= self.fail_from {
            return Err(StoreError::Unavailable(format!(
                "injected failure of txn {n}"
            )));
        }
        self.inner.txn(ops).await
    }
    fn max_txn_ops(&self) -> usize {
        self.max_ops
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
}

#[tokio::test]
async fn eight_thousand_pools_in_one_transaction() {
    for (name, store) in [
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn Datastore>),
        ("embedded", {
            let dir = tempfile::tempdir().unwrap();
            let s = EmbeddedStore::open(dir.path().join("manx.db"))
                .await
                .unwrap();
            std::mem::forget(dir);
            Arc::new(s)
        }),
    ] {
        let client = Client::new(store.clone());
        let items = pools(8000);
        let t = Instant::now();
        let out = client.write_all(BulkVerb::Apply, &items).await.unwrap();
        println!("{name}: 8000 pools applied in {:?}", t.elapsed());
        assert_eq!(out.written, 8000);
        assert_eq!(out.transactions, 1);
        assert_eq!(pool_count(&*store).await, 8000);
        // Applying the same file again updates every pool, still one txn.
        let again = client.write_all(BulkVerb::Apply, &items).await.unwrap();
        assert_eq!((again.written, again.transactions), (8000, 1));
        assert_eq!(pool_count(&*store).await, 8000);
    }
}

#[tokio::test]
async fn a_failure_half_way_writes_nothing() {
    // 8000 pools in chunks of 100: the 41st chunk fails, the 40 committed
    // before it are undone.
    let store = Arc::new(Faulty::new(100, 41, usize::MAX));
    let client = Client::new(store.clone());
    let err = client
        .write_all(BulkVerb::Apply, &pools(8000))
        .await
        .unwrap_err();
    assert!(matches!(err, BulkError::Failed(_)), "{err}");
    assert!(
        err.to_string().contains("injected failure of txn 41"),
        "{err}"
    );
    assert_eq!(pool_count(&*store).await, 0);

    // A single-transaction store failing its only commit: nothing either.
    let store = Arc::new(Faulty::new(usize::MAX, 1, usize::MAX));
    let client = Client::new(store.clone());
    let err = client
        .write_all(BulkVerb::Apply, &pools(500))
        .await
        .unwrap_err();
    assert!(matches!(err, BulkError::Failed(_)), "{err}");
    assert_eq!(pool_count(&*store).await, 0);
}

#[tokio::test]
async fn a_failed_undo_says_how_much_stayed() {
    // Chunk 3 fails and so does every txn after it, the undo included:
    // 200 of 500 stay, and the error says so.
    let store = Arc::new(Faulty::new(100, usize::MAX, 3));
    let client = Client::new(store.clone());
    let err = client
        .write_all(BulkVerb::Apply, &pools(500))
        .await
        .unwrap_err();
    match &err {
        BulkError::Partial { applied, total, .. } => assert_eq!((*applied, *total), (200, 500)),
        other => panic!("expected a partial write, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("200 of 500 object(s) written, the rest not"),
        "{msg}"
    );
    assert_eq!(pool_count(&*store).await, 200);
}

#[tokio::test]
async fn an_overlap_with_a_stored_pool_refuses_the_whole_set() {
    let store = Arc::new(MemoryStore::new());
    let client = Client::new(store.clone());
    client
        .create(&IPPool::new("stored", "10.64.100.0/24".parse().unwrap()))
        .await
        .unwrap();
    let err = client
        .write_all(BulkVerb::Apply, &pools(8000))
        .await
        .unwrap_err();
    let BulkError::Refused(errors) = &err else {
        panic!("expected a refusal, got {err}");
    };
    // 10.64.100.0/24 holds four of the /26s: pool-400 .. pool-403.
    assert_eq!(errors.len(), 4, "{errors:?}");
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    for i in 400..404 {
        assert!(
            text.iter()
                .any(|t| t.contains(&format!("ippool pool-{i}")) && t.contains("ippool stored")),
            "{text:?}"
        );
    }
    assert_eq!(pool_count(&*store).await, 1);
}

#[tokio::test]
async fn verbs_keep_their_meaning_and_refuse_as_a_set() {
    let store = Arc::new(MemoryStore::new());
    let client = Client::new(store.clone());
    let items = pools(10);
    client
        .write_all(BulkVerb::Create { skip_exists: false }, &items[..5])
        .await
        .unwrap();
    // create of a set where half exists: refused, naming each, nothing new.
    let err = client
        .write_all(BulkVerb::Create { skip_exists: false }, &items)
        .await
        .unwrap_err();
    let BulkError::Refused(errors) = &err else {
        panic!("{err}")
    };
    assert_eq!(errors.len(), 5);
    assert!(matches!(errors[0], ClientError::AlreadyExists { .. }));
    assert_eq!(pool_count(&*store).await, 5);
    // --skip-exists: the other five are created.
    let out = client
        .write_all(BulkVerb::Create { skip_exists: true }, &items)
        .await
        .unwrap();
    assert_eq!((out.written, out.skipped), (5, 5));
    assert_eq!(pool_count(&*store).await, 10);

    // replace with a stale resourceVersion: a conflict, nothing replaced.
    let (stored, _) = client.list::<IPPool>().await.unwrap();
    let mut edited: Vec<Resource> = stored
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.spec.disabled = Some(true);
            Resource::IPPool(p)
        })
        .collect();
    // A revision the store has not reached: stale by construction.
    edited[3].metadata_mut().resource_version = Some("999999".into());
    let err = client
        .write_all(BulkVerb::Replace, &edited)
        .await
        .unwrap_err();
    let BulkError::Refused(errors) = &err else {
        panic!("{err}")
    };
    assert!(
        matches!(errors[..], [ClientError::Conflict { .. }]),
        "{errors:?}"
    );
    let (now, _) = client.list::<IPPool>().await.unwrap();
    assert!(now.iter().all(|p| p.spec.disabled != Some(true)));

    // changing a pool's cidr is refused with the others untouched.
    let mut moved = stored.clone();
    moved[0].spec.cidr = "10.99.0.0/26".parse().unwrap();
    moved[1].spec.disabled = Some(true);
    let set: Vec<Resource> = moved.into_iter().map(Resource::IPPool).collect();
    let err = client.write_all(BulkVerb::Apply, &set).await.unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    let BulkError::Refused(errors) = &err else {
        panic!("{err}")
    };
    assert!(errors[0].to_string().contains("spec.cidr"), "{errors:?}");
    let (now, _) = client.list::<IPPool>().await.unwrap();
    assert!(now.iter().all(|p| p.spec.disabled != Some(true)));

    // delete of a set with one missing: refused; with skip, the rest go.
    let mut doomed = items.clone();
    doomed.extend(pools(11).into_iter().skip(10));
    let err = client
        .write_all(
            BulkVerb::Delete {
                skip_not_exists: false,
            },
            &doomed,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, BulkError::Refused(ref e) if e.len() == 1),
        "{err}"
    );
    assert_eq!(pool_count(&*store).await, 10);
    let out = client
        .write_all(
            BulkVerb::Delete {
                skip_not_exists: true,
            },
            &doomed,
        )
        .await
        .unwrap();
    assert_eq!((out.written, out.skipped), (10, 1));
    assert_eq!(pool_count(&*store).await, 0);
}

#[tokio::test]
async fn etcd_gets_chunks_within_its_txn_limit() {
    if !datastore::testing::require_etcd() {
        return;
    }
    let etcd = datastore::testing::EtcdServer::start().await.unwrap();
    let store = Arc::new(EtcdStore::connect(etcd.config()).await.unwrap());
    let client = Client::new(store.clone());
    let items = pools(1000);
    let t = Instant::now();
    let out = client.write_all(BulkVerb::Apply, &items).await.unwrap();
    println!(
        "etcd: 1000 pools applied in {:?}, {} txns",
        t.elapsed(),
        out.transactions
    );
    assert_eq!(out.written, 1000);
    assert!(out.transactions >= 1000 / store.max_txn_ops(), "{out:?}");
    assert_eq!(pool_count(&*store).await, 1000);
    // Updates carry two compares each: still within etcd's limit.
    let again = client.write_all(BulkVerb::Apply, &items).await.unwrap();
    assert_eq!(again.written, 1000);
    let out = client
        .write_all(
            BulkVerb::Delete {
                skip_not_exists: false,
            },
            &items,
        )
        .await
        .unwrap();
    assert_eq!(out.written, 1000);
    assert_eq!(pool_count(&*store).await, 0);
}

#[tokio::test]
async fn a_concurrent_writer_makes_apply_plan_again() {
    let store = Arc::new(Faulty::new(usize::MAX, usize::MAX, usize::MAX));
    let client = Client::new(store.clone());
    let items = pools(50);
    client.write_all(BulkVerb::Apply, &items).await.unwrap();
    store.race_once.store(true, Ordering::SeqCst);
    let before = store.txns.load(Ordering::SeqCst);
    let out = client.write_all(BulkVerb::Apply, &items).await.unwrap();
    assert_eq!(out.written, 50);
    // The raced commit failed and the second plan's went through.
    assert_eq!(store.txns.load(Ordering::SeqCst) - before, 2);

    // replace is not re-planned: the caller's resourceVersion is stale.
    let (stored, _) = client.list::<IPPool>().await.unwrap();
    let set: Vec<Resource> = stored.into_iter().map(Resource::IPPool).collect();
    store.race_once.store(true, Ordering::SeqCst);
    let err = client.write_all(BulkVerb::Replace, &set).await.unwrap_err();
    assert!(
        matches!(err, BulkError::Failed(ClientError::Conflict { .. })),
        "{err}"
    );
}
