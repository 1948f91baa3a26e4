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
//! * Which side waits, exactly as calico-node decides it (confd's
//!   `bgp_processor.go`), so a Manx node and a calico-node never both wait:
//!   towards another node of the mesh, or of a *global* `BGPPeer`'s
//!   `peerSelector`, we are passive when its address is greater **as text**
//!   (`"10.0.0.5" > "10.0.0.10"`); node-specific peers (`node:` or
//!   `nodeSelector`) and `peerIP` peers are never passive (both sides dial;
//!   RFC 4271 collision detection keeps one connection).
//! * On a route reflector, a selected node without the same cluster ID is a
//!   route-reflector client.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datastore::model::{BGPConfiguration, BGPFilter, BGPPeer, Node};
use datastore::selector::Selector;

use crate::config::PeerConfig;
pub use crate::config::PeerType;
use crate::northbound::{self, PeerScope, PeerTarget, PeerTemplate, node_bgp};

/// One BGP session this node should have: the speaker's settings for it
/// (from [`crate::northbound`]) and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPeer {
    /// The session, ready for `Speaker::set_peers`.
    pub config: PeerConfig,
    /// The peer is a Manx node (its name), or an external speaker.
    pub node: Option<String>,
    /// The `BGPPeer` this came from (none for the mesh).
    pub source: Option<String>,
    /// Its `reachableBy` gateway (a `peerIP` peer only): the node routes
    /// the peer's address via it, as calico-node's BIRD static route does.
    pub reachable_by: Option<IpAddr>,
}

