//! Consistency check and leak GC.
//!
//! [`Ipam::check`] reads every block, handle and affinity and reports:
//! leaked addresses (allocated, but no handle refers to them, or their handle
//! is not in the caller's set of live handles), handles counting more (or
//! fewer) addresses than the blocks hold, blocks affine to deleted nodes,
//! blocks overlapping each other or not matching any pool's block size, and
//! affinities left half-way by an interrupted claim or release; and local
//! workloads manx-node found stale (their pod netns or host veth gone, the
//! runtime never said DEL), which it marks with the annotations
//! [`STALE_SINCE_ANNOTATION`], [`STALE_REASON_ANNOTATION`] and
//! [`RECLAIM_AT_ANNOTATION`] and reclaims after its grace period.
//!
//! The reads are not one snapshot, so a finding can be an operation in
//! flight. [`Gc`] therefore acts on a finding only when two checks at least a
//! grace period apart saw the very same thing (same sequence number, same
//! revision), and re-validates it against a fresh read right before acting;
//! address releases carry the allocation's sequence number so a reused
//! address is never freed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use datastore::client::Client;
use datastore::model::WorkloadEndpoint;
use datastore::model::ipam::AffinityState;
use datastore::model::ipam::IPAMHandle;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::allocator::Ipam;
use crate::blockrw::{Versioned, is_conflict};
use crate::error::{IpamError, Result};
use crate::keys;

/// An allocated address nothing will release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakedAddress {
    pub ip: IpAddr,
    pub block: IpNetwork,
    pub handle_id: Option<String>,
    /// The allocation's sequence number: release only if still this one.
    pub sequence: u64,
    pub node: Option<String>,
    pub reason: String,
}

/// A handle whose count for a block differs from what the block holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandleMismatch {
    pub handle_id: String,
    pub block: String,
    pub counted: u64,
    pub actual: u64,
    /// The handle's revision when seen (GC acts only if unchanged).
    pub revision: i64,
}

/// A block affine to a node that no longer exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedNodeBlock {
    pub node: String,
    pub block: IpNetwork,
    pub in_use: u32,
}

/// A block that overlaps another or fits no pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadBlock {
    pub block: IpNetwork,
    pub reason: String,
}

/// An affinity not in the steady state (confirmed, with its block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DanglingAffinity {
    pub node: String,
    pub block: IpNetwork,
    pub state: String,
    pub revision: i64,
    pub reason: String,
}

/// WorkloadEndpoint annotation (written by manx-node's reclaim scan): Unix
/// seconds when the node first saw the workload stale.
pub const STALE_SINCE_ANNOTATION: &str = "manx.dev/stale-since";
/// WorkloadEndpoint annotation: what is gone, e.g. `netns /run/netns/x is
/// gone; veth cali0123456789a is gone`.
pub const STALE_REASON_ANNOTATION: &str = "manx.dev/stale-reason";
/// WorkloadEndpoint annotation: Unix seconds from which the node reclaims
/// the workload; absent while its host veth exists (then it is never
/// reclaimed).
pub const RECLAIM_AT_ANNOTATION: &str = "manx.dev/reclaim-at";

/// A workload endpoint its node marked stale: the runtime never said DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleWorkload {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub container_id: String,
    pub addresses: Vec<IpNetwork>,
    /// Unix seconds.
    pub since: u64,
    pub reason: String,
    /// Unix seconds; `None` while the host veth exists (never reclaimed).
    pub reclaim_at: Option<u64>,
}

impl StaleWorkload {
    /// The endpoint's mark, if it has one.
    pub fn from_endpoint(w: &WorkloadEndpoint) -> Option<StaleWorkload> {
        let a = &w.metadata.annotations;
        let since = a.get(STALE_SINCE_ANNOTATION)?.trim().parse().ok()?;
        Some(StaleWorkload {
            namespace: w.metadata.namespace.clone().unwrap_or_default(),
            name: w.metadata.name.clone(),
            node: w.spec.node.clone().unwrap_or_default(),
            container_id: w.spec.container_id.clone().unwrap_or_default(),
            addresses: w.spec.ip_networks.clone(),
            since,
            reason: a
                .get(STALE_REASON_ANNOTATION)
                .cloned()
                .unwrap_or_else(|| "netns or veth gone".into()),
            reclaim_at: a
                .get(RECLAIM_AT_ANNOTATION)
                .and_then(|v| v.trim().parse().ok()),
        })
    }

