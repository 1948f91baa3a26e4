//! UPDATE message (RFC 4271 §4.3) with RFC 7606 revised error handling.

use std::net::{IpAddr, Ipv4Addr};

use super::aspath::AsPath;
use super::attribute::{
    MpReach, MpUnreach, Origin, Parsed, PathAttribute, check_family, encode_value, flags,
    parse_attribute, type_code,
};
use super::error::{DecodeError, EncodeError};
use super::nlri::{AfiSafi, Nlri, encode_nlri, parse_nlri_list};
use super::open::{AS_TRANS, SessionCaps};

/// UPDATE message body (RFC 4271 §4.3).
///
/// ```text
/// +-----------------------------------------------------+
/// |   Withdrawn Routes Length (2 octets)                |
/// +-----------------------------------------------------+
/// |   Withdrawn Routes (variable)                       |
/// +-----------------------------------------------------+
/// |   Total Path Attribute Length (2 octets)            |
/// +-----------------------------------------------------+
/// |   Path Attributes (variable)                        |
/// +-----------------------------------------------------+
/// |   Network Layer Reachability Information (variable) |
/// +-----------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Update {
    /// IPv4 unicast withdrawn routes field.
    pub withdrawn: Vec<Nlri>,
    /// Path attributes in wire order, MP_REACH/MP_UNREACH included.
    pub attributes: Vec<PathAttribute>,
    /// IPv4 unicast NLRI field.
    pub nlri: Vec<Nlri>,
    /// RFC 7606 "treat-as-withdraw": set by decode when an attribute was
    /// malformed; every prefix announced here (NLRI field and MP_REACH)
    /// must be handled as withdrawn. Not encoded.
    pub treat_as_withdraw: bool,
    /// Attribute flags as received, `(type code, flags)`, for the
    /// attributes whose flags differ from the canonical ones (Partial bit set
    /// on a known attribute, extended length on a short one). Lets decode →
    /// encode reproduce real peers' bytes; empty for canonical messages.
    pub attribute_flags: Vec<(u8, u8)>,
}

impl Update {
    /// End-of-RIB marker for `family` (RFC 4724 §2): an empty UPDATE for
    /// IPv4 unicast, else an UPDATE with only an empty MP_UNREACH_NLRI.
    pub fn end_of_rib(family: AfiSafi) -> Update {
        if family == AfiSafi::IPV4_UNICAST {
            Update::default()
        } else {
            Update {
                attributes: vec![PathAttribute::MpUnreach(MpUnreach {
                    family,
                    withdrawn: Vec::new(),
                })],
                ..Update::default()
            }
        }
    }

