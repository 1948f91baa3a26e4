//! What the allocator needs to know about the cluster besides its own keys:
//! IP pools, node labels, reservations. Behind a trait so the allocator does
//! not depend on how resources are stored; [`StaticTopology`] serves tests
//! and tools, and the datastore-backed implementation reads the
//! `projectcalico.org/v3` resources.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ipnetwork::IpNetwork;

use crate::block::{DEFAULT_V4_BLOCK_SIZE, DEFAULT_V6_BLOCK_SIZE, IntendedUse};
use crate::error::{IpamError, Result};

/// Node labels.
pub type Labels = BTreeMap<String, String>;

/// An IP pool as IPAM sees it (the `IPPool` spec fields that matter here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Resource name.
    pub name: String,
    /// The pool's CIDR.
    pub cidr: IpNetwork,
    /// Prefix length of the pool's blocks.
    pub block_size: u8,
    /// Calico selector of the nodes that may use the pool (`""` = `all()`).
    pub node_selector: String,
    /// No new allocation from a disabled pool.
    pub disabled: bool,
    /// What the addresses may be used for; empty means Workload and Tunnel.
    pub allowed_uses: Vec<IntendedUse>,
    /// `assignmentMode: Manual`: used only when asked for by name or CIDR.
    pub manual_assignment: bool,
}

impl Pool {
    /// An enabled pool for every node and use, with the default block size.
    pub fn new(name: &str, cidr: &str) -> Result<Pool> {
        let cidr: IpNetwork = cidr
            .parse()
            .map_err(|e| IpamError::Invalid(format!("ippool {name}: cidr {cidr:?}: {e}")))?;
        let block_size = if cidr.is_ipv4() {
            DEFAULT_V4_BLOCK_SIZE
        } else {
            DEFAULT_V6_BLOCK_SIZE
        };
        let p = Pool {
            name: name.to_string(),
            cidr,
            block_size: block_size.max(cidr.prefix()),
            node_selector: String::new(),
            disabled: false,
            allowed_uses: Vec::new(),
            manual_assignment: false,
        };
        Ok(p)
    }

    /// Same pool with another block size.
    pub fn with_block_size(mut self, block_size: u8) -> Self {
        self.block_size = block_size;
        self
    }

    /// Same pool with a node selector.
    pub fn with_selector(mut self, selector: &str) -> Self {
        self.node_selector = selector.to_string();
        self
    }

    /// Whether the pool allows `use_`.
    pub fn allows(&self, use_: IntendedUse) -> bool {
        self.allowed_uses.is_empty() || self.allowed_uses.contains(&use_)
    }

    /// Number of blocks in the pool.
    pub fn block_count(&self) -> u128 {
        1u128 << (self.block_size - self.cidr.prefix())
    }

    /// The `i`-th block of the pool.
    pub fn nth_block(&self, i: u128) -> IpNetwork {
        let host_bits = if self.cidr.is_ipv4() { 32 } else { 128 } - self.block_size as u32;
        let base = match self.cidr.network() {
            std::net::IpAddr::V4(a) => u32::from(a) as u128,
            std::net::IpAddr::V6(a) => u128::from(a),
        };
        let v = base + (i << host_bits);
        let ip = if self.cidr.is_ipv4() {
            std::net::IpAddr::V4((v as u32).into())
        } else {
            std::net::IpAddr::V6(v.into())
        };
        IpNetwork::new(ip, self.block_size).expect("valid prefix")
    }

    /// Check the block size fits the family and the pool.
    pub fn validate(&self) -> Result<()> {
        let (lo, hi) = if self.cidr.is_ipv4() {
            (20, 32)
        } else {
            (116, 128)
        };
        if self.block_size < lo || self.block_size > hi || self.block_size < self.cidr.prefix() {
            return Err(IpamError::Invalid(format!(
                "ippool {}: blockSize {} is out of range {}..={} (and must not be shorter than the pool's /{})",
                self.name,
                self.block_size,
                lo.max(self.cidr.prefix()),
                hi,
                self.cidr.prefix()
            )));
        }
        Ok(())
    }
}

/// Matches a Calico selector against labels.
pub type SelectorFn = dyn Fn(&str, &Labels) -> Result<bool> + Send + Sync;

/// Cluster facts the allocator reads.
#[async_trait]
pub trait Topology: Send + Sync + fmt::Debug {
    /// Every IP pool.
    async fn pools(&self) -> Result<Vec<Pool>>;
    /// The labels of `node`, `None` if there is no such node.
    async fn node_labels(&self, node: &str) -> Result<Option<Labels>>;
    /// Names of every node (for reclaiming blocks of deleted nodes).
    async fn nodes(&self) -> Result<Vec<String>>;
    /// CIDRs never to hand out (`IPReservation` resources).
    async fn reservations(&self) -> Result<Vec<IpNetwork>>;
    /// Whether `selector` selects a node with `labels`.
    fn selector_matches(&self, selector: &str, labels: &Labels) -> Result<bool>;
}

