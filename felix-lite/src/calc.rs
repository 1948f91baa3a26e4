//! The calculation: [`DataplaneInput`] in, [`DesiredDataplane`] out. Pure, no I/O.
//!
//! Remote blocks route by the encapsulation of the pool they sit in (longest match):
//!
//! | pool mode            | route                                                  |
//! |----------------------|--------------------------------------------------------|
//! | IPIP Always          | `<block> via <node IP> dev tunl0 onlink`               |
//! | VXLAN Always         | `<block> via <peer VTEP> dev vxlan.manx onlink` + ARP + FDB |
//! | VXLAN Always (IPv6)  | `<block> via <peer VTEP6> dev vxlan-v6.manx onlink` + NDP + FDB |
//! | Never                | `<block> via <node IP> dev <uplink>`                   |
//! | CrossSubnet          | Never when the node IP is in the uplink's subnet, else the tunnel |
//!
//! Each kind's device and route shape come from [`crate::tunnel`].
//!
//! Local affine blocks get a blackhole route; workloads get `<ip>/32 dev caliX scope link`.
//!
//! # Routes from outside the pools
//!
//! Every other best BGP route ([`DataplaneInput::external_routes`]: a ToR's networks, a
//! default route, another cluster's pods) is installed as Calico's BIRD installs it
//! (`calico_kernel_programming` ends in `accept`; its BGP protocols use `gateway
//! recursive`): `<prefix> via <gateway> dev <dev>`, where the BGP next hop is
//!
//! * on a connected subnet (an address of any link, the uplink's included): gateway = the
//!   next hop, out of that link;
//! * else covered by a route of the kernel's main table that is not Manx's (longest
//!   match, lowest metric): that route's gateway and device (`gateway recursive`);
//! * else unreachable: not installed, and [`External::outcome`] says why.
//!
//! It is never installed where it would take over or shadow what it must not, and says so
//! ([`ExternalOutcome::Refused`]): inside an IP pool, equal to or inside one of Manx's own
//! routes (blocks, workloads) or this node's addresses, inside a connected subnet, or for a
//! prefix the kernel already has a non-Manx route for. The last rule is the safe reading
//! of BIRD's kernel protocol: BIRD cannot add its route over an alien one of the same key
//! (`EEXIST`) and with a different metric both stay, the lower winning; felix-lite
//! installs with metric 0, which would win over the host's own default route (DHCP's is
//! metric 100), so it does not install at all and reports `kernel already has a route for
//! 0.0.0.0/0 (proto dhcp); not replaced`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::MANX_ROUTE_PROTOCOL;
use crate::dataplane::DataplaneConfig;
use crate::nat::NatSpec;
use crate::netlink::{KernelAddr, KernelLink, KernelRoute, RT_TABLE_MAIN, RouteKind};
use crate::tunnel::Tunnel;
use crate::tunnel::wireguard::{self, WireguardDevice, WireguardPeerSpec};
use crate::types::{DataplaneInput, EncapMode, MacAddr, PoolInfo};

/// How a desired route forwards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// Drop (`blackhole`).
    Blackhole,
    /// Out of a device, no gateway (`dev caliX scope link`).
    Device(String),
    /// Via a gateway out of a device.
    Via {
        /// The gateway.
        gateway: IpAddr,
        /// The device.
        dev: String,
        /// `onlink`: the gateway is reachable on the device without a covering prefix.
        onlink: bool,
    },
    /// ECMP: one multipath route over two or more gateways (`nexthop via A dev X nexthop
    /// via B dev Y`), in gateway order.
    Multipath(Vec<PathHop>),
}

/// One next hop of a [`NextHop::Multipath`] route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathHop {
    /// The gateway.
    pub gateway: IpAddr,
    /// The device.
    pub dev: String,
    /// `onlink`.
    pub onlink: bool,
}

/// One desired route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DesiredRoute {
    /// Destination.
    pub dst: IpNetwork,
    /// Forwarding.
    pub next_hop: NextHop,
}

/// One tunnel device wanted (its kind is the key in [`DesiredDataplane::tunnels`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelDevice {
    /// MTU.
    pub mtu: u32,
    /// Tunnel address (/32, /128), if manx-node allocated one.
    pub addr: Option<IpAddr>,
    /// Device MAC (kinds with VTEPs).
    pub mac: Option<MacAddr>,
    /// Underlay local address (kinds that need an underlay).
    pub local: Option<IpAddr>,
    /// Underlay device.
    pub parent: String,
    /// Permanent neighbour entries: peer VTEP address → peer MAC.
    pub neighbours: BTreeMap<IpAddr, MacAddr>,
    /// FDB entries: peer MAC → peer uplink address.
    pub fdb: BTreeMap<MacAddr, IpAddr>,
}

