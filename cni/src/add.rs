//! ADD: addresses from the IPAM plugin, the veth pair, the WorkloadEndpoint.
//!
//! ```text
//!  validate ─ open netns ─ CNI_IFNAME free? ─┬─ IPAM ADD (exec, own thread) ──────┬─ configure ─ WEP ─ result
//!                                           └─ MTU, store connect, veth pair ───┘  (addresses,  write
//!                                                                                   routes)
//! ```
//!
//! The IPAM plugin is a separate process doing datastore writes: the
//! longest step. The veth pair needs no address, so it is created (and the
//! datastore connection made) while IPAM runs; only the addresses, routes
//! and the WorkloadEndpoint wait for IPAM's answer. The WorkloadEndpoint is
//! still written last, once the pod is wired: nothing after it can fail, and
//! a node agent that reacts to it finds the interface ready.
//!
//! A failed ADD leaves nothing: each step done is undone in reverse
//! (endpoint never written, host veth deleted, IPAM DEL). Nothing at all is
//! touched when `CNI_IFNAME` already exists in the pod: the container is
//! attached, and an IPAM DEL would release the addresses it is using.

use std::net::IpAddr;
use std::time::Instant;

use crate::config::NetConf;
use crate::dataplane::{self, Netlink, Pair, Wiring};
use crate::endpoint::{self, Endpoint};
use crate::env::{CniEnv, Command};
use crate::error::CniError;
use crate::ipam::IpamPlugin;
use crate::names;
use crate::netns::NetNs;
use crate::plugin::{StoreOpener, ipam_invocation};
use crate::result::{Interface, IpConfig};
use crate::timing::StepTimer;

/// Runs ADD; returns the result in the configuration's `cniVersion`.
pub(crate) async fn add(
    env: &CniEnv,
    conf: &NetConf,
    open_store: &StoreOpener,
    t: &StepTimer,
) -> Result<serde_json::Value, CniError> {
    let ipam = IpamPlugin::find(conf.require_ipam()?, &env.path)?;
    let node = conf.node_name()?;
    let netns_path = env
        .netns
        .as_ref()
        .ok_or_else(|| CniError::env("CNI_NETNS is not set"))?;
    let ns = NetNs::open(netns_path)?;
    let store = open_store(conf)?;
    let host = Netlink::current()?;
    let pod = Netlink::in_netns(&ns)?;
    dataplane::ensure_pod_ifname_free(&pod, &ns, &env.ifname).await?;
    t.step("open");

    // IPAM on a thread of its own (the exec protocol blocks), while the
    // pair is made here.
    let ipam_task = {
        let (ipam, inv, raw) = (
            ipam.clone(),
            ipam_invocation(env, conf, Command::Add),
            conf.raw.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            (ipam.add(&inv, &raw), started.elapsed())
        })
    };
    let host_ifname = names::host_veth_name(&env.workload_id());
    let connect = async {
        let started = Instant::now();
        let r = store.connect().await;
        t.record("(connect)", started.elapsed());
        r
    };
    let make_pair = async {
        let started = Instant::now();
        let mtu = match conf.mtu {
            Some(m) => m,
            None => dataplane::detect_mtu(&host).await?,
        };
        let pair = dataplane::create_pair(&host, &pod, &ns, &host_ifname, &env.ifname, mtu).await;
        t.record("(veth)", started.elapsed());
        Ok::<(u32, Pair), CniError>((mtu, pair?))
    };
    let prepare = async {
        let (connected, made) = tokio::join!(connect, make_pair);
        let made = made?;
        connected?;
        Ok::<(u32, Pair), CniError>(made)
    };
    let (ipam_outcome, prepared) = tokio::join!(ipam_task, prepare);
    t.step("ipam||veth");
    let ipam_result = match ipam_outcome {
        Ok((result, took)) => {
            t.record("(ipam)", took);
            result
        }
        Err(e) => Err(CniError::internal(format!(
            "the thread running IPAM plugin {} failed: {e}",
            ipam.name
        ))),
    };
    let undo = Undo {
        env,
        conf,
        ipam: &ipam,
        host: &host,
        host_ifname: &host_ifname,
    };
    let (ipam_result, (mtu, pair)) = match (ipam_result, prepared) {
        (Ok(r), Ok(p)) => (r, p),
        (Err(e), _) => {
            undo.delete_veth().await;
            return Err(e);
        }
        (Ok(_), Err(e)) => {
            undo.delete_veth().await;
            undo.release();
            return Err(e);
        }
    };
    let addresses: Vec<IpAddr> = ipam_result.ips.iter().map(|c| c.address.ip()).collect();

    let wiring = Wiring {
        host_ifname: host_ifname.clone(),
        pod_ifname: env.ifname.clone(),
        mtu,
        addresses: addresses.clone(),
    };
    if let Err(e) = dataplane::configure(&host, &pod, &ns, &wiring, &pair).await {
        undo.delete_veth().await;
        undo.release();
        return Err(e);
    }
    t.step("configure");

    let mut ep = workload_endpoint(env, &node, &addresses, &host_ifname, &pair.pod_mac);
    ep.netns = netns_path.display().to_string();
    ep.network = conf.name.clone();
    if let Err(e) = store.put(&ep).await {
        undo.delete_veth().await;
        undo.release();
        return Err(e.context(format!(
            "recording workload endpoint {}/{}",
            ep.namespace, ep.name
        )));
    }
    t.step("endpoint");
    tracing::info!(veth = %host_ifname, ips = ?ep.ip_networks, "pod attached");

    // The result: our two interfaces after any from an earlier plugin.
    let mut result = conf.prev_result.clone().unwrap_or_default();
    let base = result.interfaces.len();
    result.interfaces.push(Interface {
        name: host_ifname,
        mac: pair.host_mac,
        sandbox: String::new(),
    });
    result.interfaces.push(Interface {
        name: env.ifname.clone(),
        mac: pair.pod_mac,
        sandbox: netns_path.display().to_string(),
    });
    for net in ep.ip_networks {
        result.ips.push(IpConfig {
            address: net,
            gateway: None,
            interface: Some(base + 1),
        });
    }
    result.routes.extend(ipam_result.routes);
    if result.dns == Default::default() {
        result.dns = ipam_result.dns;
    }
    let out = result.to_json(&conf.cni_version);
    t.step("result");
    Ok(out)
}

