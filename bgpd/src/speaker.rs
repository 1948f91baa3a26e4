//! The speaker actor: the one owner of every peer FSM, the RIB, the timers
//! and the Adj-RIBs-Out. Session tasks and callers talk to it over typed
//! channels (diagram in [`crate::tasks`]); nothing here is shared behind a
//! lock.
//!
//! Start it with [`Speaker::start`]; talk to it with a [`SpeakerHandle`]
//! (cheap to clone); stop it with [`Speaker::shutdown`], which sends every
//! peer a CEASE with an RFC 8203 shutdown message.
//!
//! # Graceful restart (RFC 4724)
//!
//! Every session advertises the Graceful Restart capability (restart time
//! [`SpeakerConfig::restart_time`], per peer [`PeerConfig::restart_time`]).
//!
//! * **Helper**: when a GR-capable peer's session drops without a
//!   NOTIFICATION (TCP reset or close, process killed), its paths are kept,
//!   marked stale, still used and still advertised, and no
//!   [`RouteUpdate::Remove`] is emitted for them. When the peer is back and
//!   sends End-of-RIB for a family, the stale paths of that family it did
//!   not re-announce are swept (only those emit `Remove`); if it is not back
//!   within its restart time (or sends no GR capability when back), all go.
//! * **Restarting speaker**: stop with [`Speaker::shutdown_for_restart`]
//!   (closes every session *without* a CEASE, so GR peers keep our routes),
//!   start the new process with [`SpeakerConfig::restarting`] set (R bit,
//!   F bit), and wait for [`SpeakerHandle::synced`] before the first
//!   dataplane sync: it resolves once every configured peer has sent
//!   End-of-RIB for each negotiated family, or [`INITIAL_SYNC_BOUND`] after
//!   start, whichever is first. While restarting and not yet synced, the
//!   initial table to each peer is deferred (selection deferral, RFC 4724
//!   §4.1), so a restarted route reflector does not send a partial table
//!   followed by End-of-RIB (which would make its clients sweep routes).

mod events;
mod peer;
mod routing;
mod status;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnetwork::IpNetwork;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{PeerConfig, SpeakerConfig};
use crate::control::{PeerStatus, Request, Response, RouteStatus};
use crate::fsm::{Input, Output, State, Timer};
use crate::packet::{AfiSafi, Message};
use crate::rib::{Rib, RouteFeed, RouteUpdate};
use crate::session::{self, ConnId, Listener, SessionEvent};
use crate::tasks::TaskGuard;
use peer::{Established, Peer, SlotKind};

/// Session events handled before Loc-RIB changes are exported (bounds the
/// export delay under load; the burst ends earlier when the queue is empty).
const EVENT_BURST: usize = 256;

/// Changed prefixes after which a burst ends early and is exported: bounds
/// what an export builds at once (the previous best paths, each update
/// group's diff, its UPDATEs and their encoding) when a peer floods, at
/// ~100 octets a prefix; a 100k-prefix flood was one 100k-prefix export.
/// Churn on fewer prefixes collapses as before (they are counted once).
const BURST_PREFIXES: usize = 8192;

/// Session events queued for the actor at most. The channel is bounded so
/// that a flooding peer is paced by TCP: its connection task waits for room
/// and stops reading its socket. The actor never sends on it (no cycle can
/// deadlock), and the queue is FIFO across connections, so another peer's
/// KEEPALIVE waits behind at most this many events.
const SESSION_QUEUE: usize = 64;

/// Accepted connections wait here, apart from the session events: the actor
/// takes them first, so a peer's OPEN is answered within one event of its
/// connect even while other peers' UPDATEs fill the session queue (a
/// reflector's clients connecting one after another waited behind every
/// UPDATE in flight: 15 ms per client at K=1000 on a loaded 2-core box).
/// Beyond it the listener stops accepting and the kernel's accept queue holds
/// the rest.
const ACCEPT_QUEUE: usize = 256;

/// Prefixes carried by session events on their way to the actor at most
/// ([`session::Credits`]): the channel's bound in events does not bound its
/// memory, a 400-prefix UPDATE weighs ~11 KiB decoded (64 of them, 700 KiB;
/// extended messages, far more). About twenty 400-prefix UPDATEs, still
/// enough for a burst to collapse much churn into one export.
const SESSION_PREFIXES: usize = 8192;

/// How long [`Speaker::shutdown`] waits for the CEASE messages to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The longest [`SpeakerHandle::synced`] waits after start for peers that
/// do not come up or send no End-of-RIB.
pub const INITIAL_SYNC_BOUND: Duration = Duration::from_secs(10);

/// How long a helper keeps stale paths of a peer that came back but has
/// not sent End-of-RIB yet (RFC 4724 §4.2 "stale path" timer; BIRD's 360 s).
const STALE_PATH_TIME: Duration = Duration::from_secs(360);

/// Errors starting the speaker.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The BGP port could not be bound.
    #[error(
        "bgpd: cannot listen on {addr}: {source} (is another BGP daemon running, or is the address missing?)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Queries and stop requests to the actor, on a bounded channel (a caller
/// waits for room). Desired state goes through [`Desired`] instead.
#[derive(Debug)]
enum Command {
    Control(Request, oneshot::Sender<Response>),
    /// Stop; `graceful`: close sessions without a NOTIFICATION.
    Shutdown(String, bool, oneshot::Sender<()>),
    /// Connection tasks the actor still holds while they close (tests).
    #[cfg(test)]
    Closing(oneshot::Sender<usize>),
}

