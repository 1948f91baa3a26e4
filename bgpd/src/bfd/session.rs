//! One BFD session in asynchronous mode (RFC 5880 §6), sans-IO.
//!
//! [`Session::process`] takes one [`Input`] (a received packet that passed
//! [`ControlPacket::decode`], a timer expiry, an administrative change) and
//! returns the [`Output`]s its owner carries out: send a packet, (re)arm the
//! transmit or detection timer, report a state change. No sockets, no
//! clocks, no randomness: the owner jitters the transmit interval with
//! [`jittered`].
//!
//! Not implemented, and never advertised: Demand mode for ourselves (we
//! never set D; a peer in Demand mode is honoured as §6.8.7 says), the Echo
//! function (Required Min Echo RX Interval is sent as 0), authentication
//! (packets with A are discarded by the decoder).

use std::time::Duration;

use super::packet::{ControlPacket, Diag, State};

/// While a session is not Up its transmit interval is at least this
/// (§6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// The local settings of a session (`bfd.*` variables of §6.8.1 that the
/// operator chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// bfd.LocalDiscr: nonzero, unique on this system.
    pub local_discr: u32,
    /// bfd.DesiredMinTxInterval once Up.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult.
    pub detect_mult: u8,
    /// Passive role (§6.1): send nothing until the peer has sent.
    pub passive: bool,
    /// Set the C bit: this system's BFD survives a control-plane restart
    /// (RFC 5880 §4.1, RFC 5882 §4.3).
    pub control_plane_independent: bool,
}

