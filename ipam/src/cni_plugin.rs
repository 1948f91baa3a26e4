//! The `manx-ipam` CNI IPAM plugin (the binary in `src/bin/manx-ipam.rs` is a
//! thin shell around [`run`]).
//!
//! Protocol (CNI spec 1.1, "Section 2: Execution Protocol" and "Section 5:
//! Result Types"): the network config arrives as JSON on stdin, the command
//! and container in `CNI_*` environment variables; the result (or an error
//! object `{cniVersion, code, msg, details}`) goes to stdout, with exit code
//! 0 or 1. All of that is the `manx-cni-proto` crate, which the `manx` plugin
//! uses too: the same bad environment or configuration header gets the same
//! code and message from both. This module is the IPAM part.
//!
//! * `ADD` assigns addresses to the handle `<network name>.<container id>`
//!   (as Calico's calico-ipam) and returns them as `/32` / `/128`. Repeating
//!   an ADD returns the addresses already held.
//! * `DEL` releases the handle; unknown handles succeed (DEL is idempotent).
//!   Then the node's blocks that have been empty for the grace period
//!   (`MANX_IPAM_EMPTY_BLOCK_GRACE_SECS`, default 300) are released, as
//!   Calico does, so a burst of pods does not keep its blocks forever; at
//!   most once a minute per host (a stamp file beside the claim lock).
//! * Claims of new blocks for a node are serialised across processes by an
//!   flock in `MANX_IPAM_LOCK_DIR` (default `/var/run/manx`).
//! * `CHECK` verifies the `prevResult` addresses are still held.
//! * `VERSION`, and the CNI 1.1 `STATUS` (datastore reachable, a usable pool)
//!   and `GC` (release handles of this network on this node whose container
//!   is not in `cni.dev/valid-attachments`; without the list, nothing).
//!
//! Config fields follow calico-ipam: `ipam.assign_ipv4` (default `"true"`),
//! `ipam.assign_ipv6` (default `"false"`), `ipam.ipv4_pools`,
//! `ipam.ipv6_pools`, `datastore_type`, `etcd_endpoints`,
//! `etcd_ca_cert_file`, `etcd_cert_file`, `etcd_key_file`, `etcd_username`,
//! `etcd_password`, `nodename`, `nodename_file`, `nodename_file_optional`,
//! plus `manx_db` (embedded store file). Config fields override the
//! `DATASTORE_TYPE` / `ETCD_*` / `MANX_DB` environment.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use cni_proto::env::{CniEnv, Command};
use cni_proto::error::{CniError, ErrorCode};
use cni_proto::output::requested_version;
use cni_proto::result::{AddResult, IpConfig};
use cni_proto::version;
use datastore::config::DatastoreConfig;
use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

use crate::allocator::{AutoAssignArgs, Ipam};
use crate::block::Attrs;
use crate::error::IpamError;

/// Default file holding the node name (written by manx-node).
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/manx/nodename";

/// This plugin's own error codes (the spec leaves 100 and up to plugins;
/// the well-known ones are [`ErrorCode`]).
pub mod codes {
    /// No address could be assigned.
    pub const NO_ADDRESS: u32 = 100;
    /// CHECK found the addresses not held.
    pub const CHECK_FAILED: u32 = 101;
    /// Any other failure.
    pub const INTERNAL: u32 = 102;
}

/// The CNI error for an allocator error.
fn from_ipam(e: IpamError) -> CniError {
    match &e {
        IpamError::Exhausted { .. } => CniError::plugin(codes::NO_ADDRESS, e.to_string()),
        IpamError::Invalid(_) => CniError::config(e.to_string()),
        e if e.is_transient() => CniError::try_again(e.to_string()),
        _ => CniError::plugin(codes::INTERNAL, e.to_string()),
    }
}

/// A bool given as a JSON bool or a string (calico-ipam uses `"true"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Str(String),
}