/// Queries waiting for the actor at most.
const COMMAND_QUEUE: usize = 64;

/// Desired state set through a [`SpeakerHandle`], collapsed to the latest:
/// however often (and however fast) callers set peers, networks or
/// announce and withdraw, the actor finds one peer list, one network set
/// and one entry per announced or withdrawn prefix.
#[derive(Debug, Default)]
struct DesiredState {
    peers: Option<Vec<PeerConfig>>,
    networks: Option<Vec<IpNetwork>>,
    multipath: Option<crate::rib::Multipath>,
    local_communities: Option<Vec<crate::rib::LocalCommunities>>,
    /// Announce (`true`) or withdraw since `networks`, latest per prefix.
    originate: BTreeMap<IpNetwork, bool>,
    /// Bumped by every change; the actor reports the last it applied.
    seq: u64,
}

/// The slot callers write [`DesiredState`] into and the actor takes it from.
#[derive(Debug)]
struct Desired {
    state: std::sync::Mutex<DesiredState>,
    wake: tokio::sync::Notify,
    /// The last `seq` the actor applied.
    applied: tokio::sync::watch::Sender<u64>,
}

impl Desired {
    fn new() -> Desired {
        Desired {
            state: Default::default(),
            wake: Default::default(),
            applied: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Change the desired state; returns its sequence number.
    fn update(&self, f: impl FnOnce(&mut DesiredState)) -> u64 {
        let seq = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s);
            s.seq += 1;
            s.seq
        };
        // Stores a permit when the actor is busy: no wake-up is lost.
        self.wake.notify_one();
        seq
    }

    /// Everything set since the last take (and the sequence it reaches).
    fn take(&self) -> (DesiredState, u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let seq = s.seq;
        let taken = DesiredState {
            peers: s.peers.take(),
            networks: s.networks.take(),
            multipath: s.multipath.take(),
            local_communities: s.local_communities.take(),
            originate: std::mem::take(&mut s.originate),
            seq,
        };
        (taken, seq)
    }

    /// Wait until the actor applied `seq` (or stopped).
    async fn applied(&self, seq: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|a| *a >= seq).await;
    }
}

/// A cheap, clonable way to talk to a running speaker.
#[derive(Debug, Clone)]
pub struct SpeakerHandle {
    tx: mpsc::Sender<Command>,
    desired: std::sync::Arc<Desired>,
    synced: tokio::sync::watch::Receiver<bool>,
}

impl SpeakerHandle {
    /// Answer a control request (what the control socket serves).
    pub async fn control(&self, req: Request) -> Response {
        let stopped = || Response {
            ok: false,
            error: Some("speaker stopped".into()),
            ..Default::default()
        };
        match req {
            Request::Announce { prefix } => return self.originate(prefix, true).await,
            Request::Withdraw { prefix } => return self.originate(prefix, false).await,
            Request::Peers | Request::Routes => {}
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Control(req, tx)).await.is_err() {
            return stopped();
        }
        rx.await.unwrap_or_else(|_| stopped())
    }

    /// Announce or withdraw through the desired state; answers once applied.
    async fn originate(&self, prefix: IpNetwork, announce: bool) -> Response {
        let seq = self.desired.update(|d| {
            d.originate.insert(crate::rib::normalize(prefix), announce);
        });
        tokio::select! {
            biased;
            () = self.desired.applied(seq) => Response {
                ok: true,
                ..Default::default()
            },
            // The actor is gone (stopped, or its speaker dropped).
            () = self.tx.closed() => Response {
                ok: false,
                error: Some("speaker stopped".into()),
                ..Default::default()
            },
        }
    }

    /// How many closing connection tasks the actor holds (tests).
    #[cfg(test)]
    pub(crate) async fn closing_connections(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Closing(tx)).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// The peer table.
    pub async fn peers(&self) -> Vec<PeerStatus> {
        self.control(Request::Peers).await.peers.unwrap_or_default()
    }

    /// The Loc-RIB.
    pub async fn routes(&self) -> Vec<RouteStatus> {
        self.control(Request::Routes)
            .await
            .routes
            .unwrap_or_default()
    }

    /// Originate a prefix (returns once the speaker has it).
    pub async fn announce(&self, prefix: IpNetwork) {
        self.control(Request::Announce { prefix }).await;
    }

    /// Stop originating a prefix (returns once the speaker has it).
    pub async fn withdraw(&self, prefix: IpNetwork) {
        self.control(Request::Withdraw { prefix }).await;
    }

    /// Replace the peer list: new peers start, removed ones get a CEASE
    /// (Peer De-configured), changed ones restart. Latest wins: lists set
    /// faster than the speaker takes them are never all applied.
    pub fn set_peers(&self, peers: Vec<PeerConfig>) {
        self.desired.update(|d| d.peers = Some(peers));
    }