impl Config {
    /// Calico-style defaults for a peer: 300 ms × 3, active.
    pub fn new(local_discr: u32) -> Config {
        Config {
            local_discr,
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            passive: false,
            control_plane_independent: false,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A packet for this session (selected by Your Discriminator, or by
    /// address when it is 0) that passed the decoder's checks.
    Received(ControlPacket),
    /// The transmit timer fired.
    TxTimer,
    /// The detection timer fired.
    DetectTimer,
    /// The operator disabled the session (AdminDown, diag 7).
    AdminDown,
    /// The operator enabled it again.
    AdminUp,
    /// New intervals or multiplier; takes effect through a Poll Sequence
    /// when Up (§6.8.3).
    SetTimers {
        desired_min_tx: Duration,
        required_min_rx: Duration,
        detect_mult: u8,
    },
}

/// What the owner must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Send this packet now.
    Send(ControlPacket),
    /// (Re)arm the periodic transmit timer with this interval, before
    /// jitter ([`jittered`]).
    ArmTx(Duration),
    /// Stop periodic transmission (the peer is in Demand mode, or its
    /// Required Min RX is 0).
    StopTx,
    /// (Re)arm the detection timer.
    ArmDetect(Duration),
    /// Stop the detection timer.
    StopDetect,
    /// The session state changed; a change from Up to anything is what the
    /// BGP session acts on (RFC 5882 §3).
    StateChanged { from: State, to: State, diag: Diag },
}

/// A session's state (the `bfd.*` variables of §6.8.1).
#[derive(Debug, Clone)]
pub struct Session {
    cfg: Config,
    state: State,
    remote_state: State,
    remote_discr: u32,
    local_diag: Diag,
    remote_min_rx: Duration,
    remote_desired_min_tx: Duration,
    remote_detect_mult: u8,
    remote_demand: bool,
    remote_cpi: bool,
    /// A Poll Sequence is in progress (P set on every packet until an F).
    polling: bool,
    /// The transmit interval in force while a poll for an increase runs.
    tx_in_force: Option<Duration>,
    /// The Required Min RX used for the detection time while a poll for a
    /// decrease runs.
    rx_in_force: Option<Duration>,
    /// Passive and nothing received yet.
    waiting_for_peer: bool,
}

/// `interval` reduced by a random 0–25% (0–10% more when `detect_mult` is
/// 1, so that the interval stays under 90%), from a uniformly random
/// `random` (§6.8.7).
pub fn jittered(interval: Duration, detect_mult: u8, random: u32) -> Duration {
    let (lo, span) = if detect_mult == 1 { (75, 15) } else { (75, 25) };
    let pct = lo + (random % (span + 1));
    interval * pct / 100
}

impl Session {
    pub fn new(cfg: Config) -> Session {
        assert!(cfg.local_discr != 0, "bfd.LocalDiscr must be nonzero");
        Session {
            cfg,
            state: State::Down,
            remote_state: State::Down,
            remote_discr: 0,
            local_diag: Diag::None,
            // §6.8.1: initialised to 1 (microsecond).
            remote_min_rx: Duration::from_micros(1),
            remote_desired_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            remote_demand: false,
            remote_cpi: false,
            polling: false,
            tx_in_force: None,
            rx_in_force: None,
            waiting_for_peer: cfg.passive,
        }
    }

    /// The outputs to start with: the first transmit timer (none when
    /// passive).
    pub fn start(&self) -> Vec<Output> {
        if self.waiting_for_peer {
            Vec::new()
        } else {
            vec![Output::ArmTx(self.tx_interval())]
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn remote_state(&self) -> State {
        self.remote_state
    }
    pub fn local_diag(&self) -> Diag {
        self.local_diag
    }
    pub fn remote_discr(&self) -> u32 {
        self.remote_discr
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The peer set the C bit in its last packet: its BFD does not share
    /// fate with its control plane (RFC 5882 §4.3.2).
    pub fn remote_control_plane_independent(&self) -> bool {
        self.remote_cpi
    }

    /// bfd.DesiredMinTxInterval as advertised now: at least 1 s unless Up.
    fn desired_min_tx(&self) -> Duration {
        if self.state == State::Up {
            self.cfg.desired_min_tx
        } else {
            self.cfg.desired_min_tx.max(SLOW_TX)
        }
    }

    /// The interval between our periodic packets, before jitter (§6.8.7).
    pub fn tx_interval(&self) -> Duration {
        let desired = self.tx_in_force.unwrap_or_else(|| self.desired_min_tx());
        desired.max(self.remote_min_rx)
    }

    /// The detection time in asynchronous mode (§6.8.4).
    pub fn detection_time(&self) -> Duration {
        let rx = self.rx_in_force.unwrap_or(self.cfg.required_min_rx);
        rx.max(self.remote_desired_min_tx) * u32::from(self.remote_detect_mult)
    }

    fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll: self.polling && !final_,
            final_,
            cpi: self.cfg.control_plane_independent,
            auth: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discr: self.cfg.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: self.desired_min_tx(),
            required_min_rx: self.cfg.required_min_rx,
            required_min_echo_rx: Duration::ZERO,
        }
    }

    /// Periodic transmission is allowed (§6.8.7).
    fn may_transmit(&self) -> bool {
        if self.waiting_for_peer || self.remote_min_rx.is_zero() {
            return false;
        }
        !(self.remote_demand && self.state == State::Up && self.remote_state == State::Up)
            || self.polling
    }

    fn set_state(&mut self, to: State, diag: Diag, out: &mut Vec<Output>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.local_diag = diag;
        self.state = to;
        out.push(Output::StateChanged { from, to, diag });
        // Coming Up lowers bfd.DesiredMinTxInterval from the slow rate to
        // the configured one: announced with a Poll Sequence (§6.8.3); a
        // decrease takes effect at once. Leaving Up stops any poll.
        self.polling = to == State::Up;
        self.tx_in_force = None;
        self.rx_in_force = None;
    }

    pub fn process(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Received(p) => self.receive(p, &mut out),
            Input::TxTimer => {
                if self.may_transmit() {
                    out.push(Output::Send(self.packet(false)));
                    out.push(Output::ArmTx(self.tx_interval()));
                }
            }
            Input::DetectTimer => {
                // §6.8.1: the remote discriminator is forgotten when the
                // detection time passes without a packet.
                self.remote_discr = 0;
                self.remote_state = State::Down;
                self.polling = false;
                self.tx_in_force = None;
                self.rx_in_force = None;
                if matches!(self.state, State::Init | State::Up) {
                    self.set_state(State::Down, Diag::ControlDetectionTimeExpired, &mut out);
                }
                // Fall back to the slow rate, and to the first-contact rule
                // if passive.
                self.remote_min_rx = Duration::from_micros(1);
                self.remote_demand = false;
                out.push(Output::StopDetect);
                if self.may_transmit() {
                    out.push(Output::ArmTx(self.tx_interval()));
                }
            }
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    self.set_state(State::AdminDown, Diag::AdministrativelyDown, &mut out);
                    out.push(Output::StopDetect);
                    // Tell the peer, then keep telling it at the slow rate.
                    if !self.waiting_for_peer {
                        out.push(Output::Send(self.packet(false)));
                        out.push(Output::ArmTx(self.tx_interval()));
                    }
                }
            }
            Input::AdminUp => {
                if self.state == State::AdminDown {
                    self.set_state(State::Down, Diag::None, &mut out);
                    if self.may_transmit() {
                        out.push(Output::ArmTx(self.tx_interval()));
                    }
                }
            }
            Input::SetTimers {
                desired_min_tx,
                required_min_rx,
                detect_mult,
            } => {
                let old = self.cfg;
                self.cfg.desired_min_tx = desired_min_tx;
                self.cfg.required_min_rx = required_min_rx;
                self.cfg.detect_mult = detect_mult.max(1);
                if self.state == State::Up && self.remote_discr != 0 {
                    if desired_min_tx > old.desired_min_tx && self.tx_in_force.is_none() {
                        self.tx_in_force = Some(old.desired_min_tx);
                    }
                    if required_min_rx < old.required_min_rx && self.rx_in_force.is_none() {
                        self.rx_in_force = Some(old.required_min_rx);
                    }
                    self.polling = true;
                    out.push(Output::Send(self.packet(false)));
                }
                if self.may_transmit() {
                    out.push(Output::ArmTx(self.tx_interval()));
                }
            }
        }
        out
    }

