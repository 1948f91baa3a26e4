//! The `manx-ipam` CNI IPAM plugin (the binary in `src/bin/manx-ipam.rs` is a
//! thin shell around [`run`]).
//!
//! Protocol (CNI spec 1.1, "Section 2: Execution Protocol" and "Section 5:
//! Result Types"): the network config arrives as JSON on stdin, the command
//! and container in `CNI_*` environment variables; the result (or an error
//! object `{cniVersion, code, msg, details}`) goes to stdout, with exit code
//! 0 or 1.
//!
//! * `ADD` assigns addresses to the handle `<network name>.<container id>`
//!   (as Calico's calico-ipam) and returns them as `/32` / `/128`. Repeating
//!   an ADD returns the addresses already held.
//! * `DEL` releases the handle; unknown handles succeed (DEL is idempotent).
//! * `CHECK` verifies the `prevResult` addresses are still held.
//! * `VERSION`, and the CNI 1.1 `STATUS` (datastore reachable, a usable pool)
//!   and `GC` (release handles of this network whose container is not in
//!   `cni.dev/valid-attachments`).
//!
//! Config fields follow calico-ipam: `ipam.assign_ipv4` (default `"true"`),
//! `ipam.assign_ipv6` (default `"false"`), `ipam.ipv4_pools`,
//! `ipam.ipv6_pools`, `datastore_type`, `etcd_endpoints`,
//! `etcd_ca_cert_file`, `etcd_cert_file`, `etcd_key_file`, `etcd_username`,
//! `etcd_password`, `nodename`, `nodename_file`, `nodename_file_optional`,
//! plus `manx_db` (embedded store file). Config fields override the
//! `DATASTORE_TYPE` / `ETCD_*` / `MANX_DB` environment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use datastore::config::DatastoreConfig;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::allocator::{AutoAssignArgs, Ipam};
use crate::block::Attrs;
use crate::error::IpamError;

/// CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Default file holding the node name (written by manx-node).
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/manx/nodename";

/// CNI error codes (spec section "Error").
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// Failure to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plugin-specific: no address could be assigned.
    pub const NO_ADDRESS: u32 = 100;
    /// Plugin-specific: CHECK found the addresses not held.
    pub const CHECK_FAILED: u32 = 101;
    /// Plugin-specific: any other failure.
    pub const INTERNAL: u32 = 102;
}

/// A CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: "1.1.0".into(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    fn with_details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }

    fn from_ipam(e: IpamError) -> Self {
        let code = match &e {
            IpamError::Exhausted { .. } => codes::NO_ADDRESS,
            IpamError::Invalid(_) => codes::INVALID_CONFIG,
            e if e.is_transient() => codes::TRY_AGAIN,
            _ => codes::INTERNAL,
        };
        CniError::new(code, e.to_string())
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
                other => Err(CniError::new(
                    codes::INVALID_CONFIG,
                    format!("ipam.{field}: {other:?} is not \"true\" or \"false\""),
                )),
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
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
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
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Value>>,
}

impl NetConf {
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
        DatastoreConfig::from_vars(vars)
            .map_err(|e| CniError::new(codes::INVALID_CONFIG, e.to_string()))
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
                return Err(CniError::new(
                    codes::INVALID_CONFIG,
                    format!(
                        "nodename_file {file}: cannot read a node name; is manx-node running? (or set nodename_file_optional)"
                    ),
                ));
            }
            _ => {}
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                CniError::new(
                    codes::INVALID_CONFIG,
                    "cannot determine the node name: set nodename in the CNI config",
                )
            })
    }
}

/// The `CNI_*` environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniEnv {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` parsed (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, ...).
    pub args: BTreeMap<String, String>,
    /// Every variable, for datastore selection.
    pub vars: HashMap<String, String>,
}

impl CniEnv {
    /// From variables (`std::env::vars()` in the binary).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars: HashMap<String, String> = vars.into_iter().collect();
        let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
        let args = get("CNI_ARGS")
            .split(';')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        CniEnv {
            command: get("CNI_COMMAND"),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args,
            vars,
        }
    }
}

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
                let code = if e.is_transient() {
                    codes::TRY_AGAIN
                } else {
                    codes::INVALID_CONFIG
                };
                CniError::new(code, format!("datastore {}: {e}", cfg.describe()))
            })?;
            let topo = crate::resources::DatastoreTopology::new(store.clone());
            Ok(Arc::new(Ipam::new(store, Arc::new(topo))))
        })
    })
}

fn version_check(v: &str) -> Result<String, CniError> {
    let v = if v.is_empty() { "0.3.1" } else { v };
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {v} is not supported: use one of {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

/// The result object for `ips` (CNI spec section 5.1): host-length prefixes
/// as calico-ipam; `version` only before 1.0.0.
pub fn ips_result(version: &str, ips: &[IpAddr]) -> Value {
    let pre_1 = version.starts_with("0.");
    let ips: Vec<Value> = ips
        .iter()
        .map(|ip| {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            let mut o = json!({ "address": format!("{ip}/{len}") });
            if pre_1 {
                o["version"] = json!(if ip.is_ipv4() { "4" } else { "6" });
            }
            o
        })
        .collect();
    json!({ "cniVersion": version, "ips": ips, "routes": [], "dns": {} })
}

/// Run one CNI command. `Ok(Some(json))` is printed, `Ok(None)` prints
/// nothing (DEL, CHECK, STATUS, GC success).
pub async fn run(
    env: &CniEnv,
    stdin: &[u8],
    connect: &Connector,
) -> Result<Option<Value>, CniError> {
    if env.command.is_empty() {
        return Err(CniError::new(
            codes::INVALID_ENV,
            "CNI_COMMAND is not set: run me as a CNI plugin",
        ));
    }
    if env.command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": "1.1.0",
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            codes::DECODE,
            format!("network config on stdin is not valid JSON: {e}"),
        )
    })?;
    let version = version_check(&conf.cni_version)?;
    let with_version = |mut e: CniError| {
        e.cni_version = version.clone();
        e
    };
    run_inner(env, conf, &version, connect)
        .await
        .map_err(with_version)
}

