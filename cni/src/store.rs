//! The endpoint store a configuration names, over the Manx datastore.
//!
//! As Calico's plugin, the datastore is chosen by the config fields
//! (`datastore_type`, `etcd_endpoints`, `etcd_*_file`, and Manx's
//! `manx_db` for the embedded file, as manx-ipam), which override the calicoctl
//! environment variables (`DATASTORE_TYPE`, `ETCD_ENDPOINTS`, `MANX_DB`…).
//! The same variables are passed to the IPAM plugin ([`datastore_vars`]), so
//! both plugins always talk to the same store.

use std::sync::Arc;

use async_trait::async_trait;
use datastore::client::{Client, ClientError};
use datastore::config::DatastoreConfig;
use datastore::model::{IPPool, WorkloadEndpoint};
use datastore::store::StoreError;
use tokio::sync::OnceCell;

use crate::config::NetConf;
use crate::endpoint::{Endpoint, EndpointKey, EndpointStore, NoStore};
use crate::error::{CniError, ErrorCode};

/// Calico's labels on every WorkloadEndpoint.
pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
/// Manx's annotations on a WorkloadEndpoint: the pod's netns path and the
/// network name at ADD (read by manx-node's stale-workload reclaim and by
/// GC; manx-node spells the same names in `reclaim_scan`).
pub const ANNOTATION_NETNS: &str = "manx.dev/netns";
pub const ANNOTATION_NETWORK: &str = "manx.dev/network";

/// The store for `conf`: `none` records nothing; anything else is the Manx
/// datastore, connected on first use.
pub fn open(conf: &NetConf) -> Result<Arc<dyn EndpointStore>, CniError> {
    if conf.datastore.datastore_type.as_deref() == Some("none") {
        return Ok(Arc::new(NoStore));
    }
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    vars.extend(datastore_vars(conf));
    let config = DatastoreConfig::from_vars(vars).map_err(|e| {
        CniError::config(format!(
            "datastore settings in the network configuration: {e}"
        ))
    })?;
    Ok(Arc::new(DatastoreEndpoints::new(config)))
}

/// The calicoctl-style variables the config fields stand for.
pub fn datastore_vars(conf: &NetConf) -> Vec<(String, String)> {
    let d = &conf.datastore;
    let mut vars = Vec::new();
    let mut set = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            vars.push((k.to_string(), v.clone()));
        }
    };
    set("DATASTORE_TYPE", &d.datastore_type);
    set("ETCD_ENDPOINTS", &d.etcd_endpoints);
    set("ETCD_KEY_FILE", &d.etcd_key_file);
    set("ETCD_CERT_FILE", &d.etcd_cert_file);
    set("ETCD_CA_CERT_FILE", &d.etcd_ca_cert_file);
    set("ETCD_USERNAME", &d.etcd_username);
    set("ETCD_PASSWORD", &d.etcd_password);
    set("MANX_DB", &d.manx_db);
    vars
}

/// WorkloadEndpoints in the Manx datastore.
#[derive(Debug)]
pub struct DatastoreEndpoints {
    config: DatastoreConfig,
    client: OnceCell<Client>,
}

impl DatastoreEndpoints {
    /// A store that connects on first use.
    pub fn new(config: DatastoreConfig) -> Self {
        DatastoreEndpoints {
            config,
            client: OnceCell::new(),
        }
    }

    /// Over an already open client (tests, benches).
    pub fn with_client(config: DatastoreConfig, client: Client) -> Self {
        DatastoreEndpoints {
            config,
            client: OnceCell::new_with(Some(client)),
        }
    }

    async fn client(&self) -> Result<&Client, CniError> {
        self.client
            .get_or_try_init(|| async {
                let store = self.config.connect().await.map_err(|e| {
                    store_error(e).context(format!("connecting to {}", self.config.describe()))
                })?;
                Ok(Client::new(store))
            })
            .await
    }
}

fn store_error(e: StoreError) -> CniError {
    let code = if e.is_transient() {
        ErrorCode::TryAgainLater
    } else {
        ErrorCode::Internal
    };
    CniError::new(code, e.to_string())
}

fn client_error(e: ClientError) -> CniError {
    match e {
        ClientError::Store(s) => store_error(s),
        ClientError::TooManyConflicts { .. } => {
            CniError::new(ErrorCode::TryAgainLater, e.to_string())
        }
        other => CniError::internal(other.to_string()),
    }
}

