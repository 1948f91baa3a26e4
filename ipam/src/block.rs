//! The allocation block: a pure data structure, no I/O (libcalico-go's
//! `ipam_block.go`). The datastore dance lives in [`crate::blockrw`].
//!
//! A block covers a CIDR (IPv4 `/26` and IPv6 `/122` by default: 64
//! addresses). Each address is an *ordinal* (its offset from the network
//! address). The block keeps:
//!
//! * `allocations[ordinal]`: `Some(i)` = allocated with `attributes[i]`.
//! * a free queue: allocation takes from the front, release pushes to the
//!   back, so a just-released address is the *last* to be reused (a late
//!   packet to a dead pod's address does not reach a new pod).
//! * attributes (handle id + metadata), deduplicated and compacted.
//! * a block sequence number, bumped on every allocation, and per allocated
//!   ordinal the number it got: a release carrying an old number is stale
//!   (the address was freed and handed out again meanwhile) and must not free
//!   the new owner's address.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::IpAddr;

use datastore::model::ipam::{AllocationAttribute, IPAMBlock};
use ipnetwork::IpNetwork;

/// Default IPv4 block prefix length (64 addresses), as Calico.
pub const DEFAULT_V4_BLOCK_SIZE: u8 = 26;
/// Default IPv6 block prefix length (64 addresses), as Calico.
pub const DEFAULT_V6_BLOCK_SIZE: u8 = 122;
/// Largest block we accept: 2^16 addresses (Calico's pools allow blockSize
/// 20..=32 for IPv4, 116..=128 for IPv6, i.e. at most 2^12).
pub const MAX_BLOCK_HOST_BITS: u8 = 16;

/// Secondary attribute key for the node that asked for the address.
pub const ATTR_NODE: &str = "node";
/// Secondary attribute key for the pod's namespace.
pub const ATTR_NAMESPACE: &str = "namespace";
/// Secondary attribute key for the pod's name.
pub const ATTR_POD: &str = "pod";
/// Secondary attribute key for the intended use (`workload` | `tunnel`).
pub const ATTR_TYPE: &str = "type";

/// What an address is for (Calico `AllowedUse`/`ipam.AttributeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IntendedUse {
    /// A pod's address.
    #[default]
    Workload,
    /// A node's tunnel address (IPIP / VXLAN device).
    Tunnel,
}

impl IntendedUse {
    /// The string stored in attributes and pools' `allowedUses`.
    pub fn as_str(self) -> &'static str {
        match self {
            IntendedUse::Workload => "Workload",
            IntendedUse::Tunnel => "Tunnel",
        }
    }
}

impl fmt::Display for IntendedUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The attributes of an allocation, in convenient form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attrs {
    /// Owning handle.
    pub handle_id: String,
    /// Node that asked for the address.
    pub node: Option<String>,
    /// Pod namespace.
    pub namespace: Option<String>,
    /// Pod name.
    pub pod: Option<String>,
    /// What the address is for.
    pub intended_use: IntendedUse,
    /// Anything else worth recording.
    pub extra: BTreeMap<String, String>,
}

impl Attrs {
    /// Attributes with only a handle (and use `Workload`).
    pub fn handle(handle_id: impl Into<String>) -> Self {
        Attrs {
            handle_id: handle_id.into(),
            ..Attrs::default()
        }
    }

    /// The stored form.
    pub fn to_attribute(&self) -> AllocationAttribute {
        let mut secondary = self.extra.clone();
        if let Some(n) = &self.node {
            secondary.insert(ATTR_NODE.into(), n.clone());
        }
        if let Some(n) = &self.namespace {
            secondary.insert(ATTR_NAMESPACE.into(), n.clone());
        }
        if let Some(p) = &self.pod {
            secondary.insert(ATTR_POD.into(), p.clone());
        }
        secondary.insert(ATTR_TYPE.into(), self.intended_use.as_str().into());
        AllocationAttribute {
            handle_id: Some(self.handle_id.clone()),
            secondary,
        }
    }
}

