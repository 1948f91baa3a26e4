//! Lab pods as real containers: containerd 1.6 (`ctr run --cni`) or podman
//! 4.3 (its CNI network backend) run inside each node's network namespace,
//! calling the `manx` plugin the way they would on a real host.
//!
//! Both runtimes read fixed host paths: `/etc/cni/net.d`, `/opt/cni/bin`,
//! the libcni cache `/var/lib/cni`, `/run/netns` (podman's pod namespaces),
//! and write more (`/run/containerd/s`, `/run/runc`, `/opt/containerd`,
//! `/var/lib/containers/cache`, `/var/tmp`). Per node, a *holder* process
//! (`sleep infinity`) owns a private mount namespace in which:
//!
//! - `/opt`, `/var/lib`, `/var/tmp` and `/run` (and `/etc` if it has no
//!   `cni/net.d`) are overlays whose upper layer is a tmpfs of that
//!   namespace: writes land there and vanish with it;
//! - `/run/manx-lab` is bound back over its overlay (the lab's state,
//!   manx.db and the runtimes' --root dirs are the real ones);
//! - `/etc/cni/net.d`, `/opt/cni/bin`, `/var/lib/cni` and `/run/netns` are
//!   bind mounts of the node's `rt/` dirs.
//!
//! The holder enters the node's network namespace with `nsenter --net`
//! (not `ip netns exec`, which remounts /sys and so hides the cgroup mounts
//! runc needs). containerd and every `ctr`/`podman` command run in the
//! holder's namespaces (`nsenter -t <holder> -m -n`). Nothing changes in
//! the root mount namespace but the cgroup directories the containers
//! use, `/sys/fs/cgroup/*/mxlab-<id>*`, which `down` removes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::image::{self, IMAGE_REF};
use super::{LAB_ROOT, LabNode, LabPod, LabState, cni_config, progress};
use crate::netns::{run, signal, wait_for};

/// What makes a lab's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// The `manx` plugin run by hand with CNI_* variables in a named
    /// namespace per pod (no container).
    #[default]
    Cni,
    /// containerd 1.6: `ctr run --cni` (go-cni, /etc/cni/net.d).
    Containerd,
    /// podman 4.3 with `network_backend = "cni"`.
    Podman,
}

impl std::str::FromStr for Runtime {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Runtime> {
        Ok(match s {
            "cni" => Runtime::Cni,
            "containerd" => Runtime::Containerd,
            "podman" => Runtime::Podman,
            other => bail!("unknown runtime {other:?}: use cni, containerd or podman"),
        })
    }
}

/// The CNI network name the runtimes use (the conflist's `name`).
pub const NETWORK: &str = "manx-pods";
/// A bridge + host-local network beside it (podman's baseline in the bench).
pub const BASELINE_NETWORK: &str = "bridge-baseline";

impl Runtime {
    /// The host commands this runtime needs, with their Debian package.
    pub fn needs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Runtime::Cni => &[],
            Runtime::Containerd => &[
                ("containerd", "containerd"),
                ("ctr", "containerd"),
                ("runc", "runc"),
                ("nsenter", "util-linux"),
                ("unshare", "util-linux"),
            ],
            Runtime::Podman => &[
                ("podman", "podman"),
                ("runc", "runc"),
                ("conmon", "conmon"),
                ("nsenter", "util-linux"),
                ("unshare", "util-linux"),
            ],
        }
    }

    /// What this host lacks for the runtime, one line each.
    pub fn missing(self) -> Vec<String> {
        if self == Runtime::Cni {
            return vec![];
        }
        let mut m: Vec<String> = self
            .needs()
            .iter()
            .filter(|(cmd, _)| super::which(cmd).is_none())
            .map(|(cmd, pkg)| format!("`{cmd}`: apt-get install -y {pkg}"))
            .collect();
        m.extend(image::missing());
        m
    }
}

/// A node's runtime: its private directories, the mount-namespace holder
/// and (containerd) the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRuntime {
    pub kind: Runtime,
    pub dir: PathBuf,
    pub holder_pid: u32,
    pub daemon_pid: Option<u32>,
}

