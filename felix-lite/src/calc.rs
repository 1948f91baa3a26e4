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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::dataplane::DataplaneConfig;
use crate::nat::NatSpec;
use crate::tunnel::Tunnel;
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
pub fn compute(
    input: &DataplaneInput,
    cfg: &DataplaneConfig,
    unsupported: &BTreeSet<Tunnel>,
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

    out.nat = NatSpec::from_pools(&input.pools);
    out
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
        pool.encap = Tunnel::for_pool(&pool.cidr, ipip, vxlan);
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
mod tests {
    use super::*;
    use crate::tunnel::Vtep;
    use crate::types::{LocalWorkload, RemoteBlock};

    /// No kind missing from the kernel.
    fn all() -> BTreeSet<Tunnel> {
        BTreeSet::new()
    }
    /// A kernel without IPIP.
    fn no_ipip() -> BTreeSet<Tunnel> {
        BTreeSet::from([Tunnel::Ipip])
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    use fixture::input;

    fn via(gw: &str, dev: &str, onlink: bool) -> NextHop {
        NextHop::Via {
            gateway: ip(gw),
            dev: dev.into(),
            onlink,
        }
    }

    #[test]
    fn ipip_always_routes_through_tunl0_onlink() {
        let d = compute(
            &input(EncapMode::Always, EncapMode::Never),
            &DataplaneConfig::default(),
            &all(),
        );
        assert_eq!(
            d.routes[&net("10.19.1.0/26")],
            via("198.19.1.2", "tunl0", true)
        );
        assert_eq!(
            d.routes[&net("10.19.2.0/26")],
            via("198.19.9.3", "tunl0", true)
        );
        assert_eq!(d.tunnels[&Tunnel::Ipip].mtu, 1480);
        assert!(!d.tunnels.contains_key(&Tunnel::Vxlan));
        assert_eq!(d.routes[&net("10.19.0.0/26")], NextHop::Blackhole);
        assert_eq!(
            d.routes[&net("10.19.0.5/32")],
            NextHop::Device("cali0123456789a".into())
        );
    }

    #[test]
    fn vxlan_always_routes_via_vtep_and_programs_arp_and_fdb() {
        let d = compute(
            &input(EncapMode::Never, EncapMode::Always),
            &DataplaneConfig::default(),
            &all(),
        );
        assert_eq!(
            d.routes[&net("10.19.1.0/26")],
            via("10.19.1.0", "vxlan.manx", true)
        );
        let dev = &d.tunnels[&Tunnel::Vxlan];
        assert_eq!(dev.mtu, 1450);
        assert_eq!(dev.local, Some(ip("198.19.1.1")));
        assert_eq!(dev.mac, Some(MacAddr::from_seed("a")));
        assert_eq!(
            dev.neighbours[&ip("10.19.2.0")],
            MacAddr([2, 0, 0, 0, 0, 0xc])
        );
        assert_eq!(dev.fdb[&MacAddr([2, 0, 0, 0, 0, 0xc])], ip("198.19.9.3"));
        assert!(!d.tunnels.contains_key(&Tunnel::Ipip));
    }

    #[test]
    fn never_routes_directly_via_the_uplink() {
        let d = compute(
            &input(EncapMode::Never, EncapMode::Never),
            &DataplaneConfig::default(),
            &all(),
        );
        assert_eq!(
            d.routes[&net("10.19.1.0/26")],
            via("198.19.1.2", "eth0", false)
        );
        assert!(d.tunnels.is_empty());
    }

    #[test]
    fn cross_subnet_is_direct_inside_the_subnet_and_tunnelled_outside() {
        for (ipip, vxlan, dev, gw) in [
            (
                EncapMode::CrossSubnet,
                EncapMode::Never,
                "tunl0",
                "198.19.9.3",
            ),
            (
                EncapMode::Never,
                EncapMode::CrossSubnet,
                "vxlan.manx",
                "10.19.2.0",
            ),
        ] {
            let d = compute(&input(ipip, vxlan), &DataplaneConfig::default(), &all());
            assert_eq!(
                d.routes[&net("10.19.1.0/26")],
                via("198.19.1.2", "eth0", false)
            );
            assert_eq!(d.routes[&net("10.19.2.0/26")], via(gw, dev, true));
        }
    }

    #[test]
    fn without_ipip_the_pool_is_degraded_and_its_remote_routes_skipped() {
        let mut i = input(EncapMode::Always, EncapMode::Never);
        let mut other = PoolInfo::new(net("10.20.0.0/16"));
        other.encap = Some((Tunnel::Vxlan, EncapMode::Always));
        i.pools.push(other);
        i.remote_blocks.push(RemoteBlock {
            block: net("10.20.5.0/26"),
            node: "b".into(),
            node_ip: ip("198.19.1.2"),
        });
        let d = compute(&i, &DataplaneConfig::default(), &no_ipip());
        assert_eq!(
            d.degraded.get(&net("10.19.0.0/16")),
            Some(&DegradeReason::Unsupported(Tunnel::Ipip))
        );
        assert!(!d.routes.contains_key(&net("10.19.1.0/26")));
        assert!(!d.tunnels.contains_key(&Tunnel::Ipip));
        // The VXLAN pool is still programmed, and local routes too.
        assert_eq!(
            d.routes[&net("10.20.5.0/26")],
            via("10.19.1.0", "vxlan.manx", true)
        );
        assert!(d.routes.contains_key(&net("10.19.0.5/32")));
    }

    #[test]
    fn configured_mtu_wins_and_peer_without_vtep_is_skipped() {
        let mut i = input(EncapMode::Never, EncapMode::Always);
        i.peers[0].vteps.clear();
        let cfg = DataplaneConfig {
            tunnel_mtu: BTreeMap::from([(Tunnel::Vxlan, 1400)]),
            ..DataplaneConfig::default()
        };
        let d = compute(&i, &cfg, &all());
        assert_eq!(d.tunnels[&Tunnel::Vxlan].mtu, 1400);
        assert!(!d.routes.contains_key(&net("10.19.1.0/26")));
        assert!(d.routes.contains_key(&net("10.19.2.0/26")));
    }

    #[test]
    fn ipv6_workloads_get_host_routes_and_v6_blocks_route_directly() {
        let mut i = input(EncapMode::Never, EncapMode::Never);
        i.pools.push(PoolInfo::new(net("fd42:19:1::/64")));
        i.uplink.as_mut().unwrap().v6 = Some(net("fd42:19::1/64"));
        i.remote_blocks.push(RemoteBlock {
            block: net("fd42:19:1:0:1::/122"),
            node: "b".into(),
            node_ip: ip("fd42:19::2"),
        });
        i.workloads.push(LocalWorkload {
            ip: ip("fd42:19:1::5"),
            iface: "cali0123456789a".into(),
        });
        let d = compute(&i, &DataplaneConfig::default(), &all());
        assert!(d.ipv6);
        assert_eq!(
            d.routes[&net("fd42:19:1::5/128")],
            NextHop::Device("cali0123456789a".into())
        );
        assert_eq!(
            d.routes[&net("fd42:19:1:0:1::/122")],
            via("fd42:19::2", "eth0", false)
        );
        assert_eq!(d.workload_ifaces["cali0123456789a"], (true, true));
    }

    #[test]
    fn ipv6_vxlan_routes_via_the_v6_vtep_on_vxlan_v6() {
        let mut i = input(EncapMode::Never, EncapMode::Never);
        let mut pool6 = PoolInfo::new(net("fd42:19:1::/64"));
        pool6.encap = Some((Tunnel::Vxlan6, EncapMode::Always));
        i.pools.push(pool6);
        i.remote_blocks.push(RemoteBlock {
            block: net("fd42:19:1::40/122"),
            node: "b".into(),
            node_ip: ip("fd42:19::2"),
        });
        i.peers[0].ip_v6 = Some(ip("fd42:19::2"));
        i.peers[0].vteps.insert(
            Tunnel::Vxlan6,
            Vtep {
                addr: ip("fd42:19:1::41"),
                mac: MacAddr([2, 0, 0, 0, 6, 0xb]),
            },
        );
        // No IPv6 uplink address yet: degraded, nothing routed.
        let d = compute(&i, &DataplaneConfig::default(), &all());
        assert_eq!(
            d.degraded.get(&net("fd42:19:1::/64")),
            Some(&DegradeReason::NoUnderlay(Tunnel::Vxlan6))
        );
        assert!(!d.tunnels.contains_key(&Tunnel::Vxlan6));
        assert!(!d.routes.contains_key(&net("fd42:19:1::40/122")));
        i.uplink.as_mut().unwrap().v6 = Some(net("fd42:19::1/64"));
        let d = compute(&i, &DataplaneConfig::default(), &all());
        assert!(d.degraded.is_empty());
        let dev = &d.tunnels[&Tunnel::Vxlan6];
        assert_eq!((dev.mtu, dev.local), (1430, Some(ip("fd42:19::1"))));
        assert_eq!(dev.mac, Some(MacAddr::from_seed("a/v6")));
        assert_eq!(
            d.routes[&net("fd42:19:1::40/122")],
            via("fd42:19:1::41", "vxlan-v6.manx", true)
        );
        assert_eq!(
            dev.neighbours[&ip("fd42:19:1::41")],
            MacAddr([2, 0, 0, 0, 6, 0xb])
        );
        assert_eq!(dev.fdb[&MacAddr([2, 0, 0, 0, 6, 0xb])], ip("fd42:19::2"));
        // The IPv4 device is not wanted by an IPv6-only VXLAN pool.
        assert!(!d.tunnels.contains_key(&Tunnel::Vxlan));
    }
}