impl DesiredPeer {
    /// The peer's address (its identity: one session per address).
    pub fn address(&self) -> IpAddr {
        self.config.address
    }
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

/// The cluster-wide BGP settings in force (`BGPConfiguration default`).
pub fn cluster_config(configs: &[BGPConfiguration]) -> Option<&BGPConfiguration> {
    configs.iter().find(|c| c.metadata.name == "default")
}

fn selector_matches(sel: &str, labels: &BTreeMap<String, String>) -> bool {
    match Selector::parse(sel) {
        Ok(s) => s.matches(labels),
        // Validation rejects bad selectors on write; one that slipped in
        // matches nothing rather than everything.
        Err(_) => false,
    }
}

fn in_scope(scope: &PeerScope, n: &Node) -> bool {
    match scope {
        PeerScope::All => true,
        PeerScope::Node(name) => *name == n.metadata.name,
        PeerScope::Selector(sel) => selector_matches(sel, &n.metadata.labels),
    }
}

/// Compute this node's peers. `me` must be in `nodes`. BGPPeers,
/// BGPConfigurations and BGPFilters that fail validation are refused (see
/// [`northbound::usable`]); `filters` are the ones the peers may name.
pub fn desired_peers(
    me: &str,
    nodes: &[Node],
    peers: &[BGPPeer],
    configs: &[BGPConfiguration],
    filters: &[BGPFilter],
    secrets: &dyn SecretReader,
) -> Vec<DesiredPeer> {
    let Some(my_node) = nodes.iter().find(|n| n.metadata.name == me) else {
        return vec![];
    };
    let (peers, configs) = northbound::usable_bgp(peers, configs);
    let filters = northbound::usable_filters(filters);
    let cluster = northbound::cluster_settings(&configs, secrets);
    let node_as = |n: &Node| node_bgp(n).as_number.unwrap_or(cluster.as_number);
    let mine = node_bgp(my_node);
    let my_addrs = mine.addrs();
    let my_cluster = mine.rr_cluster_id;
    let passive_towards = |addr: IpAddr| {
        mine.addr_for(addr)
            .is_some_and(|own| passive_by_text(own, addr))
    };
    let mut out: BTreeMap<IpAddr, DesiredPeer> = BTreeMap::new();

    // Explicit peers first: they win over the mesh for the same address.
    for p in &peers {
        let t: PeerTemplate = northbound::peer_template(p, &filters, secrets);
        let peer_type = if t.scope == PeerScope::All {
            PeerType::Global
        } else {
            PeerType::NodeSpecific
        };
        // A selector peering is two-way (as in Calico): the nodes a
        // `peerSelector` picks peer back with the nodes the BGPPeer applies to.
        let selected_by_peer_selector = match &t.target {
            PeerTarget::Nodes(sel) => selector_matches(sel, &my_node.metadata.labels),
            _ => false,
        };
        let applies = in_scope(&t.scope, my_node);
        if !applies && !selected_by_peer_selector {
            continue;
        }
        let make = |address: IpAddr, port: u16, asn: u32, node: Option<&Node>| {
            let mut config = t.session(address, port, asn, mine.addr_for(address));
            config.peer_type = peer_type;
            // Calico: passive only towards the nodes of a global peer's
            // peerSelector (confd types "global" with calico_node).
            config.passive = peer_type == PeerType::Global
                && matches!(t.target, PeerTarget::Nodes(_))
                && node.is_some()
                && passive_towards(address);
            config.rr_client = my_cluster.is_some()
                && node.is_some_and(|n| node_bgp(n).rr_cluster_id != my_cluster);
            DesiredPeer {
                config,
                node: node.map(|n| n.metadata.name.clone()),
                source: Some(t.name.clone()),
                reachable_by: match t.target {
                    PeerTarget::Address { .. } => t.reachable_by,
                    _ => None,
                },
            }
        };
        match &t.target {
            PeerTarget::Address {
                address,
                port,
                as_number,
            } if applies => {
                if my_addrs.contains(address) {
                    continue;
                }
                let asn = as_number.unwrap_or(cluster.as_number);
                // A peerIP that is one of our nodes is still that node.
                let node = nodes.iter().find(|n| node_bgp(n).addrs().contains(address));
                out.entry(*address).or_insert_with(|| {
                    make(*address, port.unwrap_or(cluster.listen_port), asn, node)
                });
            }
            PeerTarget::Nodes(sel) => {
                for n in nodes {
                    let forward = applies && selector_matches(sel, &n.metadata.labels);
                    let reverse = selected_by_peer_selector && in_scope(&t.scope, n);
                    if n.metadata.name == me || !(forward || reverse) {
                        continue;
                    }
                    for addr in node_bgp(n).addrs() {
                        if mine.addr_for(addr).is_none() {
                            continue;
                        }
                        out.entry(addr).or_insert_with(|| {
                            make(addr, cluster.listen_port, node_as(n), Some(n))
                        });
                    }
                }
            }
            PeerTarget::Address { .. } | PeerTarget::Nothing => {}
        }
    }

    if cluster.mesh && my_cluster.is_none() {
        for n in nodes {
            if n.metadata.name == me || node_bgp(n).rr_cluster_id.is_some() {
                continue;
            }
            for addr in node_bgp(n).addrs() {
                let Some(own) = mine.addr_for(addr) else {
                    continue;
                };
                out.entry(addr).or_insert_with(|| {
                    let mut config = PeerConfig::new(addr, node_as(n));
                    config.port = cluster.listen_port;
                    config.peer_type = PeerType::NodeMesh;
                    config.passive = passive_towards(addr);
                    config.password = cluster.mesh_password.clone();
                    config.source_address = Some(own);
                    config.restart_time = Some(northbound::restart_secs(cluster.mesh_restart_time));
                    config.bfd = cluster.mesh_bfd.filter(|_| addr.is_ipv4());
                    DesiredPeer {
                        config,
                        node: Some(n.metadata.name.clone()),
                        source: None,
                        reachable_by: None,
                    }
                });
            }
        }
    }
    out.into_values().collect()
}

/// Whether we wait for `peer` to connect to `own`: calico-node compares the
/// two addresses as strings (`peerIP > currentNodeIP` in Go), not as
/// numbers; both sides must agree, so Manx does the same.
pub fn passive_by_text(own: IpAddr, peer: IpAddr) -> bool {
    peer.to_string() > own.to_string()
}

/// Nodes whose addresses changed or vanished need their sessions rebuilt;
/// everything else is left alone. Returns (to add or change, to remove).
pub fn diff_peers(old: &[DesiredPeer], new: &[DesiredPeer]) -> (Vec<DesiredPeer>, Vec<IpAddr>) {
    let old_by: BTreeMap<IpAddr, &DesiredPeer> = old.iter().map(|p| (p.address(), p)).collect();
    let new_addrs: BTreeSet<IpAddr> = new.iter().map(|p| p.address()).collect();
    let changed = new
        .iter()
        .filter(|p| old_by.get(&p.address()) != Some(p))
        .cloned()
        .collect();
    let removed = old
        .iter()
        .filter(|p| !new_addrs.contains(&p.address()))
        .map(|p| p.address())
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
        let peers = desired_peers("n2", &n, &p, &c, &[], &NoSecrets);
        assert_eq!(peers.len(), 2);
        assert!(
            peers
                .iter()
                .all(|p| p.config.peer_type == PeerType::NodeMesh && p.config.as_number == 64512)
        );
        let by: BTreeMap<String, bool> = peers
            .iter()
            .map(|p| (p.config.address.to_string(), p.config.passive))
            .collect();
        assert!(!by["10.0.0.1"], "we connect to the lower address");
        assert!(by["10.0.0.3"], "the higher address connects to us");
    }