    /// The report line, at `now` (Unix seconds).
    pub fn describe(&self, now: u64) -> String {
        let addrs = if self.addresses.is_empty() {
            "no addresses".to_string()
        } else {
            self.addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let when = match self.reclaim_at {
            Some(at) if at > now => format!("reclaimed in {} s", at - now),
            Some(_) => "reclaimed at the node's next scan".to_string(),
            None => "kept while its veth exists".to_string(),
        };
        format!(
            "workload endpoint {}/{} on node {} (container {}, {addrs}): {} since {} ({} s ago), {when}; the runtime never called CNI DEL",
            self.namespace,
            self.name,
            self.node,
            self.container_id,
            self.reason,
            datastore::model::meta::rfc3339_from_unix(self.since),
            now.saturating_sub(self.since),
        )
    }
}

/// What [`Ipam::check`] found. Serializes to the JSON report of
/// `manxctl ipam check -o report.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub checked_at_ms: u64,
    pub blocks: usize,
    pub allocations: usize,
    pub handles: usize,
    pub affinities: usize,
    pub leaked_addresses: Vec<LeakedAddress>,
    pub handle_mismatches: Vec<HandleMismatch>,
    pub deleted_node_blocks: Vec<DeletedNodeBlock>,
    pub bad_blocks: Vec<BadBlock>,
    pub dangling_affinities: Vec<DanglingAffinity>,
    /// Marked stale by their node (absent in reports of older versions).
    #[serde(default)]
    pub stale_workloads: Vec<StaleWorkload>,
}

impl CheckReport {
    /// Nothing to report.
    pub fn is_clean(&self) -> bool {
        self.leaked_addresses.is_empty()
            && self.handle_mismatches.is_empty()
            && self.deleted_node_blocks.is_empty()
            && self.bad_blocks.is_empty()
            && self.dangling_affinities.is_empty()
            && self.stale_workloads.is_empty()
    }

    /// One line per problem.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.leaked_addresses {
            out.push(format!(
                "leaked address {} in block {} (handle {}): {}",
                l.ip,
                l.block,
                l.handle_id.as_deref().unwrap_or("<none>"),
                l.reason
            ));
        }
        for h in &self.handle_mismatches {
            out.push(format!(
                "handle {} counts {} address(es) in block {} but the block holds {}",
                h.handle_id, h.counted, h.block, h.actual
            ));
        }
        for d in &self.deleted_node_blocks {
            out.push(format!(
                "block {} is affine to deleted node {} ({} in use)",
                d.block, d.node, d.in_use
            ));
        }
        for b in &self.bad_blocks {
            out.push(format!("block {}: {}", b.block, b.reason));
        }
        for a in &self.dangling_affinities {
            out.push(format!(
                "affinity of {} to {} ({}): {}",
                a.node, a.block, a.state, a.reason
            ));
        }
        for w in &self.stale_workloads {
            out.push(w.describe(self.checked_at_ms / 1000));
        }
        out
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Checked {} blocks, {} allocations, {} handles, {} affinities.",
            self.blocks, self.allocations, self.handles, self.affinities
        )?;
        let p = self.problems();
        if p.is_empty() {
            writeln!(f, "No problems found.")
        } else {
            writeln!(f, "Found {} problem(s):", p.len())?;
            for l in p {
                writeln!(f, "  - {l}")?;
            }
            Ok(())
        }
    }
}

fn state_str(s: AffinityState) -> &'static str {
    match s {
        AffinityState::Pending => "pending",
        AffinityState::Confirmed => "confirmed",
        AffinityState::PendingDeletion => "pendingDeletion",
    }
}

