//! What manx-node does once at start, before its loops: find its address,
//! create the default pool, register its `Node`, take its tunnel addresses.
//! Every step is idempotent, so a restart repeats it harmlessly.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use datastore::client::{Client, ClientError};
use datastore::model::{EncapMode, IPPool, IPPoolSpec, Node, NodeBGPSpec, ObjectMeta};
use felix::autodetect::{AutodetectMethod, IpFamily, autodetect};
use felix::{Netlink, Uplink};
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

/// Create `default-ipv4-ippool` from `MANX_IPV4POOL_*` unless a pool exists.
pub async fn ensure_default_pool(client: &Client, cfg: &NodeConfig) -> Result<()> {
    if cfg.no_default_pools {
        return Ok(());
    }
    let (pools, _) = client.list::<IPPool>().await?;
    if !pools.is_empty() {
        return Ok(());
    }
    let mut spec = IPPoolSpec::new(IpNetwork::V4(cfg.ipv4pool_cidr));
    spec.block_size = Some(cfg.ipv4pool_block_size);
    spec.ipip_mode = Some(encap(cfg.ipv4pool_ipip));
    spec.vxlan_mode = Some(encap(cfg.ipv4pool_vxlan));
    spec.nat_outgoing = Some(cfg.ipv4pool_nat_outgoing);
    spec.node_selector = Some("all()".into());
    let pool = IPPool {
        metadata: ObjectMeta::named("default-ipv4-ippool"),
        spec,
    };
    match client.create(&pool).await {
        Ok(_) => {
            tracing::info!(cidr = %cfg.ipv4pool_cidr, "created the default IPv4 pool");
            Ok(())
        }
        // Another node won the race: fine.
        Err(ClientError::AlreadyExists { .. }) => Ok(()),
        Err(e) => {
            let (pools, _) = client.list::<IPPool>().await?;
            if pools.is_empty() {
                Err(e).context("creating the default IPv4 pool")
            } else {
                Ok(())
            }
        }
    }
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
/// or a new one from a pool that uses the tunnel (`pools`, by name).
pub async fn tunnel_address(
    ipam: &Arc<Ipam>,
    node: &str,
    handle: &str,
    pools: Vec<String>,
) -> Result<Option<IpAddr>> {
    if pools.is_empty() {
        return Ok(None);
    }
    let held = ipam.ips_by_handle(handle).await?;
    if let Some(ip) = held.into_iter().find(|ip| ip.is_ipv4()) {
        return Ok(Some(ip));
    }
    let args = AutoAssignArgs {
        num_v4: 1,
        num_v6: 0,
        handle_id: handle.to_string(),
        attrs: Attrs {
            handle_id: handle.to_string(),
            node: Some(node.to_string()),
            intended_use: IntendedUse::Tunnel,
            ..Default::default()
        },
        hostname: node.to_string(),
        ipv4_pools: pools,
        ipv6_pools: vec![],
        intended_use: IntendedUse::Tunnel,
        max_blocks_per_host: None,
    };
    let got = ipam.auto_assign(&args).await?;
    Ok(got.ipv4.first().map(|n| n.ip()))
}

/// Names of the enabled IPv4 pools whose `ipipMode` / `vxlanMode` is on.
pub fn tunnel_pools(pools: &[IPPool], vxlan: bool) -> Vec<String> {
    pools
        .iter()
        .filter(|p| p.spec.cidr.is_ipv4() && !p.spec.disabled())
        .filter(|p| {
            let mode = if vxlan {
                p.spec.vxlan_mode()
            } else {
                p.spec.ipip_mode()
            };
            mode != EncapMode::Never
        })
        .map(|p| p.metadata.name.clone())
        .collect()
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
