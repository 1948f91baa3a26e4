//! The encapsulations felix-lite programs, one [`Tunnel`] variant each, with their
//! per-kind specs in their own files (as rtnetlink keeps one link kind per file):
//! [`ipip`] (`tunl0`), [`vxlan`] (`vxlan.manx` over IPv4, `vxlan-v6.manx` over IPv6) and
//! [`udp`] (Flannel's UDP backend, the TUN `udp.manx`).
//!
//! A kind says its device name, MTU overhead, link attributes, whether it has per-node
//! VTEPs (address + MAC, with neighbour and FDB entries), and the route shape of a remote
//! block. A new backend (a UDP/TUN tunnel, WireGuard) is a new variant and a new file;
//! pools, peers, the calculation and the link reconciler go through this module.

pub mod ipip;
pub mod udp;
pub mod vxlan;
pub mod wireguard;

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::dataplane::DataplaneConfig;
use crate::netlink::LinkKind;
use crate::types::{EncapMode, MacAddr, PeerNode};

/// One encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tunnel {
    /// IP-in-IP through `tunl0` (IPv4 pools).
    Ipip,
    /// VXLAN over the IPv4 underlay through `vxlan.manx` (IPv4 pools).
    Vxlan,
    /// VXLAN over the IPv6 underlay through `vxlan-v6.manx` (IPv6 pools).
    Vxlan6,
    /// Flannel's UDP backend through the TUN `udp.manx` (IPv4 pools; Manx's `udpMode`).
    Udp,
}

/// A peer node's tunnel endpoint: its tunnel address and device MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vtep {
    /// The peer's tunnel (VTEP) address.
    pub addr: IpAddr,
    /// The peer's device MAC.
    pub mac: MacAddr,
}

impl Tunnel {
    /// Every kind, in the order the dataplane programs them.
    pub const ALL: [Tunnel; 4] = [Tunnel::Ipip, Tunnel::Vxlan, Tunnel::Vxlan6, Tunnel::Udp];