impl Ipam {
    /// Check IPAM consistency. `live_handles`, if given, is the set of handles
    /// that belong to running workloads (and tunnel addresses): allocations of
    /// other handles are reported as leaked.
    pub async fn check(&self, live_handles: Option<&HashSet<String>>) -> Result<CheckReport> {
        // Blocks first, then handles: an allocation writes its handle before
        // its block, so a block entry read here has its handle by the time
        // handles are read (unless released meanwhile; GC re-validates).
        let blocks = self.rw.list_blocks().await?;
        let handles = self.rw.list_handles().await?;
        let affinities = self.rw.list_affinities(None).await?;
        let pools = self.topology.pools().await?;
        let nodes: HashSet<String> = self.topology.nodes().await?.into_iter().collect();
        let mut r = CheckReport {
            checked_at_ms: self.now_ms(),
            blocks: blocks.len(),
            handles: handles.len(),
            affinities: affinities.len(),
            ..CheckReport::default()
        };
        let handle_map: HashMap<&str, &Versioned<IPAMHandle>> = handles
            .iter()
            .map(|h| (h.value.handle_id.as_str(), h))
            .collect();
        // (handle, block) -> actual count.
        let mut actual: BTreeMap<(String, String), u64> = BTreeMap::new();
        for b in &blocks {
            let cidr = b.value.cidr();
            for (ip, attr, seq) in b.value.allocated() {
                r.allocations += 1;
                let node = attr.secondary.get(crate::block::ATTR_NODE).cloned();
                let leak = |reason: String| LeakedAddress {
                    ip,
                    block: cidr,
                    handle_id: attr.handle_id.clone(),
                    sequence: seq,
                    node: node.clone(),
                    reason,
                };
                let Some(h) = &attr.handle_id else {
                    r.leaked_addresses
                        .push(leak("allocation has no handle".into()));
                    continue;
                };
                *actual.entry((h.clone(), cidr.to_string())).or_default() += 1;
                match handle_map.get(h.as_str()) {
                    None => r
                        .leaked_addresses
                        .push(leak(format!("handle {h} does not exist"))),
                    Some(hv) if !hv.value.block.contains_key(&cidr.to_string()) => r
                        .leaked_addresses
                        .push(leak(format!("handle {h} does not list block {cidr}"))),
                    Some(_) => {
                        if let Some(live) = live_handles
                            && !live.contains(h)
                        {
                            r.leaked_addresses
                                .push(leak(format!("handle {h} belongs to no live workload")));
                        }
                    }
                }
            }
        }
        for h in &handles {
            for (block, counted) in &h.value.block {
                let a = actual
                    .get(&(h.value.handle_id.clone(), block.clone()))
                    .copied()
                    .unwrap_or(0);
                if a != *counted {
                    r.handle_mismatches.push(HandleMismatch {
                        handle_id: h.value.handle_id.clone(),
                        block: block.clone(),
                        counted: *counted,
                        actual: a,
                        revision: h.revision,
                    });
                }
            }
        }
        // Blocks: affinity to deleted nodes, fit to pools, overlaps.
        let mut sorted: Vec<IpNetwork> = blocks.iter().map(|b| b.value.cidr()).collect();
        sorted.sort_by_key(|c| (c.is_ipv6(), c.network(), c.prefix()));
        for w in sorted.windows(2) {
            if w[0].is_ipv6() == w[1].is_ipv6() && w[0].contains(w[1].network()) {
                r.bad_blocks.push(BadBlock {
                    block: w[1],
                    reason: format!("overlaps block {}", w[0]),
                });
            }
        }
        let aff_keys: HashSet<(String, IpNetwork)> = affinities
            .iter()
            .map(|a| (a.value.node.clone(), a.value.cidr))
            .collect();
        for b in &blocks {
            let cidr = b.value.cidr();
            match pools.iter().find(|p| p.cidr.contains(cidr.network())) {
                None => r.bad_blocks.push(BadBlock {
                    block: cidr,
                    reason: "is in no IP pool".into(),
                }),
                Some(p) if p.block_size != cidr.prefix() => r.bad_blocks.push(BadBlock {
                    block: cidr,
                    reason: format!(
                        "has prefix /{} but pool {} has blockSize {}",
                        cidr.prefix(),
                        p.cidr,
                        p.block_size
                    ),
                }),
                Some(_) => {}
            }
            if let Some(node) = b.value.affine_node() {
                if !nodes.is_empty() && !nodes.contains(node) {
                    r.deleted_node_blocks.push(DeletedNodeBlock {
                        node: node.to_string(),
                        block: cidr,
                        in_use: b.value.in_use(),
                    });
                }
                if !aff_keys.contains(&(node.to_string(), cidr)) {
                    r.dangling_affinities.push(DanglingAffinity {
                        node: node.to_string(),
                        block: cidr,
                        state: "missing".into(),
                        revision: 0,
                        reason: "block is affine to the node but the affinity is missing".into(),
                    });
                }
            }
        }
        let block_aff: HashMap<IpNetwork, Option<String>> = blocks
            .iter()
            .map(|b| (b.value.cidr(), b.value.affine_node().map(str::to_string)))
            .collect();
        for a in &affinities {
            let reason = match (a.value.state, block_aff.get(&a.value.cidr)) {
                (AffinityState::Confirmed, Some(Some(n))) if *n == a.value.node => continue,
                (_, None) => "the block does not exist".to_string(),
                (_, Some(other)) if other.as_deref() != Some(a.value.node.as_str()) => format!(
                    "the block is affine to {}",
                    other.as_deref().unwrap_or("no node")
                ),
                (AffinityState::Pending, _) => "claim not confirmed".into(),
                (AffinityState::PendingDeletion, _) => "release not finished".into(),
                (AffinityState::Confirmed, _) => continue,
            };
            r.dangling_affinities.push(DanglingAffinity {
                node: a.value.node.clone(),
                block: a.value.cidr,
                state: state_str(a.value.state).into(),
                revision: a.revision,
                reason,
            });
        }
        let (weps, _) = Client::new(self.rw.store().clone())
            .list::<WorkloadEndpoint>()
            .await
            .map_err(|e| match e {
                datastore::client::ClientError::Store(s) => {
                    IpamError::store("listing workload endpoints", s)
                }
                other => IpamError::Invalid(format!("listing workload endpoints: {other}")),
            })?;
        r.stale_workloads = weps
            .iter()
            .filter_map(StaleWorkload::from_endpoint)
            .collect();
        Ok(r)
    }
}

