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
//! Local affine blocks get a blackhole route; workloads get `<ip>/32 dev caliX scope link`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::dataplane::DataplaneConfig;
use crate::nat::NatSpec;
use crate::types::{DataplaneInput, EncapMode, MacAddr, PoolInfo};
use crate::{
    IPIP_DEVICE, IPIP_OVERHEAD, VXLAN_DEVICE, VXLAN_OVERHEAD, VXLAN_V6_DEVICE, VXLAN_V6_OVERHEAD,
};

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

/// The IPIP device wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpipDevice {
    /// MTU.
    pub mtu: u32,
    /// Tunnel address (/32), if manx-node allocated one.
    pub addr: Option<IpAddr>,
}

/// The VXLAN device wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanDevice {
    /// MTU.
    pub mtu: u32,
    /// Tunnel (VTEP) address (/32).
    pub addr: Option<IpAddr>,
    /// Device MAC.
    pub mac: MacAddr,
    /// Underlay local address.
    pub local: IpAddr,
    /// Underlay device.
    pub parent: String,
}

/// Why a pool cannot be programmed fully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DegradeReason {
    /// The pool needs IPIP and the kernel has none.
    NoIpip,
    /// An IPv6 VXLAN pool on a node whose uplink has no IPv6 address.
    NoIpv6Uplink,
}

