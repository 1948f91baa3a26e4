//! A whole Manx cluster on one machine: nodes are network namespaces on a
//! shared L2 bridge (or two subnets joined by a router namespace), each
//! running `manx-node`; pods are namespaces wired by the real `manx` CNI
//! plugin, or (`--runtime containerd|podman`) real containers of that
//! runtime, run with manx-node in a private mount namespace per node
//! ([`runtime`]).
//!
//! ```text
//!            mxlab-<id>-hub (bridges br0 [, br1])
//!        ┌──────────┬──────────┬──────────┐          crosssubnet only:
//!   veth │     veth │     veth │          │      ┌── mxlab-<id>-rtr ──┐
//!   mxlab-<id>-n1   n2         n3   ...   │      │ eth0 on br0        │
//!   eth0 172.30.0.11 ...                  │      │ eth1 on br1        │
//!   manx-node, caliXXX ──► pod namespaces └──────┘ (forwarding)       │
//! ```
//!
//! Everything the lab makes is recorded in a state file under
//! `/run/manx-lab/<id>/`, so `manx-lab down` removes exactly that even from
//! another process, and a crashed `up` can still be cleaned.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::netns::{Netns, kill_all_in, run, wait_for};

pub mod encap_bench;
pub mod failover_bench;
pub mod image;
mod ping;
mod pods;
pub mod route_monitor;
pub mod route_watch;
mod routes;
pub mod runtime;

pub use ping::{PingMatrix, PingPlan, ping, ping_all, ping_pairs, probe};
pub use pods::{
    Trial, add_pod, cni, cni_config, cni_timing_file, convergence_setup, convergence_trial,
    create_pods, del_pod, percentile,
};
pub use route_monitor::RouteMonitors;
pub use routes::{NodeRoutes, parse_routes, routes};
pub use runtime::{NodeRuntime, Runtime};

/// How pods on different nodes reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `ipipMode: Never, vxlanMode: Never`: routes via the peer's address.
    Direct,
    /// `vxlanMode: Always`.
    Vxlan,
    /// `ipipMode: Always` (needs a kernel with ipip).
    Ipip,
    /// `vxlanMode: CrossSubnet` across two subnets joined by a router.
    Crosssubnet,
    /// `ipipMode: CrossSubnet` across two subnets (needs ipip).
    #[serde(rename = "ipip-crosssubnet")]
    IpipCrosssubnet,
    /// `udpMode: Always` (Manx extension: Flannel's UDP backend over `udp.manx`).
    Udp,
    /// Direct pools under FelixConfiguration `wireguardEnabled: true` (`wireguard.manx`;
    /// needs a kernel with WireGuard, else the pools stay direct and unencrypted).
    Wireguard,
}

impl Mode {
    /// Two subnets joined by a router namespace.
    pub fn two_subnets(self) -> bool {
        matches!(self, Mode::Crosssubnet | Mode::IpipCrosssubnet)
    }
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Mode> {
        Ok(match s {
            "direct" => Mode::Direct,
            "vxlan" => Mode::Vxlan,
            "ipip" => Mode::Ipip,
            "crosssubnet" => Mode::Crosssubnet,
            "ipip-crosssubnet" => Mode::IpipCrosssubnet,
            "udp" => Mode::Udp,
            "wireguard" => Mode::Wireguard,
            other => bail!(
                "unknown mode {other:?}: use direct, vxlan, ipip, crosssubnet, ipip-crosssubnet, \
                 udp or wireguard"
            ),
        })
    }
}

/// Which address families the nodes route and the pods get (`--ip-family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    /// IPv4 pods, IPv4 BGP sessions (`IP6=none`).
    #[default]
    Ipv4,
    /// IPv6 pods, IPv6 BGP sessions between the nodes' IPv6 addresses
    /// (`IP=none`, no IPv4 pool).
    Ipv6,
    /// Both: every pod has an IPv4 and an IPv6 address, and every node a
    /// session per family with each peer, as calico-node runs dual stack.
    Dual,
}

impl IpFamily {
    pub fn v4(self) -> bool {
        self != IpFamily::Ipv6
    }
    pub fn v6(self) -> bool {
        self != IpFamily::Ipv4
    }
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpFamily::Ipv4 => "ipv4",
            IpFamily::Ipv6 => "ipv6",
            IpFamily::Dual => "dual",
        })
    }
}

impl std::str::FromStr for IpFamily {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<IpFamily> {
        Ok(match s {
            "ipv4" => IpFamily::Ipv4,
            "ipv6" => IpFamily::Ipv6,
            "dual" => IpFamily::Dual,
            other => bail!("unknown IP family {other:?}: use ipv4, ipv6 or dual"),
        })
    }
}

/// A node's IPv6 address on the lab's links, the twin of
/// `172.30.<subnet>.<host>`: `fd30:0:0:<subnet>::<host>` with the host
/// number written in hex digits as in decimal (node1, `.11`, is `fd30::11`),
/// /64 per subnet. fd30::/48 is a unique local range the host does not use.
pub fn lab_ip6(subnet: u8, host: u8) -> Ipv6Addr {
    let h = u16::from_str_radix(&host.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::new(0xfd30, 0, 0, u16::from(subnet), 0, 0, 0, h)
}

/// Which datastore the nodes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Embedded,
    Etcd,
}

impl std::str::FromStr for StoreKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<StoreKind> {
        Ok(match s {
            "embedded" => StoreKind::Embedded,
            "etcd" => StoreKind::Etcd,
            other => bail!("unknown datastore {other:?}: use embedded or etcd"),
        })
    }
}

/// What to build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabSpec {
    /// Short id that prefixes every namespace (`mxlab-<id>-…`); lets tests
    /// run labs side by side.
    pub id: String,
    pub nodes: usize,
    pub mode: Mode,
    pub route_reflectors: usize,
    pub datastore: StoreKind,
    pub pods_per_node: usize,
    /// The pod pool.
    pub pool_cidr: String,
    /// Address families of the nodes' sessions and the pods.
    #[serde(default)]
    pub ip_family: IpFamily,
    /// The IPv6 pod pool (with `ip_family` ipv6 or dual).
    #[serde(default = "default_pool_cidr6")]
    pub pool_cidr6: String,
    /// Where manx-node, manx, manx-ipam and manxctl live.
    pub bin_dir: PathBuf,
    /// Give every node a second NIC `eth1` on 172.30.5.0/24 (bridge `br5`).
    #[serde(default)]
    pub second_nic: bool,
    /// manx-node's `IP_AUTODETECTION_METHOD`.
    #[serde(default = "default_autodetect")]
    pub autodetect: String,
    /// What makes the pods: the plugin by hand, or containerd / podman.
    #[serde(default)]
    pub runtime: Runtime,
    /// manx-node's `MANX_STALE_WORKLOAD_GRACE_SECS` (its default if unset).
    #[serde(default)]
    pub stale_grace_secs: Option<u64>,
    /// manx-node's `MANX_STALE_WORKLOAD_SCAN_SECS` (its default if unset).
    #[serde(default)]
    pub stale_scan_secs: Option<f64>,
    /// The host numbers of the nodes' addresses (`172.30.<subnet>.<host>`),
    /// node1 first; a node past the end of the list (all of them when it is
    /// empty) gets 10 + its number (node1 `.11`). Lets a test put nodes
    /// where text and numeric order disagree (`.2`, `.4`, `.20`).
    #[serde(default)]
    pub hosts: Vec<u8>,
}

