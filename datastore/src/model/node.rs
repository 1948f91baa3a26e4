//! `Node`: one host of the cluster, its BGP addresses and tunnel addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::model::meta::{AsNumber, ObjectMeta};
use crate::model::validate::{Checker, ValidationErrors};

/// A node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub metadata: ObjectMeta,
    pub spec: NodeSpec,
    /// Status as calicoctl prints it; kept as written, never interpreted.
    pub status: Option<serde_json::Value>,
}

/// `Node.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBGPSpec>,
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_vxlan_tunnel_addr: Option<String>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr: Option<String>,
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_vxlan_tunnel_addr: Option<String>,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub vxlan_tunnel_mac_addr_v6: Option<String>,
    /// Manx extension: the address of `udp.manx` (UDP backend pools).
    #[serde(
        default,
        rename = "ipv4UDPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_udp_tunnel_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orch_refs: Option<Vec<OrchRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<NodeAddress>>,
}

/// `Node.spec.bgp`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBGPSpec {
    /// CIDR form, e.g. `10.0.0.1/24`: the node address and its subnet.
    #[serde(
        default,
        rename = "ipv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_address: Option<String>,
    #[serde(
        default,
        rename = "ipv6Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv6_address: Option<String>,
    /// Per-node AS (default: the cluster's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_ipip_tunnel_addr: Option<String>,
    /// Set on route reflectors: their cluster ID (an IPv4 address form).
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub route_reflector_cluster_id: Option<String>,
}

/// Which orchestrator knows this node under which name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    pub orchestrator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// An address of the node (`InternalIP`, `ExternalIP`, `CalicoNodeIP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    pub address: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// Parse `a.b.c.d/len` (or a bare address, as a /32) into address and prefix.
fn parse_v4_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    match text.trim().split_once('/') {
        Some((a, p)) => {
            let p: u8 = p.parse().ok()?;
            (p <= 32).then_some((a.parse().ok()?, p))
        }
        None => Some((text.trim().parse().ok()?, 32)),
    }
}

fn parse_v6_cidr(text: &str) -> Option<(Ipv6Addr, u8)> {
    match text.trim().split_once('/') {
        Some((a, p)) => {
            let p: u8 = p.parse().ok()?;
            (p <= 128).then_some((a.parse().ok()?, p))
        }
        None => Some((text.trim().parse().ok()?, 128)),
    }
}

impl Node {
    pub fn new(name: impl Into<String>) -> Self {
        Node {
            metadata: ObjectMeta::named(name),
            spec: NodeSpec::default(),
            status: None,
        }
    }

