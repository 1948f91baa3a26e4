//! The datastore's BGP resources, read once: `BGPPeer.spec`,
//! `BGPConfiguration.spec` and `Node.spec.bgp` become the speaker's
//! settings here and nowhere else.
//!
//! Each function destructures its whole spec with no `..`: a field added to
//! the model that nobody handles fails to compile here. A field Manx does not
//! act on yet is refused by validation (`datastore::model`, "is not supported
//! by Manx yet"), so `manxctl apply` and every store write reject it; an
//! object that still carries one (written by another tool) is refused whole
//! by [`usable`], with an error naming the object and the field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use datastore::model::{
    BFDSpec, BGPConfiguration, BGPConfigurationSpec, BGPFilter, BGPFilterRule, BGPFilterSpec,
    BGPPeer, BGPPeerSpec, FilterAction, FilterSource, MatchOperator, NextHopMode as V3NextHop,
    Node, NodeBGPSpec, SecretSource, SourceAddress, parse_go_duration,
};
use ipnetwork::IpNetwork;

use crate::cluster::SecretReader;
use crate::config::{BfdConfig, NextHopMode, PeerConfig};

/// Default AS of a cluster without `BGPConfiguration default`.
pub const DEFAULT_CLUSTER_AS: u32 = 64512;
/// Default BGP port.
pub const DEFAULT_PORT: u16 = 179;
/// Default graceful-restart time of mesh sessions (Calico's 120 s).
pub const DEFAULT_MESH_RESTART: Duration = Duration::from_secs(120);

/// Whether an object read from the store may be used: one that fails
/// validation (for instance a field Manx refuses, written by an older
/// version or straight into etcd) is not, and says why once per read.
pub fn usable<T, E: std::fmt::Display>(
    kind: &str,
    name: &str,
    obj: T,
    check: impl Fn(&T) -> Result<(), E>,
) -> Option<T> {
    match check(&obj) {
        Ok(()) => Some(obj),
        Err(e) => {
            tracing::error!(
                "{kind} {name} is refused and not used: {e} (fix it with manxctl apply)"
            );
            None
        }
    }
}

/// The usable BGPPeers and BGPConfigurations of a snapshot.
pub fn usable_bgp(
    peers: &[BGPPeer],
    configs: &[BGPConfiguration],
) -> (Vec<BGPPeer>, Vec<BGPConfiguration>) {
    let peers = peers
        .iter()
        .filter_map(|p| usable("BGPPeer", &p.metadata.name, p.clone(), BGPPeer::validate))
        .collect();
    let configs = configs
        .iter()
        .filter_map(|c| {
            usable(
                "BGPConfiguration",
                &c.metadata.name,
                c.clone(),
                BGPConfiguration::validate,
            )
        })
        .collect();
    (peers, configs)
}

/// Cluster-wide BGP settings (`BGPConfiguration default`, or the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub as_number: u32,
    pub mesh: bool,
    pub listen_port: u16,
    pub mesh_password: Option<String>,
    pub mesh_restart_time: Duration,
    /// Announced by every node (manx-node originates them).
    pub service_cluster_ips: Vec<IpNetwork>,
    /// `serviceExternalIPs`: announced by every node, as Calico announces
    /// them for services with `externalTrafficPolicy: Cluster` (Manx knows
    /// no Services, so no per-endpoint /32s).
    pub service_external_ips: Vec<IpNetwork>,
    /// `serviceLoadBalancerIPs`: the same.
    pub service_load_balancer_ips: Vec<IpNetwork>,
    /// `bindMode: NodeIP`: listen on the node's BGP address only.
    pub bind_node_ip: bool,
    /// `logSeverityScreen`, as a tracing level name (`debug`, `info`, ...);
    /// `None` for Calico's `None` (logging off) is `off`.
    pub log_level: &'static str,
    /// `multipath` (Manx extension): which equal paths become one ECMP
    /// kernel route.
    pub multipath: crate::rib::Multipath,
    /// `nodeMeshBFD`: BFD on the mesh's IPv4 sessions.
    pub mesh_bfd: Option<BfdConfig>,
    /// `prefixAdvertisements`, names resolved through `communities`: the
    /// communities of the prefixes this node originates.
    pub local_communities: Vec<crate::rib::LocalCommunities>,
    /// `ignoredInterfaces`: interface patterns whose addresses are no
    /// connected subnets for the routes from outside the pools (the
    /// dataplane's, not the speaker's).
    pub ignored_interfaces: Vec<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            as_number: DEFAULT_CLUSTER_AS,
            mesh: true,
            listen_port: DEFAULT_PORT,
            mesh_password: None,
            mesh_restart_time: DEFAULT_MESH_RESTART,
            service_cluster_ips: Vec::new(),
            service_external_ips: Vec::new(),
            service_load_balancer_ips: Vec::new(),
            bind_node_ip: false,
            log_level: "info",
            multipath: crate::rib::Multipath::default(),
            mesh_bfd: None,
            local_communities: Vec::new(),
            ignored_interfaces: Vec::new(),
        }
    }
}

