//! VXLAN: `vxlan.manx` (IPv4 underlay, IPv4 pools) and `vxlan-v6.manx` (IPv6 underlay,
//! IPv6 pools). VNI 4096, UDP 4789, learning off; a MAC per node derived from its name;
//! one permanent neighbour (peer VTEP → peer MAC) and one FDB entry (peer MAC → peer
//! uplink address) per peer.
//!
//! Route shape: `<block> via <peer VTEP> dev vxlan.manx onlink` (or `vxlan-v6.manx`).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::dataplane::DataplaneConfig;
use crate::netlink::LinkKind;
use crate::tunnel::Vtep;
use crate::types::MacAddr;

/// The IPv4-underlay device.
pub const DEVICE: &str = "vxlan.manx";
/// The IPv6-underlay device.
pub const DEVICE_V6: &str = "vxlan-v6.manx";
/// Outer IPv4 + UDP + VXLAN + inner Ethernet.
pub const OVERHEAD: u32 = 50;
/// Outer IPv6 + UDP + VXLAN + inner Ethernet.
pub const OVERHEAD_V6: u32 = 70;
/// VXLAN network identifier (Calico's default).
pub const VNI: u32 = 4096;
/// UDP port (IANA).
pub const PORT: u16 = 4789;

/// `vxlan.manx`'s MAC on node `node`.
pub fn mac(node: &str) -> MacAddr {
    MacAddr::from_seed(node)
}

/// `vxlan-v6.manx`'s MAC on node `node` (distinct from the IPv4 device's).
pub fn mac_v6(node: &str) -> MacAddr {
    MacAddr::from_seed(&format!("{node}/v6"))
}

/// `type vxlan id <vni> local <local> dstport <port> dev <parent> nolearning`.
pub fn link_kind(cfg: &DataplaneConfig, local: IpAddr, parent: Option<u32>) -> LinkKind {
    LinkKind::Vxlan {
        vni: cfg.vxlan_vni,
        port: cfg.vxlan_port,
        local,
        parent,
    }
}

/// The gateway is the peer's VTEP address.
pub fn gateway(vtep: &Vtep) -> Option<IpAddr> {
    Some(vtep.addr)
}

/// The status line of an IPv6 VXLAN pool on a node without an IPv6 uplink address.
pub fn no_ipv6_uplink_message(cidr: &IpNetwork) -> String {
    format!(
        "IPv6 VXLAN pool {cidr} cannot be programmed: the uplink has no IPv6 address; \
         set an IPv6 autodetection method or use vxlanMode: Never"
    )
}
