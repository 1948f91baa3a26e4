//! The node's view of the cluster: every key under `/manx/` as the
//! datastore watch delivers it, and the views derived from it (pools, nodes,
//! BGP settings, this node's blocks, workloads, borrowed addresses).
//!
//! One watch over the whole prefix keeps the views consistent with each
//! other at a revision; the derived views are recomputed after a burst of
//! events, not per event.

use std::collections::BTreeMap;
use std::net::IpAddr;

use datastore::model::ipam::{AffinityState, BlockAffinity, IPAMBlock};
use datastore::model::{BGPConfiguration, BGPPeer, IPPool, Node, Resource, WorkloadEndpoint};
use datastore::{KeyValue, Listing, Revision, WatchEvent};
use ipnetwork::IpNetwork;

/// The prefix the node watches.
pub const WATCH_PREFIX: &str = "/manx/";

/// Raw keys and values, as of `revision`.
#[derive(Debug, Default, Clone)]
pub struct ClusterCache {
    kvs: BTreeMap<String, Vec<u8>>,
    pub revision: Revision,
}

impl ClusterCache {
    /// Replace everything with a listing.
    pub fn reset(&mut self, listing: Listing) {
        self.kvs = listing
            .items
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        self.revision = listing.revision;
    }

    /// Apply one watch event. Returns true if anything changed.
    pub fn apply(&mut self, ev: WatchEvent) -> bool {
        self.revision = self.revision.max(ev.revision());
        match ev {
            WatchEvent::Put(KeyValue { key, value, .. }) => {
                self.kvs.insert(key, value.clone()) != Some(value)
            }
            WatchEvent::Delete { key, .. } => self.kvs.remove(&key).is_some(),
            WatchEvent::Resync(listing) => {
                self.reset(listing);
                true
            }
        }
    }

    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Vec<u8>)> {
        self.kvs
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Decode the resources of one kind; undecodable values are skipped
    /// with a warning (one bad object must not stop the node).
    fn resources<T>(&self, plural: &str, pick: impl Fn(Resource) -> Option<T>) -> Vec<T> {
        let prefix = format!("{}{plural}/", datastore::client::RESOURCE_PREFIX);
        self.under(&prefix)
            .filter_map(|(k, v)| match serde_json::from_slice::<Resource>(v) {
                Ok(r) => pick(r),
                Err(e) => {
                    tracing::warn!(key = %k, error = %e, "skipping an undecodable object");
                    None
                }
            })
            .collect()
    }

    /// The derived view.
    pub fn view(&self, me: &str) -> ClusterView {
        let pools = self.resources("ippools", |r| match r {
            Resource::IPPool(p) => Some(p),
            _ => None,
        });
        let nodes = self.resources("nodes", |r| match r {
            Resource::Node(n) => Some(n),
            _ => None,
        });
        let bgp_configs = self.resources("bgpconfigurations", |r| match r {
            Resource::BGPConfiguration(c) => Some(c),
            _ => None,
        });
        let bgp_peers = self.resources("bgppeers", |r| match r {
            Resource::BGPPeer(p) => Some(p),
            _ => None,
        });
        let workloads = self.resources("workloadendpoints", |r| match r {
            Resource::WorkloadEndpoint(w) if w.spec.node.as_deref() == Some(me) => Some(w),
            _ => None,
        });
        let mut local_blocks = Vec::new();
        let aff_prefix = format!("{}host/{me}/", ipam::keys::ROOT);
        for (_, v) in self.under(&aff_prefix) {
            if let Ok(a) = serde_json::from_slice::<BlockAffinity>(v)
                && a.state == AffinityState::Confirmed
                && !a.deleted
            {
                local_blocks.push(a.cidr);
            }
        }
        // Addresses this node borrowed from other nodes' blocks: announced
        // as /32 (/128) so the other nodes route them here, not to the
        // block's owner.
        let mut borrowed = Vec::new();
        let me_affinity = format!("host:{me}");
        for (_, v) in self.under(&ipam::keys::all_blocks_prefix()) {
            let Ok(b) = serde_json::from_slice::<IPAMBlock>(v) else {
                continue;
            };
            if b.affinity.as_deref() == Some(me_affinity.as_str()) {
                continue;
            }
            for (ordinal, alloc) in b.allocations.iter().enumerate() {
                let Some(attr) = alloc.and_then(|i| b.attributes.get(i)) else {
                    continue;
                };
                if attr.secondary.get("node").map(String::as_str) == Some(me)
                    && let Some(ip) = nth_addr(&b.cidr, ordinal)
                {
                    borrowed.push(IpNetwork::from(ip));
                }
            }
        }
        ClusterView {
            pools,
            nodes,
            bgp_configs,
            bgp_peers,
            workloads,
            local_blocks,
            borrowed,
        }
    }
}

