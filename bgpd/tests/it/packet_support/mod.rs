//! Shared helpers for the packet codec integration tests: captured-message
//! loading and the differential comparison with `bgp-rs`.
#![allow(dead_code)] // not every helper is used

use std::net::IpAddr;
use std::path::PathBuf;

use bgpd::packet::{
    AfiSafi, AsSegment, Message, Nlri, Open, Origin, PathAttribute, SessionCaps, Update,
};

/// One capture file: its comment header and its messages.
#[derive(Debug)]
pub struct Capture {
    pub source: String,
    pub messages: Vec<Vec<u8>>,
}

pub fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/data/captures")
}

pub fn load_capture(name: &str) -> Capture {
    load_capture_from(&captures_dir(), name)
}

pub fn load_capture_from(dir: &std::path::Path, name: &str) -> Capture {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run capture.sh to regenerate", path.display()));
    let mut source = String::new();
    let mut messages = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            source.push_str(comment.trim());
            source.push('\n');
        } else if !line.trim().is_empty() {
            messages.push(from_hex(line.trim()));
        }
    }
    Capture { source, messages }
}

/// Decode a hex line (no external crate needed for this).
pub fn from_hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex line length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The OPEN at the start of a capture.
pub fn first_open(capture: &Capture) -> Open {
    match bgpd::packet::decode_message(&capture.messages[0], &SessionCaps::default()) {
        Ok(Some((Message::Open(open), _))) => open,
        other => panic!("capture does not start with an OPEN: {other:?}"),
    }
}

/// Pairs of capture files: (sender → receiver, receiver → sender).
pub const SESSIONS: &[(&str, &str)] = &[("bird2-to-gobgpd.hex", "gobgpd-to-bird2.hex")];

/// Caps with which the receiver of `sent` decodes it.
pub fn receiver_caps(sent: &Capture, reply: &Capture) -> SessionCaps {
    SessionCaps::negotiate(&first_open(reply), &first_open(sent))
}

/// Fields that both decoders expose, normalised for comparison.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields {
    pub withdrawn: Vec<(Option<u32>, String)>,
    pub announced: Vec<(Option<u32>, String)>,
    pub as_path: Vec<u32>,
    pub next_hop: Option<Vec<u8>>,
    pub origin: Option<u8>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
    pub ext_communities: Vec<u64>,
}

fn nlri_key(n: &Nlri) -> (Option<u32>, String) {
    (
        n.path_id,
        format!("{}/{}", n.prefix.ip(), n.prefix.prefix()),
    )
}

/// Our decoder's view.
pub fn our_fields(update: &Update) -> Fields {
    let mut f = Fields {
        withdrawn: update.withdrawn.iter().map(nlri_key).collect(),
        announced: update.nlri.iter().map(nlri_key).collect(),
        ..Fields::default()
    };
    for attr in &update.attributes {
        match attr {
            PathAttribute::Origin(o) => {
                f.origin = Some(match o {
                    Origin::Igp => 0,
                    Origin::Egp => 1,
                    Origin::Incomplete => 2,
                })
            }
            PathAttribute::AsPath(p) => {
                f.as_path = p
                    .segments
                    .iter()
                    .flat_map(|s| match s {
                        AsSegment::Sequence(v) | AsSegment::Set(v) => v.clone(),
                        _ => Vec::new(),
                    })
                    .collect()
            }
            PathAttribute::NextHop(ip) => f.next_hop = Some(ip.octets().to_vec()),
            PathAttribute::MultiExitDisc(v) => f.med = Some(*v),
            PathAttribute::LocalPref(v) => f.local_pref = Some(*v),
            PathAttribute::Communities(v) => f.communities = v.clone(),
            PathAttribute::LargeCommunities(v) => f.large_communities = v.clone(),
            PathAttribute::ExtendedCommunities(v) => {
                f.ext_communities = v.iter().map(|c| u64::from_be_bytes(*c)).collect()
            }
            PathAttribute::MpReach(r) => {
                f.announced.extend(r.nlri.iter().map(nlri_key));
                let mut hop = Vec::new();
                for h in &r.next_hops {
                    match h {
                        IpAddr::V4(ip) => hop.extend_from_slice(&ip.octets()),
                        IpAddr::V6(ip) => hop.extend_from_slice(&ip.octets()),
                    }
                }
                f.next_hop = Some(hop);
            }
            PathAttribute::MpUnreach(u) => f.withdrawn.extend(u.withdrawn.iter().map(nlri_key)),
            _ => {}
        }
    }
    f
}

fn bgp_rs_nlri(n: &bgp_rs::NLRIEncoding) -> (Option<u32>, String) {
    let key = |p: &bgp_rs::Prefix| format!("{}/{}", IpAddr::from(p), p.length);
    match n {
        bgp_rs::NLRIEncoding::IP(p) => (None, key(p)),
        bgp_rs::NLRIEncoding::IP_WITH_PATH_ID((p, id)) => (Some(*id), key(p)),
        other => (None, format!("unsupported {other:?}")),
    }
}