fn to_model(ep: &Endpoint) -> WorkloadEndpoint {
    let mut wep = WorkloadEndpoint::new(ep.namespace.clone(), ep.name.clone());
    wep.metadata
        .labels
        .insert(LABEL_NAMESPACE.into(), ep.namespace.clone());
    wep.metadata
        .labels
        .insert(LABEL_ORCHESTRATOR.into(), ep.orchestrator.clone());
    for (k, v) in [
        (ANNOTATION_NETNS, &ep.netns),
        (ANNOTATION_NETWORK, &ep.network),
    ] {
        if !v.is_empty() {
            wep.metadata.annotations.insert(k.into(), v.clone());
        }
    }
    let s = &mut wep.spec;
    s.orchestrator = Some(ep.orchestrator.clone());
    s.workload = (ep.orchestrator != "k8s").then(|| ep.workload.clone());
    s.node = Some(ep.node.clone());
    s.container_id = Some(ep.container_id.clone());
    s.pod = ep.pod.clone();
    s.endpoint = Some(ep.endpoint.clone());
    s.ip_networks = ep.ip_networks.clone();
    s.interface_name = Some(ep.host_ifname.clone());
    s.mac = (!ep.mac.is_empty()).then(|| ep.mac.clone());
    s.profiles = ep.profiles.clone();
    wep
}

fn from_model(wep: &WorkloadEndpoint) -> Endpoint {
    let s = &wep.spec;
    let orchestrator = s.orchestrator.clone().unwrap_or_default();
    Endpoint {
        namespace: wep.metadata.namespace.clone().unwrap_or_default(),
        name: wep.metadata.name.clone(),
        node: s.node.clone().unwrap_or_default(),
        workload: s
            .workload
            .clone()
            .or_else(|| s.pod.clone())
            .unwrap_or_default(),
        orchestrator,
        pod: s.pod.clone(),
        endpoint: s.endpoint.clone().unwrap_or_default(),
        container_id: s.container_id.clone().unwrap_or_default(),
        ip_networks: s.ip_networks.clone(),
        host_ifname: s.interface_name.clone().unwrap_or_default(),
        mac: s.mac.clone().unwrap_or_default(),
        profiles: s.profiles.clone(),
        netns: annotation(wep, ANNOTATION_NETNS),
        network: annotation(wep, ANNOTATION_NETWORK),
    }
}

fn annotation(wep: &WorkloadEndpoint, key: &str) -> String {
    wep.metadata
        .annotations
        .get(key)
        .cloned()
        .unwrap_or_default()
}

#[async_trait]
impl EndpointStore for DatastoreEndpoints {
    async fn connect(&self) -> Result<(), CniError> {
        self.client().await.map(|_| ())
    }

    async fn put(&self, ep: &Endpoint) -> Result<(), CniError> {
        let client = self.client().await?;
        let wep = to_model(ep);
        // A new pod's endpoint does not exist yet: one write, no read first.
        // A retried ADD (or a new sandbox of the same pod) finds it there and
        // replaces it.
        match client.create(&wep).await {
            Ok(_) => Ok(()),
            Err(ClientError::AlreadyExists { .. }) => {
                client.apply(&wep).await.map(|_| ()).map_err(client_error)
            }
            Err(e) => Err(client_error(e)),
        }
    }

    async fn get(&self, key: &EndpointKey) -> Result<Option<Endpoint>, CniError> {
        let client = self.client().await?;
        client
            .get_namespaced::<WorkloadEndpoint>(&key.namespace, &key.name)
            .await
            .map(|w| w.as_ref().map(from_model))
            .map_err(client_error)
    }

