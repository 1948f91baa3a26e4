//! Path attributes (RFC 4271 §4.3 and §5, RFC 4760, RFC 1997, RFC 4360,
//! RFC 4456, RFC 6793, RFC 8092) and their RFC 7606 error handling.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::aspath::AsPath;
use super::error::DecodeError;
use super::nlri::{AfiSafi, Nlri, parse_nlri_list};
use super::open::{AS_TRANS, SessionCaps};

/// Attribute flag bits (RFC 4271 §4.3).
pub mod flags {
    /// Optional (1) or well-known (0).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial: some optional transitive attribute was not understood on the way.
    pub const PARTIAL: u8 = 0x20;
    /// Two-octet length field.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Attribute type codes (IANA "BGP Path Attributes").
pub mod type_code {
    /// RFC 4271.
    pub const ORIGIN: u8 = 1;
    /// RFC 4271.
    pub const AS_PATH: u8 = 2;
    /// RFC 4271.
    pub const NEXT_HOP: u8 = 3;
    /// RFC 4271.
    pub const MULTI_EXIT_DISC: u8 = 4;
    /// RFC 4271.
    pub const LOCAL_PREF: u8 = 5;
    /// RFC 4271.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// RFC 4271.
    pub const AGGREGATOR: u8 = 7;
    /// RFC 1997.
    pub const COMMUNITIES: u8 = 8;
    /// RFC 4456.
    pub const ORIGINATOR_ID: u8 = 9;
    /// RFC 4456.
    pub const CLUSTER_LIST: u8 = 10;
    /// RFC 4760.
    pub const MP_REACH_NLRI: u8 = 14;
    /// RFC 4760.
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// RFC 4360.
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    /// RFC 6793.
    pub const AS4_PATH: u8 = 17;
    /// RFC 6793.
    pub const AS4_AGGREGATOR: u8 = 18;
    /// RFC 8092.
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// ORIGIN values (RFC 4271 §4.3 a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// Learned from an interior protocol.
    Igp = 0,
    /// Learned via EGP.
    Egp = 1,
    /// Learned some other way.
    Incomplete = 2,
}

/// MP_REACH_NLRI (RFC 4760 §3).
///
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Length of Next Hop Network Address (1 octet)            |
/// +---------------------------------------------------------+
/// | Network Address of Next Hop (variable)                  |
/// +---------------------------------------------------------+
/// | Reserved (1 octet)                                      |
/// +---------------------------------------------------------+
/// | Network Layer Reachability Information (variable)       |
/// +---------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpReach {
    /// The family of the NLRI.
    pub family: AfiSafi,
    /// One next hop, or for IPv6 a global and a link-local (RFC 2545 §3).
    pub next_hops: Vec<IpAddr>,
    /// Reachable prefixes.
    pub nlri: Vec<Nlri>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4).
///
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Withdrawn Routes (variable)                             |
/// +---------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MpUnreach {
    /// The family of the withdrawn prefixes.
    pub family: AfiSafi,
    /// Withdrawn prefixes.
    pub withdrawn: Vec<Nlri>,
}