/// Errors of block operations (no I/O: these are logic errors).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlockError {
    #[error(
        "block {cidr}: {bits} host bits is larger than the maximum {MAX_BLOCK_HOST_BITS}: use a longer blockSize"
    )]
    TooLarge { cidr: IpNetwork, bits: u8 },
    #[error("block {cidr}: not a network address (host bits set): use {expected}")]
    NotAligned {
        cidr: IpNetwork,
        expected: IpNetwork,
    },
    #[error("block {cidr}: address {ip} is outside the block")]
    OutOfRange { cidr: IpNetwork, ip: IpAddr },
    #[error("block {cidr}: address {ip} is already allocated (handle {handle})")]
    AlreadyAllocated {
        cidr: IpNetwork,
        ip: IpAddr,
        handle: String,
    },
    #[error("block {cidr}: stored block is corrupt: {reason}")]
    Corrupt { cidr: IpNetwork, reason: String },
}

/// Outcome of releasing one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Freed; the handle that held it.
    Released { handle_id: Option<String> },
    /// Was not allocated: nothing to do (idempotent release).
    NotAllocated,
    /// The caller's sequence number is not the address's current one: it was
    /// released and reallocated since; left alone.
    Stale { current: u64 },
}

/// An allocation block. See the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    cidr: IpNetwork,
    affinity: Option<String>,
    allocations: Vec<Option<usize>>,
    free: VecDeque<u32>,
    attributes: Vec<AllocationAttribute>,
    sequence_number: u64,
    seq_for: BTreeMap<u32, u64>,
    deleted: bool,
    empty_since_ms: Option<u64>,
}

