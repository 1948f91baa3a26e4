//! Pods of a lab: created and deleted through the real `manx` CNI plugin, pinged
//! pairwise, and timed from ADD until their route is on every other node.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

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
    let v: serde_json::Value =
        serde_json::from_str(&result).with_context(|| format!("CNI result {result:?}"))?;
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
        name: pod_ns.clone(),
        node: node.name.clone(),
        netns: pod_ns,
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

/// One convergence trial: CNI ADD of a pod on `node` (in pools whose
/// blockSize makes every pod claim a new block) until each of its blocks'
/// routes is in every other node's table. Returns the ADD duration and, per
/// pod address (one per family of the lab), the time from the start of the
/// ADD until the last other node had the route. The families are polled
/// together (in alternating order), so one does not wait behind the other.
pub fn convergence_trial(
    state: &mut LabState,
    node: usize,
    p: usize,
) -> Result<(Duration, Vec<(std::net::IpAddr, Duration)>)> {
    let n = state.nodes[node].clone();
    let t0 = std::time::Instant::now();
    let pod = add_pod(state, &n, p)?;
    let add = t0.elapsed();
    let others: Vec<Netns> = state
        .nodes
        .iter()
        .filter(|o| o.name != n.name)
        .map(|o| Netns::adopt(&o.netns))
        .collect();
    let addrs = pod.addrs();
    // Per address: the nodes that still lack its route, and when the last got it.
    let mut pending: Vec<Vec<&Netns>> = addrs.iter().map(|_| others.iter().collect()).collect();
    let mut done: Vec<Option<Duration>> = vec![None; addrs.len()];
    let deadline = t0 + Duration::from_secs(10);
    let mut reversed = false;
    while done.iter().any(Option::is_none) {
        // Each round checks the families in the other order, so neither
        // is always seen one `ip` run later than the other.
        let mut order: Vec<usize> = (0..addrs.len()).collect();
        if reversed {
            order.reverse();
        }
        reversed = !reversed;
        for i in order {
            let ip = &addrs[i];
            if done[i].is_some() {
                continue;
            }
            // `ip route show <prefix>` lists IPv4 routes only without -6.
            let (family, len) = if ip.is_ipv6() {
                ("-6", 128)
            } else {
                ("-4", 32)
            };
            let prefix = format!("{ip}/{len}");
            let mut still = Vec::new();
            for ns in pending[i].drain(..) {
                let out = ns.ip(&[family, "-o", "route", "show", &prefix])?;
                if !out.contains("proto 77") {
                    still.push(ns);
                }
            }
            if still.is_empty() {
                done[i] = Some(t0.elapsed());
            }
            pending[i] = still;
        }
        if std::time::Instant::now() >= deadline {
            let missing: Vec<String> = addrs
                .iter()
                .zip(&pending)
                .filter(|(_, p)| !p.is_empty())
                .map(|(ip, p)| {
                    let names: Vec<&str> = p.iter().map(|ns| ns.name()).collect();
                    format!("{ip} in {}", names.join(", "))
                })
                .collect();
            bail!(
                "timed out after 10 s waiting for the routes to {}",
                missing.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((
        add,
        addrs.into_iter().zip(done.into_iter().flatten()).collect(),
    ))
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
