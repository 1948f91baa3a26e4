//! The initial table of a session (and a ROUTE-REFRESH answer), encoded
//! once per update group and shared.
//!
//! Members of an update group are told the same about every path except
//! their own (split horizon, RFC 4271 §9.1.3 / RFC 4456 §6), so the whole
//! table is encoded once, as one part per attribute set in the order
//! [`build_updates`] gives, and each member gets the parts minus those that
//! carry only its own paths. On a route reflector where a thousand clients
//! come up together this replaces a thousand table encodings (and a
//! thousand queued copies) with one, shared by reference counting. The
//! cache is valid while the Loc-RIB is unchanged ([`crate::rib::Rib::generation`]).
//!
//! The bytes a member receives are exactly those of encoding its own
//! filtered table: a part whose paths come from several peers, one of them
//! the member, is not shared with that member, which gets its own encoding.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use ipnetwork::IpNetwork;

use super::Actor;
use super::routing::{caps_key, encode_all};
use crate::packet::{SessionCaps, Update};
use crate::rib::export::{Change, ExportTarget, Exporter, build_updates};
use crate::rib::{PathAttrs, RouteSource};

/// Adj-RIB-Out entries (`None`: withdraw), as [`build_updates`] takes them.
type Diff = Vec<Change>;

/// One update group's encoded table.
#[derive(Debug)]
pub(super) struct SharedTable {
    /// The Loc-RIB generation it was built from.
    generation: u64,
    /// The group's target (its `peer` is no member).
    target: ExportTarget,
    caps: (bool, bool, Vec<crate::packet::AfiSafi>),
    /// UPDATEs, one part per attribute set, then End-of-RIB.
    parts: Arc<[Bytes]>,
    /// Prefixes carried by each part.
    counts: Vec<usize>,
    /// The parts whose paths all come from one peer, by peer.
    owned: HashMap<IpAddr, Vec<usize>>,
    /// Peers whose paths share a part with other sources'.
    mixed: HashSet<IpAddr>,
}

impl SharedTable {
    fn matches(&self, generation: u64, target: &ExportTarget, caps: &SessionCaps) -> bool {
        self.generation == generation
            && self.target.group_key() == target.group_key()
            && self.caps == caps_key(caps)
    }

    /// Encode the table of `target`'s group from a Loc-RIB.
    fn build<'a>(
        generation: u64,
        target: &ExportTarget,
        caps: &SessionCaps,
        loc_rib: impl Iterator<Item = (IpNetwork, &'a crate::rib::BestPath)>,
    ) -> SharedTable {
        let mut anyone = target.clone();
        anyone.peer = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
        // Attribute sets in first-appearance order (as build_updates
        // groups them), with the sources of their paths (`None`: local).
        let mut index: HashMap<Arc<PathAttrs>, usize> = HashMap::new();
        let mut groups: Vec<(Diff, Vec<Option<IpAddr>>)> = Vec::new();
        let mut exporter = Exporter::new(&anyone);
        for (prefix, best) in loc_rib {
            let Some(attrs) = exporter.export(&prefix, Some(best)) else {
                continue;
            };
            let source = match best.source() {
                RouteSource::Peer(p) => Some(p),
                RouteSource::Local => None,
            };
            let i = *index.entry(attrs.clone()).or_insert_with(|| {
                groups.push((Vec::new(), Vec::new()));
                groups.len() - 1
            });
            let (diff, sources) = &mut groups[i];
            if sources.last() != Some(&source) && !sources.contains(&source) {
                sources.push(source);
            }
            diff.push((prefix, Some(attrs)));
        }
        let mut parts = Vec::with_capacity(groups.len() + 1);
        let mut counts = Vec::with_capacity(groups.len() + 1);
        let mut owned: HashMap<IpAddr, Vec<usize>> = HashMap::new();
        let mut mixed = HashSet::new();
        for (i, (diff, sources)) in groups.into_iter().enumerate() {
            match sources.as_slice() {
                [Some(only)] => owned.entry(*only).or_default().push(i),
                _ => mixed.extend(sources.iter().flatten().copied()),
            }
            counts.push(diff.len());
            parts.push(encode_all(build_updates(diff), caps));
        }
        let eor: Vec<Update> = target
            .families
            .iter()
            .map(|f| Update::end_of_rib(*f))
            .collect();
        parts.push(encode_all(eor, caps));
        counts.push(0);
        SharedTable {
            generation,
            target: anyone,
            caps: caps_key(caps),
            parts: parts.into(),
            counts,
            owned,
            mixed,
        }
    }
}

