//! AS_PATH and AS4_PATH (RFC 4271 §4.3 and §5.1.2, RFC 5065, RFC 6793).

use nom::IResult;
use nom::number::complete::{be_u8, be_u16, be_u32};

use super::open::AS_TRANS;

/// Segment type codes (RFC 4271 §4.3, RFC 5065 §3).
mod segment_type {
    pub const AS_SET: u8 = 1;
    pub const AS_SEQUENCE: u8 = 2;
    pub const AS_CONFED_SEQUENCE: u8 = 3;
    pub const AS_CONFED_SET: u8 = 4;
}

/// One AS_PATH segment.
///
/// ```text
/// +-----------------+----------------+----------------------------+
/// | Segment type(1) | Seg. length(1) | AS numbers (2 or 4 each)   |
/// +-----------------+----------------+----------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    /// AS_SEQUENCE (2): ordered.
    Sequence(Vec<u32>),
    /// AS_SET (1): unordered, from aggregation.
    Set(Vec<u32>),
    /// AS_CONFED_SEQUENCE (3, RFC 5065).
    ConfedSequence(Vec<u32>),
    /// AS_CONFED_SET (4, RFC 5065).
    ConfedSet(Vec<u32>),
}

impl AsSegment {
    /// The AS numbers of the segment.
    pub fn asns(&self) -> &[u32] {
        match self {
            AsSegment::Sequence(v)
            | AsSegment::Set(v)
            | AsSegment::ConfedSequence(v)
            | AsSegment::ConfedSet(v) => v,
        }
    }

    fn type_code(&self) -> u8 {
        match self {
            AsSegment::Set(_) => segment_type::AS_SET,
            AsSegment::Sequence(_) => segment_type::AS_SEQUENCE,
            AsSegment::ConfedSequence(_) => segment_type::AS_CONFED_SEQUENCE,
            AsSegment::ConfedSet(_) => segment_type::AS_CONFED_SET,
        }
    }

    fn is_confed(&self) -> bool {
        matches!(self, AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_))
    }

    /// Contribution to the path length for best-path selection (RFC 4271
    /// §9.1.2.2: a set counts as one; RFC 5065 §5.3: confederation segments
    /// do not count).
    fn path_len(&self) -> usize {
        match self {
            AsSegment::Sequence(v) => v.len(),
            AsSegment::Set(_) => 1,
            AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => 0,
        }
    }
}

/// An AS_PATH: ordered segments (RFC 4271 §4.3 attribute type 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// Segments in wire order.
    pub segments: Vec<AsSegment>,
}

/// The AS_PATH could not be parsed (RFC 7606 §7.2 malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MalformedAsPath;

impl AsPath {
    /// A path made of one AS_SEQUENCE (empty path if `asns` is empty).
    pub fn from_sequence(asns: Vec<u32>) -> AsPath {
        if asns.is_empty() {
            AsPath::default()
        } else {
            AsPath {
                segments: vec![AsSegment::Sequence(asns)],
            }
        }
    }

    /// Path length for best-path selection (RFC 4271 §9.1.2.2).
    pub fn path_len(&self) -> usize {
        self.segments.iter().map(AsSegment::path_len).sum()
    }

