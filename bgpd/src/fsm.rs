//! RFC 4271 §8 finite state machine (sans-IO).
//!
//! [`Fsm::process`] takes one [`Input`] (an RFC 4271 §8.1 event) and returns
//! the [`Output`]s the caller must carry out: open a TCP connection, send a
//! message, close the connection, start or stop a timer, report that the
//! session came up or went down, hand an UPDATE to the RIB. No sockets, no
//! clocks: the session layer ([`crate::speaker`]) owns those, and the unit
//! tests below drive every transition by hand.
//!
//! Deviations from the letter of §8.2.2, all taken by GoBGP and BIRD too:
//! * No DelayOpen, no DampPeerOscillations. Instead an *IdleHold* timer
//!   (Event 13) turns a failure into an automatic restart after a back-off
//!   that doubles with every failure before Established (1 s … 60 s).
//! * A TCP failure in Connect goes to Active and retries after the
//!   ConnectRetry timer (the DelayOpen branch of §8.2.2), instead of Idle.
//! * Connection collisions (§6.8) are resolved by the owner of both
//!   connections with [`resolve_collision`]; the loser gets
//!   [`Input::OpenCollisionDump`].

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::packet::{Capability, DecodeError, Message, Notification, Open, SessionCaps, Update};

/// Hold timer used in OpenSent, before the peer's hold time is known (§8.2.2: "4 minutes is suggested").
pub const LARGE_HOLD_TIME: Duration = Duration::from_secs(240);
/// Default ConnectRetry time (Manx design: 5 s, as Calico's BIRD config uses).
pub const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(5);
/// Default hold time in seconds (§10 suggests 90 s).
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// First IdleHold back-off after a failure; doubles up to [`MAX_IDLE_HOLD`].
pub const MIN_IDLE_HOLD: Duration = Duration::from_secs(1);
/// Cap of the IdleHold back-off.
pub const MAX_IDLE_HOLD: Duration = Duration::from_secs(60);

// NOTIFICATION codes and subcodes used by the FSM (RFC 4271 §4.5, §6; RFC 6608; RFC 4486).
const OPEN_MESSAGE_ERROR: u8 = 2;
const BAD_PEER_AS: u8 = 2;
const BAD_BGP_IDENTIFIER: u8 = 3;
const UNACCEPTABLE_HOLD_TIME: u8 = 6;
const HOLD_TIMER_EXPIRED: u8 = 4;
const FSM_ERROR: u8 = 5;
const CEASE: u8 = 6;
const CEASE_CONNECTION_COLLISION: u8 = 7;
const CEASE_OUT_OF_RESOURCES: u8 = 8;

/// The six states of RFC 4271 §8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// Refuses connections; waits for a start event.
    Idle,
    /// Waiting for an outgoing TCP connection to complete.
    Connect,
    /// Waiting for the peer to connect (or for ConnectRetry to try again).
    Active,
    /// OPEN sent, waiting for the peer's OPEN.
    OpenSent,
    /// OPEN exchanged and KEEPALIVE sent, waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// The session is up: UPDATEs flow.
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The timers the FSM asks its owner to run (RFC 4271 §8, §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// ConnectRetryTimer (Event 9 on expiry).
    ConnectRetry,
    /// HoldTimer (Event 10).
    Hold,
    /// KeepaliveTimer (Event 11).
    Keepalive,
    /// IdleHoldTimer (Event 13): automatic restart after a failure.
    IdleHold,
}

impl Timer {
    /// Every timer, for owners that keep one slot per timer.
    pub const ALL: [Timer; 4] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::IdleHold,
    ];

    /// Index of the timer in [`Timer::ALL`].
    pub fn index(self) -> usize {
        match self {
            Timer::ConnectRetry => 0,
            Timer::Hold => 1,
            Timer::Keepalive => 2,
            Timer::IdleHold => 3,
        }
    }
}

