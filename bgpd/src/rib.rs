//! Routing information bases (RFC 4271 §3.2): per-peer Adj-RIB-In, the
//! Loc-RIB with one best path per prefix, locally originated prefixes, and
//! the export rules that make each peer's Adj-RIB-Out.
//!
//! The decision process is RFC 4271 §9.1.2.2 (no IGP cost: every next hop
//! is directly reachable here) with the RFC 4456 §9 route-reflection
//! tie-breaks; [`Rib::recompute`] is the one place the Loc-RIB changes.
//! Paths equal to the best up to the IGP-cost step are merged into one
//! multipath kernel route ([`multipath`], BIRD's `merge paths`).
//! Graceful restart (RFC 4724 §4.2): a helper keeps a restarting peer's
//! paths marked stale ([`Rib::peer_down_graceful`]) and sweeps those not
//! refreshed ([`Rib::sweep_stale`]). Pure data, no I/O: the speaker actor
//! owns a `Rib`.

pub mod export;
mod feed;
pub mod multipath;
pub mod prefix_map;

pub use feed::RouteFeed;
pub use multipath::Multipath;
pub use prefix_map::PrefixMap;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::packet::{AsPath, Origin, PathAttribute, Update};

/// The attributes of a path that Manx uses or passes on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    /// CLUSTER_LIST (RFC 4456), most recent reflector first.
    pub cluster_list: Vec<Ipv4Addr>,
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
            cluster_list: Vec::new(),
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
                PathAttribute::ClusterList(l) => attrs.cluster_list = l.clone(),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerMeta {
    /// The peer's address.
    pub address: IpAddr,
    /// Same AS as ours.
    pub ibgp: bool,
    /// Its BGP identifier (tie-break, §9.1.2.2 f).
    pub router_id: Ipv4Addr,
    /// A route-reflector client of ours (RFC 4456 §6).
    pub rr_client: bool,
    /// How many times our own AS may appear in the AS_PATH of an eBGP path
    /// it sends before the path is a loop (0: never, RFC 4271 §9.1.2;
    /// BIRD's `allow local as N`, Calico's `numAllowedLocalASNumbers`).
    pub allow_local_as: u8,
}

#[derive(Debug, Clone)]
struct InPath {
    attrs: Arc<PathAttrs>,
    /// Passed import checks (AS loop, originator / cluster loop).
    eligible: bool,
    /// Accepted by the peer's import filters ([`crate::policy`]); kept
    /// either way, so a changed policy is re-applied to what is held.
    imported: bool,
    /// Kept through the peer's restart, not yet re-announced (RFC 4724 §4.2).
    stale: bool,
}

/// The Loc-RIB entry of a prefix: two pointers (16 octets), shared with
/// the Adj-RIB-In it was chosen from and with every path of the same peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestPath {
    /// Its attributes as received.
    pub attrs: Arc<PathAttrs>,
    /// The peer it was learnt from, as it was then (export needs its kind
    /// even after the peer is gone, to know what it had told others);
    /// `None`: originated here.
    pub from: Option<Arc<PeerMeta>>,
}

impl BestPath {
    /// Where it came from.
    pub fn source(&self) -> RouteSource {
        self.from
            .as_ref()
            .map_or(RouteSource::Local, |m| RouteSource::Peer(m.address))
    }
}

/// A prefix's Loc-RIB entry: its best path if it has one, and how often
/// that changed (flap detection in tests and `manxctl node status`; kept
/// after the prefix leaves the Loc-RIB, a withdraw and re-announce is a
/// flap). Saturating `u32`: 24 octets.
#[derive(Debug, Clone, Default)]
struct LocEntry {
    best: Option<BestPath>,
    changes: u32,
}

/// A change to a Loc-RIB best path, for the kernel programmer (bgpd never
/// touches netlink: `manx-node` hands these to felix-lite).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum RouteUpdate {
    /// Install or replace the route to `prefix` via `next_hops` (its best
    /// path learnt from `peer`).
    Add {
        /// Destination.
        prefix: IpNetwork,
        /// Gateways, never empty: the best path's next hop first, then
        /// those of the equal paths merged with it, in address order
        /// (several: one multipath route, see [`Multipath`]).
        next_hops: Vec<IpAddr>,
        /// The peer its best path came from.
        peer: IpAddr,
    },
    /// No learnt route to `prefix` any more.
    Remove {
        /// Destination.
        prefix: IpNetwork,
    },
}

