//! The agent's one pure step: from the cluster view (and what this node
//! knows of itself) to what its speaker and dataplane should have. No I/O
//! but the secret reader it is given; the agent runs it after every burst
//! of datastore events and hands the result to its tasks.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use bgpd::cluster::{DesiredPeer, SecretReader, desired_peers};
use bgpd::northbound::{self, ClusterSettings};
use felix::{DataplaneInput, Tunnel, Uplink};
use ipnetwork::IpNetwork;

use crate::cluster::ClusterView;
use crate::startup::{Tunnels, tunnel_pools};

/// Best BGP routes learnt from peers: prefix → (next hops, peer). The
/// best path's next hop comes first; more are equal paths merged (ECMP).
pub type RemoteRoutes = BTreeMap<IpNetwork, (Vec<IpAddr>, IpAddr)>;

/// What the speaker of node `name` should have.
#[derive(Debug, Clone, PartialEq)]
pub struct BgpPlan {
    /// Its sessions.
    pub peers: Vec<DesiredPeer>,
    /// The prefixes it originates (sorted, no duplicates).
    pub networks: Vec<IpNetwork>,
    /// Its route-reflector cluster id (a change restarts the speaker).
    pub cluster_id: Option<Ipv4Addr>,
    /// Its log level (`logSeverityScreen`).
    pub log_level: &'static str,
    /// Tunnel kinds a pool now needs and this node has no address for.
    pub missing_tunnels: Vec<Tunnel>,
    /// Where the speaker listens: `bindMode: NodeIP` gives the node's BGP
    /// IPv4 address (IPv6 on an IPv6-only node), `None` every address; and
    /// `listenPort`. A change
    /// restarts the speaker.
    pub listen: (Option<IpAddr>, u16),
    /// Which equal paths become one ECMP kernel route (`multipath`); set
    /// live, no session restarts.
    pub multipath: bgpd::rib::Multipath,
    /// Communities of the originated prefixes (`prefixAdvertisements`).
    pub local_communities: Vec<bgpd::rib::LocalCommunities>,
    /// `ignoredInterfaces`, for the dataplane's next-hop resolution.
    pub ignored_interfaces: Vec<String>,
}

/// The speaker's side of the plan.
pub fn bgp(
    view: &ClusterView,
    name: &str,
    tunnels: &Tunnels,
    secrets: &dyn SecretReader,
) -> BgpPlan {
    let peers = desired_peers(
        name,
        &view.nodes,
        &view.bgp_peers,
        &view.bgp_configs,
        &view.bgp_filters,
        secrets,
    );
    let (_, configs) = northbound::usable_bgp(&[], &view.bgp_configs);
    let settings = northbound::cluster_settings(&configs, secrets);
    let cluster_id = view
        .nodes
        .iter()
        .find(|n| n.metadata.name == name)
        .and_then(|n| northbound::node_bgp(n).rr_cluster_id);
    let missing_tunnels = Tunnel::ALL
        .into_iter()
        .filter(|t| !tunnels.addrs.contains_key(t) && !tunnel_pools(&view.pools, *t).is_empty())
        .collect();
    // The IPv4 address, or the IPv6 one on an IPv6-only node. (A
    // dual-stack node with bindMode NodeIP listens on its IPv4 address
    // only: one listener; its IPv6 peers then have to be dialled.)
    let own_ip = view
        .nodes
        .iter()
        .find(|n| n.metadata.name == name)
        .and_then(|n| {
            n.ipv4_address()
                .map(|(a, _)| IpAddr::V4(a))
                .or_else(|| n.ipv6_address().map(|(a, _)| IpAddr::V6(a)))
        });
    let listen = (
        own_ip.filter(|_| settings.bind_node_ip),
        settings.listen_port,
    );
    BgpPlan {
        listen,
        multipath: settings.multipath,
        local_communities: settings.local_communities.clone(),
        ignored_interfaces: settings.ignored_interfaces.clone(),
        peers,
        networks: networks(view, &settings),
        cluster_id,
        log_level: northbound::node_log_level(&view.bgp_configs, name),
        missing_tunnels,
    }
}

/// Prefixes this node announces: its affine blocks and borrowed addresses
/// (except in pools with `disableBGPExport`), and the cluster's
/// `serviceClusterIPs`, `serviceExternalIPs` and `serviceLoadBalancerIPs`
/// from the validated `BGPConfiguration default`.
pub fn networks(view: &ClusterView, settings: &ClusterSettings) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = view
        .local_blocks
        .iter()
        .chain(view.borrowed.iter())
        .filter(|p| {
            view.pool_of(p)
                .is_some_and(|pool| !pool.spec.disable_bgp_export())
        })
        .copied()
        .chain(settings.service_cluster_ips.iter().copied())
        .chain(settings.service_external_ips.iter().copied())
        .chain(settings.service_load_balancer_ips.iter().copied())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The dataplane's side of the plan: `peers` are the speaker's sessions