fn host_bits(cidr: &IpNetwork) -> u8 {
    match cidr {
        IpNetwork::V4(n) => 32 - n.prefix(),
        IpNetwork::V6(n) => 128 - n.prefix(),
    }
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The affinity string Calico stores for a node: `host:<node>`.
pub fn host_affinity(node: &str) -> String {
    format!("host:{node}")
}

impl Block {
    /// A fresh, empty block affine to `node` (if any). `cidr` must be a
    /// network address with at most [`MAX_BLOCK_HOST_BITS`] host bits.
    pub fn new(cidr: IpNetwork, node: Option<&str>) -> Result<Block, BlockError> {
        let bits = host_bits(&cidr);
        if bits > MAX_BLOCK_HOST_BITS {
            return Err(BlockError::TooLarge { cidr, bits });
        }
        let expected = IpNetwork::new(cidr.network(), cidr.prefix()).expect("same prefix is valid");
        if cidr.ip() != cidr.network() {
            return Err(BlockError::NotAligned { cidr, expected });
        }
        let size = 1u32 << bits;
        Ok(Block {
            cidr,
            affinity: node.map(host_affinity),
            allocations: vec![None; size as usize],
            free: (0..size).collect(),
            attributes: Vec::new(),
            sequence_number: 0,
            seq_for: BTreeMap::new(),
            deleted: false,
            empty_since_ms: None,
        })
    }

    /// The block's CIDR.
    pub fn cidr(&self) -> IpNetwork {
        self.cidr
    }

    /// `host:<node>` or `None`.
    pub fn affinity(&self) -> Option<&str> {
        self.affinity.as_deref()
    }

    /// The node the block is affine to, if any.
    pub fn affine_node(&self) -> Option<&str> {
        self.affinity
            .as_deref()
            .and_then(|a| a.strip_prefix("host:"))
    }

    /// Set or clear the affinity.
    pub fn set_affinity(&mut self, node: Option<&str>) {
        self.affinity = node.map(host_affinity);
    }

    /// Number of addresses in the block.
    pub fn size(&self) -> u32 {
        self.allocations.len() as u32
    }

    /// Number of allocated addresses.
    pub fn in_use(&self) -> u32 {
        self.size() - self.free.len() as u32
    }

    /// Number of free addresses (reserved ones included).
    pub fn free_count(&self) -> u32 {
        self.free.len() as u32
    }

    /// No address allocated.
    pub fn is_empty(&self) -> bool {
        self.free.len() == self.allocations.len()
    }

    /// The block sequence number (bumped on each allocation).
    pub fn sequence_number(&self) -> u64 {
        self.sequence_number
    }

    /// When the block last became empty (unix ms), `None` while in use or if
    /// it has never held an address.
    pub fn empty_since_ms(&self) -> Option<u64> {
        self.empty_since_ms
    }

    /// Record that the block is empty since `now_ms` (a freshly claimed block
    /// counts as empty from its claim, so an unused claim is released too).
    pub fn mark_empty_since(&mut self, now_ms: u64) {
        if self.is_empty() {
            self.empty_since_ms = Some(now_ms);
        }
    }

    /// Whether the block is marked deleted.
    pub fn deleted(&self) -> bool {
        self.deleted
    }

    /// Mark (or unmark) deleted.
    pub fn set_deleted(&mut self, deleted: bool) {
        self.deleted = deleted;
    }

    /// The address at `ordinal`.
    pub fn ip(&self, ordinal: u32) -> IpAddr {
        let base = ip_to_u128(self.cidr.network());
        let v = base + ordinal as u128;
        match self.cidr {
            IpNetwork::V4(_) => IpAddr::V4((v as u32).into()),
            IpNetwork::V6(_) => IpAddr::V6(v.into()),
        }
    }

    /// The ordinal of `ip`, or `None` if it is outside the block.
    pub fn ordinal(&self, ip: IpAddr) -> Option<u32> {
        if !self.cidr.contains(ip) {
            return None;
        }
        Some((ip_to_u128(ip) - ip_to_u128(self.cidr.network())) as u32)
    }

    /// Attributes of the allocation at `ip` (if allocated).
    pub fn attributes_of(&self, ip: IpAddr) -> Option<&AllocationAttribute> {
        let ord = self.ordinal(ip)?;
        self.allocations[ord as usize].map(|i| &self.attributes[i])
    }

    /// The sequence number the allocation at `ip` got (if allocated).
    pub fn sequence_of(&self, ip: IpAddr) -> Option<u64> {
        let ord = self.ordinal(ip)?;
        self.allocations[ord as usize]?;
        self.seq_for.get(&ord).copied()
    }

    /// Every allocation: address, attributes, sequence number.
    pub fn allocated(&self) -> impl Iterator<Item = (IpAddr, &AllocationAttribute, u64)> + '_ {
        self.allocations
            .iter()
            .enumerate()
            .filter_map(move |(ord, a)| {
                a.map(|i| {
                    let ord = ord as u32;
                    (
                        self.ip(ord),
                        &self.attributes[i],
                        self.seq_for.get(&ord).copied().unwrap_or(0),
                    )
                })
            })
    }

    /// Addresses held by `handle_id`.
    pub fn ips_of_handle(&self, handle_id: &str) -> Vec<IpAddr> {
        self.allocated()
            .filter(|(_, a, _)| a.handle_id.as_deref() == Some(handle_id))
            .map(|(ip, _, _)| ip)
            .collect()
    }

    /// How many free addresses `allocate` could hand out, skipping the
    /// addresses for which `reserved` is true.
    pub fn available(&self, reserved: &dyn Fn(IpAddr) -> bool) -> u32 {
        self.free.iter().filter(|&&o| !reserved(self.ip(o))).count() as u32
    }

    fn attribute_index(&mut self, attr: AllocationAttribute) -> usize {
        if let Some(i) = self.attributes.iter().position(|a| *a == attr) {
            return i;
        }
        self.attributes.push(attr);
        self.attributes.len() - 1
    }

    /// Allocate up to `n` addresses from the front of the free queue, skipping
    /// `reserved` ones (they keep their place in the queue). Returns the
    /// addresses with the sequence number they got (fewer than `n` if the
    /// block runs out).
    pub fn allocate(
        &mut self,
        n: usize,
        attrs: &Attrs,
        reserved: &dyn Fn(IpAddr) -> bool,
    ) -> Vec<(IpAddr, u64)> {
        let mut picked = Vec::with_capacity(n);
        let mut kept = VecDeque::with_capacity(self.free.len());
        while let Some(ord) = self.free.pop_front() {
            if picked.len() < n && !reserved(self.ip(ord)) {
                picked.push(ord);
            } else {
                kept.push_back(ord);
                if picked.len() == n {
                    kept.extend(self.free.drain(..));
                }
            }
        }
        self.free = kept;
        if picked.is_empty() {
            return Vec::new();
        }
        let idx = self.attribute_index(attrs.to_attribute());
        let seq = self.sequence_number;
        self.sequence_number += 1;
        self.empty_since_ms = None;
        picked
            .into_iter()
            .map(|ord| {
                self.allocations[ord as usize] = Some(idx);
                self.seq_for.insert(ord, seq);
                (self.ip(ord), seq)
            })
            .collect()
    }

    /// Allocate the specific address `ip` (Calico `AssignIP`).
    pub fn assign(&mut self, ip: IpAddr, attrs: &Attrs) -> Result<u64, BlockError> {
        let ord = self.ordinal(ip).ok_or(BlockError::OutOfRange {
            cidr: self.cidr,
            ip,
        })?;
        if let Some(i) = self.allocations[ord as usize] {
            return Err(BlockError::AlreadyAllocated {
                cidr: self.cidr,
                ip,
                handle: self.attributes[i].handle_id.clone().unwrap_or_default(),
            });
        }
        let pos = self
            .free
            .iter()
            .position(|&o| o == ord)
            .expect("unallocated ordinal is in the free queue");
        self.free.remove(pos);
        let idx = self.attribute_index(attrs.to_attribute());
        let seq = self.sequence_number;
        self.sequence_number += 1;
        self.empty_since_ms = None;
        self.allocations[ord as usize] = Some(idx);
        self.seq_for.insert(ord, seq);
        Ok(seq)
    }

    /// Release `ip`. With `expected_seq`, only if the allocation still has that
    /// sequence number. The address goes to the back of the free queue. `now_ms`
    /// stamps the moment the block becomes empty.
    pub fn release(
        &mut self,
        ip: IpAddr,
        expected_seq: Option<u64>,
        now_ms: u64,
    ) -> Result<Release, BlockError> {
        let ord = self.ordinal(ip).ok_or(BlockError::OutOfRange {
            cidr: self.cidr,
            ip,
        })?;
        let Some(idx) = self.allocations[ord as usize] else {
            return Ok(Release::NotAllocated);
        };
        let current = self.seq_for.get(&ord).copied().unwrap_or(0);
        if let Some(seq) = expected_seq
            && seq != current
        {
            return Ok(Release::Stale { current });
        }
        let handle_id = self.attributes[idx].handle_id.clone();
        self.allocations[ord as usize] = None;
        self.seq_for.remove(&ord);
        self.free.push_back(ord);
        self.compact_attributes();
        if self.is_empty() {
            self.empty_since_ms = Some(now_ms);
        }
        Ok(Release::Released { handle_id })
    }

    /// Release every address of `handle_id`; returns them.
    pub fn release_handle(&mut self, handle_id: &str, now_ms: u64) -> Vec<IpAddr> {
        let ips = self.ips_of_handle(handle_id);
        for ip in &ips {
            self.release(*ip, None, now_ms).expect("ip is in the block");
        }
        ips
    }

    /// Drop attributes no allocation refers to and renumber the rest.
    fn compact_attributes(&mut self) {
        let mut used = vec![false; self.attributes.len()];
        for i in self.allocations.iter().flatten() {
            used[*i] = true;
        }
        if used.iter().all(|u| *u) {
            return;
        }
        let mut remap = vec![usize::MAX; self.attributes.len()];
        let mut next = 0;
        for (i, u) in used.iter().enumerate() {
            if *u {
                remap[i] = next;
                next += 1;
            }
        }
        let old = std::mem::take(&mut self.attributes);
        self.attributes = old
            .into_iter()
            .zip(used.iter())
            .filter(|(_, u)| **u)
            .map(|(a, _)| a)
            .collect();
        for a in self.allocations.iter_mut().flatten() {
            *a = remap[*a];
        }
    }

    /// Check every structural invariant; `Err` says which one broke.
    pub fn check_invariants(&self) -> Result<(), String> {
        let size = self.allocations.len();
        let mut in_free = vec![false; size];
        for &o in &self.free {
            let o = o as usize;
            if o >= size {
                return Err(format!("free ordinal {o} out of range"));
            }
            if in_free[o] {
                return Err(format!("ordinal {o} twice in the free queue"));
            }
            in_free[o] = true;
            if self.allocations[o].is_some() {
                return Err(format!("ordinal {o} both free and allocated"));
            }
        }
        let allocated = self.allocations.iter().filter(|a| a.is_some()).count();
        if allocated + self.free.len() != size {
            return Err(format!(
                "{allocated} allocated + {} free != {size}",
                self.free.len()
            ));
        }
        let mut referenced = vec![false; self.attributes.len()];
        for (o, a) in self.allocations.iter().enumerate() {
            if let Some(i) = a {
                if *i >= self.attributes.len() {
                    return Err(format!("ordinal {o} refers to missing attribute {i}"));
                }
                referenced[*i] = true;
                match self.seq_for.get(&(o as u32)) {
                    Some(s) if *s < self.sequence_number => {}
                    Some(s) => {
                        return Err(format!(
                            "ordinal {o} has seq {s} >= block seq {}",
                            self.sequence_number
                        ));
                    }
                    None => return Err(format!("ordinal {o} allocated without a seq")),
                }
            }
        }
        if let Some(i) = referenced.iter().position(|r| !r) {
            return Err(format!("attribute {i} is not referenced"));
        }
        if self.seq_for.len() != allocated {
            return Err("sequence numbers kept for free ordinals".into());
        }
        Ok(())
    }

    /// The stored form.
    pub fn to_model(&self) -> IPAMBlock {
        IPAMBlock {
            cidr: self.cidr,
            affinity: self.affinity.clone(),
            allocations: self.allocations.clone(),
            unallocated: self.free.iter().copied().collect(),
            attributes: self.attributes.clone(),
            sequence_number: self.sequence_number,
            sequence_number_for_allocation: self
                .seq_for
                .iter()
                .map(|(o, s)| (o.to_string(), *s))
                .collect(),
            deleted: self.deleted,
            empty_since_ms: self.empty_since_ms,
        }
    }

    /// From the stored form; validates it.
    pub fn from_model(m: IPAMBlock) -> Result<Block, BlockError> {
        let corrupt = |reason: String| BlockError::Corrupt {
            cidr: m.cidr,
            reason,
        };
        let mut block = Block::new(m.cidr, None)?;
        if m.allocations.len() != block.allocations.len() {
            return Err(corrupt(format!(
                "{} allocation slots for {} addresses",
                m.allocations.len(),
                block.allocations.len()
            )));
        }
        let mut seq_for = BTreeMap::new();
        for (k, v) in &m.sequence_number_for_allocation {
            let o: u32 = k
                .parse()
                .map_err(|_| corrupt(format!("sequence key {k:?} is not an ordinal")))?;
            seq_for.insert(o, *v);
        }
        // Older writers did not record a sequence number for every ordinal;
        // treat a missing one as 0 rather than refusing the block.
        for (o, a) in m.allocations.iter().enumerate() {
            if a.is_some() {
                seq_for.entry(o as u32).or_insert(0);
            }
        }
        seq_for.retain(|o, _| m.allocations.get(*o as usize).is_some_and(|a| a.is_some()));
        block.affinity = m.affinity.clone();
        block.allocations = m.allocations.clone();
        block.free = m.unallocated.iter().copied().collect();
        block.attributes = m.attributes.clone();
        block.sequence_number = m.sequence_number;
        block.seq_for = seq_for;
        block.deleted = m.deleted;
        block.empty_since_ms = m.empty_since_ms;
        if block.seq_for.values().any(|s| *s >= block.sequence_number) && !block.seq_for.is_empty()
        {
            block.sequence_number = block.seq_for.values().max().copied().unwrap_or(0) + 1;
        }
        block.check_invariants().map_err(corrupt)?;
        Ok(block)
    }
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
