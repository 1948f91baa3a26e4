//! Export: from a Loc-RIB best path to what one peer is told (its
//! Adj-RIB-Out entry), and from Adj-RIB-Out changes to UPDATE messages.
//!
//! Rules (RFC 4271 §9.1.3, §5.1):
//! * never back to the peer it came from;
//! * iBGP-learnt paths are not sent to iBGP peers, unless we are a route
//!   reflector (RFC 4456 §6): from a client to every iBGP peer, from a
//!   non-client to clients only; a reflected path gets ORIGINATOR_ID (if
//!   absent) and our CLUSTER_ID prepended to its CLUSTER_LIST;
//! * eBGP: prepend our AS, next hop self, no LOCAL_PREF, no MED from
//!   elsewhere, no ORIGINATOR_ID / CLUSTER_LIST;
//! * iBGP: LOCAL_PREF (default 100), next hop self for local prefixes,
//!   unchanged for learnt ones ([`NextHopMode`] overrides);
//! * only the families both sides negotiated (RFC 4760 §7).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;

use super::{BestPath, PathAttrs, PeerMeta, RouteSource};
use crate::config::NextHopMode;
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
    /// The peer is a route-reflector client of ours.
    pub rr_client: bool,
    /// Our cluster id when we are a route reflector.
    pub cluster_id: Option<std::net::Ipv4Addr>,
    /// Next-hop rewriting.
    pub next_hop_mode: NextHopMode,
    /// The peer's export filters (`None`: none): a rejected prefix is not
    /// sent; an accepted or unmatched one follows the rules above.
    pub policy: Option<Arc<crate::policy::Policy>>,
}

