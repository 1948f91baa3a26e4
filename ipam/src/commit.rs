//! Block commits: every change to a block is one compare-and-swap of the
//! block *together with* the handle counts it changes, in one atomic store
//! transaction ([`datastore::Datastore::txn`]). So an allocation is exactly
//! one store write in steady state, and no crash can leave a handle that
//! disagrees with its block.
//!
//! Concurrent requests for the same block in one process are combined: the
//! first to take the block's slot becomes the leader and commits everyone
//! queued behind it in one transaction (group commit).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datastore::model::ipam::IPAMHandle;
use datastore::{StoreError, WriteOp};
use ipnetwork::IpNetwork;
use tokio::sync::oneshot;

use crate::allocator::{Clock, Ipam, SystemClock, is_reserved};
use crate::block::{Attrs, Block};
use crate::blockrw::{FaultPoint, Versioned, is_conflict};
use crate::error::{IpamError, Result};

/// Handle id → change of its count in the block being committed.
pub(crate) type HandleDeltas = BTreeMap<String, i64>;

/// What a commit knows of each handle it changes: `None` is "absent" (read
/// so, or assumed for a fresh handle until the store says otherwise).
type HandleBook = HashMap<String, Option<Versioned<IPAMHandle>>>;

type Reply = oneshot::Sender<Result<Vec<(IpAddr, u64)>>>;

/// What one request wants from a block.
#[derive(Debug, Clone)]
pub(crate) enum Want {
    /// Any `n` free addresses.
    Any(usize),
    /// Exactly this address (fails if taken or reserved).
    Exact(IpAddr),
}

struct PendingAlloc {
    want: Want,
    attrs: Attrs,
    /// Only allocate while the block is affine to this node.
    require_node: Option<String>,
    reserved: Arc<Vec<IpNetwork>>,
    /// The handle probably exists already (read it instead of assuming a
    /// create).
    handle_held: bool,
    reply: Reply,
}

/// In-process state of one block: requests waiting to be combined into one
/// commit, and the last block we wrote or read (the CAS token), valid only
/// while holding `leader`.
#[derive(Default)]
pub(crate) struct Slot {
    queue: Mutex<Vec<PendingAlloc>>,
    leader: tokio::sync::Mutex<Option<Versioned<Block>>>,
    /// Free addresses at last sight: skip full blocks without a write.
    free_hint: AtomicU64,
    /// When `free_hint` was last set from the store (real ms since epoch).
    hint_at_ms: AtomicU64,
}

/// How long a block's free count seen in this process is trusted before a
/// re-read (other processes may have freed addresses in it).
const HINT_TTL_MS: u64 = 5_000;
/// Same for a block seen full.
const FULL_HINT_TTL_MS: u64 = 60_000;

impl Slot {
    pub(crate) fn new() -> Self {
        Slot {
            free_hint: AtomicU64::new(u64::MAX),
            hint_at_ms: AtomicU64::new(SystemClock.now_ms()),
            ..Slot::default()
        }
    }

    fn set_hint(&self, free: u64) {
        self.free_hint.store(free, Ordering::Release);
        self.hint_at_ms
            .store(SystemClock.now_ms(), Ordering::Release);
    }
}

/// How much to trust a block's cached free count in [`Ipam::try_block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Use the in-process free count.
    Hint,
    /// Re-read the block if its free count is older than [`HINT_TTL_MS`].
    RefreshStale,
    /// Re-read the block first.
    Refresh,
}

/// What a block change decided: write the block (with these handle
/// changes), or leave it as it is.
pub(crate) enum Step<R> {
    Write(R, HandleDeltas),
    Skip(R),
}

/// How a commit ended.
enum Commit {
    Done(datastore::Revision),
    /// The block moved on: re-read it and recompute.
    BlockChanged,
    /// This handle is not as the book said: re-read it.
    HandleChanged(String),
}

/// A copy of `e` for the other requests of a failed batch.
fn share_error(e: &IpamError) -> IpamError {
    match e {
        IpamError::InjectedCrash(pt) => IpamError::InjectedCrash(*pt),
        IpamError::Contention { what, attempts } => IpamError::Contention {
            what: what.clone(),
            attempts: *attempts,
        },
        IpamError::Store { context, source } => IpamError::Store {
            context: context.clone(),
            source: if source.is_transient() {
                StoreError::Unavailable(source.to_string())
            } else {
                StoreError::Other(source.to_string())
            },
        },
        other => IpamError::Invalid(other.to_string()),
    }
}