/// Communities for the originated prefixes inside one CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalCommunities {
    /// Prefixes inside it (or equal) get them.
    pub cidr: IpNetwork,
    /// RFC 1997 communities (`aa:nn` as `aa << 16 | nn`).
    pub standard: Vec<u32>,
    /// RFC 8092 large communities (`aa:nn:mm`).
    pub large: Vec<(u32, u32, u32)>,
}

/// Counters of one peer's Adj-RIB-In.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdjInStats {
    /// Prefixes held.
    pub received: usize,
    /// Of those, eligible for the decision process (no loop, accepted by
    /// the import filters).
    pub accepted: usize,
}

/// Adj-RIBs-In, locally originated prefixes and the Loc-RIB.
#[derive(Debug)]
pub struct Rib {
    local_as: u32,
    router_id: Ipv4Addr,
    cluster_id: Option<Ipv4Addr>,
    /// Shared with the best paths learnt from them (a session that comes
    /// up again gets a new one).
    peers: HashMap<IpAddr, Arc<PeerMeta>>,
    adj_in: HashMap<IpAddr, PrefixMap<InPath>>,
    /// Import filters of the configured peers that have some (outlive
    /// their sessions: set with the peer's configuration).
    import_policy: HashMap<IpAddr, Arc<crate::policy::Policy>>,
    local: BTreeMap<IpNetwork, Arc<PathAttrs>>,
    /// Communities of the originated prefixes, by CIDR.
    local_communities: Vec<LocalCommunities>,
    /// The Loc-RIB and each prefix's change count, in one entry per
    /// prefix (42 octets; a map of best paths and another of counts
    /// stored every prefix twice).
    loc: PrefixMap<LocEntry>,
    /// Which equal paths merge into one kernel route.
    multipath: Multipath,
    /// The next hops of the prefixes whose kernel route is multipath (two
    /// or more, sorted): only those, so a RIB without ECMP pays nothing.
    merged: PrefixMap<Box<[IpAddr]>>,
    /// Best path of each prefix before the changes not yet exported
    /// ([`Rib::take_previous`]): lets export diff without storing every
    /// peer's Adj-RIB-Out.
    previous: PrefixMap<Option<BestPath>>,
    /// Bumped on every Loc-RIB change: caches of encoded tables are valid
    /// while it stays the same.
    generation: u64,
}

impl Rib {
    /// An empty RIB for a speaker.
    pub fn new(local_as: u32, router_id: Ipv4Addr) -> Rib {
        Rib {
            local_as,
            router_id,
            cluster_id: None,
            peers: HashMap::new(),
            adj_in: HashMap::new(),
            import_policy: HashMap::new(),
            local: BTreeMap::new(),
            local_communities: Vec::new(),
            loc: PrefixMap::default(),
            multipath: Multipath::default(),
            merged: PrefixMap::default(),
            previous: PrefixMap::default(),
            generation: 0,
        }
    }

    /// Act as a route reflector of this cluster (RFC 4456 §7): paths whose
    /// CLUSTER_LIST holds it are loops.
    pub fn set_cluster_id(&mut self, cluster_id: Option<Ipv4Addr>) {
        self.cluster_id = cluster_id;
    }

    /// Change which equal paths merge into one kernel route. Returns the
    /// prefixes whose kernel route changed (their best paths did not: only
    /// [`Rib::route_update`] tells the difference).
    pub fn set_multipath(&mut self, multipath: Multipath) -> Vec<IpNetwork> {
        if self.multipath == multipath {
            return Vec::new();
        }
        self.multipath = multipath;
        let learnt: Vec<IpNetwork> = self
            .loc
            .iter()
            .filter(|(_, e)| e.best.as_ref().is_some_and(|b| b.from.is_some()))
            .map(|(p, _)| p)
            .collect();
        self.recompute(learnt)
    }

