//! Pods of a lab: created and deleted through the real `manx` CNI plugin, pinged
//! pairwise, and timed from ADD until their route is on every other node
//! (seen by a route monitor in each node, [`super::route_monitor`]). Every
//! CNI call of the lab appends its step timings to [`cni_timing_file`].

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ipnetwork::IpNetwork;

use super::route_monitor::RouteMonitors;
use super::runtime::{self, Runtime};
use super::{ETCD_ENDPOINT, LabNode, LabPod, LabState, StoreKind, ns_name, progress};
use crate::netns::Netns;

/// The CNI network config the lab's pods are created with.
pub fn cni_config(state: &LabState, node: &LabNode) -> serde_json::Value {
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "manx",
        "nodename": node.name,
        "log_level": "info",
        "ipam": {
            "type": "manx-ipam",
            "assign_ipv4": state.spec.ip_family.v4().to_string(),
            "assign_ipv6": state.spec.ip_family.v6().to_string(),
        },
    });
    match state.spec.datastore {
        StoreKind::Embedded => {
            conf["datastore_type"] = "embedded".into();
            conf["manx_db"] = state.dir.join("manx.db").display().to_string().into();
        }
        StoreKind::Etcd => {
            conf["datastore_type"] = "etcdv3".into();
            conf["etcd_endpoints"] = ETCD_ENDPOINT.into();
        }
    }
    conf
}

