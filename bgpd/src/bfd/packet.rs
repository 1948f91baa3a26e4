//! The BFD Control packet (RFC 5880 §4.1) and the reception checks of
//! §6.8.6 that need nothing but the packet.

use std::fmt;
use std::time::Duration;

/// Destination UDP port of single-hop Control packets (RFC 5881 §4).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// Destination UDP port of multihop Control packets (RFC 5883 §5).
pub const MULTI_HOP_PORT: u16 = 4784;
/// Source ports are taken from this range (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// TTL of every packet sent, checked on single-hop receipt (RFC 5881 §5,
/// GTSM).
pub const TTL: u8 = 255;
/// Length of a Control packet without an authentication section.
pub const LEN: usize = 24;

/// BFD protocol version (§4.1).
const VERSION: u8 = 1;

/// Session states as carried on the wire (§4.1 "Sta").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> State {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Diagnostic codes (§4.1 "Diag").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Diag {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9–31: reserved; kept so a peer's code is shown as sent.
    Reserved(u8),
}

impl Diag {
    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(c) => c & 0x1f,
        }
    }

    pub fn from_code(c: u8) -> Diag {
        match c & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            other => Diag::Reserved(other),
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Diag::None => "no diagnostic",
            Diag::ControlDetectionTimeExpired => "control detection time expired",
            Diag::EchoFunctionFailed => "echo function failed",
            Diag::NeighborSignaledSessionDown => "neighbor signaled session down",
            Diag::ForwardingPlaneReset => "forwarding plane reset",
            Diag::PathDown => "path down",
            Diag::ConcatenatedPathDown => "concatenated path down",
            Diag::AdministrativelyDown => "administratively down",
            Diag::ReverseConcatenatedPathDown => "reverse concatenated path down",
            Diag::Reserved(_) => "reserved diagnostic",
        })
    }
}

/// One Control packet. Intervals are microseconds on the wire and
/// [`Duration`]s here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    /// P: Poll.
    pub poll: bool,
    /// F: Final.
    pub final_: bool,
    /// C: Control Plane Independent.
    pub cpi: bool,
    /// A: an authentication section follows (never sent by Manx).
    pub auth: bool,
    /// D: Demand mode.
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub required_min_echo_rx: Duration,
}

/// Why a received packet is discarded (§6.8.6); each is dropped without a
/// reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{0} bytes: a BFD Control packet is at least 24")]
    TooShort(usize),
    #[error("version {0}: only BFD version 1 is spoken")]
    Version(u8),
    #[error("length field {field} is below the minimum {min} or above the {got} bytes received")]
    Length { field: u8, min: u8, got: usize },
    #[error("detect multiplier 0")]
    ZeroDetectMult,
    #[error("multipoint bit set")]
    Multipoint,
    #[error("my discriminator 0")]
    ZeroMyDiscr,
    #[error("authentication section present, and this session uses none")]
    Authenticated,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn from_micros(v: u32) -> Duration {
    Duration::from_micros(u64::from(v))
}

impl ControlPacket {
    /// The 24 bytes of this packet (no authentication section).
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = (VERSION << 5) | self.diag.code();
        b[1] = ((self.state as u8) << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.cpi) << 3)
            | (u8::from(self.auth) << 2)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = LEN as u8;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&micros(self.desired_min_tx).to_be_bytes());
        b[16..20].copy_from_slice(&micros(self.required_min_rx).to_be_bytes());
        b[20..24].copy_from_slice(&micros(self.required_min_echo_rx).to_be_bytes());
        b
    }

    /// Decode a received datagram, applying §6.8.6's checks that need only
    /// the packet. Manx uses no authentication, so a packet with the A bit
    /// is discarded (as §6.8.6 says for a session without it).
    pub fn decode(b: &[u8]) -> Result<ControlPacket, DecodeError> {
        if b.len() < LEN {
            return Err(DecodeError::TooShort(b.len()));
        }
        let version = b[0] >> 5;
        if version != VERSION {
            return Err(DecodeError::Version(version));
        }
        let auth = b[1] & 0x04 != 0;
        let (field, min) = (b[3], if auth { 26 } else { LEN as u8 });
        if field < min || usize::from(field) > b.len() {
            return Err(DecodeError::Length {
                field,
                min,
                got: b.len(),
            });
        }
        if b[2] == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if b[1] & 0x01 != 0 {
            return Err(DecodeError::Multipoint);
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let my_discr = word(4);
        if my_discr == 0 {
            return Err(DecodeError::ZeroMyDiscr);
        }
        if auth {
            return Err(DecodeError::Authenticated);
        }
        Ok(ControlPacket {
            diag: Diag::from_code(b[0]),
            state: State::from_bits(b[1] >> 6),
            poll: b[1] & 0x20 != 0,
            final_: b[1] & 0x10 != 0,
            cpi: b[1] & 0x08 != 0,
            auth,
            demand: b[1] & 0x02 != 0,
            detect_mult: b[2],
            my_discr,
            your_discr: word(8),
            desired_min_tx: from_micros(word(12)),
            required_min_rx: from_micros(word(16)),
            required_min_echo_rx: from_micros(word(20)),
        })
    }
}
