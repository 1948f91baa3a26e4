//! A scripted BGP peer for speaker tests: a real TCP session on loopback
//! that speaks our own codec (`bgpd::packet`). It sends what the script says
//! (OPEN, UPDATE, End-of-RIB, NOTIFICATION, or just closes the socket) and
//! hands every message it receives to the test, in order.
//!
//! Shared by `speaker_golden.rs`, `from_datastore.rs` and
//! `gr_sweep_clock.rs` (as `crate::speaker_golden::peer`).
#![allow(dead_code)] // not every helper is used

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bgpd::packet::{
    AfiSafi, AsPath, Capability, GracefulRestart, Message, Nlri, Notification, Open, Origin,
    PathAttribute, SessionCaps, Update, decode_message, encode_message,
};
use ipnetwork::IpNetwork;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// What the peer says about itself in its OPEN.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Its AS.
    pub asn: u32,
    /// Its BGP identifier.
    pub router_id: Ipv4Addr,
    /// Graceful-restart capability with this restart time (RFC 4724 §3),
    /// or none.
    pub restart_time: Option<u16>,
    /// The N bit of that capability (RFC 8538).
    pub notification: bool,
}

impl PeerSpec {
    /// The OPEN this peer sends: IPv4 unicast only, 4-octet AS, route
    /// refresh, optional GR, and hold time 0 so that neither side runs
    /// keepalive or hold timers (RFC 4271 §4.2: 0 means none) — nothing
    /// happens on the wire that the script did not ask for.
    pub fn open(&self) -> Open {
        let mut caps = vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(self.asn),
        ];
        if let Some(t) = self.restart_time {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: false,
                notification: self.notification,
                restart_time: t,
                // F bit set: a peer coming back after a drop says it kept
                // forwarding, so the helper keeps its stale routes until
                // End-of-RIB (RFC 4724 §4.2; F clear would sweep them at
                // once: heavy_netns_topologies checks that with BIRD).
                families: vec![(AfiSafi::IPV4_UNICAST, true)],
            }));
        }
        Open::new(self.asn, 0, self.router_id, caps)
    }
}

/// Something the peer saw on its session.
#[derive(Debug, Clone)]
pub enum Event {
    /// A decoded message.
    Msg(Message),
    /// The connection ended (EOF, reset or a decode error), with why.
    Closed(String),
}

/// Path attributes a script puts on an announcement.
#[derive(Debug, Clone)]
pub struct Attrs {
    pub next_hop: Ipv4Addr,
    pub as_path: Vec<u32>,
    pub origin: Origin,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
}

impl Attrs {
    /// ORIGIN IGP, empty AS_PATH, the given next hop.
    pub fn new(next_hop: Ipv4Addr) -> Attrs {
        Attrs {
            next_hop,
            as_path: Vec::new(),
            origin: Origin::Igp,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
        }
    }

    /// The attribute list in type-code order (RFC 4271 §5 recommends it).
    pub fn to_list(&self) -> Vec<PathAttribute> {
        let mut v = vec![
            PathAttribute::Origin(self.origin),
            PathAttribute::AsPath(AsPath::from_sequence(self.as_path.clone())),
            PathAttribute::NextHop(self.next_hop),
        ];
        if let Some(m) = self.med {
            v.push(PathAttribute::MultiExitDisc(m));
        }
        if let Some(l) = self.local_pref {
            v.push(PathAttribute::LocalPref(l));
        }
        if !self.communities.is_empty() {
            v.push(PathAttribute::Communities(self.communities.clone()));
        }
        if let Some(o) = self.originator_id {
            v.push(PathAttribute::OriginatorId(o));
        }
        if !self.cluster_list.is_empty() {
            v.push(PathAttribute::ClusterList(self.cluster_list.clone()));
        }
        v
    }
}

/// An established session from the scripted side.
#[derive(Debug)]
pub struct ScriptedPeer {
    /// Our address on the session.
    pub local: SocketAddr,
    /// The speaker's address on the session.
    pub remote: SocketAddr,
    /// The speaker's OPEN.
    pub remote_open: Open,
    /// What both OPENs negotiated (how we encode).
    pub caps: SessionCaps,
    writer: Option<OwnedWriteHalf>,
    rx: mpsc::UnboundedReceiver<Event>,
    reader: tokio::task::JoinHandle<()>,
}

