//! Capabilities advertised in OPEN (RFC 5492) and their values.

use super::nlri::AfiSafi;

/// Capability codes (IANA "Capability Codes").
pub mod code {
    /// RFC 4760.
    pub const MULTIPROTOCOL: u8 = 1;
    /// RFC 2918.
    pub const ROUTE_REFRESH: u8 = 2;
    /// RFC 8654.
    pub const EXTENDED_MESSAGE: u8 = 6;
    /// RFC 4724.
    pub const GRACEFUL_RESTART: u8 = 64;
    /// RFC 6793.
    pub const FOUR_OCTET_AS: u8 = 65;
    /// RFC 7911.
    pub const ADD_PATH: u8 = 69;
    /// RFC 7313.
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

/// One capability (RFC 5492 §4): code, length, value.
///
/// ```text
/// +------------------------------+
/// | Capability Code (1 octet)    |
/// +------------------------------+
/// | Capability Length (1 octet)  |
/// +------------------------------+
/// | Capability Value (variable)  |
/// +------------------------------+
/// ```
///
/// A known capability whose value is not in the canonical form this codec
/// emits (reserved bits set, unexpected length) decodes as `Unknown`, so
/// every OPEN re-encodes byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Code 1, RFC 4760 §8: AFI (2), reserved (1), SAFI (1).
    Multiprotocol(AfiSafi),
    /// Code 2, RFC 2918: empty.
    RouteRefresh,
    /// Code 6, RFC 8654: empty.
    ExtendedMessage,
    /// Code 64, RFC 4724 §3.
    GracefulRestart(GracefulRestart),
    /// Code 65, RFC 6793 §3: the 4-octet AS number.
    FourOctetAs(u32),
    /// Code 69, RFC 7911 §4.
    AddPath(Vec<AddPathEntry>),
    /// Code 70, RFC 7313: empty.
    EnhancedRouteRefresh,
    /// Anything else, kept verbatim.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        data: Vec<u8>,
    },
}

/// Graceful Restart capability value (RFC 4724 §3, N bit RFC 8538 §2).
///
/// ```text
/// +--------------------------------------------------+
/// | Restart Flags (4 bits) | Restart Time (12 bits)  |
/// +--------------------------------------------------+
/// | AFI (16 bits)                                    |  repeated
/// | SAFI (8 bits)                                    |  per
/// | Flags for Address Family (8 bits)                |  family
/// +--------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted.
    pub restart_state: bool,
    /// N bit (RFC 8538): graceful notification supported.
    pub notification: bool,
    /// Restart time in seconds (12 bits, at most 4095).
    pub restart_time: u16,
    /// Families and their F bit (forwarding state preserved).
    pub families: Vec<(AfiSafi, bool)>,
}

/// One ADD-PATH capability tuple (RFC 7911 §4).
///
/// ```text
/// +------------------------------------------------+
/// | AFI (2 octets) | SAFI (1 octet) | Send/Receive |
/// +------------------------------------------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddPathEntry {
    /// The family.
    pub family: AfiSafi,
    /// The sender can send multiple paths (value 2 or 3).
    pub send: bool,
    /// The sender can receive multiple paths (value 1 or 3).
    pub receive: bool,
}

const GR_RESTART_BIT: u16 = 0x8000;
const GR_NOTIFICATION_BIT: u16 = 0x4000;
const GR_TIME_MASK: u16 = 0x0fff;
const GR_FORWARDING_BIT: u8 = 0x80;

impl Capability {
    /// The capability code.
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol(_) => code::MULTIPROTOCOL,
            Capability::RouteRefresh => code::ROUTE_REFRESH,
            Capability::ExtendedMessage => code::EXTENDED_MESSAGE,
            Capability::GracefulRestart(_) => code::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => code::FOUR_OCTET_AS,
            Capability::AddPath(_) => code::ADD_PATH,
            Capability::EnhancedRouteRefresh => code::ENHANCED_ROUTE_REFRESH,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// Append the capability value (without code and length).
    fn encode_value(&self, out: &mut Vec<u8>) {
        match self {
            Capability::Multiprotocol(family) => {
                out.extend_from_slice(&family.afi.code().to_be_bytes());
                out.push(0);
                out.push(family.safi.code());
            }
            Capability::RouteRefresh
            | Capability::ExtendedMessage
            | Capability::EnhancedRouteRefresh => {}
            Capability::GracefulRestart(gr) => {
                let mut word = gr.restart_time & GR_TIME_MASK;
                if gr.restart_state {
                    word |= GR_RESTART_BIT;
                }
                if gr.notification {
                    word |= GR_NOTIFICATION_BIT;
                }
                out.extend_from_slice(&word.to_be_bytes());
                for (family, forwarding) in &gr.families {
                    out.extend_from_slice(&family.afi.code().to_be_bytes());
                    out.push(family.safi.code());
                    out.push(if *forwarding { GR_FORWARDING_BIT } else { 0 });
                }
            }
            Capability::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
            Capability::AddPath(entries) => {
                for entry in entries {
                    out.extend_from_slice(&entry.family.afi.code().to_be_bytes());
                    out.push(entry.family.safi.code());
                    out.push(u8::from(entry.receive) | (u8::from(entry.send) << 1));
                }
            }
            Capability::Unknown { data, .. } => out.extend_from_slice(data),
        }
    }

