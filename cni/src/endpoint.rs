//! Where WorkloadEndpoints are recorded: the plugin's view of the datastore.
//!
//! The plugin needs five operations, behind [`EndpointStore`] so the
//! command logic does not depend on a backend: the Manx datastore (etcd or
//! the embedded file, [`crate::store`]) or nothing at all
//! (`datastore_type: "none"`, [`NoStore`]) when the plugin is used with a
//! non-Manx IPAM plugin and no node agent.

use async_trait::async_trait;
use ipnetwork::IpNetwork;

use crate::env::CniEnv;
use crate::error::CniError;

/// One pod interface, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `metadata.namespace`: the pod's namespace (`default` for non-k8s).
    pub namespace: String,
    /// `metadata.name`: `<node>-<orchestrator>-<workload>-<endpoint>`.
    pub name: String,
    pub node: String,
    /// `k8s` when `CNI_ARGS` names a pod, else `cni`.
    pub orchestrator: String,
    /// The pod name, or the container id.
    pub workload: String,
    pub pod: Option<String>,
    /// The pod-side interface (`CNI_IFNAME`).
    pub endpoint: String,
    pub container_id: String,
    pub ip_networks: Vec<IpNetwork>,
    /// The host-side veth.
    pub host_ifname: String,
    /// MAC of the pod side.
    pub mac: String,
    /// Calico profiles (`kns.<namespace>` for k8s pods).
    pub profiles: Vec<String>,
    /// The pod's netns path (`CNI_NETNS`) at ADD; empty if not recorded.
    /// manx-node's stale-workload reclaim checks it still exists.
    pub netns: String,
    /// The network's name (the config's `name`) at ADD; empty if not
    /// recorded. CNI GC only considers endpoints of its own network, and
    /// manx-ipam's handle is `<network>.<container id>`.
    pub network: String,
}

/// Identity of an endpoint in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointKey {
    pub namespace: String,
    pub name: String,
}

impl EndpointKey {
    /// The key of the endpoint for this invocation on `node`.
    pub fn for_invocation(env: &CniEnv, node: &str) -> EndpointKey {
        let (namespace, orchestrator, workload) = identity(env);
        EndpointKey {
            namespace,
            name: endpoint_name(node, &orchestrator, &workload, &env.ifname),
        }
    }
}

/// `(namespace, orchestrator, workload)` for an invocation.
pub fn identity(env: &CniEnv) -> (String, String, String) {
    match (&env.k8s.namespace, &env.k8s.pod) {
        (Some(ns), Some(pod)) => (ns.clone(), "k8s".into(), pod.clone()),
        _ => ("default".into(), "cni".into(), env.container_id.clone()),
    }
}

/// Calico's name: the four parts with `-` doubled, joined by `-`.
pub fn endpoint_name(node: &str, orchestrator: &str, workload: &str, endpoint: &str) -> String {
    [node, orchestrator, workload, endpoint]
        .iter()
        .map(|p| p.replace('-', "--"))
        .collect::<Vec<_>>()
        .join("-")
}

/// The operations the plugin needs from the datastore.
#[async_trait]
pub trait EndpointStore: Send + Sync + std::fmt::Debug {
    /// Connects now rather than on first use, so the connection can be made
    /// while something else (the IPAM plugin) runs. A no-op by default.
    async fn connect(&self) -> Result<(), CniError> {
        Ok(())
    }
    /// Creates or replaces the endpoint.
    async fn put(&self, ep: &Endpoint) -> Result<(), CniError>;
    /// Reads one endpoint.
    async fn get(&self, key: &EndpointKey) -> Result<Option<Endpoint>, CniError>;
    /// Deletes the endpoint; a missing one is success. Only deletes it if
    /// it belongs to `container_id` (a newer sandbox of the same pod may own
    /// it now), when given.
    async fn delete(&self, key: &EndpointKey, container_id: Option<&str>) -> Result<(), CniError>;
    /// Every endpoint recorded for `node`.
    async fn list_on_node(&self, node: &str) -> Result<Vec<Endpoint>, CniError>;
    /// STATUS: the store answers and, when `need_pool`, an enabled IP pool
    /// exists. Code 50 otherwise.
    async fn status(&self, need_pool: bool) -> Result<(), CniError>;
}

/// `datastore_type: "none"`: nothing is recorded.
#[derive(Debug, Default)]
pub struct NoStore;

#[async_trait]
impl EndpointStore for NoStore {
    async fn put(&self, _ep: &Endpoint) -> Result<(), CniError> {
        Ok(())
    }
    async fn get(&self, _key: &EndpointKey) -> Result<Option<Endpoint>, CniError> {
        Ok(None)
    }
    async fn delete(&self, _key: &EndpointKey, _cid: Option<&str>) -> Result<(), CniError> {
        Ok(())
    }
    async fn list_on_node(&self, _node: &str) -> Result<Vec<Endpoint>, CniError> {
        Ok(Vec::new())
    }
    async fn status(&self, _need_pool: bool) -> Result<(), CniError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calico's `names.WorkloadEndpointIdentifiers.CalculateWorkloadEndpointName`.
    #[test]
    fn calico_endpoint_names() {
        assert_eq!(
            endpoint_name("node-1", "k8s", "web-0", "eth0"),
            "node--1-k8s-web--0-eth0"
        );
        assert_eq!(endpoint_name("n1", "cni", "abc", "eth0"), "n1-cni-abc-eth0");
    }
}