impl NodeRuntime {
    pub fn netd(&self) -> PathBuf {
        self.dir.join("net.d")
    }
    pub fn cni_bin(&self) -> PathBuf {
        self.dir.join("cni-bin")
    }
    /// The libcni cache (`/var/lib/cni` inside the node's mount namespace).
    pub fn cni_cache(&self) -> PathBuf {
        self.dir.join("cni-cache")
    }
    /// `/run/netns` inside the node's mount namespace.
    pub fn netns_dir(&self) -> PathBuf {
        self.dir.join("netns")
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// `program` inside the node's network and private mount namespace,
    /// with the environment the plugins should see.
    pub fn command(&self, node: &LabNode, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder_pid.to_string(), "-m", "-n", "--"])
            .arg(program)
            // manx-ipam's host-wide claim lock: per lab node, not the host's.
            .env("MANX_IPAM_LOCK_DIR", &node.run_dir)
            .stdin(Stdio::null());
        cmd
    }

    /// `ctr` against this node's containerd.
    pub fn ctr(&self, node: &LabNode, ns: &str) -> Command {
        let mut cmd = self.command(node, "ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", ns]);
        cmd
    }

    /// `podman` with this node's private state and containers.conf.
    pub fn podman(&self, node: &LabNode) -> Command {
        let p = self.dir.join("podman");
        let mut cmd = self.command(node, "podman");
        cmd.env("CONTAINERS_CONF", p.join("containers.conf"))
            .env("TMPDIR", p.join("tmp"))
            .arg("--root")
            .arg(p.join("root"))
            .arg("--runroot")
            .arg(p.join("runroot"));
        cmd
    }
}

/// containerd namespace (and cgroup parent) of lab `id`'s containers.
pub fn ctr_namespace(id: &str) -> String {
    format!("mxlab-{id}")
}

fn cgroup_parent(id: &str) -> String {
    format!("/mxlab-{id}")
}

/// The conflist the runtimes find in /etc/cni/net.d: the lab's `manx`
/// plugin config as a one-plugin list, logging to the node's cni.log only.
pub fn conflist(state: &LabState, node: &LabNode) -> serde_json::Value {
    let mut plugin = cni_config(state, node);
    let obj = plugin.as_object_mut().unwrap();
    obj.remove("cniVersion");
    obj.remove("name");
    obj.insert(
        "log_file_path".into(),
        node.run_dir.join("cni.log").display().to_string().into(),
    );
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [plugin],
    })
}

/// The baseline network: bridge + host-local from /usr/lib/cni, on a
/// subnet of its own per node.
pub fn baseline_conflist(node_index: usize) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": BASELINE_NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": "mxbase0",
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("10.231.{node_index}.0/24")}]],
            },
        }],
    })
}

/// The mount-namespace setup the holder runs (see the module doc).
fn holder_script(rt: &NodeRuntime) -> String {
    let ovl = rt.dir.join("ovl");
    let mut s = String::from("set -eu\n");
    // cwd keeps the real /run/manx-lab reachable once /run is covered.
    s.push_str(&format!("cd {LAB_ROOT}\n"));
    s.push_str(&format!(
        "mount -n -t tmpfs -o mode=0700 manx-lab-ovl {}\n",
        ovl.display()
    ));
    s.push_str(&format!(
        "ovl() {{ n=$(echo \"$1\" | tr / _); mkdir -p {o}/$n.up {o}/$n.work; mount -n -t overlay manx-lab -o lowerdir=$1,upperdir={o}/$n.up,workdir={o}/$n.work $1; }}\n",
        o = ovl.display()
    ));
    s.push_str("[ -d /etc/cni/net.d ] || ovl /etc\n");
    s.push_str("ovl /opt\novl /var/lib\novl /var/tmp\novl /run\n");
    // -c: no canonicalising, so the magic link resolves to the real dir.
    s.push_str(&format!("mount -n -c --bind /proc/self/cwd {LAB_ROOT}\n"));
    for (src, dst) in [
        (rt.netd(), "/etc/cni/net.d"),
        (rt.cni_bin(), "/opt/cni/bin"),
        (rt.cni_cache(), "/var/lib/cni"),
        (rt.netns_dir(), "/run/netns"),
    ] {
        s.push_str(&format!(
            "mkdir -p {dst}\nmount -n --bind {} {dst}\n",
            src.display()
        ));
    }
    s.push_str(&format!(
        "touch {}\n",
        rt.dir.join("holder.ready").display()
    ));
    s.push_str("exec sleep infinity\n");
    s
}