/// Options of [`Gc`].
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// A finding must be seen by two checks at least this far apart.
    pub grace: Duration,
    /// Reclaim blocks and addresses of nodes that no longer exist.
    pub reclaim_deleted_nodes: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(60),
            reclaim_deleted_nodes: true,
        }
    }
}

/// What one GC round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub released_addresses: Vec<IpAddr>,
    pub fixed_handles: Vec<String>,
    pub fixed_affinities: Vec<String>,
    pub reclaimed_nodes: Vec<String>,
    pub released_empty_blocks: Vec<IpNetwork>,
    /// Findings seen for the first time (or not yet past the grace period).
    pub waiting: usize,
}

/// A leak garbage collector: remembers findings between rounds.
#[derive(Debug, Default)]
pub struct Gc {
    opts: GcOptions,
    first_seen: HashMap<String, u64>,
}

impl Gc {
    /// A collector with `opts`.
    pub fn new(opts: GcOptions) -> Self {
        Gc {
            opts,
            first_seen: HashMap::new(),
        }
    }

    /// One round: check, then act on findings seen before and older than the
    /// grace period, each re-validated just before acting.
    pub async fn run(&mut self, ipam: &Ipam, live: Option<&HashSet<String>>) -> Result<GcReport> {
        let report = ipam.check(live).await?;
        let now = report.checked_at_ms;
        let grace = self.opts.grace.as_millis() as u64;
        let mut out = GcReport::default();
        let mut seen_now = HashMap::new();
        let mut ripe = |key: String, out: &mut GcReport| -> bool {
            let first = *self.first_seen.get(&key).unwrap_or(&now);
            seen_now.insert(key, first);
            let ok = first < now && now - first >= grace;
            if !ok {
                out.waiting += 1;
            }
            ok
        };
        let mut to_release = Vec::new();
        for l in &report.leaked_addresses {
            let key = format!("addr/{}/{}/{:?}", l.ip, l.sequence, l.handle_id);
            if ripe(key, &mut out) {
                to_release.push(l.clone());
            }
        }
        let mut handles = Vec::new();
        for h in &report.handle_mismatches {
            let key = format!("handle/{}/{}/{}", h.handle_id, h.block, h.revision);
            if ripe(key, &mut out) {
                handles.push(h.clone());
            }
        }
        let mut affs = Vec::new();
        for a in &report.dangling_affinities {
            let key = format!("aff/{}/{}/{}/{}", a.node, a.block, a.state, a.revision);
            if ripe(key, &mut out) {
                affs.push(a.clone());
            }
        }
        let mut nodes = Vec::new();
        if self.opts.reclaim_deleted_nodes {
            for d in &report.deleted_node_blocks {
                if ripe(format!("node/{}", d.node), &mut out) && !nodes.contains(&d.node) {
                    nodes.push(d.node.clone());
                }
            }
        }
        self.first_seen = seen_now;

        for l in to_release {
            if revalidate_leak(ipam, &l, live).await? {
                out.released_addresses
                    .extend(ipam.release_checked(&[(l.ip, Some(l.sequence))]).await?);
            }
        }
        for h in handles {
            if fix_handle(ipam, &h).await? {
                out.fixed_handles.push(h.handle_id);
            }
        }
        for a in affs {
            if fix_affinity(ipam, &a).await? {
                out.fixed_affinities.push(format!("{}/{}", a.node, a.block));
            }
        }
        let existing: HashSet<String> = ipam.topology.nodes().await?.into_iter().collect();
        for n in nodes {
            if !existing.is_empty() && !existing.contains(&n) {
                ipam.reclaim_node(&n).await?;
                out.reclaimed_nodes.push(n);
            }
        }
        out.released_empty_blocks = ipam.release_empty_blocks(None).await?;
        Ok(out)
    }
}