/// One path attribute (RFC 4271 §4.3).
///
/// ```text
///  0                   1
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |O|T|P|E| unused|  Type Code    |  then Length: 1 octet, or 2 if E
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathAttribute {
    /// ORIGIN (1), well-known mandatory.
    Origin(Origin),
    /// AS_PATH (2), well-known mandatory. Holds the real (merged, RFC 6793
    /// §4.2.3) path with 4-octet ASes whatever the session's AS size.
    AsPath(AsPath),
    /// NEXT_HOP (3), well-known mandatory for IPv4 NLRI.
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC (4), optional non-transitive.
    MultiExitDisc(u32),
    /// LOCAL_PREF (5), well-known (iBGP).
    LocalPref(u32),
    /// ATOMIC_AGGREGATE (6), well-known discretionary.
    AtomicAggregate,
    /// AGGREGATOR (7), optional transitive (real AS, merged with
    /// AS4_AGGREGATOR from 2-octet peers).
    Aggregator {
        /// Aggregating AS.
        asn: u32,
        /// Aggregating speaker.
        address: Ipv4Addr,
    },
    /// COMMUNITIES (8, RFC 1997).
    Communities(Vec<u32>),
    /// ORIGINATOR_ID (9, RFC 4456).
    OriginatorId(Ipv4Addr),
    /// CLUSTER_LIST (10, RFC 4456).
    ClusterList(Vec<Ipv4Addr>),
    /// MP_REACH_NLRI (14, RFC 4760).
    MpReach(MpReach),
    /// MP_UNREACH_NLRI (15, RFC 4760).
    MpUnreach(MpUnreach),
    /// EXTENDED_COMMUNITIES (16, RFC 4360).
    ExtendedCommunities(Vec<[u8; 8]>),
    /// LARGE_COMMUNITIES (32, RFC 8092).
    LargeCommunities(Vec<(u32, u32, u32)>),
    /// AS4_PATH (17, RFC 6793) as received from a 2-octet peer. Marks where
    /// the attribute goes; on encode to a 2-octet peer its value is derived
    /// from [`PathAttribute::AsPath`], to a 4-octet peer it is left out.
    As4Path(AsPath),
    /// AS4_AGGREGATOR (18, RFC 6793), handled like `As4Path`.
    As4Aggregator {
        /// Aggregating AS.
        asn: u32,
        /// Aggregating speaker.
        address: Ipv4Addr,
    },
    /// An optional transitive attribute we do not know, carried on with the
    /// Partial bit set (RFC 4271 §5: decode already sets it in `flags`).
    Unknown {
        /// Flags (without meaning for the extended-length bit, re-derived).
        flags: u8,
        /// Type code.
        code: u8,
        /// Value.
        data: Vec<u8>,
    },
}

impl PathAttribute {
    /// The type code.
    pub fn type_code(&self) -> u8 {
        use type_code::*;
        match self {
            PathAttribute::Origin(_) => ORIGIN,
            PathAttribute::AsPath(_) => AS_PATH,
            PathAttribute::NextHop(_) => NEXT_HOP,
            PathAttribute::MultiExitDisc(_) => MULTI_EXIT_DISC,
            PathAttribute::LocalPref(_) => LOCAL_PREF,
            PathAttribute::AtomicAggregate => ATOMIC_AGGREGATE,
            PathAttribute::Aggregator { .. } => AGGREGATOR,
            PathAttribute::Communities(_) => COMMUNITIES,
            PathAttribute::OriginatorId(_) => ORIGINATOR_ID,
            PathAttribute::ClusterList(_) => CLUSTER_LIST,
            PathAttribute::MpReach(_) => MP_REACH_NLRI,
            PathAttribute::MpUnreach(_) => MP_UNREACH_NLRI,
            PathAttribute::ExtendedCommunities(_) => EXTENDED_COMMUNITIES,
            PathAttribute::LargeCommunities(_) => LARGE_COMMUNITIES,
            PathAttribute::As4Path(_) => AS4_PATH,
            PathAttribute::As4Aggregator { .. } => AS4_AGGREGATOR,
            PathAttribute::Unknown { code, .. } => *code,
        }
    }

    /// The Optional and Transitive flags this attribute must carry.
    pub fn canonical_flags(&self) -> u8 {
        match self {
            PathAttribute::Unknown { flags: f, .. } => f & (flags::OPTIONAL | flags::TRANSITIVE),
            other => known_flags(other.type_code()).unwrap_or(flags::OPTIONAL),
        }
    }
}

/// O/T flags of the attributes we know (RFC 4271 §5, RFC 4760 §3-4, ...).
pub(crate) fn known_flags(code: u8) -> Option<u8> {
    use flags::{OPTIONAL, TRANSITIVE};
    use type_code::*;
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => TRANSITIVE,
        MULTI_EXIT_DISC | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => {
            OPTIONAL
        }
        AGGREGATOR | COMMUNITIES | EXTENDED_COMMUNITIES | AS4_PATH | AS4_AGGREGATOR
        | LARGE_COMMUNITIES => OPTIONAL | TRANSITIVE,
        _ => return None,
    })
}

