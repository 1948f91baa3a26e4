//! Which BGP peers a node has (or a dedicated route reflector has), computed from the datastore the way Calico's
//! confd templates do it:
//!
//! * **node-to-node mesh** (when `BGPConfiguration default` has
//!   `nodeToNodeMeshEnabled`, the default): every other `Node` with an
//!   address. Route reflectors (nodes with `routeReflectorClusterID`) leave
//!   the mesh: they are reached through explicit `BGPPeer`s.
//! * **global** `BGPPeer`s (no `node`, no `nodeSelector`) apply to every node;
//!   **node specific** ones to the node named by `node:` or matched by
//!   `nodeSelector`.
//! * A `BGPPeer` gives either a `peerIP` (an external speaker: ToR, BIRD...)
//!   or a `peerSelector` (every `Node` it matches, at that node's address:
//!   how route-reflector topologies are written).
//! * One session per peer address: explicit peers win over the mesh.
//! * Collision avoidance as Calico does it: towards a peer with a higher
//!   address we are passive and let it connect.
//! * On a route reflector, a selected node without the same cluster ID is a
//!   route-reflector client.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use datastore::model::{
    BGPConfiguration, BGPPeer, NextHopMode, Node, SecretSource, parse_go_duration,
};
use datastore::selector::Selector;

pub use crate::config::PeerType;

/// One BGP session this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    pub peer_type: PeerType,
    /// The peer is a Manx node (its name), or an external speaker.
    pub node: Option<String>,
    /// Wait for the peer to connect (it has the higher address).
    pub passive: bool,
    /// On a route reflector: this peer is a client.
    pub rr_client: bool,
    pub password: Option<String>,
    pub keepalive: Option<Duration>,
    pub max_restart_time: Option<Duration>,
    pub next_hop_mode: Option<NextHopMode>,
    pub ttl_security: Option<u8>,
    /// The `BGPPeer` this came from (none for the mesh).
    pub source: Option<String>,
}

/// Where `BGPPeer` passwords come from: Calico reads Kubernetes secrets; a
/// Manx node reads `<secrets dir>/<secret name>/<key>` (mounted secrets).
pub trait SecretReader {
    fn read(&self, name: &str, key: &str) -> Option<String>;
}

/// Secrets as files under one directory (the DaemonSet mounts them there).
#[derive(Debug, Clone)]
pub struct SecretDir(pub std::path::PathBuf);

impl SecretReader for SecretDir {
    fn read(&self, name: &str, key: &str) -> Option<String> {
        // Names come from the datastore: refuse path tricks.
        if [name, key]
            .iter()
            .any(|s| s.contains('/') || s.contains("..") || s.is_empty())
        {
            return None;
        }
        std::fs::read_to_string(self.0.join(name).join(key))
            .ok()
            .map(|s| s.trim_end_matches('\n').to_string())
    }
}

fn secret(src: &Option<SecretSource>, secrets: &dyn SecretReader) -> Option<String> {
    let r = src.as_ref()?.secret_key_ref.as_ref()?;
    secrets.read(&r.name, &r.key)
}

/// The cluster-wide BGP settings in force (`BGPConfiguration default`).
pub fn cluster_config(configs: &[BGPConfiguration]) -> Option<&BGPConfiguration> {
    configs.iter().find(|c| c.metadata.name == "default")
}

fn node_addrs(n: &Node) -> Vec<IpAddr> {
    let mut v = Vec::new();
    if let Some((a, _)) = n.ipv4_address() {
        v.push(IpAddr::V4(a));
    }
    if let Some((a, _)) = n.ipv6_address() {
        v.push(IpAddr::V6(a));
    }
    v
}

fn selector_matches(sel: &str, labels: &BTreeMap<String, String>) -> bool {
    match Selector::parse(sel) {
        Ok(s) => s.matches(labels),
        // Validation rejects bad selectors on write; one that slipped in
        // matches nothing rather than everything.
        Err(_) => false,
    }
}