/// Is `l` still a leak, read fresh?
async fn revalidate_leak(
    ipam: &Ipam,
    l: &LeakedAddress,
    live: Option<&HashSet<String>>,
) -> Result<bool> {
    let Some(b) = ipam.rw.get_block(&l.block).await? else {
        return Ok(false);
    };
    if b.value.sequence_of(l.ip) != Some(l.sequence) {
        return Ok(false);
    }
    let attr = b.value.attributes_of(l.ip).cloned().unwrap_or_default();
    if attr.handle_id != l.handle_id {
        return Ok(false);
    }
    let Some(h) = &attr.handle_id else {
        return Ok(true);
    };
    if live.is_some_and(|live| live.contains(h)) {
        return Ok(false);
    }
    match ipam.rw.get_handle(h).await? {
        None => Ok(true),
        Some(hv) if !hv.value.block.contains_key(&l.block.to_string()) => Ok(true),
        Some(_) => Ok(live.is_some()),
    }
}

/// Set a handle's count for a block to what the block holds, if the handle
/// is unchanged since the check.
async fn fix_handle(ipam: &Ipam, m: &HandleMismatch) -> Result<bool> {
    let Some(h) = ipam.rw.get_handle(&m.handle_id).await? else {
        return Ok(false);
    };
    if h.revision != m.revision {
        return Ok(false);
    }
    let cidr: IpNetwork = m.block.parse().map_err(|e| {
        IpamError::Invalid(format!("handle {}: block {}: {e}", m.handle_id, m.block))
    })?;
    let actual = match ipam.rw.get_block(&cidr).await? {
        Some(b) => b.value.ips_of_handle(&m.handle_id).len() as u64,
        None => 0,
    };
    let mut v = h.value.clone();
    if actual == 0 {
        v.block.remove(&m.block);
    } else {
        v.block.insert(m.block.clone(), actual);
    }
    let key = keys::handle(&m.handle_id);
    let res = if v.block.is_empty() {
        ipam.rw.delete_raw(&key, Some(h.revision)).await
    } else {
        ipam.rw.update_raw(&key, &v, h.revision).await
    };
    match res {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(IpamError::store(
            format!("fixing handle {}", m.handle_id),
            e,
        )),
    }
}

/// Finish an interrupted claim or release.
async fn fix_affinity(ipam: &Ipam, a: &DanglingAffinity) -> Result<bool> {
    if a.state == "missing" {
        // Block says affine, no affinity key: take the affinity off the block
        // (it becomes a plain block others can borrow from, and is released
        // when empty like any other).
        let node = a.node.clone();
        let r = ipam
            .modify_block(&a.block, |b| {
                if b.affine_node() == Some(node.as_str()) {
                    b.set_affinity(None);
                    Ok(Some(()))
                } else {
                    Ok(None)
                }
            })
            .await?;
        return Ok(r.is_some());
    }
    let Some(aff) = ipam.rw.get_affinity(&a.node, &a.block).await? else {
        return Ok(false);
    };
    if aff.revision != a.revision {
        return Ok(false);
    }
    let block = ipam.rw.get_block(&a.block).await?;
    let affine = block
        .as_ref()
        .is_some_and(|b| b.value.affine_node() == Some(a.node.as_str()));
    let key = keys::affinity(&a.node, &a.block);
    match aff.value.state {
        AffinityState::Pending if affine => {
            let mut v = aff.value.clone();
            v.state = AffinityState::Confirmed;
            Ok(ipam.rw.update_raw(&key, &v, aff.revision).await.is_ok())
        }
        AffinityState::PendingDeletion if affine => ipam.release_block_affinity(&aff, false).await,
        _ if !affine => Ok(ipam.rw.delete_raw(&key, Some(aff.revision)).await.is_ok()),
        _ => Ok(false),
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