impl Flag {
    fn value(&self, field: &str) -> Result<bool, CniError> {
        match self {
            Flag::Bool(b) => Ok(*b),
            Flag::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(CniError::config(format!(
                    "ipam.{field}: {other:?} is not \"true\" or \"false\""
                ))),
            },
        }
    }
}

/// The `ipam` section.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IpamSection {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    assign_ipv4: Option<Flag>,
    #[serde(default)]
    assign_ipv6: Option<Flag>,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
}

/// The network configuration on stdin (fields we read; others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetConf {
    /// `cniVersion`, checked by [`cni_proto::conf::parse`].
    #[serde(skip)]
    pub cni_version: String,
    /// `name`, checked by [`cni_proto::conf::parse`].
    #[serde(skip)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub ipam: IpamSection,
    #[serde(default)]
    pub datastore_type: Option<String>,
    #[serde(default)]
    pub etcd_endpoints: Option<String>,
    #[serde(default)]
    pub etcd_ca_cert_file: Option<String>,
    #[serde(default)]
    pub etcd_cert_file: Option<String>,
    #[serde(default)]
    pub etcd_key_file: Option<String>,
    #[serde(default)]
    pub etcd_username: Option<String>,
    #[serde(default)]
    pub etcd_password: Option<String>,
    #[serde(default)]
    pub manx_db: Option<String>,
    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default)]
    pub nodename_file: Option<String>,
    #[serde(default)]
    pub nodename_file_optional: bool,
    /// `prevResult`, decoded by [`cni_proto::conf::parse`].
    #[serde(skip)]
    pub prev_result: Option<AddResult>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Value>>,
}

impl NetConf {
    /// Parses stdin: the common header (JSON, `cniVersion`, `name`,
    /// `datastore_type`, `prevResult`) as every Manx plugin does, then the
    /// IPAM fields (code 6 when they have the wrong types).
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let (value, header) = cni_proto::conf::parse(bytes)?;
        let mut conf: NetConf = serde_json::from_value(value).map_err(|e| {
            CniError::decode(format!("cannot decode the network configuration: {e}"))
        })?;
        conf.cni_version = header.cni_version;
        conf.name = header.name;
        conf.prev_result = header.prev_result;
        Ok(conf)
    }

    /// `(assign_ipv4, assign_ipv6)` with calico-ipam's defaults.
    pub fn families(&self) -> Result<(bool, bool), CniError> {
        let v4 = match &self.ipam.assign_ipv4 {
            Some(f) => f.value("assign_ipv4")?,
            None => true,
        };
        let v6 = match &self.ipam.assign_ipv6 {
            Some(f) => f.value("assign_ipv6")?,
            None => false,
        };
        Ok((v4, v6))
    }

    /// The datastore to use: the environment overlaid with config fields.
    pub fn datastore(&self, env: &HashMap<String, String>) -> Result<DatastoreConfig, CniError> {
        let mut vars: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("ETCD_") || *k == "DATASTORE_TYPE" || *k == "MANX_DB")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in [
            ("DATASTORE_TYPE", &self.datastore_type),
            ("ETCD_ENDPOINTS", &self.etcd_endpoints),
            ("ETCD_CA_CERT_FILE", &self.etcd_ca_cert_file),
            ("ETCD_CERT_FILE", &self.etcd_cert_file),
            ("ETCD_KEY_FILE", &self.etcd_key_file),
            ("ETCD_USERNAME", &self.etcd_username),
            ("ETCD_PASSWORD", &self.etcd_password),
            ("MANX_DB", &self.manx_db),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.trim().is_empty()) {
                vars.insert(k.to_string(), v.clone());
            }
        }
        // calico-ipam says "etcdv3"; an empty type with no endpoints is embedded.
        DatastoreConfig::from_vars(vars).map_err(|e| CniError::config(e.to_string()))
    }

    /// The node name: `nodename`, else the `nodename_file`, else the host name.
    pub fn node_name(&self) -> Result<String, CniError> {
        if let Some(n) = self.nodename.as_ref().filter(|n| !n.trim().is_empty()) {
            return Ok(n.trim().to_string());
        }
        let file = self
            .nodename_file
            .clone()
            .unwrap_or_else(|| DEFAULT_NODENAME_FILE.to_string());
        match std::fs::read_to_string(&file) {
            Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
            Ok(_) | Err(_) if self.nodename_file.is_some() && !self.nodename_file_optional => {
                return Err(CniError::config(format!(
                    "nodename_file {file}: cannot read a node name; is manx-node running? (or set nodename_file_optional)"
                )));
            }
            _ => {}
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                CniError::config("cannot determine the node name: set nodename in the CNI config")
            })
    }
}