fn secret(src: &Option<SecretSource>, secrets: &dyn SecretReader) -> Option<String> {
    let r = src.as_ref()?.secret_key_ref.as_ref()?;
    secrets.read(&r.name, &r.key)
}

/// An enabled BFD block as the speaker's BFD timers (validated: in range).
fn bfd(spec: &Option<BFDSpec>) -> Option<BfdConfig> {
    let t = spec.as_ref()?.timers()?;
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    Some(BfdConfig {
        min_rx: ms(t.min_rx),
        min_tx: ms(t.min_tx),
        multiplier: t.multiplier,
    })
}

fn duration(text: &Option<String>) -> Option<Duration> {
    text.as_deref().and_then(|d| parse_go_duration(d).ok())
}

/// Calico's `logSeverityScreen` levels as tracing levels.
fn log_level(level: Option<&str>) -> &'static str {
    match level {
        Some("Debug") => "debug",
        Some("Warning") => "warn",
        Some("Error") | Some("Fatal") => "error",
        Some("None") => "off",
        _ => "info",
    }
}

/// The `{cidr}` entries of a service list (validated: each parses).
fn cidrs(list: &Option<Vec<datastore::model::CidrEntry>>) -> Vec<IpNetwork> {
    list.iter()
        .flatten()
        .filter_map(|e| datastore::model::parse_cidr_or_ip(&e.cidr).ok())
        .collect()
}

/// `BGPConfiguration default` (the cluster-wide one) as settings.
pub fn cluster_settings(
    configs: &[BGPConfiguration],
    secrets: &dyn SecretReader,
) -> ClusterSettings {
    let Some(cfg) = configs.iter().find(|c| c.metadata.name == "default") else {
        return ClusterSettings::default();
    };
    let BGPConfigurationSpec {
        log_severity_screen,
        node_to_node_mesh_enabled,
        as_number,
        listen_port,
        service_cluster_ips,
        service_external_ips,
        service_load_balancer_ips,
        bind_mode,
        // Read through `prefix_advertisements` (names resolve against it).
        communities: _,
        prefix_advertisements,
        ignored_interfaces,
        node_mesh_password,
        node_mesh_max_restart_time,
        multipath,
        node_mesh_bfd,
    } = &cfg.spec;
    ClusterSettings {
        as_number: as_number.map(|a| a.0).unwrap_or(DEFAULT_CLUSTER_AS),
        mesh: node_to_node_mesh_enabled.unwrap_or(true),
        listen_port: listen_port.unwrap_or(DEFAULT_PORT),
        mesh_password: secret(node_mesh_password, secrets),
        mesh_restart_time: duration(node_mesh_max_restart_time).unwrap_or(DEFAULT_MESH_RESTART),
        service_cluster_ips: cidrs(service_cluster_ips),
        service_external_ips: cidrs(service_external_ips),
        service_load_balancer_ips: cidrs(service_load_balancer_ips),
        bind_node_ip: *bind_mode == Some(datastore::model::BindMode::NodeIP),
        log_level: log_level(log_severity_screen.as_deref()),
        multipath: multipath_of(multipath.as_ref()),
        mesh_bfd: bfd(node_mesh_bfd),
        local_communities: local_communities(&cfg.spec, prefix_advertisements.as_deref()),
        ignored_interfaces: ignored_interfaces.clone().unwrap_or_default(),
    }
}