/// Why a pool cannot be programmed fully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DegradeReason {
    /// The pool's tunnel kind is missing from the kernel (IPIP on the build machines).
    Unsupported(Tunnel),
    /// The uplink has no address of the tunnel's underlay family (an IPv6 VXLAN pool on
    /// a node without an IPv6 uplink address).
    NoUnderlay(Tunnel),
}

impl DegradeReason {
    /// The one-line status message, with what to do.
    pub fn message(self, cidr: &IpNetwork) -> String {
        match self {
            DegradeReason::Unsupported(t) => t.unsupported_message(cidr),
            DegradeReason::NoUnderlay(t) => t.no_underlay_message(cidr),
        }
    }
}

/// Everything felix-lite wants in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredDataplane {
    /// Routes by destination.
    pub routes: BTreeMap<IpNetwork, NextHop>,
    /// Tunnel devices, for the kinds some pool uses.
    pub tunnels: BTreeMap<Tunnel, TunnelDevice>,
    /// Workload interfaces (for sysctls), with whether they carry IPv4 / IPv6.
    pub workload_ifaces: BTreeMap<String, (bool, bool)>,
    /// Whether any IPv6 pool exists (IPv6 forwarding is then needed).
    pub ipv6: bool,
    /// NAT-outgoing sets.
    pub nat: NatSpec,
    /// Pools that could not be programmed, and why.
    pub degraded: BTreeMap<IpNetwork, DegradeReason>,
    /// The routes from outside the pools and what became of each (an installed one is in
    /// `routes` too).
    pub external: BTreeMap<IpNetwork, External>,
    /// `wireguard.manx`, when WireGuard is on and the uplink has an IPv4 address.
    pub wireguard: Option<WireguardDevice>,
    /// The host routes to BGP peers through their `reachableBy` gateways
    /// ([`DataplaneInput::peer_routes`]), by peer: installed (then in `routes`), or why not.
    pub peer_routes: BTreeMap<IpAddr, Result<(), String>>,
}

/// One route from outside the pools, and what the calculation made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// Its BGP next hops (several: equal paths merged, ECMP).
    pub next_hops: Vec<IpAddr>,
    /// Installed, or why not.
    pub outcome: ExternalOutcome,
}

/// What became of a route from outside the pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalOutcome {
    /// In [`DesiredDataplane::routes`]. `through`: the kernel route the (first) next hop
    /// was resolved through (`None`: the next hop is on a connected subnet).
    Installed {
        /// The resolving route's destination.
        through: Option<IpNetwork>,
        /// Next hops of a multipath route left out, each with why (the others are
        /// installed).
        left_out: Vec<String>,
    },
    /// The next hop cannot be reached: one line saying why.
    Unreachable(String),
    /// Installing it would take over or shadow a route it must not: one line saying which.
    Refused(String),
}

/// What the calculation knows of the kernel, for routes from outside the pools: the
/// addresses of every link and the main table's routes that are not Manx's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// Interface addresses (with their prefix length) and their device.
    pub addresses: Vec<(IpNetwork, String)>,
    /// Main-table routes of every protocol but [`MANX_ROUTE_PROTOCOL`].
    pub routes: Vec<ForeignRoute>,
}

/// A main-table route felix-lite does not own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRoute {
    /// Destination.
    pub dst: IpNetwork,
    /// Unicast, blackhole, or another type (unreachable, prohibit, throw).
    pub kind: RouteKind,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
    /// Its one output device (`None` for a multipath route).
    pub dev: Option<String>,
    /// `onlink`.
    pub onlink: bool,
    /// Route protocol (`rtm_protocol`).
    pub protocol: u8,
    /// Metric.
    pub metric: u32,
}