    /// Set a peer's import filters (`None`: none) and apply them to the
    /// paths it sent that are held (its Adj-RIB-In keeps rejected ones
    /// too, so nothing need be asked of the peer). Returns the prefixes
    /// whose best path changed.
    pub fn set_import_policy(
        &mut self,
        peer: IpAddr,
        policy: Option<Arc<crate::policy::Policy>>,
    ) -> Vec<IpNetwork> {
        let policy = policy.filter(|p| !p.is_empty());
        if self.import_policy.get(&peer) == policy.as_ref() {
            return Vec::new();
        }
        match &policy {
            Some(p) => self.import_policy.insert(peer, p.clone()),
            None => self.import_policy.remove(&peer),
        };
        let Some(table) = self.adj_in.get_mut(&peer) else {
            return Vec::new();
        };
        let mut touched = Vec::new();
        for (prefix, path) in table.iter_mut() {
            let imported = policy.as_ref().is_none_or(|p| p.imports(&prefix));
            if path.imported != imported {
                path.imported = imported;
                touched.push(prefix);
            }
        }
        self.recompute(touched)
    }

    /// The next hops merged into the kernel route of `prefix`, when it is
    /// multipath (two or more, sorted).
    pub fn merged_next_hops(&self, prefix: &IpNetwork) -> Option<&[IpAddr]> {
        self.merged.get(prefix).map(|b| &**b)
    }

    /// The meta of an up (or restarting) peer.
    pub fn peer_meta(&self, peer: &IpAddr) -> Option<&PeerMeta> {
        self.peers.get(peer).map(|m| &**m)
    }

    /// How many times the best path of `prefix` changed.
    pub fn change_count(&self, prefix: &IpNetwork) -> u64 {
        self.loc.get(prefix).map_or(0, |e| u64::from(e.changes))
    }

    /// A number that changes whenever the Loc-RIB does (anything derived
    /// from the Loc-RIB and tagged with it is current while it is equal).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many prefixes changed since the last [`Rib::take_previous`].
    pub fn pending_changes(&self) -> usize {
        self.previous.len()
    }

    /// The best paths, before the changes made since the last call, of the
    /// prefixes that changed (`None`: there was none).
    pub fn take_previous(&mut self) -> PrefixMap<Option<BestPath>> {
        std::mem::take(&mut self.previous)
    }

    /// Originate a prefix. Returns the prefixes whose best path changed.
    pub fn add_local(&mut self, prefix: IpNetwork) -> Vec<IpNetwork> {
        let prefix = normalize(prefix);
        let attrs = self.local_attrs(&prefix);
        self.local.insert(prefix, attrs);
        self.recompute([prefix])
    }

    /// Communities the originated prefixes carry: every entry whose CIDR
    /// holds a prefix adds its standard and large communities to it
    /// (Calico's `prefixAdvertisements`, `net ~ cidr` in its BIRD config).
    /// Returns the prefixes whose best path changed.
    pub fn set_local_communities(&mut self, policy: Vec<LocalCommunities>) -> Vec<IpNetwork> {
        if self.local_communities == policy {
            return Vec::new();
        }
        self.local_communities = policy;
        let prefixes: Vec<IpNetwork> = self.local.keys().copied().collect();
        for p in &prefixes {
            let attrs = self.local_attrs(p);
            self.local.insert(*p, attrs);
        }
        self.recompute(prefixes)
    }

    fn local_attrs(&self, prefix: &IpNetwork) -> Arc<PathAttrs> {
        let mut attrs = PathAttrs::local();
        let mut large = Vec::new();
        for c in &self.local_communities {
            if c.cidr.is_ipv4() == prefix.is_ipv4()
                && c.cidr.prefix() <= prefix.prefix()
                && c.cidr.contains(prefix.network())
            {
                attrs.communities.extend(&c.standard);
                large.extend(&c.large);
            }
        }
        attrs.communities.sort_unstable();
        attrs.communities.dedup();
        large.sort_unstable();
        large.dedup();
        if !large.is_empty() {
            attrs
                .transitive
                .push(PathAttribute::LargeCommunities(large));
        }
        Arc::new(attrs)
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
        self.peers.insert(meta.address, Arc::new(meta));
        self.adj_in.entry(meta.address).or_default();
    }

    /// A graceful-restart-capable peer's session went down without a
    /// NOTIFICATION (RFC 4724 §4.2): keep its paths, marked stale, and keep
    /// using them. Returns how many were marked.
    pub fn peer_down_graceful(&mut self, peer: IpAddr) -> usize {
        let Some(table) = self.adj_in.get_mut(&peer) else {
            return 0;
        };
        table.values_mut().for_each(|p| p.stale = true);
        table.len()
    }

