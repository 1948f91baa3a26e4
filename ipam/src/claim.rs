//! Claiming blocks for a node: the two-phase affinity (pending, then the
//! block created already affine, holding the claimer's first allocation,
//! together with the affinity confirmed and the handle, in one
//! transaction), and listing a node's blocks
//! (finishing claims a crash interrupted). See [`crate::allocator`] for why
//! the writes are in this order.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use datastore::{StoreError, WriteOp};
use ipnetwork::IpNetwork;

use crate::allocator::{Ipam, is_reserved};
use crate::block::{Attrs, Block};
use crate::blockrw::{FaultPoint, is_conflict};
use crate::commit::handle_op;
use crate::error::{IpamError, Result};
use crate::topology::Pool;

/// The allocation a claimer makes in the block it claims.
#[derive(Debug)]
pub(crate) struct First<'a> {
    /// Addresses wanted.
    pub n: usize,
    pub attrs: &'a Attrs,
    pub reserved: &'a Arc<Vec<IpNetwork>>,
    /// The handle probably exists already.
    pub held: bool,
}

impl Ipam {
    /// The confirmed blocks of `node` in a family; confirms pending ones
    /// whose block exists and is affine to the node (an interrupted claim).
    pub(crate) async fn affine_blocks(&self, node: &str, v6: bool) -> Result<Vec<IpNetwork>> {
        use datastore::model::ipam::AffinityState;
        let mut out = Vec::new();
        for a in self.rw.list_affinities(Some(node)).await? {
            if a.value.cidr.is_ipv6() != v6 {
                continue;
            }
            match a.value.state {
                AffinityState::Confirmed => out.push(a.value.cidr),
                AffinityState::Pending => {
                    if let Some(b) = self.rw.get_block(&a.value.cidr).await?
                        && b.value.affine_node() == Some(node)
                    {
                        let mut aff = a.value.clone();
                        aff.state = AffinityState::Confirmed;
                        let key = crate::keys::affinity(node, &aff.cidr);
                        if self.rw.update_raw(&key, &aff, a.revision).await.is_ok() {
                            out.push(aff.cidr);
                        }
                    }
                }
                AffinityState::PendingDeletion => {}
            }
        }
        out.sort_by_key(|c| (c.network(), c.prefix()));
        Ok(out)
    }

    /// Claim a free block for `node` from `pools` (two-phase affinity),
    /// making `first`'s allocation in the same transaction. Returns the
    /// block and what `first` got in it.
    pub(crate) async fn claim_block(
        &self,
        node: &str,
        pools: &[Pool],
        v6: bool,
        reserved: &Arc<Vec<IpNetwork>>,
        first: Option<&First<'_>>,
    ) -> Result<Option<(IpNetwork, Vec<(IpAddr, u64)>)>> {
        // Known blocks come from one listing, then from what we learn; a
        // candidate not known is claimed outright (the block create decides).
        // If nothing is found that way, list again (blocks may have gone).
        for relist in [false, true] {
            let cached = self
                .known_blocks
                .lock()
                .expect("poisoned")
                .get(&v6)
                .cloned();
            let existing = match cached {
                Some(set) if !relist => set,
                _ => {
                    let set: HashSet<IpNetwork> =
                        self.rw.list_block_cidrs(v6).await?.into_iter().collect();
                    self.known_blocks
                        .lock()
                        .expect("poisoned")
                        .insert(v6, set.clone());
                    set
                }
            };
            if let Some(won) = self
                .claim_free_block(node, pools, &existing, reserved, first)
                .await?
            {
                return Ok(Some(won));
            }
        }
        Ok(None)
    }

    fn learn_block(&self, cidr: IpNetwork) {
        self.known_blocks
            .lock()
            .expect("poisoned")
            .entry(cidr.is_ipv6())
            .or_default()
            .insert(cidr);
    }