/// `prefixAdvertisements` with each community name or value resolved
/// (validation refuses one that resolves to nothing; it is skipped here).
fn local_communities(
    spec: &BGPConfigurationSpec,
    ads: Option<&[datastore::model::PrefixAdvertisement]>,
) -> Vec<crate::rib::LocalCommunities> {
    use datastore::model::{CommunityValue, parse_community};
    ads.into_iter()
        .flatten()
        .filter_map(|ad| {
            let cidr: IpNetwork = ad.cidr.parse().ok()?;
            let mut out = crate::rib::LocalCommunities {
                cidr: crate::rib::normalize(cidr),
                standard: Vec::new(),
                large: Vec::new(),
            };
            for name in &ad.communities {
                match spec.resolve_community(name).map(parse_community) {
                    Some(Ok(CommunityValue::Standard(a, n))) => {
                        out.standard.push((u32::from(a) << 16) | u32::from(n))
                    }
                    Some(Ok(CommunityValue::Large(a, n, m))) => out.large.push((a, n, m)),
                    _ => {}
                }
            }
            Some(out)
        })
        .collect()
}

/// `spec.multipath`, the defaults of the fields left out.
fn multipath_of(spec: Option<&datastore::model::MultipathSpec>) -> crate::rib::Multipath {
    let d = crate::rib::Multipath::default();
    let Some(datastore::model::MultipathSpec {
        ebgp,
        ibgp,
        relax_neighbor_as,
    }) = spec
    else {
        return d;
    };
    crate::rib::Multipath {
        ebgp: ebgp.unwrap_or(d.ebgp),
        ibgp: ibgp.unwrap_or(d.ibgp),
        relax_neighbor_as: relax_neighbor_as.unwrap_or(d.relax_neighbor_as),
    }
}

/// The log level node `node` runs at: `logSeverityScreen` of its
/// `node.<name>` BGPConfiguration, else of `default`, else `info`.
pub fn node_log_level(configs: &[BGPConfiguration], node: &str) -> &'static str {
    let own = format!("node.{node}");
    let level_of = |name: &str| {
        configs
            .iter()
            .find(|c| c.metadata.name == name)
            .and_then(|c| c.spec.log_severity_screen.as_deref())
    };
    log_level(level_of(&own).or_else(|| level_of("default")))
}

/// A node's BGP identity (`Node.spec.bgp`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeBgp {
    pub ipv4: Option<(Ipv4Addr, u8)>,
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// Its own AS, if it overrides the cluster's.
    pub as_number: Option<u32>,
    /// Route reflector: its cluster id.
    pub rr_cluster_id: Option<Ipv4Addr>,
}

impl NodeBgp {
    /// Its BGP addresses, IPv4 first.
    pub fn addrs(&self) -> Vec<IpAddr> {
        let v4 = self.ipv4.map(|(a, _)| IpAddr::V4(a));
        let v6 = self.ipv6.map(|(a, _)| IpAddr::V6(a));
        v4.into_iter().chain(v6).collect()
    }
    /// Its address of `peer`'s family.
    pub fn addr_for(&self, peer: IpAddr) -> Option<IpAddr> {
        self.addrs()
            .into_iter()
            .find(|a| a.is_ipv4() == peer.is_ipv4())
    }
}