/// The write that applies `delta` to handle `id`'s count in `cidr`, given
/// what the book knows of it; `None` when there is nothing to write.
pub(crate) fn handle_op(
    id: &str,
    cidr: &str,
    delta: i64,
    known: Option<&Versioned<IPAMHandle>>,
) -> Option<WriteOp> {
    let key = crate::keys::handle(id);
    let Some(cur) = known else {
        return (delta > 0).then(|| WriteOp::Create {
            key,
            value: crate::blockrw::encode(&IPAMHandle {
                handle_id: id.to_string(),
                block: BTreeMap::from([(cidr.to_string(), delta as u64)]),
                deleted: false,
            }),
        });
    };
    let mut h = cur.value.clone();
    let count = h.block.get(cidr).copied().unwrap_or(0) as i64 + delta;
    if count > 0 {
        h.block.insert(cidr.to_string(), count as u64);
    } else {
        h.block.remove(cidr);
    }
    Some(if h.block.is_empty() {
        WriteOp::Delete {
            key,
            expected: Some(cur.revision),
        }
    } else {
        WriteOp::Update {
            key,
            value: crate::blockrw::encode(&h),
            expected: cur.revision,
        }
    })
}

impl Ipam {
    pub(crate) fn slot(&self, cidr: &IpNetwork) -> Arc<Slot> {
        let mut g = self.slots.lock().expect("poisoned");
        g.entry(*cidr)
            .or_insert_with(|| Arc::new(Slot::new()))
            .clone()
    }

    /// Remember a block this process just created at `rev`, so the first
    /// allocation from it needs no read.
    pub(crate) async fn seed_block(&self, b: Block, rev: datastore::Revision) {
        let slot = self.slot(&b.cidr());
        let mut cache = slot.leader.lock().await;
        slot.set_hint(b.free_count() as u64);
        *cache = Some(Versioned {
            value: b,
            revision: rev,
        });
    }

    /// Write block `b` (at `rev`) and the handle changes in one transaction.
    async fn commit_block(
        &self,
        b: &Block,
        rev: datastore::Revision,
        deltas: &HandleDeltas,
        book: &HandleBook,
    ) -> Result<Commit> {
        let cidr = b.cidr();
        let block_key = crate::keys::block(&cidr);
        let cidr_s = cidr.to_string();
        let mut ops = vec![WriteOp::Update {
            key: block_key.clone(),
            value: crate::blockrw::encode(&b.to_model()),
            expected: rev,
        }];
        ops.extend(
            deltas
                .iter()
                .filter(|(_, d)| **d != 0)
                .filter_map(|(id, d)| {
                    handle_op(id, &cidr_s, *d, book.get(id).and_then(Option::as_ref))
                }),
        );
        match self.rw.store().txn(ops).await {
            Ok(revs) => Ok(Commit::Done(revs[0])),
            Err(e) if is_conflict(&e) => {
                let key = match &e {
                    StoreError::Conflict { key, .. }
                    | StoreError::AlreadyExists { key }
                    | StoreError::NotFound { key } => key.as_str(),
                    _ => "",
                };
                match deltas.keys().find(|id| crate::keys::handle(id) == key) {
                    Some(id) => Ok(Commit::HandleChanged(id.clone())),
                    None => Ok(Commit::BlockChanged),
                }
            }
            Err(e) => Err(IpamError::store(format!("writing block {cidr}"), e)),
        }
    }