/// The environment variable with the empty-block grace period in seconds
/// (default: [`crate::IpamOptions`]'s 300 s).
pub const EMPTY_BLOCK_GRACE_VAR: &str = "MANX_IPAM_EMPTY_BLOCK_GRACE_SECS";

/// Builds the allocator for a config (tests inject an in-memory one).
pub type Connector = Box<
    dyn Fn(
            NetConf,
            HashMap<String, String>,
        ) -> Pin<Box<dyn Future<Output = Result<Arc<Ipam>, CniError>> + Send>>
        + Send
        + Sync,
>;

/// The real connector: the configured datastore, resources read from it.
pub fn datastore_connector() -> Connector {
    Box::new(|conf, env| {
        Box::pin(async move {
            let cfg = conf.datastore(&env)?;
            let store = cfg.connect().await.map_err(|e| {
                let msg = format!("datastore {}: {e}", cfg.describe());
                if e.is_transient() {
                    CniError::try_again(msg)
                } else {
                    CniError::config(msg)
                }
            })?;
            let topo = crate::resources::DatastoreTopology::new(store.clone());
            let opts = options(&env)?;
            Ok(Arc::new(
                Ipam::new(store, Arc::new(topo)).with_options(opts),
            ))
        })
    })
}

/// The allocator options from the plugin's environment: the host claim
/// lock folder (`MANX_IPAM_LOCK_DIR`, else /var/run/manx) and the
/// empty-block grace (`MANX_IPAM_EMPTY_BLOCK_GRACE_SECS`, default 300 s).
/// The node agent serving the socket uses the same.
pub fn options(vars: &HashMap<String, String>) -> Result<crate::allocator::IpamOptions, CniError> {
    let mut opts = crate::allocator::IpamOptions {
        claim_lock_dir: Some(lock_dir(vars)),
        ..Default::default()
    };
    if let Some(v) = var(vars, EMPTY_BLOCK_GRACE_VAR) {
        let secs: u64 = v.trim().parse().map_err(|_| {
            CniError::config(format!(
                "{EMPTY_BLOCK_GRACE_VAR}={v:?} is not a whole number of seconds; set it to e.g. 300 or unset it"
            ))
        })?;
        opts.empty_block_grace = std::time::Duration::from_secs(secs);
    }
    Ok(opts)
}

/// The ADD result (CNI spec section 5.1) in the shape of `version`:
/// host-length prefixes as calico-ipam.
pub fn ips_result(version: &str, ips: &[IpAddr]) -> Value {
    let result = AddResult {
        ips: ips
            .iter()
            .map(|ip| IpConfig {
                address: IpNetwork::from(*ip),
                gateway: None,
                interface: None,
            })
            .collect(),
        ..AddResult::default()
    };
    result.to_json(version)
}

/// Run one CNI command with the process's variables `vars` (`CNI_*`, and
/// `DATASTORE_TYPE` / `ETCD_*` / `MANX_DB` for the datastore).
/// `Ok(Some(json))` is printed, `Ok(None)` prints nothing (DEL, CHECK,
/// STATUS, GC success); print either with [`cni_proto::Outcome`].
pub async fn run(
    vars: &HashMap<String, String>,
    stdin: &[u8],
    connect: &Connector,
) -> Result<Option<Value>, CniError> {
    let env = CniEnv::from_lookup(|k| vars.get(k).cloned())?;
    if env.command == Command::Version {
        return Ok(Some(version::version_info(&requested_version(stdin))));
    }
    let conf = NetConf::parse(stdin)?;
    version::require_command(env.command, &conf.cni_version)?;
    run_inner(&env, vars, conf, connect).await
}

