//! Test harness over `testkit`: network namespaces named `mxcn-<pid>-<n>`
//! (deleted on drop, even on panic, with what runs in them), a "node"
//! namespace the plugin runs in, pod namespaces, and a runner that executes
//! the plugin binary inside the node namespace. Nothing is created or
//! changed in the root namespace.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use testkit::{Netns, Prereqs};

/// Where Debian's containernetworking-plugins live.
pub const DEBIAN_CNI: &str = "/usr/lib/cni";

/// What the namespace tests need: root, iproute2 and Debian's `host-local`
/// and `tuning` plugins.
pub fn prereqs() -> Prereqs {
    Prereqs::new()
        .root()
        .command("ip")
        .file(
            Path::new(DEBIAN_CNI).join("host-local"),
            "containernetworking-plugins",
        )
        .file(
            Path::new(DEBIAN_CNI).join("tuning"),
            "containernetworking-plugins",
        )
}

/// A fresh namespace (a pod's, before the plugin wires it).
pub fn netns() -> Netns {
    Netns::new("mxcn")
}

/// A node namespace: loopback up, IPv4 forwarding on (inside it only), and
/// an uplink (`uplink0`, 198.18.100.2/24, a veth whose peer stays in the
/// namespace) carrying the default route via 198.18.100.1, as a real node
/// has.
pub fn node_netns() -> Netns {
    node_netns_with_uplink_mtu(1500)
}

/// [`node_netns`] with the uplink at `mtu`.
pub fn node_netns_with_uplink_mtu(mtu: u32) -> Netns {
    let ns = netns();
    ns.sysctl("net.ipv4.ip_forward", "1");
    let mtu = mtu.to_string();
    ns.ip(&[
        "link", "add", "uplink0", "mtu", &mtu, "type", "veth", "peer", "name", "uplink1", "mtu",
        &mtu,
    ]);
    ns.ip(&["link", "set", "uplink0", "up"]);
    ns.ip(&["link", "set", "uplink1", "up"]);
    ns.ip(&["addr", "add", "198.18.100.2/24", "dev", "uplink0"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.18.100.1",
        "dev",
        "uplink0",
    ]);
    ns
}

/// What the CNI tests read from a namespace.
pub trait CniNetns {
    /// The namespace as a runtime passes it in `CNI_NETNS`.
    fn cni_netns(&self) -> String;
    /// Runs `program args` inside the namespace; whether it succeeded.
    fn try_exec(&self, program: &str, args: &[&str]) -> bool;
    /// Names of the links in the namespace.
    fn links(&self) -> Vec<String>;
    /// `cali*` links.
    fn cali_links(&self) -> Vec<String>;
    /// IPv4 routes as `ip route` prints them.
    fn routes(&self) -> String;
    /// IPv4 addresses (`a.b.c.d/len`) on `ifname`.
    fn addrs(&self, ifname: &str) -> Vec<String>;
}

impl CniNetns for Netns {
    fn cni_netns(&self) -> String {
        self.path().display().to_string()
    }

