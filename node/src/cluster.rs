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
use datastore::model::{
    BGPConfiguration, BGPFilter, BGPPeer, EncapMode as V3Encap, FelixConfiguration,
    FelixConfigurationSpec, IPPool, Node, Resource, WorkloadEndpoint,
};
use datastore::{KeyValue, Listing, Revision, WatchEvent};
use felix::{
    DataplaneInput, LocalWorkload, PeerNode, PoolInfo, RemoteBlock, Tunnel, Uplink,
    WireguardSettings,
};
use ipnetwork::IpNetwork;

use crate::startup::Tunnels;

/// The prefix the node watches.
pub const WATCH_PREFIX: &str = "/manx/";

/// Raw keys and values, as of `revision`: those that can change this
/// node's view ([`ClusterCache::keeps`]).
///
/// Every write to the store reaches every node's watch. A node used to keep
/// every key and rebuild its whole view (decoding every pool, node, block
/// and endpoint of the cluster) after each, so one pod's ADD cost each of N
/// nodes O(N) work. Keys that cannot matter here are now dropped as they
/// arrive: other nodes' endpoints and affinities, IPAM handles, and blocks
/// that lend this node no address. Such a write leaves the node idle.
#[derive(Debug, Default, Clone)]
pub struct ClusterCache {
    me: String,
    kvs: BTreeMap<String, Vec<u8>>,
    pub revision: Revision,
}

impl ClusterCache {
    /// An empty cache for node `me`.
    pub fn new(me: &str) -> ClusterCache {
        ClusterCache {
            me: me.to_string(),
            ..Default::default()
        }
    }

    /// Replace everything with a listing.
    pub fn reset(&mut self, listing: Listing) {
        let mut kvs = BTreeMap::new();
        for kv in listing.items {
            if self.keeps(&kv.key, &kv.value) {
                kvs.insert(kv.key, kv.value);
            }
        }
        self.kvs = kvs;
        self.revision = listing.revision;
    }

    /// Apply one watch event. Returns true if this node's view may have
    /// changed (a kept key changed, or one kept before is gone).
    pub fn apply(&mut self, ev: WatchEvent) -> bool {
        self.revision = self.revision.max(ev.revision());
        match ev {
            WatchEvent::Put(KeyValue { key, value, .. }) => {
                if self.keeps(&key, &value) {
                    self.kvs.insert(key, value.clone()) != Some(value)
                } else {
                    self.kvs.remove(&key).is_some()
                }
            }
            WatchEvent::Delete { key, .. } => self.kvs.remove(&key).is_some(),
            WatchEvent::Resync(listing) => {
                self.reset(listing);
                true
            }
        }
    }