/// Compute this node's peers. `me` must be in `nodes`.
pub fn desired_peers(
    me: &str,
    nodes: &[Node],
    peers: &[BGPPeer],
    configs: &[BGPConfiguration],
    secrets: &dyn SecretReader,
) -> Vec<DesiredPeer> {
    let Some(my_node) = nodes.iter().find(|n| n.metadata.name == me) else {
        return vec![];
    };
    let cfg = cluster_config(configs);
    let cluster_as = cfg.map(|c| c.spec.as_number().0).unwrap_or(64512);
    let mesh_on = cfg
        .map(|c| c.spec.node_to_node_mesh_enabled())
        .unwrap_or(true);
    let port = cfg.map(|c| c.spec.listen_port()).unwrap_or(179);
    let node_as = |n: &Node| n.as_number().map(|a| a.0).unwrap_or(cluster_as);
    let my_addrs = node_addrs(my_node);
    let my_cluster = my_node.route_reflector_cluster_id();
    let passive_towards = |addr: IpAddr| {
        my_addrs
            .iter()
            .find(|a| a.is_ipv4() == addr.is_ipv4())
            .is_some_and(|mine| addr > *mine)
    };
    let mut out: BTreeMap<IpAddr, DesiredPeer> = BTreeMap::new();

    // Explicit peers first: they win over the mesh for the same address.
    for p in peers {
        let applies_to = |n: &Node| match (&p.spec.node, &p.spec.node_selector) {
            (Some(name), _) => *name == n.metadata.name,
            (None, Some(sel)) => selector_matches(sel, &n.metadata.labels),
            (None, None) => true,
        };
        // A selector peering is two-way (as in Calico): the nodes a
        // `peerSelector` picks peer back with the nodes the BGPPeer applies to.
        let selected_by_peer_selector = p
            .spec
            .peer_selector
            .as_deref()
            .is_some_and(|sel| selector_matches(sel, &my_node.metadata.labels));
        let applies = applies_to(my_node);
        if !applies && !selected_by_peer_selector {
            continue;
        }
        let peer_type: PeerType = if p.spec.node.is_none() && p.spec.node_selector.is_none() {
            PeerType::Global
        } else {
            PeerType::NodeSpecific
        };
        let dur = |s: &Option<String>| s.as_deref().and_then(|d| parse_go_duration(d).ok());
        let base = |address: IpAddr, port: u16, asn: u32, node: Option<String>, rr_client: bool| {
            DesiredPeer {
                address,
                port,
                asn,
                peer_type,
                passive: node.is_some() && passive_towards(address),
                node,
                rr_client,
                password: secret(&p.spec.password, secrets),
                keepalive: dur(&p.spec.keepalive_time),
                max_restart_time: dur(&p.spec.max_restart_time),
                next_hop_mode: p.spec.next_hop_mode,
                ttl_security: p.spec.ttl_security,
                source: Some(p.metadata.name.clone()),
            }
        };
        if applies && let Some((addr, peer_port)) = p.spec.peer_addr() {
            if my_addrs.contains(&addr) {
                continue;
            }
            let asn = p.spec.as_number.map(|a| a.0).unwrap_or(cluster_as);
            // A peerIP that is one of our nodes is still that node.
            let node = nodes.iter().find(|n| node_addrs(n).contains(&addr));
            let rr_client = my_cluster.is_some()
                && node.is_some_and(|n| n.route_reflector_cluster_id() != my_cluster);
            out.entry(addr).or_insert_with(|| {
                base(
                    addr,
                    peer_port.unwrap_or(port),
                    asn,
                    node.map(|n| n.metadata.name.clone()),
                    rr_client,
                )
            });
        } else if let Some(sel) = &p.spec.peer_selector {
            for n in nodes {
                let forward = applies && selector_matches(sel, &n.metadata.labels);
                let reverse = selected_by_peer_selector && applies_to(n);
                if n.metadata.name == me || !(forward || reverse) {
                    continue;
                }
                let rr_client =
                    my_cluster.is_some() && n.route_reflector_cluster_id() != my_cluster;
                for addr in node_addrs(n) {
                    if !my_addrs.iter().any(|a| a.is_ipv4() == addr.is_ipv4()) {
                        continue;
                    }
                    out.entry(addr).or_insert_with(|| {
                        base(
                            addr,
                            port,
                            node_as(n),
                            Some(n.metadata.name.clone()),
                            rr_client,
                        )
                    });
                }
            }
        }
    }

    if mesh_on && my_cluster.is_none() {
        let mesh_password = cfg.and_then(|c| secret(&c.spec.node_mesh_password, secrets));
        let mesh_restart = cfg.map(|c| c.spec.node_mesh_max_restart_time());
        for n in nodes {
            if n.metadata.name == me || n.route_reflector_cluster_id().is_some() {
                continue;
            }
            for addr in node_addrs(n) {
                if !my_addrs.iter().any(|a| a.is_ipv4() == addr.is_ipv4()) {
                    continue;
                }
                out.entry(addr).or_insert_with(|| DesiredPeer {
                    address: addr,
                    port,
                    asn: node_as(n),
                    peer_type: PeerType::NodeMesh,
                    node: Some(n.metadata.name.clone()),
                    passive: passive_towards(addr),
                    rr_client: false,
                    password: mesh_password.clone(),
                    keepalive: None,
                    max_restart_time: mesh_restart,
                    next_hop_mode: None,
                    ttl_security: None,
                    source: None,
                });
            }
        }
    }
    out.into_values().collect()
}