    /// The retry loop of every block change, run by the holder of the
    /// block's slot: (re-)read the block, let `f` change it and say how the
    /// handle counts change, commit both at once. `Ok(None)` if the block
    /// does not exist.
    async fn cas_loop<R>(
        &self,
        cidr: &IpNetwork,
        slot: &Slot,
        cache: &mut Option<Versioned<Block>>,
        mut read_block: bool,
        mut book: HandleBook,
        mut f: impl FnMut(&mut Block) -> Result<Step<R>>,
    ) -> Result<Option<R>> {
        for attempt in 0..self.opts.max_retries {
            if read_block || cache.is_none() {
                *cache = self.rw.get_block(cidr).await?;
            }
            let Some(cur) = cache.as_ref() else {
                slot.set_hint(0);
                return Ok(None);
            };
            let mut b = cur.value.clone();
            let (r, deltas) = match f(&mut b)? {
                Step::Write(r, deltas) => (r, deltas),
                Step::Skip(r) => {
                    slot.set_hint(b.free_count() as u64);
                    return Ok(Some(r));
                }
            };
            // A decrement needs the handle's revision; an increment of a
            // handle not in the book assumes a fresh one (the common case:
            // one handle per pod), corrected by the store if wrong.
            for (id, d) in &deltas {
                if !book.contains_key(id) {
                    let known = if *d < 0 {
                        self.rw.get_handle(id).await?
                    } else {
                        None
                    };
                    book.insert(id.clone(), known);
                }
            }
            match self.commit_block(&b, cur.revision, &deltas, &book).await? {
                Commit::Done(rev) => {
                    slot.set_hint(b.free_count() as u64);
                    *cache = Some(Versioned {
                        value: b,
                        revision: rev,
                    });
                    return Ok(Some(r));
                }
                Commit::HandleChanged(id) => {
                    let known = self.rw.get_handle(&id).await?;
                    book.insert(id, known);
                    read_block = false;
                }
                Commit::BlockChanged => {
                    read_block = true;
                    // Spread retries of racing processes apart a little.
                    if attempt > 2 {
                        let ms = rand::random_range(0..(attempt as u64).min(20));
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                }
            }
        }
        Err(IpamError::Contention {
            what: format!("block {cidr}"),
            attempts: self.opts.max_retries,
        })
    }

    /// Read-modify-CAS block `cidr` with `f` under the slot lock. `f` returns
    /// `None` for "no write needed". `Ok(None)` if the block does not exist.
    pub(crate) async fn modify_block<R>(
        &self,
        cidr: &IpNetwork,
        mut f: impl FnMut(&mut Block) -> Result<Option<R>>,
    ) -> Result<Option<R>> {
        let r = self
            .modify_block_and_handles(cidr, |b| {
                Ok(match f(b)? {
                    Some(r) => Step::Write(Some(r), HandleDeltas::new()),
                    None => Step::Skip(None),
                })
            })
            .await?;
        Ok(r.flatten())
    }

    /// [`Self::modify_block`] where `f` also says how handle counts change:
    /// the block and the handles are written in one transaction. `Ok(None)`
    /// if the block does not exist.
    pub(crate) async fn modify_block_and_handles<R>(
        &self,
        cidr: &IpNetwork,
        f: impl FnMut(&mut Block) -> Result<Step<R>>,
    ) -> Result<Option<R>> {
        let slot = self.slot(cidr);
        let mut cache = slot.leader.lock().await;
        self.cas_loop(cidr, &slot, &mut cache, true, HandleBook::new(), f)
            .await
    }

    /// Delete block `cidr` if it is still at the revision `f` approves of.
    pub(crate) async fn delete_block_if(
        &self,
        cidr: &IpNetwork,
        f: impl Fn(&Block) -> bool,
    ) -> Result<bool> {
        let slot = self.slot(cidr);
        let mut cache = slot.leader.lock().await;
        let Some(cur) = self.rw.get_block(cidr).await? else {
            *cache = None;
            return Ok(false);
        };
        if !f(&cur.value) {
            *cache = Some(cur);
            return Ok(false);
        }
        *cache = None;
        match self
            .rw
            .delete_raw(&crate::keys::block(cidr), Some(cur.revision))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(IpamError::store(format!("deleting block {cidr}"), e)),
        }
    }

