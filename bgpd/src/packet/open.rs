//! OPEN message (RFC 4271 §4.2, RFC 5492) and capability negotiation.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::capability::Capability;
use super::error::{DecodeError, EncodeError};
use super::nlri::AfiSafi;
use super::{MAX_EXTENDED_MESSAGE_LEN, MAX_MESSAGE_LEN};

/// AS_TRANS (RFC 6793 §2): stands in for a 4-octet AS in 2-octet fields.
pub const AS_TRANS: u16 = 23456;

/// Optional parameter type Capabilities (RFC 5492 §4).
const PARAM_CAPABILITIES: u8 = 2;

/// OPEN message body (RFC 4271 §4.2).
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+
/// |    Version    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     My Autonomous System      |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |           Hold Time           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         BGP Identifier                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Opt Parm Len  |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |             Optional Parameters (variable)                    |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
///
/// Optional parameters are all of type 2 (Capabilities), each holding one or
/// more capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Open {
    /// BGP version, 4.
    pub version: u8,
    /// 2-octet AS (AS_TRANS when the real AS needs 4 octets).
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Capabilities in the order sent.
    pub capabilities: Vec<Capability>,
    /// How many capabilities each Capabilities optional parameter held, as
    /// received, when that differs from the canonical layout (all
    /// capabilities in one parameter, BIRD style). Empty = canonical. Only
    /// needed for byte-exact re-encoding (GoBGP sends one per parameter).
    pub capability_params: Vec<usize>,
}

impl Open {
    /// An OPEN for `asn`: `my_as` is AS_TRANS when `asn` needs 4 octets.
    /// The caller includes [`Capability::FourOctetAs`] in `capabilities`.
    pub fn new(
        asn: u32,
        hold_time: u16,
        router_id: Ipv4Addr,
        capabilities: Vec<Capability>,
    ) -> Open {
        Open {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            router_id,
            capabilities,
            capability_params: Vec::new(),
        }
    }

    /// The sender's AS: the 4-octet AS capability if present (RFC 6793 §4.1),
    /// else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// True if the capability list holds a capability equal to `cap`.
    pub fn has(&self, cap: &Capability) -> bool {
        self.capabilities.contains(cap)
    }

    /// Families advertised with the Multiprotocol capability; a speaker
    /// advertising none supports IPv4 unicast only (RFC 4760 §8).
    pub fn families(&self) -> BTreeSet<AfiSafi> {
        let set: BTreeSet<AfiSafi> = self
            .capabilities
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
    }

    /// Graceful restart capability, if advertised.
    pub fn graceful_restart(&self) -> Option<&super::GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }

    fn add_path_modes(&self) -> impl Iterator<Item = &super::AddPathEntry> {
        self.capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::AddPath(entries) => Some(entries.iter()),
                _ => None,
            })
            .flatten()
    }

    pub(crate) fn parse(body: &[u8]) -> Result<Open, DecodeError> {
        if body.len() < 10 {
            return Err(DecodeError::MalformedOpen {
                reason: "OPEN body shorter than 10 octets",
            });
        }
        let version = body[0];
        if version != 4 {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let my_as = u16::from_be_bytes([body[1], body[2]]);
        let hold_time = u16::from_be_bytes([body[3], body[4]]);
        let router_id = Ipv4Addr::new(body[5], body[6], body[7], body[8]);
        let opt_len = usize::from(body[9]);
        let mut params = &body[10..];
        if params.len() != opt_len {
            return Err(DecodeError::MalformedOpen {
                reason: "optional parameters length does not match the message length",
            });
        }
        let mut capabilities = Vec::new();
        let mut layout = Vec::new();
        while !params.is_empty() {
            if params.len() < 2 {
                return Err(DecodeError::MalformedOpen {
                    reason: "truncated optional parameter header",
                });
            }
            let (param_type, len) = (params[0], usize::from(params[1]));
            let Some(mut value) = params.get(2..2 + len) else {
                return Err(DecodeError::MalformedOpen {
                    reason: "optional parameter overruns the parameters",
                });
            };
            params = &params[2 + len..];
            if param_type != PARAM_CAPABILITIES {
                return Err(DecodeError::UnsupportedOptionalParameter { param_type });
            }
            let mut count = 0;
            while !value.is_empty() {
                if value.len() < 2 {
                    return Err(DecodeError::MalformedOpen {
                        reason: "truncated capability header",
                    });
                }
                let (cap_code, cap_len) = (value[0], usize::from(value[1]));
                let Some(cap_value) = value.get(2..2 + cap_len) else {
                    return Err(DecodeError::MalformedOpen {
                        reason: "capability overruns its optional parameter",
                    });
                };
                capabilities.push(Capability::decode(cap_code, cap_value));
                value = &value[2 + cap_len..];
                count += 1;
            }
            layout.push(count);
        }
        let mut open = Open {
            version,
            my_as,
            hold_time,
            router_id,
            capabilities,
            capability_params: Vec::new(),
        };
        if layout != open.canonical_layout() {
            open.capability_params = layout;
        }
        Ok(open)
    }

    /// One parameter holding every capability, split only where a parameter
    /// would exceed 255 octets.
    fn canonical_layout(&self) -> Vec<usize> {
        let mut layout = Vec::new();
        let (mut count, mut size) = (0usize, 0usize);
        for cap in &self.capabilities {
            let len = cap.encoded_len();
            if count > 0 && size + len > 255 {
                layout.push(count);
                (count, size) = (0, 0);
            }
            count += 1;
            size += len;
        }
        if count > 0 {
            layout.push(count);
        }
        layout
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.router_id.octets());
        let opt_len_at = out.len();
        out.push(0);
        let canonical;
        let layout = if self.capability_params.iter().sum::<usize>() == self.capabilities.len()
            && !self.capability_params.is_empty()
        {
            &self.capability_params
        } else {
            canonical = self.canonical_layout();
            &canonical
        };
        let mut caps = self.capabilities.iter();
        for &count in layout {
            out.push(PARAM_CAPABILITIES);
            let len_at = out.len();
            out.push(0);
            for cap in caps.by_ref().take(count) {
                if cap.encoded_len() > 257 {
                    return Err(EncodeError::FieldTooLong {
                        what: "capability value",
                        len: cap.encoded_len() - 2,
                        max: 255,
                    });
                }
                cap.encode(out);
            }
            let len = out.len() - len_at - 1;
            out[len_at] = u8::try_from(len).map_err(|_| EncodeError::FieldTooLong {
                what: "capabilities optional parameter",
                len,
                max: 255,
            })?;
        }
        let len = out.len() - opt_len_at - 1;
        out[opt_len_at] = u8::try_from(len).map_err(|_| EncodeError::FieldTooLong {
            what: "OPEN optional parameters",
            len,
            max: 255,
        })?;
        Ok(())
    }
}

