//! The CNI commands: ADD, DEL, CHECK, VERSION, STATUS, GC.
//!
//! ADD is in [`crate::add`]: IPAM ADD alongside the veth pair, then
//! addresses and routes, then the WorkloadEndpoint; a failed ADD leaves no
//! veth, no allocation, no WorkloadEndpoint.
//!
//! DEL removes the three independently and at once (the veth, the IPAM
//! allocation, the WorkloadEndpoint), each "already gone" being success, so
//! a DEL that failed half way is simply run again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::NetConf;
use crate::dataplane::{self, Netlink, Wiring};
use crate::endpoint::{EndpointKey, EndpointStore};
use crate::env::{CniEnv, Command};
use crate::error::{CniError, ErrorCode};
use crate::ipam::{Invocation, IpamPlugin};
use crate::names;
use crate::netns::NetNs;
use crate::result::AddResult;
use crate::timing::StepTimer;
use crate::version;
use cni_proto::Outcome;
use cni_proto::output::requested_version;

/// Opens the endpoint store a configuration names.
pub type StoreOpener = dyn Fn(&NetConf) -> Result<Arc<dyn EndpointStore>, CniError> + Send + Sync;

/// Runs one plugin invocation: `lookup` reads the environment, `stdin` is
/// the network configuration. Never panics on bad input.
pub fn run(
    lookup: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    open_store: &StoreOpener,
) -> Outcome {
    let timer = StepTimer::start();
    let result = run_inner(&lookup, stdin, open_store, &timer);
    timer.finish(
        &lookup,
        lookup("CNI_COMMAND").as_deref().unwrap_or("?"),
        lookup("CNI_CONTAINERID").as_deref().unwrap_or(""),
    );
    if let Err(e) = &result {
        tracing::error!(code = e.code, msg = %e.msg, details = %e.details, "CNI command failed");
    }
    Outcome::new(stdin, &result)
}

fn run_inner(
    lookup: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
    open_store: &StoreOpener,
    t: &StepTimer,
) -> Result<Option<serde_json::Value>, CniError> {
    let env = CniEnv::from_lookup(lookup)?;
    if env.command == Command::Version {
        return Ok(Some(version::version_info(&requested_version(stdin))));
    }
    let conf = NetConf::parse(stdin)?;
    let span = tracing::info_span!("cni", cmd = env.command.as_str(), container = %env.container_id, ifname = %env.ifname);
    let _enter = span.enter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::io(format!("cannot start the async runtime: {e}")))?;
    t.step("parse+runtime");
    let out = rt.block_on(async {
        match env.command {
            Command::Add => crate::add::add(&env, &conf, open_store, t).await.map(Some),
            Command::Del => del(&env, &conf, open_store, t).await.map(|()| None),
            Command::Check => check(&env, &conf, open_store).await.map(|()| None),
            Command::Status => status(&env, &conf, open_store).await.map(|()| None),
            Command::Gc => gc(&env, &conf, open_store).await.map(|()| None),
            Command::Version => Ok(Some(version::version_info(&conf.cni_version))),
        }
    });
    // Closing the store and the runtime is part of the call's cost.
    drop(rt);
    t.step("teardown");
    out
}

/// The IPAM plugin's variables: ours, plus the datastore settings.
pub(crate) fn ipam_invocation(env: &CniEnv, conf: &NetConf, command: Command) -> Invocation {
    let mut inv = Invocation::from_env(env, command);
    inv.extra_env = crate::store::datastore_vars(conf);
    inv
}