    /// Whether `key` with `value` can change [`ClusterCache::view`]: not an
    /// IPAM handle, nor another node's affinity or endpoint, nor a block
    /// that lends this node no address. Anything else is kept (an
    /// undecodable endpoint too, so the view warns about it).
    fn keeps(&self, key: &str, value: &[u8]) -> bool {
        if let Some(ipam_key) = key.strip_prefix(ipam::keys::ROOT) {
            if ipam_key.starts_with("handle/") {
                return false;
            }
            if let Some(host) = ipam_key.strip_prefix("host/") {
                return host
                    .strip_prefix(self.me.as_str())
                    .is_some_and(|r| r.starts_with('/'));
            }
            if ipam_key.starts_with("assignment/") {
                return serde_json::from_slice::<IPAMBlock>(value)
                    .is_ok_and(|b| !borrowed_from(&b, &self.me).is_empty());
            }
            return true;
        }
        let endpoints = format!("{}workloadendpoints/", datastore::client::RESOURCE_PREFIX);
        if key.starts_with(&endpoints) {
            return match serde_json::from_slice::<Resource>(value) {
                Ok(Resource::WorkloadEndpoint(w)) => w.spec.node.as_deref() == Some(&self.me),
                _ => true,
            };
        }
        true
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
    pub fn view(&self) -> ClusterView {
        let me = self.me.as_str();
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
        let felix_configs = self.resources("felixconfigurations", |r| match r {
            // Written by another tool past validation: refused, not half-used.
            Resource::FelixConfiguration(c) => match c.validate() {
                Ok(()) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "refusing an invalid FelixConfiguration");
                    None
                }
            },
            _ => None,
        });
        let bgp_peers = self.resources("bgppeers", |r| match r {
            Resource::BGPPeer(p) => Some(p),
            _ => None,
        });
        let bgp_filters = self.resources("bgpfilters", |r| match r {
            Resource::BGPFilter(f) => Some(f),
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
        for (_, v) in self.under(&ipam::keys::all_blocks_prefix()) {
            if let Ok(b) = serde_json::from_slice::<IPAMBlock>(v) {
                borrowed.extend(borrowed_from(&b, me));
            }
        }
        ClusterView {
            pools,
            nodes,
            bgp_configs,
            felix_configs,
            bgp_peers,
            bgp_filters,
            workloads,
            local_blocks,
            borrowed,
        }
    }
}

/// The addresses of block `b` allocated to node `me` while the block is
/// not affine to `me` (borrowed), as host prefixes.
fn borrowed_from(b: &IPAMBlock, me: &str) -> Vec<IpNetwork> {
    if b.affinity.as_deref().and_then(|a| a.strip_prefix("host:")) == Some(me) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (ordinal, alloc) in b.allocations.iter().enumerate() {
        let Some(attr) = alloc.and_then(|i| b.attributes.get(i)) else {
            continue;
        };
        if attr.secondary.get("node").map(String::as_str) == Some(me)
            && let Some(ip) = nth_addr(&b.cidr, ordinal)
        {
            out.push(IpNetwork::from(ip));
        }
    }
    out
}

/// The key at `Node.status.wireguardPublicKey` (where calico-node publishes it).
pub fn wireguard_public_key(n: &Node) -> Option<&str> {
    n.status.as_ref()?.get(WIREGUARD_STATUS_KEY)?.as_str()
}

/// The field of `Node.status` holding the node's WireGuard public key.
pub const WIREGUARD_STATUS_KEY: &str = "wireguardPublicKey";

/// Set (or, with None, remove) `Node.status.wireguardPublicKey`.
pub fn record_wireguard_key(n: &mut Node, key: Option<&str>) {
    let status = n.status.get_or_insert_with(|| serde_json::json!({}));
    let Some(map) = status.as_object_mut() else {
        return;
    };
    match key {
        Some(k) => {
            map.insert(WIREGUARD_STATUS_KEY.into(), k.into());
        }
        None => {
            map.remove(WIREGUARD_STATUS_KEY);
        }
    }
    if map.is_empty() {
        n.status = None;
    }
}

/// A v3 encapsulation mode as felix-lite spells it.
pub fn encap(m: V3Encap) -> felix::EncapMode {
    match m {
        V3Encap::Always => felix::EncapMode::Always,
        V3Encap::CrossSubnet => felix::EncapMode::CrossSubnet,
        V3Encap::Never => felix::EncapMode::Never,
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
    /// Valid FelixConfigurations (`default`, `node.<name>`).
    pub felix_configs: Vec<FelixConfiguration>,
    pub bgp_peers: Vec<BGPPeer>,
    /// BGPFilters, which `bgp_peers` name in `spec.filters`.
    pub bgp_filters: Vec<BGPFilter>,
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

    /// What the dataplane of node `me` is computed from: the view, its
    /// uplink, the best BGP routes (prefix → (next hops, peer)) and its own
    /// tunnel addresses. Every best route is programmed, as calico-node's
    /// BIRD does (its `calico_kernel_programming` filter ends in `accept`):
    /// a prefix inside a pool is another node's block, with the pool's
    /// encapsulation; any other (a ToR's network, a default route, another
    /// cluster's pods) goes in as an external route via its BGP next hop,
    /// which felix-lite resolves through the kernel.
    pub fn dataplane_input(
        &self,
        me: &str,
        uplink: &Uplink,
        remote: &BTreeMap<IpNetwork, (Vec<IpAddr>, IpAddr)>,
        tunnels: &Tunnels,
    ) -> DataplaneInput {
        let pools = self
            .pools
            .iter()
            .map(|p| PoolInfo {
                cidr: p.spec.cidr,
                encap: Tunnel::for_pool(
                    &p.spec.cidr,
                    encap(p.spec.ipip_mode()),
                    encap(p.spec.vxlan_mode()),
                    encap(p.spec.udp_mode()),
                ),
                nat_outgoing: p.spec.nat_outgoing(),
                disabled: p.spec.disabled(),
            })
            .collect();
        // A pool block goes to its owner: the best path's next hop (the
        // first), even if equal paths were merged.
        let remote_blocks = remote
            .iter()
            .filter(|(prefix, _)| self.pool_of(prefix).is_some())
            .filter_map(|(prefix, (hops, peer))| Some((prefix, (hops.first()?, peer))))
            .map(|(prefix, (nh, peer))| RemoteBlock {
                block: *prefix,
                node: self
                    .node_by_ip(*nh)
                    .or_else(|| self.node_by_ip(*peer))
                    .map(|n| n.metadata.name.clone())
                    .unwrap_or_else(|| nh.to_string()),
                node_ip: *nh,
            })
            .collect();
        let external_routes = remote
            .iter()
            .filter(|(prefix, _)| self.pool_of(prefix).is_none())
            .map(|(prefix, (hops, _))| (*prefix, hops.clone()))
            .collect();
        let peers = self
            .nodes
            .iter()
            .filter(|n| n.metadata.name != me)
            .filter_map(|n| {
                let ip_v6 = n.ipv6_address().map(|(a, _)| IpAddr::V6(a));
                // An IPv6-only node is a peer too (of the IPv6 tunnels).
                let ip = n.ipv4_address().map(|(a, _)| IpAddr::V4(a)).or(ip_v6)?;
                Some(PeerNode {
                    name: n.metadata.name.clone(),
                    ip,
                    ip_v6,
                    vteps: Tunnels::published(n),
                    wireguard_public_key: wireguard_public_key(n).map(str::to_string),
                })
            })
            .collect();
        let workloads = self
            .workloads
            .iter()
            .flat_map(|w| {
                let iface = w.spec.interface_name.clone().unwrap_or_default();
                w.spec.ip_networks.iter().map(move |n| LocalWorkload {
                    ip: n.ip(),
                    iface: iface.clone(),
                })
            })
            .filter(|w| !w.iface.is_empty())
            .collect();
        DataplaneInput {
            node_name: me.to_string(),
            pools,
            remote_blocks,
            local_blocks: self.local_blocks.clone(),
            peers,
            workloads,
            uplink: Some(uplink.clone()),
            tunnel_addrs: tunnels.addrs.clone(),
            external_routes,
            wireguard: self.wireguard(me),
            // From the speaker's plan: see `plan::dataplane`.
            peer_routes: BTreeMap::new(),
            ignored_interfaces: Vec::new(),
        }
    }

    /// WireGuard on node `me`: its `node.<me>` FelixConfiguration over `default`.
    pub fn wireguard(&self, me: &str) -> Option<WireguardSettings> {
        let global = self.felix_configs.iter().find(|c| c.is_default());
        let mine = self
            .felix_configs
            .iter()
            .find(|c| c.node_name() == Some(me));
        let fc = FelixConfigurationSpec::merged(global.map(|c| &c.spec), mine.map(|c| &c.spec));
        fc.wireguard_enabled().then(|| WireguardSettings {
            port: fc.wireguard_listening_port(),
            mtu: fc.wireguard_mtu(),
        })
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

    fn put(key: &str, value: serde_json::Value, revision: Revision) -> WatchEvent {
        WatchEvent::Put(KeyValue {
            key: key.into(),
            value: serde_json::to_vec(&value).unwrap(),
            create_revision: revision,
            mod_revision: revision,
        })
    }

    fn endpoint(node: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "projectcalico.org/v3",
            "kind": "WorkloadEndpoint",
            "metadata": {"name": format!("{node}-k8s-p-eth0"), "namespace": "default"},
            "spec": {"node": node, "endpoint": "eth0"},
        })
    }

    /// A block affine to `owner` whose ordinal 5 is held by a pod on `user`.
    fn block(owner: &str, user: Option<&str>) -> serde_json::Value {
        let mut allocations = vec![serde_json::Value::Null; 64];
        let mut attributes = vec![];
        if let Some(user) = user {
            allocations[5] = 0.into();
            attributes.push(serde_json::json!({"handle_id": "h", "secondary": {"node": user}}));
        }
        serde_json::json!({
            "cidr": "10.65.1.0/26",
            "affinity": format!("host:{owner}"),
            "allocations": allocations,
            "unallocated": [],
            "attributes": attributes,
        })
    }

    /// Only what can change this node's view wakes it: another node's
    /// endpoint, affinity or block, and every handle, are dropped on
    /// arrival; a block starts and stops counting as it lends this node an
    /// address; its own endpoint and affinity, and any Node, count.
    #[test]
    fn the_cache_keeps_only_what_this_node_derives_its_view_from() {
        let wep = |n: &str| {
            format!("/manx/v3/projectcalico.org/workloadendpoints/default/{n}-k8s-p-eth0")
        };
        let block_key = "/manx/ipam/v2/assignment/ipv4/block/10.65.1.0-26";
        let mut c = ClusterCache::new("node1");
        assert!(!c.apply(put(&wep("node2"), endpoint("node2"), 1)));
        assert!(!c.apply(put(
            "/manx/ipam/v2/handle/k8s-pod-network.c1",
            serde_json::json!({"handleID": "x", "block": {}}),
            2
        )));
        assert!(!c.apply(put(
            "/manx/ipam/v2/host/node2/ipv4/block/10.65.1.0-26",
            serde_json::json!({"state": "confirmed", "node": "node2", "cidr": "10.65.1.0/26"}),
            3
        )));
        // A node named like a prefix of another is not that node.
        assert!(!c.apply(put(
            "/manx/ipam/v2/host/node11/ipv4/block/10.65.2.0-26",
            serde_json::json!({"state": "confirmed", "node": "node11", "cidr": "10.65.2.0/26"}),
            4
        )));
        assert!(!c.apply(put(block_key, block("node2", None), 5)));
        assert!(!c.apply(put(block_key, block("node2", Some("node3")), 6)));
        assert_eq!(c.revision, 6);
        assert_eq!(c.view(), ClusterView::default());

        assert!(c.apply(put(block_key, block("node2", Some("node1")), 7)));
        assert_eq!(
            c.view().borrowed,
            vec!["10.65.1.5/32".parse::<IpNetwork>().unwrap()]
        );
        // Our own block lends us nothing: the address is in our block route.
        assert!(c.apply(put(block_key, block("node1", Some("node1")), 8)));
        assert!(c.view().borrowed.is_empty());
        assert!(!c.apply(put(block_key, block("node2", None), 9)));

        assert!(c.apply(put(&wep("node1"), endpoint("node1"), 10)));
        assert_eq!(c.view().workloads.len(), 1);
        assert!(c.apply(put(
            "/manx/ipam/v2/host/node1/ipv4/block/10.65.3.0-26",
            serde_json::json!({"state": "confirmed", "node": "node1", "cidr": "10.65.3.0/26"}),
            11
        )));
        assert_eq!(
            c.view().local_blocks,
            vec!["10.65.3.0/26".parse::<IpNetwork>().unwrap()]
        );
        assert!(c.apply(put(
            "/manx/v3/projectcalico.org/nodes/node7",
            serde_json::json!({"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "node7"}, "spec": {}}),
            12
        )));
        assert_eq!(c.view().nodes.len(), 1);
        // Deletes of dropped keys change nothing; of kept ones, the view.
        assert!(!c.apply(WatchEvent::Delete {
            key: wep("node2"),
            revision: 13
        }));
        assert!(c.apply(WatchEvent::Delete {
            key: wep("node1"),
            revision: 14
        }));
        assert!(c.view().workloads.is_empty());

        // A listing is filtered the same way.
        let mut fresh = ClusterCache::new("node1");
        let kv = |key: String, value: serde_json::Value| KeyValue {
            key,
            value: serde_json::to_vec(&value).unwrap(),
            create_revision: 1,
            mod_revision: 1,
        };
        fresh.reset(Listing {
            items: vec![
                kv(wep("node1"), endpoint("node1")),
                kv(wep("node2"), endpoint("node2")),
            ],
            revision: 20,
        });
        assert_eq!(fresh.kvs.len(), 1);
        assert_eq!(fresh.view().workloads.len(), 1);
    }

    #[test]
    fn nth_addr_counts_from_the_network() {
        let n: IpNetwork = "10.65.1.64/26".parse().unwrap();
        assert_eq!(nth_addr(&n, 3).unwrap().to_string(), "10.65.1.67");
        let n6: IpNetwork = "fd00:65::/122".parse().unwrap();
        assert_eq!(nth_addr(&n6, 10).unwrap().to_string(), "fd00:65::a");
    }

    /// FelixConfiguration turns WireGuard on (node.<name> over default); a peer's key is
    /// read from its Node.status, where record_wireguard_key puts (and removes) it.
    #[test]
    fn wireguard_comes_from_felixconfiguration_and_peer_keys_from_node_status() {
        let fc = |name: &str, json: serde_json::Value| FelixConfiguration {
            metadata: datastore::model::ObjectMeta::named(name),
            spec: serde_json::from_value(json).unwrap(),
        };
        let mut b = Node::new("b");
        b.spec.bgp.get_or_insert_with(Default::default).ipv4_address = Some("198.19.1.2/24".into());
        record_wireguard_key(&mut b, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
        assert_eq!(
            b.status,
            Some(
                serde_json::json!({"wireguardPublicKey": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
            )
        );
        let mut view = ClusterView {
            pools: vec![pool("v4", "10.65.0.0/16", V3Encap::Never)],
            nodes: vec![Node::new("a"), b.clone()],
            felix_configs: vec![
                fc("default", serde_json::json!({"wireguardEnabled": true})),
                fc(
                    "node.a",
                    serde_json::json!({"wireguardListeningPort": 51999}),
                ),
            ],
            ..Default::default()
        };
        let uplink = Uplink {
            iface: "eth0".into(),
            v4: Some("198.19.1.1/24".parse().unwrap()),
            v6: None,
            mtu: 1500,
        };
        let input = view.dataplane_input("a", &uplink, &BTreeMap::new(), &Tunnels::default());
        assert_eq!(
            input.wireguard,
            Some(WireguardSettings {
                port: 51999,
                mtu: None
            })
        );
        assert_eq!(
            input.peers[0].wireguard_public_key.as_deref(),
            Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        );
        // Node b has no node object: default's port there.
        assert_eq!(view.wireguard("b").unwrap().port, 51820);
        view.felix_configs[1] = fc("node.a", serde_json::json!({"wireguardEnabled": false}));
        assert_eq!(view.wireguard("a"), None);
        record_wireguard_key(&mut b, None);
        assert_eq!(b.status, None);
    }

    fn pool(name: &str, cidr: &str, vxlan: V3Encap) -> IPPool {
        let mut spec = datastore::model::IPPoolSpec::new(cidr.parse().unwrap());
        spec.vxlan_mode = Some(vxlan);
        IPPool {
            metadata: datastore::model::ObjectMeta::named(name),
            spec,
        }
    }

    /// An IPv6 VXLAN pool: the node takes a tunnel address from it and
    /// records it with its own MAC; another (IPv6-only) node's Node becomes
    /// a peer with its IPv6 VTEP, and its block routes via `vxlan-v6.manx`.
    #[test]
    fn ipv6_vxlan_pool_and_peer_translate_to_a_vxlan_v6_route() {
        let pools = vec![
            pool("v4", "10.65.0.0/16", V3Encap::Never),
            pool("v6", "fd42:65::/48", V3Encap::Always),
        ];
        assert_eq!(crate::startup::tunnel_pools(&pools, Tunnel::Vxlan6), ["v6"]);
        assert!(crate::startup::tunnel_pools(&pools, Tunnel::Vxlan).is_empty());
        assert!(crate::startup::tunnel_pools(&pools, Tunnel::Ipip).is_empty());
        assert_eq!(
            crate::startup::tunnel_handle(Tunnel::Vxlan6, "a"),
            "vxlan-v6-tunnel-addr-a"
        );

        // Node b, as its manx-node records itself.
        let mac_b: felix::MacAddr = "02:00:00:00:06:0b".parse().unwrap();
        let b_vtep: IpAddr = "fd42:65::41".parse().unwrap();
        let b_tunnels = Tunnels {
            addrs: BTreeMap::from([(Tunnel::Vxlan6, b_vtep)]),
            macs: BTreeMap::from([
                (Tunnel::Vxlan, "02:00:00:00:04:0b".parse().unwrap()),
                (Tunnel::Vxlan6, mac_b),
            ]),
        };
        let mut b = Node::new("b");
        b.spec.bgp.get_or_insert_with(Default::default).ipv6_address = Some("fd42:19::2/64".into());
        b_tunnels.record(&mut b);
        assert_eq!(
            b.spec.ipv6_vxlan_tunnel_addr.as_deref(),
            Some("fd42:65::41")
        );
        assert_eq!(
            b.spec.vxlan_tunnel_mac_addr_v6.as_deref(),
            Some("02:00:00:00:06:0b")
        );
        assert_eq!(
            b.spec.vxlan_tunnel_mac_addr, None,
            "no v4 address, no v4 MAC"
        );

        let view = ClusterView {
            pools,
            nodes: vec![Node::new("a"), b],
            ..Default::default()
        };
        let uplink = Uplink {
            iface: "eth0".into(),
            v4: Some("198.19.1.1/24".parse().unwrap()),
            v6: Some("fd42:19::1/64".parse().unwrap()),
            mtu: 1500,
        };
        let block: IpNetwork = "fd42:65::40/122".parse().unwrap();
        let b_ip: IpAddr = "fd42:19::2".parse().unwrap();
        let remote = BTreeMap::from([(block, (vec![b_ip], b_ip))]);
        let my_vtep: IpAddr = "fd42:65::1".parse().unwrap();
        let mine = Tunnels {
            addrs: BTreeMap::from([(Tunnel::Vxlan6, my_vtep)]),
            macs: BTreeMap::from([(Tunnel::Vxlan6, felix::MacAddr::from_seed("a/v6"))]),
        };
        let input = view.dataplane_input("a", &uplink, &remote, &mine);
        assert_eq!(input.tunnel_addrs, mine.addrs);
        assert_eq!(input.remote_blocks.len(), 1);
        assert_eq!(input.remote_blocks[0].node, "b");
        let peer = &input.peers[..];
        assert_eq!(peer.len(), 1, "{peer:?}");
        assert_eq!(peer[0].ip_v6, Some(b_ip));
        assert_eq!(
            peer[0].vteps,
            BTreeMap::from([(
                Tunnel::Vxlan6,
                felix::Vtep {
                    addr: b_vtep,
                    mac: mac_b
                }
            )])
        );

        let d = felix::calc::compute(
            &input,
            &felix::DataplaneConfig::default(),
            &Default::default(),
        );
        assert_eq!(
            d.routes.get(&block),
            Some(&felix::NextHop::Via {
                gateway: "fd42:65::41".parse().unwrap(),
                dev: felix::VXLAN_V6_DEVICE.into(),
                onlink: true,
            })
        );
        let dev = &d.tunnels[&Tunnel::Vxlan6];
        assert_eq!(dev.fdb.get(&mac_b), Some(&b_ip));
        assert_eq!(dev.addr, Some(my_vtep));
    }
}