/// What happened: the events of RFC 4271 §8.1, numbered as there.
#[derive(Debug)]
pub enum Input {
    // Event 1: ManualStart
    /// The operator starts the peer.
    ManualStart,
    // Event 2: ManualStop
    /// The operator stops the peer; an open session gets one CEASE:
    /// Administrative Shutdown with this RFC 8203 shutdown message, or Peer
    /// De-configured (RFC 4486 §4) when the peer was removed.
    ManualStop {
        /// RFC 8203 shutdown communication, if any.
        shutdown_message: Option<String>,
        /// The peer is removed from the configuration (CEASE subcode 3).
        deconfigured: bool,
    },
    // Event 3: AutomaticStart / Event 5: AutomaticStart_with_PassiveTcpEstablishment
    /// The speaker starts the peer; `passive` peers only accept connections.
    AutomaticStart {
        /// Never initiate a connection (Event 5 instead of Event 3).
        passive: bool,
    },
    // Event 9: ConnectRetryTimer_Expires
    /// The ConnectRetry timer fired.
    ConnectRetryTimerExpires,
    // Event 10: HoldTimer_Expires
    /// The Hold timer fired.
    HoldTimerExpires,
    // Event 11: KeepaliveTimer_Expires
    /// The Keepalive timer fired.
    KeepaliveTimerExpires,
    // Event 13: IdleHoldTimer_Expires
    /// The IdleHold timer fired: restart automatically.
    IdleHoldTimerExpires,
    // Event 14: TcpConnection_Valid
    /// An incoming connection request passed the owner's checks (peer known).
    TcpConnectionValid,
    // Event 16: Tcp_CR_Acked
    /// Our outgoing connection completed.
    TcpCrAcked,
    // Event 17: TcpConnectionConfirmed
    /// An incoming connection was accepted.
    TcpConnectionConfirmed,
    // Event 18: TcpConnectionFails
    /// The TCP connection failed or was closed by the peer.
    TcpConnectionFails,
    // Event 19: BGPOpen
    /// A valid-looking OPEN arrived (the FSM checks it against the config).
    BgpOpen(Open),
    // Event 21: BGPHeaderErr
    /// The message header was bad; carries the NOTIFICATION to send.
    BgpHeaderErr(Notification),
    // Event 22: BGPOpenMsgErr
    /// The OPEN was bad; carries the NOTIFICATION to send.
    BgpOpenMsgErr(Notification),
    // Event 23: OpenCollisionDump
    /// This connection lost a collision (§6.8).
    OpenCollisionDump,
    // Event 24: NotifMsgVerErr / Event 25: NotifMsg
    /// A NOTIFICATION arrived.
    NotifMsg(Notification),
    // Event 26: KeepAliveMsg
    /// A KEEPALIVE arrived.
    KeepAliveMsg,
    // Event 27: UpdateMsg
    /// An UPDATE arrived.
    UpdateMsg(Update),
    // Event 28: UpdateMsgErr
    /// An UPDATE was bad beyond RFC 7606 repair; carries the NOTIFICATION.
    UpdateMsgErr(Notification),
    /// A ROUTE-REFRESH arrived (RFC 2918); not an RFC 4271 event.
    RouteRefreshMsg(crate::packet::RouteRefresh),
    /// Not an RFC 4271 event: our output to the peer has made no progress
    /// for `after` (the peer reads nothing). The session is dropped with
    /// Cease / Out of Resources (RFC 4486 §4, subcode 8) rather than keep
    /// its output forever.
    SendStalled {
        /// How long the output waited without an octet written.
        after: Duration,
    },
    /// Not an RFC 4271 event: the peer's BFD session went Down (RFC 5882
    /// §3.2): the session is torn down at once, without a NOTIFICATION
    /// (the path to the peer is what failed).
    BfdDown {
        /// The BFD diagnostic.
        diag: crate::bfd::Diag,
    },
}

impl Input {
    /// The event for a decode error (Events 21, 22, 28): the codec's
    /// [`DecodeError::notification`] is what gets sent. Which event it is
    /// depends only on the state the connection is in.
    pub fn decode_error(err: &DecodeError, state: State) -> Input {
        let n = err.notification();
        match state {
            State::Established => Input::UpdateMsgErr(n),
            State::OpenSent => Input::BgpOpenMsgErr(n),
            _ => Input::BgpHeaderErr(n),
        }
    }
}