/// The record of this attachment.
fn workload_endpoint(
    env: &CniEnv,
    node: &str,
    addresses: &[IpAddr],
    host_ifname: &str,
    pod_mac: &str,
) -> Endpoint {
    let (namespace, orchestrator, workload) = endpoint::identity(env);
    Endpoint {
        name: endpoint::endpoint_name(node, &orchestrator, &workload, &env.ifname),
        node: node.to_string(),
        pod: (orchestrator == "k8s").then(|| workload.clone()),
        workload,
        endpoint: env.ifname.clone(),
        container_id: env.container_id.clone(),
        ip_networks: addresses
            .iter()
            .map(|ip| dataplane::host_network(*ip))
            .collect(),
        host_ifname: host_ifname.to_string(),
        mac: pod_mac.to_string(),
        profiles: if orchestrator == "k8s" {
            vec![format!("kns.{namespace}")]
        } else {
            Vec::new()
        },
        namespace,
        orchestrator,
        netns: String::new(),
        network: String::new(),
    }
}

/// Undoes a failed ADD's steps. Failures here are logged: the ADD's own
/// error is the one reported.
#[derive(Debug)]
struct Undo<'a> {
    env: &'a CniEnv,
    conf: &'a NetConf,
    ipam: &'a IpamPlugin,
    host: &'a Netlink,
    host_ifname: &'a str,
}

impl Undo<'_> {
    /// Deletes the host veth (the pod end and the routes go with it).
    async fn delete_veth(&self) {
        if let Err(e) = self.host.delete_link_by_name(self.host_ifname).await {
            tracing::error!(error = %e, veth = %self.host_ifname, "rollback: deleting veth failed");
        }
    }

    /// IPAM DEL: releases what IPAM ADD assigned.
    fn release(&self) {
        let inv = ipam_invocation(self.env, self.conf, Command::Del);
        if let Err(e) = self.ipam.exec(&inv, &self.conf.raw) {
            tracing::error!(error = %e, "rollback: IPAM DEL failed; the address may leak until GC");
        }
    }
}