    /// Short name, for logs and manx-node's IPAM handles (`<name>-tunnel-addr-<node>`).
    pub fn name(self) -> &'static str {
        match self {
            Tunnel::Ipip => "ipip",
            Tunnel::Vxlan => "vxlan",
            Tunnel::Vxlan6 => "vxlan-v6",
            Tunnel::Udp => "udp",
        }
    }

    /// The device felix-lite owns for it.
    pub fn device(self) -> &'static str {
        match self {
            Tunnel::Ipip => ipip::DEVICE,
            Tunnel::Vxlan => vxlan::DEVICE,
            Tunnel::Vxlan6 => vxlan::DEVICE_V6,
            Tunnel::Udp => udp::DEVICE,
        }
    }

    /// Bytes of encapsulation subtracted from the uplink MTU.
    pub fn overhead(self) -> u32 {
        match self {
            Tunnel::Ipip => ipip::OVERHEAD,
            Tunnel::Vxlan => vxlan::OVERHEAD,
            Tunnel::Vxlan6 => vxlan::OVERHEAD_V6,
            Tunnel::Udp => udp::OVERHEAD,
        }
    }

    /// Whether it carries IPv6 pools (and, for VXLAN, rides an IPv6 underlay).
    pub fn ipv6(self) -> bool {
        matches!(self, Tunnel::Vxlan6)
    }

    /// Whether peers have VTEPs ([`Vtep`]): the device then has a MAC, and one
    /// permanent neighbour and one FDB entry per peer.
    pub fn has_vteps(self) -> bool {
        matches!(self, Tunnel::Vxlan | Tunnel::Vxlan6)
    }

    /// Whether the device needs an underlay address of its family on the uplink.
    pub fn needs_underlay(self) -> bool {
        self.has_vteps()
    }

    /// Whether felix-lite deletes the device when no pool wants it. `tunl0` is the ipip
    /// module's fallback device: it cannot be deleted, it is left in place.
    pub fn removable(self) -> bool {
        !matches!(self, Tunnel::Ipip)
    }

    /// The device MAC on node `node` when none is configured (VTEP kinds only).
    pub fn default_mac(self, node: &str) -> Option<MacAddr> {
        match self {
            Tunnel::Ipip | Tunnel::Udp => None,
            Tunnel::Vxlan => Some(vxlan::mac(node)),
            Tunnel::Vxlan6 => Some(vxlan::mac_v6(node)),
        }
    }

    /// The link attributes of the device, over underlay address `local` (when the kind
    /// needs one) on the uplink with index `parent`.
    pub fn link_kind(
        self,
        cfg: &DataplaneConfig,
        local: Option<IpAddr>,
        parent: Option<u32>,
    ) -> LinkKind {
        match (self, local) {
            (Tunnel::Udp, _) => udp::link_kind(),
            (Tunnel::Ipip, _) | (_, None) => ipip::link_kind(),
            (Tunnel::Vxlan | Tunnel::Vxlan6, Some(local)) => vxlan::link_kind(cfg, local, parent),
        }
    }

    /// The tunnel a pool uses, from Calico's `ipipMode` / `vxlanMode` and Manx's `udpMode`
    /// (validation lets at most one be other than Never): the UDP backend for an IPv4 pool
    /// with `udpMode`, else VXLAN of the pool's family when its mode is not Never, else
    /// IPIP for an IPv4 pool, else none.
    pub fn for_pool(
        cidr: &IpNetwork,
        ipip: EncapMode,
        vxlan: EncapMode,
        udp: EncapMode,
    ) -> Option<(Tunnel, EncapMode)> {
        match (cidr.is_ipv6(), ipip, vxlan, udp) {
            (false, _, _, m) if m != EncapMode::Never => Some((Tunnel::Udp, m)),
            (true, _, EncapMode::Never, _) => None,
            (true, _, m, _) => Some((Tunnel::Vxlan6, m)),
            (false, EncapMode::Never, EncapMode::Never, _) => None,
            (false, _, EncapMode::Never, _) => Some((Tunnel::Ipip, ipip)),
            (false, _, m, _) => Some((Tunnel::Vxlan, m)),
        }
    }

    /// The gateway of a remote block of node `peer` (its uplink address `node_ip`) through
    /// this tunnel, or None while the peer has not published what the route needs.
    pub fn gateway(self, node_ip: IpAddr, peer: Option<&PeerNode>) -> Option<IpAddr> {
        match self {
            Tunnel::Ipip => Some(ipip::gateway(node_ip)),
            Tunnel::Udp => Some(udp::gateway(node_ip)),
            Tunnel::Vxlan | Tunnel::Vxlan6 => vxlan::gateway(peer?.vteps.get(&self)?),
        }
    }

    /// The status line for a pool of this kind that the kernel cannot carry.
    pub fn unsupported_message(self, cidr: &IpNetwork) -> String {
        match self {
            Tunnel::Ipip => ipip::unsupported_message(cidr),
            Tunnel::Udp => udp::unsupported_message(cidr),
            Tunnel::Vxlan | Tunnel::Vxlan6 => format!(
                "VXLAN pool {cidr} cannot be programmed: this kernel has no vxlan support \
                 (CONFIG_VXLAN); use vxlanMode: Never"
            ),
        }
    }

    /// The status line for a pool whose underlay family the uplink lacks.
    pub fn no_underlay_message(self, cidr: &IpNetwork) -> String {
        match self {
            Tunnel::Vxlan6 => vxlan::no_ipv6_uplink_message(cidr),
            t => format!(
                "{} pool {cidr} cannot be programmed: the uplink has no address of the \
                 pool's family",
                t.name()
            ),
        }
    }
}

impl std::fmt::Display for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn a_pool_uses_vxlan_of_its_family_else_ipip() {
        use EncapMode::*;
        let v4 = net("10.0.0.0/16");
        let v6 = net("fd00::/48");
        assert_eq!(Tunnel::for_pool(&v4, Never, Never, Never), None);
        assert_eq!(
            Tunnel::for_pool(&v4, Always, Never, Never),
            Some((Tunnel::Ipip, Always))
        );
        assert_eq!(
            Tunnel::for_pool(&v4, Never, CrossSubnet, Never),
            Some((Tunnel::Vxlan, CrossSubnet))
        );
        assert_eq!(
            Tunnel::for_pool(&v6, Never, Always, Never),
            Some((Tunnel::Vxlan6, Always))
        );
        // IPIP carries no IPv6.
        assert_eq!(Tunnel::for_pool(&v6, Always, Never, Never), None);
        assert_eq!(
            Tunnel::for_pool(&v4, Never, Never, CrossSubnet),
            Some((Tunnel::Udp, CrossSubnet))
        );
        // The UDP backend carries IPv4 only (validation refuses udpMode on IPv6 pools).
        assert_eq!(Tunnel::for_pool(&v6, Never, Never, Always), None);
    }

    #[test]
    fn kinds_name_their_devices_and_overheads() {
        let got: Vec<_> = Tunnel::ALL
            .iter()
            .map(|t| (t.device(), t.overhead(), t.has_vteps()))
            .collect();
        assert_eq!(
            got,
            [
                ("tunl0", 20, false),
                ("vxlan.manx", 50, true),
                ("vxlan-v6.manx", 70, true),
                ("udp.manx", 28, false)
            ]
        );
        assert_ne!(
            Tunnel::Vxlan.default_mac("n1"),
            Tunnel::Vxlan6.default_mac("n1")
        );
    }
}
