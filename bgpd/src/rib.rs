//! Routing information bases (RFC 4271 §3.2): per-peer Adj-RIB-In, the
//! Loc-RIB with one best path per prefix, locally originated prefixes, and
//! the export rules that make each peer's Adj-RIB-Out.
//!
//! Deliberately small: the decision process is §9.1.2.2 without IGP cost
//! and without route reflection; [`Rib::recompute`] is the one place a fuller
//! decision process, RFC 4456 reflection, update groups or graceful restart
//! plug in later. Pure data, no I/O: the speaker actor owns a `Rib`.

pub mod export;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::packet::{AsPath, Origin, PathAttribute, Update};

/// The attributes of a path that Manx uses or passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathAttrs {
    /// ORIGIN.
    pub origin: Origin,
    /// AS_PATH (4-octet view).
    pub as_path: AsPath,
    /// NEXT_HOP, or the first MP_REACH next hop.
    pub next_hop: Option<IpAddr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// COMMUNITIES.
    pub communities: Vec<u32>,
    /// ORIGINATOR_ID (RFC 4456), for loop detection.
    pub originator_id: Option<Ipv4Addr>,
    /// Other optional transitive attributes, passed on unchanged.
    pub transitive: Vec<PathAttribute>,
}

impl PathAttrs {
    /// Attributes of a locally originated prefix: ORIGIN IGP, empty AS_PATH.
    pub fn local() -> PathAttrs {
        PathAttrs {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop: None,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            originator_id: None,
            transitive: Vec::new(),
        }
    }

    /// Collect from an UPDATE's attribute list. `None` when ORIGIN or
    /// AS_PATH is missing (the codec enforces that for UPDATEs with NLRI).
    pub fn from_update(update: &Update) -> Option<PathAttrs> {
        let mut origin = None;
        let mut as_path = None;
        let mut attrs = PathAttrs::local();
        for a in &update.attributes {
            match a {
                PathAttribute::Origin(o) => origin = Some(*o),
                PathAttribute::AsPath(p) => as_path = Some(p.clone()),
                PathAttribute::NextHop(nh) => {
                    attrs.next_hop = attrs.next_hop.or(Some(IpAddr::V4(*nh)))
                }
                PathAttribute::MpReach(mp) => {
                    // MP_REACH's next hop wins for its family; remember the global one.
                    if let Some(nh) = mp.next_hops.first() {
                        attrs.next_hop = Some(*nh);
                    }
                }
                PathAttribute::MultiExitDisc(m) => attrs.med = Some(*m),
                PathAttribute::LocalPref(l) => attrs.local_pref = Some(*l),
                PathAttribute::Communities(c) => attrs.communities = c.clone(),
                PathAttribute::OriginatorId(id) => attrs.originator_id = Some(*id),
                PathAttribute::LargeCommunities(_) | PathAttribute::ExtendedCommunities(_) => {
                    attrs.transitive.push(a.clone())
                }
                PathAttribute::Unknown { flags, .. } if flags & 0xc0 == 0xc0 => {
                    attrs.transitive.push(a.clone())
                }
                _ => {}
            }
        }
        attrs.origin = origin?;
        attrs.as_path = as_path?;
        Some(attrs)
    }
}

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "peer")]
pub enum RouteSource {
    /// Originated by this speaker (`networks`).
    Local,
    /// Learnt from this peer.
    Peer(IpAddr),
}

/// What the RIB knows about a peer for the decision process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerMeta {
    /// The peer's address.
    pub address: IpAddr,
    /// Same AS as ours.
    pub ibgp: bool,
    /// Its BGP identifier (tie-break, §9.1.2.2 f).
    pub router_id: Ipv4Addr,
}

#[derive(Debug, Clone)]
struct InPath {
    attrs: Arc<PathAttrs>,
    /// Passed import checks (AS loop, originator loop).
    eligible: bool,
}

/// The Loc-RIB entry of a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestPath {
    /// Where it came from.
    pub source: RouteSource,
    /// Its attributes as received.
    pub attrs: Arc<PathAttrs>,
}

/// A change to a Loc-RIB best path, for the kernel programmer (bgpd never
/// touches netlink: `manx-node` hands these to felix-lite).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum RouteUpdate {
    /// Install or replace the route to `prefix` via `next_hop` (learnt from `peer`).
    Add {
        /// Destination.
        prefix: IpNetwork,
        /// Gateway.
        next_hop: IpAddr,
        /// The peer it came from.
        peer: IpAddr,
    },
    /// No learnt route to `prefix` any more.
    Remove {
        /// Destination.
        prefix: IpNetwork,
    },
}