/// Everything felix-lite wants in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredDataplane {
    /// Routes by destination.
    pub routes: BTreeMap<IpNetwork, NextHop>,
    /// `tunl0`, if any pool needs IPIP.
    pub ipip: Option<IpipDevice>,
    /// `vxlan.manx`, if any pool needs VXLAN.
    pub vxlan: Option<VxlanDevice>,
    /// Permanent ARP entries on `vxlan.manx`: peer VTEP address → peer MAC.
    pub vxlan_neighbours: BTreeMap<IpAddr, MacAddr>,
    /// FDB entries on `vxlan.manx`: peer MAC → peer node IP.
    pub vxlan_fdb: BTreeMap<MacAddr, IpAddr>,
    /// `vxlan-v6.manx`, if any IPv6 pool needs VXLAN.
    pub vxlan_v6: Option<VxlanDevice>,
    /// Permanent NDP entries on `vxlan-v6.manx`: peer IPv6 VTEP → peer MAC.
    pub vxlan_v6_neighbours: BTreeMap<IpAddr, MacAddr>,
    /// FDB entries on `vxlan-v6.manx`: peer MAC → peer node IPv6 address.
    pub vxlan_v6_fdb: BTreeMap<MacAddr, IpAddr>,
    /// Workload interfaces (for sysctls), with whether they carry IPv4 / IPv6.
    pub workload_ifaces: BTreeMap<String, (bool, bool)>,
    /// Whether any IPv6 pool exists (IPv6 forwarding is then needed).
    pub ipv6: bool,
    /// NAT-outgoing sets.
    pub nat: NatSpec,
    /// Pools that could not be programmed, and why.
    pub degraded: BTreeMap<IpNetwork, DegradeReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encap {
    Ipip,
    Vxlan,
    Vxlan6,
    Direct,
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

/// Compute the desired dataplane. `ipip_available` is false once the kernel has shown it
/// lacks IPIP: routes of IPIP pools are then left out and the pools listed as degraded.
pub fn compute(
    input: &DataplaneInput,
    cfg: &DataplaneConfig,
    ipip_available: bool,
) -> DesiredDataplane {
    let mut out = DesiredDataplane::default();
    let uplink = input.uplink.as_ref();
    let vxlan_mac = cfg
        .vxlan_mac
        .unwrap_or_else(|| MacAddr::from_seed(&input.node_name));

    // Devices: wanted when any IPv4 pool uses the encapsulation at all.
    let wants_vxlan = input
        .pools
        .iter()
        .any(|p| p.cidr.is_ipv4() && p.vxlan != EncapMode::Never);
    let wants_vxlan6 = input
        .pools
        .iter()
        .any(|p| p.cidr.is_ipv6() && p.vxlan != EncapMode::Never);
    let wants_ipip = input
        .pools
        .iter()
        .any(|p| p.cidr.is_ipv4() && p.vxlan == EncapMode::Never && p.ipip != EncapMode::Never);
    for p in &input.pools {
        if p.cidr.is_ipv6() && p.vxlan != EncapMode::Never && uplink.is_some_and(|u| u.v6.is_none())
        {
            out.degraded.insert(p.cidr, DegradeReason::NoIpv6Uplink);
        }
        if p.cidr.is_ipv4()
            && p.vxlan == EncapMode::Never
            && p.ipip != EncapMode::Never
            && !ipip_available
        {
            out.degraded.insert(p.cidr, DegradeReason::NoIpip);
        }
    }
    if let Some(up) = uplink {
        if wants_ipip && ipip_available {
            out.ipip = Some(IpipDevice {
                mtu: cfg.ipip_mtu.unwrap_or(up.mtu.saturating_sub(IPIP_OVERHEAD)),
                addr: input.ipip_tunnel_addr,
            });
        }
        if let (true, Some(v4)) = (wants_vxlan, up.v4) {
            out.vxlan = Some(VxlanDevice {
                mtu: cfg
                    .vxlan_mtu
                    .unwrap_or(up.mtu.saturating_sub(VXLAN_OVERHEAD)),
                addr: input.vxlan_tunnel_addr,
                mac: vxlan_mac,
                local: v4.ip(),
                parent: up.iface.clone(),
            });
        }
        if let (true, Some(v6)) = (wants_vxlan6, up.v6) {
            out.vxlan_v6 = Some(VxlanDevice {
                mtu: cfg
                    .vxlan_mtu_v6
                    .unwrap_or(up.mtu.saturating_sub(VXLAN_V6_OVERHEAD)),
                addr: input.vxlan_tunnel_addr_v6,
                mac: cfg
                    .vxlan_mac_v6
                    .unwrap_or_else(|| MacAddr::from_seed(&format!("{}/v6", input.node_name))),
                local: v6.ip(),
                parent: up.iface.clone(),
            });
        }
    }
    out.ipv6 = input.pools.iter().any(|p| p.cidr.is_ipv6());

    // VTEPs of every other node that has one.
    if out.vxlan.is_some() {
        for peer in &input.peers {
            if peer.name == input.node_name {
                continue;
            }
            if let (Some(IpAddr::V4(vtep)), Some(mac), IpAddr::V4(_)) =
                (peer.vxlan_tunnel_addr, peer.vxlan_mac, peer.ip)
            {
                out.vxlan_neighbours.insert(IpAddr::V4(vtep), mac);
                out.vxlan_fdb.insert(mac, peer.ip);
            }
        }
    }
    if out.vxlan_v6.is_some() {
        for peer in &input.peers {
            if peer.name == input.node_name {
                continue;
            }
            if let (Some(IpAddr::V6(vtep)), Some(mac), Some(IpAddr::V6(underlay))) =
                (peer.vxlan_tunnel_addr_v6, peer.vxlan_mac_v6, peer.ip_v6)
            {
                out.vxlan_v6_neighbours.insert(IpAddr::V6(vtep), mac);
                out.vxlan_v6_fdb.insert(mac, IpAddr::V6(underlay));
            }
        }
    }

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
            let pool = longest_pool(&input.pools, &rb.block);
            let encap = match pool {
                Some(p) if rb.block.is_ipv4() && mode_applies(p.vxlan, same_subnet) => Encap::Vxlan,
                Some(p) if rb.block.is_ipv4() && mode_applies(p.ipip, same_subnet) => Encap::Ipip,
                Some(p) if rb.block.is_ipv6() && mode_applies(p.vxlan, same_subnet) => {
                    Encap::Vxlan6
                }
                _ => Encap::Direct,
            };
            let next_hop = match encap {
                Encap::Direct => NextHop::Via {
                    gateway: rb.node_ip,
                    dev: up.iface.clone(),
                    onlink: false,
                },
                Encap::Ipip => {
                    if !ipip_available {
                        continue;
                    }
                    NextHop::Via {
                        gateway: rb.node_ip,
                        dev: IPIP_DEVICE.to_string(),
                        onlink: true,
                    }
                }
                Encap::Vxlan => {
                    let vtep = input
                        .peers
                        .iter()
                        .find(|p| p.name == rb.node)
                        .and_then(|p| p.vxlan_tunnel_addr.zip(p.vxlan_mac));
                    let Some((vtep, _)) = vtep else {
                        // The peer has not published its VTEP yet; its Node update will
                        // bring us back here.
                        tracing::debug!(block = %rb.block, node = %rb.node, "no VTEP yet");
                        continue;
                    };
                    if out.vxlan.is_none() {
                        continue;
                    }
                    NextHop::Via {
                        gateway: vtep,
                        dev: VXLAN_DEVICE.to_string(),
                        onlink: true,
                    }
                }
                Encap::Vxlan6 => {
                    let vtep = input
                        .peers
                        .iter()
                        .find(|p| p.name == rb.node)
                        .and_then(|p| p.vxlan_tunnel_addr_v6.zip(p.vxlan_mac_v6));
                    let (Some((vtep, _)), true) = (vtep, out.vxlan_v6.is_some()) else {
                        tracing::debug!(block = %rb.block, node = %rb.node, "no IPv6 VTEP yet");
                        continue;
                    };
                    NextHop::Via {
                        gateway: vtep,
                        dev: VXLAN_V6_DEVICE.to_string(),
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
    use std::net::IpAddr;

    use ipnetwork::IpNetwork;

    use crate::types::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) fn input(ipip: EncapMode, vxlan: EncapMode) -> DataplaneInput {
        let mut pool = PoolInfo::new(net("10.19.0.0/16"));
        pool.ipip = ipip;
        pool.vxlan = vxlan;
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
                PeerNode {
                    name: "b".into(),
                    ip: ip("198.19.1.2"),
                    vxlan_tunnel_addr: Some(ip("10.19.1.0")),
                    vxlan_mac: Some(MacAddr([2, 0, 0, 0, 0, 0xb])),
                    ip_v6: None,
                    vxlan_tunnel_addr_v6: None,
                    vxlan_mac_v6: None,
                },
                PeerNode {
                    name: "c".into(),
                    ip: ip("198.19.9.3"),
                    vxlan_tunnel_addr: Some(ip("10.19.2.0")),
                    vxlan_mac: Some(MacAddr([2, 0, 0, 0, 0, 0xc])),
                    ip_v6: None,
                    vxlan_tunnel_addr_v6: None,
                    vxlan_mac_v6: None,
                },
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
            ipip_tunnel_addr: Some(ip("10.19.0.1")),
            vxlan_tunnel_addr: Some(ip("10.19.0.0")),
            vxlan_tunnel_addr_v6: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LocalWorkload, RemoteBlock};

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
            true,
        );
        assert_eq!(
            d.routes[&net("10.19.1.0/26")],
            via("198.19.1.2", "tunl0", true)
        );
        assert_eq!(
            d.routes[&net("10.19.2.0/26")],
            via("198.19.9.3", "tunl0", true)
        );
        assert_eq!(d.ipip.as_ref().unwrap().mtu, 1480);
        assert!(d.vxlan.is_none());
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
            true,
        );
        assert_eq!(
            d.routes[&net("10.19.1.0/26")],
            via("10.19.1.0", "vxlan.manx", true)
        );
        let dev = d.vxlan.as_ref().unwrap();
        assert_eq!(dev.mtu, 1450);
        assert_eq!(dev.local, ip("198.19.1.1"));
        assert_eq!(dev.mac, MacAddr::from_seed("a"));
        assert_eq!(
            d.vxlan_neighbours[&ip("10.19.2.0")],
            MacAddr([2, 0, 0, 0, 0, 0xc])
        );
        assert_eq!(
            d.vxlan_fdb[&MacAddr([2, 0, 0, 0, 0, 0xc])],
            ip("198.19.9.3")
        );
        assert!(d.ipip.is_none());
    }

    #[test]
    fn never_routes_directly_via_the_uplink() {
        let d = compute(
            &input(EncapMode::Never, EncapMode::Never),
            &DataplaneConfig::default(),
            true,
        );
        assert_eq!(
            d.routes[&net("10.19.1.0/26")],
            via("198.19.1.2", "eth0", false)
        );
        assert!(d.ipip.is_none() && d.vxlan.is_none());
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
            let d = compute(&input(ipip, vxlan), &DataplaneConfig::default(), true);
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
        other.vxlan = EncapMode::Always;
        i.pools.push(other);
        i.remote_blocks.push(RemoteBlock {
            block: net("10.20.5.0/26"),
            node: "b".into(),
            node_ip: ip("198.19.1.2"),
        });
        let d = compute(&i, &DataplaneConfig::default(), false);
        assert_eq!(
            d.degraded.get(&net("10.19.0.0/16")),
            Some(&DegradeReason::NoIpip)
        );
        assert!(!d.routes.contains_key(&net("10.19.1.0/26")));
        assert!(d.ipip.is_none());
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
        i.peers[0].vxlan_mac = None;
        let cfg = DataplaneConfig {
            vxlan_mtu: Some(1400),
            ..DataplaneConfig::default()
        };
        let d = compute(&i, &cfg, true);
        assert_eq!(d.vxlan.unwrap().mtu, 1400);
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
        let d = compute(&i, &DataplaneConfig::default(), true);
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
        pool6.vxlan = EncapMode::Always;
        i.pools.push(pool6);
        i.remote_blocks.push(RemoteBlock {
            block: net("fd42:19:1::40/122"),
            node: "b".into(),
            node_ip: ip("fd42:19::2"),
        });
        i.peers[0].ip_v6 = Some(ip("fd42:19::2"));
        i.peers[0].vxlan_tunnel_addr_v6 = Some(ip("fd42:19:1::41"));
        i.peers[0].vxlan_mac_v6 = Some(MacAddr([2, 0, 0, 0, 6, 0xb]));
        // No IPv6 uplink address yet: degraded, nothing routed.
        let d = compute(&i, &DataplaneConfig::default(), true);
        assert_eq!(
            d.degraded.get(&net("fd42:19:1::/64")),
            Some(&DegradeReason::NoIpv6Uplink)
        );
        assert!(d.vxlan_v6.is_none());
        assert!(!d.routes.contains_key(&net("fd42:19:1::40/122")));
        i.uplink.as_mut().unwrap().v6 = Some(net("fd42:19::1/64"));
        let d = compute(&i, &DataplaneConfig::default(), true);
        assert!(d.degraded.is_empty());
        let dev = d.vxlan_v6.as_ref().unwrap();
        assert_eq!((dev.mtu, dev.local), (1430, ip("fd42:19::1")));
        assert_eq!(dev.mac, MacAddr::from_seed("a/v6"));
        assert_eq!(
            d.routes[&net("fd42:19:1::40/122")],
            via("fd42:19:1::41", "vxlan-v6.manx", true)
        );
        assert_eq!(
            d.vxlan_v6_neighbours[&ip("fd42:19:1::41")],
            MacAddr([2, 0, 0, 0, 6, 0xb])
        );
        assert_eq!(
            d.vxlan_v6_fdb[&MacAddr([2, 0, 0, 0, 6, 0xb])],
            ip("fd42:19::2")
        );
        // The IPv4 device is not wanted by an IPv6-only VXLAN pool.
        assert!(d.vxlan.is_none());
    }
}