/// A minimal Calico selector evaluator for the common forms: `all()`, the
/// empty selector, and `&&`-joined terms `k == 'v'`, `k != 'v'`, `has(k)`,
/// `!has(k)`. Richer selectors need the datastore's selector engine.
pub fn simple_selector_matches(selector: &str, labels: &Labels) -> Result<bool> {
    let s = selector.trim();
    if s.is_empty() || s == "all()" {
        return Ok(true);
    }
    let bad = || {
        IpamError::Invalid(format!(
            "nodeSelector {selector:?}: unsupported form; use all(), has(k), !has(k), k == 'v', k != 'v' joined by &&"
        ))
    };
    for term in s.split("&&") {
        let t = term.trim();
        let unquote = |v: &str| -> Option<String> {
            let v = v.trim();
            let q = v.chars().next()?;
            if (q == '\'' || q == '"') && v.len() >= 2 && v.ends_with(q) {
                Some(v[1..v.len() - 1].to_string())
            } else {
                None
            }
        };
        let ok = if let Some(k) = t.strip_prefix("!has(").and_then(|r| r.strip_suffix(')')) {
            !labels.contains_key(k.trim())
        } else if let Some(k) = t.strip_prefix("has(").and_then(|r| r.strip_suffix(')')) {
            labels.contains_key(k.trim())
        } else if let Some((k, v)) = t.split_once("==") {
            labels.get(k.trim()) == Some(&unquote(v).ok_or_else(bad)?)
        } else if let Some((k, v)) = t.split_once("!=") {
            labels.get(k.trim()) != Some(&unquote(v).ok_or_else(bad)?)
        } else {
            return Err(bad());
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[derive(Debug, Default)]
struct StaticInner {
    pools: Vec<Pool>,
    nodes: BTreeMap<String, Labels>,
    reservations: Vec<IpNetwork>,
}

/// An in-memory topology (tests, benches, tools given pools explicitly).
#[derive(Debug, Default, Clone)]
pub struct StaticTopology {
    inner: Arc<Mutex<StaticInner>>,
}

impl StaticTopology {
    /// Empty topology.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a pool.
    pub fn add_pool(&self, pool: Pool) -> &Self {
        self.inner.lock().expect("poisoned").pools.push(pool);
        self
    }

    /// Replace the pool of the same name.
    pub fn update_pool(&self, pool: Pool) {
        let mut g = self.inner.lock().expect("poisoned");
        g.pools.retain(|p| p.name != pool.name);
        g.pools.push(pool);
    }

    /// Add (or relabel) a node.
    pub fn add_node(&self, name: &str, labels: &[(&str, &str)]) -> &Self {
        self.inner.lock().expect("poisoned").nodes.insert(
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    /// Remove a node.
    pub fn remove_node(&self, name: &str) {
        self.inner.lock().expect("poisoned").nodes.remove(name);
    }

    /// Add a reservation.
    pub fn add_reservation(&self, cidr: IpNetwork) -> &Self {
        self.inner.lock().expect("poisoned").reservations.push(cidr);
        self
    }
}

#[async_trait]
impl Topology for StaticTopology {
    async fn pools(&self) -> Result<Vec<Pool>> {
        Ok(self.inner.lock().expect("poisoned").pools.clone())
    }
    async fn node_labels(&self, node: &str) -> Result<Option<Labels>> {
        Ok(self
            .inner
            .lock()
            .expect("poisoned")
            .nodes
            .get(node)
            .cloned())
    }
    async fn nodes(&self) -> Result<Vec<String>> {
        Ok(self
            .inner
            .lock()
            .expect("poisoned")
            .nodes
            .keys()
            .cloned()
            .collect())
    }
    async fn reservations(&self) -> Result<Vec<IpNetwork>> {
        Ok(self.inner.lock().expect("poisoned").reservations.clone())
    }
    fn selector_matches(&self, selector: &str, labels: &Labels) -> Result<bool> {
        simple_selector_matches(selector, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_selectors() {
        let l: Labels = [("zone".to_string(), "a".to_string())].into();
        assert!(simple_selector_matches("", &l).unwrap());
        assert!(simple_selector_matches("all()", &l).unwrap());
        assert!(simple_selector_matches("zone == 'a'", &l).unwrap());
        assert!(!simple_selector_matches("zone == \"b\"", &l).unwrap());
        assert!(simple_selector_matches("has(zone) && zone != 'b'", &l).unwrap());
        assert!(!simple_selector_matches("!has(zone)", &l).unwrap());
        assert!(simple_selector_matches("zone in {'a'}", &l).is_err());
    }

    #[test]
    fn pool_blocks() {
        let p = Pool::new("p", "10.0.0.0/24").unwrap();
        assert_eq!(p.block_count(), 4);
        assert_eq!(
            p.nth_block(3),
            "10.0.0.192/26".parse::<IpNetwork>().unwrap()
        );
        let p6 = Pool::new("p6", "fd10::/120").unwrap();
        assert_eq!(
            p6.nth_block(1),
            "fd10::40/122".parse::<IpNetwork>().unwrap()
        );
        assert!(p.clone().with_block_size(19).validate().is_err());
        assert!(p.with_block_size(28).validate().is_ok());
    }
}