    /// Resolves once initial convergence is reached after start: every
    /// configured peer sent End-of-RIB for each negotiated family, or
    /// [`INITIAL_SYNC_BOUND`] passed. Hold the first dataplane sync until
    /// then so that the kernel keeps its routes through a restart.
    pub async fn synced(&self) {
        let mut rx = self.synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Whether initial convergence was reached (see [`SpeakerHandle::synced`]).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Change which equal paths become one multipath kernel route: the
    /// routes whose next hops change are emitted again, sessions and
    /// exports stay as they are.
    pub fn set_multipath(&self, multipath: crate::rib::Multipath) {
        self.desired.update(|d| d.multipath = Some(multipath));
    }

    /// Set the communities of the originated prefixes (by CIDR); the
    /// prefixes whose attributes change are announced again.
    pub fn set_local_communities(&self, policy: Vec<crate::rib::LocalCommunities>) {
        self.desired.update(|d| d.local_communities = Some(policy));
    }

    /// Replace the set of originated prefixes (e.g. the node's affine IPAM
    /// blocks): new ones are announced, missing ones withdrawn. Latest
    /// wins, and it overrides announcements and withdrawals made before.
    pub fn set_networks(&self, networks: Vec<IpNetwork>) {
        self.desired.update(|d| {
            d.networks = Some(networks);
            d.originate.clear();
        });
    }
}

/// A running speaker; dropping it aborts the actor (prefer [`Speaker::shutdown`]).
#[derive(Debug)]
pub struct Speaker {
    handle: SpeakerHandle,
    task: TaskGuard,
    listen_addr: Option<SocketAddr>,
}

impl Speaker {
    /// Bind the listener, start every configured peer and originate the
    /// configured networks. Best-path changes of learnt routes go to
    /// `route_tx` if given, every one of them (an unbounded channel: for
    /// tests and tools that want the history; a daemon uses
    /// [`Speaker::start_with_feed`]).
    pub fn start(
        cfg: SpeakerConfig,
        route_tx: Option<mpsc::UnboundedSender<RouteUpdate>>,
    ) -> Result<Speaker, SpeakerError> {
        Speaker::start_sink(cfg, route_tx.map(RouteSink::Channel))
    }

    /// [`Speaker::start`], with best-path changes collapsed per prefix into
    /// `feed` (memory O(table) however slowly it is read).
    pub fn start_with_feed(cfg: SpeakerConfig, feed: RouteFeed) -> Result<Speaker, SpeakerError> {
        Speaker::start_sink(cfg, Some(RouteSink::Feed(feed)))
    }

