//! The node agent's IPAM service (issue 17): CNI IPAM ADD and DEL served
//! over a local unix socket by one long-lived allocator per node, so a
//! `manx-ipam` process neither connects to the datastore nor re-reads the
//! node's blocks, and concurrent pods share the allocator's group commit.
//!
//! manx-node serves it ([`Server`]); `manx-ipam` is the client
//! ([`call`], from [`crate::cni_plugin`]) and falls back to allocating
//! directly (under the host claim lock) whenever the socket is absent,
//! refuses the request, or does not answer within the timeout
//! ([`TIMEOUT_VAR`], default [`DEFAULT_TIMEOUT`]). Both paths run the
//! same ADD and DEL code ([`crate::cni_plugin::add_pod`],
//! [`crate::cni_plugin::del_pod`]), so a pod gets the same answer either
//! way, and DEL's empty-block sweep is the same.
//!
//! The socket is `<dir>/ipam-<node>-agent.sock` ([`socket_path`]), `dir`
//! being the claim lock folder (`MANX_IPAM_LOCK_DIR`, default
//! `/var/run/manx`, manx-node's run dir), one socket per node as the claim
//! locks are. Safety:
//! * the socket is mode 0600 in a folder owned by the server's user and
//!   writable by nobody else, and each connection's peer must be that user
//!   (`SO_PEERCRED`);
//! * a request is one length-prefixed JSON object of at most
//!   [`MAX_REQUEST`] octets, read within [`READ_TIMEOUT`]; unknown fields
//!   are refused;
//! * it is validated as the plugin validates its own input (container id,
//!   interface name, network name), and must be for the server's node and
//!   datastore, else refused;
//! * at most [`MAX_IN_FLIGHT`] connections are served at once; more wait
//!   in the listen backlog (and their clients fall back on the timeout).
//!
//! Wire format: a 4-octet big-endian length, then that many octets of
//! JSON ([`Request`] one way, [`Response`] the other); one request per
//! connection.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cni_proto::error::CniError;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::allocator::Ipam;

/// The client's time budget for one request, in milliseconds (connect,
/// send, answer); `0` never uses the agent.
pub const TIMEOUT_VAR: &str = "MANX_IPAM_AGENT_TIMEOUT_MS";

/// Default client budget: a healthy agent answers in milliseconds; a hung
/// one costs an ADD this much before the direct fallback.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest request (and response) accepted, in octets.
pub const MAX_REQUEST: usize = 16 * 1024;

/// How long the server waits for a connection's request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// Longest accepted pool name or CIDR, pod name or namespace.
const MAX_FIELD: usize = 253;

/// Most pools a request may name per family.
const MAX_POOLS: usize = 16;

/// The socket of `node`'s agent in the claim lock folder `dir`.
pub fn socket_path(dir: &Path, node: &str) -> PathBuf {
    crate::allocator::host_file(dir, node, "agent.sock")
}

/// The operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Add,
    Del,
}

/// One CNI IPAM request, as `manx-ipam` received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub op: Op,
    /// The plugin's node name; must be the server's.
    pub node: String,
    /// The plugin's datastore (`DatastoreConfig::describe`, no secrets);
    /// must be the server's.
    pub datastore: String,
    /// The network name (`<network>.<container id>` is the handle).
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub v4: bool,
    #[serde(default)]
    pub v6: bool,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    /// The plugin's `MANX_IPAM_EMPTY_BLOCK_GRACE_SECS` when it sets one:
    /// served only if it is the server's (else the direct path applies it).
    #[serde(default)]
    pub empty_block_grace_secs: Option<u64>,
}