impl Actor {
    /// Send a new (or refreshed) session the whole table, then End-of-RIB
    /// for each negotiated family (RFC 4724 §2).
    pub(super) fn advertise_all(&mut self, addr: IpAddr) {
        let Some(peer) = self.peers.get(&addr) else {
            return;
        };
        let (Some(target), Some(caps)) = (
            self.target(peer),
            peer.established.as_ref().map(|e| e.caps.clone()),
        ) else {
            return;
        };
        // Changes not exported yet go to the others first; this peer's
        // table is the current Loc-RIB.
        self.propagate_except(Vec::new(), Some(addr));
        let generation = self.rib.generation();
        self.tables.retain(|t| t.generation == generation);
        let i = match self
            .tables
            .iter()
            .position(|t| t.matches(generation, &target, &caps))
        {
            Some(i) => i,
            None => {
                let table = SharedTable::build(generation, &target, &caps, self.rib.loc_rib());
                self.tables.push(table);
                self.tables.len() - 1
            }
        };
        let table = &self.tables[i];
        let own_parts_mixed = table.mixed.contains(&addr);
        let peer = self.peers.get_mut(&addr).expect("peer exists");
        let conn = peer.primary.conn.as_ref().map(|(_, c)| c);
        if own_parts_mixed || !conn.is_some_and(|c| c.accepts_table()) {
            // Its paths share parts with others', or it is behind: its own
            // table, as bytes if it keeps up, else into its pending diff.
            let mut diffs = Vec::new();
            let mut exporter = Exporter::new(&target);
            for (prefix, best) in self.rib.loc_rib() {
                if let Some(a) = exporter.export(&prefix, Some(best)) {
                    diffs.push((prefix, Some(a)));
                }
            }
            peer.advertised = diffs.len();
            match conn {
                Some(c) if c.accepts_bytes() => {
                    let mut updates = build_updates(diffs);
                    updates.extend(target.families.iter().map(|f| Update::end_of_rib(*f)));
                    c.send_raw(encode_all(updates, &caps));
                }
                Some(c) => {
                    c.send_routes(&diffs);
                    c.send_end_of_rib(target.families.iter().copied());
                }
                None => {}
            }
        } else {
            let skip = table.owned.get(&addr).cloned().unwrap_or_default();
            let total: usize = table.counts.iter().sum();
            let own: usize = skip.iter().map(|i| table.counts[*i]).sum();
            peer.advertised = total - own;
            if let Some(c) = conn {
                c.send_parts(table.parts.clone(), skip);
            }
        }
        tracing::debug!(peer = %addr, prefixes = peer.advertised, "initial advertisement");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;

    use super::*;
    use crate::config::NextHopMode;
    use crate::packet::{AfiSafi, AsPath, Nlri, Origin, PathAttribute};
    use crate::rib::export::export;
    use crate::rib::{PeerMeta, Rib};

    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn addr(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn announce(rib: &mut Rib, from: u8, prefixes: &[&str], next_hop: Ipv4Addr) {
        let u = Update {
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::default()),
                PathAttribute::NextHop(next_hop),
                PathAttribute::LocalPref(100),
            ],
            nlri: prefixes
                .iter()
                .map(|p| Nlri::new(p.parse().unwrap()))
                .collect(),
            ..Default::default()
        };
        rib.apply_update(addr(from), &u);
    }

    fn reflector_with_clients(clients: &[u8]) -> Rib {
        let mut rib = Rib::new(64512, ME);
        rib.set_cluster_id(Some(Ipv4Addr::new(1, 1, 1, 1)));
        for c in clients {
            let IpAddr::V4(id) = addr(*c) else {
                unreachable!()
            };
            rib.peer_up(PeerMeta {
                address: addr(*c),
                ibgp: true,
                router_id: id,
                rr_client: true,
                allow_local_as: 0,
            });
        }
        rib.add_local("10.99.0.0/26".parse().unwrap());
        rib
    }