pub(super) fn spawn_detached(mut cmd: Command, log: &Path) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let file = std::fs::File::create(log).with_context(|| format!("creating {log:?}"))?;
    // Its own process group: a Ctrl-C on `manx-lab up` does not reach it.
    cmd.process_group(0);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    let pid = child.id();
    // Reaped by whoever outlives us; the lab records the pid.
    std::mem::forget(child);
    Ok(pid)
}

fn alive(pid: u32) -> bool {
    // A zombie child of ours is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|st| st != "Z" && st != "X")
        })
        .unwrap_or(false)
}

fn out_text(out: &Output) -> String {
    format!(
        "{} {}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Make node `i`'s private directories and mount namespace (see the module
/// doc), before its manx-node starts: manx-node runs in it too, so the pod
/// namespace paths podman records (`/run/netns/netns-...`) are the ones it
/// checks for stale workloads, as on a real host.
pub fn prepare(state: &mut LabState, i: usize) -> Result<()> {
    let kind = state.spec.runtime;
    if kind == Runtime::Cni {
        return Ok(());
    }
    let node = state.nodes[i].clone();
    let dir = node.run_dir.join("rt");
    let mut rt = NodeRuntime {
        kind,
        dir: dir.clone(),
        holder_pid: 0,
        daemon_pid: None,
    };
    for d in [
        rt.netd(),
        rt.cni_bin(),
        rt.cni_cache(),
        rt.netns_dir(),
        dir.join("ovl"),
        dir.join("containerd/root"),
        dir.join("containerd/state"),
        dir.join("podman/tmp"),
    ] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {d:?}"))?;
    }
    for bin in ["manx", "manx-ipam"] {
        std::fs::copy(state.bin(bin), rt.cni_bin().join(bin))
            .with_context(|| format!("copying {bin} into {}", rt.cni_bin().display()))?;
    }
    for bin in ["bridge", "host-local", "loopback"] {
        let src = Path::new("/usr/lib/cni").join(bin);
        if src.exists() {
            std::fs::copy(&src, rt.cni_bin().join(bin))?;
        }
    }
    std::fs::write(
        rt.netd().join("10-manx.conflist"),
        serde_json::to_vec_pretty(&conflist(state, &node))?,
    )?;
    let mut holder = Command::new("nsenter");
    holder
        .arg(format!("--net=/run/netns/{}", node.netns))
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(holder_script(&rt));
    rt.holder_pid = spawn_detached(holder, &dir.join("holder.log"))?;
    state.nodes[i].runtime = Some(rt.clone());
    state.save()?;
    wait_for(
        &format!("{}'s private mount namespace", node.name),
        Duration::from_secs(10),
        || {
            if dir.join("holder.ready").exists() {
                return Ok(Some(()));
            }
            if !alive(rt.holder_pid) {
                bail!(
                    "mount setup failed: {}",
                    std::fs::read_to_string(dir.join("holder.log")).unwrap_or_default()
                );
            }
            Ok(None)
        },
    )?;
    Ok(())
}

/// Start node `i`'s runtime in its prepared namespaces and load the image.
pub fn start(state: &mut LabState, i: usize) -> Result<()> {
    let kind = state.spec.runtime;
    if kind == Runtime::Cni {
        return Ok(());
    }
    let node = state.nodes[i].clone();
    let archive = image::busybox_archive(&state.dir)?;
    match kind {
        Runtime::Containerd => start_containerd(state, i, &archive)?,
        Runtime::Podman => start_podman(state, i, &archive)?,
        Runtime::Cni => {}
    }
    progress(format!("{}: {kind:?} ready", node.name));
    Ok(())
}

fn start_containerd(state: &mut LabState, i: usize, archive: &Path) -> Result<()> {
    let node = state.nodes[i].clone();
    let mut rt = node.runtime.clone().unwrap();
    let c = rt.dir.join("containerd");
    let config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{c}/opt"
"#,
        root = c.join("root").display(),
        state = c.join("state").display(),
        sock = rt.socket().display(),
        c = c.display(),
    );
    std::fs::write(c.join("config.toml"), config)?;
    let mut cmd = rt.command(&node, "containerd");
    cmd.arg("--config").arg(c.join("config.toml"));
    rt.daemon_pid = Some(spawn_detached(cmd, &c.join("containerd.log"))?);
    state.nodes[i].runtime = Some(rt.clone());
    state.save()?;
    let ns = ctr_namespace(&state.spec.id);
    wait_for(
        &format!("containerd on {}", node.name),
        Duration::from_secs(20),
        || {
            if !alive(rt.daemon_pid.unwrap()) {
                bail!(
                    "containerd exited (see {})",
                    c.join("containerd.log").display()
                );
            }
            let out = rt.ctr(&node, &ns).arg("version").output()?;
            Ok(out.status.success().then_some(()))
        },
    )?;
    run(rt
        .ctr(&node, &ns)
        .args(["images", "import", "--all-platforms"])
        .arg(archive))
    .context("ctr images import of the busybox image")?;
    Ok(())
}

