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
    /// Serve clients over TLS with these files (and require client certs).
    tls: Option<TestPki>,
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
            tls: None,
        })
    }

    fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn spawn(&mut self, initial_cluster: &str) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(etcd_bin());
        if let Some(pki) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
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
            if member_status(&self.client_url(), self.tls.as_ref())
                .await
                .is_some()
            {
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
async fn member_status(url: &str, tls: Option<&TestPki>) -> Option<(u64, u64)> {
    let mut opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(1));
    if let Some(pki) = tls {
        opts = opts.with_tls(pki.client_tls().ok()?);
    }
    let mut client = etcd_client::Client::connect([url], Some(opts)).await.ok()?;
    let status = tokio::time::timeout(Duration::from_secs(2), client.status())
        .await
        .ok()?
        .ok()?;
    let member = status.header()?.member_id();
    (status.leader() != 0).then_some((member, status.leader()))
}

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The root password of [`EtcdServer::start_secure`] servers.
pub const TEST_ROOT_PASSWORD: &str = "manx-test-root-pw";

/// Whether the `openssl` CLI runs (to make test certificates).
pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `true` if etcd and openssl can be run for a TLS test. Otherwise prints
/// why the test is skipped and returns `false` — or panics when `CI=true`.
pub fn require_etcd_and_openssl() -> bool {
    if !require_etcd() {
        return false;
    }
    if openssl_available() {
        return true;
    }
    let why = "openssl CLI not installed (apt-get install openssl): cannot make test certificates";
    if in_ci() {
        panic!("CI=true and {why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// A throwaway PKI: a CA, a server certificate for 127.0.0.1/localhost, and
/// a client certificate (CN=root). PEM files, P-256 keys, valid one day.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("run openssl: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

impl TestPki {
    /// Make the CA and both certificates under `dir` with the openssl CLI.
    pub fn generate(dir: &Path) -> io::Result<TestPki> {
        std::fs::create_dir_all(dir)?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=manx-test-ca"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca)?;
        for (name, cn, ext) in [
            (
                "server",
                "127.0.0.1",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
            ),
            (
                "client",
                "root",
                "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            ),
        ] {
            let subj = format!("/CN={cn}");
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            let extfile = format!("{name}.ext");
            std::fs::write(dir.join(&extfile), ext)?;
            let mut req = vec!["req", "-subj", &subj];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr]);
            openssl(dir, &req)?;
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-out",
                    &pem,
                    "-extfile",
                    &extfile,
                ],
            )?;
        }
        Ok(TestPki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        })
    }

    /// Client TLS options trusting the CA and presenting the client cert.
    pub fn client_tls(&self) -> io::Result<etcd_client::TlsOptions> {
        Ok(etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&self.ca)?))
            .identity(etcd_client::Identity::from_pem(
                std::fs::read(&self.client_cert)?,
                std::fs::read(&self.client_key)?,
            )))
    }
}

/// One etcd server on loopback, killed and deleted on drop.
#[derive(Debug)]
pub struct EtcdServer {
    member: Member,
    initial_cluster: String,
    /// Set by [`EtcdServer::start_secure`]: root user's password.
    root_password: Option<String>,
    _dir: TempDir,
}

impl EtcdServer {
    /// Start a single-member etcd on free ports and wait until it serves.
    pub async fn start() -> io::Result<EtcdServer> {
        Self::start_with(false).await
    }

    /// Like [`Self::start`], but clients must use TLS with a client
    /// certificate (from a fresh throwaway CA made with the `openssl` CLI),
    /// and auth is on: user `root`, password [`TEST_ROOT_PASSWORD`].
    /// [`Self::config`] carries all of it. Needs `openssl` (see
    /// [`require_openssl`]).
    pub async fn start_secure() -> io::Result<EtcdServer> {
        let mut server = Self::start_with(true).await?;
        let cfg = server.config();
        let opts = etcd_client::ConnectOptions::new().with_tls(
            server
                .pki()
                .expect("secure server has a PKI")
                .client_tls()?,
        );
        let mut client = etcd_client::Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(io::Error::other)?;
        client
            .user_add("root", TEST_ROOT_PASSWORD, None)
            .await
            .map_err(io::Error::other)?;
        client
            .user_grant_role("root", "root")
            .await
            .map_err(io::Error::other)?;
        client.auth_enable().await.map_err(io::Error::other)?;
        server.root_password = Some(TEST_ROOT_PASSWORD.into());
        Ok(server)
    }

    /// The throwaway PKI of a [`Self::start_secure`] server.
    pub fn pki(&self) -> Option<&TestPki> {
        self.member.tls.as_ref()
    }

    async fn start_with(secure: bool) -> io::Result<EtcdServer> {
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
            if secure {
                member.tls = Some(TestPki::generate(&dir.0.join("pki"))?);
            }
            let initial_cluster = format!("m0={}", member.peer_url());
            member.spawn(&initial_cluster)?;
            match member.wait_healthy(START_TIMEOUT).await {
                Ok(()) => {
                    return Ok(EtcdServer {
                        member,
                        initial_cluster,
                        root_password: None,
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

    /// A config that reaches this server (with TLS files and credentials
    /// for a secure one).
    pub fn config(&self) -> EtcdConfig {
        let pki = self.pki();
        EtcdConfig {
            endpoints: vec![self.endpoint()],
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ca_cert: pki.map(|p| p.ca.clone()),
            cert: pki.map(|p| p.client_cert.clone()),
            key: pki.map(|p| p.client_key.clone()),
            username: self.root_password.as_ref().map(|_| "root".to_string()),
            password: self.root_password.clone(),
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
            let Some((_, leader)) = member_status(&m.client_url(), m.tls.as_ref()).await else {
                continue;
            };
            for (i, other) in self.members.iter().enumerate() {
                if other.child.is_some()
                    && member_status(&other.client_url(), other.tls.as_ref())
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