/// Why a session left its state for Idle (the "last error" of a peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The operator stopped the peer.
    ManualStop,
    /// We sent this NOTIFICATION.
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// The TCP connection failed or closed.
    ConnectionFailed,
    /// The connection lost a collision (§6.8).
    CollisionDump,
    /// Our output made no progress for `after` ([`Input::SendStalled`]);
    /// we sent `notification` (Cease / Out of Resources).
    SendStalled {
        /// How long the output waited without an octet written.
        after: Duration,
        /// What we sent.
        notification: Notification,
    },
    /// The peer's BFD session went Down (RFC 5882).
    BfdDown {
        /// Its diagnostic.
        diag: crate::bfd::Diag,
    },
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let describe = |n: &Notification| {
            let mut s = format!(
                "{}/{} ({})",
                n.code,
                n.subcode,
                notification_name(n.code, n.subcode)
            );
            // RFC 8538 §3: name what the Hard Reset carries.
            if let Some(inner) = n.encapsulated() {
                s.push_str(&format!(
                    " of {}/{} ({})",
                    inner.code,
                    inner.subcode,
                    notification_name(inner.code, inner.subcode)
                ));
            }
            if let Some(msg) = n.shutdown_message() {
                s.push_str(&format!(": \"{msg}\""));
            }
            s
        };
        match self {
            DownReason::ManualStop => f.write_str("stopped by operator"),
            DownReason::NotificationSent(n) => write!(f, "sent NOTIFICATION {}", describe(n)),
            DownReason::NotificationReceived(n) => {
                write!(f, "received NOTIFICATION {}", describe(n))
            }
            DownReason::ConnectionFailed => f.write_str("TCP connection failed or closed"),
            DownReason::BfdDown { diag } => write!(f, "BFD session down ({diag})"),
            DownReason::CollisionDump => {
                f.write_str("connection collision resolved in favour of the other connection")
            }
            DownReason::SendStalled {
                after,
                notification,
            } => write!(
                f,
                "send stall: no write progress for {} s (sent NOTIFICATION {})",
                after.as_secs(),
                describe(notification)
            ),
        }
    }
}

/// A readable name for a NOTIFICATION code/subcode (RFC 4271 §4.5, RFC 4486, RFC 6608).
pub fn notification_name(code: u8, subcode: u8) -> &'static str {
    match (code, subcode) {
        (1, 1) => "Connection Not Synchronized",
        (1, 2) => "Bad Message Length",
        (1, 3) => "Bad Message Type",
        (1, _) => "Message Header Error",
        (2, 1) => "Unsupported Version Number",
        (2, 2) => "Bad Peer AS",
        (2, 3) => "Bad BGP Identifier",
        (2, 4) => "Unsupported Optional Parameter",
        (2, 6) => "Unacceptable Hold Time",
        (2, 7) => "Unsupported Capability",
        (2, _) => "OPEN Message Error",
        (3, 1) => "Malformed Attribute List",
        (3, 2) => "Unrecognized Well-known Attribute",
        (3, 3) => "Missing Well-known Attribute",
        (3, 4) => "Attribute Flags Error",
        (3, 5) => "Attribute Length Error",
        (3, 6) => "Invalid ORIGIN Attribute",
        (3, 8) => "Invalid NEXT_HOP Attribute",
        (3, 9) => "Optional Attribute Error",
        (3, 10) => "Invalid Network Field",
        (3, 11) => "Malformed AS_PATH",
        (3, _) => "UPDATE Message Error",
        (4, _) => "Hold Timer Expired",
        (5, _) => "Finite State Machine Error",
        (6, 1) => "Cease: Maximum Number of Prefixes Reached",
        (6, 2) => "Cease: Administrative Shutdown",
        (6, 3) => "Cease: Peer De-configured",
        (6, 4) => "Cease: Administrative Reset",
        (6, 5) => "Cease: Connection Rejected",
        (6, 6) => "Cease: Other Configuration Change",
        (6, 7) => "Cease: Connection Collision Resolution",
        (6, 8) => "Cease: Out of Resources",
        (6, 9) => "Cease: Hard Reset",
        (6, _) => "Cease",
        (7, _) => "ROUTE-REFRESH Message Error",
        _ => "Unknown",
    }
}