/// What both sides negotiated in their OPENs; UPDATE encoding and decoding
/// depend on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCaps {
    /// Both advertised 4-octet AS (RFC 6793): AS_PATH and AGGREGATOR carry
    /// 4-octet AS numbers, no AS4_PATH.
    pub four_octet_as: bool,
    /// Both advertised extended messages (RFC 8654): 65535-octet UPDATEs.
    pub extended_message: bool,
    /// Families whose received NLRI carry path ids (RFC 7911 §4).
    pub add_path_rx: BTreeSet<AfiSafi>,
    /// Families whose sent NLRI carry path ids (RFC 7911 §4).
    pub add_path_tx: BTreeSet<AfiSafi>,
    /// Families both sides advertised (RFC 4760 §8).
    pub families: BTreeSet<AfiSafi>,
    /// Both advertised route refresh (RFC 2918).
    pub route_refresh: bool,
    /// Both advertised enhanced route refresh (RFC 7313).
    pub enhanced_route_refresh: bool,
    /// Both set the N bit of graceful restart (RFC 8538 §2): a NOTIFICATION
    /// other than Hard Reset ends the session like a TCP failure (the
    /// routes are kept through the restart time), and a Cease that must
    /// remove them goes as Hard Reset.
    pub graceful_notification: bool,
}

impl Default for SessionCaps {
    /// Before the OPEN exchange: 2-octet AS, no ADD-PATH, 4096-octet
    /// messages, IPv4 unicast.
    fn default() -> SessionCaps {
        SessionCaps {
            four_octet_as: false,
            extended_message: false,
            add_path_rx: BTreeSet::new(),
            add_path_tx: BTreeSet::new(),
            families: BTreeSet::from([AfiSafi::IPV4_UNICAST]),
            route_refresh: false,
            enhanced_route_refresh: false,
            graceful_notification: false,
        }
    }
}

impl SessionCaps {
    /// Negotiate from the OPEN we sent (`local`) and the one we received.
    pub fn negotiate(local: &Open, remote: &Open) -> SessionCaps {
        let both = |cap: &Capability| local.has(cap) && remote.has(cap);
        let four_octet_as = local
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
            && remote
                .capabilities
                .iter()
                .any(|c| matches!(c, Capability::FourOctetAs(_)));
        // RFC 7911 §4: we receive path ids for a family when we said
        // "receive" and the peer said "send"; we send when the reverse holds.
        let mut add_path_rx = BTreeSet::new();
        let mut add_path_tx = BTreeSet::new();
        for mine in local.add_path_modes() {
            for theirs in remote.add_path_modes().filter(|e| e.family == mine.family) {
                if mine.receive && theirs.send {
                    add_path_rx.insert(mine.family);
                }
                if mine.send && theirs.receive {
                    add_path_tx.insert(mine.family);
                }
            }
        }
        SessionCaps {
            four_octet_as,
            extended_message: both(&Capability::ExtendedMessage),
            add_path_rx,
            add_path_tx,
            families: local
                .families()
                .intersection(&remote.families())
                .copied()
                .collect(),
            route_refresh: both(&Capability::RouteRefresh),
            enhanced_route_refresh: both(&Capability::EnhancedRouteRefresh),
            graceful_notification: [local, remote]
                .iter()
                .all(|o| o.graceful_restart().is_some_and(|gr| gr.notification)),
        }
    }