impl Request {
    /// The IPAM handle.
    pub fn handle(&self) -> String {
        format!("{}.{}", self.network, self.container_id)
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    /// ADD: the addresses the handle holds.
    Ips { ips: Vec<IpAddr> },
    /// DEL done.
    Done,
    /// The operation failed: the CNI error to report (as the direct path
    /// would have).
    Error {
        code: u32,
        msg: String,
        #[serde(default)]
        details: String,
    },
    /// Not served here (another node or datastore, invalid request): the
    /// client allocates directly.
    Refused { msg: String },
}

impl Response {
    fn error(e: CniError) -> Response {
        Response::Error {
            code: e.code,
            msg: e.msg,
            details: e.details,
        }
    }
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Why the request is not served here, if it is not.
fn refusal(req: &Request, node: &str, datastore: &str, grace: Duration) -> Option<String> {
    if req.node != node {
        return Some(format!(
            "this agent serves node {node:?}, the request is for node {:?}: \
             the plugin's nodename must be this node's",
            req.node
        ));
    }
    if req.datastore != datastore {
        return Some(format!(
            "this agent uses datastore {datastore}, the request names {}",
            req.datastore
        ));
    }
    if let Some(g) = req.empty_block_grace_secs
        && g != grace.as_secs()
    {
        return Some(format!(
            "the plugin's empty-block grace is {g} s, this agent's {} s",
            grace.as_secs()
        ));
    }
    let checks = [
        cni_proto::env::validate_container_id(&req.container_id).err(),
        cni_proto::env::validate_ifname(&req.ifname).err(),
    ];
    if let Some(e) = checks.into_iter().flatten().next() {
        return Some(e.msg);
    }
    let network_ok = !req.network.is_empty()
        && req.network.len() <= MAX_FIELD
        && req
            .network
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !network_ok {
        return Some(format!("network name {:?} is not valid", req.network));
    }
    for (what, v) in [("namespace", &req.namespace), ("pod", &req.pod)] {
        if v.as_ref()
            .is_some_and(|s| s.len() > MAX_FIELD || s.chars().any(char::is_control))
        {
            return Some(format!("{what} is not a valid name"));
        }
    }
    for pools in [&req.ipv4_pools, &req.ipv6_pools] {
        if pools.len() > MAX_POOLS
            || pools
                .iter()
                .any(|p| p.len() > MAX_FIELD || p.chars().any(char::is_control))
        {
            return Some(format!("at most {MAX_POOLS} pools of valid names"));
        }
    }
    if req.op == Op::Add && !req.v4 && !req.v6 {
        return Some("an ADD for neither IPv4 nor IPv6".into());
    }
    None
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered with `ips`, `done` or `error`.
    pub served: AtomicU64,
    /// Requests refused (or unreadable).
    pub refused: AtomicU64,
}

/// The server: one allocator for one node.
#[derive(Debug)]
pub struct Server {
    ipam: Arc<Ipam>,
    node: String,
    datastore: String,
    in_flight: Arc<Semaphore>,
    pub stats: Stats,
}

impl Server {
    /// Serves `node` with `ipam` (its options should carry the same claim
    /// lock folder and empty-block grace as the plugin's, so direct and
    /// served allocations coordinate); `datastore` is the store's
    /// `DatastoreConfig::describe`.
    pub fn new(ipam: Arc<Ipam>, node: &str, datastore: &str) -> Arc<Server> {
        Arc::new(Server {
            ipam,
            node: node.to_string(),
            datastore: datastore.to_string(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            stats: Stats::default(),
        })
    }

    /// Binds the socket of this server's node in `dir`: the folder is
    /// created 0700 if missing and must be owned by this user and writable
    /// by nobody else; a socket left by an earlier agent is replaced.
    pub fn bind(&self, dir: &Path) -> Result<(UnixListener, PathBuf), String> {
        bind(dir, &self.node)
    }

    /// Accepts and serves connections until the future is dropped.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        loop {
            let permit = match self.in_flight.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return,
            };
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "IPAM socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.connection(stream).await;
                drop(permit);
            });
        }
    }

    async fn connection(&self, mut stream: UnixStream) {
        match stream.peer_cred() {
            Ok(c) if c.uid() == euid() => {}
            Ok(c) => {
                tracing::warn!(
                    uid = c.uid(),
                    "IPAM socket: connection from another user refused"
                );
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "IPAM socket: no peer credentials; refused");
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let req = match tokio::time::timeout(READ_TIMEOUT, read_frame(&mut stream)).await {
            Ok(Ok(bytes)) => serde_json::from_slice::<Request>(&bytes)
                .map_err(|e| format!("not a valid IPAM request: {e}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no request within {READ_TIMEOUT:?}")),
        };
        let req = match req {
            Ok(r) => r,
            Err(msg) => {
                tracing::warn!(%msg, "IPAM socket: bad request refused");
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = write_frame(&mut stream, &Response::Refused { msg }).await;
                return;
            }
        };
        if let Some(msg) = refusal(
            &req,
            &self.node,
            &self.datastore,
            self.ipam.opts.empty_block_grace,
        ) {
            tracing::warn!(container = %req.container_id, %msg, "IPAM socket: request refused");
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = write_frame(&mut stream, &Response::Refused { msg }).await;
            return;
        }
        let handle = req.handle();
        let response = match req.op {
            Op::Add => {
                let pod = crate::cni_plugin::PodAdd {
                    handle: handle.clone(),
                    node: req.node.clone(),
                    container_id: req.container_id.clone(),
                    namespace: req.namespace.clone(),
                    pod: req.pod.clone(),
                    v4: req.v4,
                    v6: req.v6,
                    ipv4_pools: req.ipv4_pools.clone(),
                    ipv6_pools: req.ipv6_pools.clone(),
                };
                match crate::cni_plugin::add_pod(&self.ipam, &pod).await {
                    Ok(ips) => Response::Ips { ips },
                    Err(e) => Response::error(e),
                }
            }
            Op::Del => match crate::cni_plugin::release_pod(&self.ipam, &handle).await {
                Ok(()) => Response::Done,
                Err(e) => Response::error(e),
            },
        };
        self.stats.served.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = write_frame(&mut stream, &response).await {
            // The client gave up (timeout) and allocates directly; an ADD
            // made here stays on the handle and its DEL releases it.
            tracing::warn!(%handle, error = %e, "IPAM socket: client gone before the answer");
        }
        drop(stream);
        // DEL's housekeeping after the answer, as the plugin does it after
        // the release: the node's blocks empty for the grace period.
        if req.op == Op::Del && matches!(response, Response::Done) {
            crate::cni_plugin::sweep_after_del(&self.ipam, &self.node).await;
        }
    }
}