    /// Get `want` from block `cidr` for `attrs.handle_id`, combined with
    /// concurrent requests for the same block into one commit.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn allocate_in_block(
        &self,
        cidr: &IpNetwork,
        want: Want,
        attrs: &Attrs,
        require_node: Option<&str>,
        reserved: &Arc<Vec<IpNetwork>>,
        handle_held: bool,
        fresh: bool,
    ) -> Result<Vec<(IpAddr, u64)>> {
        let slot = self.slot(cidr);
        let (tx, mut rx) = oneshot::channel();
        slot.queue.lock().expect("poisoned").push(PendingAlloc {
            want,
            attrs: attrs.clone(),
            require_node: require_node.map(str::to_string),
            reserved: reserved.clone(),
            handle_held,
            reply: tx,
        });
        let mut cache = slot.leader.lock().await;
        if let Ok(r) = rx.try_recv() {
            return r; // a previous leader served us
        }
        let batch: Vec<PendingAlloc> = std::mem::take(&mut *slot.queue.lock().expect("poisoned"));
        let outcome = self
            .allocate_batch(cidr, &slot, &mut cache, &batch, fresh)
            .await;
        match outcome {
            Ok(results) => {
                for (p, r) in batch.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(share_error(&e)));
                }
            }
        }
        drop(cache);
        rx.try_recv()
            .unwrap_or_else(|_| Err(IpamError::Invalid("allocation batch lost its reply".into())))
    }

    /// Serve a batch in one commit: block + every handle it adds to.
    async fn allocate_batch(
        &self,
        cidr: &IpNetwork,
        slot: &Slot,
        cache: &mut Option<Versioned<Block>>,
        batch: &[PendingAlloc],
        fresh: bool,
    ) -> Result<Vec<Result<Vec<(IpAddr, u64)>>>> {
        let mut book = HandleBook::new();
        for p in batch.iter().filter(|p| p.handle_held) {
            let id = &p.attrs.handle_id;
            if !book.contains_key(id) {
                let known = self.rw.get_handle(id).await?;
                book.insert(id.clone(), known);
            }
        }
        let served = self
            .cas_loop(cidr, slot, cache, fresh, book, |b| {
                let mut results = Vec::with_capacity(batch.len());
                let mut deltas = HandleDeltas::new();
                for p in batch {
                    let ok = !b.deleted()
                        && p.require_node
                            .as_deref()
                            .is_none_or(|n| b.affine_node() == Some(n));
                    let r = match (&p.want, ok) {
                        (_, false) => Ok(Vec::new()),
                        (Want::Any(n), true) => {
                            let reserved = p.reserved.clone();
                            Ok(b.allocate(*n, &p.attrs, &|ip| is_reserved(&reserved, ip)))
                        }
                        (Want::Exact(ip), true) if is_reserved(&p.reserved, *ip) => {
                            Err(IpamError::Address {
                                ip: *ip,
                                reason: "is reserved by an IPReservation".into(),
                            })
                        }
                        (Want::Exact(ip), true) => b
                            .assign(*ip, &p.attrs)
                            .map(|seq| vec![(*ip, seq)])
                            .map_err(IpamError::from),
                    };
                    if let Ok(got) = &r
                        && !got.is_empty()
                    {
                        *deltas.entry(p.attrs.handle_id.clone()).or_default() += got.len() as i64;
                    }
                    results.push(r);
                }
                Ok(if deltas.is_empty() {
                    Step::Skip((results, false))
                } else {
                    Step::Write((results, true), deltas)
                })
            })
            .await?;
        match served {
            Some((results, wrote)) => {
                if wrote {
                    self.rw.fault(FaultPoint::AfterBlockAllocate)?;
                }
                Ok(results)
            }
            // No such block (any more).
            None => Ok(batch.iter().map(|_| Ok(Vec::new())).collect()),
        }
    }

    /// Up to `n` addresses from block `cidr`, trusting its cached free
    /// count as `mode` says. `handle_held`: this handle already holds
    /// addresses (from another block or family).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn try_block(
        &self,
        cidr: &IpNetwork,
        n: usize,
        attrs: &Attrs,
        require_node: Option<&str>,
        reserved: &Arc<Vec<IpNetwork>>,
        mode: Freshness,
        handle_held: bool,
    ) -> Result<Vec<(IpAddr, u64)>> {
        let slot = self.slot(cidr);
        // A block seen full is re-read less often: it rarely matters, and a
        // node accumulates many full blocks (step 2b re-reads them all
        // before borrowing or giving up anyway).
        let ttl = if slot.free_hint.load(Ordering::Acquire) == 0 {
            FULL_HINT_TTL_MS
        } else {
            HINT_TTL_MS
        };
        let stale = SystemClock
            .now_ms()
            .saturating_sub(slot.hint_at_ms.load(Ordering::Acquire))
            > ttl;
        if mode == Freshness::Refresh || (mode == Freshness::RefreshStale && stale) {
            // Under the slot lock so the cached copy and the hint agree.
            let mut cache = slot.leader.lock().await;
            *cache = self.rw.get_block(cidr).await?;
            let free = cache.as_ref().map_or(0, |b| {
                b.value.available(&|ip| is_reserved(reserved, ip)) as u64
            });
            slot.set_hint(free);
        }
        // Reserve room in the last-seen free count so concurrent requests
        // do not all pile onto a block that can serve only some of them.
        let Ok(before) = slot
            .free_hint
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                (h > 0).then(|| h - h.min(n as u64))
            })
        else {
            return Ok(Vec::new());
        };
        let n = n.min(before.min(usize::MAX as u64) as usize);
        self.allocate_in_block(
            cidr,
            Want::Any(n),
            attrs,
            require_node,
            reserved,
            handle_held,
            false,
        )
        .await
    }
}