    /// The same session seen from the peer: rx and tx swapped. Handy to
    /// re-encode what a peer sent exactly as it sent it.
    pub fn reversed(&self) -> SessionCaps {
        SessionCaps {
            add_path_rx: self.add_path_tx.clone(),
            add_path_tx: self.add_path_rx.clone(),
            ..self.clone()
        }
    }

    /// Largest UPDATE / ROUTE-REFRESH / NOTIFICATION (RFC 8654 §4).
    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }

    /// Whether received NLRI of `family` carry path ids.
    pub fn rx_path_ids(&self, family: AfiSafi) -> bool {
        self.add_path_rx.contains(&family)
    }

    /// Whether sent NLRI of `family` carry path ids.
    pub fn tx_path_ids(&self, family: AfiSafi) -> bool {
        self.add_path_tx.contains(&family)
    }
}

#[cfg(test)]
mod tests {
    use super::super::AddPathEntry;
    use super::*;

    fn open(caps: Vec<Capability>) -> Open {
        Open::new(65001, 90, Ipv4Addr::new(198, 18, 200, 1), caps)
    }

    // RFC 6793 §4.1: a 4-octet AS goes in the capability, AS_TRANS in my_as.
    #[test]
    fn four_octet_as_uses_as_trans() {
        let o = Open::new(
            4_200_000_001,
            90,
            Ipv4Addr::LOCALHOST,
            vec![Capability::FourOctetAs(4_200_000_001)],
        );
        assert_eq!(o.my_as, AS_TRANS);
        assert_eq!(o.asn(), 4_200_000_001);
        assert_eq!(open(vec![]).asn(), 65001);
    }

    // RFC 7911 §4: send on one side pairs with receive on the other.
    #[test]
    fn add_path_negotiation_is_directional() {
        let local = open(vec![Capability::AddPath(vec![AddPathEntry {
            family: AfiSafi::IPV4_UNICAST,
            send: true,
            receive: false,
        }])]);
        let remote = open(vec![Capability::AddPath(vec![AddPathEntry {
            family: AfiSafi::IPV4_UNICAST,
            send: true,
            receive: true,
        }])]);
        let caps = SessionCaps::negotiate(&local, &remote);
        assert!(caps.tx_path_ids(AfiSafi::IPV4_UNICAST));
        assert!(!caps.rx_path_ids(AfiSafi::IPV4_UNICAST));
        assert!(caps.reversed().rx_path_ids(AfiSafi::IPV4_UNICAST));
    }

    // RFC 4760 §8 / RFC 8654 / RFC 6793: capabilities needing both sides.
    #[test]
    fn negotiation_needs_both_sides() {
        let local = open(vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::ExtendedMessage,
            Capability::FourOctetAs(65001),
            Capability::RouteRefresh,
        ]);
        let remote = open(vec![
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::FourOctetAs(65002),
            Capability::RouteRefresh,
        ]);
        let caps = SessionCaps::negotiate(&local, &remote);
        assert!(caps.four_octet_as);
        assert!(!caps.extended_message);
        assert!(caps.route_refresh);
        assert_eq!(caps.families, BTreeSet::from([AfiSafi::IPV6_UNICAST]));
        assert_eq!(caps.max_message_len(), 4096);
        let legacy = SessionCaps::negotiate(&local, &open(vec![]));
        assert!(!legacy.four_octet_as);
        assert_eq!(legacy.families, BTreeSet::from([AfiSafi::IPV4_UNICAST]));
    }

    // RFC 5492 §4: capabilities may share one parameter or use one each;
    // both layouts re-encode as received.
    #[test]
    fn parameter_layout_round_trips() {
        let mut o = open(vec![
            Capability::RouteRefresh,
            Capability::FourOctetAs(65001),
        ]);
        let mut canonical = Vec::new();
        o.encode_body(&mut canonical).unwrap();
        assert_eq!(canonical[9], 2 + 2 + 6);
        assert_eq!(Open::parse(&canonical).unwrap(), o);
        o.capability_params = vec![1, 1];
        let mut split = Vec::new();
        o.encode_body(&mut split).unwrap();
        assert_eq!(split[9], 4 + 8);
        assert_eq!(Open::parse(&split).unwrap(), o);
    }

    // RFC 4271 §6.2: version other than 4; optional parameter other than 2.
    #[test]
    fn open_errors() {
        let mut body = Vec::new();
        open(vec![]).encode_body(&mut body).unwrap();
        body[0] = 3;
        assert_eq!(
            Open::parse(&body),
            Err(DecodeError::UnsupportedVersion { version: 3 })
        );
        body[0] = 4;
        body[9] = 2;
        body.extend_from_slice(&[1, 0]);
        assert_eq!(
            Open::parse(&body),
            Err(DecodeError::UnsupportedOptionalParameter { param_type: 1 })
        );
    }
}