/// (their `reachableBy` gateways become host routes), `ignored_interfaces`
/// [`BgpPlan::ignored_interfaces`] (for next-hop resolution).
pub fn dataplane(
    view: &ClusterView,
    name: &str,
    uplink: &Uplink,
    remote: &RemoteRoutes,
    tunnels: &Tunnels,
    peers: &[DesiredPeer],
    ignored_interfaces: &[String],
) -> DataplaneInput {
    let mut input = view.dataplane_input(name, uplink, remote, tunnels);
    input.peer_routes = peer_routes(peers);
    input.ignored_interfaces = ignored_interfaces.to_vec();
    input
}

/// The host routes to peers with a `reachableBy` gateway: peer address → gateway.
pub fn peer_routes(peers: &[DesiredPeer]) -> BTreeMap<IpAddr, IpAddr> {
    peers
        .iter()
        .filter_map(|p| Some((p.address(), p.reachable_by?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::model::{
        BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, CidrEntry, EncapMode, IPPool,
        IPPoolSpec, Node, ObjectMeta,
    };

    struct NoSecrets;
    impl SecretReader for NoSecrets {
        fn read(&self, _: &str, _: &str) -> Option<String> {
            None
        }
    }

    fn node(name: &str, ip: &str) -> Node {
        let mut n = Node::new(name);
        n.spec.bgp.get_or_insert_with(Default::default).ipv4_address = Some(format!("{ip}/24"));
        n
    }

    fn pool(name: &str, cidr: &str) -> IPPool {
        IPPool {
            metadata: ObjectMeta::named(name),
            spec: IPPoolSpec::new(cidr.parse().unwrap()),
        }
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn view() -> ClusterView {
        ClusterView {
            pools: vec![pool("default", "10.65.0.0/16")],
            nodes: vec![
                node("a", "198.19.1.1"),
                node("b", "198.19.1.2"),
                node("c", "198.19.1.3"),
            ],
            local_blocks: vec![net("10.65.1.0/26")],
            borrowed: vec![net("10.65.2.7/32")],
            ..Default::default()
        }
    }

    #[test]
    fn mesh_peers_and_own_blocks() {
        let p = bgp(&view(), "a", &Tunnels::default(), &NoSecrets);
        let addrs: Vec<String> = p.peers.iter().map(|p| p.address().to_string()).collect();
        assert_eq!(addrs, ["198.19.1.2", "198.19.1.3"]);
        assert_eq!(p.networks, [net("10.65.1.0/26"), net("10.65.2.7/32")]);
        assert_eq!(p.cluster_id, None);
        assert_eq!(p.log_level, "info");
        assert!(p.missing_tunnels.is_empty(), "{:?}", p.missing_tunnels);
    }

    #[test]
    fn a_node_outside_the_view_has_no_peers() {
        let p = bgp(&view(), "z", &Tunnels::default(), &NoSecrets);
        assert!(p.peers.is_empty());
    }

    #[test]
    fn disable_bgp_export_keeps_a_pool_out() {
        let mut v = view();
        v.pools[0].spec.disable_bgp_export = Some(true);
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert!(p.networks.is_empty(), "{:?}", p.networks);
    }

    #[test]
    fn service_cluster_ips_come_from_the_validated_default_config() {
        let mut v = view();
        let mut spec = BGPConfigurationSpec {
            service_cluster_ips: Some(vec![CidrEntry {
                cidr: "10.96.0.0/12".into(),
            }]),
            ..Default::default()
        };
        v.bgp_configs = vec![BGPConfiguration {
            metadata: ObjectMeta::named("default"),
            spec: spec.clone(),
        }];
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert!(
            p.networks.contains(&net("10.96.0.0/12")),
            "{:?}",
            p.networks
        );

        // A default config that fails validation (here: an ignoredInterfaces
        // entry that would ignore every interface) is refused whole, as
        // desired_peers refuses it: its serviceClusterIPs are not announced
        // either.
        spec.ignored_interfaces = Some(vec!["*".into()]);
        v.bgp_configs[0].spec = spec;
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert_eq!(p.networks, [net("10.65.1.0/26"), net("10.65.2.7/32")]);
    }

    #[test]
    fn service_external_and_load_balancer_ips_are_announced_by_every_node() {
        let mut v = view();
        v.bgp_configs = vec![BGPConfiguration {
            metadata: ObjectMeta::named("default"),
            spec: BGPConfigurationSpec {
                service_external_ips: Some(vec![
                    CidrEntry {
                        cidr: "104.244.42.129/32".into(),
                    },
                    CidrEntry {
                        cidr: "172.217.3.0/24".into(),
                    },
                ]),
                service_load_balancer_ips: Some(vec![CidrEntry {
                    cidr: "192.0.2.0/28".into(),
                }]),
                ..Default::default()
            },
        }];
        for node in ["a", "b"] {
            let p = bgp(&v, node, &Tunnels::default(), &NoSecrets);
            for n in ["104.244.42.129/32", "172.217.3.0/24", "192.0.2.0/28"] {
                assert!(p.networks.contains(&net(n)), "{node}: {:?}", p.networks);
            }
        }
    }

    #[test]
    fn bind_mode_node_ip_listens_on_the_node_address() {
        let mut v = view();
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert_eq!(p.listen, (None, 179));
        v.bgp_configs = vec![BGPConfiguration {
            metadata: ObjectMeta::named("default"),
            spec: BGPConfigurationSpec {
                bind_mode: Some(datastore::model::BindMode::NodeIP),
                listen_port: Some(178),
                ..Default::default()
            },
        }];
        let a_ip = v.nodes[0].ipv4_address().unwrap().0;
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert_eq!(p.listen, (Some(IpAddr::V4(a_ip)), 178));
        // An IPv6-only node listens on its IPv6 address.
        let bgp_a = v.nodes[0].spec.bgp.as_mut().unwrap();
        bgp_a.ipv4_address = None;
        bgp_a.ipv6_address = Some("fd30::11/64".into());
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert_eq!(p.listen, (Some("fd30::11".parse().unwrap()), 178));
        // bindMode: None is every address, as before.
        v.bgp_configs[0].spec.bind_mode = Some(datastore::model::BindMode::None);
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert_eq!(p.listen, (None, 178));
    }

    #[test]
    fn route_reflector_cluster_id_and_log_level() {
        let mut v = view();
        v.nodes[0]
            .spec
            .bgp
            .get_or_insert_with(Default::default)
            .route_reflector_cluster_id = Some("1.1.1.1".into());
        let spec = BGPConfigurationSpec {
            log_severity_screen: Some("Debug".into()),
            ..Default::default()
        };
        v.bgp_configs = vec![BGPConfiguration {
            metadata: ObjectMeta::named("node.a"),
            spec,
        }];
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert_eq!(p.cluster_id, Some("1.1.1.1".parse().unwrap()));
        assert_eq!(p.log_level, "debug");
        assert_eq!(
            bgp(&v, "b", &Tunnels::default(), &NoSecrets).log_level,
            "info"
        );
    }

    #[test]
    fn a_new_vxlan_pool_asks_for_a_tunnel_address_once() {
        let mut v = view();
        v.pools[0].spec.vxlan_mode = Some(EncapMode::Always);
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert_eq!(p.missing_tunnels, [Tunnel::Vxlan]);
        let have = Tunnels {
            addrs: BTreeMap::from([(Tunnel::Vxlan, "10.65.1.0".parse().unwrap())]),
            macs: BTreeMap::new(),
        };
        assert!(bgp(&v, "a", &have, &NoSecrets).missing_tunnels.is_empty());
    }

    #[test]
    fn explicit_peer_and_remote_route_reach_the_dataplane() {
        let mut v = view();
        let spec = BGPPeerSpec {
            peer_ip: Some("198.19.1.254".into()),
            as_number: Some(datastore::model::AsNumber(65000)),
            ..Default::default()
        };
        v.bgp_peers = vec![BGPPeer {
            metadata: ObjectMeta::named("tor"),
            spec,
        }];
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        let tor = p
            .peers
            .iter()
            .find(|p| p.address().to_string() == "198.19.1.254")
            .expect("the ToR is a peer");
        assert_eq!(tor.source.as_deref(), Some("tor"));

        let uplink = Uplink {
            iface: "eth0".into(),
            v4: Some(net("198.19.1.1/24")),
            v6: None,
            mtu: 1500,
        };
        let b: IpAddr = "198.19.1.2".parse().unwrap();
        let remote = RemoteRoutes::from([(net("10.65.3.0/26"), (vec![b], b))]);
        let input = dataplane(
            &v,
            "a",
            &uplink,
            &remote,
            &Tunnels::default(),
            &p.peers,
            &p.ignored_interfaces,
        );
        assert_eq!(input.remote_blocks.len(), 1);
        assert_eq!(input.remote_blocks[0].node, "b");
        assert_eq!(input.local_blocks, [net("10.65.1.0/26")]);
        assert_eq!(input.peers.len(), 2);
        assert!(input.external_routes.is_empty());
        assert!(input.peer_routes.is_empty() && input.ignored_interfaces.is_empty());
    }

    /// `reachableBy` becomes a host route to the peer via the gateway, and
    /// `ignoredInterfaces` of `default` goes to the dataplane's next-hop
    /// resolution; mesh peers have no gateway.
    #[test]
    fn reachable_by_and_ignored_interfaces_reach_the_dataplane() {
        let mut v = view();
        v.bgp_peers = vec![BGPPeer {
            metadata: ObjectMeta::named("far"),
            spec: BGPPeerSpec {
                peer_ip: Some("203.0.113.7".into()),
                as_number: Some(datastore::model::AsNumber(65002)),
                reachable_by: Some("198.19.1.254".into()),
                ..Default::default()
            },
        }];
        v.bgp_configs = vec![BGPConfiguration {
            metadata: ObjectMeta::named("default"),
            spec: BGPConfigurationSpec {
                ignored_interfaces: Some(vec!["eth1".into(), "vpn*".into()]),
                ..Default::default()
            },
        }];
        let p = bgp(&v, "a", &Tunnels::default(), &NoSecrets);
        assert_eq!(p.ignored_interfaces, ["eth1", "vpn*"]);
        let far = p
            .peers
            .iter()
            .find(|p| p.source.as_deref() == Some("far"))
            .unwrap();
        assert_eq!(far.reachable_by, Some("198.19.1.254".parse().unwrap()));
        assert!(
            p.peers
                .iter()
                .filter(|p| p.source.is_none())
                .all(|p| p.reachable_by.is_none())
        );
        let uplink = Uplink {
            iface: "eth0".into(),
            v4: Some(net("198.19.1.1/24")),
            v6: None,
            mtu: 1500,
        };
        let input = dataplane(
            &v,
            "a",
            &uplink,
            &RemoteRoutes::new(),
            &Tunnels::default(),
            &p.peers,
            &p.ignored_interfaces,
        );
        assert_eq!(
            input.peer_routes,
            BTreeMap::from([(
                "203.0.113.7".parse().unwrap(),
                "198.19.1.254".parse().unwrap()
            )])
        );
        assert_eq!(input.ignored_interfaces, ["eth1", "vpn*"]);
    }

    /// Every best route reaches the dataplane: pool prefixes as other
    /// nodes' blocks, the rest (the ToR's network, its default route,
    /// another cluster's pods) as external routes via their BGP next hop.
    #[test]
    fn routes_outside_the_pools_reach_the_dataplane_as_external_routes() {
        let v = view();
        let uplink = Uplink {
            iface: "eth0".into(),
            v4: Some(net("198.19.1.1/24")),
            v6: None,
            mtu: 1500,
        };
        let b: IpAddr = "198.19.1.2".parse().unwrap();
        let tor: IpAddr = "198.19.1.254".parse().unwrap();
        let remote = RemoteRoutes::from([
            (net("10.65.3.0/26"), (vec![b], b)),
            (net("10.200.0.0/26"), (vec![tor], tor)),
            (net("0.0.0.0/0"), (vec![tor], tor)),
            // Another cluster's pod block, next hop its node, heard from the ToR.
            (
                net("10.99.7.0/26"),
                (vec!["198.19.1.77".parse().unwrap()], tor),
            ),
        ]);
        let input = dataplane(&v, "a", &uplink, &remote, &Tunnels::default(), &[], &[]);
        assert_eq!(input.remote_blocks.len(), 1);
        assert_eq!(
            input.external_routes,
            BTreeMap::from([
                (net("0.0.0.0/0"), vec![tor]),
                (net("10.99.7.0/26"), vec!["198.19.1.77".parse().unwrap()]),
                (net("10.200.0.0/26"), vec![tor]),
            ])
        );
        let d = felix::calc::compute(
            &input,
            &felix::DataplaneConfig::default(),
            &Default::default(),
        );
        assert_eq!(
            d.routes.get(&net("10.200.0.0/26")),
            Some(&felix::NextHop::Via {
                gateway: tor,
                dev: "eth0".into(),
                onlink: false,
            })
        );
    }
}
