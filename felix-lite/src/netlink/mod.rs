//! The kernel behind a trait, as Calico felix injects a netlink shim: [`RealNetlink`] talks to
//! the kernel, [`MemNetlink`] is an in-memory kernel for unit tests that records every operation.

use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;
use ipnetwork::IpNetwork;

use crate::types::MacAddr;

pub mod mem;
pub mod real;
mod wire;

pub use mem::{MemNetlink, Op};
pub use real::RealNetlink;

/// `EEXIST`: the object is already there.
pub const EEXIST: i32 = libc::EEXIST;
/// `ESRCH`: the kernel's "no such process" for a route delete that found nothing.
pub const ESRCH: i32 = libc::ESRCH;
/// `ENOENT`: the object is not there.
pub const ENOENT: i32 = libc::ENOENT;
/// `EOPNOTSUPP`: what `RTM_NEWLINK` answers for a link kind the kernel lacks
/// (iproute2 prints "Unknown device type").
pub const EOPNOTSUPP: i32 = libc::EOPNOTSUPP;
/// `ENODEV`: no such device.
pub const ENODEV: i32 = libc::ENODEV;

/// The main routing table, the only one felix-lite programs.
pub const RT_TABLE_MAIN: u32 = 254;

/// A failed netlink operation: what was attempted, on which object, and the errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("netlink {op} {object}: {message}")]
pub struct NlError {
    /// The operation (`add route`, `dump links`, …).
    pub op: String,
    /// The object it was applied to.
    pub object: String,
    /// The kernel's errno, when the kernel answered with one.
    pub errno: Option<i32>,
    /// Human-readable reason.
    pub message: String,
}

impl NlError {
    /// An error carrying a kernel errno.
    pub fn errno(op: impl Into<String>, object: impl Into<String>, errno: i32) -> Self {
        NlError {
            op: op.into(),
            object: object.into(),
            errno: Some(errno),
            message: std::io::Error::from_raw_os_error(errno).to_string(),
        }
    }

    /// An error that is not a kernel errno (socket, decode).
    pub fn other(
        op: impl Into<String>,
        object: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        NlError {
            op: op.into(),
            object: object.into(),
            errno: None,
            message: message.into(),
        }
    }

    /// Whether the kernel said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno, Some(e) if e == ESRCH || e == ENOENT || e == ENODEV)
    }

    /// Whether the kernel said the object already exists.
    pub fn is_exists(&self) -> bool {
        self.errno == Some(EEXIST)
    }
}

/// Kind of a kernel route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Forward (via a gateway or directly out of a device).
    Unicast,
    /// Drop silently.
    Blackhole,
    /// Any other type (local, broadcast, …): never ours.
    Other(u8),
}

/// Route scope (`RT_SCOPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `RT_SCOPE_UNIVERSE` (0).
    Universe,
    /// `RT_SCOPE_LINK` (253).
    Link,
    /// Other values.
    Other(u8),
}

/// A route as the kernel sees it (devices by index).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelRoute {
    /// Destination prefix.
    pub dst: IpNetwork,
    /// Route type.
    pub kind: RouteKind,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// `RTNH_F_ONLINK`: the gateway is on the link even if no prefix says so.
    pub onlink: bool,
    /// Scope.
    pub scope: Scope,
    /// Route protocol number (`rtm_protocol`).
    pub protocol: u8,
    /// Routing table.
    pub table: u32,
    /// Metric (`RTA_PRIORITY`), 0 when absent.
    pub metric: u32,
    /// The next hops of a multipath route (`RTA_MULTIPATH`, `ip route`'s `nexthop via A
    /// dev X nexthop via B dev Y`); then `gateway` and `oif` are `None`. Empty otherwise.
    pub multipath: Vec<KernelNextHop>,
}

/// One next hop of a multipath route (an `rtnexthop` with its `RTA_GATEWAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelNextHop {
    /// Gateway.
    pub gateway: IpAddr,
    /// Output interface index.
    pub oif: u32,
    /// `RTNH_F_ONLINK`.
    pub onlink: bool,
}

impl fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == RouteKind::Blackhole {
            write!(f, "blackhole ")?;
        }
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " oif {oif}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        for nh in &self.multipath {
            write!(f, " nexthop via {} oif {}", nh.gateway, nh.oif)?;
            if nh.onlink {
                write!(f, " onlink")?;
            }
        }
        write!(f, " proto {}", self.protocol)
    }
}

/// One route write in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOp {
    /// Create; fails with `EEXIST` if a route with the same key is present.
    Add(KernelRoute),
    /// Create or replace.
    Replace(KernelRoute),
    /// Delete; `ESRCH` if nothing matched.
    Delete(KernelRoute),
}

impl RouteOp {
    /// The route the operation carries.
    pub fn route(&self) -> &KernelRoute {
        match self {
            RouteOp::Add(r) | RouteOp::Replace(r) | RouteOp::Delete(r) => r,
        }
    }
}

/// A link kind felix-lite creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// IP-in-IP tunnel (`ipip`).
    Ipip,
    /// VXLAN device.
    Vxlan {
        /// VXLAN network identifier.
        vni: u32,
        /// UDP destination port.
        port: u16,
        /// Local (underlay) address.
        local: IpAddr,
        /// Parent (underlay) device index.
        parent: Option<u32>,
    },
    /// A persistent multi-queue TUN (created through `/dev/net/tun`, not `RTM_NEWLINK`,
    /// which the tun driver refuses); the UDP backend's `udp.manx`.
    Tun,
    /// Anything else (veth, ethernet, …), by kind name if the kernel gave one.
    Other(Option<String>),
}