    /// True if `asn` appears anywhere (loop detection, RFC 4271 §9.1.2).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns().contains(&asn))
    }

    /// How many times `asn` appears (allowas-in counts our own AS).
    pub fn count(&self, asn: u32) -> usize {
        self.segments
            .iter()
            .map(|s| s.asns().iter().filter(|a| **a == asn).count())
            .sum()
    }

    /// The neighbouring AS: first AS of a leading AS_SEQUENCE.
    pub fn first_as(&self) -> Option<u32> {
        match self.segments.first() {
            Some(AsSegment::Sequence(v)) => v.first().copied(),
            _ => None,
        }
    }

    /// The originating AS: last AS of a trailing AS_SEQUENCE.
    pub fn origin_as(&self) -> Option<u32> {
        match self.segments.last() {
            Some(AsSegment::Sequence(v)) => v.last().copied(),
            _ => None,
        }
    }

    /// Prepend `asn` as an eBGP speaker does (RFC 4271 §5.1.2).
    pub fn prepend(&mut self, asn: u32) {
        match self.segments.first_mut() {
            Some(AsSegment::Sequence(v)) if v.len() < 255 => v.insert(0, asn),
            _ => self.segments.insert(0, AsSegment::Sequence(vec![asn])),
        }
    }

    /// True if any AS needs 4 octets (RFC 6793 §4.2.2).
    pub fn needs_four_octets(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns().iter().any(|&a| a > u32::from(u16::MAX)))
    }

    /// Parse with 2- or 4-octet AS numbers.
    pub(crate) fn parse(mut input: &[u8], four_octet: bool) -> Result<AsPath, MalformedAsPath> {
        let mut segments = Vec::new();
        while !input.is_empty() {
            let (rest, segment) = parse_segment(input, four_octet).map_err(|_| MalformedAsPath)?;
            segments.push(segment);
            input = rest;
        }
        Ok(AsPath { segments })
    }

    /// Append the attribute value: 4-octet ASes, or 2-octet with non-mappable
    /// ASes replaced by AS_TRANS (RFC 6793 §4.2.2). Segments longer than 255
    /// ASes are split.
    pub(crate) fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        self.encode_filtered(four_octet, false, out);
    }

    /// The AS4_PATH value for a 2-octet peer: 4-octet ASes, no
    /// confederation segments (RFC 6793 §3).
    pub(crate) fn encode_as4(&self, out: &mut Vec<u8>) {
        self.encode_filtered(true, true, out);
    }

    fn encode_filtered(&self, four_octet: bool, skip_confed: bool, out: &mut Vec<u8>) {
        for segment in &self.segments {
            if skip_confed && segment.is_confed() {
                continue;
            }
            for chunk in segment.asns().chunks(255) {
                out.push(segment.type_code());
                out.push(chunk.len() as u8);
                for &asn in chunk {
                    if four_octet {
                        out.extend_from_slice(&asn.to_be_bytes());
                    } else {
                        let two = u16::try_from(asn).unwrap_or(AS_TRANS);
                        out.extend_from_slice(&two.to_be_bytes());
                    }
                }
            }
        }
    }

    /// Rebuild the real path from a 2-octet AS_PATH and an AS4_PATH
    /// (RFC 6793 §4.2.3): if AS_PATH is shorter than AS4_PATH, ignore
    /// AS4_PATH; else keep the leading ASes of AS_PATH that AS4_PATH does
    /// not cover, then append AS4_PATH.
    pub fn merge_as4(&self, as4: &AsPath) -> AsPath {
        let (n2, n4) = (self.path_len(), as4.path_len());
        if n2 < n4 {
            return self.clone();
        }
        let mut need = n2 - n4;
        let mut segments = Vec::new();
        for segment in &self.segments {
            if need == 0 && !segment.is_confed() {
                break;
            }
            match segment {
                AsSegment::Sequence(v) => {
                    let take = need.min(v.len());
                    segments.push(AsSegment::Sequence(v[..take].to_vec()));
                    need -= take;
                }
                AsSegment::Set(_) => {
                    segments.push(segment.clone());
                    need -= 1;
                }
                _ => segments.push(segment.clone()),
            }
        }
        segments.extend(as4.segments.iter().cloned());
        // Adjacent sequences are one sequence: keeps re-encoding canonical.
        let mut merged: Vec<AsSegment> = Vec::with_capacity(segments.len());
        for segment in segments {
            match (merged.last_mut(), segment) {
                (_, AsSegment::Sequence(v)) if v.is_empty() => {}
                (Some(AsSegment::Sequence(prev)), AsSegment::Sequence(v))
                    if prev.len() + v.len() <= 255 =>
                {
                    prev.extend(v)
                }
                (_, s) => merged.push(s),
            }
        }
        AsPath { segments: merged }
    }
}