/// Counters of one peer's Adj-RIB-In.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdjInStats {
    /// Prefixes held.
    pub received: usize,
    /// Of those, eligible for the decision process.
    pub accepted: usize,
}

/// Adj-RIBs-In, locally originated prefixes and the Loc-RIB.
#[derive(Debug)]
pub struct Rib {
    local_as: u32,
    router_id: Ipv4Addr,
    peers: HashMap<IpAddr, PeerMeta>,
    adj_in: HashMap<IpAddr, BTreeMap<IpNetwork, InPath>>,
    local: BTreeMap<IpNetwork, Arc<PathAttrs>>,
    loc: BTreeMap<IpNetwork, BestPath>,
}

impl Rib {
    /// An empty RIB for a speaker.
    pub fn new(local_as: u32, router_id: Ipv4Addr) -> Rib {
        Rib {
            local_as,
            router_id,
            peers: HashMap::new(),
            adj_in: HashMap::new(),
            local: BTreeMap::new(),
            loc: BTreeMap::new(),
        }
    }

    /// Originate a prefix. Returns the prefixes whose best path changed.
    pub fn add_local(&mut self, prefix: IpNetwork) -> Vec<IpNetwork> {
        let prefix = normalize(prefix);
        self.local.insert(prefix, Arc::new(PathAttrs::local()));
        self.recompute([prefix])
    }

    /// Stop originating a prefix.
    pub fn remove_local(&mut self, prefix: IpNetwork) -> Vec<IpNetwork> {
        let prefix = normalize(prefix);
        if self.local.remove(&prefix).is_none() {
            return Vec::new();
        }
        self.recompute([prefix])
    }

    /// The originated prefixes.
    pub fn local_prefixes(&self) -> impl Iterator<Item = &IpNetwork> {
        self.local.keys()
    }

    /// A session came up.
    pub fn peer_up(&mut self, meta: PeerMeta) {
        self.peers.insert(meta.address, meta);
        self.adj_in.entry(meta.address).or_default();
    }

    /// A session went down: flush its Adj-RIB-In (§9.1: its routes are
    /// no longer usable). Returns the prefixes whose best path changed.
    pub fn peer_down(&mut self, peer: IpAddr) -> Vec<IpNetwork> {
        self.peers.remove(&peer);
        let Some(paths) = self.adj_in.remove(&peer) else {
            return Vec::new();
        };
        self.recompute(paths.into_keys())
    }

    /// Apply an UPDATE from `peer` (§9). Returns the prefixes whose best path changed.
    pub fn apply_update(&mut self, peer: IpAddr, update: &Update) -> Vec<IpNetwork> {
        let mut touched = BTreeSet::new();
        let table = self.adj_in.entry(peer).or_default();
        let mut withdraw = |table: &mut BTreeMap<IpNetwork, InPath>, p: IpNetwork| {
            let p = normalize(p);
            if table.remove(&p).is_some() {
                touched.insert(p);
            }
        };
        for n in &update.withdrawn {
            withdraw(table, n.prefix);
        }
        let mut announced: Vec<IpNetwork> = update.nlri.iter().map(|n| n.prefix).collect();
        for a in &update.attributes {
            match a {
                PathAttribute::MpUnreach(mp) => {
                    mp.withdrawn.iter().for_each(|n| withdraw(table, n.prefix))
                }
                PathAttribute::MpReach(mp) => announced.extend(mp.nlri.iter().map(|n| n.prefix)),
                _ => {}
            }
        }
        // RFC 7606 treat-as-withdraw: every prefix of the UPDATE goes.
        let attrs = if update.treat_as_withdraw {
            None
        } else {
            PathAttrs::from_update(update)
        };
        match attrs {
            None => announced.into_iter().for_each(|p| withdraw(table, p)),
            Some(attrs) => {
                let ibgp = self.peers.get(&peer).is_some_and(|m| m.ibgp);
                // §9.1.2: a path with our own AS is a loop (eBGP); RFC 4456 §8: our originator id too.
                let eligible = (ibgp || !attrs.as_path.contains(self.local_as))
                    && attrs.originator_id != Some(self.router_id)
                    && attrs.next_hop.is_some();
                let attrs = Arc::new(attrs);
                for p in announced {
                    let p = normalize(p);
                    table.insert(
                        p,
                        InPath {
                            attrs: attrs.clone(),
                            eligible,
                        },
                    );
                    touched.insert(p);
                }
            }
        }
        self.recompute(touched)
    }