/// bgp-rs's view of the same UPDATE bytes (a whole message).
pub fn bgp_rs_fields(message: &[u8], caps: &SessionCaps) -> Fields {
    try_bgp_rs_fields(message, caps).unwrap_or_else(|e| {
        let hex: String = message.iter().map(|b| format!("{b:02x}")).collect();
        panic!("bgp-rs cannot decode {hex}: {e}")
    })
}

/// bgp-rs's view, or its error.
pub fn try_bgp_rs_fields(message: &[u8], caps: &SessionCaps) -> std::io::Result<Fields> {
    let mut bcaps = bgp_rs::Capabilities {
        FOUR_OCTET_ASN_SUPPORT: caps.four_octet_as,
        EXTENDED_PATH_NLRI_SUPPORT: !caps.add_path_rx.is_empty(),
        ..Default::default()
    };
    bcaps
        .MP_BGP_SUPPORT
        .insert((bgp_rs::AFI::IPV4, bgp_rs::SAFI::Unicast));
    bcaps
        .MP_BGP_SUPPORT
        .insert((bgp_rs::AFI::IPV6, bgp_rs::SAFI::Unicast));
    let mut reader = bgp_rs::Reader {
        stream: std::io::Cursor::new(message),
        capabilities: bcaps,
    };
    let (_, msg) = reader.read()?;
    let bgp_rs::Message::Update(u) = msg else {
        return Err(std::io::Error::other("bgp-rs: not an UPDATE"));
    };
    let mut f = Fields {
        withdrawn: u.withdrawn_routes.iter().map(bgp_rs_nlri).collect(),
        announced: u.announced_routes.iter().map(bgp_rs_nlri).collect(),
        ..Fields::default()
    };
    use bgp_rs::PathAttribute as A;
    for attr in &u.attributes {
        match attr {
            A::ORIGIN(o) => {
                f.origin = Some(match o {
                    bgp_rs::Origin::IGP => 0,
                    bgp_rs::Origin::EGP => 1,
                    bgp_rs::Origin::INCOMPLETE => 2,
                })
            }
            A::AS_PATH(p) => {
                f.as_path = p
                    .segments
                    .iter()
                    .flat_map(|s| match s {
                        bgp_rs::Segment::AS_SEQUENCE(v) | bgp_rs::Segment::AS_SET(v) => v.clone(),
                    })
                    .collect()
            }
            A::NEXT_HOP(ip) => {
                f.next_hop = Some(match ip {
                    IpAddr::V4(ip) => ip.octets().to_vec(),
                    IpAddr::V6(ip) => ip.octets().to_vec(),
                })
            }
            A::MULTI_EXIT_DISC(v) => f.med = Some(*v),
            A::LOCAL_PREF(v) => f.local_pref = Some(*v),
            A::COMMUNITY(v) => f.communities = v.clone(),
            A::LARGE_COMMUNITY(v) => f.large_communities = v.clone(),
            A::EXTENDED_COMMUNITIES(v) => f.ext_communities = v.clone(),
            A::MP_REACH_NLRI(r) => {
                f.announced
                    .extend(r.announced_routes.iter().map(bgp_rs_nlri));
                f.next_hop = Some(r.next_hop.clone());
            }
            A::MP_UNREACH_NLRI(r) => f
                .withdrawn
                .extend(r.withdrawn_routes.iter().map(bgp_rs_nlri)),
            _ => {}
        }
    }
    Ok(f)
}

/// The families announced or withdrawn by an UPDATE (for coverage checks).
pub fn families(update: &Update) -> Vec<AfiSafi> {
    let mut out = Vec::new();
    if !update.nlri.is_empty() || !update.withdrawn.is_empty() {
        out.push(AfiSafi::IPV4_UNICAST);
    }
    if let Some(r) = update.mp_reach() {
        out.push(r.family);
    }
    if let Some(u) = update.mp_unreach() {
        out.push(u.family);
    }
    out
}

/// Decode every message of both directions of a captured session, check
/// the byte-exact re-encoding and the agreement with bgp-rs on UPDATEs.
/// Returns the number of messages checked.
pub fn check_session(dir: &std::path::Path, a: &str, b: &str) -> usize {
    use bgpd::packet::{decode_message, encode_message};
    let mut checked = 0;
    for (name, reply) in [(a, b), (b, a)] {
        let sent = load_capture_from(dir, name);
        let caps = receiver_caps(&sent, &load_capture_from(dir, reply));
        for (i, bytes) in sent.messages.iter().enumerate() {
            let (msg, used) = decode_message(bytes, &caps)
                .unwrap_or_else(|e| panic!("{name} message {i}: {e}"))
                .unwrap_or_else(|| panic!("{name} message {i}: incomplete"));
            assert_eq!(used, bytes.len(), "{name} message {i}");
            let mut out = Vec::new();
            encode_message(&msg, &caps.reversed(), &mut out).unwrap();
            assert_eq!(&out, bytes, "{name} message {i}: {msg:?}");
            if let Message::Update(u) = &msg {
                assert_eq!(
                    our_fields(u),
                    bgp_rs_fields(bytes, &caps),
                    "{name} message {i}"
                );
            }
            checked += 1;
        }
    }
    checked
}