async fn del(
    env: &CniEnv,
    conf: &NetConf,
    open_store: &StoreOpener,
    t: &StepTimer,
) -> Result<(), CniError> {
    let node = conf.node_name()?;
    let store = open_store(conf)?;
    // The namespace may be gone (DEL after the sandbox died): the host end
    // is then removed by name.
    let ns = match &env.netns {
        Some(p) if p.exists() => match NetNs::open(p) {
            Ok(ns) => Some(ns),
            Err(e) if e.code == ErrorCode::UnknownContainer as u32 => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    let host_ifname = names::host_veth_name(&env.workload_id());
    let ipam = match &conf.ipam_type {
        Some(ipam_type) => Some(IpamPlugin::find(ipam_type, &env.path)?),
        None => None,
    };
    t.step("open");

    // The three removals do not depend on each other: IPAM DEL runs on a
    // thread of its own (the exec protocol blocks) while the veth goes (the
    // kernel takes a while to delete one) and the endpoint is deleted.
    let ipam_task = ipam.map(|ipam| {
        let (inv, raw) = (ipam_invocation(env, conf, Command::Del), conf.raw.clone());
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            (ipam.exec(&inv, &raw).map(|_| ()), started.elapsed())
        })
    });
    let release = async {
        match ipam_task {
            None => Ok(()),
            Some(task) => match task.await {
                Ok((result, took)) => {
                    t.record("(ipam)", took);
                    result
                }
                Err(e) => Err(CniError::internal(format!(
                    "the thread running the IPAM plugin failed: {e}"
                ))),
            },
        }
    };
    let unwire = async {
        let started = Instant::now();
        let r = dataplane::unwire_detached(ns, host_ifname.clone(), env.ifname.clone()).await;
        t.record("(unwire)", started.elapsed());
        r
    };
    let key = EndpointKey::for_invocation(env, &node);
    let forget = async {
        let started = Instant::now();
        let r = store.delete(&key, Some(&env.container_id)).await;
        t.record("(endpoint)", started.elapsed());
        r
    };
    let (unwired, released, forgotten) = tokio::join!(unwire, release, forget);
    t.step("unwire||ipam||endpoint");
    unwired?;
    released?;
    forgotten?;
    tracing::info!(veth = %host_ifname, "pod detached");
    Ok(())
}

async fn check(env: &CniEnv, conf: &NetConf, open_store: &StoreOpener) -> Result<(), CniError> {
    version::require_command(Command::Check, &conf.cni_version)?;
    let prev = cni_proto::conf::require_prev_result(conf.prev_result.as_ref())?;
    let netns_path = env
        .netns
        .as_ref()
        .ok_or_else(|| CniError::env("CNI_NETNS is not set"))?;
    let sandbox = netns_path.display().to_string();
    let index = prev
        .interfaces
        .iter()
        .position(|i| i.name == env.ifname && i.sandbox == sandbox)
        .ok_or_else(|| {
            CniError::internal(format!(
                "CHECK: prevResult has no interface {} in sandbox {sandbox}",
                env.ifname
            ))
        })?;
    let addresses: Vec<IpAddr> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == index))
        .map(|ip| ip.address.ip())
        .collect();
    if addresses.is_empty() {
        return Err(CniError::internal(format!(
            "CHECK: prevResult has no address for interface {}",
            env.ifname
        )));
    }
    let ns = NetNs::open(netns_path)?;
    let host = Netlink::current()?;
    let pod = Netlink::in_netns(&ns)?;
    let wiring = Wiring {
        host_ifname: names::host_veth_name(&env.workload_id()),
        pod_ifname: env.ifname.clone(),
        mtu: 0,
        addresses,
    };
    dataplane::check(&host, &pod, &ns, &wiring, &prev.interfaces[index].mac).await?;

    let ipam = IpamPlugin::find(conf.require_ipam()?, &env.path)?;
    ipam.exec(&ipam_invocation(env, conf, Command::Check), &conf.raw)?;

    let node = conf.node_name()?;
    let store = open_store(conf)?;
    let key = EndpointKey::for_invocation(env, &node);
    if conf.datastore.datastore_type.as_deref() != Some("none") {
        match store.get(&key).await? {
            Some(ep) if ep.container_id == env.container_id => {}
            Some(ep) => {
                return Err(CniError::internal(format!(
                    "CHECK: workload endpoint {}/{} belongs to container {}, not {}",
                    key.namespace, key.name, ep.container_id, env.container_id
                )));
            }
            None => {
                return Err(CniError::internal(format!(
                    "CHECK: workload endpoint {}/{} is missing from the datastore",
                    key.namespace, key.name
                )));
            }
        }
    }
    Ok(())
}

