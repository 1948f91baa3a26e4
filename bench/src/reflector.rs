//! A route reflector under test as a child process (manx-bgpd or BIRD 2),
//! configured alike: passive iBGP `rr client` peers, a cluster id, one
//! listener on loopback. Shared by the `bgp-load` and `rr-slow-peer` benches.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use bgpd::{PeerConfig, SpeakerConfig, config::ListenConfig};

use crate::bgp_client::ASN;

/// The reflector child; killed on drop.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory for configs and sockets, `<tmp>/<name>-<pid>`.
pub fn work_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// How the reflector is set up.
#[derive(Debug, Clone)]
pub struct RrSetup {
    /// The reflector's address (its router id and listener).
    pub address: Ipv4Addr,
    /// TCP port on `address`.
    pub port: u16,
    /// Its rr-client peers (passive on the reflector's side).
    pub clients: Vec<Ipv4Addr>,
    /// Hold time proposed.
    pub hold_time: u16,
}

impl RrSetup {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.address), self.port)
    }
}

/// Write a manx-bgpd config (YAML; JSON is YAML) for `setup` into `dir`.
pub fn manx_config(setup: &RrSetup, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut cfg = SpeakerConfig::new(ASN, setup.address);
    cfg.listen = Some(ListenConfig {
        address: IpAddr::V4(setup.address),
        port: setup.port,
    });
    cfg.hold_time = setup.hold_time;
    cfg.cluster_id = Some(Ipv4Addr::new(1, 1, 1, 1));
    cfg.control_socket = Some(manx_control(dir));
    cfg.peers = setup
        .clients
        .iter()
        .map(|a| {
            let mut p = PeerConfig::new(IpAddr::V4(*a), ASN);
            p.passive = true;
            p.rr_client = true;
            p
        })
        .collect();
    let path = dir.join("manx-rr.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?)?;
    Ok(path)
}

/// Where [`manx_config`] puts the control socket.
pub fn manx_control(dir: &Path) -> PathBuf {
    dir.join("bgpd.sock")
}

/// Which reflector runs, to ask it about its sessions.
#[derive(Debug, Clone)]
pub enum Kind {
    /// manx-bgpd with the control socket of [`manx_config`].
    Manx,
    /// BIRD with the control socket of [`bird_command`]; `birdc` next to `bird`.
    Bird(PathBuf),
}

impl Kind {
    /// Each client's session state as the reflector sees it (`Established`
    /// when up; otherwise its state and last error, as it says them).
    pub fn sessions(&self, setup: &RrSetup, dir: &Path) -> anyhow::Result<Vec<(Ipv4Addr, String)>> {
        match self {
            Kind::Manx => {
                let peers = bgpd::query_peers(&manx_control(dir))?;
                Ok(setup
                    .clients
                    .iter()
                    .map(|c| {
                        let state = peers
                            .iter()
                            .find(|p| p.address == IpAddr::V4(*c))
                            .map_or_else(
                                || "not configured".to_string(),
                                |p| match (&p.state, &p.last_error) {
                                    (bgpd::fsm::State::Established, _) => "Established".to_string(),
                                    (s, Some(e)) => format!("{s} ({e})"),
                                    (s, None) => s.to_string(),
                                },
                            );
                        (*c, state)
                    })
                    .collect())
            }
            Kind::Bird(bird) => {
                let birdc = bird.with_file_name("birdc");
                let out = Command::new(&birdc)
                    .arg("-s")
                    .arg(dir.join("bird.ctl"))
                    .arg("show protocols")
                    .output()
                    .with_context(|| format!("run {}", birdc.display()))?;
                let text = String::from_utf8_lossy(&out.stdout);
                // "c0  BGP  ---  up  02:51:10.123  Established"
                Ok(setup
                    .clients
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let name = format!("c{i}");
                        let state = text
                            .lines()
                            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
                            .map_or_else(
                                || "unknown (no line in birdc show protocols)".to_string(),
                                |l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "),
                            );
                        (*c, state)
                    })
                    .collect())
            }
        }
    }
}

/// Write a BIRD 2 config for `setup` into `dir`: one `protocol bgp` per
/// client from an `rr client` template (as the BIRD documentation's route
/// reflector example), `protocol device`, and `protocol direct` on `lo` so
/// that iBGP next hops (127/8) resolve.
pub fn bird_config(setup: &RrSetup, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut s = format!(
        "router id {rid};\n\
         protocol device {{ }}\n\
         protocol direct {{ ipv4; interface \"lo\"; }}\n\
         template bgp rrc {{\n  local {rid} port {port} as {ASN};\n  rr client;\n  rr cluster id 1.1.1.1;\n  passive on;\n  hold time {hold};\n  ipv4 {{ import all; export all; }};\n}}\n",
        rid = setup.address,
        port = setup.port,
        hold = setup.hold_time,
    );
    for (i, a) in setup.clients.iter().enumerate() {
        writeln!(s, "protocol bgp c{i} from rrc {{ neighbor {a} as {ASN}; }}")?;
    }
    let path = dir.join("bird-rr.conf");
    std::fs::write(&path, s)?;
    Ok(path)
}

/// The manx-bgpd command for `setup` (binary `manx`, config in `dir`).
pub fn manx_command(manx: &Path, setup: &RrSetup, dir: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(manx);
    cmd.arg("--config").arg(manx_config(setup, dir)?);
    Ok(cmd)
}

/// The BIRD command for `setup` (foreground, control socket in `dir`).
pub fn bird_command(bird: &Path, setup: &RrSetup, dir: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bird);
    cmd.arg("-f")
        .arg("-c")
        .arg(bird_config(setup, dir)?)
        .arg("-s")
        .arg(dir.join("bird.ctl"));
    Ok(cmd)
}

/// manx-bgpd next to the running executable, unless given.
pub fn manx_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("no directory of the current executable")?
            .join("manx-bgpd")),
    }
}

/// Start `cmd` (output discarded) and wait until it listens on `addr`.
pub async fn start(name: &str, cmd: Command, addr: SocketAddr) -> anyhow::Result<ChildGuard> {
    start_logged(name, cmd, addr, None).await
}

/// [`start`], with the daemon's stdout and stderr in `log` if given.
pub async fn start_logged(
    name: &str,
    mut cmd: Command,
    addr: SocketAddr,
    log: Option<&Path>,
) -> anyhow::Result<ChildGuard> {
    let (out, err) = match log {
        Some(p) => {
            let f = std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?;
            (Stdio::from(f.try_clone()?), Stdio::from(f))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("start {name}"))?;
    let mut guard = ChildGuard(child);
    wait_listening(addr, &mut guard.0).await?;
    // The probe connection is refused/closed by the reflector; let it settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(guard)
}

async fn wait_listening(addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    for _ in 0..200 {
        if let Some(st) = child.try_wait()? {
            bail!("the reflector exited early: {st}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr} after 10 s")
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Peak resident set (`VmHWM`), KiB.
pub fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident set (`VmRSS`), KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// CPU time (user + system) a process used so far, seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(f.get(i).context("short /proc/<pid>/stat")?.parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here.
    // In USER_HZ, 100 on Linux.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Open descriptors of a process.
pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}