/// Why a connection attempt did not reach Established.
#[derive(Debug)]
pub struct ConnectError(pub String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl ScriptedPeer {
    /// Connect from `local` (port chosen by the kernel) to the speaker at
    /// `remote` and exchange OPEN / KEEPALIVE up to Established (§8.2.2).
    /// Fails if the speaker closes or sends a NOTIFICATION first (e.g. it
    /// is still in Idle after the previous session: retry).
    pub async fn connect(
        local: IpAddr,
        remote: SocketAddr,
        spec: &PeerSpec,
    ) -> Result<ScriptedPeer, ConnectError> {
        let sock = if local.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| ConnectError(format!("socket: {e}")))?;
        sock.bind(SocketAddr::new(local, 0))
            .map_err(|e| ConnectError(format!("bind {local}: {e}")))?;
        let stream = sock
            .connect(remote)
            .await
            .map_err(|e| ConnectError(format!("connect {local} -> {remote}: {e}")))?;
        Self::handshake(stream, spec).await
    }

    /// Connect, retrying for up to `limit` while the speaker refuses (its
    /// IdleHold back-off after a previous session is 1 s, doubling).
    pub async fn connect_retrying(
        local: IpAddr,
        remote: SocketAddr,
        spec: &PeerSpec,
        limit: Duration,
    ) -> ScriptedPeer {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match Self::connect(local, remote, spec).await {
                Ok(p) => return p,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("scripted peer {local}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{local} never established a session with {remote}: {e}"),
            }
        }
    }

    /// Accept one connection from the speaker (it dials us) and reach
    /// Established.
    pub async fn accept(
        listener: &TcpListener,
        spec: &PeerSpec,
    ) -> Result<ScriptedPeer, ConnectError> {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| ConnectError(format!("accept: {e}")))?;
        Self::handshake(stream, spec).await
    }

    async fn handshake(stream: TcpStream, spec: &PeerSpec) -> Result<ScriptedPeer, ConnectError> {
        let local = stream
            .local_addr()
            .map_err(|e| ConnectError(e.to_string()))?;
        let remote = stream
            .peer_addr()
            .map_err(|e| ConnectError(e.to_string()))?;
        let local_open = spec.open();
        let (read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(read, local_open.clone(), tx));
        // Both ends send OPEN as soon as the connection is up (§8.2.2).
        let mut buf = Vec::new();
        encode_message(
            &Message::Open(local_open.clone()),
            &SessionCaps::default(),
            &mut buf,
        )
        .expect("encode OPEN");
        write
            .write_all(&buf)
            .await
            .map_err(|e| ConnectError(format!("send OPEN: {e}")))?;
        let remote_open = match next_event(&mut rx).await? {
            Event::Msg(Message::Open(o)) => o,
            other => {
                reader.abort();
                return Err(ConnectError(format!("expected OPEN, got {other:?}")));
            }
        };
        let caps = SessionCaps::negotiate(&local_open, &remote_open);
        buf.clear();
        encode_message(&Message::Keepalive, &caps, &mut buf).expect("encode KEEPALIVE");
        write
            .write_all(&buf)
            .await
            .map_err(|e| ConnectError(format!("send KEEPALIVE: {e}")))?;
        match next_event(&mut rx).await? {
            Event::Msg(Message::Keepalive) => {}
            other => {
                reader.abort();
                return Err(ConnectError(format!("expected KEEPALIVE, got {other:?}")));
            }
        }
        Ok(ScriptedPeer {
            local,
            remote,
            remote_open,
            caps,
            writer: Some(write),
            rx,
            reader,
        })
    }

    /// Send one message.
    pub async fn send(&mut self, msg: &Message) {
        let mut buf = Vec::new();
        encode_message(msg, &self.caps, &mut buf).expect("encode");
        let w = self.writer.as_mut().expect("session open");
        w.write_all(&buf).await.expect("send to the speaker");
    }

    /// Announce `prefixes` with `attrs`.
    pub async fn announce(&mut self, prefixes: &[IpNetwork], attrs: &Attrs) {
        let u = Update {
            attributes: attrs.to_list(),
            nlri: prefixes.iter().copied().map(Nlri::new).collect(),
            ..Default::default()
        };
        self.send(&Message::Update(u)).await;
    }

    /// Withdraw `prefixes`.
    pub async fn withdraw(&mut self, prefixes: &[IpNetwork]) {
        let u = Update {
            withdrawn: prefixes.iter().copied().map(Nlri::new).collect(),
            ..Default::default()
        };
        self.send(&Message::Update(u)).await;
    }

    /// End-of-RIB for IPv4 unicast (RFC 4724 §2).
    pub async fn end_of_rib(&mut self) {
        self.send(&Message::Update(Update::end_of_rib(AfiSafi::IPV4_UNICAST)))
            .await;
    }

    /// Send a NOTIFICATION (then the caller closes).
    pub async fn notify(&mut self, n: Notification) {
        self.send(&Message::Notification(n)).await;
    }

    /// The next event, or `None` after `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Option<Event> {
        tokio::time::timeout(limit, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// An event already received, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Close the TCP connection without a NOTIFICATION (a crash or a
    /// restart, as the speaker sees it: RFC 4724 §4.2).
    pub fn close(mut self) {
        self.writer = None;
        self.reader.abort();
    }
}

impl Drop for ScriptedPeer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<Event>) -> Result<Event, ConnectError> {
    match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        Ok(Some(ev)) => Ok(ev),
        Ok(None) => Err(ConnectError("reader stopped".into())),
        Err(_) => Err(ConnectError("no answer in 30 s".into())),
    }
}

async fn read_loop(
    mut read: tokio::net::tcp::OwnedReadHalf,
    local_open: Open,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut caps = SessionCaps::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        loop {
            match decode_message(&buf, &caps) {
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    if let Message::Open(o) = &msg {
                        // Our rx (what the speaker sends) from our view.
                        caps = SessionCaps::negotiate(&local_open, o);
                    }
                    if tx.send(Event::Msg(msg)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Event::Closed(format!("decode error: {e}")));
                    return;
                }
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) => {
                let _ = tx.send(Event::Closed("EOF".into()));
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                let _ = tx.send(Event::Closed(format!("read: {e}")));
                return;
            }
        }
    }
}
