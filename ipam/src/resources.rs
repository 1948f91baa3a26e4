//! [`Topology`] over the `projectcalico.org/v3` resources in the datastore:
//! `IPPool`, `Node` (labels) and `IPReservation`. (The `IPAMConfiguration`
//! named `default` is IPAM's configuration itself: see
//! [`crate::blockrw::BlockRw::get_config`].)

use std::sync::Arc;

use async_trait::async_trait;
use datastore::Datastore;
use datastore::client::{Client, ClientError};
use datastore::model::{AllowedUse, AssignmentMode, IPPool, IPReservation, Node};
use datastore::selector::Selector;
use ipnetwork::IpNetwork;

use crate::block::IntendedUse;
use crate::error::{IpamError, Result};
use crate::topology::{Labels, Pool, Topology};

/// Reads pools, nodes and reservations through the typed [`Client`].
#[derive(Debug, Clone)]
pub struct DatastoreTopology {
    client: Client,
}

fn client_err(what: &str, e: ClientError) -> IpamError {
    match e {
        ClientError::Store(s) => IpamError::store(format!("reading {what}"), s),
        other => IpamError::Invalid(format!("reading {what}: {other}")),
    }
}

/// An `IPPool` as the allocator sees it.
pub fn pool_from_resource(p: &IPPool) -> Pool {
    Pool {
        name: p.metadata.name.clone(),
        cidr: p.spec.cidr,
        block_size: p.spec.block_size(),
        node_selector: p.spec.node_selector().to_string(),
        disabled: p.spec.disabled(),
        allowed_uses: p
            .spec
            .allowed_uses()
            .into_iter()
            .map(|u| match u {
                AllowedUse::Workload => IntendedUse::Workload,
                AllowedUse::Tunnel => IntendedUse::Tunnel,
            })
            .collect(),
        manual_assignment: p.spec.assignment_mode() == AssignmentMode::Manual,
    }
}

impl DatastoreTopology {
    /// Over `store`.
    pub fn new(store: Arc<dyn Datastore>) -> Self {
        DatastoreTopology {
            client: Client::new(store),
        }
    }
}

#[async_trait]
impl Topology for DatastoreTopology {
    async fn pools(&self) -> Result<Vec<Pool>> {
        let (pools, _) = self
            .client
            .list::<IPPool>()
            .await
            .map_err(|e| client_err("IP pools", e))?;
        Ok(pools.iter().map(pool_from_resource).collect())
    }

    async fn node_labels(&self, node: &str) -> Result<Option<Labels>> {
        if node.is_empty() || node.contains('/') {
            return Ok(None);
        }
        Ok(self
            .client
            .get::<Node>(node)
            .await
            .map_err(|e| client_err(&format!("node {node}"), e))?
            .map(|n| n.metadata.labels))
    }

    async fn nodes(&self) -> Result<Vec<String>> {
        let (nodes, _) = self
            .client
            .list::<Node>()
            .await
            .map_err(|e| client_err("nodes", e))?;
        Ok(nodes.into_iter().map(|n| n.metadata.name).collect())
    }

    async fn reservations(&self) -> Result<Vec<IpNetwork>> {
        let (res, _) = self
            .client
            .list::<IPReservation>()
            .await
            .map_err(|e| client_err("IP reservations", e))?;
        Ok(res
            .iter()
            .flat_map(|r| r.spec.reserved_networks())
            .collect())
    }

    fn selector_matches(&self, selector: &str, labels: &Labels) -> Result<bool> {
        let sel = Selector::parse(selector)
            .map_err(|e| IpamError::Invalid(format!("nodeSelector: {e}")))?;
        Ok(sel.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::memory::MemoryStore;
    use datastore::model::ObjectMeta;

    use crate::allocator::{AutoAssignArgs, Ipam};

    #[tokio::test]
    async fn reads_pools_nodes_reservations_and_config_from_resources() {
        let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
        let client = Client::new(store.clone());
        let mut pool = IPPool::new("zone-a", "10.20.0.0/24".parse().unwrap());
        pool.spec.node_selector = Some("zone in {'a', 'x'}".into());
        pool.spec.block_size = Some(28);
        client.create(&pool).await.unwrap();
        let mut node = Node {
            metadata: ObjectMeta::named("n1"),
            spec: Default::default(),
            status: None,
        };
        node.metadata.labels.insert("zone".into(), "a".into());
        client.create(&node).await.unwrap();
        client
            .create(&IPReservation::new("r", vec!["10.20.0.0/29".into()]))
            .await
            .unwrap();
        let topo = DatastoreTopology::new(store.clone());
        let ipam = Ipam::new(store, Arc::new(topo));
        let r = ipam
            .auto_assign(&AutoAssignArgs {
                num_v4: 1,
                handle_id: "h".into(),
                hostname: "n1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        // /28 blocks; the first 8 addresses of the pool are reserved.
        assert_eq!(r.ipv4[0].prefix(), 28);
        let last: u8 = r.ipv4[0]
            .ip()
            .to_string()
            .rsplit('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(!(0..8).contains(&last), "{r:?}");
        assert!(
            ipam.topology()
                .nodes()
                .await
                .unwrap()
                .contains(&"n1".to_string())
        );
        assert!(!ipam.config().await.unwrap().strict_affinity);
    }

    /// `ipam configure` and the `IPAMConfiguration` resource are one object,
    /// as in Calico: a change through either is what the other sees.
    #[tokio::test]
    async fn ipam_config_is_the_ipamconfiguration_resource() {
        use datastore::model::{IPAMConfiguration, IPAMConfigurationSpec};
        let store: Arc<dyn Datastore> = Arc::new(MemoryStore::new());
        let client = Client::new(store.clone());
        let ipam = Ipam::new(store.clone(), Arc::new(DatastoreTopology::new(store))).with_options(
            crate::allocator::IpamOptions {
                config_ttl: std::time::Duration::ZERO,
                ..Default::default()
            },
        );
        let cfg = ipam.config().await.unwrap();
        assert!(!cfg.strict_affinity && cfg.auto_allocate_blocks);
        ipam.update_config(|c| c.strict_affinity = true)
            .await
            .unwrap();
        let res = client
            .get::<IPAMConfiguration>("default")
            .await
            .unwrap()
            .expect("ipam configure wrote the resource");
        assert!(res.spec.strict_affinity());
        client
            .apply(&IPAMConfiguration::new(IPAMConfigurationSpec {
                strict_affinity: Some(false),
                max_blocks_per_host: Some(7),
                auto_allocate_blocks: Some(true),
            }))
            .await
            .unwrap();
        let cfg = ipam.config().await.unwrap();
        assert!(!cfg.strict_affinity);
        assert_eq!(cfg.max_blocks_per_host, 7);
        // A stale CAS is refused and retried by update_config, not lost.
        ipam.update_config(|c| c.max_blocks_per_host += 1)
            .await
            .unwrap();
        assert_eq!(ipam.config().await.unwrap().max_blocks_per_host, 8);
    }
}