    /// calico-node compares addresses as text: towards 10.231.0.2 the node
    /// 10.231.0.10 waits ("10.231.0.2" > "10.231.0.10"), and 10.231.0.2
    /// dials. Comparing numbers, both would wait for the other.
    #[test]
    fn mesh_passive_side_is_chosen_by_text_as_calico_does() {
        let y = [node("a", "10.231.0.2", ""), node("b", "10.231.0.10", "")].concat();
        let (n, p, c) = world(&y);
        let a = desired_peers("a", &n, &p, &c, &[], &NoSecrets);
        let b = desired_peers("b", &n, &p, &c, &[], &NoSecrets);
        assert!(!a[0].config.passive, "10.231.0.2 dials 10.231.0.10");
        assert!(b[0].config.passive, "10.231.0.10 waits for 10.231.0.2");
        for (own, peer) in [
            ("10.0.0.10", "10.0.0.5"),
            ("10.0.0.5", "10.0.0.10"),
            ("192.168.1.9", "192.168.1.10"),
            ("fd00::a", "fd00::9"),
        ] {
            let (o, q): (IpAddr, IpAddr) = (own.parse().unwrap(), peer.parse().unwrap());
            assert_eq!(passive_by_text(o, q), peer > own, "{own} vs {peer}");
            assert_ne!(
                passive_by_text(o, q),
                passive_by_text(q, o),
                "one side dials"
            );
        }
    }