/// `Node.spec.bgp` as settings.
pub fn node_bgp(node: &Node) -> NodeBgp {
    let Some(spec) = &node.spec.bgp else {
        return NodeBgp::default();
    };
    let NodeBGPSpec {
        ipv4_address: _,
        ipv6_address: _,
        as_number,
        // Set by manx-node itself for the IPIP device; no BGP meaning.
        ipv4_ipip_tunnel_addr: _,
        route_reflector_cluster_id: _,
    } = spec;
    NodeBgp {
        // The model's accessors parse the address forms.
        ipv4: node.ipv4_address(),
        ipv6: node.ipv6_address(),
        as_number: as_number.map(|a| a.0),
        rr_cluster_id: node.route_reflector_cluster_id(),
    }
}

/// Which nodes a BGPPeer is configured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerScope {
    /// Every node (a global peer).
    All,
    /// The node of this name.
    Node(String),
    /// The nodes this selector matches.
    Selector(String),
}

/// The far end of a BGPPeer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTarget {
    /// An address (and port): a ToR, an external reflector, or a node.
    Address {
        address: IpAddr,
        port: Option<u16>,
        as_number: Option<u32>,
    },
    /// Every node the selector matches, at its own address and AS.
    Nodes(String),
    /// Neither (validation refuses this; matches nothing).
    Nothing,
}