fn default_autodetect() -> String {
    "interface=eth0".into()
}

fn default_pool_cidr6() -> String {
    "fd65::/48".into()
}

impl LabSpec {
    pub fn new(id: &str, nodes: usize, mode: Mode) -> LabSpec {
        LabSpec {
            id: id.to_string(),
            nodes,
            mode,
            route_reflectors: 0,
            datastore: StoreKind::Embedded,
            pods_per_node: 1,
            pool_cidr: "10.65.0.0/16".into(),
            ip_family: IpFamily::Ipv4,
            pool_cidr6: default_pool_cidr6(),
            bin_dir: default_bin_dir(),
            second_nic: false,
            autodetect: default_autodetect(),
            runtime: Runtime::Cni,
            stale_grace_secs: None,
            stale_scan_secs: None,
            hosts: Vec::new(),
        }
    }

    /// The host number of node `i` (1-based): see [`LabSpec::hosts`].
    pub fn host(&self, i: usize) -> u8 {
        self.hosts.get(i - 1).copied().unwrap_or(10 + i as u8)
    }
}

/// The directory holding the binary that is running (target/<profile>/),
/// where cargo also put the other Manx binaries.
pub fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .map(|d| {
            if d.ends_with("deps") {
                d.parent().unwrap().to_path_buf()
            } else {
                d
            }
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

/// One node of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabNode {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    /// Its IPv6 address on the link (/64), with `ip_family` ipv6 or dual.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    pub subnet: u8,
    pub route_reflector: bool,
    pub pid: Option<u32>,
    pub run_dir: PathBuf,
    /// The node's container runtime (`--runtime containerd|podman`).
    #[serde(default)]
    pub runtime: Option<NodeRuntime>,
}

impl LabPod {
    /// Its addresses (`ips`, or `ip` in a state file from before `ips`).
    pub fn addrs(&self) -> Vec<IpAddr> {
        let list = if self.ips.is_empty() {
            std::slice::from_ref(&self.ip)
        } else {
            &self.ips[..]
        };
        list.iter().filter_map(|a| a.parse().ok()).collect()
    }
}

/// One pod of the lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabPod {
    pub name: String,
    pub node: String,
    /// The pod's named namespace (runtime cni) or its container's name.
    pub netns: String,
    /// Its first address (IPv4 unless the lab is IPv6-only).
    pub ip: String,
    /// All its addresses, one per family.
    #[serde(default)]
    pub ips: Vec<String>,
    /// A container (runtime containerd/podman) and its init pid.
    #[serde(default)]
    pub container: bool,
    #[serde(default)]
    pub pid: Option<u32>,
}

/// Everything a lab made: written to `state.json` as it goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub spec: LabSpec,
    pub dir: PathBuf,
    pub namespaces: Vec<String>,
    pub nodes: Vec<LabNode>,
    pub pods: Vec<LabPod>,
    pub etcd_pid: Option<u32>,
}

/// The root of every lab's files.
pub const LAB_ROOT: &str = "/run/manx-lab";

impl LabState {
    pub fn dir_for(id: &str) -> PathBuf {
        Path::new(LAB_ROOT).join(id)
    }

    pub fn load(id: &str) -> Result<LabState> {
        let path = Self::dir_for(id).join("state.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("no lab {id:?} ({path:?} missing): run `manx-lab up` first")
        })?;
        serde_json::from_str(&text).with_context(|| format!("reading {path:?}"))
    }

    fn save(&self) -> Result<()> {
        let path = self.dir.join("state.json");
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {path:?}"))
    }

    fn ns(&self, name: &str) -> Netns {
        Netns::adopt(name)
    }

    /// The datastore environment every Manx process of the lab gets.
    pub fn store_env(&self) -> Vec<(String, String)> {
        match self.spec.datastore {
            StoreKind::Embedded => vec![
                ("DATASTORE_TYPE".into(), "embedded".into()),
                (
                    "MANX_DB".into(),
                    self.dir.join("manx.db").display().to_string(),
                ),
            ],
            StoreKind::Etcd => vec![
                ("DATASTORE_TYPE".into(), "etcdv3".into()),
                ("ETCD_ENDPOINTS".into(), ETCD_ENDPOINT.into()),
            ],
        }
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.spec.bin_dir.join(name)
    }

    /// `manxctl <args>` against the lab's datastore, run in node `node`'s
    /// namespace (so `node status` reaches that node's status socket).
    pub fn manxctl(&self, node: &LabNode, args: &[&str]) -> Result<String> {
        let mut cmd = self.ns(&node.netns).command(self.bin("manxctl"));
        cmd.args(args).envs(self.store_env());
        cmd.env("MANX_RUN_DIR", &node.run_dir);
        let out = run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Check what the lab needs from the host, saying what is missing and how
/// to get it.
pub fn preflight(spec: &LabSpec) -> Result<()> {
    let mut missing = Vec::new();
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if String::from_utf8_lossy(&uid).trim() != "0" {
        missing.push("root: network namespaces need it (run with sudo)".to_string());
    }
    for tool in ["ip", "ping", "sysctl"] {
        if which(tool).is_none() {
            missing.push(format!(
                "`{tool}`: apt-get install -y iproute2 iputils-ping procps"
            ));
        }
    }
    for bin in ["manx-node", "manx", "manx-ipam", "manxctl"] {
        if !spec.bin_dir.join(bin).exists() {
            missing.push(format!(
                "{bin} in {}: build it with `cargo build --release --workspace`",
                spec.bin_dir.display()
            ));
        }
    }
    missing.extend(spec.runtime.missing());
    if spec.ip_family.v6() && matches!(spec.mode, Mode::Ipip | Mode::IpipCrosssubnet) {
        bail!(
            "--ip-family {} with --mode {:?}: IPv6 pools have no IPIP; use --mode direct, vxlan or crosssubnet",
            spec.ip_family,
            spec.mode
        );
    }
    if spec.datastore == StoreKind::Etcd && which("etcd").is_none() {
        missing.push("etcd: apt-get install -y etcd-server".into());
    }
    let thresh = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";
    if let Some(t) = std::fs::read_to_string(thresh)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        && let Some(line) = neighbour_table_check(dynamic_neighbours(spec), t)
    {
        missing.push(line);
    }
    if spec.datastore == StoreKind::Embedded
        && let Some(max) = std::fs::read_to_string(INOTIFY_INSTANCES)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        && let Some(line) = inotify_check(spec.nodes, inotify_instances_in_use(), max)
    {
        missing.push(line);
    }
    if !missing.is_empty() {
        bail!(
            "this host lacks what the lab needs:\n  - {}",
            missing.join("\n  - ")
        );
    }
    Ok(())
}

const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

/// inotify instances open on the host now (every process's
/// `anon_inode:inotify` descriptors; the lab runs as root, and the limit
/// is per user).
fn inotify_instances_in_use() -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter_map(|p| std::fs::read_dir(p.path().join("fd")).ok())
        .flat_map(|fds| fds.flatten())
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:inotify")
        })
        .count()
}

