//! Test harness: network namespaces named `mxcn-<pid>-<n>` (deleted on drop,
//! even on panic), a "node" namespace the plugin runs in, pod namespaces,
//! and a runner that executes the plugin binary with `ip netns exec`.
//! Nothing is created or changed in the root namespace.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Where Debian's containernetworking-plugins live.
pub const DEBIAN_CNI: &str = "/usr/lib/cni";

/// Skips (or, with `CI=true`, fails) when the environment cannot run
/// namespace tests. Returns false to skip.
pub fn can_run() -> bool {
    let mut missing = Vec::new();
    if !nix_is_root() {
        missing.push("root (namespace tests need CAP_NET_ADMIN)".to_string());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        missing.push("iproute2 (ip)".to_string());
    }
    for p in ["host-local", "tuning"] {
        if !Path::new(DEBIAN_CNI).join(p).exists() {
            missing.push(format!("{DEBIAN_CNI}/{p} (containernetworking-plugins)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("missing for this test: {}", missing.join(", "));
    }
    eprintln!("skipped: missing {}", missing.join(", "));
    false
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// A network namespace deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "mxcn-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A node namespace: loopback up, IPv4 forwarding on (inside it only),
    /// and an uplink (`uplink0`, 198.18.100.2/24, a veth whose peer stays in
    /// the namespace) carrying the default route via 198.18.100.1, as a real
    /// node has.
    pub fn node() -> Netns {
        Self::node_with_uplink_mtu(1500)
    }

    /// [`Netns::node`] with the uplink at `mtu`.
    pub fn node_with_uplink_mtu(mtu: u32) -> Netns {
        let ns = Netns::new();
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let mtu = mtu.to_string();
        ns.ip(&[
            "link", "add", "uplink0", "mtu", &mtu, "type", "veth", "peer", "name", "uplink1",
            "mtu", &mtu,
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

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip -n <ns> <args>`, asserting success; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// `ip -n <ns> -j <args>` as JSON.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full);
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap()
    }

    /// Runs a command inside the namespace, asserting success.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command inside the namespace; returns whether it succeeded.
    pub fn try_exec(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// `cali*` links.
    pub fn cali_links(&self) -> Vec<String> {
        self.links()
            .into_iter()
            .filter(|l| l.starts_with("cali"))
            .collect()
    }

    /// IPv4 routes as `ip route` prints them.
    pub fn routes(&self) -> String {
        self.ip(&["route", "show"])
    }

    /// IPv4 addresses (`a.b.c.d/len`) on `ifname`.
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
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

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a command, panicking with its output on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
            netns: pod_ns.path(),
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
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.name, "env", "-i"]);
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
    let mut child = cmd.spawn().expect("spawn ip netns exec");
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
