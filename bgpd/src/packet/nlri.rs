//! Address families and NLRI prefixes (RFC 4271 §4.3, RFC 4760 §5, RFC 7911 §3).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use nom::IResult;
use nom::number::complete::{be_u8, be_u32};

/// Address Family Identifier (IANA "Address Family Numbers").
///
/// Families Manx does not route still decode (as `Unknown`) so that
/// capabilities naming them round-trip byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    /// AFI 1.
    Ipv4,
    /// AFI 2.
    Ipv6,
    /// Any other AFI, kept verbatim.
    Unknown(u16),
}

impl Afi {
    /// The wire value.
    pub fn code(self) -> u16 {
        match self {
            Afi::Ipv4 => 1,
            Afi::Ipv6 => 2,
            Afi::Unknown(code) => code,
        }
    }

    /// From the wire value.
    pub fn from_code(code: u16) -> Afi {
        match code {
            1 => Afi::Ipv4,
            2 => Afi::Ipv6,
            other => Afi::Unknown(other),
        }
    }
}

/// Subsequent Address Family Identifier (RFC 4760 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Safi {
    /// SAFI 1.
    Unicast,
    /// Any other SAFI, kept verbatim.
    Unknown(u8),
}

impl Safi {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            Safi::Unicast => 1,
            Safi::Unknown(code) => code,
        }
    }

    /// From the wire value.
    pub fn from_code(code: u8) -> Safi {
        match code {
            1 => Safi::Unicast,
            other => Safi::Unknown(other),
        }
    }
}

/// An AFI/SAFI pair: the unit of capability negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    /// Address family.
    pub afi: Afi,
    /// Sub-family.
    pub safi: Safi,
}

impl AfiSafi {
    /// IPv4 unicast, the family of the UPDATE's own NLRI fields.
    pub const IPV4_UNICAST: AfiSafi = AfiSafi {
        afi: Afi::Ipv4,
        safi: Safi::Unicast,
    };
    /// IPv6 unicast, carried in MP_REACH/MP_UNREACH (RFC 4760, RFC 2545).
    pub const IPV6_UNICAST: AfiSafi = AfiSafi {
        afi: Afi::Ipv6,
        safi: Safi::Unicast,
    };

    /// Build from wire values.
    pub fn from_codes(afi: u16, safi: u8) -> AfiSafi {
        AfiSafi {
            afi: Afi::from_code(afi),
            safi: Safi::from_code(safi),
        }
    }

    /// True for the families whose NLRI this codec can parse.
    pub fn is_supported(self) -> bool {
        self == Self::IPV4_UNICAST || self == Self::IPV6_UNICAST
    }

    /// Maximum prefix length of the family, or `None` if unsupported.
    fn max_prefix_len(self) -> Option<u8> {
        match (self.afi, self.safi) {
            (Afi::Ipv4, Safi::Unicast) => Some(32),
            (Afi::Ipv6, Safi::Unicast) => Some(128),
            _ => None,
        }
    }
}

impl std::fmt::Display for AfiSafi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.afi, self.safi) {
            (Afi::Ipv4, Safi::Unicast) => f.write_str("ipv4-unicast"),
            (Afi::Ipv6, Safi::Unicast) => f.write_str("ipv6-unicast"),
            _ => write!(f, "afi{}/safi{}", self.afi.code(), self.safi.code()),
        }
    }
}

/// One NLRI entry: a prefix and, when ADD-PATH is negotiated for its family
/// in this direction, its path identifier (RFC 7911 §3).
///
/// ```text
/// +--------------------------------+
/// | Path Identifier (4 octets)     |  only with ADD-PATH
/// +--------------------------------+
/// | Length (1 octet)               |
/// +--------------------------------+
/// | Prefix (variable)              |
/// +--------------------------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nlri {
    /// RFC 7911 path identifier.
    pub path_id: Option<u32>,
    /// The prefix. Host bits past the prefix length are kept as received so
    /// that re-encoding is byte-exact.
    pub prefix: IpNetwork,
}

impl Nlri {
    /// A prefix without path identifier.
    pub fn new(prefix: IpNetwork) -> Nlri {
        Nlri {
            path_id: None,
            prefix,
        }
    }
}

impl From<IpNetwork> for Nlri {
    fn from(prefix: IpNetwork) -> Nlri {
        Nlri::new(prefix)
    }
}

/// Why a prefix list failed to parse (callers map it to their NOTIFICATION).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NlriError {
    /// Prefix length larger than the family allows, or the field is truncated.
    Malformed,
    /// The family cannot be parsed by this codec.
    UnsupportedFamily,
}