/// Nodes whose addresses changed or vanished need their sessions rebuilt;
/// everything else is left alone. Returns (to add or change, to remove).
pub fn diff_peers(old: &[DesiredPeer], new: &[DesiredPeer]) -> (Vec<DesiredPeer>, Vec<IpAddr>) {
    let old_by: BTreeMap<IpAddr, &DesiredPeer> = old.iter().map(|p| (p.address, p)).collect();
    let new_addrs: BTreeSet<IpAddr> = new.iter().map(|p| p.address).collect();
    let changed = new
        .iter()
        .filter(|p| old_by.get(&p.address) != Some(p))
        .cloned()
        .collect();
    let removed = old
        .iter()
        .filter(|p| !new_addrs.contains(&p.address))
        .map(|p| p.address)
        .collect();
    (changed, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::model::{Resource, parse_manifests};

    struct NoSecrets;
    impl SecretReader for NoSecrets {
        fn read(&self, name: &str, key: &str) -> Option<String> {
            (name == "bgp-secrets" && key == "rr").then(|| "s3cret".to_string())
        }
    }

    fn world(yaml: &str) -> (Vec<Node>, Vec<BGPPeer>, Vec<BGPConfiguration>) {
        let (mut n, mut p, mut c) = (vec![], vec![], vec![]);
        for r in parse_manifests(yaml, "test.yaml").unwrap() {
            match r {
                Resource::Node(x) => n.push(x),
                Resource::BGPPeer(x) => p.push(x),
                Resource::BGPConfiguration(x) => c.push(x),
                _ => {}
            }
        }
        (n, p, c)
    }

    fn node(name: &str, ip: &str, extra: &str) -> String {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\n{extra}spec:\n  bgp:\n    ipv4Address: {ip}/24\n"
        )
    }

    #[test]
    fn full_mesh_with_passive_towards_higher_addresses() {
        let y = [
            node("n1", "10.0.0.1", ""),
            node("n2", "10.0.0.2", ""),
            node("n3", "10.0.0.3", ""),
        ]
        .concat();
        let (n, p, c) = world(&y);
        let peers = desired_peers("n2", &n, &p, &c, &NoSecrets);
        assert_eq!(peers.len(), 2);
        assert!(
            peers
                .iter()
                .all(|p| p.peer_type == PeerType::NodeMesh && p.asn == 64512)
        );
        let by: BTreeMap<String, bool> = peers
            .iter()
            .map(|p| (p.address.to_string(), p.passive))
            .collect();
        assert!(!by["10.0.0.1"], "we connect to the lower address");
        assert!(by["10.0.0.3"], "the higher address connects to us");
    }

    #[test]
    fn route_reflector_topology_as_calico_docs_write_it() {
        let rr_meta = "  labels:\n    route-reflector: 'true'\n";
        let mut y = [
            node("rr1", "10.0.0.1", rr_meta),
            node("c1", "10.0.0.11", ""),
            node("c2", "10.0.0.12", ""),
        ]
        .concat();
        y = y.replacen(
            "    ipv4Address: 10.0.0.1/24\n",
            "    ipv4Address: 10.0.0.1/24\n    routeReflectorClusterID: 244.0.0.1\n",
            1,
        );
        y.push_str(
            "---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n  asNumber: 63400\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-route-reflectors\nspec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n  password:\n    secretKeyRef:\n      name: bgp-secrets\n      key: rr\n",
        );
        let (n, p, c) = world(&y);
        let client = desired_peers("c1", &n, &p, &c, &NoSecrets);
        assert_eq!(client.len(), 1, "{client:?}");
        assert_eq!(client[0].address.to_string(), "10.0.0.1");
        assert_eq!(client[0].peer_type, PeerType::NodeSpecific);
        assert_eq!(client[0].asn, 63400);
        assert_eq!(client[0].password.as_deref(), Some("s3cret"));
        // The reflector is picked by the peerSelector, so it peers back with
        // every node the BGPPeer applies to: both clients, as RR clients,
        // passive towards their higher addresses.
        let rr = desired_peers("rr1", &n, &p, &c, &NoSecrets);
        let addrs: Vec<String> = rr.iter().map(|p| p.address.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.11", "10.0.0.12"]);
        assert!(rr.iter().all(|p| p.rr_client && p.passive));
        assert!(!client[0].rr_client && !client[0].passive);
    }

    #[test]
    fn explicit_peer_ip_wins_over_mesh_and_skips_self() {
        let mut y = [node("n1", "10.0.0.1", ""), node("n2", "10.0.0.2", "")].concat();
        y.push_str("---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  node: n1\n  peerIP: 10.0.0.254:1179\n  asNumber: 65001\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: n2-explicit\nspec:\n  peerIP: 10.0.0.2\n  asNumber: 64512\n");
        let (n, p, c) = world(&y);
        let peers = desired_peers("n1", &n, &p, &c, &NoSecrets);
        let tor = peers
            .iter()
            .find(|p| p.address.to_string() == "10.0.0.254")
            .unwrap();
        assert_eq!(
            (tor.port, tor.asn, tor.peer_type),
            (1179, 65001, PeerType::NodeSpecific)
        );
        let n2 = peers
            .iter()
            .find(|p| p.address.to_string() == "10.0.0.2")
            .unwrap();
        assert_eq!(n2.peer_type, PeerType::Global);
        assert_eq!(n2.node.as_deref(), Some("n2"));
        assert_eq!(peers.len(), 2);
        // n2 does not get the n1-only ToR peer, and the global peer at its
        // own address is skipped.
        let peers2 = desired_peers("n2", &n, &p, &c, &NoSecrets);
        assert_eq!(peers2.len(), 1);
        assert_eq!(peers2[0].peer_type, PeerType::NodeMesh);
    }
}