impl KernelView {
    /// From kernel dumps: every address, and every main-table route that is not Manx's,
    /// with devices by name.
    pub fn from_kernel(
        links: &[KernelLink],
        addrs: &[KernelAddr],
        routes: &[KernelRoute],
    ) -> KernelView {
        let name: HashMap<u32, &str> = links.iter().map(|l| (l.index, l.name.as_str())).collect();
        KernelView {
            addresses: addrs
                .iter()
                .filter_map(|a| Some((a.addr, name.get(&a.index)?.to_string())))
                .collect(),
            routes: routes
                .iter()
                .filter(|r| r.protocol != MANX_ROUTE_PROTOCOL && r.table == RT_TABLE_MAIN)
                .map(|r| ForeignRoute {
                    dst: masked(r.dst),
                    kind: r.kind,
                    gateway: r.gateway,
                    dev: r.oif.and_then(|i| name.get(&i)).map(|n| (*n).to_string()),
                    onlink: r.onlink,
                    protocol: r.protocol,
                    metric: r.metric,
                })
                .collect(),
        }
    }
}

/// `net` with its host bits cleared (`198.19.1.1/24` → `198.19.1.0/24`).
fn masked(net: IpNetwork) -> IpNetwork {
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(net)
}

/// The prefixes of length `prefix(net)` down to 0 that contain `net`, longest first.
fn supernets(net: IpNetwork) -> impl Iterator<Item = IpNetwork> {
    (0..=net.prefix())
        .rev()
        .filter_map(move |len| IpNetwork::new(net.ip(), len).ok().map(masked))
}

/// iproute2's name of a route protocol (`/etc/iproute2/rt_protos`), else its number.
pub fn protocol_name(p: u8) -> String {
    match p {
        1 => "redirect".into(),
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        9 => "ra".into(),
        11 => "zebra".into(),
        12 => "bird".into(),
        16 => "dhcp".into(),
        18 => "keepalived".into(),
        42 => "babel".into(),
        186 => "bgp".into(),
        187 => "isis".into(),
        188 => "ospf".into(),
        189 => "rip".into(),
        p => p.to_string(),
    }
}

fn kind_name(k: RouteKind) -> String {
    match k {
        RouteKind::Unicast => "unicast".into(),
        RouteKind::Blackhole => "blackhole".into(),
        RouteKind::Other(7) => "unreachable".into(),
        RouteKind::Other(8) => "prohibit".into(),
        RouteKind::Other(9) => "throw".into(),
        RouteKind::Other(t) => format!("type {t}"),
    }
}

/// Lookups over the kernel view and Manx's own routes, for the routes from outside the
/// pools.
struct Resolver<'a> {
    /// Connected subnets → device.
    connected: HashMap<IpNetwork, &'a str>,
    /// This node's own addresses.
    own: BTreeSet<IpAddr>,
    /// Foreign routes by destination, the lowest metric of each.
    foreign: HashMap<IpNetwork, &'a ForeignRoute>,
    /// The installed host routes to `reachableBy` peers: peer → (gateway, device).
    peers: HashMap<IpAddr, (IpAddr, String)>,
    /// Destinations of ignored interfaces' device routes: not followed by next hops.
    ignored_device_routes: HashSet<IpNetwork>,
    /// Every link's subnets, ignored ones included → device: where a static route's
    /// gateway may be (BIRD finds a static `via` neighbour on any interface).
    neighbours: HashMap<IpNetwork, &'a str>,
}

/// Interfaces calico-node's BIRD always leaves out of `protocol direct`: workload veths and
/// kube-proxy's IPVS dummy (an address per cluster IP).
pub const ALWAYS_IGNORED_INTERFACES: [&str; 2] = ["cali*", "kube-ipvs*"];

/// Whether interface `name` matches BIRD pattern `pattern` (`*` any run of characters, `?`
/// any one), as BIRD's `interface` lists match.
pub fn interface_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// Whether `dev`'s addresses are left out of the connected subnets: `ignoredInterfaces`
/// and [`ALWAYS_IGNORED_INTERFACES`].
fn ignored(input: &DataplaneInput, dev: &str) -> bool {
    ALWAYS_IGNORED_INTERFACES
        .iter()
        .copied()
        .chain(input.ignored_interfaces.iter().map(String::as_str))
        .any(|p| interface_matches(p, dev))
}

/// Route protocol of the kernel's own device routes (`proto kernel`).
const RTPROT_KERNEL: u8 = 2;

