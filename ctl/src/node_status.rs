//! `manxctl node status | ready` (through manx-node's status socket) and the
//! set of live IPAM handles `ipam check` compares allocations against.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use datastore::client::Client;
use datastore::model::{Node, WorkloadEndpoint};
use manx_node::status;

/// calicoctl-style peer table of the node at `run_dir`.
pub async fn status(run_dir: &Path) -> Result<String> {
    let s = status::query(run_dir).await.map_err(|e| anyhow!(e))?;
    Ok(status::render(&s))
}

/// Ok when the node at `run_dir` is ready.
pub async fn ready(run_dir: &Path) -> Result<()> {
    let s = status::query(run_dir).await.map_err(|e| anyhow!(e))?;
    if !s.ready {
        bail!("manx-node {} is not ready: {}", s.node, s.not_ready);
    }
    Ok(())
}

/// Handles that belong to something alive: a WorkloadEndpoint's container
/// (`<network>.<container id>`, as the CNI IPAM plugin names them) or a
/// Node's tunnel address (`ipip-tunnel-addr-<node>`, `vxlan-tunnel-addr-<node>`).
pub async fn live_handles(client: &Client) -> Result<HashSet<String>> {
    let (weps, _) = client.list::<WorkloadEndpoint>().await?;
    let (nodes, _) = client.list::<Node>().await?;
    let containers: HashSet<String> = weps
        .iter()
        .filter_map(|w| w.spec.container_id.clone())
        .collect();
    let mut live = HashSet::new();
    for n in &nodes {
        let name = &n.metadata.name;
        live.insert(format!("ipip-tunnel-addr-{name}"));
        live.insert(format!("vxlan-tunnel-addr-{name}"));
        live.insert(format!("vxlan-v6-tunnel-addr-{name}"));
    }
    let prefix = ipam::keys::handles_prefix();
    let handles = client.store().list(&prefix).await?;
    for kv in handles.items {
        let id = kv.key.trim_start_matches(prefix.as_str()).to_string();
        if let Some((_, cid)) = id.split_once('.')
            && containers.contains(cid)
        {
            live.insert(id);
        }
    }
    Ok(live)
}
