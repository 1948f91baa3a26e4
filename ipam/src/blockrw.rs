//! Reading and writing IPAM objects with compare-and-swap (libcalico-go's
//! `ipam_block_reader_writer.go`): typed get/list/create/update/delete of
//! blocks, affinities, handles and the IPAM config, each returning the
//! revision to CAS against; plus the fault-injection hook used by the crash
//! tests.
//!
//! Nothing here retries: the allocator owns the retry loops, because only it
//! knows what to recompute after a conflict.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;

use datastore::client::ClientError;
use datastore::model::ipam::{BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle};
use datastore::model::{IPAMConfiguration, IPAMConfigurationSpec};
use datastore::{Datastore, KeyValue, Revision, StoreError};
use ipnetwork::IpNetwork;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::block::Block;
use crate::error::{IpamError, Result};
use crate::keys;

/// A value with the revision to compare-and-swap against.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub revision: Revision,
}

/// The places between datastore writes where a crash can be injected. Each
/// is hit right *after* the named write succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultPoint {
    /// Allocation: block and handle written (one transaction), before
    /// returning to the caller.
    AfterBlockAllocate,
    /// Claim: affinity written as pending, block not yet created.
    AfterAffinityPending,
    /// Affinity release: affinity marked pendingDeletion, block not deleted.
    AfterAffinityPendingDeletion,
    /// Affinity release: block deleted, affinity not yet deleted.
    AfterBlockDelete,
}

impl FaultPoint {
    /// Every fault point.
    pub const ALL: [FaultPoint; 4] = [
        FaultPoint::AfterBlockAllocate,
        FaultPoint::AfterAffinityPending,
        FaultPoint::AfterAffinityPendingDeletion,
        FaultPoint::AfterBlockDelete,
    ];
}

/// A plan of crashes: "crash the `n`-th time `point` is reached". A crashed
/// operation returns [`IpamError::InjectedCrash`] at once, doing none of the
/// writes or clean-ups that would follow, exactly as a `kill -9` would.
#[derive(Default)]
pub struct FaultPlan {
    inner: Mutex<FaultInner>,
}

#[derive(Default)]
struct FaultInner {
    /// point -> remaining hits before the crash (1 = next hit crashes).
    armed: BTreeMap<FaultPoint, u64>,
    hits: BTreeMap<FaultPoint, u64>,
    crashed: Vec<FaultPoint>,
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.inner.lock().expect("poisoned");
        f.debug_struct("FaultPlan")
            .field("armed", &g.armed)
            .field("hits", &g.hits)
            .field("crashed", &g.crashed)
            .finish()
    }
}

impl FaultPlan {
    /// A plan with nothing armed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Crash the `nth` (1-based) time `point` is reached from now on.
    pub fn arm(&self, point: FaultPoint, nth: u64) {
        self.inner
            .lock()
            .expect("poisoned")
            .armed
            .insert(point, nth.max(1));
    }

    /// How often `point` was reached.
    pub fn hits(&self, point: FaultPoint) -> u64 {
        *self
            .inner
            .lock()
            .expect("poisoned")
            .hits
            .get(&point)
            .unwrap_or(&0)
    }

    /// The crashes that happened, in order.
    pub fn crashed(&self) -> Vec<FaultPoint> {
        self.inner.lock().expect("poisoned").crashed.clone()
    }

    fn hit(&self, point: FaultPoint) -> Result<()> {
        let mut g = self.inner.lock().expect("poisoned");
        *g.hits.entry(point).or_default() += 1;
        if let Some(left) = g.armed.get_mut(&point) {
            *left -= 1;
            if *left == 0 {
                g.armed.remove(&point);
                g.crashed.push(point);
                return Err(IpamError::InjectedCrash(point));
            }
        }
        Ok(())
    }
}

/// Typed CAS access to the IPAM keys.
#[derive(Debug, Clone)]
pub struct BlockRw {
    store: Arc<dyn Datastore>,
    faults: Option<Arc<FaultPlan>>,
}

fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|e| IpamError::Decode {
        key: kv.key.clone(),
        reason: e.to_string(),
    })
}

/// The stored form of an IPAM object.
pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("IPAM types serialize")
}