impl<'a> Resolver<'a> {
    fn new(input: &'a DataplaneInput, view: &'a KernelView) -> Self {
        let mut connected = HashMap::new();
        let mut own = BTreeSet::new();
        let uplink = input.uplink.iter().flat_map(|u| {
            [u.v4, u.v6]
                .into_iter()
                .flatten()
                .map(move |a| (a, u.iface.as_str()))
        });
        let mut neighbours = HashMap::new();
        for (addr, dev) in uplink.chain(view.addresses.iter().map(|(a, d)| (*a, d.as_str()))) {
            own.insert(addr.ip());
            neighbours.entry(masked(addr)).or_insert(dev);
            if !ignored(input, dev) {
                connected.entry(masked(addr)).or_insert(dev);
            }
        }
        own.extend(input.tunnel_addrs.values().copied());
        let mut foreign: HashMap<IpNetwork, &ForeignRoute> = HashMap::new();
        let mut device_routes = HashSet::new();
        for r in &view.routes {
            let e = foreign.entry(r.dst).or_insert(r);
            if r.metric < e.metric {
                *e = r;
            }
            // An ignored interface's subnet route: no way through for a next hop (BIRD's
            // kernel protocol never learns `proto kernel` routes either).
            if r.protocol == RTPROT_KERNEL && r.dev.as_deref().is_some_and(|d| ignored(input, d)) {
                device_routes.insert(r.dst);
            }
        }
        Resolver {
            connected,
            own,
            foreign,
            ignored_device_routes: device_routes,
            neighbours,
            peers: HashMap::new(),
        }
    }

    /// The device of the longest subnet of any link holding `ip`.
    fn neighbour_dev(&self, ip: IpAddr) -> Option<&'a str> {
        supernets(IpNetwork::from(ip)).find_map(|n| self.neighbours.get(&n).copied())
    }

    /// Where a next hop leads: (gateway, device, onlink, the resolving route), or why not.
    fn resolve(
        &self,
        nh: IpAddr,
    ) -> Result<(IpAddr, String, bool, Option<IpNetwork>), ExternalOutcome> {
        if nh.is_unspecified() || self.own.contains(&nh) {
            return Err(ExternalOutcome::Unreachable(format!(
                "next hop {nh} is this node's own address"
            )));
        }
        if let IpAddr::V6(v6) = nh
            && v6.segments()[0] & 0xffc0 == 0xfe80
        {
            return Err(ExternalOutcome::Unreachable(format!(
                "next hop {nh} is link-local: its link is not known"
            )));
        }
        // A peer's own host route (`reachableBy`) is the longest match there is.
        if let Some((gateway, dev)) = self.peers.get(&nh) {
            return Ok((*gateway, dev.clone(), false, Some(IpNetwork::from(nh))));
        }
        for net in supernets(IpNetwork::from(nh)) {
            if let Some(dev) = self.connected.get(&net) {
                return Ok((nh, dev.to_string(), false, None));
            }
            let Some(r) = self.foreign.get(&net) else {
                continue;
            };
            if self.ignored_device_routes.contains(&net) {
                continue;
            }
            let proto = protocol_name(r.protocol);
            return match (r.kind, &r.dev) {
                (RouteKind::Unicast, Some(dev)) => {
                    Ok((r.gateway.unwrap_or(nh), dev.clone(), r.onlink, Some(net)))
                }
                (RouteKind::Unicast, None) => Err(ExternalOutcome::Unreachable(format!(
                    "next hop {nh} resolves through {net} (proto {proto}), a route without a \
                     single device (multipath is not followed)"
                ))),
                (kind, _) => Err(ExternalOutcome::Unreachable(format!(
                    "next hop {nh} resolves to a {} route {net} (proto {proto})",
                    kind_name(kind)
                ))),
            };
        }
        if let Some(dev) = self.neighbour_dev(nh) {
            return Err(ExternalOutcome::Unreachable(format!(
                "next hop {nh} is on a subnet of {dev}, which ignoredInterfaces (or cali*, \
                 kube-ipvs*) leaves out, and no other kernel route covers it"
            )));
        }
        Err(ExternalOutcome::Unreachable(format!(
            "next hop {nh} is unreachable: no connected subnet or kernel route covers it"
        )))
    }
}