/// `None` if `nodes` more inotify instances fit under the per-user limit
/// `max` beside the `in_use` ones (with a margin for the host), else the one
/// line naming the sysctl to raise. On the embedded store every manx-node
/// hears the others' commits through an inotify instance of its own; one
/// that gets none polls the file every 10 ms instead (the idle CPU the
/// instance saves), so the lab refuses rather than run that way.
pub fn inotify_check(nodes: usize, in_use: usize, max: usize) -> Option<String> {
    const MARGIN: usize = 16;
    if in_use + nodes + MARGIN <= max {
        return None;
    }
    let want = (in_use + nodes + MARGIN).next_power_of_two().max(max * 2);
    Some(format!(
        "{nodes} nodes on the embedded datastore need an inotify instance each (one manx-node each hears the others' commits through one), and {in_use} of the {max} allowed per user are in use (fs.inotify.max_user_instances): raise it first with `sysctl -w fs.inotify.max_user_instances={want}` (the lab does not change host settings), or use --datastore etcd"
    ))
}

/// Find `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Progress lines for the operator (the lab is a command, not a library
/// daemon: plain stderr is the right channel).
pub fn progress(msg: impl std::fmt::Display) {
    eprintln!("manx-lab: {msg}");
}

/// Build the lab (see the module doc). On failure everything made so far
/// is torn down again.
pub fn up(spec: LabSpec) -> Result<LabState> {
    preflight(&spec)?;
    let dir = LabState::dir_for(&spec.id);
    if dir.join("state.json").exists() {
        progress(format!("lab {} exists: tearing it down first", spec.id));
        down(&spec.id)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
    let mut state = LabState {
        spec,
        dir,
        namespaces: vec![],
        nodes: vec![],
        pods: vec![],
        etcd_pid: None,
    };
    state.save()?;
    match build(&mut state) {
        Ok(()) => Ok(state),
        Err(e) => {
            let logs = tail_logs(&state);
            let _ = down(&state.spec.id);
            Err(e.context(logs))
        }
    }
}

/// The last lines of every node's manx-node log, for failure messages.
pub fn tail_logs(state: &LabState) -> String {
    let mut out = String::from("node logs (tail):");
    for node in &state.nodes {
        let log = node.run_dir.join("manx-node.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("\n--- {} ({})", node.name, log.display()));
        for l in &lines[lines.len().saturating_sub(15)..] {
            out.push_str("\n    ");
            out.push_str(l);
        }
    }
    out
}

fn ns_name(id: &str, part: &str) -> String {
    format!("mxlab-{id}-{part}")
}

/// Whether namespace `name` is one lab `id` makes ([`ns_name`] with the
/// hub, the router, node `n<i>` or pod `node<i>-p<j>`), and not one of a lab
/// whose id merely starts with `<id>-` (lab `sc-conv`'s `mxlab-sc-conv-hub`
/// is not lab `sc`'s): the parts never contain an id's `-<word>-`.
pub fn lab_owns_netns(id: &str, name: &str) -> bool {
    let Some(part) = name
        .strip_prefix("mxlab-")
        .and_then(|r| r.strip_prefix(id))
        .and_then(|r| r.strip_prefix('-'))
    else {
        return false;
    };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match part {
        "hub" | "rtr" => true,
        _ => {
            if let Some(n) = part.strip_prefix('n')
                && number(n)
            {
                return true;
            }
            part.strip_prefix("node")
                .and_then(|r| r.split_once("-p"))
                .is_some_and(|(n, p)| number(n) && number(p))
        }
    }
}

fn build(state: &mut LabState) -> Result<()> {
    let id = state.spec.id.clone();
    let cross = state.spec.mode.two_subnets();
    let v6 = state.spec.ip_family.v6();
    // The hub holds the L2 segment(s).
    let hub = Netns::create(&ns_name(&id, "hub"))?.persist();
    state.namespaces.push(hub.clone());
    state.save()?;
    let hub = Netns::adopt(&hub);
    let subnets = if cross { 2 } else { 1 };
    for s in 0..subnets {
        hub.ip(&["link", "add", &format!("br{s}"), "type", "bridge"])?;
        hub.ip(&["link", "set", &format!("br{s}"), "up"])?;
    }
    if state.spec.second_nic {
        hub.ip(&["link", "add", "br5", "type", "bridge"])?;
        hub.ip(&["link", "set", "br5", "up"])?;
    }
    if cross {
        progress("router namespace joining 172.30.0.0/24 and 172.30.1.0/24");
        let rtr = Netns::create(&ns_name(&id, "rtr"))?.persist();
        state.namespaces.push(rtr.clone());
        state.save()?;
        let rtr = Netns::adopt(&rtr);
        for s in 0..2u8 {
            plug(&hub, &rtr, &format!("r{s}"), &format!("eth{s}"), s)?;
            rtr.ip(&[
                "link",
                "set",
                &format!("eth{s}"),
                "address",
                &lab_mac(0, s, 1),
            ])?;
            rtr.ip(&[
                "addr",
                "add",
                &format!("172.30.{s}.1/24"),
                "dev",
                &format!("eth{s}"),
            ])?;
            if v6 {
                rtr.ip(&[
                    "addr",
                    "add",
                    &format!("{}/64", lab_ip6(s, 1)),
                    "dev",
                    &format!("eth{s}"),
                    "nodad",
                ])?;
            }
            rtr.ip(&["link", "set", &format!("eth{s}"), "up"])?;
        }
        rtr.sysctl("net.ipv4.ip_forward", "1")?;
        if v6 {
            rtr.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
    }
    if state.spec.datastore == StoreKind::Etcd {
        start_etcd(state)?;
    }
    let n = state.spec.nodes;
    for i in 1..=n {
        let subnet = if cross && i > n.div_ceil(2) { 1 } else { 0 };
        let host = state.spec.host(i);
        let name = format!("node{i}");
        let netns = Netns::create(&ns_name(&id, &format!("n{i}")))?.persist();
        state.namespaces.push(netns.clone());
        let node = LabNode {
            name: name.clone(),
            netns: netns.clone(),
            ip: Ipv4Addr::new(172, 30, subnet, host),
            prefix_len: 24,
            ip6: v6.then(|| lab_ip6(subnet, host)),
            subnet,
            route_reflector: i <= state.spec.route_reflectors,
            pid: None,
            run_dir: state.dir.join(&name),
            runtime: None,
        };
        std::fs::create_dir_all(&node.run_dir)?;
        let ns = Netns::adopt(&netns);
        plug(&hub, &ns, &format!("n{i}"), "eth0", subnet)?;
        ns.ip(&["link", "set", "eth0", "address", &lab_mac(0, subnet, host)])?;
        ns.ip(&["addr", "add", &format!("{}/24", node.ip), "dev", "eth0"])?;
        if let Some(ip6) = node.ip6 {
            // No duplicate address detection: the address is usable (as a
            // BGP source) at once, and the lab's addresses are unique.
            ns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"])?;
        }
        ns.ip(&["link", "set", "eth0", "up"])?;
        if cross {
            ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &format!("172.30.{subnet}.1"),
            ])?;
            if v6 {
                ns.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &lab_ip6(subnet, 1).to_string(),
                ])?;
            }
        }
        if state.spec.second_nic {
            plug(&hub, &ns, &format!("s{i}"), "eth1", 5)?;
            ns.ip(&["link", "set", "eth1", "address", &lab_mac(5, 5, host)])?;
            ns.ip(&["addr", "add", &format!("172.30.5.{host}/24"), "dev", "eth1"])?;
            ns.ip(&["link", "set", "eth1", "up"])?;
        }
        state.nodes.push(node);
        state.save()?;
    }
    static_neighbours(state)?;
    preconfigure(state)?;
    progress(format!(
        "{n} node namespaces up, starting manx-node in each"
    ));
    for i in 0..state.nodes.len() {
        runtime::prepare(state, i)?;
        start_node(state, i)?;
        state.save()?;
    }
    wait_ready(state)?;
    if state.spec.runtime != Runtime::Cni {
        progress(format!(
            "starting {:?} on every node (private mount namespaces)",
            state.spec.runtime
        ));
        for i in 0..state.nodes.len() {
            runtime::start(state, i)?;
        }
    }
    create_pods(state)?;
    state.save()?;
    Ok(())
}

