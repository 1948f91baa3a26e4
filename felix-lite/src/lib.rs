//! Manx dataplane programmer ("felix-lite"): routes, tunnels, neighbours, NAT and uplink
//! autodetection.
//!
//! # Route protocol
//!
//! Every route felix-lite installs carries [`MANX_ROUTE_PROTOCOL`] (77) in `rtm_protocol`
//! (`ip route` shows `proto 77`). felix-lite owns exactly the routes of the main table with
//! that protocol: it purges stale ones at start and never touches routes of other protocols.
//! 77 is not registered in iproute2's `rt_protos` (0-4, 8-16, 18, 42, 99, 186-192) and
//! differs from Calico felix's 80, so both can coexist on a node during a migration.
//!
//! # Shape
//!
//! manx-node builds a [`DataplaneInput`] (pools, BGP-learnt remote blocks, local blocks,
//! peers, workloads, uplink, tunnel addresses, and the BGP routes from outside every pool)
//! and hands it to [`Dataplane::apply`]. The [`calc`] module turns it into a
//! [`DesiredDataplane`]; reconcilers diff that against the kernel through the [`Netlink`]
//! trait and write only the difference.
//!
//! Routes from outside the pools (a ToR's networks, a default route) are installed via
//! their BGP next hop, resolved through the kernel's other routes as BIRD's `gateway
//! recursive` does, and never over a route Manx or the host owns; what became of each,
//! with the reason when not installed, is [`Dataplane::external_routes`].
//!
//! Devices, one per [`Tunnel`] kind (see [`tunnel`]): `tunl0` (IPIP, IPv4 pools),
//! `vxlan.manx` (IPv4 underlay) and `vxlan-v6.manx` (IPv6 underlay), VNI 4096, UDP 4789,
//! learning off, MAC stable per node ([`Dataplane::tunnel_mac`] to publish in the Node). On
//! a kernel without a kind (IPIP on the build machines), its pools are reported once each
//! ([`Dataplane::degraded_pools`]) and the other pools keep working.
//!
//! ```no_run
//! use felix::autodetect::{AutodetectMethod, detect_uplink};
//! use felix::nat::NftCli;
//! use felix::sysctl::ProcSysctl;
//! use felix::{Dataplane, DataplaneConfig, DataplaneInput, RealNetlink, SystemClock};
//!
//! # async fn wire() -> Result<(), Box<dyn std::error::Error>> {
//! let nl = RealNetlink::new()?;
//! let method: AutodetectMethod = "first-found".parse()?;
//! let uplink = detect_uplink(&nl, Some(&method), None).await?;
//! let mut dp = Dataplane::new(
//!     nl,
//!     ProcSysctl::default(),
//!     NftCli::default(),
//!     SystemClock,
//!     DataplaneConfig::default(),
//! );
//! let vxlan_mac = dp.tunnel_mac(felix::Tunnel::Vxlan, "node-1"); // publish in the Node
//! # let _ = vxlan_mac;
//! let input = DataplaneInput {
//!     node_name: "node-1".into(),
//!     uplink: Some(uplink),
//!     ..DataplaneInput::default()
//! };
//! let report = dp.apply(&input).await?;
//! # let _ = report;
//! for pool in dp.degraded_pools() {
//!     eprintln!("{}", pool.reason); // surface in `manxctl node status`
//! }
//! // Or hand the dataplane to its own task and feed it through a watch channel:
//! let (_tx, rx) = tokio::sync::watch::channel(input);
//! tokio::spawn(dp.run(rx));
//! # Ok(())
//! # }
//! ```

pub mod autodetect;
pub mod calc;
pub mod clock;
pub mod dataplane;
pub mod nat;
pub mod netlink;
pub mod reconcile;
pub mod sysctl;
pub mod tunnel;
pub mod types;
pub mod udp;

#[cfg(test)]
mod dataplane_tests;

/// The `rtm_protocol` value of every route felix-lite owns.
pub const MANX_ROUTE_PROTOCOL: u8 = 77;

/// Name of the IPIP tunnel device (the kernel's fallback tunnel name).
pub const IPIP_DEVICE: &str = tunnel::ipip::DEVICE;
/// Name of the IPv4 VXLAN device.
pub const VXLAN_DEVICE: &str = tunnel::vxlan::DEVICE;
/// Name of the IPv6 VXLAN device.
pub const VXLAN_V6_DEVICE: &str = tunnel::vxlan::DEVICE_V6;
/// VXLAN network identifier (Calico's default).
pub const VXLAN_VNI: u32 = tunnel::vxlan::VNI;
/// VXLAN UDP port (IANA).
pub const VXLAN_PORT: u16 = tunnel::vxlan::PORT;

pub use calc::{DesiredDataplane, DesiredRoute, KernelView, NextHop, PathHop};
pub use clock::{Clock, FakeClock, SystemClock};
pub use dataplane::{
    Applied, ApplyReport, Dataplane, DataplaneConfig, DataplaneError, DegradedPool,
    ExternalRouteStatus, ExternalState,
};
pub use netlink::{MemNetlink, Netlink, RealNetlink};
pub use tunnel::{Tunnel, Vtep};
pub use types::{
    DataplaneInput, EncapMode, LocalWorkload, MacAddr, PeerNode, PoolInfo, RemoteBlock, Uplink,
    WireguardSettings,
};