/// Add the host routes to the BGP peers reached through a gateway (`reachableBy`) to
/// `out`, as calico-node's BIRD installs its static `route <peer>/32 via <gateway>`: the
/// gateway must be on a connected subnet (BIRD's static `via` needs a neighbour there), and
/// the route never takes over one of Manx's (a block, a workload) or another protocol's
/// route for the same prefix. Each installed one is known to `r` for the next hops that
/// follow it.
fn add_peer_routes(input: &DataplaneInput, r: &mut Resolver<'_>, out: &mut DesiredDataplane) {
    for (&peer, &gateway) in &input.peer_routes {
        let dst = IpNetwork::from(peer);
        let outcome = if peer.is_ipv4() != gateway.is_ipv4() {
            Err(format!("gateway {gateway} is of the other address family"))
        } else if r.own.contains(&peer) {
            Err(format!("{peer} is this node's own address"))
        } else if r.own.contains(&gateway) {
            Err(format!("gateway {gateway} is this node's own address"))
        } else if out.routes.contains_key(&dst) {
            Err(format!("Manx already routes {dst} (a block or a workload)"))
        } else if let Some(f) = r.foreign.get(&dst) {
            Err(format!(
                "kernel already has a route for {dst} (proto {}); not replaced",
                protocol_name(f.protocol)
            ))
        } else {
            r.neighbour_dev(gateway)
                .ok_or_else(|| format!("gateway {gateway} is not on a connected subnet"))
        };
        if let Ok(dev) = outcome {
            out.routes.insert(
                dst,
                NextHop::Via {
                    gateway,
                    dev: dev.to_string(),
                    onlink: false,
                },
            );
            r.peers.insert(peer, (gateway, dev.to_string()));
        }
        out.peer_routes.insert(peer, outcome.map(|_| ()));
    }
}

/// Add the routes from outside the pools to `out` (whose Manx routes are complete). A
/// route with several next hops (ECMP) becomes one multipath route over those that
/// resolve; the ones that do not are listed in [`ExternalOutcome::Installed::left_out`].
fn add_external(input: &DataplaneInput, r: &Resolver<'_>, out: &mut DesiredDataplane) {
    let pools: BTreeSet<IpNetwork> = input.pools.iter().map(|p| masked(p.cidr)).collect();
    let manx: BTreeSet<IpNetwork> = out.routes.keys().map(|k| masked(*k)).collect();
    let mut resolved = HashMap::new();
    let mut installs = Vec::new();
    for (prefix, next_hops) in &input.external_routes {
        let prefix = masked(*prefix);
        let refused = next_hops
            .iter()
            .find_map(|nh| refusal(prefix, *nh, r, &pools, &manx));
        let outcome = match refused {
            Some(no) => no,
            None => {
                let mut hops = BTreeSet::new();
                let mut through = None;
                let mut left_out = Vec::new();
                let mut first_error = None;
                for nh in next_hops {
                    match resolved.entry(*nh).or_insert_with(|| r.resolve(*nh)) {
                        Ok((gateway, dev, onlink, via)) => {
                            if hops.is_empty() {
                                through = *via;
                            }
                            hops.insert(PathHop {
                                gateway: *gateway,
                                dev: dev.clone(),
                                onlink: *onlink,
                            });
                        }
                        Err(e) => {
                            left_out.push(outcome_text(e));
                            first_error.get_or_insert_with(|| e.clone());
                        }
                    }
                }
                let mut hops: Vec<PathHop> = hops.into_iter().collect();
                match (hops.len(), first_error) {
                    (0, Some(e)) => e,
                    (0, None) => ExternalOutcome::Unreachable("no next hop".into()),
                    (1, _) => {
                        let h = hops.remove(0);
                        installs.push((
                            prefix,
                            NextHop::Via {
                                gateway: h.gateway,
                                dev: h.dev,
                                onlink: h.onlink,
                            },
                        ));
                        ExternalOutcome::Installed { through, left_out }
                    }
                    _ => {
                        installs.push((prefix, NextHop::Multipath(hops)));
                        ExternalOutcome::Installed { through, left_out }
                    }
                }
            }
        };
        out.external.insert(
            prefix,
            External {
                next_hops: next_hops.clone(),
                outcome,
            },
        );
    }
    out.routes.extend(installs);
}

/// The one line of a route that is not installed.
fn outcome_text(o: &ExternalOutcome) -> String {
    match o {
        ExternalOutcome::Unreachable(why) | ExternalOutcome::Refused(why) => why.clone(),
        ExternalOutcome::Installed { .. } => "installed".into(),
    }
}