    fn start_sink(
        cfg: SpeakerConfig,
        route_tx: Option<RouteSink>,
    ) -> Result<Speaker, SpeakerError> {
        cfg.validate()?;
        let (session_tx, session_rx) = mpsc::channel(SESSION_QUEUE);
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
        let listener = match &cfg.listen {
            Some(l) => Some(bind_listener(l.socket_addr(), &accept_tx)?),
            None => None,
        };
        let listen_addr = listener.as_ref().map(|l| l.local_addr);
        let (tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let desired = std::sync::Arc::new(Desired::new());
        let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
        let mut rib = Rib::new(cfg.as_number, cfg.router_id);
        rib.set_cluster_id(cfg.cluster_id);
        rib.set_multipath(cfg.multipath);
        let (bfd_events, bfd_rx) = mpsc::channel(64);
        let mut actor = Actor {
            bfd: None,
            bfd_events,
            bfd_state: HashMap::new(),
            rib,
            synced: synced_tx,
            sync_deadline: Some(Instant::now() + INITIAL_SYNC_BOUND),
            cfg: cfg.clone(),
            peers: BTreeMap::new(),
            conn_owner: HashMap::new(),
            closing: HashMap::new(),
            listener,
            session_tx,
            credits: session::Credits::new(SESSION_PREFIXES),
            next_conn: 1,
            next_attempt: 1,
            route_tx,
            tables: Vec::new(),
        };
        for prefix in &cfg.networks {
            actor.rib.add_local(*prefix);
        }
        actor.rib.take_previous();
        for p in cfg.peers.clone() {
            actor.add_peer(p);
        }
        actor.check_synced();
        let task =
            TaskGuard::spawn(actor.run(cmd_rx, desired.clone(), session_rx, accept_rx, bfd_rx));
        tracing::info!(asn = cfg.as_number, router_id = %cfg.router_id, listen = ?listen_addr, "BGP speaker started");
        Ok(Speaker {
            handle: SpeakerHandle {
                tx,
                desired,
                synced: synced_rx,
            },
            task,
            listen_addr,
        })
    }

    /// A handle for callers.
    pub fn handle(&self) -> SpeakerHandle {
        self.handle.clone()
    }

    /// The bound listener address (resolves port 0).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// Send every peer CEASE/Administrative Shutdown with `message`
    /// (RFC 8203), wait (bounded) for the messages to go out, and stop.
    pub async fn shutdown(self, message: &str) {
        self.stop(message, false).await;
    }

    /// Stop for a restart (RFC 4724): close every session without a
    /// NOTIFICATION, so that graceful-restart peers keep our routes (stale)
    /// until we are back and send End-of-RIB. Start the next process with
    /// [`SpeakerConfig::restarting`].
    pub async fn shutdown_for_restart(self) {
        self.stop("restarting", true).await;
    }

    async fn stop(self, message: &str, graceful: bool) {
        let (tx, rx) = oneshot::channel();
        if self
            .handle
            .tx
            .send(Command::Shutdown(message.to_string(), graceful, tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let _ = self.task.join().await;
    }
}

/// Bind the BGP listener. `[::]` falls back to `0.0.0.0` on hosts without
/// IPv6, so the default configuration works everywhere.
fn bind_listener(
    addr: SocketAddr,
    events: &mpsc::Sender<SessionEvent>,
) -> Result<Listener, SpeakerError> {
    match Listener::bind(addr, events.clone()) {
        Ok(l) => Ok(l),
        Err(e)
            if addr.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                && (e.raw_os_error() == Some(libc::EAFNOSUPPORT)
                    || e.kind() == std::io::ErrorKind::AddrNotAvailable) =>
        {
            let v4 = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), addr.port());
            tracing::warn!(error = %e, "cannot listen on {addr}; trying {v4} (no IPv6 on this host?)");
            Listener::bind(v4, events.clone())
                .map_err(|source| SpeakerError::Listen { addr: v4, source })
        }
        Err(source) => Err(SpeakerError::Listen { addr, source }),
    }
}

/// Where best-path changes of learnt routes go.
#[derive(Debug)]
enum RouteSink {
    Channel(mpsc::UnboundedSender<RouteUpdate>),
    Feed(RouteFeed),
}

impl RouteSink {
    fn send(&self, u: RouteUpdate) {
        match self {
            RouteSink::Channel(tx) => {
                let _ = tx.send(u);
            }
            RouteSink::Feed(feed) => feed.push(u),
        }
    }
}

struct Actor {
    cfg: SpeakerConfig,
    rib: Rib,
    peers: BTreeMap<IpAddr, Peer>,
    /// Which peer each live connection belongs to.
    conn_owner: HashMap<ConnId, IpAddr>,
    /// Connections flushing their last messages before they close.
    closing: HashMap<ConnId, TaskGuard>,
    listener: Option<Listener>,
    session_tx: mpsc::Sender<SessionEvent>,
    /// Bound on the prefixes of session events in flight.
    credits: session::Credits,
    next_conn: ConnId,
    next_attempt: u64,
    route_tx: Option<RouteSink>,
    /// Initial convergence reached (see [`SpeakerHandle::synced`]).
    synced: tokio::sync::watch::Sender<bool>,
    /// When we stop waiting for initial convergence; `None` once synced.
    sync_deadline: Option<Instant>,
    /// Encoded tables of update groups, while the Loc-RIB is unchanged.
    tables: Vec<table::SharedTable>,
    /// BFD sessions of peers with `bfd` (RFC 5882): started with the
    /// first such peer; state changes come back on `bfd_events`.
    bfd: Option<crate::bfd::io::Handle>,
    bfd_events: mpsc::Sender<crate::bfd::io::Event>,
    /// The last BFD state of each peer with BFD, for status.
    bfd_state: HashMap<IpAddr, crate::bfd::State>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Actor {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        desired: std::sync::Arc<Desired>,
        mut session_rx: mpsc::Receiver<SessionEvent>,
        mut accept_rx: mpsc::Receiver<SessionEvent>,
        mut bfd_rx: mpsc::Receiver<crate::bfd::io::Event>,
    ) {
        loop {
            let deadline = self
                .peers
                .values()
                .filter_map(Peer::next_deadline)
                .chain(self.sync_deadline)
                .min();
            tokio::select! {
                () = desired.wake.notified() => self.apply_desired(&desired),
                cmd = cmd_rx.recv() => match cmd {
                    // What callers set before they asked is applied first.
                    Some(Command::Control(req, reply)) => {
                        self.apply_desired(&desired);
                        let _ = reply.send(self.control(req));
                    }
                    #[cfg(test)]
                    Some(Command::Closing(reply)) => {
                        let _ = reply.send(self.closing.len());
                    }
                    Some(Command::Shutdown(msg, graceful, done)) => {
                        self.apply_desired(&desired);
                        if graceful {
                            self.shutdown_graceful();
                        } else {
                            self.shutdown(&msg).await;
                        }
                        // Closed before we say done: the caller may start
                        // the next speaker on the same port right away.
                        if let Some(l) = self.listener.take() {
                            l.close().await;
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown("speaker stopped").await;
                        return;
                    }
                },
                Some(ev) = accept_rx.recv() => {
                    self.session_event(ev);
                    while let Ok(ev) = accept_rx.try_recv() {
                        self.session_event(ev);
                    }
                    self.propagate(Vec::new());
                }
                Some(ev) = session_rx.recv() => {
                    self.session_event(ev);
                    // Take what else is already queued, then export the
                    // Loc-RIB changes of the whole burst at once: on a
                    // reflector, K clients' UPDATEs then cost a few diffs
                    // per update group, not K × K queued messages.
                    for _ in 1..EVENT_BURST {
                        if self.rib.pending_changes() >= BURST_PREFIXES {
                            break;
                        }
                        // New connections go ahead of queued events.
                        while let Ok(ev) = accept_rx.try_recv() {
                            self.session_event(ev);
                        }
                        match session_rx.try_recv() {
                            Ok(ev) => self.session_event(ev),
                            Err(_) => break,
                        }
                    }
                    self.propagate(Vec::new());
                }
                Some(ev) = bfd_rx.recv() => self.bfd_event(ev),
                () = sleep_until_opt(deadline) => self.fire_timers(Instant::now()),
            }
        }
    }

    /// A BFD state change (RFC 5882 §3.2): Up → anything takes the BGP
    /// session down at once, and with it the peer's routes.
    fn bfd_event(&mut self, ev: crate::bfd::io::Event) {
        let addr = IpAddr::V4(ev.peer);
        if !self.peers.contains_key(&addr) {
            return;
        }
        self.bfd_state.insert(addr, ev.to);
        if ev.from == crate::bfd::State::Up && ev.to != crate::bfd::State::Up {
            tracing::warn!(peer = %addr, to = %ev.to, diag = %ev.diag, "BFD session down: taking the BGP session down");
            for kind in [SlotKind::Secondary, SlotKind::Primary] {
                self.run_fsm(addr, kind, Input::BfdDown { diag: ev.diag });
            }
            // RFC 5882 §4.3.2: the BGP session was already lost and we
            // keep its routes for a graceful restart; a peer whose BFD is
            // control-plane independent (C bit) losing BFD too means its
            // forwarding path died, not its control plane: the stale
            // routes go now. Without the C bit BFD shares the restart's
            // fate, and the restart time stands.
            let in_restart = self
                .peers
                .get(&addr)
                .is_some_and(|p| p.gr_deadline.is_some() && p.established.is_none());
            if in_restart && ev.remote_control_plane_independent {
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.gr_deadline = None;
                }
                tracing::warn!(peer = %addr, "BFD down during graceful restart (peer sets the C bit): its stale routes go now");
                let changed = self.rib.sweep_stale(addr, None);
                self.propagate(changed);
            }
        }
    }