    /// Counters of a peer's Adj-RIB-In.
    pub fn adj_in_stats(&self, peer: IpAddr) -> AdjInStats {
        self.adj_in
            .get(&peer)
            .map_or_else(AdjInStats::default, |t| AdjInStats {
                received: t.len(),
                accepted: t.values().filter(|p| p.eligible).count(),
            })
    }

    /// The best path of a prefix.
    pub fn best(&self, prefix: &IpNetwork) -> Option<&BestPath> {
        self.loc.get(prefix)
    }

    /// The whole Loc-RIB, in prefix order.
    pub fn loc_rib(&self) -> impl Iterator<Item = (&IpNetwork, &BestPath)> {
        self.loc.iter()
    }

    /// A Loc-RIB change as a kernel route change, or `None` if the kernel
    /// need not hear of it (local prefixes are the node's own business).
    pub fn route_update(&self, prefix: IpNetwork) -> Option<RouteUpdate> {
        match self.loc.get(&prefix) {
            Some(BestPath {
                source: RouteSource::Peer(peer),
                attrs,
            }) => attrs.next_hop.map(|next_hop| RouteUpdate::Add {
                prefix,
                next_hop,
                peer: *peer,
            }),
            _ => Some(RouteUpdate::Remove { prefix }),
        }
    }

    /// Re-run the decision process for some prefixes (§9.1.2); the one place
    /// the Loc-RIB changes. Returns the prefixes whose best path changed.
    pub fn recompute(&mut self, prefixes: impl IntoIterator<Item = IpNetwork>) -> Vec<IpNetwork> {
        let mut changed = Vec::new();
        for prefix in prefixes {
            let best = self.select(&prefix);
            let old = self.loc.get(&prefix);
            if old != best.as_ref() {
                match best {
                    Some(b) => self.loc.insert(prefix, b),
                    None => self.loc.remove(&prefix),
                };
                changed.push(prefix);
            }
        }
        changed
    }

    fn select(&self, prefix: &IpNetwork) -> Option<BestPath> {
        // Locally originated routes are preferred over any learnt one.
        if let Some(attrs) = self.local.get(prefix) {
            return Some(BestPath {
                source: RouteSource::Local,
                attrs: attrs.clone(),
            });
        }
        let mut best: Option<(&PeerMeta, &Arc<PathAttrs>)> = None;
        for (peer, table) in &self.adj_in {
            let Some(path) = table.get(prefix).filter(|p| p.eligible) else {
                continue;
            };
            let Some(meta) = self.peers.get(peer) else {
                continue;
            };
            if best.is_none_or(|(bm, ba)| better(meta, &path.attrs, bm, ba)) {
                best = Some((meta, &path.attrs));
            }
        }
        best.map(|(m, a)| BestPath {
            source: RouteSource::Peer(m.address),
            attrs: a.clone(),
        })
    }
}

/// §9.1.2.2 without IGP cost: is path `a` (from `am`) better than `b` (from `bm`)?
fn better(am: &PeerMeta, a: &PathAttrs, bm: &PeerMeta, b: &PathAttrs) -> bool {
    use std::cmp::Ordering::*;
    let lp = |x: &PathAttrs| x.local_pref.unwrap_or(100);
    let origin = |x: &PathAttrs| x.origin as u8;
    let steps = [
        lp(b).cmp(&lp(a)),                                     // higher LOCAL_PREF (§9.1.1)
        a.as_path.path_len().cmp(&b.as_path.path_len()),       // shorter AS_PATH (a)
        origin(a).cmp(&origin(b)),                             // lower ORIGIN (b)
        a.med.unwrap_or(0).cmp(&b.med.unwrap_or(0)),           // lower MED (c), compared always
        am.ibgp.cmp(&bm.ibgp),                                 // eBGP over iBGP (d)
        u32::from(am.router_id).cmp(&u32::from(bm.router_id)), // lower BGP identifier (f)
        am.address.cmp(&bm.address),                           // lower peer address (g)
    ];
    steps.into_iter().find(|o| *o != Equal) == Some(Less)
}

/// Prefixes are keyed by their network address (host bits cleared).
pub fn normalize(p: IpNetwork) -> IpNetwork {
    IpNetwork::new(p.network(), p.prefix()).unwrap_or(p)
}

#[cfg(test)]
mod tests;