/// What to do with one received attribute (RFC 7606 §2).
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Keep it.
    Keep(PathAttribute),
    /// Keep it but the UPDATE is treat-as-withdraw (semantic error in an
    /// attribute whose NLRI we still need to know, e.g. MP_REACH next hop).
    KeepWithdraw(PathAttribute),
    /// RFC 7606 "treat-as-withdraw": drop it and withdraw the NLRI.
    Withdraw(&'static str),
    /// RFC 7606 "attribute discard" (or RFC 4271 §5 unknown non-transitive).
    Discard(&'static str),
}

fn u32_at(v: &[u8]) -> u32 {
    u32::from_be_bytes([v[0], v[1], v[2], v[3]])
}

fn ipv4_at(v: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(v[0], v[1], v[2], v[3])
}

/// The action RFC 7606 §7 prescribes for a malformed attribute of `code`.
fn malformed(code: u8, why: &'static str) -> Parsed {
    use type_code::*;
    match code {
        // §7.6, §7.7, RFC 6793 §6: attribute discard.
        ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => Parsed::Discard(why),
        _ => Parsed::Withdraw(why),
    }
}

/// Parse one attribute value. `raw` is the whole attribute (for the
/// NOTIFICATION data of fatal errors).
pub(crate) fn parse_attribute(
    attr_flags: u8,
    code: u8,
    value: &[u8],
    raw: &[u8],
    caps: &SessionCaps,
) -> Result<Parsed, DecodeError> {
    use type_code::*;
    let Some(expected) = known_flags(code) else {
        // RFC 4271 §6.3 / §5: unknown well-known is fatal; unknown optional
        // transitive is kept with Partial set; optional non-transitive ignored.
        if attr_flags & flags::OPTIONAL == 0 {
            return Err(DecodeError::UnrecognizedWellKnownAttribute {
                type_code: code,
                attribute: raw.to_vec(),
            });
        }
        if attr_flags & flags::TRANSITIVE == 0 {
            return Ok(Parsed::Discard(
                "unrecognized optional non-transitive attribute",
            ));
        }
        return Ok(Parsed::Keep(PathAttribute::Unknown {
            flags: (attr_flags | flags::PARTIAL) & !flags::EXTENDED_LENGTH & 0xf0,
            code,
            data: value.to_vec(),
        }));
    };
    let ot = attr_flags & (flags::OPTIONAL | flags::TRANSITIVE);
    if ot != expected {
        // RFC 7606 §3.c: O/T conflict = malformed; MP_* cannot be
        // withdrawn reliably, so it resets (§7.11, §7.12 use session reset).
        if code == MP_REACH_NLRI || code == MP_UNREACH_NLRI {
            return Err(DecodeError::AttributeFlagsError {
                type_code: code,
                attribute: raw.to_vec(),
            });
        }
        return Ok(malformed(
            code,
            "attribute flags conflict with the attribute type",
        ));
    }
    let len = value.len();
    let attr = match code {
        // RFC 7606 §7.1: wrong length or undefined value = treat-as-withdraw.
        ORIGIN => match value {
            [0] => PathAttribute::Origin(Origin::Igp),
            [1] => PathAttribute::Origin(Origin::Egp),
            [2] => PathAttribute::Origin(Origin::Incomplete),
            [_] => return Ok(Parsed::Withdraw("undefined ORIGIN value")),
            _ => return Ok(Parsed::Withdraw("ORIGIN length is not 1")),
        },
        // RFC 7606 §7.2.
        AS_PATH => match AsPath::parse(value, caps.four_octet_as) {
            Ok(path) => PathAttribute::AsPath(path),
            Err(_) => return Ok(Parsed::Withdraw("malformed AS_PATH")),
        },
        // RFC 7606 §7.3: wrong length; RFC 4271 §6.3 semantic check.
        NEXT_HOP => {
            if len != 4 {
                return Ok(Parsed::Withdraw("NEXT_HOP length is not 4"));
            }
            let hop = ipv4_at(value);
            if hop.is_unspecified() || hop.is_multicast() || hop.is_broadcast() {
                return Ok(Parsed::KeepWithdraw(PathAttribute::NextHop(hop)));
            }
            PathAttribute::NextHop(hop)
        }
        // RFC 7606 §7.4, §7.5, §7.9.
        MULTI_EXIT_DISC | LOCAL_PREF | ORIGINATOR_ID => {
            if len != 4 {
                return Ok(Parsed::Withdraw("attribute length is not 4"));
            }
            match code {
                MULTI_EXIT_DISC => PathAttribute::MultiExitDisc(u32_at(value)),
                LOCAL_PREF => PathAttribute::LocalPref(u32_at(value)),
                _ => PathAttribute::OriginatorId(ipv4_at(value)),
            }
        }
        // RFC 7606 §7.6.
        ATOMIC_AGGREGATE if len == 0 => PathAttribute::AtomicAggregate,
        ATOMIC_AGGREGATE => return Ok(Parsed::Discard("ATOMIC_AGGREGATE length is not 0")),
        // RFC 7606 §7.7: 6 octets for 2-octet sessions, 8 for 4-octet.
        AGGREGATOR => match (caps.four_octet_as, len) {
            (false, 6) => PathAttribute::Aggregator {
                asn: u32::from(u16::from_be_bytes([value[0], value[1]])),
                address: ipv4_at(&value[2..]),
            },
            (true, 8) => PathAttribute::Aggregator {
                asn: u32_at(value),
                address: ipv4_at(&value[4..]),
            },
            _ => {
                return Ok(Parsed::Discard(
                    "AGGREGATOR length does not match the AS size",
                ));
            }
        },
        // RFC 7606 §7.8.
        COMMUNITIES if len > 0 && len.is_multiple_of(4) => {
            PathAttribute::Communities(value.chunks_exact(4).map(u32_at).collect())
        }
        COMMUNITIES => {
            return Ok(Parsed::Withdraw(
                "COMMUNITIES length is not a multiple of 4",
            ));
        }
        // RFC 7606 §7.10.
        CLUSTER_LIST if len > 0 && len.is_multiple_of(4) => {
            PathAttribute::ClusterList(value.chunks_exact(4).map(ipv4_at).collect())
        }
        CLUSTER_LIST => {
            return Ok(Parsed::Withdraw(
                "CLUSTER_LIST length is not a multiple of 4",
            ));
        }
        // RFC 7606 §7.14.
        EXTENDED_COMMUNITIES if len.is_multiple_of(8) => PathAttribute::ExtendedCommunities(
            value
                .chunks_exact(8)
                .map(|c| <[u8; 8]>::try_from(c).unwrap_or_default())
                .collect(),
        ),
        EXTENDED_COMMUNITIES => {
            return Ok(Parsed::Withdraw(
                "EXTENDED_COMMUNITIES length is not a multiple of 8",
            ));
        }
        // RFC 8092 §6.
        LARGE_COMMUNITIES if len > 0 && len.is_multiple_of(12) => PathAttribute::LargeCommunities(
            value
                .chunks_exact(12)
                .map(|c| (u32_at(c), u32_at(&c[4..]), u32_at(&c[8..])))
                .collect(),
        ),
        LARGE_COMMUNITIES => {
            return Ok(Parsed::Withdraw(
                "LARGE_COMMUNITIES length is not a multiple of 12",
            ));
        }
        // RFC 6793 §4.1: a NEW speaker discards AS4_* from a NEW peer;
        // §6: malformed AS4_* are discarded.
        AS4_PATH | AS4_AGGREGATOR if caps.four_octet_as => {
            return Ok(Parsed::Discard(
                "AS4 attribute received over a 4-octet AS session",
            ));
        }
        AS4_PATH => match AsPath::parse(value, true) {
            Ok(path) => PathAttribute::As4Path(path),
            Err(_) => return Ok(Parsed::Discard("malformed AS4_PATH")),
        },
        AS4_AGGREGATOR if len == 8 => PathAttribute::As4Aggregator {
            asn: u32_at(value),
            address: ipv4_at(&value[4..]),
        },
        AS4_AGGREGATOR => return Ok(Parsed::Discard("AS4_AGGREGATOR length is not 8")),
        MP_REACH_NLRI => return parse_mp_reach(attr_flags, value, raw, caps),
        MP_UNREACH_NLRI => return parse_mp_unreach(attr_flags, value, raw, caps),
        _ => unreachable_known(code, attr_flags, value),
    };
    Ok(Parsed::Keep(attr))
}

/// `known_flags` and the match above list the same codes; this keeps the
/// compiler happy without a panic path.
fn unreachable_known(code: u8, attr_flags: u8, value: &[u8]) -> PathAttribute {
    PathAttribute::Unknown {
        flags: attr_flags & 0xe0,
        code,
        data: value.to_vec(),
    }
}

fn mp_error(reason: &'static str, raw: &[u8]) -> DecodeError {
    DecodeError::OptionalAttributeError {
        type_code: raw.get(1).copied().unwrap_or(0),
        reason,
        attribute: raw.to_vec(),
    }
}

/// RFC 4760 §3, RFC 7606 §7.11: a length inconsistency hides the NLRI, so
/// it resets the session; a semantically bad next hop is treat-as-withdraw.
fn parse_mp_reach(
    attr_flags: u8,
    value: &[u8],
    raw: &[u8],
    caps: &SessionCaps,
) -> Result<Parsed, DecodeError> {
    if value.len() < 5 {
        return Err(mp_error("MP_REACH_NLRI shorter than 5 octets", raw));
    }
    let family = AfiSafi::from_codes(u16::from_be_bytes([value[0], value[1]]), value[2]);
    if !family.is_supported() {
        // Not negotiable here; keep verbatim so it still round-trips.
        return Ok(Parsed::Keep(PathAttribute::Unknown {
            flags: attr_flags & 0xe0,
            code: type_code::MP_REACH_NLRI,
            data: value.to_vec(),
        }));
    }
    let nh_len = usize::from(value[3]);
    let Some(nh) = value.get(4..4 + nh_len) else {
        return Err(mp_error(
            "MP_REACH_NLRI next hop overruns the attribute",
            raw,
        ));
    };
    let next_hops: Vec<IpAddr> = match nh_len {
        4 => vec![IpAddr::V4(ipv4_at(nh))],
        16 | 32 => nh
            .chunks_exact(16)
            .map(|c| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap_or_default())))
            .collect(),
        _ => {
            return Err(mp_error(
                "MP_REACH_NLRI next hop length is not 4, 16 or 32",
                raw,
            ));
        }
    };
    // Reserved octet (RFC 4760 §3: ignored on receipt).
    let Some(nlri_bytes) = value.get(5 + nh_len..) else {
        return Err(mp_error("MP_REACH_NLRI reserved octet missing", raw));
    };
    let nlri = parse_nlri_list(nlri_bytes, family, caps.rx_path_ids(family))
        .map_err(|_| mp_error("MP_REACH_NLRI prefixes cannot be parsed", raw))?;
    let bad_hop = match next_hops[0] {
        IpAddr::V4(ip) => ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast(),
        IpAddr::V6(ip) => ip.is_unspecified() || ip.is_multicast(),
    };
    let reach = PathAttribute::MpReach(MpReach {
        family,
        next_hops,
        nlri,
    });
    Ok(if bad_hop {
        Parsed::KeepWithdraw(reach)
    } else {
        Parsed::Keep(reach)
    })
}