/// Why `prefix` via `nh` must not be installed, if it must not.
fn refusal(
    prefix: IpNetwork,
    nh: IpAddr,
    r: &Resolver<'_>,
    pools: &BTreeSet<IpNetwork>,
    manx: &BTreeSet<IpNetwork>,
) -> Option<ExternalOutcome> {
    if prefix.is_ipv4() != nh.is_ipv4() {
        return Some(ExternalOutcome::Unreachable(format!(
            "next hop {nh} is of the other address family (RFC 5549 next hops are not supported)"
        )));
    }
    for net in supernets(prefix) {
        let why = if pools.contains(&net) {
            format!("inside IP pool {net}: only the pool's blocks are routed there")
        } else if manx.contains(&net) {
            format!("inside Manx's own route for {net} (a block or a workload)")
        } else if let Some(dev) = r.connected.get(&net) {
            format!("inside connected subnet {net} (dev {dev}): not routed away from the link")
        } else {
            continue;
        };
        return Some(ExternalOutcome::Refused(why));
    }
    let host = prefix.prefix() == if prefix.is_ipv4() { 32 } else { 128 };
    if host && r.own.contains(&prefix.ip()) {
        return Some(ExternalOutcome::Refused(format!(
            "{} is this node's own address",
            prefix.ip()
        )));
    }
    r.foreign.get(&prefix).map(|f| {
        ExternalOutcome::Refused(format!(
            "kernel already has a route for {prefix} (proto {}); not replaced",
            protocol_name(f.protocol)
        ))
    })
}

fn longest_pool<'a>(pools: &'a [PoolInfo], block: &IpNetwork) -> Option<&'a PoolInfo> {
    pools
        .iter()
        .filter(|p| p.cidr.is_ipv4() == block.is_ipv4() && p.cidr.contains(block.network()))
        .max_by_key(|p| p.cidr.prefix())
}

/// Resolve one mode against the peer's location.
fn mode_applies(mode: EncapMode, same_subnet: bool) -> bool {
    match mode {
        EncapMode::Always => true,
        EncapMode::CrossSubnet => !same_subnet,
        EncapMode::Never => false,
    }
}

/// Compute the desired dataplane. `unsupported` holds the tunnel kinds the kernel has shown
/// it lacks: their pools' remote routes are then left out and the pools listed as degraded.
/// Without a [`KernelView`], routes from outside the pools resolve only on the uplink's
/// subnets: see [`compute_with`].
pub fn compute(
    input: &DataplaneInput,
    cfg: &DataplaneConfig,
    unsupported: &BTreeSet<Tunnel>,
) -> DesiredDataplane {
    compute_with(input, cfg, unsupported, &KernelView::default())
}