/// A link to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// Interface name.
    pub name: String,
    /// Kind.
    pub kind: LinkKind,
    /// MTU.
    pub mtu: u32,
    /// MAC address (VXLAN).
    pub mac: Option<MacAddr>,
}

/// A link as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLink {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Kind (from `IFLA_INFO_KIND`).
    pub kind: LinkKind,
    /// MTU.
    pub mtu: u32,
    /// Hardware address, if it has one of 6 bytes.
    pub mac: Option<MacAddr>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// An interface address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelAddr {
    /// Interface index.
    pub index: u32,
    /// Address with prefix length.
    pub addr: IpNetwork,
    /// Scope is global (`RT_SCOPE_UNIVERSE`).
    pub global: bool,
}

/// A neighbour (ARP/NDP) entry or a bridge FDB entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Neighbour {
    /// Interface index.
    pub index: u32,
    /// For ARP/NDP: the IP; for FDB: the remote VTEP (`dst`).
    pub ip: IpAddr,
    /// The MAC.
    pub mac: MacAddr,
}

/// Which kind of neighbour table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NeighTable {
    /// ARP (IPv4) or NDP (IPv6) entries.
    Neigh,
    /// Bridge forwarding database (`AF_BRIDGE`, `NTF_SELF`), as `bridge fdb` shows.
    Fdb,
}

/// The kernel: links, addresses, routes, neighbours and FDB entries of the current network
/// namespace. Every method is one logical operation, so implementations can count them.
#[async_trait]
pub trait Netlink: Send + Sync {
    /// Dump all links.
    async fn links(&self) -> Result<Vec<KernelLink>, NlError>;
    /// Create a link (down).
    async fn add_link(&self, spec: &LinkSpec) -> Result<(), NlError>;
    /// Delete a link.
    async fn del_link(&self, index: u32) -> Result<(), NlError>;
    /// Set a link's MTU and bring it up.
    async fn set_link(&self, index: u32, mtu: u32, up: bool) -> Result<(), NlError>;
    /// Dump all addresses.
    async fn addresses(&self) -> Result<Vec<KernelAddr>, NlError>;
    /// Add an address to a link.
    async fn add_address(&self, index: u32, addr: IpNetwork) -> Result<(), NlError>;
    /// Remove an address from a link.
    async fn del_address(&self, index: u32, addr: IpNetwork) -> Result<(), NlError>;
    /// Dump the routes of the main table (both families, every protocol).
    async fn routes(&self) -> Result<Vec<KernelRoute>, NlError>;
    /// Apply many route writes, pipelined; one result per op, in order.
    async fn apply_routes(&self, ops: Vec<RouteOp>) -> Vec<Result<(), NlError>>;
    /// Dump neighbours (or FDB entries) of one link; only permanent entries with a MAC.
    async fn neighbours(&self, table: NeighTable, index: u32) -> Result<Vec<Neighbour>, NlError>;
    /// Create or replace a permanent neighbour / FDB entry.
    async fn set_neighbour(&self, table: NeighTable, n: &Neighbour) -> Result<(), NlError>;
    /// Delete a neighbour / FDB entry.
    async fn del_neighbour(&self, table: NeighTable, n: &Neighbour) -> Result<(), NlError>;
}

#[async_trait]
impl<T: Netlink + ?Sized> Netlink for std::sync::Arc<T> {
    async fn links(&self) -> Result<Vec<KernelLink>, NlError> {
        (**self).links().await
    }
    async fn add_link(&self, spec: &LinkSpec) -> Result<(), NlError> {
        (**self).add_link(spec).await
    }
    async fn del_link(&self, index: u32) -> Result<(), NlError> {
        (**self).del_link(index).await
    }
    async fn set_link(&self, index: u32, mtu: u32, up: bool) -> Result<(), NlError> {
        (**self).set_link(index, mtu, up).await
    }
    async fn addresses(&self) -> Result<Vec<KernelAddr>, NlError> {
        (**self).addresses().await
    }
    async fn add_address(&self, index: u32, addr: IpNetwork) -> Result<(), NlError> {
        (**self).add_address(index, addr).await
    }
    async fn del_address(&self, index: u32, addr: IpNetwork) -> Result<(), NlError> {
        (**self).del_address(index, addr).await
    }
    async fn routes(&self) -> Result<Vec<KernelRoute>, NlError> {
        (**self).routes().await
    }
    async fn apply_routes(&self, ops: Vec<RouteOp>) -> Vec<Result<(), NlError>> {
        (**self).apply_routes(ops).await
    }
    async fn neighbours(&self, table: NeighTable, index: u32) -> Result<Vec<Neighbour>, NlError> {
        (**self).neighbours(table, index).await
    }
    async fn set_neighbour(&self, table: NeighTable, n: &Neighbour) -> Result<(), NlError> {
        (**self).set_neighbour(table, n).await
    }
    async fn del_neighbour(&self, table: NeighTable, n: &Neighbour) -> Result<(), NlError> {
        (**self).del_neighbour(table, n).await
    }
}