/// The MAC the lab gives its interface on segment `segment` (0, 1: the
/// node subnets, 5: the second NICs) for address `172.30.<subnet>.<host>`:
/// fixed, so that the neighbour entries can be written before anything runs.
fn lab_mac(segment: u8, subnet: u8, host: u8) -> String {
    format!("02:6d:78:{segment:02x}:{subnet:02x}:{host:02x}")
}

/// Every neighbour entry the lab's own links need: (namespace, device,
/// address, MAC). A full mesh needs N(N-1) of them on the node links alone
/// (each node resolves every other), and the kernel's neighbour table is
/// one for all namespaces.
pub fn lab_neighbours(state: &LabState) -> Vec<(String, String, IpAddr, String)> {
    let spec = &state.spec;
    let cross = spec.mode.two_subnets();
    let etcd = spec.datastore == StoreKind::Etcd;
    let host = |n: &LabNode| n.ip.octets()[3];
    let mut v: Vec<(String, String, IpAddr, String)> = Vec::new();
    for a in &state.nodes {
        for b in state.nodes.iter().filter(|b| b.name != a.name) {
            if b.subnet == a.subnet {
                let mac = lab_mac(0, b.subnet, host(b));
                v.push((a.netns.clone(), "eth0".into(), b.ip.into(), mac.clone()));
                if let Some(ip6) = b.ip6 {
                    v.push((a.netns.clone(), "eth0".into(), ip6.into(), mac));
                }
            }
            if spec.second_nic {
                v.push((
                    a.netns.clone(),
                    "eth1".into(),
                    Ipv4Addr::new(172, 30, 5, host(b)).into(),
                    lab_mac(5, 5, host(b)),
                ));
            }
        }
        if cross {
            let rtr = ns_name(&spec.id, "rtr");
            let gw = Ipv4Addr::new(172, 30, a.subnet, 1);
            let (gw_mac, a_mac) = (lab_mac(0, a.subnet, 1), lab_mac(0, a.subnet, host(a)));
            let rtr_if = format!("eth{}", a.subnet);
            v.push((a.netns.clone(), "eth0".into(), gw.into(), gw_mac.clone()));
            v.push((rtr.clone(), rtr_if.clone(), a.ip.into(), a_mac.clone()));
            if let Some(ip6) = a.ip6 {
                let gw6 = lab_ip6(a.subnet, 1);
                v.push((a.netns.clone(), "eth0".into(), gw6.into(), gw_mac));
                v.push((rtr, rtr_if, ip6.into(), a_mac));
            }
        }
        if etcd && a.subnet == 0 {
            let store = Ipv4Addr::new(172, 30, 0, 2);
            v.push((
                a.netns.clone(),
                "eth0".into(),
                store.into(),
                lab_mac(0, 0, 2),
            ));
            v.push((
                ns_name(&spec.id, "hub"),
                "br0".into(),
                a.ip.into(),
                lab_mac(0, 0, host(a)),
            ));
        }
    }
    if etcd && cross {
        v.push((
            ns_name(&spec.id, "hub"),
            "br0".into(),
            Ipv4Addr::new(172, 30, 0, 1).into(),
            lab_mac(0, 0, 1),
        ));
    }
    v
}

