//! Session I/O: the tokio tasks that own sockets.
//!
//! * [`spawn_connection`] — one task per TCP connection: frames bytes into
//!   messages with the codec and reports to the speaker actor over its
//!   bounded channel (a flooding peer is paced by TCP); the actor queues
//!   messages, shared pre-encoded UPDATEs or (for a peer that fell behind)
//!   per-prefix route changes, and a close on its [`ConnectionHandle`],
//!   never waiting on the task. An idle session holds no buffer, a slow one
//!   O(table) (see `conn.rs`).
//! * [`Listener`] — accepts connections (IPv4 and IPv6) and holds the TCP-MD5
//!   keys of the peers.
//! * [`connect`] — an outgoing connection with source address, TCP-MD5 and
//!   GTSM set up before the SYN.
//!
//! The tasks know nothing of peers or FSMs: see [`crate::tasks`] for the
//! whole picture.

mod conn;
pub mod sockopt;

pub use conn::{BYTES_CAP, ConnEvent, ConnectionHandle, INBOX_PREFIXES, LINGER, spawn_connection};

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::config::PeerConfig;
use crate::tasks::TaskGuard;

/// Identifies one TCP connection for the life of the speaker.
pub type ConnId = u64;

/// Everything the session tasks tell the actor.
#[derive(Debug)]
pub enum SessionEvent {
    /// The listener accepted a connection.
    Accepted {
        /// The connection.
        stream: TcpStream,
        /// The peer's address (v4-mapped addresses already made canonical).
        remote: SocketAddr,
    },
    /// An outgoing connection attempt finished.
    Connected {
        /// The peer dialled.
        peer: IpAddr,
        /// The attempt number the actor gave.
        attempt: u64,
        /// The connection, or why not.
        result: io::Result<TcpStream>,
    },
    /// A connection task reports.
    Conn {
        /// Which connection.
        id: ConnId,
        /// What happened.
        event: ConnEvent,
        /// The share of [`Credits`] the event holds (its prefixes); given
        /// back when the event is dropped, after the actor handled it.
        credit: Credit,
    },
}

/// Bounds the prefixes carried by session events on their way to the actor
/// (decoded and in the channel, or about to be): the channel holds at most
/// so many events, but an UPDATE weighs what its prefixes do (a 400-prefix
/// UPDATE is ~11 KiB decoded, an extended one up to ~450 KiB), so events
/// with prefixes also take one credit per prefix. A connection task that
/// has no credit for its next UPDATE waits and reads no more of its
/// socket, like one that waits for room in the channel. FIFO: a task
/// waiting for many credits is not overtaken by later, smaller requests;
/// events without prefixes (KEEPALIVE, OPEN, NOTIFICATION) take none.
#[derive(Debug, Clone)]
pub struct Credits {
    sem: Arc<Semaphore>,
    total: usize,
}

impl Credits {
    /// `prefixes` credits in all.
    pub fn new(prefixes: usize) -> Credits {
        let total = prefixes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Credits {
            sem: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Credits not taken now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// What an event with `prefixes` takes: never more than exist (an
    /// UPDATE larger than the whole budget waits for all of it).
    fn needed(&self, prefixes: usize) -> u32 {
        prefixes.clamp(1, self.total) as u32
    }

    /// Credits for `prefixes` if they are free now and nobody waits.
    pub(crate) fn try_take(&self, prefixes: usize) -> Option<Credit> {
        self.sem
            .clone()
            .try_acquire_many_owned(self.needed(prefixes))
            .ok()
            .map(|p| Credit(Some(p)))
    }

    /// Wait (in FIFO order) for credits for `prefixes`.
    pub(crate) fn take(
        &self,
        prefixes: usize,
    ) -> impl std::future::Future<Output = Credit> + Send + 'static {
        let sem = self.sem.clone();
        let n = self.needed(prefixes);
        async move { Credit(sem.acquire_many_owned(n).await.ok()) }
    }
}

/// An event's share of the [`Credits`] (none for events without prefixes).
#[derive(Debug, Default)]
pub struct Credit(Option<OwnedSemaphorePermit>);

impl Credit {
    /// No credit.
    pub fn none() -> Credit {
        Credit(None)
    }