fn parse_segment(input: &[u8], four_octet: bool) -> IResult<&[u8], AsSegment, ()> {
    let (input, seg_type) = be_u8(input)?;
    let (mut input, count) = be_u8(input)?;
    // RFC 7606 §7.2: a zero segment length is malformed.
    if count == 0 {
        return Err(nom::Err::Failure(()));
    }
    let mut asns = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (rest, asn) = if four_octet {
            be_u32(input)?
        } else {
            let (rest, asn) = be_u16(input)?;
            (rest, u32::from(asn))
        };
        asns.push(asn);
        input = rest;
    }
    let segment = match seg_type {
        segment_type::AS_SET => AsSegment::Set(asns),
        segment_type::AS_SEQUENCE => AsSegment::Sequence(asns),
        segment_type::AS_CONFED_SEQUENCE => AsSegment::ConfedSequence(asns),
        segment_type::AS_CONFED_SET => AsSegment::ConfedSet(asns),
        // RFC 7606 §7.2: unrecognized segment type is malformed.
        _ => return Err(nom::Err::Failure(())),
    };
    Ok((input, segment))
}

impl std::fmt::Display for AsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for segment in &self.segments {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let list = segment
                .asns()
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(" ");
            match segment {
                AsSegment::Sequence(_) => f.write_str(&list)?,
                AsSegment::Set(_) => write!(f, "{{{list}}}")?,
                AsSegment::ConfedSequence(_) => write!(f, "({list})")?,
                AsSegment::ConfedSet(_) => write!(f, "[{list}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4271 §4.3: segment type, count, ASes.
    #[test]
    fn two_and_four_octet_forms() {
        let path = AsPath {
            segments: vec![
                AsSegment::Sequence(vec![65001, 4_200_000_000]),
                AsSegment::Set(vec![1, 2]),
            ],
        };
        let mut four = Vec::new();
        path.encode(true, &mut four);
        assert_eq!(AsPath::parse(&four, true).unwrap(), path);
        let mut two = Vec::new();
        path.encode(false, &mut two);
        // RFC 6793 §4.2.2: non-mappable AS becomes AS_TRANS.
        assert_eq!(two, [2, 2, 0xfd, 0xe9, 0x5b, 0xa0, 1, 2, 0, 1, 0, 2]);
        assert_eq!(path.path_len(), 3);
        assert_eq!(path.to_string(), "65001 4200000000 {1 2}");
    }

    // RFC 7606 §7.2: zero-length segment, bad type, truncation.
    #[test]
    fn malformed_paths() {
        assert!(AsPath::parse(&[2, 0], false).is_err());
        assert!(AsPath::parse(&[7, 1, 0, 1], false).is_err());
        assert!(AsPath::parse(&[2, 2, 0, 1], false).is_err());
    }

    // RFC 6793 §4.2.3: leading ASes from AS_PATH, the rest from AS4_PATH.
    #[test]
    fn merge_as4_path() {
        let as_path = AsPath::from_sequence(vec![100, 23456, 200]);
        let as4 = AsPath::from_sequence(vec![70000, 200]);
        assert_eq!(
            as_path.merge_as4(&as4),
            AsPath::from_sequence(vec![100, 70000, 200])
        );
        // AS4_PATH longer than AS_PATH: ignored.
        let long = AsPath::from_sequence(vec![1, 2, 3, 4]);
        assert_eq!(as_path.merge_as4(&long), as_path);
    }

    // RFC 4271 §5.1.2: prepend onto the leading sequence.
    #[test]
    fn prepend_extends_leading_sequence() {
        let mut path = AsPath {
            segments: vec![AsSegment::Set(vec![5])],
        };
        path.prepend(7);
        path.prepend(8);
        assert_eq!(path.to_string(), "8 7 {5}");
        assert_eq!(path.first_as(), Some(8));
    }
}
