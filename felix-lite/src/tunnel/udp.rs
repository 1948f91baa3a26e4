//! Flannel's UDP backend: the TUN device `udp.manx`, IPv4 pools only. The kernel routes a
//! remote block's packets into the TUN; the data path ([`crate::udp`], a process of its
//! own) sends each one as the payload of a UDP datagram to port 8285 of the node that owns
//! the block, and writes what it receives into the TUN.
//!
//! Route shape: `<block> via <node IP> dev udp.manx onlink`. The gateway is the owner's
//! uplink address, as for IPIP: the data path reads it back from these routes, so the
//! kernel's routing table is the block-owner map and nothing else has to be shared.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::netlink::LinkKind;

/// Device name.
pub const DEVICE: &str = "udp.manx";
/// Outer IPv4 + UDP headers (the payload is the bare inner packet, as Flannel's).
pub const OVERHEAD: u32 = 28;
/// Flannel's UDP backend port.
pub const PORT: u16 = 8285;

/// A persistent multi-queue TUN.
pub fn link_kind() -> LinkKind {
    LinkKind::Tun
}

/// The gateway is the peer's uplink address itself: the data path's destination.
pub fn gateway(node_ip: IpAddr) -> IpAddr {
    node_ip
}

/// The status line of a UDP pool on a kernel without TUN.
pub fn unsupported_message(cidr: &IpNetwork) -> String {
    format!(
        "UDP pool {cidr} cannot be programmed: this kernel has no TUN support \
         (/dev/net/tun, CONFIG_TUN); use udpMode: Never or another encapsulation"
    )
}
