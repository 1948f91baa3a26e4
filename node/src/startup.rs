//! What manx-node does once at start, before its loops: find its address,
//! create the default pool, register its `Node`, take its tunnel addresses.
//! Every step is idempotent, so a restart repeats it harmlessly.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use datastore::client::{Client, ClientError};
use datastore::model::{EncapMode, IPPool, IPPoolSpec, Node, NodeBGPSpec, ObjectMeta};
use felix::autodetect::{AutodetectMethod, IpFamily, autodetect};
use felix::{MacAddr, Netlink, Tunnel, Uplink, Vtep};
use ipam::{Attrs, AutoAssignArgs, IntendedUse, Ipam};
use ipnetwork::IpNetwork;

use crate::config::{IpSetting, NodeConfig, PoolEncap};

/// Find this node's uplink from `IP` / `IP_AUTODETECTION_METHOD` (and the
/// IPv6 pair).
pub async fn detect_uplink<N: Netlink + ?Sized>(nl: &N, cfg: &NodeConfig) -> Result<Uplink> {
    async fn one<N: Netlink + ?Sized>(
        nl: &N,
        setting: &IpSetting,
        method: &str,
        family: IpFamily,
        var: &str,
    ) -> Result<Option<(String, IpNetwork, u32)>> {
        match setting {
            IpSetting::None => Ok(None),
            IpSetting::Autodetect => {
                let m: AutodetectMethod = method
                    .parse()
                    .map_err(|e| anyhow!("{var}_AUTODETECTION_METHOD={method:?}: {e}"))?;
                let d = autodetect(nl, &m, family)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                Ok(Some((d.iface, d.addr, d.mtu)))
            }
            IpSetting::Fixed(net) => {
                // The interface that holds the given address.
                let host = IpNetwork::from(net.ip());
                let d = autodetect(nl, &AutodetectMethod::Cidr(vec![host]), family)
                    .await
                    .map_err(|e| {
                        anyhow!("{var}={net}: no interface on this host has that address: {e}")
                    })?;
                let addr = if net.prefix() == host.prefix() {
                    d.addr
                } else {
                    *net
                };
                Ok(Some((d.iface, addr, d.mtu)))
            }
        }
    }
    let v4 = one(
        nl,
        &cfg.ip,
        &cfg.ip_autodetection_method,
        IpFamily::V4,
        "IP",
    )
    .await?;
    let v6 = one(
        nl,
        &cfg.ip6,
        &cfg.ip6_autodetection_method,
        IpFamily::V6,
        "IP6",
    )
    .await?;
    let main = v4
        .as_ref()
        .or(v6.as_ref())
        .ok_or_else(|| anyhow!("IP=none and IP6=none: a node needs an address to route pods"))?;
    Ok(Uplink {
        iface: main.0.clone(),
        v4: v4.as_ref().map(|d| d.1),
        v6: v6.as_ref().map(|d| d.1),
        mtu: main.2,
    })
}

fn encap(e: PoolEncap) -> EncapMode {
    match e {
        PoolEncap::Always => EncapMode::Always,
        PoolEncap::CrossSubnet => EncapMode::CrossSubnet,
        PoolEncap::Never | PoolEncap::Off => EncapMode::Never,
    }
}

/// Create the default pools: `default-ipv4-ippool` from `MANX_IPV4POOL_*`
/// unless an IPv4 pool exists, and `default-ipv6-ippool` from
/// `MANX_IPV6POOL_*` unless an IPv6 pool exists, each only on a node with an
/// address of that family (`IP=none` makes an IPv6-only node, which needs
/// no IPv4 pool; calico-node creates the IPv4 pool regardless).
pub async fn ensure_default_pool(client: &Client, cfg: &NodeConfig) -> Result<()> {
    if cfg.no_default_pools {
        return Ok(());
    }
    for pool in default_pools(cfg) {
        let v6 = pool.spec.cidr.is_ipv6();
        let (pools, _) = client.list::<IPPool>().await?;
        if pools.iter().any(|p| p.spec.cidr.is_ipv6() == v6) {
            continue;
        }
        let family = if v6 { "IPv6" } else { "IPv4" };
        match client.create(&pool).await {
            Ok(_) => {
                tracing::info!(cidr = %pool.spec.cidr, "created the default {family} pool");
            }
            // Another node won the race: fine.
            Err(ClientError::AlreadyExists { .. }) => {}
            Err(e) => {
                let (pools, _) = client.list::<IPPool>().await?;
                if !pools.iter().any(|p| p.spec.cidr.is_ipv6() == v6) {
                    return Err(e).context(format!("creating the default {family} pool"));
                }
            }
        }
    }
    Ok(())
}