async fn run_inner(
    env: &CniEnv,
    vars: &HashMap<String, String>,
    conf: NetConf,
    connect: &Connector,
) -> Result<Option<Value>, CniError> {
    let (v4, v6) = conf.families()?;
    if !v4 && !v6 {
        return Err(CniError::config(
            "ipam: assign_ipv4 and assign_ipv6 are both false: enable at least one",
        ));
    }
    if env.command == Command::Check {
        cni_proto::conf::require_prev_result(conf.prev_result.as_ref())?;
    }
    let version = conf.cni_version.as_str();
    let handle = format!("{}.{}", conf.name, env.container_id);
    let node = conf.node_name()?;
    if matches!(env.command, Command::Add | Command::Del)
        && let Served::Answer(answer) = via_agent(env, vars, &conf, &node, (v4, v6)).await?
    {
        return Ok(answer);
    }
    let ipam = connect(conf.clone(), vars.clone()).await?;
    match env.command {
        Command::Add => {
            let pod = PodAdd {
                handle,
                node,
                container_id: env.container_id.clone(),
                namespace: env.k8s.namespace.clone(),
                pod: env.k8s.pod.clone(),
                v4,
                v6,
                ipv4_pools: conf.ipam.ipv4_pools.clone(),
                ipv6_pools: conf.ipam.ipv6_pools.clone(),
            };
            let ips = add_pod(&ipam, &pod).await?;
            Ok(Some(ips_result(version, &ips)))
        }
        Command::Del => {
            release_pod(&ipam, &handle).await?;
            sweep_after_del(&ipam, &node).await;
            Ok(None)
        }
        Command::Check => {
            let held: HashSet<IpAddr> = ipam
                .ips_by_handle(&handle)
                .await
                .map_err(from_ipam)?
                .into_iter()
                .collect();
            let prev = cni_proto::conf::require_prev_result(conf.prev_result.as_ref())?;
            for ip in &prev.ips {
                if !held.contains(&ip.address.ip()) {
                    return Err(CniError::plugin(
                        codes::CHECK_FAILED,
                        format!("address {} is not held by handle {handle}", ip.address),
                    ));
                }
            }
            Ok(None)
        }
        Command::Status => {
            let pools = ipam.topology().pools().await.map_err(|e| {
                CniError::new(
                    ErrorCode::PluginNotAvailable,
                    format!("datastore not reachable: {e}"),
                )
            })?;
            for (want, v6, fam) in [(v4, false, "IPv4"), (v6, true, "IPv6")] {
                if want && !pools.iter().any(|p| p.cidr.is_ipv6() == v6 && !p.disabled) {
                    return Err(CniError::new(
                        ErrorCode::PluginNotAvailable,
                        format!("no enabled {fam} IP pool: create an IPPool"),
                    ));
                }
            }
            Ok(None)
        }
        Command::Gc => {
            // The runtime lists its live attachments on this node; without
            // the list nothing is released (guessing "none" would free
            // every pod's address).
            let Some(list) = conf.valid_attachments.as_ref() else {
                return Err(CniError::config(format!(
                    "GC of network {:?}: the configuration has no \"cni.dev/valid-attachments\"; \
                     the runtime must list the live attachments (CNI spec 1.1, an empty list if none): nothing was released",
                    conf.name
                )));
            };
            let valid: HashSet<String> = list
                .iter()
                .filter_map(|a| a["containerID"].as_str().map(str::to_string))
                .collect();
            let prefix = format!("{}.", conf.name);
            for h in ipam.rw().list_handles().await.map_err(from_ipam)? {
                let id = &h.value.handle_id;
                let Some(cid) = id.strip_prefix(&prefix) else {
                    continue;
                };
                if valid.contains(cid) {
                    continue;
                }
                // Handles are cluster-wide and the list is this node's:
                // only a handle whose every address was assigned to this
                // node is this runtime's to release.
                if !handle_on_node(&ipam, &h.value, &node).await? {
                    tracing::debug!(handle = %id, "GC: not this node's attachment, left alone");
                    continue;
                }
                tracing::info!(handle = %id, "GC: releasing stale attachment");
                ipam.release_by_handle(id).await.map_err(from_ipam)?;
            }
            Ok(None)
        }
        // Answered before the configuration is read.
        Command::Version => Ok(Some(version::version_info(version))),
    }
}

