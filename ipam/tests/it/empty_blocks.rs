//! Releasing an empty block while an allocation races with it (issue 17),
//! at store level: a store wrapper runs another allocator's ADD at the
//! moment the releaser deletes a key, so the interleaving is exact, not
//! left to the scheduler.
//!
//! * The ADD lands between the releaser's "block is empty" read and its
//!   block delete: the delete (a CAS at the revision seen empty) fails, the
//!   block and its affinity stay, the address is held.
//! * The ADD runs after the block is deleted, before its affinity is: it
//!   must not put its address in the deleted block; it claims a block.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datastore::memory::MemoryStore;
use datastore::model::ipam::AffinityState;
use datastore::{Datastore, KeyValue, Listing, Revision, StoreError, WatchStream, WriteOp};
use ipam::allocator::ManualClock;
use ipam::topology::{Pool, StaticTopology};
use ipam::{AutoAssignArgs, Ipam, IpamOptions};
use ipnetwork::IpNetwork;

type Hook = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A store that, once, runs a hook just before deleting a given key.
struct HookStore {
    inner: MemoryStore,
    hook: Mutex<Option<(String, Hook)>>,
    ran: AtomicBool,
}

impl std::fmt::Debug for HookStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookStore").finish_non_exhaustive()
    }
}

impl HookStore {
    fn new() -> Arc<Self> {
        Arc::new(HookStore {
            inner: MemoryStore::new(),
            hook: Mutex::new(None),
            ran: AtomicBool::new(false),
        })
    }

    fn before_delete(&self, key: String, hook: Hook) {
        *self.hook.lock().unwrap() = Some((key, hook));
    }
}

#[async_trait]
impl Datastore for HookStore {
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
        let hook = {
            let mut g = self.hook.lock().unwrap();
            match g.as_ref() {
                Some((k, _)) if k == key => g.take().map(|(_, h)| h),
                _ => None,
            }
        };
        if let Some(h) = hook {
            h.await;
            self.ran.store(true, Ordering::SeqCst);
        }
        self.inner.delete(key, expected).await
    }
    async fn txn(&self, ops: Vec<WriteOp>) -> Result<Vec<Revision>, StoreError> {
        self.inner.txn(ops).await
    }
    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from_revision).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
}

const GRACE: Duration = Duration::from_secs(30);

/// A store with hooks, one pool of four /26 blocks, node n1; the releaser
/// and a warm allocator (its caches point at n1's block, now empty for
/// longer than the grace), as two processes on the node would be.
struct Race {
    store: Arc<HookStore>,
    releaser: Ipam,
    allocator: Arc<Ipam>,
    block: IpNetwork,
}

async fn race() -> Race {
    let store = HookStore::new();
    let topo = StaticTopology::new();
    topo.add_pool(Pool::new("p", "10.78.0.0/24").unwrap());
    topo.add_node("n1", &[]);
    let clock = ManualClock::new(1_000_000_000);
    let mk = || {
        Ipam::new(store.clone(), Arc::new(topo.clone()))
            .with_clock(clock.clone())
            .with_options(IpamOptions {
                empty_block_grace: GRACE,
                ..IpamOptions::default()
            })
    };
    let allocator = Arc::new(mk());
    let first = allocator.auto_assign(&args("h0")).await.unwrap();
    let block = IpNetwork::new(first.ipv4[0].ip(), 26).unwrap();
    let block = IpNetwork::new(block.network(), 26).unwrap();
    allocator.release_by_handle("h0").await.unwrap();
    clock.advance(GRACE + Duration::from_secs(1));
    let releaser = mk();
    Race {
        store,
        releaser,
        allocator,
        block,
    }
}

fn args(handle: &str) -> AutoAssignArgs {
    AutoAssignArgs {
        num_v4: 1,
        handle_id: handle.into(),
        hostname: "n1".into(),
        ..AutoAssignArgs::default()
    }
}

/// Runs the allocator's ADD of `handle` as the hook before deleting `key`;
/// the address it got lands in the returned slot.
fn add_before_delete(r: &Race, key: String, handle: &str) -> Arc<Mutex<Option<IpNetwork>>> {
    let got = Arc::new(Mutex::new(None));
    let (alloc, slot, handle) = (r.allocator.clone(), got.clone(), handle.to_string());
    r.store.before_delete(
        key,
        Box::pin(async move {
            let res = alloc.auto_assign(&args(&handle)).await.unwrap();
            *slot.lock().unwrap() = Some(res.ipv4[0]);
        }),
    );
    got
}