    fn try_exec(&self, program: &str, args: &[&str]) -> bool {
        self.command(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn links(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    fn cali_links(&self) -> Vec<String> {
        self.links()
            .into_iter()
            .filter(|l| l.starts_with("cali"))
            .collect()
    }

    fn routes(&self) -> String {
        self.ip(&["route", "show"])
    }

    fn addrs(&self, ifname: &str) -> Vec<String> {
        let v = self.ip_json(&["-4", "addr", "show", "dev", ifname]);
        v[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One plugin run's output.
#[derive(Debug)]
pub struct PluginOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PluginOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts success and returns the JSON (or Null for empty output).
    pub fn ok(&self) -> serde_json::Value {
        assert_eq!(self.code, 0, "plugin failed: {self:?}");
        if self.stdout.trim().is_empty() {
            serde_json::Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts a CNI error with `code` whose message contains `needle`.
    pub fn err(&self, code: u32, needle: &str) -> serde_json::Value {
        assert_eq!(self.code, 1, "expected failure: {self:?}");
        let v = self.json();
        assert_eq!(v["code"], code, "{self:?}");
        let msg = v["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{needle:?} not in {msg:?}");
        v
    }
}

/// One invocation's variables.
#[derive(Debug, Clone)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    /// More variables (MANX_DB, overrides). A key with an empty value is
    /// left out.
    pub extra: Vec<(String, String)>,
}

impl Call {
    /// A Kubernetes-style call for pod `pod` in namespace `default`.
    pub fn new(command: &str, container_id: &str, pod_ns: &Netns, pod: &str) -> Call {
        Call {
            command: command.into(),
            container_id: container_id.into(),
            netns: pod_ns.cni_netns(),
            ifname: "eth0".into(),
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            path: cni_path(),
            extra: Vec::new(),
        }
    }

    pub fn command(mut self, c: &str) -> Call {
        self.command = c.into();
        self
    }
}

/// CNI_PATH for tests: the directory of the binaries under test first,
/// then Debian's plugins.
pub fn cni_path() -> String {
    let me = manx_bin();
    format!("{}:{DEBIAN_CNI}", me.parent().unwrap().display())
}

/// The plugin under test.
pub fn manx_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_manx"))
}

/// Runs `bin` inside `node` with exactly the CNI variables of `call`.
pub fn run(node: &Netns, bin: &Path, call: &Call, stdin: &str) -> PluginOutput {
    let mut cmd = node.command("env");
    cmd.arg("-i");
    let mut vars = vec![
        (
            "PATH".to_string(),
            "/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        ("CNI_COMMAND".to_string(), call.command.clone()),
        ("CNI_CONTAINERID".to_string(), call.container_id.clone()),
        ("CNI_NETNS".to_string(), call.netns.clone()),
        ("CNI_IFNAME".to_string(), call.ifname.clone()),
        ("CNI_ARGS".to_string(), call.args.clone()),
        ("CNI_PATH".to_string(), call.path.clone()),
    ];
    for (k, v) in &call.extra {
        vars.retain(|(k2, _)| k2 != k);
        vars.push((k.clone(), v.clone()));
    }
    for (k, v) in vars {
        if !v.is_empty() {
            cmd.arg(format!("{k}={v}"));
        }
    }
    cmd.arg(bin);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the plugin in the node namespace");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    PluginOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the manx plugin.
pub fn manx(node: &Netns, call: &Call, stdin: &str) -> PluginOutput {
    run(node, &manx_bin(), call, stdin)
}

/// A manx network config using Debian's host-local over `subnet`, storing
/// its allocations under `data_dir`.
pub fn host_local_conf(version: &str, data_dir: &Path, subnet: &str) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": version,
        "name": "mxcn-net",
        "type": "manx",
        "datastore_type": "none",
        "nodename": "node1",
        "mtu": 1400,
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir.display().to_string(),
            "ranges": [[{"subnet": subnet}]],
        }
    })
}

/// Allocations host-local holds for network `name` in `data_dir`.
pub fn host_local_allocations(data_dir: &Path, name: &str) -> Vec<String> {
    match std::fs::read_dir(data_dir.join(name)) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `conf` with `prevResult` set (for CHECK, DEL and chained plugins).
pub fn with_prev(conf: &serde_json::Value, prev: &serde_json::Value) -> serde_json::Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// The pod's IPv4 address from a result.
pub fn result_ip(result: &serde_json::Value) -> String {
    let addr = result["ips"][0]["address"].as_str().unwrap();
    addr.split('/').next().unwrap().to_string()
}

/// The `manx-ipam` binary from the `manx-ipam` package, built into the same
/// target directory as this test (`<target>/<profile>/manx-ipam`). Cargo
/// gives tests only their own package's binaries, so this runs
/// `cargo build -p manx-ipam --bin manx-ipam` once per test process (a
/// no-op when up to date; `cargo nextest` and a preceding `cargo build
/// --workspace` make it instant). `MANX_IPAM_BIN` overrides the path.
pub fn manx_ipam_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("MANX_IPAM_BIN") {
            return PathBuf::from(p);
        }
        let me = manx_bin();
        let profile_dir = me.parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap().to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let mut cmd = Command::new(cargo);
        // Without the variables cargo gives this test (`CARGO_MANIFEST_DIR`,
        // `CARGO_PKG_*`…): `ring`'s build script reruns when they change,
        // which rebuilt half the workspace on every run.
        for (k, _) in std::env::vars() {
            if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k == "OUT_DIR" {
                cmd.env_remove(k);
            }
        }
        cmd.args([
            "build",
            "-q",
            "-p",
            "manx-ipam",
            "--bin",
            "manx-ipam",
            "--manifest-path",
            manifest,
        ])
        .env("CARGO_TARGET_DIR", &target_dir);
        if release {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build -p manx-ipam");
        assert!(
            out.status.success(),
            "cargo build -p manx-ipam failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("manx-ipam");
        assert!(bin.exists(), "{} missing after cargo build", bin.display());
        bin
    })
    .clone()
}

/// A manx network config using manx-ipam on the embedded store at `db`.
pub fn manx_ipam_conf(version: &str, db: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "manx",
        "datastore_type": "embedded",
        "manx_db": db.display().to_string(),
        "nodename": "node1",
        "mtu": 1400,
        "ipam": {"type": "manx-ipam", "assign_ipv4": "true"}
    })
}
