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
            felix_configs,
            bgp_peers,
            bgp_filters,
            workloads,
            local_blocks,
            borrowed,
        }
    }
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