/// [`compute`], resolving the routes from outside the pools through `kernel`.
pub fn compute_with(
    input: &DataplaneInput,
    cfg: &DataplaneConfig,
    unsupported: &BTreeSet<Tunnel>,
    kernel: &KernelView,
) -> DesiredDataplane {
    let mut out = DesiredDataplane::default();
    let uplink = input.uplink.as_ref();

    // Devices: wanted when any pool of the kind's family uses it at all.
    let wanted: BTreeSet<Tunnel> = input
        .pools
        .iter()
        .filter_map(|p| p.tunnel().filter(|t| t.ipv6() == p.cidr.is_ipv6()))
        .collect();
    for p in &input.pools {
        let Some(t) = p.tunnel() else { continue };
        if t.ipv6() && t.needs_underlay() && uplink.is_some_and(|u| u.v6.is_none()) {
            out.degraded.insert(p.cidr, DegradeReason::NoUnderlay(t));
        }
        if unsupported.contains(&t) {
            out.degraded.insert(p.cidr, DegradeReason::Unsupported(t));
        }
    }
    if let Some(up) = uplink {
        for &t in wanted.difference(unsupported) {
            let local = if t.ipv6() { up.v6 } else { up.v4 }.map(|n| n.ip());
            if t.needs_underlay() && local.is_none() {
                continue;
            }
            let mut dev = TunnelDevice {
                mtu: cfg
                    .tunnel_mtu
                    .get(&t)
                    .copied()
                    .unwrap_or(up.mtu.saturating_sub(t.overhead())),
                addr: input.tunnel_addrs.get(&t).copied(),
                mac: cfg
                    .tunnel_mac
                    .get(&t)
                    .copied()
                    .or_else(|| t.default_mac(&input.node_name)),
                local: local.filter(|_| t.needs_underlay()),
                parent: up.iface.clone(),
                neighbours: BTreeMap::new(),
                fdb: BTreeMap::new(),
            };
            // VTEPs of every other node that has one.
            if t.has_vteps() {
                for peer in input.peers.iter().filter(|p| p.name != input.node_name) {
                    if let (Some(vtep), Some(underlay)) = (peer.vteps.get(&t), peer.underlay(t))
                        && vtep.addr.is_ipv6() == t.ipv6()
                    {
                        dev.neighbours.insert(vtep.addr, vtep.mac);
                        dev.fdb.insert(vtep.mac, underlay);
                    }
                }
            }
            out.tunnels.insert(t, dev);
        }
    }
    out.ipv6 = input.pools.iter().any(|p| p.cidr.is_ipv6());
    out.wireguard = wireguard_device(input);

    // Remote blocks.
    if let Some(up) = uplink {
        for rb in &input.remote_blocks {
            if rb.node == input.node_name || rb.block.is_ipv4() != rb.node_ip.is_ipv4() {
                continue;
            }
            let Some(local) = up.addr_for(rb.node_ip) else {
                continue;
            };
            if local.ip() == rb.node_ip {
                continue;
            }
            // Encrypted: a peer on wireguard.manx (it has published its key); its IPv4
            // blocks are then its allowed IPs there.
            if let Some(wg) = &out.wireguard
                && rb.block.is_ipv4()
                && wg
                    .peers
                    .values()
                    .any(|p| p.endpoint.ip() == rb.node_ip && p.allowed_ips.contains(&rb.block))
            {
                out.routes
                    .insert(rb.block, NextHop::Device(wireguard::DEVICE.to_string()));
                continue;
            }
            let same_subnet = local.contains(rb.node_ip);
            let tunnel = longest_pool(&input.pools, &rb.block)
                .and_then(|p| p.encap)
                .filter(|(t, m)| t.ipv6() == rb.block.is_ipv6() && mode_applies(*m, same_subnet))
                .map(|(t, _)| t);
            let next_hop = match tunnel {
                None => NextHop::Via {
                    gateway: rb.node_ip,
                    dev: up.iface.clone(),
                    onlink: false,
                },
                Some(t) => {
                    if !out.tunnels.contains_key(&t) {
                        // The kernel lacks the kind, or the underlay is missing.
                        continue;
                    }
                    let peer = input.peers.iter().find(|p| p.name == rb.node);
                    let Some(gateway) = t.gateway(rb.node_ip, peer) else {
                        // The peer has not published its VTEP yet; its Node update will
                        // bring us back here.
                        tracing::debug!(block = %rb.block, node = %rb.node, tunnel = %t, "no VTEP yet");
                        continue;
                    };
                    NextHop::Via {
                        gateway,
                        dev: t.device().to_string(),
                        onlink: true,
                    }
                }
            };
            out.routes.insert(rb.block, next_hop);
        }
    }

    // Local affine blocks: blackhole, so addresses of the block that no pod holds are
    // dropped here instead of bouncing back to the network.
    for b in &input.local_blocks {
        out.routes.insert(*b, NextHop::Blackhole);
    }

    // Workloads (more specific than the blackholes).
    for w in &input.workloads {
        let dst = IpNetwork::from(w.ip);
        out.routes.insert(dst, NextHop::Device(w.iface.clone()));
        let e = out.workload_ifaces.entry(w.iface.clone()).or_default();
        match w.ip {
            IpAddr::V4(_) => e.0 = true,
            IpAddr::V6(_) => e.1 = true,
        }
    }

    // The host routes to `reachableBy` peers, then every other best BGP route, last:
    // neither may take over any of the above, and BGP next hops at such a peer resolve
    // through its route.
    if !input.external_routes.is_empty() || !input.peer_routes.is_empty() {
        let mut r = Resolver::new(input, kernel);
        add_peer_routes(input, &mut r, &mut out);
        add_external(input, &r, &mut out);
    }

    out.nat = NatSpec::from_pools(&input.pools);
    out
}

