//! `manx-bgpd --from-datastore`: a dedicated route reflector (Calico's
//! route-reflector deployment). Its Node resource (`NODENAME`) gives the
//! router id (its IPv4 address) and `routeReflectorClusterID`; its peers
//! come from [`crate::cluster::desired_peers`] over the datastore's Nodes,
//! BGPPeers and BGPConfigurations, and are re-applied live on every change
//! (unchanged sessions are left alone by `set_peers`). It originates
//! nothing and programs no routes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use datastore::Revision;
use datastore::client::{Client, RESOURCE_PREFIX};
use datastore::model::{BGPConfiguration, BGPFilter, BGPPeer, Node};
use futures::StreamExt;

use crate::cluster::{SecretDir, desired_peers};
use crate::config::{ListenConfig, PeerConfig, SpeakerConfig};
use crate::northbound;
use crate::speaker::{Speaker, SpeakerError, SpeakerHandle};

/// Errors of the datastore-driven reflector.
#[derive(Debug, thiserror::Error)]
pub enum ReflectorError {
    /// Reading the datastore failed.
    #[error(
        "route reflector: datastore: {0} (check the datastore environment and that it is reachable)"
    )]
    Datastore(String),
    /// Our Node resource is missing or lacks an IPv4 address.
    #[error("route reflector: Node {0:?}: {1}")]
    Node(String, String),
    /// The speaker did not start.
    #[error(transparent)]
    Speaker(#[from] SpeakerError),
}

fn ds<E: std::fmt::Display>(e: E) -> ReflectorError {
    ReflectorError::Datastore(e.to_string())
}

/// The resources a reflector's peers come from.
struct Snapshot {
    nodes: Vec<Node>,
    peers: Vec<BGPPeer>,
    cfgs: Vec<BGPConfiguration>,
    filters: Vec<BGPFilter>,
    revision: Revision,
}

/// The peers Node `me` wants now.
fn wanted_peers(me: &str, s: &Snapshot, secrets: &SecretDir) -> Vec<PeerConfig> {
    desired_peers(me, &s.nodes, &s.peers, &s.cfgs, &s.filters, secrets)
        .into_iter()
        .inspect(|p| {
            if let Some(gw) = p.reachable_by {
                // The reflector programs no routes: the host must route the peer.
                tracing::warn!(
                    peer = %p.address(),
                    bgppeer = p.source.as_deref().unwrap_or(""),
                    "reachableBy {gw} is not installed by manx-bgpd --from-datastore (it programs no routes): route the peer through {gw} on this host"
                );
            }
        })
        .map(|p| p.config)
        .collect()
}

async fn snapshot(client: &Client) -> Result<Snapshot, ReflectorError> {
    let (nodes, r1) = client.list::<Node>().await.map_err(ds)?;
    let (peers, r2) = client.list::<BGPPeer>().await.map_err(ds)?;
    let (cfgs, r3) = client.list::<BGPConfiguration>().await.map_err(ds)?;
    let (filters, r4) = client.list::<BGPFilter>().await.map_err(ds)?;
    Ok(Snapshot {
        nodes,
        peers,
        cfgs,
        filters,
        revision: r1.max(r2).max(r3).max(r4),
    })
}

/// Start the reflector for Node `me`; returns the speaker and a future that
/// keeps its peers in sync with the datastore (run it until shutdown).
pub async fn start(
    me: String,
    secrets: PathBuf,
    control_socket: Option<PathBuf>,
) -> Result<(Speaker, impl Future<Output = Result<(), ReflectorError>>), ReflectorError> {
    let cfg = datastore::config::DatastoreConfig::from_env().map_err(ds)?;
    let store = cfg.connect().await.map_err(ds)?;
    let client = Client::new(store.clone());
    let snap = snapshot(&client).await?;
    let rev = snap.revision;
    let node = snap
        .nodes
        .iter()
        .find(|n| n.metadata.name == me)
        .ok_or_else(|| {
            ReflectorError::Node(
                me.clone(),
                "not found; create it (manxctl apply) or set NODENAME".into(),
            )
        })?;
    let (addr, _) = node.ipv4_address().ok_or_else(|| {
        ReflectorError::Node(
            me.clone(),
            "has no spec.bgp.ipv4Address; set one (it is the router id)".into(),
        )
    })?;
    let secrets = SecretDir(secrets);
    let cluster =
        northbound::cluster_settings(&northbound::usable_bgp(&snap.peers, &snap.cfgs).1, &secrets);
    let me_bgp = northbound::node_bgp(node);
    let mut scfg = SpeakerConfig::new(me_bgp.as_number.unwrap_or(cluster.as_number), addr);
    scfg.cluster_id = me_bgp.rr_cluster_id;
    scfg.listen = Some(ListenConfig {
        address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        port: cluster.listen_port,
    });
    scfg.control_socket = control_socket;
    scfg.peers = wanted_peers(&me, &snap, &secrets);
    tracing::info!(node = %me, router_id = %addr, cluster_id = ?scfg.cluster_id, peers = scfg.peers.len(), "route reflector from the datastore");
    let speaker = Speaker::start(scfg, None)?;
    let handle = speaker.handle();
    let follow = async move { follow(client, store, handle, me, secrets, rev).await };
    Ok((speaker, follow))
}

async fn follow(
    client: Client,
    store: std::sync::Arc<dyn datastore::Datastore>,
    handle: SpeakerHandle,
    me: String,
    secrets: SecretDir,
    mut rev: Revision,
) -> Result<(), ReflectorError> {
    loop {
        let mut watch = store.watch(RESOURCE_PREFIX, rev).await.map_err(ds)?;
        // Any change under the resources: recompute from a fresh snapshot
        // (cheap at reflector scale, and never drifts).
        while let Some(ev) = watch.next().await {
            if let Err(e) = ev {
                tracing::warn!(error = %e, "datastore watch error; restarting the watch");
                break;
            }
            let snap = snapshot(&client).await?;
            rev = rev.max(snap.revision);
            let wanted = wanted_peers(&me, &snap, &secrets);
            tracing::debug!(peers = wanted.len(), "peers recomputed");
            handle.set_peers(wanted);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
