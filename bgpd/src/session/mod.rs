//! Session I/O: the tokio tasks that own sockets.
//!
//! * [`spawn_connection`] — one task per TCP connection: frames bytes into
//!   messages with the codec (read buffer + [`decode_message`], one reused
//!   encode buffer) and reports to the speaker actor; the actor answers with
//!   [`ConnCommand`]s.
//! * [`Listener`] — accepts connections (IPv4 and IPv6) and holds the TCP-MD5
//!   keys of the peers.
//! * [`connect`] — an outgoing connection with source address, TCP-MD5 and
//!   GTSM set up before the SYN.
//!
//! The tasks know nothing of peers or FSMs: see [`crate::tasks`] for the
//! whole picture.

pub mod sockopt;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::config::PeerConfig;
use crate::packet::{DecodeError, Message, Open, SessionCaps, decode_message, encode_message};
use crate::tasks::TaskGuard;

/// Identifies one TCP connection for the life of the speaker.
pub type ConnId = u64;

/// How long a closing connection waits for the peer to read our last
/// NOTIFICATION and close its side, so that our close does not turn into a
/// reset that discards it.
const LINGER: Duration = Duration::from_secs(2);

/// From the actor to a connection task.
#[derive(Debug)]
pub enum ConnCommand {
    /// Encode and send.
    Send(Message),
    /// Send messages already encoded (for this session's capabilities):
    /// one UPDATE encoding shared by an update group.
    SendRaw(bytes::Bytes),
    /// Flush what is queued, then close.
    Close,
}

/// From a connection task to the actor.
#[derive(Debug)]
pub enum ConnEvent {
    /// A message was decoded.
    Received(Message),
    /// Decoding failed: the actor sends the error's NOTIFICATION and closes.
    /// The task reads nothing more.
    DecodeFailed(DecodeError),
    /// The connection is gone (peer closed, I/O error, or we closed it).
    Closed(Option<String>),
}

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
    },
}

/// The actor's side of a connection task.
#[derive(Debug)]
pub struct ConnectionHandle {
    tx: mpsc::UnboundedSender<ConnCommand>,
    task: Option<TaskGuard>,
    /// Our end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
}

impl ConnectionHandle {
    /// Queue a message.
    pub fn send(&self, msg: Message) {
        let _ = self.tx.send(ConnCommand::Send(msg));
    }

    /// Queue messages already encoded with this session's capabilities.
    pub fn send_raw(&self, encoded: bytes::Bytes) {
        let _ = self.tx.send(ConnCommand::SendRaw(encoded));
    }

    /// Flush and close. The task finishes on its own (bounded by the linger
    /// time) and then reports [`ConnEvent::Closed`]; the returned guard lets
    /// the owner wait for it, or abort it by dropping.
    pub fn close(mut self) -> Option<TaskGuard> {
        let _ = self.tx.send(ConnCommand::Close);
        self.task.take()
    }
}

/// Start the task of one established TCP connection.
pub fn spawn_connection(
    id: ConnId,
    stream: TcpStream,
    events: mpsc::UnboundedSender<SessionEvent>,
) -> io::Result<ConnectionHandle> {
    let local = canonical(stream.local_addr()?);
    let remote = canonical(stream.peer_addr()?);
    stream.set_nodelay(true)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = TaskGuard::spawn(async move {
        let reason = run_connection(stream, rx, &events, id)
            .await
            .err()
            .map(|e| e.to_string());
        let _ = events.send(SessionEvent::Conn {
            id,
            event: ConnEvent::Closed(reason),
        });
    });
    Ok(ConnectionHandle {
        tx,
        task: Some(task),
        local,
        remote,
    })
}

/// Negotiated parameters, learnt by watching the OPENs go by: decoding of
/// UPDATEs depends on them, and the first UPDATE can only follow both OPENs.
#[derive(Default)]
struct CapsTracker {
    local: Option<Open>,
    remote: Option<Open>,
    caps: SessionCaps,
}

impl CapsTracker {
    fn saw(&mut self, msg: &Message, local: bool) {
        if let Message::Open(open) = msg {
            if local {
                self.local = Some(open.clone());
            } else {
                self.remote = Some(open.clone());
            }
            if let (Some(l), Some(r)) = (&self.local, &self.remote) {
                self.caps = SessionCaps::negotiate(l, r);
            }
        }
    }
}

async fn run_connection(
    stream: TcpStream,
    mut cmds: mpsc::UnboundedReceiver<ConnCommand>,
    events: &mpsc::UnboundedSender<SessionEvent>,
    id: ConnId,
) -> io::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let mut rbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut wbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut tracker = CapsTracker::default();
    let mut reading = true;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                let mut close = false;
                let mut next = cmd;
                wbuf.clear();
                // Batch what is already queued into one write.
                loop {
                    match next {
                        Some(ConnCommand::Send(msg)) => {
                            tracker.saw(&msg, true);
                            if let Err(e) = encode_message(&msg, &tracker.caps, &mut wbuf) {
                                tracing::warn!(conn = id, error = %e, "cannot encode a message; dropped");
                            }
                        }
                        Some(ConnCommand::SendRaw(bytes)) => wbuf.extend_from_slice(&bytes),
                        Some(ConnCommand::Close) | None => { close = true; break; }
                    }
                    if wbuf.len() > 64 * 1024 { break; }
                    match cmds.try_recv() {
                        Ok(c) => next = Some(c),
                        Err(_) => break,
                    }
                }
                if !wbuf.is_empty() {
                    wr.write_all(&wbuf).await?;
                }
                if close {
                    return linger_close(wr, rd).await;
                }
            }
            n = rd.read(&mut chunk), if reading => {
                let n = n?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection"));
                }
                rbuf.extend_from_slice(&chunk[..n]);
                let mut start = 0;
                loop {
                    match decode_message(&rbuf[start..], &tracker.caps) {
                        Ok(Some((msg, used))) => {
                            start += used;
                            tracker.saw(&msg, false);
                            let _ = events.send(SessionEvent::Conn { id, event: ConnEvent::Received(msg) });
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = events.send(SessionEvent::Conn { id, event: ConnEvent::DecodeFailed(e) });
                            reading = false;
                            break;
                        }
                    }
                }
                rbuf.drain(..start);
            }
        }
    }
}

/// Half-close, then read until the peer closes (or the linger time passes),
/// so the last NOTIFICATION is delivered rather than reset away.
async fn linger_close(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rd: tokio::net::tcp::OwnedReadHalf,
) -> io::Result<()> {
    let _ = wr.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// IPv4 peers reach a dual-stack listener as `::ffff:a.b.c.d`; name them by their IPv4 address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Apply GTSM to a connected or unconnected socket (RFC 5082 §3): send with
/// TTL 255, accept only 254 and above.
pub fn apply_gtsm(sock: socket2::SockRef<'_>, peer: IpAddr) -> io::Result<()> {
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
    sockopt::set_min_ttl(&*sock, v6, 254, peer).map_err(io::Error::other)
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
    if peer.ttl_security {
        apply_gtsm(socket2::SockRef::from(&sock), peer.address)?;
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
    /// Bind and start accepting.
    pub fn bind(
        addr: SocketAddr,
        events: mpsc::UnboundedSender<SessionEvent>,
    ) -> io::Result<Listener> {
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
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(128)?;
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
