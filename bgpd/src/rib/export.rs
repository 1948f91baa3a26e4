//! Export: from a Loc-RIB best path to what one peer is told (its
//! Adj-RIB-Out entry), and from Adj-RIB-Out changes to UPDATE messages.
//!
//! Rules (RFC 4271 §9.1.3, §5.1):
//! * never back to the peer it came from;
//! * iBGP-learnt paths are not sent to iBGP peers (no route reflection yet);
//! * eBGP: prepend our AS, next hop self, no LOCAL_PREF, no MED from elsewhere;
//! * iBGP: LOCAL_PREF (default 100), next hop self for local prefixes,
//!   unchanged for eBGP-learnt ones;
//! * only the families both sides negotiated (RFC 4760 §7).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{BestPath, PathAttrs, RouteSource};
use crate::packet::{AfiSafi, MpReach, MpUnreach, Nlri, PathAttribute, Update};

/// Default LOCAL_PREF sent to iBGP peers (§5.1.5).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

// Prefixes per UPDATE: small enough that any UPDATE fits 4096 octets
// (IPv4 ≤ 5 octets per prefix, IPv6 ≤ 17) with room for the attributes.
const V4_PER_UPDATE: usize = 400;
const V6_PER_UPDATE: usize = 120;

/// One established session, as export needs it.
#[derive(Debug, Clone)]
pub struct ExportTarget {
    /// The peer.
    pub peer: IpAddr,
    /// Same AS.
    pub ibgp: bool,
    /// Our AS.
    pub local_as: u32,
    /// Our address on the session: next hop self.
    pub local_addr: IpAddr,
    /// Families negotiated on the session.
    pub families: BTreeSet<AfiSafi>,
}

/// The family of a prefix.
pub fn family_of(prefix: &IpNetwork) -> AfiSafi {
    match prefix {
        IpNetwork::V4(_) => AfiSafi::IPV4_UNICAST,
        IpNetwork::V6(_) => AfiSafi::IPV6_UNICAST,
    }
}

/// What `target` should hold for `prefix` given its best path, or `None`
/// (do not advertise / withdraw).
pub fn export(
    prefix: &IpNetwork,
    best: Option<&BestPath>,
    target: &ExportTarget,
    is_ibgp_peer: impl Fn(IpAddr) -> bool,
) -> Option<PathAttrs> {
    let best = best?;
    if !target.families.contains(&family_of(prefix)) {
        return None;
    }
    let learnt_from = match best.source {
        RouteSource::Local => None,
        RouteSource::Peer(p) => Some(p),
    };
    if learnt_from == Some(target.peer) {
        return None;
    }
    if target.ibgp && learnt_from.is_some_and(&is_ibgp_peer) {
        return None;
    }
    let self_next_hop = match (prefix, target.local_addr) {
        (IpNetwork::V4(_), a @ IpAddr::V4(_)) | (IpNetwork::V6(_), a @ IpAddr::V6(_)) => Some(a),
        // A different transport family has no next hop of the prefix's family.
        _ => None,
    };
    let mut attrs = (*best.attrs).clone();
    if target.ibgp {
        attrs.local_pref = Some(attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        if learnt_from.is_none() {
            attrs.next_hop = self_next_hop;
        }
    } else {
        attrs.as_path.prepend(target.local_as);
        attrs.next_hop = self_next_hop;
        attrs.local_pref = None;
        if learnt_from.is_some() {
            attrs.med = None;
        }
    }
    attrs.originator_id = None;
    // Without a next hop of the right family the route cannot be sent.
    match (prefix, attrs.next_hop) {
        (IpNetwork::V4(_), Some(IpAddr::V4(_))) | (IpNetwork::V6(_), Some(IpAddr::V6(_))) => {
            Some(attrs)
        }
        _ => None,
    }
}

fn attribute_list(attrs: &PathAttrs, v4_next_hop: bool) -> Vec<PathAttribute> {
    let mut list = vec![
        PathAttribute::Origin(attrs.origin),
        PathAttribute::AsPath(attrs.as_path.clone()),
    ];
    if v4_next_hop && let Some(IpAddr::V4(nh)) = attrs.next_hop {
        list.push(PathAttribute::NextHop(nh));
    }
    if let Some(med) = attrs.med {
        list.push(PathAttribute::MultiExitDisc(med));
    }
    if let Some(lp) = attrs.local_pref {
        list.push(PathAttribute::LocalPref(lp));
    }
    if !attrs.communities.is_empty() {
        list.push(PathAttribute::Communities(attrs.communities.clone()));
    }
    list.extend(attrs.transitive.iter().cloned());
    list
}

/// Turn Adj-RIB-Out changes (`None` = withdraw) into UPDATE messages:
/// withdrawals first, then announcements grouped by identical attributes.
pub fn build_updates(changes: Vec<(IpNetwork, Option<PathAttrs>)>) -> Vec<Update> {
    let mut out = Vec::new();
    let mut withdraw_v4 = Vec::new();
    let mut withdraw_v6 = Vec::new();
    let mut groups: Vec<(PathAttrs, Vec<IpNetwork>)> = Vec::new();
    for (prefix, attrs) in changes {
        match attrs {
            None if prefix.is_ipv4() => withdraw_v4.push(Nlri::new(prefix)),
            None => withdraw_v6.push(Nlri::new(prefix)),
            Some(a) => match groups.iter_mut().find(|(g, _)| *g == a) {
                Some((_, prefixes)) => prefixes.push(prefix),
                None => groups.push((a, vec![prefix])),
            },
        }
    }
    for chunk in withdraw_v4.chunks(V4_PER_UPDATE) {
        out.push(Update {
            withdrawn: chunk.to_vec(),
            attributes: Vec::new(),
            nlri: Vec::new(),
            ..Default::default()
        });
    }
    for chunk in withdraw_v6.chunks(V6_PER_UPDATE) {
        let unreach = MpUnreach {
            family: AfiSafi::IPV6_UNICAST,
            withdrawn: chunk.to_vec(),
        };
        out.push(Update {
            withdrawn: Vec::new(),
            attributes: vec![PathAttribute::MpUnreach(unreach)],
            nlri: Vec::new(),
            ..Default::default()
        });
    }
    for (attrs, prefixes) in groups {
        let (v4, v6): (Vec<_>, Vec<_>) = prefixes
            .into_iter()
            .map(Nlri::new)
            .partition(|n| n.prefix.is_ipv4());
        for chunk in v4.chunks(V4_PER_UPDATE) {
            out.push(Update {
                withdrawn: Vec::new(),
                attributes: attribute_list(&attrs, true),
                nlri: chunk.to_vec(),
                ..Default::default()
            });
        }
        let Some(nh) = attrs.next_hop else { continue };
        for chunk in v6.chunks(V6_PER_UPDATE) {
            let mut list = attribute_list(&attrs, false);
            let reach = MpReach {
                family: AfiSafi::IPV6_UNICAST,
                next_hops: vec![nh],
                nlri: chunk.to_vec(),
            };
            // Keep type-code order: MP_REACH (14) before extended/large communities.
            let pos = list
                .iter()
                .position(|a| {
                    matches!(
                        a,
                        PathAttribute::ExtendedCommunities(_)
                            | PathAttribute::LargeCommunities(_)
                            | PathAttribute::Unknown { .. }
                    )
                })
                .unwrap_or(list.len());
            list.insert(pos, PathAttribute::MpReach(reach));
            out.push(Update {
                withdrawn: Vec::new(),
                attributes: list,
                nlri: Vec::new(),
                ..Default::default()
            });
        }
    }
    out
}
