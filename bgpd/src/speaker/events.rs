//! The actor's handling of session events: accepted and dialled
//! connections, messages and closes from connection tasks, and connection
//! collisions (RFC 4271 §6.8).

use std::net::{IpAddr, SocketAddr};

use super::Actor;
use super::peer::{Slot, SlotKind};
use crate::fsm::{CollisionWinner, Fsm, Input, State, resolve_collision};
use crate::packet::{Message, Notification};
use crate::session::{self, ConnEvent, ConnId, SessionEvent};

impl Actor {
    fn attach(
        &mut self,
        addr: IpAddr,
        kind: SlotKind,
        stream: tokio::net::TcpStream,
        outgoing: bool,
    ) -> bool {
        let id = self.next_conn;
        self.next_conn += 1;
        let stall = self.cfg.send_stall();
        let handle = match session::spawn_connection(
            id,
            stream,
            self.session_tx.clone(),
            self.credits.clone(),
            stall,
        ) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(peer = %addr, error = %e, "cannot set up the connection");
                return false;
            }
        };
        let Some(slot) = self.peers.get_mut(&addr).and_then(|p| p.slot(kind)) else {
            return false;
        };
        slot.conn = Some((id, handle));
        slot.outgoing = outgoing;
        self.conn_owner.insert(id, addr);
        true
    }

    // ---- session events -------------------------------------------------

    pub(super) fn session_event(&mut self, ev: SessionEvent) {
        match ev {
            SessionEvent::Accepted { stream, remote } => self.accepted(stream, remote),
            SessionEvent::Connected {
                peer,
                attempt,
                result,
            } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                if p.primary.dial.as_ref().map(|(a, _)| *a) != Some(attempt) {
                    return; // a stale attempt: the FSM moved on
                }
                p.primary.dial = None;
                match result {
                    Ok(stream) => {
                        if self.attach(peer, SlotKind::Primary, stream, true) {
                            self.run_fsm(peer, SlotKind::Primary, Input::TcpCrAcked);
                        } else {
                            self.run_fsm(peer, SlotKind::Primary, Input::TcpConnectionFails);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = %peer, error = %e, "connect failed");
                        p.last_error = Some(format!("connect to {}: {e}", p.cfg.socket_addr()));
                        self.run_fsm(peer, SlotKind::Primary, Input::TcpConnectionFails);
                    }
                }
            }
            SessionEvent::Conn { id, event, credit } => {
                self.conn_event(id, event);
                // Its prefixes are in the RIB now: the credits go back.
                drop(credit);
            }
        }
    }

    fn accepted(&mut self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        let addr = remote.ip();
        let Some(peer) = self.peers.get_mut(&addr) else {
            tracing::info!(%remote, "connection from an address that is not a configured peer; refused");
            return;
        };
        if let Some(min_ttl) = peer.cfg.min_ttl()
            && let Err(e) = session::apply_gtsm(socket2::SockRef::from(&stream), addr, min_ttl)
        {
            tracing::warn!(peer = %addr, error = %e, "cannot apply GTSM to the accepted connection");
        }
        match peer.primary.fsm.state() {
            State::Idle => tracing::debug!(peer = %addr, "connection refused in Idle"),
            State::Connect | State::Active => {
                peer.primary.dial = None;
                if let Some((id, h)) = peer.primary.conn.take() {
                    self.conn_owner.remove(&id);
                    if let Some(t) = h.close() {
                        self.closing.insert(id, t);
                    }
                }
                if self.attach(addr, SlotKind::Primary, stream, false) {
                    self.run_fsm(addr, SlotKind::Primary, Input::TcpConnectionConfirmed);
                }
            }
            State::OpenSent | State::OpenConfirm if peer.secondary.is_none() => {
                let mut fsm = Fsm::new(peer.primary.fsm.config().clone());
                fsm.process(Input::AutomaticStart { passive: true });
                peer.secondary = Some(Box::new(Slot::new(fsm)));
                if self.attach(addr, SlotKind::Secondary, stream, false) {
                    self.run_fsm(addr, SlotKind::Secondary, Input::TcpConnectionConfirmed);
                } else if let Some(p) = self.peers.get_mut(&addr) {
                    p.secondary = None;
                }
            }
            state => {
                // §6.8: a new connection colliding with an Established one is closed.
                tracing::info!(peer = %addr, %state, "second connection refused (Cease/Connection Collision Resolution)");
                let id = self.next_conn;
                self.next_conn += 1;
                let stall = self.cfg.send_stall();
                if let Ok(h) = session::spawn_connection(
                    id,
                    stream,
                    self.session_tx.clone(),
                    self.credits.clone(),
                    stall,
                ) {
                    h.send(Message::Notification(Notification::new(6, 7, Vec::new())));
                    if let Some(t) = h.close() {
                        self.closing.insert(id, t);
                    }
                }
            }
        }
    }

    fn conn_event(&mut self, id: ConnId, event: ConnEvent) {
        let kind = self
            .conn_owner
            .get(&id)
            .and_then(|a| Some((*a, self.peers.get(a)?.slot_of_conn(id)?)));
        let Some((addr, kind)) = kind else {
            if matches!(event, ConnEvent::Closed(_)) {
                self.closing.remove(&id);
            }
            return;
        };
        let input = match event {
            ConnEvent::Received(Message::Open(open)) => {
                return self.received_open(addr, kind, id, open);
            }
            ConnEvent::Received(Message::Keepalive) => Input::KeepAliveMsg,
            ConnEvent::Received(Message::Update(u)) => Input::UpdateMsg(u),
            ConnEvent::Received(Message::RouteRefresh(r)) => Input::RouteRefreshMsg(r),
            ConnEvent::Received(Message::Notification(n)) => {
                tracing::warn!(peer = %addr, notification = %n.describe(), "received NOTIFICATION");
                Input::NotifMsg(n)
            }
            ConnEvent::DecodeFailed(e) => {
                tracing::warn!(peer = %addr, error = %e, "malformed message");
                Input::decode_error(&e, self.state_of(addr, kind))
            }
            ConnEvent::SendStalled { after } => {
                // The peer has not taken an octet for the stall timeout:
                // the FSM drops it with Cease / Out of Resources (RFC 4486
                // §4) rather than keep its session and output forever.
                tracing::warn!(peer = %addr, stalled_s = after.as_secs(), "send stall: the peer reads nothing; closing with Cease/Out of Resources");
                Input::SendStalled { after }
            }
            ConnEvent::Closed(reason) => {
                tracing::debug!(peer = %addr, ?reason, "connection closed");
                self.conn_owner.remove(&id);
                self.run_fsm(addr, kind, Input::TcpConnectionFails);
                // The FSM's CloseConnection put the task in `closing`, but
                // this was its last event: nothing would ever take it out
                // again, and each peer flap kept a finished task's cell
                // (bgp-load --churn). It is finishing on its own.
                if let Some(task) = self.closing.remove(&id) {
                    task.detach();
                }
                return;
            }
        };
        self.run_fsm(addr, kind, input);
    }

    fn state_of(&self, addr: IpAddr, kind: SlotKind) -> State {
        let p = &self.peers[&addr];
        match kind {
            SlotKind::Primary => p.primary.fsm.state(),
            SlotKind::Secondary => p.secondary.as_ref().map_or(State::Idle, |s| s.fsm.state()),
        }
    }

    /// An OPEN: resolve a collision with the peer's other connection first (§6.8).
    fn received_open(
        &mut self,
        addr: IpAddr,
        kind: SlotKind,
        id: ConnId,
        open: crate::packet::Open,
    ) {
        let other = match kind {
            SlotKind::Primary => SlotKind::Secondary,
            SlotKind::Secondary => SlotKind::Primary,
        };
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let other_state = peer.slot(other).map(|s| s.fsm.state());
        if !matches!(other_state, Some(State::OpenSent | State::OpenConfirm)) {
            return self.run_fsm(addr, kind, Input::BgpOpen(open));
        }
        let this_outgoing = peer.slot(kind).is_some_and(|s| s.outgoing);
        let winner = resolve_collision(self.cfg.router_id, open.router_id);
        let keep_this = (winner == CollisionWinner::LocallyInitiated) == this_outgoing;
        tracing::info!(peer = %addr, ?winner, "connection collision");
        if keep_this {
            self.run_fsm(addr, other, Input::OpenCollisionDump);
            // The dump may have promoted this connection to primary.
            let Some(kind) = self.peers.get(&addr).and_then(|p| p.slot_of_conn(id)) else {
                return;
            };
            self.run_fsm(addr, kind, Input::BgpOpen(open));
        } else {
            self.run_fsm(addr, kind, Input::OpenCollisionDump);
        }
    }
}