/// Run the CNI plugin for `cmd` (ADD/DEL) on `pod`, returning its stdout.
pub fn cni(state: &LabState, node: &LabNode, command: &str, pod: &str) -> Result<String> {
    let conf = cni_config(state, node);
    let ns = Netns::adopt(&node.netns);
    let mut child = ns
        .command(state.bin("manx"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod)
        .env("CNI_NETNS", format!("/run/netns/{pod}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &state.spec.bin_dir)
        .env("MANX_IPAM_LOCK_DIR", &node.run_dir)
        .env("MANX_CNI_TIMING", cni_timing_file(state))
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the manx CNI plugin")?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "CNI {command} of {pod} on {} failed: {} {}",
            node.name,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

/// Create `pods_per_node` pods on every node through the real CNI plugin.
pub fn create_pods(state: &mut LabState) -> Result<()> {
    let nodes = state.nodes.clone();
    for node in &nodes {
        for p in 1..=state.spec.pods_per_node {
            add_pod(state, node, p)?;
        }
    }
    Ok(())
}

/// Create pod number `p` on `node`: a named namespace wired by the plugin
/// (runtime cni) or a container of the lab's runtime.
pub fn add_pod(state: &mut LabState, node: &LabNode, p: usize) -> Result<LabPod> {
    let id = state.spec.id.clone();
    if state.spec.runtime != Runtime::Cni {
        let name = ns_name(&id, &format!("{}-p{p}", node.name));
        // The node as saved (with its runtime), not a caller's older copy.
        let node = state
            .nodes
            .iter()
            .find(|n| n.name == node.name)
            .cloned()
            .with_context(|| format!("no node {} in lab {id}", node.name))?;
        let c = runtime::create(state, &node, &name, false)?;
        progress(format!(
            "container {name} ({:?}) on {}: {}",
            state.spec.runtime, node.name, c.ip
        ));
        let pod = LabPod {
            name: name.clone(),
            node: node.name.clone(),
            netns: name,
            ips: vec![c.ip.clone()],
            ip: c.ip,
            container: true,
            pid: Some(c.pid),
        };
        state.pods.push(pod.clone());
        state.save()?;
        return Ok(pod);
    }
    let pod_ns = Netns::create(&ns_name(&id, &format!("{}-p{p}", node.name)))?.persist();
    state.namespaces.push(pod_ns.clone());
    state.save()?;
    let result = cni(state, node, "ADD", &pod_ns)?;
    record_pod(state, node, &pod_ns, &result)
}

/// Record the pod `pod_ns` on `node` from its CNI ADD `result`.
fn record_pod(state: &mut LabState, node: &LabNode, pod_ns: &str, result: &str) -> Result<LabPod> {
    let v: serde_json::Value =
        serde_json::from_str(result).with_context(|| format!("CNI result {result:?}"))?;
    let ips: Vec<String> = v["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .collect();
    let ip = ips
        .first()
        .cloned()
        .with_context(|| format!("CNI result without an address: {result}"))?;
    let want = usize::from(state.spec.ip_family.v4()) + usize::from(state.spec.ip_family.v6());
    if ips.len() != want {
        bail!(
            "CNI result for {pod_ns} has {} addresses, the lab's {} family wants {want}: {result}",
            ips.len(),
            state.spec.ip_family
        );
    }
    progress(format!("pod {pod_ns} on {}: {}", node.name, ips.join(" ")));
    let pod = LabPod {
        name: pod_ns.to_string(),
        node: node.name.clone(),
        netns: pod_ns.to_string(),
        ip,
        ips,
        container: false,
        pid: None,
    };
    state.pods.push(pod.clone());
    state.save()?;
    Ok(pod)
}

/// Delete a pod through the CNI plugin (DEL), then its namespace.
pub fn del_pod(state: &mut LabState, pod: &str) -> Result<()> {
    let Some(idx) = state.pods.iter().position(|p| p.name == pod) else {
        bail!("no pod {pod} in lab {}", state.spec.id);
    };
    let p = state.pods.remove(idx);
    let node = state
        .nodes
        .iter()
        .find(|n| n.name == p.node)
        .cloned()
        .with_context(|| format!("pod {pod} on unknown node {}", p.node))?;
    if p.container {
        runtime::delete(state, &node, &p.name, false)?;
        state.save()?;
        return Ok(());
    }
    cni(state, &node, "DEL", &p.netns)?;
    drop(Netns::adopt(&p.netns));
    let _ = Command::new("ip")
        .args(["netns", "del", &p.netns])
        .stderr(Stdio::null())
        .status();
    state.namespaces.retain(|n| n != &p.netns);
    state.save()?;
    Ok(())
}

/// The file the lab's CNI plugin calls append their step timings to
/// (`MANX_CNI_TIMING`, one JSON line per invocation).
pub fn cni_timing_file(state: &LabState) -> std::path::PathBuf {
    state.dir.join("cni-timing.jsonl")
}

/// What [`convergence_setup`] writes: pools whose blockSize gives every pod
/// a block of its own (per family), the default pools disabled, so every
/// trial's ADD is "the first pod on a node claims a new block".
pub fn convergence_setup(state: &LabState) -> Result<()> {
    let family = state.spec.ip_family;
    let mut pools = String::new();
    let mut defaults = Vec::new();
    if family.v4() {
        pools.push_str("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: conv\nspec:\n  cidr: 10.70.0.0/16\n  blockSize: 32\n---\n");
        defaults.push("default-ipv4-ippool");
    }
    if family.v6() {
        pools.push_str("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: conv6\nspec:\n  cidr: fd70::/112\n  blockSize: 128\n---\n");
        defaults.push("default-ipv6-ippool");
    }
    let manifest = state.dir.join("conv-pool.yaml");
    std::fs::write(&manifest, pools)?;
    let first = &state.nodes[0];
    state.manxctl(first, &["apply", "-f", &manifest.display().to_string()])?;
    for pool in defaults {
        state.manxctl(
            first,
            &[
                "patch",
                "ippool",
                pool,
                "-p",
                r#"{"spec":{"disabled":true}}"#,
            ],
        )?;
    }
    Ok(())
}

/// One trial of [`convergence_trial`].
#[derive(Debug, Clone)]
pub struct Trial {
    /// The CNI ADD (the plugin's process, spawn to exit).
    pub add: Duration,
    /// Per pod address (one per family of the lab): when each other node's
    /// kernel got its route, from the start of the ADD, by node index.
    pub arrivals: Vec<(IpAddr, Vec<(usize, Duration)>)>,
    /// The ADD's steps from the plugin's timing record: `exec` (spawn to
    /// the plugin's first instruction), its own steps, `exit` (the rest).
    /// Empty if no record was found.
    pub steps: Vec<(String, Duration)>,
}

impl Trial {
    /// Per address: when the last other node had the route.
    pub fn convergence(&self) -> Vec<(IpAddr, Duration)> {
        self.arrivals
            .iter()
            .map(|(ip, a)| (*ip, a.iter().map(|(_, d)| *d).max().unwrap_or_default()))
            .collect()
    }
}

/// One convergence trial: CNI ADD of a pod on node `node` (in the pools of
/// [`convergence_setup`], so it claims a new block per family) until every
/// other node's kernel has each block's route, as seen by `monitors` (one
/// rtnetlink route monitor per node, subscribed before the ADD starts).
/// The pod's namespace is made before the clock starts: the ADD is the
/// plugin's run alone.
pub fn convergence_trial(
    state: &mut LabState,
    monitors: &RouteMonitors,
    node: usize,
    p: usize,
) -> Result<Trial> {
    if state.spec.runtime != Runtime::Cni {
        bail!("convergence trials run the CNI plugin directly (runtime cni)");
    }
    let n = state.nodes[node].clone();
    let pod_ns = Netns::create(&ns_name(&state.spec.id, &format!("{}-p{p}", n.name)))?.persist();
    state.namespaces.push(pod_ns.clone());
    state.save()?;
    let spawned = unix_ns();
    let t0 = Instant::now();
    let result = cni(state, &n, "ADD", &pod_ns)?;
    let add = t0.elapsed();
    let exited = unix_ns();
    let pod = record_pod(state, &n, &pod_ns, &result)?;
    let others: Vec<usize> = (0..state.nodes.len()).filter(|&i| i != node).collect();
    let deadline = t0 + Duration::from_secs(10);
    let mut arrivals = Vec::new();
    for ip in pod.addrs() {
        let seen = monitors.wait_for(IpNetwork::from(ip), &others, t0, deadline)?;
        arrivals.push((ip, seen));
    }
    let steps = cni_steps(state, &pod_ns, "ADD", spawned, exited);
    Ok(Trial {
        add,
        arrivals,
        steps,
    })
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The steps of `container`'s `cmd` record in the lab's timing file, with
/// `exec` and `exit` from the wall clock around the plugin's process.
fn cni_steps(
    state: &LabState,
    container: &str,
    cmd: &str,
    spawned: u128,
    exited: u128,
) -> Vec<(String, Duration)> {
    let text = std::fs::read_to_string(cni_timing_file(state)).unwrap_or_default();
    let Some(v) = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["cmd"] == cmd && v["container"] == container)
    else {
        return Vec::new();
    };
    let start = v["start_unix_ns"].as_u64().unwrap_or(0) as u128;
    let total = Duration::from_micros(v["total_us"].as_u64().unwrap_or(0));
    let ns = |d: u128| Duration::from_nanos(d.min(u64::MAX as u128) as u64);
    let mut steps = vec![("exec".to_string(), ns(start.saturating_sub(spawned)))];
    for s in v["steps"].as_array().into_iter().flatten() {
        let name = s[0].as_str().unwrap_or("?").to_string();
        steps.push((name, Duration::from_micros(s[1].as_u64().unwrap_or(0))));
    }
    let end = start + total.as_nanos();
    steps.push(("exit".to_string(), ns(exited.saturating_sub(end))));
    steps
}

/// The p-th percentile (0..=100) of `v` (sorted in place).
pub fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}