fn start_podman(state: &mut LabState, i: usize, archive: &Path) -> Result<()> {
    let node = state.nodes[i].clone();
    let rt = node.runtime.clone().unwrap();
    let p = rt.dir.join("podman");
    // The sandbox's hard limits are below podman's defaults (nofile
    // 1048576): runc would fail "error setting rlimits".
    let conf = format!(
        r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "runc"
tmp_dir = "{tmp}"
[network]
network_backend = "cni"
cni_plugin_dirs = ["/opt/cni/bin"]
network_config_dir = "/etc/cni/net.d"
"#,
        tmp = p.join("tmp").display()
    );
    std::fs::write(p.join("containers.conf"), conf)?;
    run(rt
        .podman(&node)
        .arg("load")
        .arg("-q")
        .arg("-i")
        .arg(archive))
    .context("podman load of the busybox image")?;
    let nets = run(rt
        .podman(&node)
        .args(["network", "ls", "--format", "{{.Name}}"]))?;
    if !String::from_utf8_lossy(&nets.stdout)
        .lines()
        .any(|l| l == NETWORK)
    {
        bail!(
            "podman on {} does not list the {NETWORK} network: {}",
            node.name,
            out_text(&nets)
        );
    }
    Ok(())
}

/// A container made by the lab: its name, address and init pid.
#[derive(Debug, Clone)]
pub struct Created {
    pub ip: String,
    pub pid: u32,
}

fn node_rt(node: &LabNode) -> Result<&NodeRuntime> {
    node.runtime
        .as_ref()
        .with_context(|| format!("{} has no container runtime", node.name))
}

/// Create and start container `name` on `node` through the lab's runtime,
/// attached to the Manx network. containerd: `ctr run --rm --cni` in the
/// foreground (detached from us), so killing the task makes ctr call DEL,
/// as a runtime that owns the pod would; `detached` instead uses `ctr run -d
/// --cni`, which never calls DEL.
pub fn create(state: &LabState, node: &LabNode, name: &str, detached: bool) -> Result<Created> {
    let rt = node_rt(node)?;
    let id = &state.spec.id;
    match rt.kind {
        Runtime::Containerd => {
            let ns = ctr_namespace(id);
            let mut cmd = rt.ctr(node, &ns);
            cmd.arg("run");
            if detached {
                cmd.arg("-d");
            } else {
                cmd.arg("--rm");
            }
            cmd.args(["--cni", "--cgroup"])
                .arg(format!("{}/{name}", cgroup_parent(id)))
                .args([IMAGE_REF, name, "sleep", "1000000"]);
            if detached {
                run(&mut cmd).with_context(|| format!("ctr run -d --cni {name}"))?;
            } else {
                spawn_detached(cmd, &rt.dir.join(format!("ctr-run-{name}.log")))?;
            }
            let log = rt.dir.join(format!("ctr-run-{name}.log"));
            let pid = wait_for(
                &format!("container {name} running on {}", node.name),
                Duration::from_secs(30),
                || {
                    let out = rt.ctr(node, &ns).args(["task", "ls"]).output()?;
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    let pid = text.lines().find_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.len() == 3 && f[0] == name && f[2] == "RUNNING")
                            .then(|| f[1].parse::<u32>().ok())
                            .flatten()
                    });
                    if pid.is_none() && !detached {
                        let l = std::fs::read_to_string(&log).unwrap_or_default();
                        if l.contains("ctr: ") {
                            bail!("ctr run --cni {name}: {}", l.trim());
                        }
                    }
                    Ok(pid)
                },
            )?;
            // go-cni has set the network up once the task is listed, but
            // `ctr run` (foreground) does so after starting it: wait for eth0.
            let ip = wait_for(
                &format!("{name}'s eth0 address"),
                Duration::from_secs(20),
                || container_ip(state, node, name),
            )?;
            Ok(Created { ip, pid })
        }
        Runtime::Podman => {
            run(rt
                .podman(node)
                .args(["run", "-d", "--name", name, "--network", NETWORK])
                .args(["--cap-add", "NET_RAW", "--cgroup-parent"])
                .arg(cgroup_parent(id))
                .args([IMAGE_REF, "sleep", "1000000"]))
            .with_context(|| format!("podman run --network {NETWORK} {name}"))?;
            let out = run(rt
                .podman(node)
                .args(["inspect", "-f", "{{.State.Pid}}", name]))?;
            let pid = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .with_context(|| format!("podman inspect {name}: {}", out_text(&out)))?;
            let ip = container_ip(state, node, name)?
                .with_context(|| format!("podman container {name} has no eth0 address"))?;
            Ok(Created { ip, pid })
        }
        Runtime::Cni => bail!("runtime cni makes no containers"),
    }
}

