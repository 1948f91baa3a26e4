//! BFD over UDP: one task owning the sockets, every session's timers and
//! state machine ([`super::Session`]), reporting state changes.
//!
//! Single hop (RFC 5881): packets to port 3784, sent with TTL 255 and
//! accepted only with TTL 255 (a packet from further away is dropped, as
//! GTSM). Multihop (RFC 5883): port 4784, accepted with a TTL of at least
//! `255 - max_hops + 1`. Every session sends from one source port in
//! 49152–65535. Sessions are chosen by Your Discriminator, or by the
//! source address when it is 0 (§6.8.6).
//!
//! Sockets are bound by [`Sockets::bind`], synchronously, so a caller can
//! bind them inside a network namespace and run the task anywhere.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, setsockopt, sockopt};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::packet::{
    ControlPacket, Diag, MULTI_HOP_PORT, SINGLE_HOP_PORT, SOURCE_PORTS, State, TTL,
};
use super::session::{Config, Input, Output, Session, jittered};

/// How a peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Hops {
    /// Directly connected (RFC 5881): TTL 255 in both directions.
    Single,
    /// Up to this many hops away (RFC 5883).
    Multi(u8),
}

/// One session the owner asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerSpec {
    pub peer: Ipv4Addr,
    pub hops: Hops,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
    pub passive: bool,
}

/// A state change of a session (RFC 5882: the owner takes a BGP session
/// down on `to != Up` after Up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub peer: Ipv4Addr,
    pub from: State,
    pub to: State,
    pub diag: Diag,
    /// The peer advertises the C bit (its BFD survives its control plane).
    pub remote_control_plane_independent: bool,
}

/// A session as `manxctl node status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionStatus {
    pub peer: Ipv4Addr,
    pub state: State,
    pub remote_state: State,
    pub local_diag: String,
    pub tx_interval_ms: u64,
    pub detection_time_ms: u64,
}

/// The bound sockets: a receiver per port and one sender.
#[derive(Debug)]
pub struct Sockets {
    single: StdUdpSocket,
    multi: StdUdpSocket,
    send: StdUdpSocket,
}