/// RFC 4760 §4, RFC 7606 §7.12.
fn parse_mp_unreach(
    attr_flags: u8,
    value: &[u8],
    raw: &[u8],
    caps: &SessionCaps,
) -> Result<Parsed, DecodeError> {
    if value.len() < 3 {
        return Err(mp_error("MP_UNREACH_NLRI shorter than 3 octets", raw));
    }
    let family = AfiSafi::from_codes(u16::from_be_bytes([value[0], value[1]]), value[2]);
    if !family.is_supported() {
        return Ok(Parsed::Keep(PathAttribute::Unknown {
            flags: attr_flags & 0xe0,
            code: type_code::MP_UNREACH_NLRI,
            data: value.to_vec(),
        }));
    }
    let withdrawn = parse_nlri_list(&value[3..], family, caps.rx_path_ids(family))
        .map_err(|_| mp_error("MP_UNREACH_NLRI prefixes cannot be parsed", raw))?;
    Ok(Parsed::Keep(PathAttribute::MpUnreach(MpUnreach {
        family,
        withdrawn,
    })))
}

/// Append the attribute value (no header) as sent to a peer with `caps`.
/// `As4Path` / `As4Aggregator` values are derived by the caller.
pub(crate) fn encode_value(
    attr: &PathAttribute,
    caps: &SessionCaps,
    out: &mut Vec<u8>,
) -> Result<(), super::EncodeError> {
    match attr {
        PathAttribute::Origin(origin) => out.push(*origin as u8),
        PathAttribute::AsPath(path) => path.encode(caps.four_octet_as, out),
        PathAttribute::NextHop(ip) | PathAttribute::OriginatorId(ip) => {
            out.extend_from_slice(&ip.octets())
        }
        PathAttribute::MultiExitDisc(v) | PathAttribute::LocalPref(v) => {
            out.extend_from_slice(&v.to_be_bytes())
        }
        PathAttribute::AtomicAggregate => {}
        PathAttribute::Aggregator { asn, address } => {
            if caps.four_octet_as {
                out.extend_from_slice(&asn.to_be_bytes());
            } else {
                let two = u16::try_from(*asn).unwrap_or(AS_TRANS);
                out.extend_from_slice(&two.to_be_bytes());
            }
            out.extend_from_slice(&address.octets());
        }
        PathAttribute::As4Aggregator { asn, address } => {
            out.extend_from_slice(&asn.to_be_bytes());
            out.extend_from_slice(&address.octets());
        }
        PathAttribute::Communities(list) => {
            for c in list {
                out.extend_from_slice(&c.to_be_bytes());
            }
        }
        PathAttribute::ClusterList(list) => {
            for ip in list {
                out.extend_from_slice(&ip.octets());
            }
        }
        PathAttribute::ExtendedCommunities(list) => {
            for c in list {
                out.extend_from_slice(c);
            }
        }
        PathAttribute::LargeCommunities(list) => {
            for (a, b, c) in list {
                out.extend_from_slice(&a.to_be_bytes());
                out.extend_from_slice(&b.to_be_bytes());
                out.extend_from_slice(&c.to_be_bytes());
            }
        }
        PathAttribute::As4Path(path) => path.encode_as4(out),
        PathAttribute::MpReach(reach) => {
            out.extend_from_slice(&reach.family.afi.code().to_be_bytes());
            out.push(reach.family.safi.code());
            let nh_at = out.len();
            out.push(0);
            for hop in &reach.next_hops {
                match hop {
                    IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
                    IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
                }
            }
            let nh_len = out.len() - nh_at - 1;
            out[nh_at] = u8::try_from(nh_len).map_err(|_| super::EncodeError::FieldTooLong {
                what: "MP_REACH_NLRI next hop",
                len: nh_len,
                max: 255,
            })?;
            out.push(0);
            let add_path = caps.tx_path_ids(reach.family);
            for nlri in &reach.nlri {
                check_family(nlri, reach.family, "MP_REACH_NLRI")?;
                super::nlri::encode_nlri(nlri, add_path, out);
            }
        }
        PathAttribute::MpUnreach(unreach) => {
            out.extend_from_slice(&unreach.family.afi.code().to_be_bytes());
            out.push(unreach.family.safi.code());
            let add_path = caps.tx_path_ids(unreach.family);
            for nlri in &unreach.withdrawn {
                check_family(nlri, unreach.family, "MP_UNREACH_NLRI")?;
                super::nlri::encode_nlri(nlri, add_path, out);
            }
        }
        PathAttribute::Unknown { data, .. } => out.extend_from_slice(data),
    }
    Ok(())
}

pub(crate) fn check_family(
    nlri: &Nlri,
    family: AfiSafi,
    field: &'static str,
) -> Result<(), super::EncodeError> {
    let ok = match nlri.prefix {
        ipnetwork::IpNetwork::V4(_) => family.afi == super::Afi::Ipv4,
        ipnetwork::IpNetwork::V6(_) => family.afi == super::Afi::Ipv6,
    };
    if ok {
        Ok(())
    } else {
        Err(super::EncodeError::WrongFamily {
            prefix: nlri.prefix.to_string(),
            field,
        })
    }
}