async fn status(env: &CniEnv, conf: &NetConf, open_store: &StoreOpener) -> Result<(), CniError> {
    version::require_command(Command::Status, &conf.cni_version)?;
    let unavailable = |e: CniError| {
        CniError::new(
            ErrorCode::PluginNotAvailable,
            format!("manx is not ready: {}", e.msg),
        )
        .with_details(e.details)
    };
    let store = open_store(conf).map_err(unavailable)?;
    let manx_ipam = conf.ipam_type.as_deref() == Some("manx-ipam");
    store.status(manx_ipam).await?;
    if let Some(ipam_type) = &conf.ipam_type {
        let ipam = IpamPlugin::find(ipam_type, &env.path).map_err(unavailable)?;
        let inv = ipam_invocation(env, conf, Command::Status);
        if ipam.speaks_1_1(&inv) {
            ipam.exec(&inv, &conf.raw)?;
        }
    }
    Ok(())
}

/// GC (spec 1.1): removes this network's attachments on this node that the
/// runtime's `cni.dev/valid-attachments` does not list: veth, addresses,
/// endpoint. Without the list nothing is removed (code 7): the runtime must
/// send it, and guessing "none are valid" would tear down every pod.
/// Endpoints of other networks (or recorded before the network name was)
/// and of other nodes are never considered. A cluster-wide IPAM
/// (`manx-ipam`) is not handed the GC, since its handles are every node's:
/// each removed attachment gets an IPAM DEL instead; a node-local IPAM
/// plugin that speaks 1.1 (`host-local`) gets the GC with the same stdin.
async fn gc(env: &CniEnv, conf: &NetConf, open_store: &StoreOpener) -> Result<(), CniError> {
    version::require_command(Command::Gc, &conf.cni_version)?;
    let Some(valid) = conf.valid_attachments.clone() else {
        return Err(CniError::config(format!(
            "GC of network {:?}: the configuration has no \"cni.dev/valid-attachments\"; \
             the runtime must list the live attachments (CNI spec 1.1, an empty list if none): nothing was removed",
            conf.name
        )));
    };
    let node = conf.node_name()?;
    let store = open_store(conf)?;
    let host = Netlink::current()?;
    let ipam = match &conf.ipam_type {
        Some(t) => Some(IpamPlugin::find(t, &env.path)?),
        None => None,
    };
    let base_inv = ipam_invocation(env, conf, Command::Gc);
    let cluster_wide_ipam = conf.ipam_type.as_deref() == Some("manx-ipam");
    let ipam_does_gc = !cluster_wide_ipam && ipam.as_ref().is_some_and(|p| p.speaks_1_1(&base_inv));
    let mut first_error = None;
    for ep in store.list_on_node(&node).await? {
        if ep.network != conf.name {
            continue;
        }
        let live = valid.iter().any(|a| {
            a.container_id == ep.container_id && (a.ifname.is_empty() || a.ifname == ep.endpoint)
        });
        if live {
            continue;
        }
        tracing::info!(endpoint = %ep.name, container = %ep.container_id, addresses = ?ep.ip_networks, "GC: removing stale attachment");
        if let Err(e) = host.delete_link_by_name(&ep.host_ifname).await {
            first_error.get_or_insert(e);
            continue;
        }
        if let (Some(ipam), false) = (&ipam, ipam_does_gc) {
            let mut inv = base_inv.clone();
            inv.command = Command::Del;
            inv.container_id = ep.container_id.clone();
            inv.ifname = ep.endpoint.clone();
            inv.netns = String::new();
            inv.args = match &ep.pod {
                Some(pod) => format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={pod}",
                    ep.namespace
                ),
                None => String::new(),
            };
            if let Err(e) = ipam.exec(&inv, &conf.raw) {
                first_error.get_or_insert(e);
                continue;
            }
        }
        let key = EndpointKey {
            namespace: ep.namespace.clone(),
            name: ep.name.clone(),
        };
        if let Err(e) = store.delete(&key, Some(&ep.container_id)).await {
            first_error.get_or_insert(e);
        }
    }
    if let (Some(ipam), true) = (&ipam, ipam_does_gc) {
        ipam.exec(&base_inv, &conf.raw)?;
    }
    match first_error {
        Some(e) => Err(e.context("GC")),
        None => Ok(()),
    }
}

/// Reads a result printed by this plugin (for tests and tools).
pub fn parse_result(stdout: &[u8]) -> Result<AddResult, CniError> {
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .map_err(|e| CniError::decode(format!("result is not JSON: {e}")))?;
    AddResult::from_json(&v)
}