/// The `n`th address of a network.
pub fn nth_addr(net: &IpNetwork, n: usize) -> Option<IpAddr> {
    match net {
        IpNetwork::V4(v4) => {
            let base = u32::from(v4.network());
            Some(IpAddr::from(std::net::Ipv4Addr::from(
                base.checked_add(n as u32)?,
            )))
        }
        IpNetwork::V6(v6) => {
            let base = u128::from(v6.network());
            Some(IpAddr::from(std::net::Ipv6Addr::from(
                base.checked_add(n as u128)?,
            )))
        }
    }
}

/// Everything the node derives from the cache.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub pools: Vec<IPPool>,
    pub nodes: Vec<Node>,
    pub bgp_configs: Vec<BGPConfiguration>,
    pub bgp_peers: Vec<BGPPeer>,
    /// WorkloadEndpoints on this node.
    pub workloads: Vec<WorkloadEndpoint>,
    /// Blocks confirmed affine to this node.
    pub local_blocks: Vec<IpNetwork>,
    /// Single addresses this node borrowed from other nodes' blocks.
    pub borrowed: Vec<IpNetwork>,
}

impl ClusterView {
    /// The pool a prefix belongs to.
    pub fn pool_of(&self, prefix: &IpNetwork) -> Option<&IPPool> {
        self.pools.iter().find(|p| {
            p.spec.cidr.is_ipv4() == prefix.is_ipv4()
                && p.spec.cidr.contains(prefix.network())
                && p.spec.cidr.prefix() <= prefix.prefix()
        })
    }

    /// Prefixes this node announces: its affine blocks and borrowed
    /// addresses, except in pools with `disableBGPExport`.
    pub fn originated(&self) -> Vec<IpNetwork> {
        let mut out: Vec<IpNetwork> = self
            .local_blocks
            .iter()
            .chain(self.borrowed.iter())
            .filter(|p| {
                self.pool_of(p)
                    .is_some_and(|pool| !pool.spec.disable_bgp_export())
            })
            .copied()
            .collect();
        if let Some(cfg) = bgpd::cluster::cluster_config(&self.bgp_configs) {
            for c in cfg.spec.service_cluster_ips.iter().flatten() {
                if let Ok(net) = c.cidr.parse::<IpNetwork>() {
                    out.push(net);
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The node owning `ip` as its BGP address.
    pub fn node_by_ip(&self, ip: IpAddr) -> Option<&Node> {
        self.nodes.iter().find(|n| {
            n.ipv4_address().map(|(a, _)| IpAddr::V4(a)) == Some(ip)
                || n.ipv6_address().map(|(a, _)| IpAddr::V6(a)) == Some(ip)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_addr_counts_from_the_network() {
        let n: IpNetwork = "10.65.1.64/26".parse().unwrap();
        assert_eq!(nth_addr(&n, 3).unwrap().to_string(), "10.65.1.67");
        let n6: IpNetwork = "fd00:65::/122".parse().unwrap();
        assert_eq!(nth_addr(&n6, 10).unwrap().to_string(), "fd00:65::a");
    }
}
