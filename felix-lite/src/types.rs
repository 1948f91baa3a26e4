//! Plain input types. manx-node maps datastore resources (IPPool, Node, IPAMBlock affinities,
//! WorkloadEndpoint) and bgpd's `RouteUpdate`s onto these; felix-lite knows neither crate.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::tunnel::{Tunnel, Vtep};

/// When a pool's traffic to another node is encapsulated (Calico `ipipMode` / `vxlanMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum EncapMode {
    /// Always encapsulate.
    Always,
    /// Encapsulate only when the peer is outside the local uplink's subnet.
    CrossSubnet,
    /// Never encapsulate: plain routes via the peer's address.
    #[default]
    Never,
}

/// An IP pool as felix-lite needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// The pool's CIDR.
    pub cidr: IpNetwork,
    /// The pool's encapsulation and when it applies (none: plain routes). See
    /// [`Tunnel::for_pool`] for Calico's `ipipMode` / `vxlanMode`.
    pub encap: Option<(Tunnel, EncapMode)>,
    /// Masquerade traffic from the pool to destinations outside every pool.
    pub nat_outgoing: bool,
    /// Disabled pools get no new allocations; their existing blocks keep routes and NAT,
    /// as in Calico.
    pub disabled: bool,
}

impl PoolInfo {
    /// A pool with no encapsulation and no NAT.
    pub fn new(cidr: IpNetwork) -> Self {
        PoolInfo {
            cidr,
            encap: None,
            nat_outgoing: false,
            disabled: false,
        }
    }

    /// The pool's tunnel, if it uses one at all (a mode other than Never).
    pub fn tunnel(&self) -> Option<Tunnel> {
        self.encap
            .filter(|(_, m)| *m != EncapMode::Never)
            .map(|(t, _)| t)
    }
}

/// A block owned by another node, learnt through BGP (prefix, next hop, originating node).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteBlock {
    /// The block prefix.
    pub block: IpNetwork,
    /// The name of the node that owns the block.
    pub node: String,
    /// The BGP next hop: the owning node's address.
    pub node_ip: IpAddr,
}

/// Another node of the cluster, from its Node resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerNode {
    /// Node name.
    pub name: String,
    /// The node's uplink address (its IPv4 one if it has one).
    pub ip: IpAddr,
    /// The node's IPv6 uplink address (the IPv6 underlay destination).
    #[serde(default)]
    pub ip_v6: Option<IpAddr>,
    /// The node's tunnel endpoints it published (address and MAC), by kind.
    #[serde(default)]
    pub vteps: BTreeMap<Tunnel, Vtep>,
    /// The WireGuard public key the node published (`Node.status.wireguardPublicKey`,
    /// base64), if any.
    #[serde(default)]
    pub wireguard_public_key: Option<String>,
}

impl PeerNode {
    /// A node with its uplink address and no tunnel endpoints yet.
    pub fn new(name: &str, ip: IpAddr) -> Self {
        PeerNode {
            name: name.into(),
            ip,
            ip_v6: None,
            vteps: BTreeMap::new(),
            wireguard_public_key: None,
        }
    }

    /// The node's uplink address of the family of `tunnel`'s underlay.
    pub fn underlay(&self, tunnel: Tunnel) -> Option<IpAddr> {
        if tunnel.ipv6() {
            self.ip_v6.filter(IpAddr::is_ipv6)
        } else {
            Some(self.ip).filter(IpAddr::is_ipv4)
        }
    }
}

/// A pod on this node: its address and its host-side veth.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LocalWorkload {
    /// The pod address.
    pub ip: IpAddr,
    /// Host-side interface (`caliXXXXXXXXXXX`).
    pub iface: String,
}

/// The node's uplink: the interface that carries traffic to other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// Interface name.
    pub iface: String,
    /// IPv4 address with prefix length, if any.
    pub v4: Option<IpNetwork>,
    /// IPv6 address with prefix length, if any.
    pub v6: Option<IpNetwork>,
    /// Interface MTU.
    pub mtu: u32,
}

impl Uplink {
    /// The uplink address of the same family as `ip`.
    pub fn addr_for(&self, ip: IpAddr) -> Option<IpNetwork> {
        match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        }
    }
}