    fn target(peer: IpAddr) -> ExportTarget {
        ExportTarget {
            peer,
            ibgp: true,
            local_as: 64512,
            local_addr: IpAddr::V4(ME),
            families: BTreeSet::from([AfiSafi::IPV4_UNICAST]),
            rr_client: true,
            cluster_id: Some(Ipv4Addr::new(1, 1, 1, 1)),
            next_hop_mode: NextHopMode::Auto,
            policy: None,
        }
    }

    /// What the member would get with its own encoding: its export of the
    /// whole Loc-RIB (RFC 4456 §6 reflection, split horizon), then EoR.
    fn own_encoding(rib: &Rib, member: IpAddr, caps: &SessionCaps) -> Vec<u8> {
        let t = target(member);
        let diff: Diff = rib
            .loc_rib()
            .filter_map(|(p, b)| export(&p, Some(b), &t).map(|a| (p, Some(Arc::new(a)))))
            .collect();
        let mut updates = build_updates(diff);
        updates.extend(t.families.iter().map(|f| Update::end_of_rib(*f)));
        encode_all(updates, caps).to_vec()
    }

    fn shared_for(table: &SharedTable, member: IpAddr) -> Vec<u8> {
        let skip = table.owned.get(&member).cloned().unwrap_or_default();
        table
            .parts
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i))
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }

    #[test]
    fn each_member_gets_the_bytes_of_its_own_table() {
        let mut rib = reflector_with_clients(&[10, 11, 12]);
        announce(
            &mut rib,
            10,
            &["10.0.0.0/26", "10.0.1.0/26"],
            Ipv4Addr::new(198, 18, 0, 10),
        );
        announce(
            &mut rib,
            11,
            &["10.0.0.64/26"],
            Ipv4Addr::new(198, 18, 0, 11),
        );
        announce(
            &mut rib,
            12,
            &["10.0.2.0/26"],
            Ipv4Addr::new(198, 18, 0, 12),
        );
        let caps = SessionCaps::default();
        let table = SharedTable::build(rib.generation(), &target(addr(10)), &caps, rib.loc_rib());
        assert!(table.mixed.is_empty());
        for m in [10, 11, 12, 13] {
            assert_eq!(
                shared_for(&table, addr(m)),
                own_encoding(&rib, addr(m), &caps),
                "member .{m}"
            );
        }
        // Split horizon: .10's own prefixes are in its skipped part only.
        assert_eq!(table.owned[&addr(10)].len(), 1);
        assert_eq!(table.counts.iter().sum::<usize>(), 5);
        assert!(table.matches(rib.generation(), &target(addr(11)), &caps));
        announce(
            &mut rib,
            12,
            &["10.0.3.0/26"],
            Ipv4Addr::new(198, 18, 0, 12),
        );
        assert!(
            !table.matches(rib.generation(), &target(addr(11)), &caps),
            "stale after a Loc-RIB change"
        );
    }

    #[test]
    fn parts_with_several_sources_are_not_shared_with_them() {
        // Two non-reflected sources whose exports are identical make one
        // attribute set: a member that is one of them must not get the part.
        let mut rib = Rib::new(64512, ME);
        for c in [10, 11] {
            let IpAddr::V4(id) = addr(c) else {
                unreachable!()
            };
            rib.peer_up(PeerMeta {
                address: addr(c),
                ibgp: false,
                router_id: id,
                rr_client: false,
                allow_local_as: 0,
            });
        }
        let nh = Ipv4Addr::new(198, 18, 0, 99);
        announce(&mut rib, 10, &["10.0.0.0/26"], nh);
        announce(&mut rib, 11, &["10.0.1.0/26"], nh);
        let mut t = target(addr(10));
        t.ibgp = false;
        let caps = SessionCaps::default();
        let table = SharedTable::build(rib.generation(), &t, &caps, rib.loc_rib());
        assert_eq!(table.mixed, HashSet::from([addr(10), addr(11)]));
        assert!(table.owned.is_empty());
    }
}