/// The default pools this node's settings ask for (see
/// [`ensure_default_pool`]), IPv4 first.
pub fn default_pools(cfg: &NodeConfig) -> Vec<IPPool> {
    let mut out = Vec::new();
    if cfg.ip != IpSetting::None {
        let mut spec = IPPoolSpec::new(IpNetwork::V4(cfg.ipv4pool_cidr));
        spec.block_size = Some(cfg.ipv4pool_block_size);
        spec.ipip_mode = Some(encap(cfg.ipv4pool_ipip));
        spec.vxlan_mode = Some(encap(cfg.ipv4pool_vxlan));
        if cfg.ipv4pool_udp != PoolEncap::Never {
            // Only when asked: a Calico pool never carries the Manx extension.
            spec.udp_mode = Some(encap(cfg.ipv4pool_udp));
        }
        spec.nat_outgoing = Some(cfg.ipv4pool_nat_outgoing);
        spec.node_selector = Some("all()".into());
        out.push(IPPool {
            metadata: ObjectMeta::named("default-ipv4-ippool"),
            spec,
        });
    }
    if cfg.ip6 != IpSetting::None {
        let cidr = cfg.ipv6pool_cidr.unwrap_or_else(random_ula_48);
        let mut spec = IPPoolSpec::new(IpNetwork::V6(cidr));
        spec.block_size = Some(cfg.ipv6pool_block_size);
        spec.ipip_mode = Some(EncapMode::Never);
        spec.vxlan_mode = Some(encap(cfg.ipv6pool_vxlan));
        spec.nat_outgoing = Some(cfg.ipv6pool_nat_outgoing);
        spec.node_selector = Some("all()".into());
        out.push(IPPool {
            metadata: ObjectMeta::named("default-ipv6-ippool"),
            spec,
        });
    }
    out
}

/// A unique local /48 (RFC 4193: `fd` and 40 random bits), as calico-node
/// picks when `CALICO_IPV6POOL_CIDR` is unset. The first node to create the
/// pool wins; the others find it.
fn random_ula_48() -> ipnetwork::Ipv6Network {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let r = h.finish();
    let global_id = r & 0xff_ffff_ffff;
    let addr = std::net::Ipv6Addr::new(
        0xfd00 | (global_id >> 32) as u16,
        (global_id >> 16) as u16,
        global_id as u16,
        0,
        0,
        0,
        0,
        0,
    );
    ipnetwork::Ipv6Network::new(addr, 48).expect("48 is a valid IPv6 prefix length")
}