fn parse_prefix(input: &[u8], max_len: u8, v6: bool) -> IResult<&[u8], IpNetwork, ()> {
    let (input, len) = be_u8(input)?;
    if len > max_len {
        return Err(nom::Err::Failure(()));
    }
    let bytes = usize::from(len).div_ceil(8);
    if input.len() < bytes {
        return Err(nom::Err::Failure(()));
    }
    let (raw, rest) = input.split_at(bytes);
    let ip = if v6 {
        let mut octets = [0u8; 16];
        octets[..bytes].copy_from_slice(raw);
        IpAddr::V6(Ipv6Addr::from(octets))
    } else {
        let mut octets = [0u8; 4];
        octets[..bytes].copy_from_slice(raw);
        IpAddr::V4(Ipv4Addr::from(octets))
    };
    // Cannot fail: len <= max_len for the address family.
    let prefix = IpNetwork::new(ip, len).map_err(|_| nom::Err::Failure(()))?;
    Ok((rest, prefix))
}

/// Parse a whole NLRI field (RFC 4271 §4.3 "Network Layer Reachability
/// Information", RFC 4760 §5) of `family`, with path ids if `add_path`.
pub(crate) fn parse_nlri_list(
    mut input: &[u8],
    family: AfiSafi,
    add_path: bool,
) -> Result<Vec<Nlri>, NlriError> {
    let max_len = family
        .max_prefix_len()
        .ok_or(NlriError::UnsupportedFamily)?;
    let v6 = family.afi == Afi::Ipv6;
    // A /26 takes 5 octets: a good first guess avoids most regrowth.
    let mut out = Vec::with_capacity(input.len() / 5 + 1);
    while !input.is_empty() {
        let path_id = if add_path {
            let (rest, id) = be_u32::<_, ()>(input).map_err(|_| NlriError::Malformed)?;
            input = rest;
            Some(id)
        } else {
            None
        };
        let (rest, prefix) = parse_prefix(input, max_len, v6).map_err(|_| NlriError::Malformed)?;
        input = rest;
        out.push(Nlri { path_id, prefix });
    }
    Ok(out)
}

/// Append one NLRI entry. With `add_path`, an entry without id is sent with
/// path id 0; without it, path ids are not sent (RFC 7911 §3).
pub(crate) fn encode_nlri(nlri: &Nlri, add_path: bool, out: &mut Vec<u8>) {
    if add_path {
        out.extend_from_slice(&nlri.path_id.unwrap_or(0).to_be_bytes());
    }
    let len = nlri.prefix.prefix();
    out.push(len);
    let bytes = usize::from(len).div_ceil(8);
    match nlri.prefix.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()[..bytes]),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()[..bytes]),
    }
}

/// Encoded size of one entry.
pub(crate) fn nlri_len(nlri: &Nlri, add_path: bool) -> usize {
    usize::from(nlri.prefix.prefix()).div_ceil(8) + 1 + if add_path { 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4271 §4.3: a prefix is encoded as length + the minimum number of
    // octets; trailing bits are irrelevant but we keep them for round trips.
    #[test]
    fn ipv4_prefixes_round_trip() {
        let bytes = [24, 10, 1, 2, 0, 32, 192, 0, 2, 1, 26, 198, 18, 200, 64];
        let list = parse_nlri_list(&bytes, AfiSafi::IPV4_UNICAST, false).unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!(list[0].prefix, "10.1.2.0/24".parse().unwrap());
        assert_eq!(list[1].prefix, "0.0.0.0/0".parse().unwrap());
        assert_eq!(list[3].prefix, "198.18.200.64/26".parse().unwrap());
        let mut out = Vec::new();
        for n in &list {
            encode_nlri(n, false, &mut out);
        }
        assert_eq!(out, bytes);
    }

    // RFC 7911 §3: with ADD-PATH each entry starts with a 4-octet path id.
    #[test]
    fn add_path_ids() {
        let bytes = [0, 0, 0, 7, 64, 0xfd, 0x42, 0, 0x18, 0x02, 0, 0, 0];
        let list = parse_nlri_list(&bytes, AfiSafi::IPV6_UNICAST, true).unwrap();
        assert_eq!(list[0].path_id, Some(7));
        assert_eq!(list[0].prefix, "fd42:18:200::/64".parse().unwrap());
    }

    #[test]
    fn too_long_prefix_is_malformed() {
        assert_eq!(
            parse_nlri_list(&[33, 1, 2, 3, 4, 5], AfiSafi::IPV4_UNICAST, false),
            Err(NlriError::Malformed)
        );
        assert_eq!(
            parse_nlri_list(&[24, 1, 2], AfiSafi::IPV4_UNICAST, false),
            Err(NlriError::Malformed)
        );
    }
}