impl Sockets {
    /// Bind the receivers on `local`:3784 and :4784 and a sender on `local`
    /// with a free source port in 49152–65535, TTL 255, in the calling
    /// thread's network namespace.
    pub fn bind(local: Ipv4Addr) -> io::Result<Sockets> {
        let recv = |port: u16| -> io::Result<StdUdpSocket> {
            let s = StdUdpSocket::bind(SocketAddrV4::new(local, port))?;
            setsockopt(&s, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        let (single, multi) = (recv(SINGLE_HOP_PORT)?, recv(MULTI_HOP_PORT)?);
        let mut last = None;
        // Spread the start so two daemons on one host rarely collide.
        let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
        let first = std::process::id() % span;
        for i in 0..span {
            let port = SOURCE_PORTS.start() + ((first + i) % span) as u16;
            match StdUdpSocket::bind(SocketAddrV4::new(local, port)) {
                Ok(s) => {
                    s.set_ttl(u32::from(TTL))?;
                    s.set_nonblocking(true)?;
                    return Ok(Sockets {
                        single,
                        multi,
                        send: s,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free BFD source port")))
    }
}

pub(crate) enum Command {
    Add(PeerSpec),
    Remove(Ipv4Addr),
    AdminDown(Ipv4Addr, bool),
    Status(oneshot::Sender<Vec<SessionStatus>>),
}

/// Talks to the running task.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
}

impl Handle {
    /// A handle over another carrier of the same commands (manx-bfdd's
    /// client).
    pub(crate) fn from_sender(tx: mpsc::Sender<Command>) -> Handle {
        Handle { tx }
    }
    /// Start (or reconfigure) a session with `spec.peer`.
    pub async fn add(&self, spec: PeerSpec) {
        let _ = self.tx.send(Command::Add(spec)).await;
    }
    /// Remove the session (it is sent AdminDown first).
    pub async fn remove(&self, peer: Ipv4Addr) {
        let _ = self.tx.send(Command::Remove(peer)).await;
    }
    /// Set a session administratively down (true) or up again.
    pub async fn admin_down(&self, peer: Ipv4Addr, down: bool) {
        let _ = self.tx.send(Command::AdminDown(peer, down)).await;
    }
    /// [`Handle::add`] from synchronous code; a full queue is logged.
    pub fn try_add(&self, spec: PeerSpec) {
        if self.tx.try_send(Command::Add(spec)).is_err() {
            tracing::error!(peer = %spec.peer, "BFD task busy or gone: session not added");
        }
    }
    /// [`Handle::remove`] from synchronous code.
    pub fn try_remove(&self, peer: Ipv4Addr) {
        if self.tx.try_send(Command::Remove(peer)).is_err() {
            tracing::error!(%peer, "BFD task busy or gone: session not removed");
        }
    }
    /// Every session's state.
    pub async fn status(&self) -> Vec<SessionStatus> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Status(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }
}

struct Entry {
    spec: PeerSpec,
    session: Session,
    next_tx: Option<Instant>,
    detect_at: Option<Instant>,
}

/// Start the task on `sockets`; state changes go to `events`. The task
/// ends when every [`Handle`] is dropped.
pub fn spawn(sockets: Sockets, events: mpsc::Sender<Event>) -> io::Result<Handle> {
    spawn_with(sockets, events, false)
}

/// [`spawn`], with every session advertising the C bit when
/// `control_plane_independent` (manx-bfdd: the sessions outlive the BGP
/// speaker, RFC 5880 §4.1).
pub fn spawn_with(
    sockets: Sockets,
    events: mpsc::Sender<Event>,
    control_plane_independent: bool,
) -> io::Result<Handle> {
    let single = UdpSocket::from_std(sockets.single)?;
    let multi = UdpSocket::from_std(sockets.multi)?;
    let send = UdpSocket::from_std(sockets.send)?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(
        single,
        multi,
        send,
        rx,
        events,
        control_plane_independent,
    ));
    Ok(Handle { tx })
}

/// xorshift32: jitter needs spread, not secrecy.
struct Jitter(u32);

impl Jitter {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

async fn run(
    single: UdpSocket,
    multi: UdpSocket,
    send: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    control_plane_independent: bool,
) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1)
        | 1;
    let mut jitter = Jitter(seed);
    let mut next_discr = (seed >> 8).max(1);
    let mut sessions: HashMap<Ipv4Addr, Entry> = HashMap::new();
    let mut by_discr: HashMap<u32, Ipv4Addr> = HashMap::new();
    let (mut buf1, mut buf2) = ([0u8; 512], [0u8; 512]);
    loop {
        let deadline = sessions
            .values()
            .flat_map(|e| [e.next_tx, e.detect_at])
            .flatten()
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::Add(spec) => {
                        if let Some(e) = sessions.get_mut(&spec.peer) {
                            e.spec = spec;
                            let out = e.session.process(Input::SetTimers {
                                desired_min_tx: spec.desired_min_tx,
                                required_min_rx: spec.required_min_rx,
                                detect_mult: spec.detect_mult,
                            });
                            apply(e, out, &send, &events, &mut jitter).await;
                            continue;
                        }
                        let discr = next_discr;
                        next_discr = next_discr.wrapping_add(1).max(1);
                        let mut cfg = Config::new(discr);
                        cfg.desired_min_tx = spec.desired_min_tx;
                        cfg.required_min_rx = spec.required_min_rx;
                        cfg.detect_mult = spec.detect_mult.max(1);
                        cfg.passive = spec.passive;
                        cfg.control_plane_independent = control_plane_independent;
                        let session = Session::new(cfg);
                        let start = session.start();
                        let mut e = Entry { spec, session, next_tx: None, detect_at: None };
                        apply(&mut e, start, &send, &events, &mut jitter).await;
                        by_discr.insert(discr, spec.peer);
                        sessions.insert(spec.peer, e);
                    }
                    Command::Remove(peer) => {
                        if let Some(mut e) = sessions.remove(&peer) {
                            by_discr.remove(&e.session.config().local_discr);
                            let out = e.session.process(Input::AdminDown);
                            apply(&mut e, out, &send, &events, &mut jitter).await;
                        }
                    }
                    Command::AdminDown(peer, down) => {
                        if let Some(e) = sessions.get_mut(&peer) {
                            let input = if down { Input::AdminDown } else { Input::AdminUp };
                            let out = e.session.process(input);
                            apply(e, out, &send, &events, &mut jitter).await;
                        }
                    }
                    Command::Status(reply) => {
                        let mut v: Vec<SessionStatus> = sessions.values().map(|e| SessionStatus {
                            peer: e.spec.peer,
                            state: e.session.state(),
                            remote_state: e.session.remote_state(),
                            local_diag: e.session.local_diag().to_string(),
                            tx_interval_ms: e.session.tx_interval().as_millis() as u64,
                            detection_time_ms: e.session.detection_time().as_millis() as u64,
                        }).collect();
                        v.sort_by_key(|s| s.peer);
                        let _ = reply.send(v);
                    }
                }
            }
            got = recv(&single, &mut buf1) => {
                if let Some((from, ttl, len)) = got {
                    deliver(&mut sessions, &by_discr, from, ttl, &buf1[..len], false, &send, &events, &mut jitter).await;
                }
            }
            got = recv(&multi, &mut buf2) => {
                if let Some((from, ttl, len)) = got {
                    deliver(&mut sessions, &by_discr, from, ttl, &buf2[..len], true, &send, &events, &mut jitter).await;
                }
            }
            () = sleep => {
                let now = Instant::now();
                for e in sessions.values_mut() {
                    if e.detect_at.is_some_and(|t| t <= now) {
                        e.detect_at = None;
                        let out = e.session.process(Input::DetectTimer);
                        apply(e, out, &send, &events, &mut jitter).await;
                    }
                    if e.next_tx.is_some_and(|t| t <= now) {
                        e.next_tx = None;
                        let out = e.session.process(Input::TxTimer);
                        apply(e, out, &send, &events, &mut jitter).await;
                    }
                }
            }
        }
    }
}

/// One datagram with its source and TTL; `None` on a read error (logged).
async fn recv(sock: &UdpSocket, buf: &mut [u8]) -> Option<(Ipv4Addr, u8, usize)> {
    let res = sock
        .async_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let mut cmsg = nix::cmsg_space!(libc::c_int);
            let msg = recvmsg::<SockaddrIn>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            )
            .map_err(io::Error::from)?;
            let mut ttl = 0u8;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::Ipv4Ttl(t) = c {
                        ttl = u8::try_from(t).unwrap_or(0);
                    }
                }
            }
            let from = msg.address.map(|a| a.ip()).unwrap_or(Ipv4Addr::UNSPECIFIED);
            Ok((from, ttl, msg.bytes))
        })
        .await;
    match res {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::debug!(error = %e, "BFD receive failed");
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    sessions: &mut HashMap<Ipv4Addr, Entry>,
    by_discr: &HashMap<u32, Ipv4Addr>,
    from: Ipv4Addr,
    ttl: u8,
    bytes: &[u8],
    multihop_port: bool,
    send: &UdpSocket,
    events: &mpsc::Sender<Event>,
    jitter: &mut Jitter,
) {
    let p = match ControlPacket::decode(bytes) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(%from, error = %e, "BFD packet discarded");
            return;
        }
    };
    let peer = if p.your_discr != 0 {
        by_discr.get(&p.your_discr).copied()
    } else {
        Some(from)
    };
    let Some(e) = peer.and_then(|peer| sessions.get_mut(&peer)) else {
        tracing::debug!(%from, your_discr = p.your_discr, "BFD packet for no session");
        return;
    };
    // The session's peer, on the session's port, within its hop limit.
    let min_ttl = match e.spec.hops {
        Hops::Single => TTL,
        Hops::Multi(h) => TTL.saturating_sub(h.max(1)) + 1,
    };
    if e.spec.peer != from
        || multihop_port != matches!(e.spec.hops, Hops::Multi(_))
        || ttl < min_ttl
    {
        tracing::debug!(%from, ttl, "BFD packet discarded: wrong source, port or TTL");
        return;
    }
    let out = e.session.process(Input::Received(p));
    apply(e, out, send, events, jitter).await;
}