impl ExportTarget {
    /// Targets with equal keys are told exactly the same thing about any
    /// path not learnt from one of them: an update group.
    pub fn group_key(&self) -> impl Eq + std::hash::Hash + Clone + use<> {
        (
            self.ibgp,
            self.rr_client,
            self.next_hop_mode,
            self.local_addr,
            self.families.clone(),
            self.policy.clone(),
        )
    }
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
) -> Option<PathAttrs> {
    let best = best?;
    if !target.families.contains(&family_of(prefix)) {
        return None;
    }
    let learnt_from = match best.source() {
        RouteSource::Local => None,
        RouteSource::Peer(p) => Some(p),
    };
    if !filters_export(target, prefix, learnt_from) {
        return None;
    }
    if learnt_from == Some(target.peer) {
        return None;
    }
    let source: Option<PeerMeta> = best.from.as_deref().copied();
    let mut reflected = false;
    if target.ibgp
        && let Some(src) = source.filter(|m| m.ibgp)
    {
        // RFC 4456 §6: only a reflector passes iBGP paths on; from a
        // non-client, only to clients.
        if target.cluster_id.is_none() || !(src.rr_client || target.rr_client) {
            return None;
        }
        reflected = true;
    }
    let self_next_hop = match (prefix, target.local_addr) {
        (IpNetwork::V4(_), a @ IpAddr::V4(_)) | (IpNetwork::V6(_), a @ IpAddr::V6(_)) => Some(a),
        // A different transport family has no next hop of the prefix's family.
        _ => None,
    };
    let mut attrs = (*best.attrs).clone();
    let next_hop_self = match target.next_hop_mode {
        NextHopMode::SelfAddr => true,
        NextHopMode::Keep => learnt_from.is_none(),
        NextHopMode::Auto => learnt_from.is_none() || !target.ibgp,
    };
    if next_hop_self {
        attrs.next_hop = self_next_hop;
    }
    if target.ibgp {
        attrs.local_pref = Some(attrs.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
    } else {
        attrs.as_path.prepend(target.local_as);
        attrs.local_pref = None;
        if learnt_from.is_some() {
            attrs.med = None;
        }
    }
    if reflected && let (Some(src), Some(cluster)) = (source, target.cluster_id) {
        // RFC 4456 §8.
        attrs.originator_id = Some(attrs.originator_id.unwrap_or(src.router_id));
        attrs.cluster_list.insert(0, cluster);
    } else if !target.ibgp || source.is_none_or(|m| !m.ibgp) {
        // Non-transitive and meaningful inside the AS only.
        attrs.originator_id = None;
        attrs.cluster_list.clear();
    }
    // Without a next hop of the right family the route cannot be sent.
    match (prefix, attrs.next_hop) {
        (IpNetwork::V4(_), Some(IpAddr::V4(_))) | (IpNetwork::V6(_), Some(IpAddr::V6(_))) => {
            Some(attrs)
        }
        _ => None,
    }
}

/// Whether the target's export filters let `prefix` (learnt from
/// `from`, or originated here) through.
fn filters_export(target: &ExportTarget, prefix: &IpNetwork, from: Option<IpAddr>) -> bool {
    target
        .policy
        .as_ref()
        .is_none_or(|p| p.exports(prefix, from))
}

/// An Adj-RIB-Out change: the attributes to send (shared), or `None`
/// (withdraw).
pub type Change = (IpNetwork, Option<Arc<PathAttrs>>);

/// [`export`] for many prefixes to one target, with one shared copy of each
/// distinct result: the diffs, pending diffs and encodings built from it
/// hold a pointer per prefix, not a copy of the attributes. A Loc-RIB has
/// few distinct attribute sets (one per UPDATE a peer sent, about), so
/// most prefixes hit the cache and no attributes are built for them.
#[derive(Debug)]
pub struct Exporter<'t> {
    target: &'t ExportTarget,
    /// By what export depends on: the best path's attributes (the `Arc`
    /// itself, kept alive so its address stays unique), where it came from,
    /// and the prefix's family.
    by_source: HashMap<SourceKey, Option<Arc<PathAttrs>>>,
    /// Every distinct result, so equal results share one copy.
    shared: HashSet<Arc<PathAttrs>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SourceKey {
    attrs: ByAddress,
    from: Option<PeerMeta>,
    v4: bool,
}

/// An `Arc` compared and hashed by address.
#[derive(Debug, Clone)]
struct ByAddress(Arc<PathAttrs>);

impl PartialEq for ByAddress {
    fn eq(&self, other: &ByAddress) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ByAddress {}

impl std::hash::Hash for ByAddress {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

impl<'t> Exporter<'t> {
    /// A cache for exports to `target`.
    pub fn new(target: &'t ExportTarget) -> Exporter<'t> {
        Exporter {
            target,
            by_source: HashMap::new(),
            shared: HashSet::new(),
        }
    }

    /// The target.
    pub fn target(&self) -> &ExportTarget {
        self.target
    }

    /// [`export`], shared.
    pub fn export(
        &mut self,
        prefix: &IpNetwork,
        best: Option<&BestPath>,
    ) -> Option<Arc<PathAttrs>> {
        let best = best?;
        // Filters depend on the prefix, the cache below does not.
        let from = match best.source() {
            RouteSource::Local => None,
            RouteSource::Peer(p) => Some(p),
        };
        if !filters_export(self.target, prefix, from) {
            return None;
        }
        let key = SourceKey {
            attrs: ByAddress(best.attrs.clone()),
            from: best.from.as_deref().copied(),
            v4: prefix.is_ipv4(),
        };
        if let Some(hit) = self.by_source.get(&key) {
            return hit.clone();
        }
        let out = export(prefix, Some(best), self.target).map(|a| match self.shared.get(&a) {
            Some(same) => same.clone(),
            None => {
                let a = Arc::new(a);
                self.shared.insert(a.clone());
                a
            }
        });
        self.by_source.insert(key, out.clone());
        out
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
    if let Some(id) = attrs.originator_id {
        list.push(PathAttribute::OriginatorId(id));
    }
    if !attrs.cluster_list.is_empty() {
        list.push(PathAttribute::ClusterList(attrs.cluster_list.clone()));
    }
    list.extend(attrs.transitive.iter().cloned());
    list
}

/// Turn Adj-RIB-Out changes (`None` = withdraw) into UPDATE messages:
/// withdrawals first, then announcements grouped by identical attributes.
pub fn build_updates(changes: impl IntoIterator<Item = Change>) -> Vec<Update> {
    let mut out = Vec::new();
    let mut withdraw_v4 = Vec::new();
    let mut withdraw_v6 = Vec::new();
    let mut groups: Vec<(Arc<PathAttrs>, Vec<IpNetwork>)> = Vec::new();
    // Group index by attributes: a reflector's table has about as many
    // attribute sets as clients, so a linear search would be quadratic.
    // Shared attributes are mostly the same `Arc`: compare addresses first.
    let mut index: HashMap<Arc<PathAttrs>, usize> = HashMap::new();
    let mut last: Option<(Arc<PathAttrs>, usize)> = None;
    for (prefix, attrs) in changes {
        match attrs {
            None if prefix.is_ipv4() => withdraw_v4.push(Nlri::new(prefix)),
            None => withdraw_v6.push(Nlri::new(prefix)),
            Some(a) => {
                let i = match &last {
                    Some((l, i)) if Arc::ptr_eq(l, &a) => *i,
                    _ => {
                        let i = *index.entry(a.clone()).or_insert_with(|| {
                            groups.push((a.clone(), Vec::new()));
                            groups.len() - 1
                        });
                        last = Some((a, i));
                        i
                    }
                };
                groups[i].1.push(prefix);
            }
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