fn bind(dir: &Path, node: &str) -> Result<(UnixListener, PathBuf), String> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
    let shown = dir.display();
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating {shown}: {e}"))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("{shown} is not a folder"));
    }
    if meta.uid() != euid() || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{shown} must be owned by uid {} and writable by nobody else (it is uid {}, mode {:o}): \
             chown it and chmod go-w it",
            euid(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    let path = socket_path(dir, node);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(&path)
                .map_err(|e| format!("removing the old {}: {e}", path.display()))?;
        }
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a socket: remove it",
                path.display()
            ));
        }
        Err(_) => {}
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod 0600 {}: {e}", path.display()))?;
    Ok((listener, path))
}

async fn read_frame(stream: &mut UnixStream) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| format!("reading the length: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_REQUEST {
        return Err(format!("{len} octets is more than {MAX_REQUEST}"));
    }
    let mut buf = vec![0u8; len];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("reading {len} octets: {e}"))?;
    Ok(buf)
}

async fn write_frame(stream: &mut UnixStream, v: &impl Serialize) -> Result<(), String> {
    let body = serde_json::to_vec(v).map_err(|e| e.to_string())?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

/// Sends `req` to the agent at `path` and reads its answer, all within
/// `timeout`. `Err` says why the agent did not answer (no socket, nobody
/// listening, closed, timed out): the caller falls back.
pub async fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Response, String> {
    let exchange = async {
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| format!("connecting to {}: {e}", path.display()))?;
        write_frame(&mut stream, req).await?;
        let bytes = read_frame(&mut stream).await?;
        serde_json::from_slice::<Response>(&bytes).map_err(|e| format!("bad answer: {e}"))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {} within {timeout:?}",
            path.display()
        )),
    }
}

/// The client's budget from `MANX_IPAM_AGENT_TIMEOUT_MS`: `None` when the
/// agent is not to be used (`0`); an unparsable value is an error naming
/// the variable.
pub fn timeout_from(value: Option<&str>) -> Result<Option<Duration>, String> {
    match value {
        None => Ok(Some(DEFAULT_TIMEOUT)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(ms) => Ok(Some(Duration::from_millis(ms))),
            Err(_) => Err(format!(
                "{TIMEOUT_VAR}={v:?} is not a whole number of milliseconds; set it to e.g. 5000 (0: never use the node agent) or unset it"
            )),
        },
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