    /// Whether a peer still has stale paths.
    pub fn has_stale(&self, peer: IpAddr) -> bool {
        self.adj_in
            .get(&peer)
            .is_some_and(|t| t.values().any(|p| p.stale))
    }

    /// Drop the peer's paths still stale: after its End-of-RIB, or when its
    /// restart time ran out (RFC 4724 §4.2). Returns the prefixes whose best
    /// path changed.
    /// `family` limits the sweep to one family (its End-of-RIB came).
    pub fn sweep_stale(
        &mut self,
        peer: IpAddr,
        family: Option<crate::packet::AfiSafi>,
    ) -> Vec<IpNetwork> {
        let Some(table) = self.adj_in.get_mut(&peer) else {
            return Vec::new();
        };
        let stale: Vec<IpNetwork> = table
            .iter()
            .filter(|(k, p)| p.stale && family.is_none_or(|f| export::family_of(k) == f))
            .map(|(k, _)| k)
            .collect();
        for p in &stale {
            table.remove(p);
        }
        self.recompute(stale)
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
        let mut withdraw = |table: &mut PrefixMap<InPath>, p: IpNetwork| {
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
                let allow = self.peers.get(&peer).map_or(0, |m| m.allow_local_as);
                // §9.1.2: a path with our own AS is a loop (eBGP), unless
                // the peer is allowed that many (allowas-in: one AS for
                // every rack); RFC 4456 §8: our router id as ORIGINATOR_ID,
                // or our cluster id in the CLUSTER_LIST, too.
                let cluster_loop = self
                    .cluster_id
                    .is_some_and(|c| attrs.cluster_list.contains(&c));
                let eligible = (ibgp || attrs.as_path.count(self.local_as) <= usize::from(allow))
                    && attrs.originator_id != Some(self.router_id)
                    && !cluster_loop
                    && attrs.next_hop.is_some();
                let attrs = Arc::new(attrs);
                let policy = self.import_policy.get(&peer);
                for p in announced {
                    let p = normalize(p);
                    table.insert(
                        p,
                        InPath {
                            attrs: attrs.clone(),
                            eligible,
                            imported: policy.is_none_or(|f| f.imports(&p)),
                            stale: false,
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
                accepted: t.values().filter(|p| p.eligible && p.imported).count(),
            })
    }

    /// The best path of a prefix.
    pub fn best(&self, prefix: &IpNetwork) -> Option<&BestPath> {
        self.loc.get(prefix).and_then(|e| e.best.as_ref())
    }

    /// The whole Loc-RIB, in prefix order.
    pub fn loc_rib(&self) -> impl Iterator<Item = (IpNetwork, &BestPath)> {
        self.loc
            .iter()
            .filter_map(|(p, e)| e.best.as_ref().map(|b| (p, b)))
    }

    /// A Loc-RIB change as a kernel route change: `Add` when a peer's path
    /// is best, `Remove` when none is or the best is our own prefix (the
    /// node programs its own blocks itself, so a learnt route it had
    /// installed for the prefix must go); `None` for a peer's path without
    /// a next hop.
    pub fn route_update(&self, prefix: IpNetwork) -> Option<RouteUpdate> {
        match self.best(&prefix) {
            Some(BestPath {
                attrs,
                from: Some(meta),
            }) => attrs.next_hop.map(|next_hop| RouteUpdate::Add {
                prefix,
                next_hops: std::iter::once(next_hop)
                    .chain(
                        self.merged_next_hops(&prefix)
                            .into_iter()
                            .flatten()
                            .copied()
                            .filter(|h| *h != next_hop),
                    )
                    .collect(),
                peer: meta.address,
            }),
            _ => Some(RouteUpdate::Remove { prefix }),
        }
    }

    /// Re-run the decision process for some prefixes (§9.1.2); the one place
    /// the Loc-RIB changes. Returns the prefixes whose best path changed, or
    /// whose multipath next hops did (a path merged or unmerged while the
    /// best stayed: its kernel route changes, its export does not; such a
    /// prefix is in [`Rib::take_previous`] with its unchanged best path).
    pub fn recompute(&mut self, prefixes: impl IntoIterator<Item = IpNetwork>) -> Vec<IpNetwork> {
        let mut changed = Vec::new();
        for prefix in prefixes {
            let (best, merged) = self.select(&prefix);
            let old = self.best(&prefix);
            let best_changed = old != best.as_ref();
            if best_changed || self.merged.get(&prefix) != merged.as_ref() {
                let old = old.cloned();
                self.previous.insert_if_absent(prefix, old);
                match merged {
                    Some(m) => self.merged.insert(prefix, m),
                    None => self.merged.remove(&prefix),
                };
                if !best_changed {
                    changed.push(prefix);
                    continue;
                }
                let entry = self.loc.get_or_default(prefix);
                entry.changes = entry.changes.saturating_add(1);
                entry.best = best;
                changed.push(prefix);
            }
        }
        if !changed.is_empty() {
            self.generation += 1;
        }
        changed
    }

    /// The best path of a prefix and, if its kernel route is multipath, the
    /// merged next hops.
    fn select(&self, prefix: &IpNetwork) -> (Option<BestPath>, Option<Box<[IpAddr]>>) {
        // Locally originated routes are preferred over any learnt one.
        if let Some(attrs) = self.local.get(prefix) {
            let best = BestPath {
                attrs: attrs.clone(),
                from: None,
            };
            return (Some(best), None);
        }
        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        for (peer, table) in &self.adj_in {
            let Some(path) = table.get(prefix).filter(|p| p.eligible && p.imported) else {
                continue;
            };
            let Some(meta) = self.peers.get(peer) else {
                continue;
            };
            candidates.push(Candidate {
                meta,
                attrs: &path.attrs,
            });
        }
        let all = (candidates.len() > 1).then(|| candidates.clone());
        let Some(best) = decide(candidates, self.local_as) else {
            return (None, None);
        };
        let merged = all.and_then(|all| self.multipath.next_hops(&best, &all, self.local_as));
        let best = BestPath {
            attrs: best.attrs.clone(),
            from: Some(best.meta.clone()),
        };
        (Some(best), merged)
    }
}

/// A feasible path in the decision process.
#[derive(Debug, Clone, Copy)]
struct Candidate<'a> {
    meta: &'a Arc<PeerMeta>,
    attrs: &'a Arc<PathAttrs>,
}

/// RFC 4271 §9.1.2.2 by elimination, each step keeping the candidates
/// that are best by it (MED only among paths from the same neighbouring
/// AS, step c), with the RFC 4456 §9 changes: ORIGINATOR_ID stands for the
/// BGP identifier, then the shorter CLUSTER_LIST wins. No IGP cost (e).
fn decide(mut c: Vec<Candidate<'_>>, local_as: u32) -> Option<Candidate<'_>> {
    fn keep_min<K: Ord>(c: &mut Vec<Candidate<'_>>, key: impl Fn(&Candidate<'_>) -> K) {
        if let Some(min) = c.iter().map(&key).min() {
            c.retain(|x| key(x) == min);
        }
    }
    // §9.1.1: degree of preference = LOCAL_PREF (iBGP) or the default.
    keep_min(&mut c, |x| {
        std::cmp::Reverse(x.attrs.local_pref.unwrap_or(export::DEFAULT_LOCAL_PREF))
    });
    keep_min(&mut c, |x| x.attrs.as_path.path_len()); // (a)
    keep_min(&mut c, |x| x.attrs.origin as u8); // (b)
    // (c): the neighbouring AS is the first of the AS_PATH (ours if empty).
    let neighbour = |x: &Candidate<'_>| x.attrs.as_path.first_as().unwrap_or(local_as);
    let med = |x: &Candidate<'_>| x.attrs.med.unwrap_or(0);
    let all = c.clone();
    c.retain(|x| {
        !all.iter()
            .any(|y| neighbour(y) == neighbour(x) && med(y) < med(x))
    });
    // (d): eBGP-learnt over iBGP-learnt.
    keep_min(&mut c, |x| x.meta.ibgp);
    // (f) with RFC 4456 §9: ORIGINATOR_ID if present, else the peer's id.
    keep_min(&mut c, |x| {
        u32::from(x.attrs.originator_id.unwrap_or(x.meta.router_id))
    });
    keep_min(&mut c, |x| x.attrs.cluster_list.len()); // RFC 4456 §9
    keep_min(&mut c, |x| x.meta.address); // (g)
    c.into_iter().next()
}

/// Prefixes are keyed by their network address (host bits cleared).
pub fn normalize(p: IpNetwork) -> IpNetwork {
    IpNetwork::new(p.network(), p.prefix()).unwrap_or(p)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_rr;