    /// Append code, length and value. Values longer than 255 octets are
    /// truncated at the last whole entry by the caller's validation
    /// ([`Capability::encoded_len`]).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.code());
        let len_at = out.len();
        out.push(0);
        self.encode_value(out);
        let len = out.len() - len_at - 1;
        out[len_at] = len.min(255) as u8;
    }

    /// Encoded size including code and length octets.
    pub fn encoded_len(&self) -> usize {
        let mut scratch = Vec::new();
        self.encode_value(&mut scratch);
        scratch.len() + 2
    }

    /// Decode a capability value. Never fails: values this codec does not
    /// understand (or not in canonical form) become `Unknown`.
    pub(crate) fn decode(cap_code: u8, value: &[u8]) -> Capability {
        let parsed = Self::decode_known(cap_code, value);
        match parsed {
            Some(cap) => {
                // Keep byte-exactness: only accept the typed form if it
                // re-encodes to the very same bytes.
                let mut again = Vec::with_capacity(value.len());
                cap.encode_value(&mut again);
                if again == value {
                    cap
                } else {
                    Capability::Unknown {
                        code: cap_code,
                        data: value.to_vec(),
                    }
                }
            }
            None => Capability::Unknown {
                code: cap_code,
                data: value.to_vec(),
            },
        }
    }

    fn decode_known(cap_code: u8, value: &[u8]) -> Option<Capability> {
        let family = |b: &[u8]| AfiSafi::from_codes(u16::from_be_bytes([b[0], b[1]]), b[2]);
        match cap_code {
            code::MULTIPROTOCOL if value.len() == 4 => Some(Capability::Multiprotocol(
                AfiSafi::from_codes(u16::from_be_bytes([value[0], value[1]]), value[3]),
            )),
            code::ROUTE_REFRESH if value.is_empty() => Some(Capability::RouteRefresh),
            code::EXTENDED_MESSAGE if value.is_empty() => Some(Capability::ExtendedMessage),
            code::ENHANCED_ROUTE_REFRESH if value.is_empty() => {
                Some(Capability::EnhancedRouteRefresh)
            }
            code::FOUR_OCTET_AS if value.len() == 4 => {
                Some(Capability::FourOctetAs(u32::from_be_bytes([
                    value[0], value[1], value[2], value[3],
                ])))
            }
            code::GRACEFUL_RESTART if value.len() >= 2 && (value.len() - 2).is_multiple_of(4) => {
                let word = u16::from_be_bytes([value[0], value[1]]);
                let families = value[2..]
                    .chunks_exact(4)
                    .map(|c| (family(c), c[3] & GR_FORWARDING_BIT != 0))
                    .collect();
                Some(Capability::GracefulRestart(GracefulRestart {
                    restart_state: word & GR_RESTART_BIT != 0,
                    notification: word & GR_NOTIFICATION_BIT != 0,
                    restart_time: word & GR_TIME_MASK,
                    families,
                }))
            }
            code::ADD_PATH if !value.is_empty() && value.len().is_multiple_of(4) => {
                let entries = value
                    .chunks_exact(4)
                    .map(|c| AddPathEntry {
                        family: family(c),
                        send: c[3] & 2 != 0,
                        receive: c[3] & 1 != 0,
                    })
                    .collect();
                Some(Capability::AddPath(entries))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(cap: &Capability) -> Vec<u8> {
        let mut out = Vec::new();
        cap.encode(&mut out);
        let back = Capability::decode(out[0], &out[2..]);
        assert_eq!(&back, cap);
        out
    }

    // RFC 4760 §8: AFI, reserved, SAFI.
    #[test]
    fn multiprotocol_wire_form() {
        let bytes = round_trip(&Capability::Multiprotocol(AfiSafi::IPV6_UNICAST));
        assert_eq!(bytes, [1, 4, 0, 2, 0, 1]);
    }

    // RFC 4724 §3: R bit, 12-bit time, per-family F bit.
    #[test]
    fn graceful_restart_wire_form() {
        let cap = Capability::GracefulRestart(GracefulRestart {
            restart_state: true,
            notification: false,
            restart_time: 120,
            families: vec![(AfiSafi::IPV4_UNICAST, true)],
        });
        assert_eq!(round_trip(&cap), [64, 6, 0x80, 120, 0, 1, 1, 0x80]);
    }

    // RFC 7911 §4: Send/Receive 1 = receive, 2 = send, 3 = both.
    #[test]
    fn add_path_wire_form() {
        let cap = Capability::AddPath(vec![
            AddPathEntry {
                family: AfiSafi::IPV4_UNICAST,
                send: true,
                receive: true,
            },
            AddPathEntry {
                family: AfiSafi::IPV6_UNICAST,
                send: false,
                receive: true,
            },
        ]);
        assert_eq!(round_trip(&cap), [69, 8, 0, 1, 1, 3, 0, 2, 1, 1]);
    }

    // RFC 6793 §3.
    #[test]
    fn four_octet_as_wire_form() {
        assert_eq!(
            round_trip(&Capability::FourOctetAs(4_200_000_000)),
            [65, 4, 0xfa, 0x56, 0xea, 0x00]
        );
    }

    // Non-canonical values (here: reserved octet set) stay verbatim.
    #[test]
    fn non_canonical_value_is_kept_verbatim() {
        let cap = Capability::decode(1, &[0, 1, 7, 1]);
        assert_eq!(
            cap,
            Capability::Unknown {
                code: 1,
                data: vec![0, 1, 7, 1]
            }
        );
    }
}