/// What the owner of the FSM must do, in order.
#[derive(Debug)]
pub enum Output {
    /// Open a TCP connection to the peer (ConnectRetry is already running).
    Connect,
    /// Send this message on the current connection.
    SendMessage(Message),
    /// Close the current connection (after flushing queued messages).
    CloseConnection,
    /// (Re)start a timer to fire after the duration.
    StartTimer(Timer, Duration),
    /// Stop a timer.
    StopTimer(Timer),
    /// The session reached Established.
    SessionEstablished {
        /// What both OPENs negotiated (4-octet AS, add-path, message size).
        caps: SessionCaps,
        /// The peer's OPEN (router id, capabilities, families).
        peer_open: Box<Open>,
        /// Negotiated hold time in seconds (0 = no keepalives).
        hold_time: u16,
    },
    /// The session left OpenSent/OpenConfirm/Established for Idle.
    SessionDown {
        /// Why.
        reason: DownReason,
        /// The state it left.
        from: State,
    },
    /// An UPDATE received in Established, for the RIB.
    DeliverUpdate(Update),
    /// A ROUTE-REFRESH received in Established: re-send the Adj-RIB-Out.
    DeliverRouteRefresh(crate::packet::RouteRefresh),
}

/// What the FSM needs to know about the local speaker and the peer.
#[derive(Debug, Clone)]
pub struct FsmConfig {
    /// Our AS number.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The AS number the peer must announce in its OPEN.
    pub peer_as: u32,
    /// Our proposed hold time in seconds (0 or ≥ 3).
    pub hold_time: u16,
    /// ConnectRetry time.
    pub connect_retry: Duration,
    /// Capabilities for our OPEN.
    pub capabilities: Vec<Capability>,
}

impl FsmConfig {
    /// The capabilities Manx advertises: IPv4 and IPv6 unicast (RFC 4760),
    /// route refresh (RFC 2918), 4-octet AS (RFC 6793).
    pub fn default_capabilities(local_as: u32) -> Vec<Capability> {
        use crate::packet::{Afi, AfiSafi, Safi};
        vec![
            Capability::Multiprotocol(AfiSafi {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            }),
            Capability::Multiprotocol(AfiSafi {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
            }),
            Capability::RouteRefresh,
            Capability::FourOctetAs(local_as),
        ]
    }

    /// The OPEN we send.
    pub fn open(&self) -> Open {
        Open::new(
            self.local_as,
            self.hold_time,
            self.router_id,
            self.capabilities.clone(),
        )
    }
}

/// Which of two colliding connections to keep (RFC 4271 §6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollisionWinner {
    /// Keep the connection we initiated.
    LocallyInitiated,
    /// Keep the connection the peer initiated.
    RemotelyInitiated,
}

/// RFC 4271 §6.8: compare the BGP identifiers as host-order integers; the
/// connection initiated by the speaker with the higher identifier survives.
pub fn resolve_collision(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> CollisionWinner {
    if u32::from(local_id) > u32::from(remote_id) {
        CollisionWinner::LocallyInitiated
    } else {
        CollisionWinner::RemotelyInitiated
    }
}

/// One BGP connection's state machine.
#[derive(Debug)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    passive: bool,
    /// Stopped by the operator: no automatic restart until a start event.
    stopped: bool,
    /// ConnectRetryCounter of §8: failures since the last Established.
    connect_retry_counter: u32,
    negotiated_hold: u16,
    peer_open: Option<Open>,
    /// The session negotiated RFC 8538 (N bit on both sides).
    graceful_notification: bool,
}