    /// The family this UPDATE marks End-of-RIB for, if it is one.
    pub fn is_end_of_rib(&self) -> Option<AfiSafi> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() || self.treat_as_withdraw {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(AfiSafi::IPV4_UNICAST),
            [PathAttribute::MpUnreach(u)] if u.withdrawn.is_empty() => Some(u.family),
            _ => None,
        }
    }

    /// The first attribute with `code`.
    pub fn attribute(&self, code: u8) -> Option<&PathAttribute> {
        self.attributes.iter().find(|a| a.type_code() == code)
    }

    /// ORIGIN.
    pub fn origin(&self) -> Option<Origin> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::Origin(o) => Some(*o),
            _ => None,
        })
    }

    /// AS_PATH (the real path, 4-octet ASes).
    pub fn as_path(&self) -> Option<&AsPath> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::AsPath(p) => Some(p),
            _ => None,
        })
    }

    /// NEXT_HOP (IPv4 NLRI field).
    pub fn next_hop(&self) -> Option<Ipv4Addr> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::NextHop(h) => Some(*h),
            _ => None,
        })
    }

    /// MULTI_EXIT_DISC.
    pub fn med(&self) -> Option<u32> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::MultiExitDisc(v) => Some(*v),
            _ => None,
        })
    }

    /// LOCAL_PREF.
    pub fn local_pref(&self) -> Option<u32> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::LocalPref(v) => Some(*v),
            _ => None,
        })
    }

    /// COMMUNITIES (empty if absent).
    pub fn communities(&self) -> &[u32] {
        self.attributes
            .iter()
            .find_map(|a| match a {
                PathAttribute::Communities(v) => Some(v.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// EXTENDED_COMMUNITIES (empty if absent).
    pub fn extended_communities(&self) -> &[[u8; 8]] {
        self.attributes
            .iter()
            .find_map(|a| match a {
                PathAttribute::ExtendedCommunities(v) => Some(v.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// LARGE_COMMUNITIES (empty if absent).
    pub fn large_communities(&self) -> &[(u32, u32, u32)] {
        self.attributes
            .iter()
            .find_map(|a| match a {
                PathAttribute::LargeCommunities(v) => Some(v.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// ORIGINATOR_ID (RFC 4456).
    pub fn originator_id(&self) -> Option<Ipv4Addr> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::OriginatorId(v) => Some(*v),
            _ => None,
        })
    }

    /// CLUSTER_LIST (empty if absent).
    pub fn cluster_list(&self) -> &[Ipv4Addr] {
        self.attributes
            .iter()
            .find_map(|a| match a {
                PathAttribute::ClusterList(v) => Some(v.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }

    /// MP_REACH_NLRI.
    pub fn mp_reach(&self) -> Option<&MpReach> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::MpReach(r) => Some(r),
            _ => None,
        })
    }

    /// MP_UNREACH_NLRI.
    pub fn mp_unreach(&self) -> Option<&MpUnreach> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::MpUnreach(r) => Some(r),
            _ => None,
        })
    }

    /// Every announced prefix with its family and next hop (NLRI field with
    /// NEXT_HOP, MP_REACH with its first next hop). Empty under
    /// treat-as-withdraw: see [`Update::withdrawals`].
    pub fn announcements(&self) -> Vec<(AfiSafi, Nlri, Option<IpAddr>)> {
        if self.treat_as_withdraw {
            return Vec::new();
        }
        let hop = self.next_hop().map(IpAddr::V4);
        let mut out: Vec<_> = self
            .nlri
            .iter()
            .map(|n| (AfiSafi::IPV4_UNICAST, *n, hop))
            .collect();
        if let Some(reach) = self.mp_reach() {
            let hop = reach.next_hops.first().copied();
            out.extend(reach.nlri.iter().map(|n| (reach.family, *n, hop)));
        }
        out
    }

    /// Every withdrawn prefix with its family: withdrawn field, MP_UNREACH,
    /// and under treat-as-withdraw (RFC 7606 §2) the announced ones too.
    pub fn withdrawals(&self) -> Vec<(AfiSafi, Nlri)> {
        let mut out: Vec<_> = self
            .withdrawn
            .iter()
            .map(|n| (AfiSafi::IPV4_UNICAST, *n))
            .collect();
        if let Some(unreach) = self.mp_unreach() {
            out.extend(unreach.withdrawn.iter().map(|n| (unreach.family, *n)));
        }
        if self.treat_as_withdraw {
            out.extend(self.nlri.iter().map(|n| (AfiSafi::IPV4_UNICAST, *n)));
            if let Some(reach) = self.mp_reach() {
                out.extend(reach.nlri.iter().map(|n| (reach.family, *n)));
            }
        }
        out
    }

    /// RFC 4271 §5 / RFC 4760 §3: ORIGIN and AS_PATH are required when the
    /// UPDATE announces anything; NEXT_HOP when the IPv4 NLRI field is not
    /// empty (MP_REACH carries its own next hop).
    pub fn validate_mandatory(&self) -> Result<(), DecodeError> {
        let reach = self.mp_reach().is_some_and(|r| !r.nlri.is_empty());
        if self.nlri.is_empty() && !reach {
            return Ok(());
        }
        let missing = |code| self.attribute(code).is_none();
        for code in [type_code::ORIGIN, type_code::AS_PATH] {
            if missing(code) {
                return Err(DecodeError::MissingWellKnownAttribute { type_code: code });
            }
        }
        if !self.nlri.is_empty() && missing(type_code::NEXT_HOP) {
            return Err(DecodeError::MissingWellKnownAttribute {
                type_code: type_code::NEXT_HOP,
            });
        }
        Ok(())
    }

    pub(crate) fn parse(body: &[u8], caps: &SessionCaps) -> Result<Update, DecodeError> {
        // RFC 4271 §6.3: lengths that overrun the message are "Malformed
        // Attribute List" (the header check guarantees 4 octets).
        let withdrawn_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let Some(withdrawn_bytes) = body.get(2..2 + withdrawn_len) else {
            return Err(DecodeError::MalformedAttributeList {
                reason: "withdrawn routes length overruns the message",
            });
        };
        let rest = &body[2 + withdrawn_len..];
        let Some(attr_len) = rest.get(..2) else {
            return Err(DecodeError::MalformedAttributeList {
                reason: "no room for the total path attribute length",
            });
        };
        let attr_len = usize::from(u16::from_be_bytes([attr_len[0], attr_len[1]]));
        let Some(attr_bytes) = rest.get(2..2 + attr_len) else {
            return Err(DecodeError::MalformedAttributeList {
                reason: "total path attribute length overruns the message",
            });
        };
        let nlri_bytes = &rest[2 + attr_len..];
        let v4 = AfiSafi::IPV4_UNICAST;
        let rx_ids = caps.rx_path_ids(v4);
        // RFC 7606 §5.3: unparseable NLRI/withdrawn fields reset the session.
        let withdrawn = parse_nlri_list(withdrawn_bytes, v4, rx_ids).map_err(|_| {
            DecodeError::InvalidNetworkField {
                reason: "withdrawn routes cannot be parsed",
            }
        })?;
        let nlri = parse_nlri_list(nlri_bytes, v4, rx_ids).map_err(|_| {
            DecodeError::InvalidNetworkField {
                reason: "NLRI field cannot be parsed",
            }
        })?;
        let mut update = Update {
            withdrawn,
            nlri,
            ..Update::default()
        };
        update.parse_attributes(attr_bytes, caps)?;
        if !caps.four_octet_as {
            update.merge_as4();
        }
        // RFC 7606 §3.d: a missing well-known attribute is treat-as-withdraw.
        if let Err(err) = update.validate_mandatory() {
            tracing::warn!(%err, "UPDATE treated as withdraw (RFC 7606 §3.d)");
            update.treat_as_withdraw = true;
        }
        Ok(update)
    }

    fn parse_attributes(
        &mut self,
        mut input: &[u8],
        caps: &SessionCaps,
    ) -> Result<(), DecodeError> {
        let mut seen = [false; 256];
        while !input.is_empty() {
            let ext = input[0] & flags::EXTENDED_LENGTH != 0;
            let header = if ext { 4 } else { 3 };
            let len = match (ext, input.get(..header)) {
                (true, Some(h)) => usize::from(u16::from_be_bytes([h[2], h[3]])),
                (false, Some(h)) => usize::from(h[2]),
                (_, None) => 0,
            };
            let Some(raw) = input.get(..header + len).filter(|_| input.len() >= header) else {
                // RFC 7606 §4: an attribute overrunning the attribute field is
                // treat-as-withdraw; the total length still locates the NLRI.
                tracing::warn!(
                    "UPDATE treated as withdraw: attribute overruns the path attributes (RFC 7606 §4)"
                );
                self.treat_as_withdraw = true;
                return Ok(());
            };
            input = &input[header + len..];
            let (attr_flags, code, value) = (raw[0], raw[1], &raw[header..]);
            if std::mem::replace(&mut seen[usize::from(code)], true) {
                // RFC 7606 §3.g: keep the first; MP_* twice resets.
                if code == type_code::MP_REACH_NLRI || code == type_code::MP_UNREACH_NLRI {
                    return Err(DecodeError::MalformedAttributeList {
                        reason: "MP_REACH_NLRI or MP_UNREACH_NLRI appears twice",
                    });
                }
                tracing::debug!(code, "duplicate path attribute discarded (RFC 7606 §3.g)");
                continue;
            }
            match parse_attribute(attr_flags, code, value, raw, caps)? {
                Parsed::Keep(attr) => self.push_attribute(attr, attr_flags, value.len()),
                Parsed::KeepWithdraw(attr) => {
                    tracing::warn!(
                        code,
                        "UPDATE treated as withdraw: invalid next hop (RFC 7606 §7.3)"
                    );
                    self.treat_as_withdraw = true;
                    self.push_attribute(attr, attr_flags, value.len());
                }
                Parsed::Withdraw(why) => {
                    tracing::warn!(code, why, "UPDATE treated as withdraw (RFC 7606 §7)");
                    self.treat_as_withdraw = true;
                }
                Parsed::Discard(why) => {
                    tracing::debug!(code, why, "path attribute discarded (RFC 7606 §2)");
                }
            }
        }
        Ok(())
    }

    /// Keep `attr`, remembering its received flags if not canonical.
    fn push_attribute(&mut self, attr: PathAttribute, received: u8, len: usize) {
        let expected = canonical_wire_flags(&attr, len);
        let received = match attr {
            PathAttribute::Unknown { .. } => (received | flags::PARTIAL) & 0xf0,
            _ => received & 0xf0,
        };
        if received != expected {
            self.attribute_flags.push((attr.type_code(), received));
        }
        self.attributes.push(attr);
    }

    /// RFC 6793 §4.2.3: rebuild the real AS_PATH and AGGREGATOR from a
    /// 2-octet peer's AS4_PATH / AS4_AGGREGATOR. The AS4_* attributes stay
    /// in the list as position markers for re-encoding.
    fn merge_as4(&mut self) {
        let as4_path = self.attributes.iter().find_map(|a| match a {
            PathAttribute::As4Path(p) => Some(p.clone()),
            _ => None,
        });
        let as4_aggr = self.attributes.iter().find_map(|a| match a {
            PathAttribute::As4Aggregator { asn, address } => Some((*asn, *address)),
            _ => None,
        });
        // "If the AGGREGATOR's AS is not AS_TRANS, ignore AS4_AGGREGATOR and
        // AS4_PATH."
        for attr in &mut self.attributes {
            if let PathAttribute::Aggregator { asn, address } = attr {
                if *asn != u32::from(AS_TRANS) {
                    return;
                }
                if let Some((real_asn, real_address)) = as4_aggr {
                    (*asn, *address) = (real_asn, real_address);
                }
            }
        }
        if let Some(as4) = as4_path {
            for attr in &mut self.attributes {
                if let PathAttribute::AsPath(path) = attr {
                    *path = path.merge_as4(&as4);
                }
            }
        }
    }

    pub(crate) fn encode_body(
        &self,
        caps: &SessionCaps,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let v4 = AfiSafi::IPV4_UNICAST;
        let tx_ids = caps.tx_path_ids(v4);
        let withdrawn_at = out.len();
        out.extend_from_slice(&[0, 0]);
        for nlri in &self.withdrawn {
            check_family(nlri, v4, "withdrawn routes field")?;
            encode_nlri(nlri, tx_ids, out);
        }
        write_u16_len(out, withdrawn_at, "withdrawn routes")?;
        let attrs_at = out.len();
        out.extend_from_slice(&[0, 0]);
        self.encode_attributes(caps, out)?;
        write_u16_len(out, attrs_at, "path attributes")?;
        for nlri in &self.nlri {
            check_family(nlri, v4, "NLRI field")?;
            encode_nlri(nlri, tx_ids, out);
        }
        Ok(())
    }

    fn encode_attributes(&self, caps: &SessionCaps, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let two_octet = !caps.four_octet_as;
        let as_path = self.as_path();
        let aggregator = self.attributes.iter().find_map(|a| match a {
            PathAttribute::Aggregator { asn, address } => Some((*asn, *address)),
            _ => None,
        });
        let has_as4_path = self.attribute(type_code::AS4_PATH).is_some();
        let has_as4_aggr = self.attribute(type_code::AS4_AGGREGATOR).is_some();
        // RFC 6793 §4.2.2: to a 2-octet peer, non-mappable ASes travel in
        // AS4_PATH / AS4_AGGREGATOR, placed where they were received or
        // right after AS_PATH / AGGREGATOR.
        let as4_path = as_path
            .filter(|p| two_octet && p.needs_four_octets())
            .map(|p| PathAttribute::As4Path(p.clone()));
        let as4_aggr = aggregator
            .filter(|(asn, _)| two_octet && *asn > u32::from(u16::MAX))
            .map(|(asn, address)| PathAttribute::As4Aggregator { asn, address });
        for attr in &self.attributes {
            match attr {
                PathAttribute::As4Path(_) => {
                    if let Some(derived) = &as4_path {
                        self.encode_attribute(derived, caps, out)?;
                    }
                }
                PathAttribute::As4Aggregator { .. } => {
                    if let Some(derived) = &as4_aggr {
                        self.encode_attribute(derived, caps, out)?;
                    }
                }
                PathAttribute::AsPath(_) => {
                    self.encode_attribute(attr, caps, out)?;
                    if let (Some(derived), false) = (&as4_path, has_as4_path) {
                        self.encode_attribute(derived, caps, out)?;
                    }
                }
                PathAttribute::Aggregator { .. } => {
                    self.encode_attribute(attr, caps, out)?;
                    if let (Some(derived), false) = (&as4_aggr, has_as4_aggr) {
                        self.encode_attribute(derived, caps, out)?;
                    }
                }
                _ => self.encode_attribute(attr, caps, out)?,
            }
        }
        Ok(())
    }

    fn encode_attribute(
        &self,
        attr: &PathAttribute,
        caps: &SessionCaps,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let code = attr.type_code();
        let hinted = self
            .attribute_flags
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, f)| *f);
        let mut attr_flags = hinted.unwrap_or_else(|| base_flags(attr));
        let start = out.len();
        out.push(attr_flags);
        out.push(code);
        let ext_hint = attr_flags & flags::EXTENDED_LENGTH != 0;
        out.push(0);
        if ext_hint {
            out.push(0);
        }
        let value_at = out.len();
        encode_value(attr, caps, out)?;
        let len = out.len() - value_at;
        if len > usize::from(u16::MAX) {
            return Err(EncodeError::FieldTooLong {
                what: "path attribute",
                len,
                max: usize::from(u16::MAX),
            });
        }
        if !ext_hint && len > 255 {
            // RFC 4271 §4.3: lengths over 255 need the extended-length flag.
            out.insert(value_at, 0);
            attr_flags |= flags::EXTENDED_LENGTH;
        }
        out[start] = attr_flags;
        if attr_flags & flags::EXTENDED_LENGTH != 0 {
            out[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
        } else {
            out[start + 2] = len as u8;
        }
        Ok(())
    }
}

/// Flags sent when no hint says otherwise (without extended length).
fn base_flags(attr: &PathAttribute) -> u8 {
    match attr {
        PathAttribute::Unknown { flags: f, .. } => f & 0xe0,
        other => other.canonical_flags(),
    }
}

/// What [`Update::encode_attribute`] writes without a hint.
fn canonical_wire_flags(attr: &PathAttribute, len: usize) -> u8 {
    base_flags(attr) | if len > 255 { flags::EXTENDED_LENGTH } else { 0 }
}

fn write_u16_len(out: &mut [u8], at: usize, what: &'static str) -> Result<(), EncodeError> {
    let len = out.len() - at - 2;
    let len16 = u16::try_from(len).map_err(|_| EncodeError::FieldTooLong {
        what,
        len,
        max: usize::from(u16::MAX),
    })?;
    out[at..at + 2].copy_from_slice(&len16.to_be_bytes());
    Ok(())
}