/// Everything the dataplane is computed from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataplaneInput {
    /// This node's name.
    pub node_name: String,
    /// Every IP pool of the cluster.
    pub pools: Vec<PoolInfo>,
    /// Blocks of other nodes (from BGP).
    pub remote_blocks: Vec<RemoteBlock>,
    /// Blocks affine to this node: each gets a blackhole route.
    pub local_blocks: Vec<IpNetwork>,
    /// Other nodes (VXLAN VTEP data).
    pub peers: Vec<PeerNode>,
    /// Pods on this node.
    pub workloads: Vec<LocalWorkload>,
    /// The uplink, from autodetection. Without one, no remote routes are programmed and the
    /// tunnel devices are removed: always pass the detected uplink.
    pub uplink: Option<Uplink>,
    /// This node's tunnel addresses (allocated by manx-node through IPAM), given to each
    /// kind's device.
    #[serde(default)]
    pub tunnel_addrs: BTreeMap<Tunnel, IpAddr>,
    /// Best BGP routes for prefixes outside every pool (a ToR's networks, a default route,
    /// another cluster's pods): prefix → BGP next hops (several: equal paths merged, one
    /// multipath route). Each is installed via its next hops, resolved through the kernel
    /// as BIRD's `gateway recursive` does (see [`crate::calc`]), or reported as not
    /// installed with the reason.
    #[serde(default)]
    pub external_routes: BTreeMap<IpNetwork, Vec<IpAddr>>,
    /// WireGuard encryption between nodes (`FelixConfiguration.wireguardEnabled`), if on.
    #[serde(default)]
    pub wireguard: Option<WireguardSettings>,
    /// BGP peers reached through a gateway (`BGPPeer.spec.reachableBy`): peer address →
    /// gateway. Each is a host route `<peer>/32 via <gateway>` (`/128` for IPv6), as
    /// calico-node's BIRD installs it from a static route, so the session comes up when the
    /// peer is not on a connected subnet; BGP next hops at the peer's address resolve
    /// through it. The gateway must be on a connected subnet.
    #[serde(default)]
    pub peer_routes: BTreeMap<IpAddr, IpAddr>,
    /// Interface patterns (`BGPConfiguration.spec.ignoredInterfaces`, BIRD's: `*` any run of
    /// characters) whose addresses are not connected subnets for the routes from outside
    /// the pools (their BGP next hops), as calico-node's BIRD leaves them out of
    /// `protocol direct` (with `cali*` and `kube-ipvs*`, always left out): a next hop there
    /// resolves only through a route of the kernel that is not a device route, or not at all.
    #[serde(default)]
    pub ignored_interfaces: Vec<String>,
}

/// WireGuard settings of this node (its merged `FelixConfiguration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireguardSettings {
    /// UDP listening port of `wireguard.manx`, on every node.
    pub port: u16,
    /// Device MTU; None: the uplink MTU minus [`crate::tunnel::wireguard::OVERHEAD`].
    pub mtu: Option<u32>,
}

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A stable, locally administered unicast MAC derived from `seed` (the node name), so
    /// `vxlan.manx` keeps its MAC across restarts and peers' FDB entries stay valid.
    pub fn from_seed(seed: &str) -> MacAddr {
        // FNV-1a 64: stable across releases, unlike `DefaultHasher`.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let b = h.to_be_bytes();
        // Locally administered (bit 1), unicast (bit 0 clear).
        MacAddr([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Error parsing a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex bytes like 66:d2:3a:00:01:02")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(MacParseError(s.to_string()));
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(MacParseError(s.to_string()));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| MacParseError(s.to_string()))?;
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<&[u8]> for MacAddr {
    type Error = MacParseError;
    fn try_from(b: &[u8]) -> Result<Self, Self::Error> {
        <[u8; 6]>::try_from(b)
            .map(MacAddr)
            .map_err(|_| MacParseError(format!("{b:02x?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_from_seed_is_stable_local_unicast() {
        let a = MacAddr::from_seed("node-a");
        assert_eq!(a, MacAddr::from_seed("node-a"));
        assert_ne!(a, MacAddr::from_seed("node-b"));
        // IEEE 802 bit 0 of octet 0 is I/G (must be 0), bit 1 is U/L (must be 1).
        assert_eq!(a.0[0] & 0x03, 0x02);
    }

    #[test]
    fn mac_round_trips_through_text() {
        let m: MacAddr = "66:d2:3a:00:01:ff".parse().unwrap();
        assert_eq!(m.to_string(), "66:d2:3a:00:01:ff");
        assert!("66:d2:3a:00:01".parse::<MacAddr>().is_err());
        assert!("66:d2:3a:00:01:zz".parse::<MacAddr>().is_err());
    }
}