impl Fsm {
    /// A new FSM in Idle.
    pub fn new(cfg: FsmConfig) -> Fsm {
        Fsm {
            cfg,
            state: State::Idle,
            passive: false,
            stopped: false,
            connect_retry_counter: 0,
            negotiated_hold: 0,
            peer_open: None,
            graceful_notification: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// Replace the configuration (takes effect at the next connection).
    pub fn set_config(&mut self, cfg: FsmConfig) {
        self.cfg = cfg;
    }

    /// Whether the FSM only accepts connections (set when a second,
    /// accepted connection's FSM takes over a peer that dials).
    pub fn set_passive(&mut self, passive: bool) {
        self.passive = passive;
    }

    /// The peer's OPEN, once received on this connection.
    pub fn peer_open(&self) -> Option<&Open> {
        self.peer_open.as_ref()
    }

    /// Negotiated hold time (valid from OpenConfirm on).
    pub fn negotiated_hold_time(&self) -> u16 {
        self.negotiated_hold
    }

    /// ConnectRetryCounter: failures since the last Established.
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// Feed one event; returns what to do.
    pub fn process(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        tracing::trace!(state = %self.state, ?input, "fsm input");
        match self.state {
            State::Idle => self.idle(input, &mut out),
            State::Connect | State::Active => self.connect_or_active(input, &mut out),
            State::OpenSent => self.open_sent(input, &mut out),
            State::OpenConfirm => self.open_confirm(input, &mut out),
            State::Established => self.established(input, &mut out),
        }
        out
    }

    fn start(&mut self, passive: bool, out: &mut Vec<Output>) {
        self.passive = passive;
        self.stopped = false;
        out.push(Output::StopTimer(Timer::IdleHold));
        if passive {
            // Event 4/5: wait for the peer in Active; no ConnectRetry, we never dial.
            self.state = State::Active;
        } else {
            out.push(Output::StartTimer(
                Timer::ConnectRetry,
                self.cfg.connect_retry,
            ));
            out.push(Output::Connect);
            self.state = State::Connect;
        }
    }

    fn idle(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStart => {
                self.connect_retry_counter = 0;
                self.start(false, out);
            }
            Input::AutomaticStart { passive } => self.start(passive, out),
            // A stale expiry after ManualStop must not restart the peer.
            Input::IdleHoldTimerExpires if !self.stopped => self.start(self.passive, out),
            // §8.2.2 Idle: "any other event ... the local system refuses the connection".
            Input::TcpConnectionConfirmed | Input::TcpCrAcked => out.push(Output::CloseConnection),
            _ => {}
        }
    }

    fn connect_or_active(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStop { .. } => {
                out.push(Output::CloseConnection);
                self.go_idle(out, DownReason::ManualStop, false);
            }
            Input::ConnectRetryTimerExpires => {
                if self.passive {
                    return;
                }
                // Connect: drop the attempt and retry; Active: initiate a connection.
                if self.state == State::Connect {
                    out.push(Output::CloseConnection);
                }
                out.push(Output::StartTimer(
                    Timer::ConnectRetry,
                    self.cfg.connect_retry,
                ));
                out.push(Output::Connect);
                self.state = State::Connect;
            }
            Input::TcpConnectionValid => {}
            Input::TcpCrAcked | Input::TcpConnectionConfirmed => {
                out.push(Output::StopTimer(Timer::ConnectRetry));
                out.push(Output::SendMessage(Message::Open(self.cfg.open())));
                out.push(Output::StartTimer(Timer::Hold, LARGE_HOLD_TIME));
                self.state = State::OpenSent;
            }
            Input::TcpConnectionFails => {
                out.push(Output::CloseConnection);
                self.connect_retry_counter += 1;
                if !self.passive {
                    out.push(Output::StartTimer(
                        Timer::ConnectRetry,
                        self.cfg.connect_retry,
                    ));
                }
                self.state = State::Active;
            }
            // No session to take down.
            Input::AutomaticStart { .. } | Input::ManualStart | Input::BfdDown { .. } => {}
            // Messages before any connection is up cannot happen; anything else is an FSM error.
            other => {
                tracing::debug!(state = %self.state, input = ?other, "unexpected event, back to Idle");
                out.push(Output::CloseConnection);
                self.go_idle(out, DownReason::ConnectionFailed, true);
            }
        }
    }