/// A variable of the plugin's environment (`vars`, else the process's).
fn var(vars: &HashMap<String, String>, name: &str) -> Option<String> {
    vars.get(name).cloned().or_else(|| std::env::var(name).ok())
}

/// The host claim lock folder, where the node agent's socket is too:
/// `MANX_IPAM_LOCK_DIR`, else `/var/run/manx`.
fn lock_dir(vars: &HashMap<String, String>) -> std::path::PathBuf {
    var(vars, "MANX_IPAM_LOCK_DIR")
        .unwrap_or_else(|| "/var/run/manx".to_string())
        .into()
}

/// Whether the node agent answered.
enum Served {
    Answer(Option<Value>),
    Fallback,
}

/// ADD or DEL through the node agent's socket ([`crate::service`]) when
/// there is one; [`Served::Fallback`] (allocate directly) when there is
/// none, it refuses the request, or it does not answer in time. An error
/// the agent returns is the ADD's or DEL's error, as it would have been
/// directly.
async fn via_agent(
    env: &CniEnv,
    vars: &HashMap<String, String>,
    conf: &NetConf,
    node: &str,
    (v4, v6): (bool, bool),
) -> Result<Served, CniError> {
    let timeout = crate::service::timeout_from(var(vars, crate::service::TIMEOUT_VAR).as_deref())
        .map_err(CniError::config)?;
    let Some(timeout) = timeout else {
        return Ok(Served::Fallback);
    };
    // Checked here too: a bad value is refused by name on either path.
    let opts = options(vars)?;
    let path = crate::service::socket_path(&lock_dir(vars), node);
    if !path.exists() {
        return Ok(Served::Fallback);
    }
    let req = crate::service::Request {
        op: if env.command == Command::Add {
            crate::service::Op::Add
        } else {
            crate::service::Op::Del
        },
        node: node.to_string(),
        datastore: conf.datastore(vars)?.describe(),
        network: conf.name.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        namespace: env.k8s.namespace.clone(),
        pod: env.k8s.pod.clone(),
        v4,
        v6,
        ipv4_pools: conf.ipam.ipv4_pools.clone(),
        ipv6_pools: conf.ipam.ipv6_pools.clone(),
        empty_block_grace_secs: var(vars, EMPTY_BLOCK_GRACE_VAR)
            .map(|_| opts.empty_block_grace.as_secs()),
    };
    use crate::service::Response;
    let answer = crate::service::call(&path, &req, timeout).await;
    if let Ok(Response::Ips { .. } | Response::Done | Response::Error { .. }) = &answer {
        tracing::debug!(socket = %path.display(), "served by the node agent");
    }
    match answer {
        Ok(Response::Ips { ips }) => Ok(Served::Answer(Some(ips_result(&conf.cni_version, &ips)))),
        Ok(Response::Done) => Ok(Served::Answer(None)),
        Ok(Response::Error { code, msg, details }) => Err(CniError { code, msg, details }),
        Ok(Response::Refused { msg }) => {
            tracing::warn!(socket = %path.display(), %msg, "the node agent refused the IPAM request; allocating directly");
            Ok(Served::Fallback)
        }
        Err(why) => {
            tracing::warn!(%why, "the node agent's IPAM socket did not answer; allocating directly");
            Ok(Served::Fallback)
        }
    }
}