fn container_ip(state: &LabState, node: &LabNode, name: &str) -> Result<Option<String>> {
    let out = exec(
        state,
        node,
        name,
        &["ip", "-4", "-o", "addr", "show", "eth0"],
    )?;
    if !out.status.success() {
        return Ok(None);
    }
    // "2: eth0    inet 10.65.1.2/32 scope global eth0 ..."
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string))
}

/// Run `args` inside container `name` on `node` (`ctr task exec` / `podman exec`).
pub fn exec(state: &LabState, node: &LabNode, name: &str, args: &[&str]) -> Result<Output> {
    let rt = node_rt(node)?;
    let mut cmd = match rt.kind {
        Runtime::Containerd => {
            let mut c = rt.ctr(node, &ctr_namespace(&state.spec.id));
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            c.args(["task", "exec", "--exec-id"])
                .arg(format!("x{}-{n}", std::process::id()))
                .arg(name);
            c
        }
        Runtime::Podman => {
            let mut c = rt.podman(node);
            c.args(["exec", name]);
            c
        }
        Runtime::Cni => bail!("runtime cni makes no containers"),
    };
    cmd.args(args)
        .output()
        .with_context(|| format!("exec in container {name}"))
}

/// Ping `dst` once from inside a container pod; true if answered.
pub fn ping(state: &LabState, pod: &LabPod, dst: &str) -> Result<bool> {
    let node = state
        .nodes
        .iter()
        .find(|n| n.name == pod.node)
        .with_context(|| format!("pod {} on unknown node {}", pod.name, pod.node))?;
    let out = exec(state, node, &pod.name, &["ping", "-c1", "-W1", dst])?;
    Ok(out.status.success())
}