    fn open_sent(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::BgpOpen(open) => match self.check_open(&open) {
                Ok(hold) => {
                    out.push(Output::StopTimer(Timer::ConnectRetry));
                    out.push(Output::SendMessage(Message::Keepalive));
                    self.negotiated_hold = hold;
                    if hold == 0 {
                        out.push(Output::StopTimer(Timer::Hold));
                        out.push(Output::StopTimer(Timer::Keepalive));
                    } else {
                        out.push(Output::StartTimer(
                            Timer::Keepalive,
                            keepalive_interval(hold),
                        ));
                        out.push(Output::StartTimer(
                            Timer::Hold,
                            Duration::from_secs(hold.into()),
                        ));
                    }
                    self.peer_open = Some(open);
                    self.state = State::OpenConfirm;
                }
                Err(notification) => self.fail_with(notification, out),
            },
            other => self.common(other, out),
        }
    }

    fn open_confirm(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::KeepAliveMsg => {
                self.restart_hold(out);
                let peer_open = self
                    .peer_open
                    .clone()
                    .expect("OpenConfirm always has the peer's OPEN");
                let caps = SessionCaps::negotiate(&self.cfg.open(), &peer_open);
                self.graceful_notification = caps.graceful_notification;
                self.connect_retry_counter = 0;
                self.state = State::Established;
                out.push(Output::SessionEstablished {
                    caps,
                    peer_open: Box::new(peer_open),
                    hold_time: self.negotiated_hold,
                });
            }
            Input::KeepaliveTimerExpires => self.send_keepalive(out),
            other => self.common(other, out),
        }
    }

    fn established(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::KeepAliveMsg => self.restart_hold(out),
            Input::UpdateMsg(update) => {
                self.restart_hold(out);
                out.push(Output::DeliverUpdate(update));
            }
            Input::RouteRefreshMsg(rr) => {
                self.restart_hold(out);
                out.push(Output::DeliverRouteRefresh(rr));
            }
            Input::KeepaliveTimerExpires => self.send_keepalive(out),
            other => self.common(other, out),
        }
    }

    /// The transitions OpenSent, OpenConfirm and Established share.
    fn common(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::ManualStop {
                shutdown_message,
                deconfigured,
            } => {
                let n = match shutdown_message {
                    _ if deconfigured => Notification {
                        code: CEASE,
                        subcode: 3,
                        data: Vec::new(),
                    },
                    Some(msg) => Notification::cease_shutdown(&msg),
                    None => Notification {
                        code: CEASE,
                        subcode: 2,
                        data: Vec::new(),
                    },
                };
                // RFC 8538 §5: with the N bit on both sides, Administrative
                // Shutdown and Peer De-configured go as Hard Reset, so the
                // peer drops our routes instead of keeping them as stale.
                let n = if self.graceful_notification {
                    Notification::hard_reset(&n)
                } else {
                    n
                };
                out.push(Output::SendMessage(Message::Notification(n)));
                out.push(Output::CloseConnection);
                self.go_idle(out, DownReason::ManualStop, false);
            }
            Input::HoldTimerExpires => self.fail_with(
                Notification {
                    code: HOLD_TIMER_EXPIRED,
                    subcode: 0,
                    data: Vec::new(),
                },
                out,
            ),
            Input::OpenCollisionDump => {
                let n = Notification {
                    code: CEASE,
                    subcode: CEASE_CONNECTION_COLLISION,
                    data: Vec::new(),
                };
                out.push(Output::SendMessage(Message::Notification(n)));
                out.push(Output::CloseConnection);
                self.go_idle(out, DownReason::CollisionDump, true);
            }
            // RFC 4271 §8.2.2, OpenSent, Event 18: close, restart the
            // ConnectRetry timer, keep listening: Active (the peer that
            // accepted TCP and closed may well dial us next). In
            // OpenConfirm and Established the same event goes to Idle.
            Input::TcpConnectionFails if self.state == State::OpenSent => {
                out.push(Output::CloseConnection);
                out.push(Output::StopTimer(Timer::Hold));
                if !self.passive {
                    out.push(Output::StartTimer(
                        Timer::ConnectRetry,
                        self.cfg.connect_retry,
                    ));
                }
                self.peer_open = None;
                self.state = State::Active;
                out.push(Output::SessionDown {
                    reason: DownReason::ConnectionFailed,
                    from: State::OpenSent,
                });
            }
            Input::TcpConnectionFails => {
                out.push(Output::CloseConnection);
                self.go_idle(out, DownReason::ConnectionFailed, true);
            }
            Input::NotifMsg(n) => {
                out.push(Output::CloseConnection);
                self.go_idle(out, DownReason::NotificationReceived(n), true);
            }
            Input::BgpHeaderErr(n) | Input::BgpOpenMsgErr(n) | Input::UpdateMsgErr(n) => {
                self.fail_with(n, out)
            }
            Input::SendStalled { after } => {
                let n = Notification {
                    code: CEASE,
                    subcode: CEASE_OUT_OF_RESOURCES,
                    data: Vec::new(),
                };
                out.push(Output::SendMessage(Message::Notification(n.clone())));
                out.push(Output::CloseConnection);
                let reason = DownReason::SendStalled {
                    after,
                    notification: n,
                };
                self.go_idle(out, reason, true);
            }
            Input::BfdDown { diag } => {
                out.push(Output::CloseConnection);
                self.go_idle(out, DownReason::BfdDown { diag }, true);
            }
            Input::AutomaticStart { .. }
            | Input::ManualStart
            | Input::TcpConnectionValid
            | Input::IdleHoldTimerExpires => {}
            // A stale ConnectRetry expiry after the OPEN went out is harmless.
            Input::ConnectRetryTimerExpires => {}
            // RFC 6608 subcodes: unexpected message in OpenSent (1), OpenConfirm (2), Established (3).
            _ => {
                let subcode = match self.state {
                    State::OpenSent => 1,
                    State::OpenConfirm => 2,
                    _ => 3,
                };
                self.fail_with(
                    Notification {
                        code: FSM_ERROR,
                        subcode,
                        data: Vec::new(),
                    },
                    out,
                )
            }
        }
    }

    fn fail_with(&mut self, n: Notification, out: &mut Vec<Output>) {
        out.push(Output::SendMessage(Message::Notification(n.clone())));
        out.push(Output::CloseConnection);
        self.go_idle(out, DownReason::NotificationSent(n), true);
    }

    fn send_keepalive(&mut self, out: &mut Vec<Output>) {
        out.push(Output::SendMessage(Message::Keepalive));
        if self.negotiated_hold != 0 {
            out.push(Output::StartTimer(
                Timer::Keepalive,
                keepalive_interval(self.negotiated_hold),
            ));
        }
    }

    fn restart_hold(&mut self, out: &mut Vec<Output>) {
        if self.negotiated_hold != 0 {
            out.push(Output::StartTimer(
                Timer::Hold,
                Duration::from_secs(self.negotiated_hold.into()),
            ));
        }
    }

    /// Leave for Idle: stop every timer, report, and schedule the automatic restart.
    fn go_idle(&mut self, out: &mut Vec<Output>, reason: DownReason, restart: bool) {
        let from = self.state;
        for t in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
            out.push(Output::StopTimer(t));
        }
        self.stopped = !restart;
        if restart {
            self.connect_retry_counter += 1;
            out.push(Output::StartTimer(
                Timer::IdleHold,
                idle_hold(self.connect_retry_counter),
            ));
        } else {
            out.push(Output::StopTimer(Timer::IdleHold));
        }
        self.state = State::Idle;
        self.peer_open = None;
        self.graceful_notification = false;
        self.negotiated_hold = 0;
        out.push(Output::SessionDown { reason, from });
    }

    /// Checks of an OPEN that need the configuration (§6.2); the codec already
    /// checked the version and the syntax. Returns the negotiated hold time.
    fn check_open(&self, open: &Open) -> Result<u16, Notification> {
        let err = |subcode| Notification {
            code: OPEN_MESSAGE_ERROR,
            subcode,
            data: Vec::new(),
        };
        if open.asn() != self.cfg.peer_as {
            tracing::warn!(
                expected = self.cfg.peer_as,
                got = open.asn(),
                "OPEN with the wrong peer AS"
            );
            return Err(err(BAD_PEER_AS));
        }
        let ibgp = self.cfg.peer_as == self.cfg.local_as;
        if open.router_id.is_unspecified() || (ibgp && open.router_id == self.cfg.router_id) {
            return Err(err(BAD_BGP_IDENTIFIER));
        }
        // §6.2: the Hold Time MUST be zero or at least three seconds.
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(err(UNACCEPTABLE_HOLD_TIME));
        }
        Ok(self.cfg.hold_time.min(open.hold_time))
    }
}

/// KeepaliveTime = one third of the hold time (§10), at least one second.
pub fn keepalive_interval(hold: u16) -> Duration {
    Duration::from_secs(u64::from(hold / 3).max(1))
}

fn idle_hold(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    (MIN_IDLE_HOLD * (1u32 << exp)).min(MAX_IDLE_HOLD)
}

#[cfg(test)]
mod tests;