    /// A peer's BFD settings changed: new timers (a Poll Sequence when Up),
    /// a new session, or the session removed.
    fn set_bfd(&mut self, cfg: &PeerConfig) {
        let addr = cfg.address;
        if let Some(p) = self.peers.get_mut(&addr) {
            p.cfg.bfd = cfg.bfd;
        }
        if cfg.bfd.is_some() {
            let keep = self.bfd_state.get(&addr).copied();
            self.start_bfd(cfg);
            if let Some(state) = keep {
                self.bfd_state.insert(addr, state);
            }
        } else if let (Some(h), IpAddr::V4(v4), Some(_)) =
            (&self.bfd, addr, self.bfd_state.remove(&addr))
        {
            h.try_remove(v4);
        }
    }

    /// Start (once) the BFD task and add `cfg`'s session to it.
    fn start_bfd(&mut self, cfg: &PeerConfig) {
        let (Some(b), IpAddr::V4(peer)) = (cfg.bfd, cfg.address) else {
            return;
        };
        if self.bfd.is_none()
            && let Some(path) = &self.cfg.bfdd_socket
        {
            self.bfd = Some(crate::bfd::daemon::connect(
                path.clone(),
                self.bfd_events.clone(),
            ));
        }
        if self.bfd.is_none() {
            let bound = crate::bfd::io::Sockets::bind(std::net::Ipv4Addr::UNSPECIFIED)
                .and_then(|s| crate::bfd::io::spawn(s, self.bfd_events.clone()));
            match bound {
                Ok(h) => self.bfd = Some(h),
                Err(e) => {
                    tracing::error!(peer = %peer, error = %e, "cannot bind BFD's UDP ports 3784/4784; the peer runs without BFD (its failures are found by the hold timer)");
                    return;
                }
            }
        }
        let spec = crate::bfd::io::PeerSpec {
            peer,
            hops: crate::bfd::io::Hops::Single,
            desired_min_tx: Duration::from_millis(u64::from(b.min_tx)),
            required_min_rx: Duration::from_millis(u64::from(b.min_rx)),
            detect_mult: b.multiplier,
            passive: false,
        };
        self.bfd_state.insert(cfg.address, crate::bfd::State::Down);
        if let Some(h) = &self.bfd {
            h.try_add(spec);
        }
    }

    async fn shutdown(&mut self, message: &str) {
        tracing::info!(%message, "shutting down: CEASE to every peer");
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            self.stop_peer(addr, Some(message.to_string()));
        }
        let closing: Vec<TaskGuard> = self.closing.drain().map(|(_, t)| t).collect();
        let _ = tokio::time::timeout(
            SHUTDOWN_GRACE,
            futures::future::join_all(closing.into_iter().map(TaskGuard::join)),
        )
        .await;
    }

    /// Close every connection without a NOTIFICATION (RFC 4724 §4.1).
    fn shutdown_graceful(&mut self) {
        tracing::info!("shutting down for a restart: sessions closed without CEASE");
        for peer in self.peers.values_mut() {
            for slot in [Some(&mut peer.primary), peer.secondary.as_deref_mut()]
                .into_iter()
                .flatten()
            {
                slot.dial = None;
                // Dropping the handle aborts the connection task: the socket
                // closes with nothing more sent.
                slot.conn = None;
            }
        }
        self.conn_owner.clear();
        self.closing.clear();
    }

    /// Initial convergence: every configured peer sent End-of-RIB for each
    /// negotiated family, or the bound passed.
    fn check_synced(&mut self) {
        if self.sync_deadline.is_none() {
            return;
        }
        let all_done = self.peers.values().all(|p| {
            p.established
                .as_ref()
                .is_some_and(|e| e.families.is_subset(&e.eor_received))
        });
        let expired = self.sync_deadline.is_some_and(|d| d <= Instant::now());
        if !(all_done || expired) {
            return;
        }
        tracing::info!(timed_out = !all_done, "initial convergence reached");
        self.sync_deadline = None;
        let _ = self.synced.send(true);
        // Deferred initial tables (restarting speaker) go out now.
        let pending: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established.as_ref().is_some_and(|e| e.initial_pending))
            .map(|(a, _)| *a)
            .collect();
        for addr in pending {
            if let Some(e) = self
                .peers
                .get_mut(&addr)
                .and_then(|p| p.established.as_mut())
            {
                e.initial_pending = false;
            }
            self.advertise_all(addr);
        }
    }

