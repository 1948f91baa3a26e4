//! IP-in-IP: `tunl0` (the ipip module's fallback device), IPv4 pools only.
//!
//! Route shape: `<block> via <node IP> dev tunl0 onlink`.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::netlink::LinkKind;

/// Device name (the kernel's fallback tunnel name).
pub const DEVICE: &str = "tunl0";
/// Outer IPv4 header.
pub const OVERHEAD: u32 = 20;

/// `type ipip`: no attributes.
pub fn link_kind() -> LinkKind {
    LinkKind::Ipip
}

/// The gateway is the peer's uplink address itself.
pub fn gateway(node_ip: IpAddr) -> IpAddr {
    node_ip
}

/// The status line of an IPIP pool on a kernel without IPIP.
pub fn unsupported_message(cidr: &IpNetwork) -> String {
    format!(
        "IPIP pool {cidr} cannot be programmed: this kernel has no ipip support \
         (CONFIG_NET_IPIP); use vxlanMode or ipipMode: Never"
    )
}
