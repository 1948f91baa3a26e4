//! Per-peer state held by the actor: up to two connections (each with its
//! own FSM and timers, for §6.8 collisions), the session facts once
//! established, the Adj-RIB-Out and the status counters.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::config::{PeerConfig, SpeakerConfig};
use crate::fsm::{Fsm, FsmConfig, State, Timer};
use crate::packet::{AfiSafi, Capability, GracefulRestart, Open, SessionCaps};
use crate::session::{ConnId, ConnectionHandle};
use crate::tasks::TaskGuard;

/// Which of a peer's two FSMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SlotKind {
    /// The peer's main FSM (the one started by configuration).
    Primary,
    /// A second, incoming connection accepted while the primary was in
    /// OpenSent/OpenConfirm (§6.8): one of the two is dumped once an OPEN
    /// tells us the peer's identifier.
    Secondary,
}

/// One FSM with its connection and timers.
#[derive(Debug)]
pub(crate) struct Slot {
    pub fsm: Fsm,
    pub conn: Option<(ConnId, ConnectionHandle)>,
    /// Whether the current connection was initiated by us.
    pub outgoing: bool,
    pub timers: [Option<Instant>; 4],
    /// An outgoing connection attempt in progress (attempt id, task).
    pub dial: Option<(u64, TaskGuard)>,
}

impl Slot {
    pub fn new(fsm: Fsm) -> Slot {
        Slot {
            fsm,
            conn: None,
            outgoing: false,
            timers: [None; 4],
            dial: None,
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    /// Timers due at `now`, cleared.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Timer> {
        let mut due = Vec::new();
        for t in Timer::ALL {
            if self.timers[t.index()].is_some_and(|d| d <= now) {
                self.timers[t.index()] = None;
                due.push(t);
            }
        }
        due
    }

    pub fn conn_id(&self) -> Option<ConnId> {
        self.conn.as_ref().map(|(id, _)| *id)
    }
}

/// Facts of an established session.
#[derive(Debug, Clone)]
pub(crate) struct Established {
    pub hold_time: u16,
    pub families: BTreeSet<AfiSafi>,
    pub local_addr: IpAddr,
    /// What both OPENs negotiated: how UPDATEs are encoded.
    pub caps: SessionCaps,
    /// The peer's graceful-restart capability (RFC 4724).
    pub peer_gr: Option<GracefulRestart>,
    /// Families the peer sent End-of-RIB for.
    pub eor_received: BTreeSet<AfiSafi>,
    /// Initial table held back until we are synced (restarting speaker,
    /// RFC 4724 §4.1 selection deferral).
    pub initial_pending: bool,
}

/// A configured neighbour.
#[derive(Debug)]
pub(crate) struct Peer {
    pub cfg: PeerConfig,
    /// `cfg.filters` as one policy (`None`: no rule), shared with the
    /// export targets and the RIB.
    pub policy: Option<std::sync::Arc<crate::policy::Policy>>,
    pub primary: Slot,
    /// Boxed: rare (a collision in progress), and a reflector has
    /// thousands of peers.
    pub secondary: Option<Box<Slot>>,
    pub established: Option<Box<Established>>,
    /// Prefixes in the peer's Adj-RIB-Out (the routes themselves are not
    /// stored: export is a pure function of the Loc-RIB, see routing.rs).
    pub advertised: usize,
    /// A graceful restart in progress: its stale paths go at this instant.
    pub gr_deadline: Option<Instant>,
    pub since: SystemTime,
    pub last_state: State,
    pub last_error: Option<String>,
    pub router_id: Option<std::net::Ipv4Addr>,
}

impl Peer {
    pub fn new(cfg: PeerConfig, global: &SpeakerConfig) -> Peer {
        let fsm = Fsm::new(fsm_config(&cfg, global));
        Peer {
            policy: cfg.policy(),
            cfg,
            primary: Slot::new(fsm),
            secondary: None,
            established: None,
            advertised: 0,
            gr_deadline: None,
            since: SystemTime::now(),
            last_state: State::Idle,
            last_error: None,
            router_id: None,
        }
    }

    pub fn slot(&mut self, kind: SlotKind) -> Option<&mut Slot> {
        match kind {
            SlotKind::Primary => Some(&mut self.primary),
            SlotKind::Secondary => self.secondary.as_deref_mut(),
        }
    }

    /// Which slot holds a connection.
    pub fn slot_of_conn(&self, id: ConnId) -> Option<SlotKind> {
        if self.primary.conn_id() == Some(id) {
            Some(SlotKind::Primary)
        } else if self.secondary.as_ref().and_then(|s| s.conn_id()) == Some(id) {
            Some(SlotKind::Secondary)
        } else {
            None
        }
    }

    pub fn ibgp(&self, local_as: u32) -> bool {
        self.cfg.as_number == local_as
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let s = self.secondary.as_deref().and_then(Slot::next_deadline);
        [self.primary.next_deadline(), s, self.gr_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Record a state change of the primary FSM for the status table.
    pub fn note_state(&mut self) {
        let state = self.primary.fsm.state();
        if state != self.last_state {
            self.last_state = state;
            self.since = SystemTime::now();
        }
    }

    pub fn since_unix(&self) -> u64 {
        self.since
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
    }
}

/// The FSM parameters of a peer.
pub(crate) fn fsm_config(peer: &PeerConfig, global: &SpeakerConfig) -> FsmConfig {
    FsmConfig {
        local_as: global.as_number,
        router_id: global.router_id,
        peer_as: peer.as_number,
        hold_time: peer.hold_time.unwrap_or(global.hold_time),
        connect_retry: global.connect_retry(),
        capabilities: capabilities(peer, global),
    }
}

/// What we advertise: the defaults plus graceful restart (RFC 4724 §3),
/// with the R and F bits after a restart (we kept forwarding), and the N bit
/// (RFC 8538: a NOTIFICATION other than Hard Reset keeps the routes too).
fn capabilities(peer: &PeerConfig, global: &SpeakerConfig) -> Vec<Capability> {
    let mut caps = FsmConfig::default_capabilities(global.as_number);
    caps.push(Capability::GracefulRestart(GracefulRestart {
        restart_state: global.restarting,
        notification: true,
        restart_time: peer.restart_time.unwrap_or(global.restart_time),
        families: vec![
            (AfiSafi::IPV4_UNICAST, global.restarting),
            (AfiSafi::IPV6_UNICAST, global.restarting),
        ],
    }));
    caps
}

/// Families usable on a session (RFC 4760 §8): those both sides announced;
/// a peer announcing none speaks IPv4 unicast only.
pub(crate) fn negotiated_families(local: &[Capability], remote: &Open) -> BTreeSet<AfiSafi> {
    let fams = |caps: &[Capability]| -> BTreeSet<AfiSafi> {
        let set: BTreeSet<AfiSafi> = caps
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if set.is_empty() {
            BTreeSet::from([AfiSafi::IPV4_UNICAST])
        } else {
            set
        }
    };
    fams(local)
        .intersection(&fams(&remote.capabilities))
        .copied()
        .collect()
}
