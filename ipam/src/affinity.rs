//! Giving blocks back: empty blocks lose their affinity after a grace period,
//! and the blocks (and addresses) of deleted nodes are reclaimed.
//!
//! Write order for releasing an empty block (see [`crate::allocator`]):
//! affinity `pendingDeletion` → delete the block at the revision seen empty →
//! delete the affinity. Allocators only use `confirmed` affinities, and the
//! block delete is a CAS, so an allocation racing with the release either
//! lands first (the delete fails and the affinity is restored) or finds the
//! block gone and claims another.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datastore::Datastore;
use datastore::model::ipam::{AffinityState, BlockAffinity};
use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::allocator::{Ipam, IpamOptions, ManualClock};
use crate::block::ATTR_NODE;
use crate::blockrw::{FaultPoint, Versioned, is_conflict};
use crate::error::{IpamError, Result};
use crate::keys;

/// What [`Ipam::reclaim_node`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReclaimReport {
    /// Addresses of the node's workloads and tunnels that were released.
    pub released_ips: Vec<IpAddr>,
    /// Empty blocks deleted along with their affinity.
    pub deleted_blocks: Vec<IpNetwork>,
    /// Non-empty blocks (other nodes borrow from them) that lost the affinity.
    pub unaffined_blocks: Vec<IpNetwork>,
}

/// The node agent's sweep (Calico's release of empty blocks): releases
/// every block affine to `node` that has been empty for at least `grace`
/// at `now` (the block is deleted and its affinity removed; see
/// [`Ipam::release_empty_blocks`]). An allocation racing with the release
/// wins: the block is kept. Returns the released blocks.
pub async fn release_empty_blocks(
    store: Arc<dyn Datastore>,
    node: &str,
    grace: Duration,
    now: SystemTime,
) -> Result<Vec<IpNetwork>> {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // Releasing reads and writes blocks and affinities only: no pools,
    // nodes or reservations, so an empty topology serves.
    let ipam = Ipam::new(store, Arc::new(crate::topology::StaticTopology::new()))
        .with_clock(ManualClock::new(now_ms))
        .with_options(IpamOptions {
            empty_block_grace: grace,
            ..IpamOptions::default()
        });
    ipam.release_empty_blocks(Some(node)).await
}

