//! IPAM internals: [`IPAMBlock`], [`BlockAffinity`], [`IPAMHandle`] and the
//! IPAM-wide [`IPAMConfig`], stored as JSON in the same shape as Calico's
//! libcalico-go `model.AllocationBlock`, `BlockAffinity`, `IPAMHandle` and
//! `IPAMConfig` so that dumps read alike.
//!
//! These are plain serde types; the logic (allocation, free queue, sequence
//! numbers) lives in the `ipam` crate, which converts to and from them.
//!
//! Key layout (owned by the `ipam` crate, documented there too):
//!
//! | key | value |
//! |-----|-------|
//! | `/manx/ipam/v2/assignment/ipv4/block/10.0.0.0-26` | [`IPAMBlock`] |
//! | `/manx/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26` | [`BlockAffinity`] |
//! | `/manx/ipam/v2/handle/<handle>` | [`IPAMHandle`] |
//!
//! [`IPAMConfig`] is the in-memory form of the `IPAMConfiguration` resource
//! named `default`, which is where the configuration is stored.

use std::collections::BTreeMap;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// One allocation block (Calico `AllocationBlock`): a CIDR of `2^(bits -
/// blockSize)` addresses, optionally affine to a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IPAMBlock {
    /// The block's CIDR, e.g. `10.0.0.0/26`.
    pub cidr: IpNetwork,
    /// `host:<node>` when the block is affine to a node, else `None`.
    #[serde(default)]
    pub affinity: Option<String>,
    /// Per ordinal (address offset in the block): `Some(i)` = allocated, with
    /// attributes at `attributes[i]`; `None` = free.
    pub allocations: Vec<Option<usize>>,
    /// The free ordinals in the order they will be handed out (front first).
    pub unallocated: Vec<u32>,
    /// Attributes shared by allocations (deduplicated).
    #[serde(default)]
    pub attributes: Vec<AllocationAttribute>,
    /// Bumped on every allocation; see `sequence_number_for_allocation`.
    #[serde(default)]
    pub sequence_number: u64,
    /// Ordinal (decimal string, as Calico) → the block sequence number at the
    /// time that ordinal was allocated. A release carrying another number is
    /// stale (the address was released and reused meanwhile) and is ignored.
    #[serde(default)]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    /// Set while the block is being deleted (Calico's two-step delete).
    #[serde(default)]
    pub deleted: bool,
    /// Unix time in milliseconds at which the block last became empty; `None`
    /// while it holds allocations. Drives the grace period after which an
    /// empty block loses its affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_since_ms: Option<u64>,
}

/// Attributes of one or more allocations (Calico `AllocationAttribute`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AllocationAttribute {
    /// The handle owning the allocation (`<network>.<container id>` for pods).
    #[serde(rename = "handle_id", default)]
    pub handle_id: Option<String>,
    /// Free-form metadata: `node`, `namespace`, `pod`, `type` (intended use:
    /// `workload` or `tunnel`), ...
    #[serde(default)]
    pub secondary: BTreeMap<String, String>,
}

/// State of a block affinity (Calico `BlockAffinityState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Claimed, block not yet written (or write not yet confirmed).
    Pending,
    /// The block exists and is affine to the node.
    Confirmed,
    /// Being released: the block's affinity is being removed.
    PendingDeletion,
}

/// A node's claim on a block (Calico `BlockAffinity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockAffinity {
    pub state: AffinityState,
    pub node: String,
    pub cidr: IpNetwork,
    #[serde(default)]
    pub deleted: bool,
}

/// The allocations of one handle, counted per block (Calico `IPAMHandle`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IPAMHandle {
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block CIDR (`10.0.0.0/26`) → number of addresses held in it.
    #[serde(default)]
    pub block: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
}

/// IPAM-wide settings (Calico `IPAMConfig`, the backend form of the
/// `IPAMConfiguration` resource).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IPAMConfig {
    /// Never borrow addresses from blocks affine to other nodes.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Claim new blocks when the node's blocks are full.
    #[serde(default = "default_true")]
    pub auto_allocate_blocks: bool,
    /// At most this many blocks per node and address family; 0 = unlimited.
    #[serde(default)]
    pub max_blocks_per_host: u32,
}

fn default_true() -> bool {
    true
}

impl Default for IPAMConfig {
    fn default() -> Self {
        IPAMConfig {
            strict_affinity: false,
            auto_allocate_blocks: true,
            max_blocks_per_host: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_json_has_calico_field_names() {
        let block = IPAMBlock {
            cidr: "10.0.0.0/30".parse().unwrap(),
            affinity: Some("host:n1".into()),
            allocations: vec![Some(0), None, None, None],
            unallocated: vec![1, 2, 3],
            attributes: vec![AllocationAttribute {
                handle_id: Some("net.abc".into()),
                secondary: BTreeMap::from([("node".into(), "n1".into())]),
            }],
            sequence_number: 1,
            sequence_number_for_allocation: BTreeMap::from([("0".into(), 0)]),
            deleted: false,
            empty_since_ms: None,
        };
        let json = serde_json::to_value(&block).unwrap();
        assert_eq!(json["cidr"], "10.0.0.0/30");
        assert_eq!(json["affinity"], "host:n1");
        assert_eq!(
            json["allocations"],
            serde_json::json!([0, null, null, null])
        );
        assert_eq!(json["attributes"][0]["handle_id"], "net.abc");
        assert_eq!(json["sequenceNumberForAllocation"]["0"], 0);
        assert!(json.get("emptySinceMs").is_none());
        let back: IPAMBlock = serde_json::from_value(json).unwrap();
        assert_eq!(back, block);
    }

    #[test]
    fn affinity_and_handle_json() {
        let aff = BlockAffinity {
            state: AffinityState::PendingDeletion,
            node: "n1".into(),
            cidr: "fd10::/122".parse().unwrap(),
            deleted: false,
        };
        let json = serde_json::to_string(&aff).unwrap();
        assert!(json.contains("\"state\":\"pendingDeletion\""), "{json}");
        let handle = IPAMHandle {
            handle_id: "k8s-pod-network.c1".into(),
            block: BTreeMap::from([("10.0.0.0/26".into(), 2)]),
            deleted: false,
        };
        let json = serde_json::to_value(&handle).unwrap();
        assert_eq!(json["handleID"], "k8s-pod-network.c1");
        assert_eq!(json["block"]["10.0.0.0/26"], 2);
    }

    #[test]
    fn config_defaults_when_fields_missing() {
        let cfg: IPAMConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, IPAMConfig::default());
        assert!(cfg.auto_allocate_blocks);
    }
}