    /// §6.8.6, from "If the Your Discriminator field is nonzero" on (the
    /// decoder did the checks before it).
    fn receive(&mut self, p: ControlPacket, out: &mut Vec<Output>) {
        if p.your_discr != 0 && p.your_discr != self.cfg.local_discr {
            return;
        }
        if p.your_discr == 0 && !matches!(self.state, State::Down | State::AdminDown) {
            return;
        }
        let was_waiting = self.waiting_for_peer;
        self.waiting_for_peer = false;
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_cpi = p.cpi;
        self.remote_min_rx = p.required_min_rx;
        self.remote_desired_min_tx = p.desired_min_tx;
        self.remote_detect_mult = p.detect_mult;

        if p.final_ && self.polling {
            self.polling = false;
            self.tx_in_force = None;
            self.rx_in_force = None;
        }

        if self.state == State::AdminDown {
            return;
        }
        out.push(Output::ArmDetect(self.detection_time()));

        let before = self.state;
        if p.state == State::AdminDown {
            if self.state != State::Down {
                self.set_state(State::Down, Diag::NeighborSignaledSessionDown, out);
            }
        } else {
            match (self.state, p.state) {
                (State::Down, State::Down) => self.set_state(State::Init, Diag::None, out),
                (State::Down, State::Init) => self.set_state(State::Up, Diag::None, out),
                (State::Init, State::Init | State::Up) => {
                    self.set_state(State::Up, Diag::None, out)
                }
                (State::Up, State::Down) => {
                    self.set_state(State::Down, Diag::NeighborSignaledSessionDown, out)
                }
                _ => {}
            }
        }

        if p.poll {
            // Answer a Poll at once with a Final (§6.8.6), whatever else.
            out.push(Output::Send(self.packet(true)));
        } else if self.state != before {
            // Let the peer see the new state without waiting a period.
            out.push(Output::Send(self.packet(false)));
        }
        if self.may_transmit() {
            if was_waiting || self.state != before || p.final_ {
                out.push(Output::ArmTx(self.tx_interval()));
            }
        } else {
            out.push(Output::StopTx);
        }
    }
}