/// Create or update this node's `Node`, keeping what operators set
/// (labels, routeReflectorClusterID, ...). `f` edits the spec.
pub async fn update_node(client: &Client, name: &str, f: impl Fn(&mut Node)) -> Result<Node> {
    for _ in 0..10 {
        match client.get::<Node>(name).await? {
            Some(mut node) => {
                let before = node.clone();
                f(&mut node);
                if node == before {
                    return Ok(node);
                }
                match client.update(&node).await {
                    Ok(n) => return Ok(n),
                    Err(ClientError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                let mut node = Node::new(name);
                f(&mut node);
                match client.create(&node).await {
                    Ok(n) => return Ok(n),
                    Err(ClientError::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(anyhow!(
        "node {name}: ten conflicting concurrent updates; retry later"
    ))
}

/// Register the node's BGP addresses (and AS if configured).
pub async fn register_node(
    client: &Client,
    name: &str,
    uplink: &Uplink,
    as_number: Option<u32>,
) -> Result<Node> {
    update_node(client, name, |n| {
        let bgp = n.spec.bgp.get_or_insert_with(NodeBGPSpec::default);
        bgp.ipv4_address = uplink.v4.map(|a| a.to_string());
        bgp.ipv6_address = uplink.v6.map(|a| a.to_string());
        if let Some(asn) = as_number {
            bgp.as_number = Some(datastore::model::AsNumber(asn));
        }
    })
    .await
}

/// The tunnel address of `handle` for this node: the one it already holds,
/// or a new one from a pool that uses the tunnel (`pools`, by name), of the
/// IPv6 family if `v6`.
pub async fn tunnel_address(
    ipam: &Arc<Ipam>,
    node: &str,
    handle: &str,
    pools: Vec<String>,
    v6: bool,
) -> Result<Option<IpAddr>> {
    if pools.is_empty() {
        return Ok(None);
    }
    let held = ipam.ips_by_handle(handle).await?;
    if let Some(ip) = held.into_iter().find(|ip| ip.is_ipv6() == v6) {
        return Ok(Some(ip));
    }
    let (ipv4_pools, ipv6_pools) = if v6 { (vec![], pools) } else { (pools, vec![]) };
    let args = AutoAssignArgs {
        num_v4: usize::from(!v6),
        num_v6: usize::from(v6),
        handle_id: handle.to_string(),
        attrs: Attrs {
            handle_id: handle.to_string(),
            node: Some(node.to_string()),
            intended_use: IntendedUse::Tunnel,
            ..Default::default()
        },
        hostname: node.to_string(),
        ipv4_pools,
        ipv6_pools,
        intended_use: IntendedUse::Tunnel,
        max_blocks_per_host: None,
    };
    let got = ipam.auto_assign(&args).await?;
    let got = if v6 { got.ipv6 } else { got.ipv4 };
    Ok(got.first().map(|n| n.ip()))
}

/// Names of the enabled pools that use `tunnel` (mode other than Never).
pub fn tunnel_pools(pools: &[IPPool], tunnel: Tunnel) -> Vec<String> {
    pools
        .iter()
        .filter(|p| !p.spec.disabled())
        .filter(|p| pool_tunnel(p) == Some(tunnel))
        .map(|p| p.metadata.name.clone())
        .collect()
}

/// The tunnel a pool uses, from its `ipipMode` / `vxlanMode` / `udpMode`.
pub fn pool_tunnel(p: &IPPool) -> Option<Tunnel> {
    let (ipip, vxlan, udp) = (
        crate::cluster::encap(p.spec.ipip_mode()),
        crate::cluster::encap(p.spec.vxlan_mode()),
        crate::cluster::encap(p.spec.udp_mode()),
    );
    Tunnel::for_pool(&p.spec.cidr, ipip, vxlan, udp)
        .filter(|(_, m)| *m != felix::EncapMode::Never)
        .map(|(t, _)| t)
}

/// The IPAM handle of this node's address for `tunnel` (`ipip-tunnel-addr-<node>`,
/// `vxlan-tunnel-addr-<node>`, `vxlan-v6-tunnel-addr-<node>`, `udp-tunnel-addr-<node>`).
pub fn tunnel_handle(tunnel: Tunnel, node: &str) -> String {
    format!("{}-tunnel-addr-{node}", tunnel.name())
}

/// This node's tunnel addresses (from IPAM) and device MACs (derived from its
/// name), by kind, as recorded in its `Node`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tunnels {
    /// Tunnel addresses.
    pub addrs: BTreeMap<Tunnel, IpAddr>,
    /// Device MACs of the kinds with VTEPs.
    pub macs: BTreeMap<Tunnel, MacAddr>,
}

impl Tunnels {
    /// Write the addresses and MACs into the Node, Calico's fields:
    /// `bgp.ipv4IPIPTunnelAddr`, `ipv4VXLANTunnelAddr` + `vxlanTunnelMACAddr`,
    /// `ipv6VXLANTunnelAddr` + `vxlanTunnelMACAddrV6` (a MAC only with its address), and
    /// Manx's `ipv4UDPTunnelAddr`.
    pub fn record(&self, n: &mut Node) {
        for t in Tunnel::ALL {
            let addr = self.addrs.get(&t).map(|a| a.to_string());
            let mac = self
                .addrs
                .get(&t)
                .and(self.macs.get(&t))
                .map(|m| m.to_string());
            match t {
                Tunnel::Ipip => {
                    n.spec
                        .bgp
                        .get_or_insert_with(Default::default)
                        .ipv4_ipip_tunnel_addr = addr;
                }
                Tunnel::Vxlan => {
                    n.spec.ipv4_vxlan_tunnel_addr = addr;
                    n.spec.vxlan_tunnel_mac_addr = mac;
                }
                Tunnel::Vxlan6 => {
                    n.spec.ipv6_vxlan_tunnel_addr = addr;
                    n.spec.vxlan_tunnel_mac_addr_v6 = mac;
                }
                Tunnel::Udp => n.spec.ipv4_udp_tunnel_addr = addr,
            }
        }
    }

    /// What another node published in its `Node`: its tunnel endpoints by kind.
    pub fn published(n: &Node) -> BTreeMap<Tunnel, Vtep> {
        let mac = |m: &Option<String>| m.as_deref().and_then(|m| m.parse::<MacAddr>().ok());
        let mut out = BTreeMap::new();
        for t in Tunnel::ALL {
            let vtep = match t {
                Tunnel::Ipip | Tunnel::Udp => None,
                Tunnel::Vxlan => n
                    .ipv4_vxlan_tunnel_addr()
                    .map(IpAddr::V4)
                    .zip(mac(&n.spec.vxlan_tunnel_mac_addr)),
                Tunnel::Vxlan6 => n
                    .ipv6_vxlan_tunnel_addr()
                    .map(IpAddr::V6)
                    .zip(mac(&n.spec.vxlan_tunnel_mac_addr_v6)),
            };
            if let Some((addr, mac)) = vtep {
                out.insert(t, Vtep { addr, mac });
            }
        }
        out
    }
}

/// The BGP router id: the node's IPv4 address, else one derived from its name.
pub fn router_id(uplink: &Uplink, node: &str) -> Ipv4Addr {
    match uplink.v4.map(|n| n.ip()) {
        Some(IpAddr::V4(a)) => a,
        _ => {
            let h = node
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
            Ipv4Addr::from(h | 0x0100_0000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cfg(args: &[&str]) -> NodeConfig {
        NodeConfig::try_parse_from(std::iter::once("manx-node").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn default_pools_follow_the_node_families() {
        // IPv4 only (IP6 defaults to none): the IPv4 pool alone, as before.
        let v4: Vec<String> = default_pools(&cfg(&[]))
            .iter()
            .map(|p| p.spec.cidr.to_string())
            .collect();
        assert_eq!(v4, ["192.168.0.0/16"]);

        // Dual stack: both, the IPv6 one from MANX_IPV6POOL_*.
        let dual = default_pools(&cfg(&[
            "--ip6",
            "autodetect",
            "--ipv6pool-cidr",
            "fd65::/48",
            "--ipv6pool-vxlan",
            "Always",
        ]));
        assert_eq!(dual.len(), 2);
        let p6 = &dual[1];
        assert_eq!(p6.metadata.name, "default-ipv6-ippool");
        assert_eq!(p6.spec.cidr.to_string(), "fd65::/48");
        assert_eq!(p6.spec.block_size, Some(122));
        assert_eq!(p6.spec.vxlan_mode, Some(EncapMode::Always));
        assert_eq!(p6.spec.ipip_mode, Some(EncapMode::Never));
        assert_eq!(p6.spec.nat_outgoing, Some(false));
        assert_eq!(pool_tunnel(p6), Some(Tunnel::Vxlan6));
        for p in &dual {
            p.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", p.metadata.name));
        }

        // IPv6 only: no IPv4 pool; an unset CIDR is a random ULA /48.
        let v6 = default_pools(&cfg(&["--ip", "none", "--ip6", "autodetect"]));
        assert_eq!(v6.len(), 1);
        let IpNetwork::V6(ula) = v6[0].spec.cidr else {
            panic!("{:?}", v6[0].spec.cidr)
        };
        assert_eq!(ula.prefix(), 48);
        assert_eq!(ula.ip().segments()[0] >> 8, 0xfd, "{ula}");
        assert_eq!(pool_tunnel(&v6[0]), None, "direct by default");
    }
}