    /// The node's IPv4 BGP address and subnet prefix length.
    pub fn ipv4_address(&self) -> Option<(Ipv4Addr, u8)> {
        self.spec
            .bgp
            .as_ref()?
            .ipv4_address
            .as_deref()
            .and_then(parse_v4_cidr)
    }
    /// The node's IPv6 BGP address and subnet prefix length.
    pub fn ipv6_address(&self) -> Option<(Ipv6Addr, u8)> {
        self.spec
            .bgp
            .as_ref()?
            .ipv6_address
            .as_deref()
            .and_then(parse_v6_cidr)
    }
    /// The node's IPv4 subnet (for CrossSubnet decisions).
    pub fn ipv4_subnet(&self) -> Option<IpNetwork> {
        let (a, p) = self.ipv4_address()?;
        let net = ipnetwork::Ipv4Network::new(a, p).ok()?;
        Some(IpNetwork::V4(
            ipnetwork::Ipv4Network::new(net.network(), p).ok()?,
        ))
    }
    pub fn ipv4_ipip_tunnel_addr(&self) -> Option<Ipv4Addr> {
        self.spec
            .bgp
            .as_ref()?
            .ipv4_ipip_tunnel_addr
            .as_deref()?
            .parse()
            .ok()
    }
    pub fn ipv4_vxlan_tunnel_addr(&self) -> Option<Ipv4Addr> {
        self.spec.ipv4_vxlan_tunnel_addr.as_deref()?.parse().ok()
    }
    pub fn ipv6_vxlan_tunnel_addr(&self) -> Option<Ipv6Addr> {
        self.spec.ipv6_vxlan_tunnel_addr.as_deref()?.parse().ok()
    }
    pub fn ipv4_udp_tunnel_addr(&self) -> Option<Ipv4Addr> {
        self.spec.ipv4_udp_tunnel_addr.as_deref()?.parse().ok()
    }
    /// The node's own AS number, if it overrides the cluster's.
    pub fn as_number(&self) -> Option<AsNumber> {
        self.spec.bgp.as_ref()?.as_number
    }
    /// Route reflector cluster ID, if this node is a route reflector.
    pub fn route_reflector_cluster_id(&self) -> Option<Ipv4Addr> {
        self.spec
            .bgp
            .as_ref()?
            .route_reflector_cluster_id
            .as_deref()?
            .parse()
            .ok()
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new("node", &self.metadata.name);
        c.name(&self.metadata.name);
        if let Some(bgp) = &self.spec.bgp {
            if let Some(a) = &bgp.ipv4_address
                && parse_v4_cidr(a).is_none()
            {
                c.error(
                    "spec.bgp.ipv4Address",
                    format!("{a:?} is not an IPv4 address in CIDR form like 10.0.0.1/24"),
                );
            }
            if let Some(a) = &bgp.ipv6_address
                && parse_v6_cidr(a).is_none()
            {
                c.error(
                    "spec.bgp.ipv6Address",
                    format!("{a:?} is not an IPv6 address in CIDR form like fd00::1/64"),
                );
            }
            if let Some(asn) = bgp.as_number {
                c.as_number("spec.bgp.asNumber", asn);
            }
            if let Some(a) = &bgp.ipv4_ipip_tunnel_addr
                && a.parse::<Ipv4Addr>().is_err()
            {
                c.error(
                    "spec.bgp.ipv4IPIPTunnelAddr",
                    format!("{a:?} is not an IPv4 address"),
                );
            }
            if let Some(id) = &bgp.route_reflector_cluster_id
                && id.parse::<Ipv4Addr>().is_err()
            {
                c.error(
                    "spec.bgp.routeReflectorClusterID",
                    format!(
                        "{id:?} is not a cluster ID: write it like an IPv4 address, e.g. 224.0.0.1"
                    ),
                );
            }
        }
        if let Some(a) = &self.spec.ipv4_vxlan_tunnel_addr
            && a.parse::<Ipv4Addr>().is_err()
        {
            c.error(
                "spec.ipv4VXLANTunnelAddr",
                format!("{a:?} is not an IPv4 address"),
            );
        }
        if let Some(a) = &self.spec.ipv4_udp_tunnel_addr
            && a.parse::<Ipv4Addr>().is_err()
        {
            c.error(
                "spec.ipv4UDPTunnelAddr",
                format!("{a:?} is not an IPv4 address"),
            );
        }
        if let Some(a) = &self.spec.ipv6_vxlan_tunnel_addr
            && a.parse::<Ipv6Addr>().is_err()
        {
            c.error(
                "spec.ipv6VXLANTunnelAddr",
                format!("{a:?} is not an IPv6 address"),
            );
        }
        for (mac, field) in [
            (&self.spec.vxlan_tunnel_mac_addr, "spec.vxlanTunnelMACAddr"),
            (
                &self.spec.vxlan_tunnel_mac_addr_v6,
                "spec.vxlanTunnelMACAddrV6",
            ),
        ] {
            if let Some(m) = mac
                && !is_mac(m)
            {
                c.error(
                    field,
                    format!("{m:?} is not a MAC address like ee:ee:ee:ee:ee:ee"),
                );
            }
        }
        c.finish()
    }
}

/// `aa:bb:cc:dd:ee:ff` (hex, colon-separated, 6 octets).
pub fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}