/// Delete container `name` the way its runtime does. podman: `podman rm -f`
/// (CNI DEL). containerd, started by [`create`] without `detached`: kill the
/// task, after which the foreground `ctr run --rm --cni` calls DEL and
/// removes the container; `detached`: kill, `ctr task rm`, `ctr container
/// rm`, no DEL (what `ctr run -d --cni` users do: the leak case).
pub fn delete(state: &LabState, node: &LabNode, name: &str, detached: bool) -> Result<()> {
    let rt = node_rt(node)?;
    match rt.kind {
        Runtime::Containerd => {
            let ns = ctr_namespace(&state.spec.id);
            run(rt
                .ctr(node, &ns)
                .args(["task", "kill", "-s", "SIGKILL", name]))
            .with_context(|| format!("ctr task kill {name}"))?;
            if detached {
                wait_for(
                    &format!("task {name} stopped"),
                    Duration::from_secs(10),
                    || {
                        let out = rt.ctr(node, &ns).args(["task", "ls"]).output()?;
                        Ok((!String::from_utf8_lossy(&out.stdout).lines().any(|l| {
                            l.split_whitespace().next() == Some(name) && l.contains("RUNNING")
                        }))
                        .then_some(()))
                    },
                )?;
                run(rt.ctr(node, &ns).args(["task", "rm", name]))?;
                run(rt.ctr(node, &ns).args(["container", "rm", name]))?;
            } else {
                wait_for(
                    &format!("ctr run --rm {name} to remove the container"),
                    Duration::from_secs(20),
                    || {
                        let out = rt.ctr(node, &ns).args(["container", "ls", "-q"]).output()?;
                        Ok((!String::from_utf8_lossy(&out.stdout)
                            .lines()
                            .any(|l| l == name))
                        .then_some(()))
                    },
                )?;
                let log = rt.dir.join(format!("ctr-run-{name}.log"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("ctr: ") {
                    bail!("ctr run --rm --cni {name} failed on exit: {}", text.trim());
                }
            }
        }
        Runtime::Podman => {
            run(rt.podman(node).args(["rm", "-f", "-t", "0", name]))
                .with_context(|| format!("podman rm -f {name}"))?;
        }
        Runtime::Cni => bail!("runtime cni makes no containers"),
    }
    Ok(())
}

/// Stop node `node`'s runtime: remove every container (podman: with DEL),
/// stop containerd, end the holder (its mount namespace goes with it), kill
/// any container process still alive, remove the lab's cgroups.
pub fn stop(state: &LabState, node: &LabNode, pods: &[LabPod]) {
    let Some(rt) = node.runtime.as_ref() else {
        return;
    };
    if alive(rt.holder_pid) {
        match rt.kind {
            Runtime::Containerd if rt.daemon_pid.is_some_and(alive) => {
                let ns = ctr_namespace(&state.spec.id);
                let ids = rt
                    .ctr(node, &ns)
                    .args(["container", "ls", "-q"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                for c in ids.lines().filter(|l| !l.is_empty()) {
                    let _ = rt
                        .ctr(node, &ns)
                        .args(["task", "kill", "-s", "SIGKILL", c])
                        .stderr(Stdio::null())
                        .status();
                }
                for c in ids.lines().filter(|l| !l.is_empty()) {
                    let _ = wait_for("task exit", Duration::from_secs(5), || {
                        let out = rt.ctr(node, &ns).args(["task", "rm", "-f", c]).output()?;
                        let gone = out.status.success()
                            || String::from_utf8_lossy(&out.stderr).contains("not found");
                        Ok(gone.then_some(()))
                    });
                    let _ = rt
                        .ctr(node, &ns)
                        .args(["container", "rm", c])
                        .stderr(Stdio::null())
                        .status();
                }
            }
            Runtime::Podman => {
                let _ = rt
                    .podman(node)
                    .args(["rm", "-a", "-f", "-t", "0"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            _ => {}
        }
    }
    if let Some(pid) = rt.daemon_pid {
        signal(pid as i32, libc::SIGTERM);
        let _ = wait_for("containerd exit", Duration::from_secs(5), || {
            Ok((!alive(pid)).then_some(()))
        });
        signal(pid as i32, libc::SIGKILL);
    }
    signal(rt.holder_pid as i32, libc::SIGKILL);
    for pod in pods.iter().filter(|p| p.node == node.name) {
        if let Some(pid) = pod.pid
            && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with("sleep\0"))
        {
            signal(pid as i32, libc::SIGKILL);
        }
    }
}

/// Remove lab `id`'s cgroup directories (`/sys/fs/cgroup/*/mxlab-<id>`),
/// deepest first, once their processes are gone.
pub fn remove_cgroups(id: &str) {
    let name = cgroup_parent(id);
    let name = name.trim_start_matches('/');
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut roots: Vec<PathBuf> = vec![Path::new("/sys/fs/cgroup").join(name)];
    for h in hierarchies.flatten() {
        roots.push(h.path().join(name));
    }
    for root in roots.into_iter().filter(|r| r.is_dir()) {
        let _ = wait_for("cgroup removal", Duration::from_secs(5), || {
            rmdir_tree(&root);
            Ok((!root.exists()).then_some(()))
        });
    }
}

fn rmdir_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Add the bridge + host-local [`BASELINE_NETWORK`] to node `i`'s
/// /etc/cni/net.d (after the Manx conflist: ctr would still pick Manx).
pub fn add_baseline_network(state: &LabState, i: usize) -> Result<()> {
    let node = &state.nodes[i];
    let rt = node_rt(node)?;
    for bin in ["bridge", "host-local"] {
        if !rt.cni_bin().join(bin).exists() {
            bail!("/usr/lib/cni/{bin} missing: apt-get install -y containernetworking-plugins");
        }
    }
    std::fs::write(
        rt.netd().join("20-bridge-baseline.conflist"),
        serde_json::to_vec_pretty(&baseline_conflist(i))?,
    )?;
    Ok(())
}

/// One podman trial on `node`: `podman run -d --network <network>` (create,
/// CNI ADD, start) and `podman rm -f -t 0` (stop, CNI DEL, remove), timed
/// apart.
pub fn podman_trial(
    state: &LabState,
    node: &LabNode,
    network: &str,
    name: &str,
) -> Result<(Duration, Duration)> {
    let rt = node_rt(node)?;
    if rt.kind != Runtime::Podman {
        bail!("podman_trial on a {:?} node", rt.kind);
    }
    let t0 = std::time::Instant::now();
    run(rt
        .podman(node)
        .args(["run", "-d", "--name", name, "--network", network])
        .arg("--cgroup-parent")
        .arg(cgroup_parent(&state.spec.id))
        .args([IMAGE_REF, "sleep", "1000000"]))
    .with_context(|| format!("podman run --network {network}"))?;
    let add = t0.elapsed();
    let t1 = std::time::Instant::now();
    run(rt.podman(node).args(["rm", "-f", "-t", "0", name]))
        .with_context(|| format!("podman rm -f {name}"))?;
    Ok((add, t1.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{LabSpec, Mode};

    fn state() -> LabState {
        let mut spec = LabSpec::new("unit", 2, Mode::Direct);
        spec.runtime = Runtime::Podman;
        let dir = PathBuf::from("/run/manx-lab/unit");
        LabState {
            spec,
            dir: dir.clone(),
            namespaces: vec![],
            nodes: vec![LabNode {
                name: "node1".into(),
                netns: "mxlab-unit-n1".into(),
                ip: "172.30.0.11".parse().unwrap(),
                prefix_len: 24,
                ip6: None,
                subnet: 0,
                route_reflector: false,
                pid: None,
                run_dir: dir.join("node1"),
                runtime: None,
            }],
            pods: vec![],
            etcd_pid: None,
        }
    }

    #[test]
    fn runtime_names_parse_and_unknown_is_refused_by_name() {
        assert_eq!(
            "containerd".parse::<Runtime>().unwrap(),
            Runtime::Containerd
        );
        assert_eq!("podman".parse::<Runtime>().unwrap(), Runtime::Podman);
        assert_eq!("cni".parse::<Runtime>().unwrap(), Runtime::Cni);
        let e = "docker".parse::<Runtime>().unwrap_err().to_string();
        assert!(e.contains("\"docker\"") && e.contains("podman"), "{e}");
    }

    #[test]
    fn conflist_is_the_lab_plugin_config_logging_to_the_node_only() {
        let s = state();
        let c = conflist(&s, &s.nodes[0]);
        assert_eq!(c["name"], NETWORK);
        assert_eq!(c["cniVersion"], "1.0.0");
        let p = &c["plugins"][0];
        assert_eq!(p["type"], "manx");
        assert_eq!(p["nodename"], "node1");
        assert_eq!(p["log_file_path"], "/run/manx-lab/unit/node1/cni.log");
        assert_eq!(p["manx_db"], "/run/manx-lab/unit/manx.db");
        assert!(
            p.get("cniVersion").is_none() && p.get("name").is_none(),
            "{p}"
        );
        let b = baseline_conflist(3);
        assert_eq!(
            b["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.231.3.0/24"
        );
    }

    #[test]
    fn holder_binds_the_four_cni_paths_and_covers_run_last() {
        let rt = NodeRuntime {
            kind: Runtime::Podman,
            dir: PathBuf::from("/run/manx-lab/unit/node1/rt"),
            holder_pid: 0,
            daemon_pid: None,
        };
        let s = holder_script(&rt);
        for dst in [
            "/etc/cni/net.d",
            "/opt/cni/bin",
            "/var/lib/cni",
            "/run/netns",
        ] {
            assert!(s.contains(&format!(" {dst}\n")), "{dst} not bound:\n{s}");
        }
        // /run is overlaid after the others (their upper dirs are under
        // /run/manx-lab), and the lab root is bound back right after it.
        let run = s.find("ovl /run\n").unwrap();
        assert!(s.find("ovl /opt").unwrap() < run && s.find("ovl /var/lib").unwrap() < run);
        assert!(
            s[run..].starts_with(&format!(
                "ovl /run\nmount -n -c --bind /proc/self/cwd {LAB_ROOT}\n"
            )),
            "{s}"
        );
        // No mount writes /run/mount/utab in the host's /run.
        assert!(
            s.lines()
                .filter(|l| l.contains("mount "))
                .all(|l| l.contains("mount -n ")),
            "{s}"
        );
    }
}