    async fn claim_free_block(
        &self,
        node: &str,
        pools: &[Pool],
        existing: &HashSet<IpNetwork>,
        reserved: &Arc<Vec<IpNetwork>>,
        first: Option<&First<'_>>,
    ) -> Result<Option<(IpNetwork, Vec<(IpAddr, u64)>)>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        node.hash(&mut hasher);
        let seed = hasher.finish() as u128;
        for pool in pools {
            let count = pool.block_count();
            // Start at a node-dependent offset so nodes do not all race for
            // the first free block.
            let start = seed % count;
            for i in 0..count.min(1 << 20) {
                let cidr = pool.nth_block((start + i) % count);
                if existing.contains(&cidr) {
                    continue;
                }
                let probe = Block::new(cidr, None)?;
                if probe.available(&|ip| is_reserved(reserved, ip)) == 0 {
                    continue;
                }
                // No probe read first: the listing behind `existing` is
                // recent, and a block created since makes the claim's
                // transaction fail, which costs no more than the probe.
                let won = self.claim_one(node, &cidr, first).await?;
                self.learn_block(cidr);
                if let Some(got) = won {
                    return Ok(Some((cidr, got)));
                }
            }
        }
        Ok(None)
    }

    /// Try to claim `cidr` for `node`, with `first`'s allocation made in
    /// the claiming transaction; `None` if someone else got the block.
    /// (`Some(empty)` when the block turned out to be ours already: a
    /// concurrent claimer for this node made it.)
    pub(crate) async fn claim_one(
        &self,
        node: &str,
        cidr: &IpNetwork,
        first: Option<&First<'_>>,
    ) -> Result<Option<Vec<(IpAddr, u64)>>> {
        use datastore::model::ipam::{AffinityState, BlockAffinity};
        let akey = crate::keys::affinity(node, cidr);
        let mut aff = BlockAffinity {
            state: AffinityState::Pending,
            node: node.to_string(),
            cidr: *cidr,
            deleted: false,
        };
        // Phase 1: pending affinity.
        let arev = match self.rw.create_raw(&akey, &aff).await {
            Ok(rev) => rev,
            Err(e) if is_conflict(&e) => match self.rw.get_affinity(node, cidr).await? {
                Some(cur) if cur.value.state == AffinityState::Pending => cur.revision,
                _ => return Ok(None),
            },
            Err(e) => {
                return Err(IpamError::store(
                    format!("claiming block {cidr} for {node}"),
                    e,
                ));
            }
        };
        self.rw.fault(FaultPoint::AfterAffinityPending)?;
        // Phase 2: the block, already affine (and holding `first`'s
        // addresses), the affinity confirmed and `first`'s handle, in one
        // transaction. Creating the block is the CAS that decides between
        // racing claimers.
        aff.state = AffinityState::Confirmed;
        let mut block = Block::new(*cidr, Some(node))?;
        block.mark_empty_since(self.now_ms());
        let got = match first {
            Some(f) => block.allocate(f.n, f.attrs, &|ip| is_reserved(f.reserved, ip)),
            None => Vec::new(),
        };
        let handle_id = first.map(|f| f.attrs.handle_id.as_str()).unwrap_or("");
        let mut handle = match first {
            Some(f) if f.held && !got.is_empty() => self.rw.get_handle(handle_id).await?,
            _ => None,
        };
        for _ in 0..self.opts.max_retries {
            let mut ops = vec![
                WriteOp::Create {
                    key: crate::keys::block(cidr),
                    value: crate::blockrw::encode(&block.to_model()),
                },
                WriteOp::Update {
                    key: akey.clone(),
                    value: crate::blockrw::encode(&aff),
                    expected: arev,
                },
            ];
            if !got.is_empty() {
                ops.extend(handle_op(
                    handle_id,
                    &cidr.to_string(),
                    got.len() as i64,
                    handle.as_ref(),
                ));
            }
            match self.rw.store().txn(ops).await {
                Ok(revs) => {
                    if !got.is_empty() {
                        self.rw.fault(FaultPoint::AfterBlockAllocate)?;
                    }
                    self.seed_block(block, revs[0]).await;
                    tracing::info!(node, %cidr, "claimed block");
                    return Ok(Some(got));
                }
                // The handle is not as assumed: read it and go again.
                Err(
                    StoreError::AlreadyExists { key }
                    | StoreError::NotFound { key }
                    | StoreError::Conflict { key, .. },
                ) if !got.is_empty() && key == crate::keys::handle(handle_id) => {
                    handle = self.rw.get_handle(handle_id).await?;
                }
                Err(e) if is_conflict(&e) => {
                    let ours = self
                        .rw
                        .get_block(cidr)
                        .await?
                        .is_some_and(|b| b.value.affine_node() == Some(node));
                    if !ours {
                        let _ = self.rw.delete_raw(&akey, Some(arev)).await;
                        return Ok(None);
                    }
                    // Another claimer for this node (in another process)
                    // got there first; `affine_blocks` confirms a pending
                    // affinity whose block is ours if its confirmation is
                    // lost.
                    return Ok(Some(Vec::new()));
                }
                Err(e) => return Err(IpamError::store(format!("creating block {cidr}"), e)),
            }
        }
        Err(IpamError::Contention {
            what: format!("handle {handle_id}"),
            attempts: self.opts.max_retries,
        })
    }
}