/// One BGPPeer, read whole: where it applies, what it reaches, and the
/// session settings every session it makes gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTemplate {
    pub name: String,
    pub scope: PeerScope,
    pub target: PeerTarget,
    pub password: Option<String>,
    /// Bind sessions to the node's address (`sourceAddress: UseNodeIP`,
    /// the default) or let the kernel choose (`None`).
    pub bind_node_ip: bool,
    pub restart_time: Option<Duration>,
    pub keepalive: Option<Duration>,
    pub next_hop_mode: NextHopMode,
    /// GTSM hop count (0 or absent: off).
    pub ttl_security: Option<u8>,
    /// BFD timers, for the IPv4 sessions (validation refuses it on an
    /// IPv6 `peerIP`).
    pub bfd: Option<BfdConfig>,
    /// `numAllowedLocalASNumbers` (allowas-in; validation keeps it <= 255).
    pub allow_local_as: u8,
    /// `filters`, resolved: the BGPFilters that exist, in order.
    pub filters: Vec<crate::policy::Filter>,
    /// `reachableBy`: the gateway a `peerIP` is reached through (the node
    /// routes the peer's address via it; the speaker does not use it).
    pub reachable_by: Option<IpAddr>,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `BGPPeer` → template; its `filters` are looked up in `filters` (the
/// usable BGPFilters, see [`usable_filters`]).
pub fn peer_template(
    p: &BGPPeer,
    filters: &[BGPFilter],
    secrets: &dyn SecretReader,
) -> PeerTemplate {
    let BGPPeerSpec {
        node,
        node_selector,
        peer_ip,
        as_number,
        peer_selector,
        password,
        source_address,
        max_restart_time,
        keepalive_time,
        next_hop_mode,
        keep_original_next_hop,
        ttl_security,
        bfd: bfd_spec,
        num_allowed_local_as_numbers,
        filters: filter_names,
        reachable_by,
    } = &p.spec;
    let scope = match (non_empty(node), non_empty(node_selector)) {
        (Some(n), _) => PeerScope::Node(n.to_string()),
        (None, Some(sel)) => PeerScope::Selector(sel.to_string()),
        (None, None) => PeerScope::All,
    };
    let target = match (non_empty(peer_selector), non_empty(peer_ip)) {
        (Some(sel), _) => PeerTarget::Nodes(sel.to_string()),
        (None, Some(ip)) => match datastore::model::parse_peer_ip(ip) {
            Ok((address, port)) => PeerTarget::Address {
                address,
                port,
                as_number: as_number.map(|a| a.0),
            },
            Err(_) => PeerTarget::Nothing,
        },
        (None, None) => PeerTarget::Nothing,
    };
    let next_hop_mode = match (next_hop_mode, keep_original_next_hop) {
        (Some(V3NextHop::Auto), _) | (None, None | Some(false)) => NextHopMode::Auto,
        (Some(V3NextHop::SelfHop), _) => NextHopMode::SelfAddr,
        (Some(V3NextHop::Keep), _) | (None, Some(true)) => NextHopMode::Keep,
    };
    PeerTemplate {
        name: p.metadata.name.clone(),
        scope,
        target,
        password: secret(password, secrets),
        bind_node_ip: source_address.unwrap_or(SourceAddress::UseNodeIP)
            == SourceAddress::UseNodeIP,
        restart_time: duration(max_restart_time),
        keepalive: duration(keepalive_time),
        next_hop_mode,
        ttl_security: ttl_security.filter(|&h| h > 0),
        bfd: bfd(bfd_spec),
        allow_local_as: num_allowed_local_as_numbers
            .map_or(0, |n| u8::try_from(n).unwrap_or(u8::MAX)),
        filters: resolve_filters(&p.metadata.name, filter_names.as_deref(), filters),
        reachable_by: non_empty(reachable_by).and_then(|r| r.parse().ok()),
    }
}

/// The usable BGPFilters of a snapshot (one that fails validation is
/// refused, as a BGPPeer is, and a peer naming it goes without it).
pub fn usable_filters(filters: &[BGPFilter]) -> Vec<BGPFilter> {
    filters
        .iter()
        .filter_map(|f| {
            usable(
                "BGPFilter",
                &f.metadata.name,
                f.clone(),
                BGPFilter::validate,
            )
        })
        .collect()
}

/// A BGPPeer's `filters` in order. A name with no (usable) BGPFilter is
/// skipped, as calico-node skips it (its BIRD config calls only the
/// filters that exist), and said once per peer and name while it lasts
/// (peers are recomputed on every cluster change: a warning each time
/// would flood the log).
fn resolve_filters(
    peer: &str,
    names: Option<&[String]>,
    filters: &[BGPFilter],
) -> Vec<crate::policy::Filter> {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    // (peer, filter) pairs warned about and still missing.
    static WARNED: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for name in names.unwrap_or_default() {
        let key = (peer.to_string(), name.clone());
        match filters.iter().find(|f| f.metadata.name == *name) {
            Some(f) => {
                warned.remove(&key);
                out.push(filter_rules(f));
            }
            None => {
                if warned.insert(key) {
                    tracing::warn!(
                        "BGPPeer {peer}: BGPFilter {name} does not exist (or is refused); the peer goes without it, as in Calico"
                    );
                }
            }
        }
    }
    out
}

/// `BGPFilter` → the speaker's [`crate::policy::Filter`].
pub fn filter_rules(f: &BGPFilter) -> crate::policy::Filter {
    let BGPFilterSpec {
        export_v4,
        import_v4,
        export_v6,
        import_v6,
    } = &f.spec;
    let rules = |list: &[BGPFilterRule]| list.iter().filter_map(filter_rule).collect();
    crate::policy::Filter {
        name: f.metadata.name.clone(),
        import_v4: rules(import_v4),
        import_v6: rules(import_v6),
        export_v4: rules(export_v4),
        export_v6: rules(export_v6),
    }
}

/// One rule; `None` only for what validation refuses (a bad CIDR).
fn filter_rule(r: &BGPFilterRule) -> Option<crate::policy::Rule> {
    use crate::policy::{Action, MatchOperator as Op, PrefixMatch, Rule};
    let BGPFilterRule {
        action,
        match_operator,
        cidr,
        prefix_length,
        source,
        // Refused by validation until Manx acts on them:
        interface: _,
        peer_type: _,
        communities: _,
        as_path_prefix: _,
        priority: _,
        operations: _,
    } = r;
    let prefix = match (non_empty(cidr), match_operator) {
        (Some(text), Some(op)) => {
            let cidr = datastore::model::parse_cidr_or_ip(text).ok()?;
            let len = |v: Option<i64>| v.and_then(|v| u8::try_from(v).ok());
            let (min, max) = prefix_length.map_or((None, None), |l| (len(l.min), len(l.max)));
            let op = match op {
                MatchOperator::Equal => Op::Equal,
                MatchOperator::NotEqual => Op::NotEqual,
                MatchOperator::In => Op::In,
                MatchOperator::NotIn => Op::NotIn,
            };
            Some(PrefixMatch::new(op, cidr, min, max))
        }
        _ => None,
    };
    Some(Rule {
        action: match action {
            FilterAction::Accept => Action::Accept,
            FilterAction::Reject => Action::Reject,
        },
        prefix,
        remote_peers_only: matches!(source, Some(FilterSource::RemotePeers)),
    })
}

impl PeerTemplate {
    /// The session to `address` in `asn` this template makes, from a node
    /// whose own address of that family is `own` (bound when the template
    /// says so).
    pub fn session(&self, address: IpAddr, port: u16, asn: u32, own: Option<IpAddr>) -> PeerConfig {
        let mut c = PeerConfig::new(address, asn);
        c.port = port;
        c.password = self.password.clone();
        c.source_address = own.filter(|_| self.bind_node_ip);
        c.ttl_security = self.ttl_security;
        c.next_hop_mode = self.next_hop_mode;
        c.restart_time = self.restart_time.map(restart_secs);
        c.hold_time = self.keepalive.map(hold_from_keepalive);
        // The speaker's BFD is single-hop IPv4 (RFC 5881).
        c.bfd = self.bfd.filter(|_| address.is_ipv4());
        c.allow_local_as = self.allow_local_as;
        c.filters = self.filters.clone();
        c
    }
}

/// Graceful-restart time in the capability's 12 bits.
pub fn restart_secs(d: Duration) -> u16 {
    d.as_secs().min(4095) as u16
}

/// Hold time from a keepalive time: three keepalives, as RFC 4271 suggests.
pub fn hold_from_keepalive(k: Duration) -> u16 {
    (k.as_secs() * 3).clamp(3, u16::MAX as u64) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::model::{Resource, parse_manifests};

    struct Secrets;
    impl SecretReader for Secrets {
        fn read(&self, name: &str, key: &str) -> Option<String> {
            (name == "s" && key == "k").then(|| "pw".to_string())
        }
    }

    fn peer(spec: &str) -> BGPPeer {
        let y = format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: p\nspec:\n{spec}"
        );
        match parse_manifests(&y, "p.yaml").unwrap().remove(0) {
            Resource::BGPPeer(p) => p,
            r => panic!("not a peer: {r:?}"),
        }
    }

    /// `filters` resolve in order to the BGPFilters that exist (a missing
    /// one skipped, as Calico does), every rule field translated, and an
    /// invalid BGPFilter in the store is not used.
    #[test]
    fn bgppeer_filters_resolve_in_order_to_the_existing_bgpfilters() {
        use crate::policy::{Action, MatchOperator as Op, PrefixMatch, Rule};
        let y = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: b\nspec:\n  importV4:\n  - {action: Reject, matchOperator: In, cidr: 10.200.0.0/16, prefixLength: {min: 24, max: 26}}\n  exportV4:\n  - {action: Accept, source: RemotePeers}\n  exportV6:\n  - {action: Reject, matchOperator: NotEqual, cidr: 'fd00::/64'}\n---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: a\nspec:\n  importV6:\n  - {action: Accept}\n";
        let mut filters: Vec<BGPFilter> = parse_manifests(y, "f.yaml")
            .unwrap()
            .into_iter()
            .map(|r| match r {
                Resource::BGPFilter(f) => f,
                r => panic!("{r:?}"),
            })
            .collect();
        // One written past validation: refused, so skipped.
        let mut bad = BGPFilter::new("c", Default::default());
        bad.spec.import_v4.push(BGPFilterRule {
            interface: Some("eth0".into()),
            ..BGPFilterRule::new(FilterAction::Reject)
        });
        filters.push(bad);
        let filters = usable_filters(&filters);
        let t = peer_template(
            &peer("  peerIP: 10.0.0.254\n  asNumber: 65001\n  filters: [b, missing, c, a]\n"),
            &filters,
            &Secrets,
        );
        let names: Vec<&str> = t.filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        let b = &t.filters[0];
        assert_eq!(
            b.import_v4,
            [Rule::prefix(
                Action::Reject,
                PrefixMatch::new(Op::In, "10.200.0.0/16".parse().unwrap(), Some(24), Some(26))
            )]
        );
        assert_eq!(
            b.export_v4,
            [Rule {
                remote_peers_only: true,
                ..Rule::any(Action::Accept)
            }]
        );
        assert_eq!(b.export_v6[0].prefix.unwrap().operator, Op::NotEqual);
        assert_eq!(t.filters[1].import_v6, [Rule::any(Action::Accept)]);
        let c = t.session("10.0.0.254".parse().unwrap(), 179, 65001, None);
        assert_eq!(c.filters, t.filters);
        assert!(c.policy().is_some());
    }

    #[test]
    fn every_session_field_of_a_bgppeer_reaches_the_session() {
        let t = peer_template(
            &peer(
                "  node: n1\n  peerIP: 10.0.0.254:1179\n  asNumber: 65001\n  password:\n    secretKeyRef: {name: s, key: k}\n  sourceAddress: None\n  maxRestartTime: 30s\n  keepaliveTime: 10s\n  nextHopMode: Self\n  ttlSecurity: 2\n  bfd: {minRx: 100ms, minTx: 50ms, multiplier: 5}\n  numAllowedLocalASNumbers: 2\n",
            ),
            &[],
            &Secrets,
        );
        assert_eq!(t.scope, PeerScope::Node("n1".into()));
        let own = Some("10.0.0.1".parse().unwrap());
        let c = t.session("10.0.0.254".parse().unwrap(), 1179, 65001, own);
        assert_eq!(c.port, 1179);
        assert_eq!(c.as_number, 65001);
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(
            c.source_address, None,
            "sourceAddress: None lets the kernel choose"
        );
        assert_eq!(c.restart_time, Some(30));
        assert_eq!(c.hold_time, Some(30));
        assert_eq!(c.next_hop_mode, NextHopMode::SelfAddr);
        assert_eq!(
            c.min_ttl(),
            Some(254),
            "ttlSecurity 2 accepts a peer two hops away"
        );
        assert_eq!(
            c.bfd,
            Some(BfdConfig {
                min_rx: 100,
                min_tx: 50,
                multiplier: 5
            })
        );
        assert_eq!(c.allow_local_as, 2, "numAllowedLocalASNumbers: allowas-in");
    }

    #[test]
    fn bfd_defaults_off_switch_and_ipv4_only() {
        let v4: IpAddr = "10.0.0.254".parse().unwrap();
        let none = peer_template(
            &peer("  peerIP: 10.0.0.254\n  asNumber: 65001\n"),
            &[],
            &Secrets,
        );
        assert_eq!(none.session(v4, 179, 65001, None).bfd, None);
        // An empty block asks for BFD at 300 ms x 3.
        let on = peer_template(
            &peer("  peerIP: 10.0.0.254\n  asNumber: 65001\n  bfd: {}\n"),
            &[],
            &Secrets,
        );
        assert_eq!(
            on.session(v4, 179, 65001, None).bfd,
            Some(BfdConfig::default())
        );
        let off = peer_template(
            &peer(
                "  peerIP: 10.0.0.254\n  asNumber: 65001\n  bfd: {enabled: false, minRx: 50ms}\n",
            ),
            &[],
            &Secrets,
        );
        assert_eq!(off.session(v4, 179, 65001, None).bfd, None);
        // A selector peering reaching a node's IPv6 address: that session
        // runs on its hold timer (the speaker's BFD is IPv4).
        let sel = peer_template(
            &peer("  peerSelector: rr == 'true'\n  bfd: {}\n"),
            &[],
            &Secrets,
        );
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert!(sel.session(v4, 179, 64512, None).bfd.is_some());
        assert_eq!(sel.session(v6, 179, 64512, None).bfd, None);
    }

    #[test]
    fn defaults_bind_the_node_ip_and_no_gtsm() {
        let t = peer_template(
            &peer("  peerIP: 10.0.0.254\n  asNumber: 65001\n  ttlSecurity: 0\n"),
            &[],
            &Secrets,
        );
        assert_eq!(t.scope, PeerScope::All);
        let own = Some("10.0.0.1".parse().unwrap());
        let c = t.session("10.0.0.254".parse().unwrap(), 179, 65001, own);
        assert_eq!(c.source_address, own);
        assert_eq!(c.min_ttl(), None);
        assert_eq!(c.next_hop_mode, NextHopMode::Auto);
        let keep = peer_template(
            &peer("  peerIP: 10.0.0.254\n  asNumber: 65001\n  keepOriginalNextHop: true\n"),
            &[],
            &Secrets,
        );
        assert_eq!(keep.next_hop_mode, NextHopMode::Keep);
    }

    #[test]
    fn cluster_settings_from_default_only() {
        let y = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: 63400\n  nodeToNodeMeshEnabled: false\n  listenPort: 1179\n  logSeverityScreen: Warning\n  nodeMeshMaxRestartTime: 10s\n  nodeMeshBFD: {minRx: 200ms}\n  serviceClusterIPs:\n  - cidr: 10.96.0.0/12\n";
        let cfgs: Vec<BGPConfiguration> = parse_manifests(y, "c.yaml")
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                Resource::BGPConfiguration(c) => Some(c),
                _ => None,
            })
            .collect();
        let s = cluster_settings(&cfgs, &Secrets);
        assert_eq!((s.as_number, s.mesh, s.listen_port), (63400, false, 1179));
        assert_eq!(s.log_level, "warn");
        assert_eq!(s.mesh_restart_time, Duration::from_secs(10));
        assert_eq!(
            s.mesh_bfd,
            Some(BfdConfig {
                min_rx: 200,
                min_tx: 300,
                multiplier: 3
            })
        );
        assert_eq!(
            s.service_cluster_ips,
            ["10.96.0.0/12".parse::<IpNetwork>().unwrap()]
        );
        assert_eq!(s.multipath, crate::rib::Multipath::default());
        assert_eq!(cluster_settings(&[], &Secrets), ClusterSettings::default());
        let mut relaxed = cfgs.clone();
        relaxed[0].spec.multipath = Some(datastore::model::MultipathSpec {
            relax_neighbor_as: Some(true),
            ..Default::default()
        });
        let m = cluster_settings(&relaxed, &Secrets).multipath;
        assert_eq!((m.ebgp, m.ibgp, m.relax_neighbor_as), (true, false, true));

        // prefixAdvertisements: names through `communities`, or values.
        let y = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  communities:\n  - {name: rack, value: '65001:100'}\n  prefixAdvertisements:\n  - cidr: 10.96.0.0/12\n    communities: [rack, '65001:1:2', '65002:7']\n";
        let advertised: Vec<BGPConfiguration> = parse_manifests(y, "c.yaml")
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                Resource::BGPConfiguration(c) => Some(c),
                _ => None,
            })
            .collect();
        let lc = cluster_settings(&advertised, &Secrets).local_communities;
        assert_eq!(
            lc,
            [crate::rib::LocalCommunities {
                cidr: "10.96.0.0/12".parse().unwrap(),
                standard: vec![(65001 << 16) | 100, (65002 << 16) | 7],
                large: vec![(65001, 1, 2)],
            }]
        );
        assert_eq!(node_log_level(&cfgs, "n1"), "warn");
        let mut node = cfgs[0].clone();
        node.metadata.name = "node.n1".into();
        node.spec = Default::default();
        node.spec.log_severity_screen = Some("Debug".into());
        let both = [cfgs[0].clone(), node];
        assert_eq!(node_log_level(&both, "n1"), "debug");
        assert_eq!(node_log_level(&both, "n2"), "warn");
        assert_eq!(node_log_level(&[], "n2"), "info");
    }
}