    // ---- peers ----------------------------------------------------------

    fn add_peer(&mut self, cfg: PeerConfig) {
        let addr = cfg.address;
        if cfg.password.is_some() && !crate::session::sockopt::md5_supported() {
            // One clear line, not a connect error every retry.
            tracing::error!(peer = %addr, "{}; the peer is not started", crate::session::sockopt::SockoptError::NoKernelMd5 { peer: addr });
            return;
        }
        if let (Some(l), Some(pw)) = (&self.listener, &cfg.password)
            && let Err(e) = l.set_md5_key(addr, Some(pw))
        {
            // Fail closed: without the key the listener would accept the
            // peer's connection unauthenticated.
            tracing::error!(peer = %addr, error = %e, "cannot install the TCP-MD5 key on the listener; the peer is not started");
            return;
        }
        let passive = cfg.passive;
        self.start_bfd(&cfg);
        let peer = Peer::new(cfg, &self.cfg);
        let changed = self.rib.set_import_policy(addr, peer.policy.clone());
        self.peers.insert(addr, peer);
        self.propagate(changed);
        self.run_fsm(addr, SlotKind::Primary, Input::AutomaticStart { passive });
    }

    /// ManualStop both connections of a peer (CEASE with `message`).
    fn stop_peer(&mut self, addr: IpAddr, message: Option<String>) {
        for kind in [SlotKind::Secondary, SlotKind::Primary] {
            self.run_fsm(
                addr,
                kind,
                Input::ManualStop {
                    shutdown_message: message.clone(),
                    deconfigured: false,
                },
            );
        }
    }

    fn set_peers(&mut self, peers: Vec<PeerConfig>) {
        let wanted: HashMap<IpAddr, PeerConfig> =
            peers.into_iter().map(|p| (p.address, p)).collect();
        let existing: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in existing {
            let (Some(new), Some(old)) = (wanted.get(&addr), self.peers.get(&addr)) else {
                self.remove_peer(addr);
                continue;
            };
            if *new == old.cfg {
                continue;
            }
            let soft_only = PeerConfig {
                bfd: old.cfg.bfd,
                filters: old.cfg.filters.clone(),
                ..new.clone()
            } == old.cfg;
            let bfd_changed = new.bfd != old.cfg.bfd;
            let filters_changed = new.filters != old.cfg.filters;
            if soft_only {
                // Only BFD or the filters changed: reconfigure them, keep
                // the BGP session (turning BFD on across a cluster, or
                // editing a BGPFilter, flaps nothing).
                if bfd_changed {
                    self.set_bfd(new);
                }
                if filters_changed {
                    self.set_filters(addr, new.filters.clone());
                }
            } else {
                self.remove_peer(addr);
            }
        }
        for (addr, cfg) in wanted {
            if !self.peers.contains_key(&addr) {
                self.add_peer(cfg);
            }
        }
    }

    /// Apply what callers set through their handles (latest state) and
    /// tell the ones waiting.
    fn apply_desired(&mut self, desired: &Desired) {
        let (d, seq) = desired.take();
        if let Some(peers) = d.peers {
            self.set_peers(peers);
        }
        if let Some(networks) = d.networks {
            self.set_networks(networks);
        }
        let mut changed = Vec::new();
        if let Some(multipath) = d.multipath {
            changed.extend(self.rib.set_multipath(multipath));
        }
        if let Some(policy) = d.local_communities {
            changed.extend(self.rib.set_local_communities(policy));
        }
        for (prefix, announce) in d.originate {
            changed.extend(if announce {
                self.rib.add_local(prefix)
            } else {
                self.rib.remove_local(prefix)
            });
        }
        self.propagate(changed);
        desired.applied.send_if_modified(|a| {
            let newer = seq > *a;
            *a = (*a).max(seq);
            newer
        });
    }

    fn set_networks(&mut self, networks: Vec<IpNetwork>) {
        let wanted: std::collections::BTreeSet<IpNetwork> =
            networks.into_iter().map(crate::rib::normalize).collect();
        let current: Vec<IpNetwork> = self.rib.local_prefixes().copied().collect();
        let mut changed = Vec::new();
        for p in current.iter().filter(|p| !wanted.contains(p)) {
            changed.extend(self.rib.remove_local(*p));
        }
        for p in wanted.iter().filter(|p| !current.contains(p)) {
            changed.extend(self.rib.add_local(*p));
        }
        self.propagate(changed);
    }

    fn remove_peer(&mut self, addr: IpAddr) {
        for kind in [SlotKind::Secondary, SlotKind::Primary] {
            // One CEASE, Peer De-configured (RFC 4486 §4), then the close.
            self.run_fsm(
                addr,
                kind,
                Input::ManualStop {
                    shutdown_message: None,
                    deconfigured: true,
                },
            );
        }
        if let (Some(h), IpAddr::V4(v4), Some(_)) = (&self.bfd, addr, self.bfd_state.remove(&addr))
        {
            h.try_remove(v4);
        }
        if let Some(peer) = self.peers.remove(&addr)
            && let (Some(l), Some(_)) = (&self.listener, &peer.cfg.password)
        {
            let _ = l.set_md5_key(addr, None);
        }
        let changed = self.rib.peer_down(addr);
        self.rib.set_import_policy(addr, None);
        self.propagate(changed);
    }