    /// Calico never makes node-specific selector peers (`Node_*` sessions)
    /// passive; a global BGPPeer's peerSelector nodes follow the mesh rule.
    #[test]
    fn only_global_selector_peers_are_passive() {
        let rr_meta = "  labels:\n    rr: 'true'\n";
        let mut y = [node("r", "10.0.0.9", rr_meta), node("a", "10.0.0.10", "")].concat();
        y.push_str("---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: to-rr\nspec:\n  peerSelector: rr == 'true'\n");
        let (n, p, c) = world(&y);
        let a = desired_peers("a", &n, &p, &c, &[], &NoSecrets);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].config.peer_type, PeerType::Global);
        assert!(a[0].config.passive, "\"10.0.0.9\" > \"10.0.0.10\": a waits");
        let r = desired_peers("r", &n, &p, &c, &[], &NoSecrets);
        assert!(
            !r.iter()
                .any(|p| p.config.address.to_string() == "10.0.0.10" && p.config.passive)
        );

        // The same BGPPeer made node-specific: nobody waits.
        let y = y.replace(
            "  peerSelector: rr == 'true'",
            "  nodeSelector: all()\n  peerSelector: rr == 'true'",
        );
        let (n, p, c) = world(&y);
        let a = desired_peers("a", &n, &p, &c, &[], &NoSecrets);
        assert_eq!(a[0].config.peer_type, PeerType::NodeSpecific);
        assert!(!a[0].config.passive);
        let r = desired_peers("r", &n, &p, &c, &[], &NoSecrets);
        assert!(r.iter().all(|p| !p.config.passive), "{r:?}");
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
        let client = desired_peers("c1", &n, &p, &c, &[], &NoSecrets);
        assert_eq!(client.len(), 1, "{client:?}");
        assert_eq!(client[0].config.address.to_string(), "10.0.0.1");
        assert_eq!(client[0].config.peer_type, PeerType::NodeSpecific);
        assert_eq!(client[0].config.as_number, 63400);
        assert_eq!(client[0].config.password.as_deref(), Some("s3cret"));
        // The reflector is picked by the peerSelector, so it peers back with
        // every node the BGPPeer applies to: both clients, as RR clients.
        // Node-specific (`nodeSelector: all()`): both sides dial, as Calico.
        let rr = desired_peers("rr1", &n, &p, &c, &[], &NoSecrets);
        let addrs: Vec<String> = rr.iter().map(|p| p.config.address.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.11", "10.0.0.12"]);
        assert!(rr.iter().all(|p| p.config.rr_client && !p.config.passive));
        assert!(!client[0].config.rr_client && !client[0].config.passive);
    }

    #[test]
    fn explicit_peer_ip_wins_over_mesh_and_skips_self() {
        let mut y = [node("n1", "10.0.0.1", ""), node("n2", "10.0.0.2", "")].concat();
        y.push_str("---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  node: n1\n  peerIP: 10.0.0.254:1179\n  asNumber: 65001\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: n2-explicit\nspec:\n  peerIP: 10.0.0.2\n  asNumber: 64512\n");
        let (n, p, c) = world(&y);
        let peers = desired_peers("n1", &n, &p, &c, &[], &NoSecrets);
        let tor = peers
            .iter()
            .find(|p| p.config.address.to_string() == "10.0.0.254")
            .unwrap();
        assert_eq!(
            (tor.config.port, tor.config.as_number, tor.config.peer_type),
            (1179, 65001, PeerType::NodeSpecific)
        );
        let n2 = peers
            .iter()
            .find(|p| p.config.address.to_string() == "10.0.0.2")
            .unwrap();
        assert_eq!(n2.config.peer_type, PeerType::Global);
        assert_eq!(n2.node.as_deref(), Some("n2"));
        assert_eq!(peers.len(), 2);
        // n2 does not get the n1-only ToR peer, and the global peer at its
        // own address is skipped.
        let peers2 = desired_peers("n2", &n, &p, &c, &[], &NoSecrets);
        assert_eq!(peers2.len(), 1);
        assert_eq!(peers2[0].config.peer_type, PeerType::NodeMesh);
    }

    #[test]
    fn mesh_bfd_reaches_mesh_sessions_and_a_bgppeer_its_own() {
        let mut y = [
            node("n1", "10.0.0.1", ""),
            node("n2", "10.0.0.2", ""),
            node("n3", "10.0.0.3", ""),
        ]
        .concat();
        y.push_str("---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeMeshBFD: {minTx: 100ms, multiplier: 4}\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 10.0.0.254\n  asNumber: 65001\n  bfd: {enabled: true, minRx: 50ms, minTx: 50ms}\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: n3-no-bfd\nspec:\n  node: n1\n  peerIP: 10.0.0.3\n  asNumber: 64512\n");
        let (n, p, c) = world(&y);
        let peers = desired_peers("n1", &n, &p, &c, &[], &NoSecrets);
        let bfd: BTreeMap<String, Option<crate::config::BfdConfig>> = peers
            .iter()
            .map(|p| (p.config.address.to_string(), p.config.bfd))
            .collect();
        let mesh = crate::config::BfdConfig {
            min_rx: 300,
            min_tx: 100,
            multiplier: 4,
        };
        assert_eq!(bfd["10.0.0.2"], Some(mesh), "mesh: nodeMeshBFD");
        assert_eq!(
            bfd["10.0.0.254"],
            Some(crate::config::BfdConfig {
                min_rx: 50,
                min_tx: 50,
                multiplier: 3
            }),
            "the BGPPeer's own block"
        );
        assert_eq!(
            bfd["10.0.0.3"], None,
            "an explicit BGPPeer without bfd wins over the mesh, BFD included"
        );
        // Without nodeMeshBFD the mesh has no BFD.
        let (n, p, _) = world(&y);
        let peers = desired_peers("n1", &n, &p, &[], &[], &NoSecrets);
        assert!(
            peers
                .iter()
                .all(|p| p.config.address.to_string() == "10.0.0.254" || p.config.bfd.is_none())
        );
    }
}