/// A client error on the IPAM configuration, with races kept recognisable
/// by [`is_conflict`].
fn config_err(doing: &str, e: ClientError) -> IpamError {
    let key = format!("IPAMConfiguration {}", IPAMConfiguration::DEFAULT_NAME);
    let source = match e {
        ClientError::Store(s) => s,
        ClientError::Conflict {
            expected, found, ..
        } => StoreError::Conflict {
            key,
            expected,
            found,
        },
        ClientError::AlreadyExists { .. } => StoreError::AlreadyExists { key },
        ClientError::NotFound { .. } => StoreError::NotFound { key },
        other => StoreError::Other(other.to_string()),
    };
    IpamError::store(format!("{doing} the IPAM configuration"), source)
}

/// Whether a store error means "someone else wrote first".
pub fn is_conflict(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::NotFound { .. }
    )
}

impl BlockRw {
    /// Over `store`, no faults.
    pub fn new(store: Arc<dyn Datastore>) -> Self {
        BlockRw {
            store,
            faults: None,
        }
    }

    /// Enable fault injection (tests).
    pub fn with_faults(mut self, faults: Arc<FaultPlan>) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Datastore> {
        &self.store
    }

    /// Reach a fault point: `Err(InjectedCrash)` if the plan says so.
    pub fn fault(&self, point: FaultPoint) -> Result<()> {
        match &self.faults {
            Some(f) => f.hit(point),
            None => Ok(()),
        }
    }

    async fn get_typed<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Versioned<T>>> {
        let kv = self
            .store
            .get(key)
            .await
            .map_err(|e| IpamError::store(format!("reading {key}"), e))?;
        kv.map(|kv| {
            Ok(Versioned {
                value: decode(&kv)?,
                revision: kv.mod_revision,
            })
        })
        .transpose()
    }

    async fn list_raw(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        Ok(self
            .store
            .list(prefix)
            .await
            .map_err(|e| IpamError::store(format!("listing {prefix}"), e))?
            .items)
    }

    /// Create `key` (raw store error so callers can tell conflicts apart).
    pub async fn create_raw<T: Serialize>(
        &self,
        key: &str,
        v: &T,
    ) -> std::result::Result<Revision, StoreError> {
        self.store.create(key, encode(v)).await
    }

    /// CAS-update `key` at `rev`.
    pub async fn update_raw<T: Serialize>(
        &self,
        key: &str,
        v: &T,
        rev: Revision,
    ) -> std::result::Result<Revision, StoreError> {
        self.store.update(key, encode(v), rev).await
    }

    /// Delete `key` at `rev`.
    pub async fn delete_raw(
        &self,
        key: &str,
        rev: Option<Revision>,
    ) -> std::result::Result<Revision, StoreError> {
        self.store.delete(key, rev).await
    }

    // ---- blocks ----