    // ---- FSM plumbing ---------------------------------------------------

    fn run_fsm(&mut self, addr: IpAddr, kind: SlotKind, input: Input) {
        let Some(slot) = self.peers.get_mut(&addr).and_then(|p| p.slot(kind)) else {
            return;
        };
        let outputs = slot.fsm.process(input);
        let mut established_now = false;
        for o in outputs {
            established_now |= matches!(o, Output::SessionEstablished { .. });
            self.apply_output(addr, kind, o);
        }
        self.after_fsm(addr, established_now);
    }

    fn apply_output(&mut self, addr: IpAddr, kind: SlotKind, output: Output) {
        let timeout = self.cfg.connect_retry();
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let ibgp = peer.ibgp(self.cfg.as_number);
        let cfg = peer.cfg.clone();
        let Some(slot) = peer.slot(kind) else { return };
        match output {
            Output::Connect => {
                let attempt = self.next_attempt;
                self.next_attempt += 1;
                let tx = self.session_tx.clone();
                let task = TaskGuard::spawn(async move {
                    let result = session::connect(&cfg, timeout).await;
                    let _ = tx
                        .send(SessionEvent::Connected {
                            peer: addr,
                            attempt,
                            result,
                        })
                        .await;
                });
                slot.dial = Some((attempt, task));
            }
            Output::SendMessage(msg) => {
                if let Message::Notification(n) = &msg {
                    tracing::warn!(peer = %addr, notification = %n.describe(), "sending NOTIFICATION");
                }
                if let Some((_, h)) = &slot.conn {
                    h.send(msg);
                }
            }
            Output::CloseConnection => {
                slot.dial = None;
                if let Some((id, h)) = slot.conn.take() {
                    self.conn_owner.remove(&id);
                    if let Some(task) = h.close() {
                        self.closing.insert(id, task);
                    }
                }
            }
            Output::StartTimer(t, d) => slot.timers[t.index()] = Some(Instant::now() + d),
            Output::StopTimer(t) => slot.timers[t.index()] = None,
            Output::SessionEstablished {
                peer_open,
                hold_time,
                ..
            } => {
                let local_addr = slot
                    .conn
                    .as_ref()
                    .map(|(_, h)| h.local.ip())
                    .unwrap_or(addr);
                let families = peer::negotiated_families(
                    slot.fsm.config().capabilities.as_slice(),
                    &peer_open,
                );
                tracing::info!(peer = %addr, router_id = %peer_open.router_id, hold_time, ?families, "session established");
                let caps =
                    crate::packet::SessionCaps::negotiate(&slot.fsm.config().open(), &peer_open);
                let peer_gr = peer_open.graceful_restart().cloned();
                peer.router_id = Some(peer_open.router_id);
                peer.last_error = None;
                self.rib.peer_up(crate::rib::PeerMeta {
                    address: addr,
                    ibgp,
                    router_id: peer_open.router_id,
                    rr_client: cfg.rr_client && self.cfg.cluster_id.is_some(),
                    allow_local_as: cfg.allow_local_as,
                });
                let initial_pending = self.cfg.restarting && self.sync_deadline.is_some();
                peer.established = Some(Box::new(Established {
                    hold_time,
                    families,
                    local_addr,
                    caps,
                    peer_gr: peer_gr.clone(),
                    eor_received: Default::default(),
                    initial_pending,
                }));
                if peer.gr_deadline.is_some() {
                    if let Some(gr) = &peer_gr {
                        // Back. RFC 4724 §4.2: a family it did not keep
                        // forwarding state for (F bit clear, or not listed)
                        // loses its stale paths now; the others wait for its
                        // End-of-RIB (bounded).
                        let mut changed = Vec::new();
                        for family in [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST] {
                            if !gr.families.iter().any(|(f, kept)| *f == family && *kept) {
                                changed.extend(self.rib.sweep_stale(addr, Some(family)));
                            }
                        }
                        peer.gr_deadline = Some(Instant::now() + STALE_PATH_TIME);
                        self.propagate(changed);
                    } else {
                        // §4.2: no GR capability any more: stale paths go now.
                        peer.gr_deadline = None;
                        let changed = self.rib.sweep_stale(addr, None);
                        self.propagate(changed);
                    }
                }
            }
            Output::SessionDown { reason, from } => {
                tracing::info!(peer = %addr, from = %from, %reason, "session down");
                peer.last_error = Some(reason.to_string());
                if from == State::Established {
                    let est = peer.established.take();
                    peer.advertised = 0;
                    let notification_gr =
                        est.as_ref().is_some_and(|e| e.caps.graceful_notification);
                    let restart_time = est
                        .and_then(|e| e.peer_gr)
                        .map(|gr| gr.restart_time)
                        .filter(|t| *t > 0);
                    use crate::fsm::DownReason as R;
                    let graceful = match &reason {
                        // RFC 4724 §4.2: the session died without a NOTIFICATION.
                        R::ConnectionFailed => true,
                        // RFC 8538 §4: with the N bit on both sides, any
                        // NOTIFICATION but Hard Reset (hold timer expiry too).
                        R::NotificationSent(n)
                        | R::NotificationReceived(n)
                        | R::SendStalled {
                            notification: n, ..
                        } => notification_gr && !n.is_hard_reset(),
                        // RFC 5882: the forwarding path failed; the
                        // peer's routes go now, not after a restart time.
                        R::ManualStop | R::CollisionDump | R::BfdDown { .. } => false,
                    };
                    match (graceful, restart_time) {
                        // Keep its routes through the restart.
                        (true, Some(t)) => {
                            let kept = self.rib.peer_down_graceful(addr);
                            peer.gr_deadline =
                                Some(Instant::now() + Duration::from_secs(u64::from(t)));
                            tracing::info!(peer = %addr, restart_time = t, kept, "graceful restart: keeping the peer's routes as stale");
                        }
                        _ => {
                            peer.gr_deadline = None;
                            let changed = self.rib.peer_down(addr);
                            self.propagate(changed);
                        }
                    }
                }
            }
            Output::DeliverUpdate(update) => {
                if let Some(family) = update.is_end_of_rib() {
                    tracing::debug!(peer = %addr, ?family, "End-of-RIB received");
                    if let Some(e) = peer.established.as_mut() {
                        e.eor_received.insert(family);
                    }
                    let changed = self.rib.sweep_stale(addr, Some(family));
                    if !self.rib.has_stale(addr) {
                        peer.gr_deadline = None;
                    }
                    self.propagate(changed);
                    self.check_synced();
                    return;
                }
                if update.treat_as_withdraw {
                    tracing::warn!(peer = %addr, "malformed UPDATE treated as withdraw (RFC 7606)");
                }
                // Exported at the end of the burst of session events
                // (`Actor::run`): one UPDATE per group for many received.
                self.rib.apply_update(addr, &update);
            }
            Output::DeliverRouteRefresh(_) => self.advertise_all(addr),
        }
    }