/// Write [`lab_neighbours`] as permanent entries, one `ip -batch` per
/// namespace, before any traffic. The kernel exempts permanent entries from
/// neighbour garbage collection and from the `gc_thresh3` limit, so a
/// 100-node mesh's 9,900 leave the shared dynamic table to pods (and to the
/// rest of the host).
fn static_neighbours(state: &LabState) -> Result<()> {
    let all = lab_neighbours(state);
    let mut by_ns: std::collections::BTreeMap<&str, String> = Default::default();
    for (ns, dev, ip, mac) in &all {
        by_ns.entry(ns).or_default().push_str(&format!(
            "neigh replace {ip} lladdr {mac} dev {dev} nud permanent\n"
        ));
    }
    for (ns, batch) in &by_ns {
        let file = state.dir.join(format!("neigh-{ns}.batch"));
        std::fs::write(&file, batch)?;
        Netns::adopt(ns)
            .ip(&["-batch", &file.display().to_string()])
            .with_context(|| format!("permanent neighbour entries in {ns}"))?;
        let _ = std::fs::remove_file(&file);
    }
    progress(format!(
        "{} permanent neighbour entries on the lab's links (exempt from gc_thresh3); about {} dynamic ones needed (one per pod)",
        all.len(),
        dynamic_neighbours(&state.spec)
    ));
    Ok(())
}

/// The dynamic neighbour entries a lab still needs once its links' are
/// permanent: each node resolves its pods on their veths (a pod's gateway
/// entry is permanent, written by the plugin); a few for the host's margin.
pub fn dynamic_neighbours(spec: &LabSpec) -> usize {
    spec.nodes * spec.pods_per_node
}

/// `None` if the host's neighbour table holds the lab's dynamic entries,
/// else the one line saying which sysctl to raise to what. Three quarters
/// of `gc_thresh3` at most: the table is shared with the host and any other
/// lab.
pub fn neighbour_table_check(need: usize, gc_thresh3: usize) -> Option<String> {
    if need <= gc_thresh3 / 4 * 3 {
        return None;
    }
    let want = (need * 2).next_power_of_two();
    Some(format!(
        "this lab needs about {need} dynamic neighbour entries (one per pod), more than the kernel's neighbour table (shared by every namespace) holds safely with net.ipv4.neigh.default.gc_thresh3 = {gc_thresh3}: raise it first with `sysctl -w net.ipv4.neigh.default.gc_thresh3={want}` (the lab does not change host settings), or use fewer pods"
    ))
}

/// A veth from the hub's bridge `br<subnet>` (hub side `hub_if`) into `ns`
/// (named `ns_if` there).
fn plug(hub: &Netns, ns: &Netns, hub_if: &str, ns_if: &str, subnet: u8) -> Result<()> {
    hub.ip(&[
        "link",
        "add",
        hub_if,
        "type",
        "veth",
        "peer",
        "name",
        ns_if,
        "netns",
        ns.name(),
    ])?;
    hub.ip(&[
        "link",
        "set",
        hub_if,
        "master",
        &format!("br{subnet}"),
        "up",
    ])?;
    Ok(())
}

fn pool_env(state: &LabState) -> Vec<(String, String)> {
    let (ipip, vxlan, udp) = match state.spec.mode {
        Mode::Direct => ("Never", "Never", "Never"),
        Mode::Vxlan => ("Never", "Always", "Never"),
        Mode::Ipip => ("Always", "Never", "Never"),
        Mode::Crosssubnet => ("Never", "CrossSubnet", "Never"),
        Mode::IpipCrosssubnet => ("CrossSubnet", "Never", "Never"),
        Mode::Udp => ("Never", "Never", "Always"),
        Mode::Wireguard => ("Never", "Never", "Never"),
    };
    let family = state.spec.ip_family;
    let mut env: Vec<(String, String)> = vec![
        ("MANX_IPV4POOL_CIDR".into(), state.spec.pool_cidr.clone()),
        ("MANX_IPV4POOL_IPIP".into(), ipip.into()),
        ("MANX_IPV4POOL_VXLAN".into(), vxlan.into()),
        ("MANX_IPV4POOL_UDP".into(), udp.into()),
        // Lab pods talk only to each other; no masquerade (and no nft needed).
        ("MANX_IPV4POOL_NAT_OUTGOING".into(), "false".into()),
        // An IPv6 pool has no IPIP: the mode's VXLAN setting is its only one.
        ("MANX_IPV6POOL_CIDR".into(), state.spec.pool_cidr6.clone()),
        ("MANX_IPV6POOL_VXLAN".into(), vxlan.into()),
        ("MANX_IPV6POOL_NAT_OUTGOING".into(), "false".into()),
        (
            "IP".into(),
            if family.v4() { "autodetect" } else { "none" }.into(),
        ),
        (
            "IP6".into(),
            if family.v6() { "autodetect" } else { "none" }.into(),
        ),
    ];
    if family.v6() {
        env.push((
            "IP6_AUTODETECTION_METHOD".into(),
            state.spec.autodetect.clone(),
        ));
    }
    env
}

/// Start (or restart) manx-node on node `i`.
pub fn start_node(state: &mut LabState, i: usize) -> Result<()> {
    let node = state.nodes[i].clone();
    let ns = Netns::adopt(&node.netns);
    let mut cmd = Command::new(state.bin("manx-node"));
    cmd.envs(state.store_env())
        .envs(pool_env(state))
        .env("NODENAME", &node.name)
        .env("IP_AUTODETECTION_METHOD", &state.spec.autodetect)
        .env("MANX_RUN_DIR", &node.run_dir)
        .env("MANX_HEALTH_LISTEN", format!("{}:9099", node.ip))
        // Nodes share the host's filesystem: one key file each.
        .env(
            "MANX_WIREGUARD_KEY_FILE",
            node.run_dir.join("wireguard.key"),
        )
        .env("RUST_LOG", "info");
    if let Some(g) = state.spec.stale_grace_secs {
        cmd.env("MANX_STALE_WORKLOAD_GRACE_SECS", g.to_string());
    }
    if let Some(s) = state.spec.stale_scan_secs {
        cmd.env("MANX_STALE_WORKLOAD_SCAN_SECS", s.to_string());
    }
    let log = node.run_dir.join("manx-node.log");
    if let Some(rt) = &node.runtime {
        // In the node's private mount namespace, with the runtimes.
        let mut inner = rt.command(&node, &cmd.get_program().to_string_lossy());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                inner.env(k, v);
            }
        }
        state.nodes[i].pid = Some(runtime::spawn_detached(inner, &log)?);
        return Ok(());
    }
    // In its own process group: a Ctrl-C on `up` leaves the nodes running
    // (the state file has them; `down` removes them).
    let proc_ = ns.spawn_own_group(cmd, &log)?;
    state.nodes[i].pid = Some(proc_.detach());
    Ok(())
}