/// What an ADD assigns, from the plugin's input or the node agent's
/// socket request ([`crate::service`]).
#[derive(Debug, Clone)]
pub(crate) struct PodAdd {
    pub handle: String,
    pub node: String,
    pub container_id: String,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub v4: bool,
    pub v6: bool,
    pub ipv4_pools: Vec<String>,
    pub ipv6_pools: Vec<String>,
}

/// ADD: the addresses of `pod.handle`, assigned now or held already
/// (a repeated ADD returns what the handle holds).
pub(crate) async fn add_pod(ipam: &Ipam, pod: &PodAdd) -> Result<Vec<IpAddr>, CniError> {
    let handle = &pod.handle;
    let existing = ipam.ips_by_handle(handle).await.map_err(from_ipam)?;
    if !existing.is_empty() {
        tracing::info!(%handle, ?existing, "ADD repeated: returning held addresses");
        return Ok(existing);
    }
    let mut attrs = Attrs {
        node: Some(pod.node.clone()),
        namespace: pod.namespace.clone(),
        pod: pod.pod.clone(),
        ..Attrs::default()
    };
    attrs
        .extra
        .insert("containerID".into(), pod.container_id.clone());
    let args = AutoAssignArgs {
        num_v4: pod.v4 as usize,
        num_v6: pod.v6 as usize,
        handle_id: handle.clone(),
        attrs,
        hostname: pod.node.clone(),
        ipv4_pools: pod.ipv4_pools.clone(),
        ipv6_pools: pod.ipv6_pools.clone(),
        ..AutoAssignArgs::default()
    };
    let r = ipam.auto_assign(&args).await.map_err(from_ipam)?;
    Ok(r.ipv4.iter().chain(&r.ipv6).map(IpNetwork::ip).collect())
}

/// DEL: releases the handle (an unknown one is fine).
pub(crate) async fn release_pod(ipam: &Ipam, handle: &str) -> Result<(), CniError> {
    ipam.release_by_handle(handle).await.map_err(from_ipam)?;
    Ok(())
}

/// Housekeeping after a DEL succeeded: the node's blocks empty for the
/// grace period go back to the pool (also without the node agent's own
/// sweep), at most once a minute per host. A failure here does not fail
/// the DEL: a later DEL or the agent's sweep retries.
pub(crate) async fn sweep_after_del(ipam: &Ipam, node: &str) {
    let sweep = if ipam.del_sweep_due(node) {
        ipam.release_empty_blocks(Some(node)).await
    } else {
        Ok(Vec::new())
    };
    match sweep {
        Ok(released) if !released.is_empty() => {
            tracing::info!(%node, ?released, "released empty blocks");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(%node, error = %e, "releasing empty blocks after DEL failed; retried by the next DEL");
        }
    }
}

/// Whether every address `h` holds was assigned to `node` (its `node`
/// attribute); false for a handle that holds none.
async fn handle_on_node(
    ipam: &Ipam,
    h: &datastore::model::ipam::IPAMHandle,
    node: &str,
) -> Result<bool, CniError> {
    let mut any = false;
    for cidr in h.block.keys() {
        let Ok(cidr) = cidr.parse::<ipnetwork::IpNetwork>() else {
            continue;
        };
        let Some(b) = ipam.rw().get_block(&cidr).await.map_err(from_ipam)? else {
            continue;
        };
        for (_, attr, _) in b.value.allocated() {
            if attr.handle_id.as_deref() != Some(h.handle_id.as_str()) {
                continue;
            }
            if attr
                .secondary
                .get(crate::block::ATTR_NODE)
                .map(String::as_str)
                != Some(node)
            {
                return Ok(false);
            }
            any = true;
        }
    }
    Ok(any)
}

#[cfg(test)]
#[path = "cni_plugin_tests.rs"]
mod tests;
