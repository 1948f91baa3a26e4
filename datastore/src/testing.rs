//! Test helpers (feature `testing`): real etcd servers on loopback.
//!
//! [`EtcdServer`] runs Debian's `/usr/bin/etcd` on free `127.0.0.1` ports
//! with a temporary data directory; [`EtcdCluster`] runs several members.
//! Both kill their processes and delete their directories on drop.
//!
//! Tests that need etcd start with:
//!
//! ```no_run
//! # async fn t() {
//! if !datastore::testing::require_etcd() { return; }
//! let etcd = datastore::testing::EtcdServer::start().await.unwrap();
//! # }
//! ```
//!
//! `require_etcd` prints why it skips; with `CI=true` it panics instead, so a
//! CI machine without etcd fails loudly.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::etcd::EtcdConfig;

/// Where Debian's etcd-server package puts the binary (override: `ETCD_BIN`).
pub const ETCD_BIN: &str = "/usr/bin/etcd";

fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(ETCD_BIN))
}

/// Whether the etcd binary is installed.
pub fn etcd_available() -> bool {
    etcd_bin().is_file()
}

/// Whether `CI=true`: missing tools fail tests instead of skipping them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `true` if etcd can be run. Otherwise prints why the test is skipped and
/// returns `false` — or panics when `CI=true`.
pub fn require_etcd() -> bool {
    if etcd_available() {
        return true;
    }
    let why = format!(
        "{} not installed (apt-get install etcd-server)",
        etcd_bin().display()
    );
    if in_ci() {
        panic!("CI=true and {why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// A free TCP port on 127.0.0.1 (bound then released; a race with another
/// process is possible but rare, and `start` retries).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A fresh directory under the system temp dir, removed by [`TempDir`]'s drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> io::Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "manx-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One etcd member's identity and process.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn new(name: String, root: &Path) -> io::Result<Self> {
        Ok(Member {
            data_dir: root.join(format!("{name}.etcd")),
            log: root.join(format!("{name}.log")),
            name,
            client_port: free_port()?,
            peer_port: free_port()?,
            child: None,
        })
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self, initial_cluster: &str) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(etcd_bin())
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(self.client_url())
            .arg("--advertise-client-urls")
            .arg(self.client_url())
            .arg("--listen-peer-urls")
            .arg(self.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(self.peer_url())
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(format!("manx-test-{}", std::process::id()))
            // Short heartbeats: elections after a kill take ~1 s, not 10.
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("spawn {}: {e}", etcd_bin().display()))
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Wait until this member answers a status request (and its process is
    /// still alive).
    async fn wait_healthy(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(io::Error::other(format!(
                    "etcd member {} exited ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                )));
            }
            if member_status(&self.client_url()).await.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "etcd member {} not healthy after {timeout:?}; log:\n{}",
                        self.name,
                        self.log_tail()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// (member id, leader id) of the member at `url`, if it answers and has a
/// leader.
async fn member_status(url: &str) -> Option<(u64, u64)> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(1));
    let mut client = etcd_client::Client::connect([url], Some(opts)).await.ok()?;
    let status = tokio::time::timeout(Duration::from_secs(2), client.status())
        .await
        .ok()?
        .ok()?;
    let member = status.header()?.member_id();
    (status.leader() != 0).then_some((member, status.leader()))
}

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One etcd server on loopback, killed and deleted on drop.
#[derive(Debug)]
pub struct EtcdServer {
    member: Member,
    initial_cluster: String,
    _dir: TempDir,
}

impl EtcdServer {
    /// Start a single-member etcd on free ports and wait until it serves.
    pub async fn start() -> io::Result<EtcdServer> {
        if !etcd_available() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} not installed (apt-get install etcd-server)",
                    etcd_bin().display()
                ),
            ));
        }
        let mut last_err = None;
        // Retried: a port picked as free may be taken before etcd binds it.
        for _ in 0..3 {
            let dir = TempDir::new("etcd")?;
            let mut member = Member::new("m0".into(), &dir.0)?;
            let initial_cluster = format!("m0={}", member.peer_url());
            member.spawn(&initial_cluster)?;
            match member.wait_healthy(START_TIMEOUT).await {
                Ok(()) => {
                    return Ok(EtcdServer {
                        member,
                        initial_cluster,
                        _dir: dir,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("etcd did not start")))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.member.client_url()
    }

    /// A config that reaches this server.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint()],
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..EtcdConfig::default()
        }
    }

    /// Kill the process (SIGKILL), keeping its data directory and ports.
    pub fn kill(&mut self) {
        self.member.kill();
    }

    /// Start it again on the same data directory and ports, and wait until
    /// it serves.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.member.kill();
        self.member.spawn(&self.initial_cluster)?;
        self.member.wait_healthy(START_TIMEOUT).await
    }
}

/// A multi-member etcd cluster on loopback, killed and deleted on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    _dir: TempDir,
}

impl EtcdCluster {
    /// Start `size` members and wait until every one serves with a leader.
    pub async fn start(size: usize) -> io::Result<EtcdCluster> {
        if !etcd_available() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} not installed (apt-get install etcd-server)",
                    etcd_bin().display()
                ),
            ));
        }
        let dir = TempDir::new("etcd-cluster")?;
        let mut members = (0..size)
            .map(|i| Member::new(format!("m{i}"), &dir.0))
            .collect::<io::Result<Vec<_>>>()?;
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.spawn(&initial_cluster)?;
        }
        for m in &mut members {
            m.wait_healthy(START_TIMEOUT).await?;
        }
        Ok(EtcdCluster {
            members,
            initial_cluster,
            _dir: dir,
        })
    }

    /// Client URLs of every member (running or not).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// A config listing every member.
    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.endpoints(),
            dial_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
            ..EtcdConfig::default()
        }
    }

    /// Index of the current leader, as the running members see it.
    pub async fn leader(&self) -> Option<usize> {
        for m in &self.members {
            if m.child.is_none() {
                continue;
            }
            let Some((_, leader)) = member_status(&m.client_url()).await else {
                continue;
            };
            for (i, other) in self.members.iter().enumerate() {
                if other.child.is_some()
                    && member_status(&other.client_url())
                        .await
                        .is_some_and(|(id, _)| id == leader)
                {
                    return Some(i);
                }
            }
        }
        None
    }

    /// SIGKILL member `index`.
    pub fn kill(&mut self, index: usize) {
        self.members[index].kill();
    }

    /// Start member `index` again on its data directory and wait until it
    /// serves.
    pub async fn restart(&mut self, index: usize) -> io::Result<()> {
        let initial_cluster = self.initial_cluster.clone();
        let m = &mut self.members[index];
        m.kill();
        m.spawn(&initial_cluster)?;
        m.wait_healthy(START_TIMEOUT).await
    }
}