    /// Read block `cidr`.
    pub async fn get_block(&self, cidr: &IpNetwork) -> Result<Option<Versioned<Block>>> {
        let Some(v) = self.get_typed::<IPAMBlock>(&keys::block(cidr)).await? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: Block::from_model(v.value)?,
            revision: v.revision,
        }))
    }

    /// Every block (both families).
    pub async fn list_blocks(&self) -> Result<Vec<Versioned<Block>>> {
        let mut out = Vec::new();
        for kv in self.list_raw(&keys::all_blocks_prefix()).await? {
            let m: IPAMBlock = decode(&kv)?;
            out.push(Versioned {
                value: Block::from_model(m)?,
                revision: kv.mod_revision,
            });
        }
        Ok(out)
    }

    /// The CIDRs of every block of a family (keys only; cheap to decode).
    pub async fn list_block_cidrs(&self, v6: bool) -> Result<Vec<IpNetwork>> {
        Ok(self
            .list_raw(&keys::blocks_prefix(v6))
            .await?
            .iter()
            .filter_map(|kv| keys::parse_cidr_segment(&kv.key))
            .collect())
    }

    /// Create block (fails with the raw store error on a race).
    pub async fn create_block(&self, b: &Block) -> std::result::Result<Revision, StoreError> {
        self.create_raw(&keys::block(&b.cidr()), &b.to_model())
            .await
    }

    /// CAS-update block.
    pub async fn update_block(
        &self,
        b: &Block,
        rev: Revision,
    ) -> std::result::Result<Revision, StoreError> {
        self.update_raw(&keys::block(&b.cidr()), &b.to_model(), rev)
            .await
    }

    // ---- affinities ----

    /// Read `node`'s affinity to `cidr`.
    pub async fn get_affinity(
        &self,
        node: &str,
        cidr: &IpNetwork,
    ) -> Result<Option<Versioned<BlockAffinity>>> {
        self.get_typed(&keys::affinity(node, cidr)).await
    }

    /// Affinities of `node` (or of every node with `None`).
    pub async fn list_affinities(
        &self,
        node: Option<&str>,
    ) -> Result<Vec<Versioned<BlockAffinity>>> {
        let prefix = match node {
            Some(n) => keys::node_affinities_prefix(n),
            None => keys::all_affinities_prefix(),
        };
        let mut out = Vec::new();
        for kv in self.list_raw(&prefix).await? {
            out.push(Versioned {
                value: decode(&kv)?,
                revision: kv.mod_revision,
            });
        }
        Ok(out)
    }

    // ---- handles ----

    /// Read a handle.
    pub async fn get_handle(&self, id: &str) -> Result<Option<Versioned<IPAMHandle>>> {
        self.get_typed(&keys::handle(id)).await
    }

    /// Every handle.
    pub async fn list_handles(&self) -> Result<Vec<Versioned<IPAMHandle>>> {
        let mut out = Vec::new();
        for kv in self.list_raw(&keys::handles_prefix()).await? {
            out.push(Versioned {
                value: decode(&kv)?,
                revision: kv.mod_revision,
            });
        }
        Ok(out)
    }

    // ---- config ----

    /// The IPAM configuration: the `IPAMConfiguration` resource named
    /// `default` (the one place it lives, as in Calico, where calicoctl
    /// `ipam configure` and the v3 resource are the same object); defaults
    /// and revision 0 if it was never written.
    pub async fn get_config(&self) -> Result<Versioned<IPAMConfig>> {
        let client = datastore::client::Client::new(self.store.clone());
        let res = client
            .get::<IPAMConfiguration>(IPAMConfiguration::DEFAULT_NAME)
            .await
            .map_err(|e| config_err("reading", e))?;
        Ok(match res {
            Some(r) => Versioned {
                revision: r
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                value: IPAMConfig {
                    strict_affinity: r.spec.strict_affinity(),
                    auto_allocate_blocks: r.spec.auto_allocate_blocks(),
                    max_blocks_per_host: r.spec.max_blocks_per_host().unwrap_or(0),
                },
            },
            None => Versioned {
                value: IPAMConfig::default(),
                revision: 0,
            },
        })
    }

    /// Write the IPAM configuration (CAS against `rev`; 0 = create).
    pub async fn put_config(&self, cfg: &IPAMConfig, rev: Revision) -> Result<Revision> {
        let client = datastore::client::Client::new(self.store.clone());
        let mut res = IPAMConfiguration::new(IPAMConfigurationSpec {
            strict_affinity: Some(cfg.strict_affinity),
            max_blocks_per_host: Some(cfg.max_blocks_per_host),
            auto_allocate_blocks: Some(cfg.auto_allocate_blocks),
        });
        let written = if rev == 0 {
            client.create(&res).await
        } else {
            res.metadata.resource_version = Some(rev.to_string());
            client.update(&res).await
        }
        .map_err(|e| config_err("writing", e))?;
        Ok(written
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_plan_crashes_on_the_nth_hit_only() {
        let plan = FaultPlan::new();
        plan.arm(FaultPoint::AfterAffinityPending, 2);
        assert!(plan.hit(FaultPoint::AfterAffinityPending).is_ok());
        assert!(matches!(
            plan.hit(FaultPoint::AfterAffinityPending),
            Err(IpamError::InjectedCrash(FaultPoint::AfterAffinityPending))
        ));
        assert!(plan.hit(FaultPoint::AfterAffinityPending).is_ok());
        assert_eq!(plan.hits(FaultPoint::AfterAffinityPending), 3);
        assert_eq!(plan.crashed(), vec![FaultPoint::AfterAffinityPending]);
    }
}