async fn apply(
    e: &mut Entry,
    out: Vec<Output>,
    send: &UdpSocket,
    events: &mpsc::Sender<Event>,
    jitter: &mut Jitter,
) {
    let port = match e.spec.hops {
        Hops::Single => SINGLE_HOP_PORT,
        Hops::Multi(_) => MULTI_HOP_PORT,
    };
    let to = SocketAddr::new(IpAddr::V4(e.spec.peer), port);
    for o in out {
        match o {
            Output::Send(p) => {
                if let Err(err) = send.send_to(&p.encode(), to).await {
                    tracing::debug!(peer = %e.spec.peer, error = %err, "BFD send failed");
                }
            }
            Output::ArmTx(d) => {
                let d = jittered(d, e.session.config().detect_mult, jitter.next());
                e.next_tx = Some(Instant::now() + d);
            }
            Output::StopTx => e.next_tx = None,
            Output::ArmDetect(d) => e.detect_at = Some(Instant::now() + d),
            Output::StopDetect => e.detect_at = None,
            Output::StateChanged { from, to, diag } => {
                tracing::info!(peer = %e.spec.peer, %from, %to, %diag, "BFD session state changed");
                let _ = events
                    .send(Event {
                        peer: e.spec.peer,
                        from,
                        to,
                        diag,
                        remote_control_plane_independent: e
                            .session
                            .remote_control_plane_independent(),
                    })
                    .await;
            }
        }
    }
}