    /// Housekeeping after an FSM ran: retire dead second connections,
    /// promote a surviving one, send the initial table to a new session.
    fn after_fsm(&mut self, addr: IpAddr, established_now: bool) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        // A second connection lives for that connection only: once it has
        // failed (Idle, or Active after OpenSent) it goes.
        if peer
            .secondary
            .as_ref()
            .is_some_and(|s| matches!(s.fsm.state(), State::Idle | State::Active))
        {
            peer.secondary = None;
        }
        // A primary without a connection (Idle, or Active after its
        // connection failed in OpenSent) gives way to a live second one.
        if matches!(peer.primary.fsm.state(), State::Idle | State::Active)
            && let Some(mut second) = peer.secondary.take()
        {
            second.fsm.set_passive(peer.cfg.passive);
            tracing::debug!(peer = %addr, "the accepted connection takes over the session");
            peer.primary = *second;
        }
        peer.note_state();
        if established_now && peer.primary.fsm.state() == State::Established {
            self.advertise_all(addr);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in addrs.iter().copied() {
            let expired = self
                .peers
                .get_mut(&addr)
                .filter(|p| p.gr_deadline.is_some_and(|d| d <= now));
            if let Some(p) = expired {
                p.gr_deadline = None;
                tracing::info!(peer = %addr, "graceful restart: the peer did not come back in time; its stale routes go");
                let changed = self.rib.sweep_stale(addr, None);
                self.propagate(changed);
            }
        }
        self.check_synced();
        for addr in addrs {
            for kind in [SlotKind::Primary, SlotKind::Secondary] {
                let due = match self.peers.get_mut(&addr).and_then(|p| p.slot(kind)) {
                    Some(slot) => slot.take_expired(now),
                    None => continue,
                };
                for t in due {
                    if t == Timer::Hold && self.hold_fed(addr, kind, now) {
                        continue;
                    }
                    let input = match t {
                        Timer::ConnectRetry => Input::ConnectRetryTimerExpires,
                        Timer::Hold => Input::HoldTimerExpires,
                        Timer::Keepalive => Input::KeepaliveTimerExpires,
                        Timer::IdleHold => Input::IdleHoldTimerExpires,
                    };
                    self.run_fsm(addr, kind, input);
                }
            }
        }
    }
}

impl Actor {
    /// A Hold timer fired, but the connection task read a message within
    /// the hold time that is still on its way to us (the session channel
    /// is full of other peers' events): the peer is alive, RFC 4271 §4.4.
    /// Re-arm the timer from that read instead of dropping the session.
    fn hold_fed(&mut self, addr: IpAddr, kind: SlotKind, now: Instant) -> bool {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return false;
        };
        let hold = match (&peer.established, kind) {
            (Some(e), SlotKind::Primary) if e.hold_time > 0 => {
                Duration::from_secs(u64::from(e.hold_time))
            }
            _ => return false,
        };
        let Some(slot) = peer.slot(kind) else {
            return false;
        };
        let Some(last) = slot.conn.as_ref().and_then(|(_, h)| h.last_received()) else {
            return false;
        };
        if last + hold <= now {
            return false;
        }
        slot.timers[Timer::Hold.index()] = Some(last + hold);
        tracing::debug!(peer = %addr, "hold timer: a message was read and is on its way; re-armed");
        true
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_flap;
#[cfg(test)]
mod tests_open_sent;