/// How often a host's DELs sweep their node's empty blocks at most (and
/// at most once per grace period, when that is shorter).
pub const DEL_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Ipam {
    /// Whether a DEL on this host should sweep `node`'s empty blocks now:
    /// at most once per [`DEL_SWEEP_INTERVAL`] (or grace period, if
    /// shorter) per host, by the mtime of `<claim_lock_dir>/ipam-<node>-sweep`
    /// (the sweep's reads cost a DEL more than its release: measured 8.6
    /// -> 20.6 ms mean for manx-ipam's part of a DEL when every DEL swept).
    /// Touches the file when due; two DELs racing may both sweep, which is
    /// harmless. Without a lock folder, or when the file is unusable, every
    /// DEL sweeps.
    pub fn del_sweep_due(&self, node: &str) -> bool {
        let Some(path) = self.host_file(node, "sweep") else {
            return true;
        };
        let interval = DEL_SWEEP_INTERVAL.min(self.opts.empty_block_grace);
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < interval);
        if fresh {
            return false;
        }
        let touched = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(e) = touched {
            tracing::debug!(path = %path.display(), error = %e, "sweep stamp unusable; sweeping on every DEL");
        }
        true
    }

    /// Release the affinity of every block of `node` (all nodes if `None`)
    /// that has been empty for longer than the grace period; deletes the
    /// block. Returns the released blocks. An empty block with no
    /// empty-since mark (written by something that did not stamp it) is
    /// marked now, so it goes a grace period later.
    pub async fn release_empty_blocks(&self, node: Option<&str>) -> Result<Vec<IpNetwork>> {
        let now = self.now_ms();
        let grace = self.opts.empty_block_grace.as_millis() as u64;
        let mut released = Vec::new();
        for aff in self.rw.list_affinities(node).await? {
            if aff.value.state != AffinityState::Confirmed {
                continue;
            }
            let Some(b) = self.rw.get_block(&aff.value.cidr).await? else {
                continue;
            };
            if b.value.is_empty() && b.value.empty_since_ms().is_none() {
                self.modify_block(&aff.value.cidr, |b| {
                    Ok((b.is_empty() && b.empty_since_ms().is_none()).then(|| {
                        b.mark_empty_since(now);
                    }))
                })
                .await?;
                continue;
            }
            let expired = b.value.is_empty()
                && b.value
                    .empty_since_ms()
                    .is_some_and(|t| now.saturating_sub(t) >= grace);
            if expired && self.release_block_affinity(&aff, true).await? {
                released.push(aff.value.cidr);
            }
        }
        Ok(released)
    }

    /// Release `aff`: mark it pendingDeletion, then delete the block if it is
    /// (still) empty, or else with `require_empty == false` clear the block's
    /// affinity; finally delete the affinity. `false` if the block was in use
    /// (with `require_empty`) and the affinity was restored.
    pub(crate) async fn release_block_affinity(
        &self,
        aff: &Versioned<BlockAffinity>,
        require_empty: bool,
    ) -> Result<bool> {
        let node = aff.value.node.clone();
        let cidr = aff.value.cidr;
        let akey = keys::affinity(&node, &cidr);
        let mut pending = aff.value.clone();
        pending.state = AffinityState::PendingDeletion;
        let arev = if aff.value.state == AffinityState::PendingDeletion {
            aff.revision
        } else {
            match self.rw.update_raw(&akey, &pending, aff.revision).await {
                Ok(r) => r,
                Err(e) if is_conflict(&e) => return Ok(false),
                Err(e) => {
                    return Err(IpamError::store(
                        format!("releasing affinity of {node} to {cidr}"),
                        e,
                    ));
                }
            }
        };
        self.rw.fault(FaultPoint::AfterAffinityPendingDeletion)?;
        let affine_here = |b: &crate::block::Block| b.affine_node() == Some(node.as_str());
        let deleted = self
            .delete_block_if(&cidr, |b| b.is_empty() && affine_here(b))
            .await?;
        if deleted {
            if let Some(set) = self
                .known_blocks
                .lock()
                .expect("poisoned")
                .get_mut(&cidr.is_ipv6())
            {
                set.remove(&cidr);
            }
            self.rw.fault(FaultPoint::AfterBlockDelete)?;
        } else if let Some(b) = self.rw.get_block(&cidr).await?
            && affine_here(&b.value)
        {
            if require_empty {
                // Someone allocated meanwhile: keep the block, restore.
                let mut back = aff.value.clone();
                back.state = AffinityState::Confirmed;
                let _ = self.rw.update_raw(&akey, &back, arev).await;
                return Ok(false);
            }
            self.modify_block(&cidr, |b| {
                if b.affine_node() == Some(node.as_str()) {
                    b.set_affinity(None);
                    Ok(Some(()))
                } else {
                    Ok(None)
                }
            })
            .await?;
        }
        match self.rw.delete_raw(&akey, Some(arev)).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => {}
            Err(e) => {
                return Err(IpamError::store(
                    format!("deleting affinity of {node} to {cidr}"),
                    e,
                ));
            }
        }
        if let Some(list) = self
            .affine_cache
            .lock()
            .expect("poisoned")
            .get_mut(&(node.clone(), cidr.is_ipv6()))
        {
            list.retain(|c| *c != cidr);
        }
        tracing::info!(%node, %cidr, deleted, "released block affinity");
        Ok(true)
    }

    /// Reclaim everything of a deleted node: release the addresses its
    /// workloads and tunnels hold (by handle, so handles go too), delete its
    /// empty blocks and take the affinity off the others.
    pub async fn reclaim_node(&self, node: &str) -> Result<ReclaimReport> {
        let mut report = ReclaimReport::default();
        let mut handles = BTreeSet::new();
        let mut loose = Vec::new();
        for b in self.rw.list_blocks().await? {
            for (ip, attr, seq) in b.value.allocated() {
                if attr.secondary.get(ATTR_NODE).map(String::as_str) != Some(node) {
                    continue;
                }
                match &attr.handle_id {
                    Some(h) => {
                        handles.insert(h.clone());
                    }
                    None => loose.push((ip, Some(seq))),
                }
            }
        }
        for h in handles {
            report
                .released_ips
                .extend(self.release_by_handle(&h).await?);
        }
        report
            .released_ips
            .extend(self.release_checked(&loose).await?);
        for aff in self.rw.list_affinities(Some(node)).await? {
            let cidr = aff.value.cidr;
            let empty = self
                .rw
                .get_block(&cidr)
                .await?
                .is_none_or(|b| b.value.is_empty());
            if self.release_block_affinity(&aff, false).await? {
                if empty {
                    report.deleted_blocks.push(cidr);
                } else {
                    report.unaffined_blocks.push(cidr);
                }
            }
        }
        report.released_ips.sort();
        Ok(report)
    }
}