    /// Credits held.
    pub fn count(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

/// The accept queue asked for (see the listener).
const LISTEN_BACKLOG: i32 = 4096;

/// IPv4 peers reach a dual-stack listener as `::ffff:a.b.c.d`; name them by their IPv4 address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Apply GTSM to a connected or unconnected socket (RFC 5082 §3): send with
/// TTL 255, accept only `min_ttl` and above (255 for a directly connected
/// peer; see [`PeerConfig::min_ttl`]).
pub fn apply_gtsm(sock: socket2::SockRef<'_>, peer: IpAddr, min_ttl: u8) -> io::Result<()> {
    let v6 = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.is_ipv6())
        .unwrap_or(peer.is_ipv6());
    if v6 {
        sock.set_unicast_hops_v6(255)?;
        if peer.is_ipv4() {
            let _ = sock.set_ttl_v4(255);
        }
    } else {
        sock.set_ttl_v4(255)?;
    }
    sockopt::set_min_ttl(&*sock, v6, min_ttl, peer).map_err(io::Error::other)
}

/// Dial a peer: bind the source address, install its TCP-MD5 key and GTSM,
/// then connect (bounded by `timeout`).
pub async fn connect(peer: &PeerConfig, timeout: Duration) -> io::Result<TcpStream> {
    let sock = if peer.address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(src) = peer.source_address {
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| io::Error::new(e.kind(), format!("bind source address {src}: {e}")))?;
    }
    if let Some(pw) = &peer.password {
        sockopt::set_md5_key(&sock, peer.address.is_ipv6(), peer.address, Some(pw))
            .map_err(io::Error::other)?;
    }
    if let Some(min_ttl) = peer.min_ttl() {
        apply_gtsm(socket2::SockRef::from(&sock), peer.address, min_ttl)?;
    }
    match tokio::time::timeout(timeout, sock.connect(peer.socket_addr())).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// The BGP listener: a dual-stack (for `::`) TCP listener whose accepted
/// connections go to the actor, and on which the actor installs the peers'
/// TCP-MD5 keys.
#[derive(Debug)]
pub struct Listener {
    /// A duplicate of the listening descriptor, for setsockopt.
    socket: socket2::Socket,
    v6: bool,
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    _task: TaskGuard,
}

impl Listener {
    /// Stop accepting and close the socket; when this returns the address
    /// can be bound again (a speaker restarted in the same process binds
    /// it at once).
    pub async fn close(self) {
        let Listener {
            socket,
            _task: task,
            ..
        } = self;
        drop(socket);
        task.abort_and_wait().await;
    }

    /// Bind and start accepting.
    pub fn bind(addr: SocketAddr, events: mpsc::Sender<SessionEvent>) -> io::Result<Listener> {
        let domain = if addr.is_ipv6() {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let sock =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        if addr.is_ipv6() {
            // `::` takes IPv4 too.
            sock.set_only_v6(!addr.ip().is_unspecified())?;
        }
        // The kernel answers a SYN (SYN-ACK) with the listener's TTL,
        // before any accepted socket exists: a GTSM peer drops a SYN-ACK
        // with the default TTL of 64, so the listener sends with 255
        // (RFC 5082 §3; harmless towards peers without GTSM).
        if addr.is_ipv6() {
            sock.set_unicast_hops_v6(255)?;
            // v4-mapped connections of a dual-stack listener: best effort.
            let _ = sock.set_ttl_v4(255);
        } else {
            sock.set_ttl_v4(255)?;
        }
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        // A reflector's clients all reconnect at once after it restarts:
        // ask for the system's maximum accept queue (the kernel caps it at
        // net.core.somaxconn, 4096 by default), as FRR and GoBGP do, so
        // such a storm is not turned into SYN-cookie retries on TCP's
        // doubling timer (128 overflowed with 1,000 clients at once).
        sock.listen(LISTEN_BACKLOG)?;
        let dup = sock.try_clone()?;
        let std_listener: std::net::TcpListener = sock.into();
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let local_addr = listener.local_addr()?;
        let task = TaskGuard::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, remote)) => {
                        let remote = canonical(remote);
                        if events
                            .send(SessionEvent::Accepted { stream, remote })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Listener {
            socket: dup,
            v6: addr.is_ipv6(),
            local_addr,
            _task: task,
        })
    }

    /// Install (or remove with `None`) the TCP-MD5 key of a peer.
    pub fn set_md5_key(
        &self,
        peer: IpAddr,
        password: Option<&str>,
    ) -> Result<(), sockopt::SockoptError> {
        if !self.v6 && peer.is_ipv6() {
            return Ok(());
        }
        sockopt::set_md5_key(&self.socket, self.v6, peer, password)
    }
}