async fn assert_clean(ipam: &Ipam, live: &[&str]) {
    let live: HashSet<String> = live.iter().map(|s| s.to_string()).collect();
    let report = ipam.check(Some(&live)).await.unwrap();
    assert!(report.is_clean(), "{report}");
}

#[tokio::test]
async fn allocation_between_empty_read_and_block_delete_keeps_the_block() {
    let r = race().await;
    let got = add_before_delete(&r, ipam::keys::block(&r.block), "h1");
    let released = r.releaser.release_empty_blocks(Some("n1")).await.unwrap();
    assert!(r.store.ran.load(Ordering::SeqCst), "the racing ADD ran");
    let ip = got.lock().unwrap().expect("the racing ADD got an address");
    assert!(
        released.is_empty(),
        "released {released:?} under an allocation"
    );
    assert!(r.block.contains(ip.ip()), "{ip} went to the (kept) block");
    let b = r.releaser.rw().get_block(&r.block).await.unwrap();
    assert!(b.is_some_and(|b| b.value.ips_of_handle("h1") == vec![ip.ip()]));
    let aff = r
        .releaser
        .rw()
        .get_affinity("n1", &r.block)
        .await
        .unwrap()
        .expect("affinity kept");
    assert_eq!(
        aff.value.state,
        AffinityState::Confirmed,
        "affinity restored"
    );
    assert_clean(&r.releaser, &["h1"]).await;
}

#[tokio::test]
async fn allocation_after_the_block_delete_never_lands_in_the_deleted_block() {
    let r = race().await;
    // The block is gone, its affinity (pendingDeletion) not yet.
    let got = add_before_delete(&r, ipam::keys::affinity("n1", &r.block), "h1");
    let released = r.releaser.release_empty_blocks(Some("n1")).await.unwrap();
    assert!(r.store.ran.load(Ordering::SeqCst), "the racing ADD ran");
    assert_eq!(released, vec![r.block]);
    let ip = got.lock().unwrap().expect("the racing ADD got an address");
    // Wherever it went, its block exists, is n1's and holds it.
    let cidr = IpNetwork::new(ip.ip(), 26).unwrap();
    let cidr = IpNetwork::new(cidr.network(), 26).unwrap();
    let b = r
        .releaser
        .rw()
        .get_block(&cidr)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{ip} is in block {cidr}, which does not exist"));
    assert_eq!(b.value.affine_node(), Some("n1"));
    assert_eq!(b.value.ips_of_handle("h1"), vec![ip.ip()]);
    assert_eq!(r.releaser.ips_by_handle("h1").await.unwrap(), vec![ip.ip()]);
    assert_clean(&r.releaser, &["h1"]).await;
}

#[tokio::test]
async fn empty_block_without_mark_is_marked_then_released_a_grace_later() {
    // An empty block whose empty-since mark is missing (written by an
    // older writer): the first sweep marks it, a sweep a grace later
    // releases it.
    let r = race().await;
    let key = ipam::keys::block(&r.block);
    let kv = r.store.get(&key).await.unwrap().unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    let obj = v.as_object_mut().unwrap();
    let field = obj
        .keys()
        .find(|k| k.to_ascii_lowercase().contains("empty"))
        .cloned()
        .expect("the block model has an empty-since field");
    obj.remove(&field);
    r.store
        .update(&key, serde_json::to_vec(&v).unwrap(), kv.mod_revision)
        .await
        .unwrap();
    let sweep = |at: u64| {
        let store = r.store.clone() as Arc<dyn Datastore>;
        async move {
            ipam::affinity::release_empty_blocks(
                store,
                "n1",
                GRACE,
                std::time::UNIX_EPOCH + Duration::from_millis(at),
            )
            .await
            .unwrap()
        }
    };
    let now = 2_000_000_000;
    assert!(sweep(now).await.is_empty(), "marked, not released");
    assert!(
        sweep(now + GRACE.as_millis() as u64 - 1).await.is_empty(),
        "within the grace of the mark"
    );
    assert_eq!(sweep(now + GRACE.as_millis() as u64).await, vec![r.block]);
    assert_clean(&r.releaser, &[]).await;
}