async fn run_inner(
    env: &CniEnv,
    conf: NetConf,
    version: &str,
    connect: &Connector,
) -> Result<Option<Value>, CniError> {
    if conf.name.is_empty() {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            "network config has no \"name\"",
        ));
    }
    let (v4, v6) = conf.families()?;
    if !v4 && !v6 {
        return Err(CniError::new(
            codes::INVALID_CONFIG,
            "ipam: assign_ipv4 and assign_ipv6 are both false: enable at least one",
        ));
    }
    let need_container = matches!(env.command.as_str(), "ADD" | "DEL" | "CHECK");
    if need_container && env.container_id.is_empty() {
        return Err(CniError::new(
            codes::INVALID_ENV,
            format!("CNI_CONTAINERID is not set for {}", env.command),
        ));
    }
    let handle = format!("{}.{}", conf.name, env.container_id);
    let node = conf.node_name()?;
    let ipam = connect(conf.clone(), env.vars.clone()).await?;
    match env.command.as_str() {
        "ADD" => {
            let existing = ipam
                .ips_by_handle(&handle)
                .await
                .map_err(CniError::from_ipam)?;
            if !existing.is_empty() {
                tracing::info!(%handle, ?existing, "ADD repeated: returning held addresses");
                return Ok(Some(ips_result(version, &existing)));
            }
            let mut attrs = Attrs {
                node: Some(node.clone()),
                namespace: env.args.get("K8S_POD_NAMESPACE").cloned(),
                pod: env.args.get("K8S_POD_NAME").cloned(),
                ..Attrs::default()
            };
            attrs
                .extra
                .insert("containerID".into(), env.container_id.clone());
            let args = AutoAssignArgs {
                num_v4: v4 as usize,
                num_v6: v6 as usize,
                handle_id: handle.clone(),
                attrs,
                hostname: node,
                ipv4_pools: conf.ipam.ipv4_pools.clone(),
                ipv6_pools: conf.ipam.ipv6_pools.clone(),
                ..AutoAssignArgs::default()
            };
            let r = ipam.auto_assign(&args).await.map_err(CniError::from_ipam)?;
            let ips: Vec<IpAddr> = r.ipv4.iter().chain(&r.ipv6).map(IpNetwork::ip).collect();
            Ok(Some(ips_result(version, &ips)))
        }
        "DEL" => {
            ipam.release_by_handle(&handle)
                .await
                .map_err(CniError::from_ipam)?;
            Ok(None)
        }
        "CHECK" => {
            let held: HashSet<IpAddr> = ipam
                .ips_by_handle(&handle)
                .await
                .map_err(CniError::from_ipam)?
                .into_iter()
                .collect();
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                CniError::new(
                    codes::INVALID_CONFIG,
                    "CHECK needs prevResult in the config",
                )
            })?;
            for ip in prev["ips"].as_array().into_iter().flatten() {
                let addr = ip["address"].as_str().unwrap_or_default();
                let parsed: Option<IpAddr> = addr
                    .parse::<IpNetwork>()
                    .ok()
                    .map(|n| n.ip())
                    .or_else(|| addr.parse().ok());
                match parsed {
                    Some(a) if held.contains(&a) => {}
                    _ => {
                        return Err(CniError::new(
                            codes::CHECK_FAILED,
                            format!("address {addr} is not held by handle {handle}"),
                        ));
                    }
                }
            }
            Ok(None)
        }
        "STATUS" => {
            let pools = ipam.topology().pools().await.map_err(|e| {
                CniError::new(
                    codes::NOT_AVAILABLE,
                    format!("datastore not reachable: {e}"),
                )
            })?;
            for (want, v6, fam) in [(v4, false, "IPv4"), (v6, true, "IPv6")] {
                if want && !pools.iter().any(|p| p.cidr.is_ipv6() == v6 && !p.disabled) {
                    return Err(CniError::new(
                        codes::NOT_AVAILABLE,
                        format!("no enabled {fam} IP pool: create an IPPool"),
                    ));
                }
            }
            Ok(None)
        }
        "GC" => {
            let valid: HashSet<String> = conf
                .valid_attachments
                .iter()
                .flatten()
                .filter_map(|a| a["containerID"].as_str().map(str::to_string))
                .collect();
            let prefix = format!("{}.", conf.name);
            for h in ipam
                .rw()
                .list_handles()
                .await
                .map_err(CniError::from_ipam)?
            {
                let id = &h.value.handle_id;
                if let Some(cid) = id.strip_prefix(&prefix)
                    && !valid.contains(cid)
                {
                    tracing::info!(handle = %id, "GC: releasing stale attachment");
                    ipam.release_by_handle(id)
                        .await
                        .map_err(CniError::from_ipam)?;
                }
            }
            Ok(None)
        }
        other => Err(CniError::new(
            codes::INVALID_ENV,
            format!("CNI_COMMAND={other} is unknown: use ADD, DEL, CHECK, STATUS, GC or VERSION"),
        )
        .with_details("see the CNI spec, section 2")),
    }
}

#[cfg(test)]
#[path = "cni_plugin_tests.rs"]
mod tests;