/// `wireguard.manx` as `input` wants it: every other node that has published a public key
/// and has an IPv4 address is a peer at `<node IP>:<port>`, with its IPv4 blocks and its
/// node address as allowed IPs. None when WireGuard is off or the uplink has no IPv4 address.
fn wireguard_device(input: &DataplaneInput) -> Option<WireguardDevice> {
    let wg = input.wireguard?;
    let up = input.uplink.as_ref()?;
    up.v4?;
    let mut peers: BTreeMap<wireguard::PublicKey, WireguardPeerSpec> = BTreeMap::new();
    let mut by_node: BTreeMap<&str, wireguard::PublicKey> = BTreeMap::new();
    for p in input.peers.iter().filter(|p| p.name != input.node_name) {
        let Some(key) = p
            .wireguard_public_key
            .as_deref()
            .and_then(wireguard::base64_decode)
        else {
            continue;
        };
        if !p.ip.is_ipv4() || peers.contains_key(&key) {
            // Two nodes with one key (a copied key file) would steal each other's
            // traffic: the first keeps it, the other stays unencrypted.
            continue;
        }
        by_node.insert(p.name.as_str(), key);
        peers.insert(
            key,
            WireguardPeerSpec {
                endpoint: wireguard::endpoint(p.ip, wg.port),
                // Its node address too: the host's own traffic to a pod here (source: the
                // peer's uplink address, the device having none) passes the allowed-IPs
                // check. No route sends the node address into the device.
                allowed_ips: vec![IpNetwork::from(p.ip)],
            },
        );
    }
    for rb in &input.remote_blocks {
        if !rb.block.is_ipv4() || rb.node == input.node_name {
            continue;
        }
        if let Some(peer) = by_node.get(rb.node.as_str()).and_then(|k| peers.get_mut(k))
            && peer.endpoint.ip() == rb.node_ip
        {
            peer.allowed_ips.push(rb.block);
        }
    }
    for p in peers.values_mut() {
        p.allowed_ips.sort_by_key(|n| (n.network(), n.prefix()));
        p.allowed_ips.dedup();
    }
    Some(WireguardDevice {
        mtu: wg.mtu.unwrap_or(up.mtu.saturating_sub(wireguard::OVERHEAD)),
        port: wg.port,
        peers,
    })
}

/// The distinct pools that cannot be programmed, for status output.
pub fn degraded_set(d: &DesiredDataplane) -> BTreeSet<(IpNetwork, DegradeReason)> {
    d.degraded.iter().map(|(k, v)| (*k, *v)).collect()
}

/// The one-pool, three-node input the calculation and dataplane tests share:
/// node `a` (198.19.1.1) with block 10.19.0.0/26 and one workload, `b` on
/// its subnet and `c` on another, both with VXLAN tunnel addresses.
#[cfg(test)]
pub(crate) mod fixture {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use ipnetwork::IpNetwork;

    use crate::tunnel::{Tunnel, Vtep};
    use crate::types::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) fn input(ipip: EncapMode, vxlan: EncapMode) -> DataplaneInput {
        let mut pool = PoolInfo::new(net("10.19.0.0/16"));
        pool.encap = Tunnel::for_pool(&pool.cidr, ipip, vxlan, EncapMode::Never);
        DataplaneInput {
            node_name: "a".into(),
            pools: vec![pool],
            remote_blocks: vec![
                RemoteBlock {
                    block: net("10.19.1.0/26"),
                    node: "b".into(),
                    node_ip: ip("198.19.1.2"),
                },
                RemoteBlock {
                    block: net("10.19.2.0/26"),
                    node: "c".into(),
                    node_ip: ip("198.19.9.3"),
                },
            ],
            local_blocks: vec![net("10.19.0.0/26")],
            peers: vec![
                peer("b", "198.19.1.2", "10.19.1.0", 0xb),
                peer("c", "198.19.9.3", "10.19.2.0", 0xc),
            ],
            workloads: vec![LocalWorkload {
                ip: ip("10.19.0.5"),
                iface: "cali0123456789a".into(),
            }],
            uplink: Some(Uplink {
                iface: "eth0".into(),
                v4: Some(net("198.19.1.1/24")),
                v6: None,
                mtu: 1500,
            }),
            tunnel_addrs: BTreeMap::from([
                (Tunnel::Ipip, ip("10.19.0.1")),
                (Tunnel::Vxlan, ip("10.19.0.0")),
            ]),
            external_routes: BTreeMap::new(),
            wireguard: None,
            peer_routes: BTreeMap::new(),
            ignored_interfaces: Vec::new(),
        }
    }

    /// A peer with an IPv4 VXLAN VTEP, MAC `02:00:00:00:00:<m>`.
    fn peer(name: &str, node_ip: &str, vtep: &str, m: u8) -> PeerNode {
        let mut p = PeerNode::new(name, ip(node_ip));
        p.vteps.insert(
            Tunnel::Vxlan,
            Vtep {
                addr: ip(vtep),
                mac: MacAddr([2, 0, 0, 0, 0, m]),
            },
        );
        p
    }
}

#[cfg(test)]
mod tests;