fn wait_ready(state: &LabState) -> Result<()> {
    for node in &state.nodes {
        wait_node_ready(state, node)?;
    }
    Ok(())
}

/// Stop manx-node on node `name` as an operator does (SIGTERM to its process group: kernel
/// routes stay in place, its BGP peers keep its routes for the graceful restart), start it
/// again with the same environment and wait until it is ready. A node that has not exited
/// 10 s after SIGTERM is killed.
pub fn restart_node(id: &str, name: &str) -> Result<LabState> {
    let mut state = LabState::load(id)?;
    let Some(i) = state.nodes.iter().position(|n| n.name == name) else {
        bail!(
            "lab {id:?} has no node {name:?} (nodes: {})",
            state
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if let Some(pid) = state.nodes[i].pid {
        signal_group(pid, "manx-node", nix::sys::signal::Signal::SIGTERM);
        let gone = wait_for(
            &format!("manx-node on {name} (pid {pid}) to exit"),
            Duration::from_secs(10),
            || Ok((!running(pid)).then_some(())),
        );
        if gone.is_err() {
            kill_group(pid, "manx-node");
        }
    }
    start_node(&mut state, i)?;
    state.save()?;
    wait_node_ready(&state, &state.nodes[i])?;
    Ok(state)
}

fn wait_node_ready(state: &LabState, node: &LabNode) -> Result<()> {
    let ns = Netns::adopt(&node.netns);
    wait_for(
        &format!("{} /readyz", node.name),
        Duration::from_secs(60),
        || {
            if let Some(pid) = node.pid
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                bail!(
                    "manx-node on {} exited (see {})",
                    node.name,
                    node.run_dir.join("manx-node.log").display()
                );
            }
            let out = ns
                .command(state.bin("manxctl"))
                .args(["node", "ready"])
                .env("MANX_RUN_DIR", &node.run_dir)
                .envs(state.store_env())
                .stderr(Stdio::piped())
                .output()?;
            if out.status.success() {
                Ok(Some(()))
            } else {
                bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
            }
        },
    )?;
    progress(format!("{} ready ({})", node.name, node.ip));
    Ok(())
}

/// What the lab writes to the datastore before any manx-node starts:
///
/// - every `Node` with its BGP address when the lab knows it (the default
///   `interface=eth0` autodetection), so that no node refuses a peer whose
///   Node it has not seen yet and then waits out a connect retry;
/// - the reflector topology (so no node ever runs the full mesh and then
///   tears it down: N(N-1) sessions and a speaker restart per reflector):
///   the reflectors' `route-reflector=true` label and
///   `routeReflectorClusterID`, the mesh off in `BGPConfiguration default`,
///   and one `BGPPeer` from every node to the reflectors, the way Calico's
///   docs write it.
///
/// manx-node keeps all of it when it registers (it rewrites only its
/// addresses, AS and tunnel fields). Empty if there is nothing to write.
pub fn preconfig_manifest(state: &LabState) -> String {
    let known_ip = state.spec.autodetect == default_autodetect();
    let mut m = String::new();
    for node in &state.nodes {
        let mut bgp = String::new();
        if known_ip && state.spec.ip_family.v4() {
            bgp.push_str(&format!(
                "    ipv4Address: {}/{}\n",
                node.ip, node.prefix_len
            ));
        }
        if known_ip && let Some(ip6) = node.ip6 {
            bgp.push_str(&format!("    ipv6Address: {ip6}/64\n"));
        }
        if node.route_reflector {
            bgp.push_str("    routeReflectorClusterID: 244.0.0.1\n");
        }
        if bgp.is_empty() {
            continue;
        }
        let labels = if node.route_reflector {
            "  labels:\n    route-reflector: \"true\"\n"
        } else {
            ""
        };
        m.push_str(&format!(
            "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {}\n{labels}spec:\n  bgp:\n{bgp}---\n",
            node.name
        ));
    }
    if state.spec.mode == Mode::Wireguard {
        m.push_str("apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  wireguardEnabled: true\n---\n");
    }
    if state.spec.route_reflectors > 0 {
        m.push_str("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n  asNumber: 64512\n---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-route-reflectors\nspec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n");
    }
    m
}

fn preconfigure(state: &LabState) -> Result<()> {
    let manifest = preconfig_manifest(state);
    if manifest.is_empty() {
        return Ok(());
    }
    if state.spec.route_reflectors > 0 {
        let rr: Vec<&str> = state
            .nodes
            .iter()
            .filter(|n| n.route_reflector)
            .map(|n| n.name.as_str())
            .collect();
        progress(format!(
            "route reflectors: {} (cluster id 244.0.0.1), node-to-node mesh off, written before the nodes start",
            rr.join(", ")
        ));
    }
    let path = state.dir.join("preconfig.yaml");
    std::fs::write(&path, manifest)?;
    state
        .manxctl(
            &state.nodes[0],
            &["apply", "-f", &path.display().to_string()],
        )
        .context("writing the lab's Nodes and BGP topology before the nodes start")?;
    Ok(())
}

/// Where the lab's etcd listens: on the hub's bridge, reachable from every
/// node namespace (a node's own 127.0.0.1 is its own loopback).
pub const ETCD_ENDPOINT: &str = "http://172.30.0.2:2379";

fn start_etcd(state: &mut LabState) -> Result<()> {
    let hub = Netns::adopt(&ns_name(&state.spec.id, "hub"));
    hub.ip(&["link", "set", "br0", "address", &lab_mac(0, 0, 2)])?;
    hub.ip(&["addr", "add", "172.30.0.2/24", "dev", "br0"])?;
    if state.spec.mode.two_subnets() {
        hub.ip(&["route", "add", "172.30.1.0/24", "via", "172.30.0.1"])?;
    }
    state.etcd_pid = Some(spawn_etcd(state)?);
    state.save()?;
    Ok(())
}

/// Start (or restart, on the same data directory) the lab's etcd in the hub.
pub fn spawn_etcd(state: &LabState) -> Result<u32> {
    progress(format!("starting etcd on {ETCD_ENDPOINT} (hub namespace)"));
    let hub = Netns::adopt(&ns_name(&state.spec.id, "hub"));
    let data = state.dir.join("etcd");
    let mut cmd = Command::new("etcd");
    cmd.args([
        "--data-dir",
        &data.display().to_string(),
        "--listen-client-urls",
        ETCD_ENDPOINT,
        "--advertise-client-urls",
        ETCD_ENDPOINT,
        "--listen-peer-urls",
        "http://127.0.0.1:2380",
    ]);
    let proc_ = hub
        .spawn_own_group(cmd, &state.dir.join("etcd.log"))
        .context("starting etcd (apt-get install -y etcd-server)")?;
    let pid = proc_.detach();
    wait_for("etcd to answer", Duration::from_secs(20), || {
        let out = hub
            .command("etcdctl")
            .args(["--endpoints", ETCD_ENDPOINT, "endpoint", "health"])
            .env("ETCDCTL_API", "3")
            .output()?;
        Ok(out.status.success().then_some(()))
    })?;
    Ok(pid)
}

/// `pid`'s process group and command name, from `/proc/<pid>/stat`.
pub fn process_group(pid: u32) -> Option<(u32, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    // After the name: state, ppid, pgrp.
    let pgrp = rest.split_whitespace().nth(2)?.parse().ok()?;
    Some((pgrp, comm))
}

/// SIGKILL the process group `pid` leads, if `pid` still is the lab's
/// `comm` leading its own group (not a reused pid).
fn kill_group(pid: u32, comm: &str) {
    signal_group(pid, comm, nix::sys::signal::Signal::SIGKILL);
}

/// `pid` exists and is not a zombie (an orphan's zombie stays until init reaps it; in the
/// VM, init is a shell that may never do so).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Send `signal` to the process group `pid` leads, under the same check as [`kill_group`].
fn signal_group(pid: u32, comm: &str, signal: nix::sys::signal::Signal) {
    if process_group(pid).is_some_and(|(g, c)| g == pid && c == comm) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
}

/// Tear down the lab `id`: every process, namespace and file it made.
pub fn down(id: &str) -> Result<()> {
    let dir = LabState::dir_for(id);
    let state = LabState::load(id).ok();
    let mut names: Vec<String> = state
        .as_ref()
        .map(|s| s.namespaces.clone())
        .unwrap_or_default();
    // Also sweep namespaces of a run that died before saving its state.
    // Exactly this lab's: `mxlab-sc-` is also the start of lab `sc-conv`'s.
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if lab_owns_netns(id, &n) && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    // Pods first (their veths vanish with them), then nodes, hub last.
    names.reverse();
    // Containers first (podman's are removed with DEL), then the runtimes'
    // daemons and mount namespaces.
    if let Some(s) = &state {
        for node in &s.nodes {
            runtime::stop(s, node, &s.pods);
        }
    }
    // Each node (and etcd) leads a process group of its own: end the group,
    // then sweep whatever is still in the lab's namespaces.
    if let Some(s) = &state {
        for node in &s.nodes {
            if let Some(pid) = node.pid {
                kill_group(pid, "manx-node");
            }
        }
        if let Some(pid) = s.etcd_pid {
            kill_group(pid, "etcd");
        }
    }
    for name in &names {
        kill_all_in(name);
    }
    runtime::remove_cgroups(id);
    for name in &names {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {dir:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(nodes: usize, mode: Mode, etcd: bool, second_nic: bool) -> LabState {
        state_of(nodes, mode, etcd, second_nic, IpFamily::Ipv4)
    }

    fn state_of(
        nodes: usize,
        mode: Mode,
        etcd: bool,
        second_nic: bool,
        family: IpFamily,
    ) -> LabState {
        let mut spec = LabSpec::new("t", nodes, mode);
        spec.ip_family = family;
        spec.second_nic = second_nic;
        if etcd {
            spec.datastore = StoreKind::Etcd;
        }
        let cross = mode.two_subnets();
        let nodes = (1..=nodes)
            .map(|i| {
                let subnet = if cross && i > nodes.div_ceil(2) { 1 } else { 0 };
                LabNode {
                    name: format!("node{i}"),
                    netns: ns_name("t", &format!("n{i}")),
                    ip: Ipv4Addr::new(172, 30, subnet, 10 + i as u8),
                    prefix_len: 24,
                    ip6: family.v6().then(|| lab_ip6(subnet, 10 + i as u8)),
                    subnet,
                    route_reflector: false,
                    pid: None,
                    run_dir: PathBuf::from("/tmp"),
                    runtime: None,
                }
            })
            .collect();
        LabState {
            spec,
            dir: PathBuf::from("/tmp"),
            namespaces: vec![],
            nodes,
            pods: vec![],
            etcd_pid: None,
        }
    }

    #[test]
    fn a_mesh_needs_n_squared_neighbours_all_made_permanent() {
        // Each node resolves every other node on eth0: N(N-1).
        let s = state(50, Mode::Direct, false, false);
        let v = lab_neighbours(&s);
        assert_eq!(v.len(), 50 * 49);
        let e = v
            .iter()
            .find(|(ns, _, ip, _)| ns == "mxlab-t-n1" && *ip == Ipv4Addr::new(172, 30, 0, 12))
            .unwrap();
        assert_eq!((e.1.as_str(), e.3.as_str()), ("eth0", "02:6d:78:00:00:0c"));
        // Two subnets: each node its own subnet's others and its router,
        // the router every node; etcd adds the store and, in the hub, the nodes
        // of subnet 0 and the router.
        let s = state(4, Mode::Crosssubnet, true, true);
        let v = lab_neighbours(&s);
        let n1: Vec<_> = v.iter().filter(|e| e.0 == "mxlab-t-n1").collect();
        // node2 (eth0), node2..4 (eth1), router, store.
        assert_eq!(n1.len(), 1 + 3 + 1 + 1, "{n1:?}");
        assert_eq!(v.iter().filter(|e| e.0 == "mxlab-t-rtr").count(), 4);
        assert_eq!(v.iter().filter(|e| e.0 == "mxlab-t-hub").count(), 2 + 1);
        let n3_gw = v
            .iter()
            .find(|e| e.0 == "mxlab-t-n3" && e.2 == Ipv4Addr::new(172, 30, 1, 1))
            .unwrap();
        assert_eq!(n3_gw.3, "02:6d:78:00:01:01");
    }

    #[test]
    fn dual_stack_nodes_get_ipv6_twins_of_their_addresses_and_neighbours() {
        assert_eq!(lab_ip6(0, 11).to_string(), "fd30::11");
        assert_eq!(lab_ip6(1, 1).to_string(), "fd30:0:0:1::1");
        // Each IPv4 neighbour on a node link has its IPv6 twin, same MAC.
        let s = state_of(3, Mode::Direct, false, false, IpFamily::Dual);
        let v = lab_neighbours(&s);
        assert_eq!(v.len(), 2 * 3 * 2);
        let e = v
            .iter()
            .find(|e| e.0 == "mxlab-t-n1" && e.2 == "fd30::12".parse::<IpAddr>().unwrap())
            .unwrap();
        assert_eq!(e.3, "02:6d:78:00:00:0c");
        // Across the router: the IPv6 gateway too, and the router the nodes.
        let s = state_of(4, Mode::Crosssubnet, false, false, IpFamily::Ipv6);
        let v = lab_neighbours(&s);
        assert!(v.iter().any(|e| e.0 == "mxlab-t-n3"
            && e.2 == "fd30:0:0:1::1".parse::<IpAddr>().unwrap()
            && e.3 == "02:6d:78:00:01:01"));
        assert_eq!(v.iter().filter(|e| e.0 == "mxlab-t-rtr").count(), 8);
        // Written before the nodes start: ipv6Address beside ipv4Address,
        // only the IPv6 one in an IPv6-only lab.
        let m = preconfig_manifest(&state_of(2, Mode::Direct, false, false, IpFamily::Dual));
        assert!(
            m.contains("    ipv4Address: 172.30.0.11/24\n    ipv6Address: fd30::11/64\n"),
            "{m}"
        );
        let m = preconfig_manifest(&s);
        assert!(m.contains("    ipv6Address: fd30:0:0:1::13/64\n"), "{m}");
        assert!(!m.contains("ipv4Address"), "{m}");
    }

    /// `--mode wireguard`: direct pools, WireGuard on through FelixConfiguration default.
    #[test]
    fn wireguard_mode_writes_felixconfiguration_and_direct_pools() {
        let s = state(2, Mode::Wireguard, false, false);
        let m = preconfig_manifest(&s);
        assert!(
            m.contains("kind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  wireguardEnabled: true\n"),
            "{m}"
        );
        let env = pool_env(&s);
        for key in [
            "MANX_IPV4POOL_IPIP",
            "MANX_IPV4POOL_VXLAN",
            "MANX_IPV4POOL_UDP",
        ] {
            assert!(
                env.contains(&(key.into(), "Never".into())),
                "{key}: {env:?}"
            );
        }
        assert_eq!("wireguard".parse::<Mode>().unwrap(), Mode::Wireguard);
    }

    #[test]
    fn nodes_and_reflectors_are_written_before_the_nodes_start() {
        let mut s = state(3, Mode::Direct, false, false);
        s.spec.route_reflectors = 1;
        s.nodes[0].route_reflector = true;
        let m = preconfig_manifest(&s);
        let docs: Vec<&str> = m.split("---\n").collect();
        assert_eq!(docs.len(), 5, "{m}");
        assert!(docs[0].contains("name: node1\n  labels:\n    route-reflector: \"true\""));
        assert!(
            docs[0].contains("ipv4Address: 172.30.0.11/24\n    routeReflectorClusterID: 244.0.0.1")
        );
        assert!(docs[1].contains("name: node2\nspec:\n  bgp:\n    ipv4Address: 172.30.0.12/24\n"));
        assert!(!docs[1].contains("routeReflector") && !docs[1].contains("labels"));
        assert!(docs[3].contains("nodeToNodeMeshEnabled: false"));
        assert!(docs[4].contains("peerSelector: route-reflector == 'true'"));
        // Another autodetection: the addresses are the node's to find.
        s.spec.autodetect = "interface=eth1".into();
        let m = preconfig_manifest(&s);
        assert!(!m.contains("ipv4Address"), "{m}");
        assert_eq!(m.matches("kind: Node\n").count(), 1);
        // A mesh with another autodetection writes nothing.
        s.spec.route_reflectors = 0;
        s.nodes[0].route_reflector = false;
        assert_eq!(preconfig_manifest(&s), "");
    }

    #[test]
    fn the_neighbour_table_check_names_the_sysctl_in_one_line() {
        assert_eq!(neighbour_table_check(100, 1024), None);
        assert_eq!(neighbour_table_check(768, 1024), None);
        let line = neighbour_table_check(1000, 1024).unwrap();
        assert!(!line.contains('\n'));
        assert!(
            line.contains("sysctl -w net.ipv4.neigh.default.gc_thresh3=2048"),
            "{line}"
        );
        assert!(line.contains("= 1024"), "{line}");
    }

    #[test]
    fn the_inotify_check_names_the_sysctl_in_one_line() {
        assert_eq!(inotify_check(100, 3, 128), None);
        let line = inotify_check(100, 20, 128).unwrap();
        assert!(!line.contains('\n'));
        assert!(
            line.contains("sysctl -w fs.inotify.max_user_instances=256"),
            "{line}"
        );
        assert!(line.contains("20 of the 128"), "{line}");
        assert!(line.contains("--datastore etcd"), "{line}");
    }

    #[test]
    fn teardown_matches_exactly_this_labs_namespaces() {
        for n in [
            "mxlab-sc-hub",
            "mxlab-sc-rtr",
            "mxlab-sc-n1",
            "mxlab-sc-n100",
            "mxlab-sc-node3-p1",
            "mxlab-sc-node12-p1000",
        ] {
            assert!(lab_owns_netns("sc", n), "{n}");
        }
        for n in [
            // Labs whose id starts with `sc-`.
            "mxlab-sc-conv-hub",
            "mxlab-sc-conv-n1",
            "mxlab-sc-conv-node1-p1",
            "mxlab-sc-rtb-rtr",
            "mxlab-sc-n1-hub",
            "mxlab-sc-n1-n2",
            "mxlab-sc-node1-node1-p1",
            // Other labs and other namespaces.
            "mxlab-scx-hub",
            "mxlab-s-hub",
            "mxlab-sc-",
            "mxlab-sc-n",
            "mxlab-sc-nx",
            "mxlab-sc-node1-p",
            "mxlab-sc-node-p1",
            "sc-hub",
            "mxlab-sc",
        ] {
            assert!(!lab_owns_netns("sc", n), "{n}");
        }
        assert!(!lab_owns_netns("sc", "mxlab-sc-conv-rtr"));
        // The id itself may contain dashes.
        assert!(lab_owns_netns("sc-conv", "mxlab-sc-conv-n2"));
        assert!(lab_owns_netns("sc-conv", "mxlab-sc-conv-node2-p1001"));
    }
}