    async fn delete(&self, key: &EndpointKey, container_id: Option<&str>) -> Result<(), CniError> {
        let client = self.client().await?;
        let Some(current) = client
            .get_namespaced::<WorkloadEndpoint>(&key.namespace, &key.name)
            .await
            .map_err(client_error)?
        else {
            return Ok(());
        };
        if let Some(cid) = container_id
            && current
                .spec
                .container_id
                .as_deref()
                .is_some_and(|c| c != cid)
        {
            // A newer sandbox of the same pod owns the endpoint now.
            tracing::info!(endpoint = %key.name, "endpoint belongs to another container; kept");
            return Ok(());
        }
        let revision = current
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok());
        match client
            .delete_namespaced::<WorkloadEndpoint>(&key.namespace, &key.name, revision)
            .await
        {
            Ok(_) | Err(ClientError::NotFound { .. }) => Ok(()),
            Err(ClientError::Store(StoreError::NotFound { .. })) => Ok(()),
            Err(e) => Err(client_error(e)),
        }
    }

    async fn list_on_node(&self, node: &str) -> Result<Vec<Endpoint>, CniError> {
        let client = self.client().await?;
        let (all, _) = client
            .list::<WorkloadEndpoint>()
            .await
            .map_err(client_error)?;
        Ok(all
            .iter()
            .filter(|w| w.spec.node.as_deref() == Some(node))
            .map(from_model)
            .collect())
    }

    async fn status(&self, need_pool: bool) -> Result<(), CniError> {
        let unavailable = |e: CniError| {
            CniError::new(
                ErrorCode::PluginNotAvailable,
                format!("manx is not ready: {}", e.msg),
            )
            .with_details(e.details)
        };
        let client = self.client().await.map_err(unavailable)?;
        client
            .store()
            .revision()
            .await
            .map_err(|e| unavailable(store_error(e)))?;
        if need_pool {
            let (pools, _) = client
                .list::<IPPool>()
                .await
                .map_err(|e| unavailable(client_error(e)))?;
            if !pools.iter().any(|p| !p.spec.disabled()) {
                return Err(CniError::new(
                    ErrorCode::PluginNotAvailable,
                    format!(
                        "manx is not ready: no enabled IPPool in {}: create one (manxctl apply -f pool.yaml)",
                        self.config.describe()
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::memory::MemoryStore;

    fn sample() -> Endpoint {
        Endpoint {
            namespace: "default".into(),
            name: "n1-k8s-web--0-eth0".into(),
            node: "n1".into(),
            orchestrator: "k8s".into(),
            workload: "web-0".into(),
            pod: Some("web-0".into()),
            endpoint: "eth0".into(),
            container_id: "c1".into(),
            ip_networks: vec!["10.20.0.5/32".parse().unwrap()],
            host_ifname: "cali0123456789a".into(),
            mac: "02:00:00:00:00:01".into(),
            profiles: vec!["kns.default".into()],
            netns: "/var/run/netns/cni-1234".into(),
            network: "k8s-pod-network".into(),
        }
    }

    fn store() -> DatastoreEndpoints {
        let client = Client::new(Arc::new(MemoryStore::new()));
        DatastoreEndpoints::with_client(DatastoreConfig::default(), client)
    }

    #[tokio::test]
    async fn put_get_list_delete() {
        let s = store();
        let ep = sample();
        s.put(&ep).await.unwrap();
        // A second put (a retried ADD) replaces.
        s.put(&ep).await.unwrap();
        let key = EndpointKey {
            namespace: "default".into(),
            name: ep.name.clone(),
        };
        assert_eq!(s.get(&key).await.unwrap().unwrap(), ep);
        assert_eq!(s.list_on_node("n1").await.unwrap(), vec![ep.clone()]);
        assert!(s.list_on_node("n2").await.unwrap().is_empty());
        // Another container's DEL leaves it.
        s.delete(&key, Some("other")).await.unwrap();
        assert!(s.get(&key).await.unwrap().is_some());
        s.delete(&key, Some("c1")).await.unwrap();
        assert!(s.get(&key).await.unwrap().is_none());
        // Idempotent.
        s.delete(&key, Some("c1")).await.unwrap();
    }

    #[tokio::test]
    async fn status_needs_an_enabled_pool() {
        let s = store();
        s.status(false).await.unwrap();
        let e = s.status(true).await.unwrap_err();
        assert_eq!(e.code, 50);
        assert!(e.msg.contains("no enabled IPPool"), "{}", e.msg);
        let client = s.client().await.unwrap();
        let pool = IPPool::new("p1", "10.20.0.0/16".parse().unwrap());
        client.create(&pool).await.unwrap();
        s.status(true).await.unwrap();
    }

    #[test]
    fn config_fields_become_calicoctl_vars() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","datastore_type":"embedded","datastore_path":"/tmp/x.db"}"#,
        )
        .unwrap();
        let vars = datastore_vars(&conf);
        assert!(vars.contains(&("DATASTORE_TYPE".into(), "embedded".into())));
        assert!(vars.contains(&("MANX_DB".into(), "/tmp/x.db".into())));
    }
}
