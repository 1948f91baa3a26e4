//! The actor's routing duties: push Loc-RIB changes to the kernel channel
//! and to every established peer, as UPDATEs.
//!
//! No per-peer Adj-RIB-Out is stored: export is a pure function of a best
//! path and the peer's export policy ([`export`]), so what a peer was told
//! about a prefix is the export of the prefix's *previous* best path
//! ([`crate::rib::Rib::take_previous`]). That keeps memory at O(Loc-RIB)
//! instead of O(peers × routes) on a route reflector.
//!
//! A peer that keeps up is queued encoded bytes; one that fell behind (its
//! connection's output over [`crate::session::BYTES_CAP`]) is queued the
//! changes themselves, which collapse per prefix in its connection's
//! pending diff (see `session/conn/outbox.rs`).
//!
//! Update groups: peers with the same export policy and the same encoding
//! capabilities share one encoding — each UPDATE batch is encoded once per
//! group and the same bytes go to every member whose diff is identical
//! (members differ only for paths learnt from a member: split horizon).

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;
use ipnetwork::IpNetwork;

use super::Actor;
use super::peer::Peer;
use crate::packet::{Message, SessionCaps, Update, encode_message};
use crate::rib::PrefixMap;
use crate::rib::export::{Change, ExportTarget, Exporter, build_updates};

type Diff = Vec<Change>;

impl Actor {
    pub(super) fn target(&self, peer: &Peer) -> Option<ExportTarget> {
        let est = peer.established.as_ref()?;
        if est.initial_pending {
            return None;
        }
        Some(ExportTarget {
            peer: peer.cfg.address,
            ibgp: peer.ibgp(self.cfg.as_number),
            local_as: self.cfg.as_number,
            local_addr: est.local_addr,
            families: est.families.clone(),
            rr_client: peer.cfg.rr_client,
            cluster_id: self.cfg.cluster_id,
            next_hop_mode: peer.cfg.next_hop_mode,
            policy: peer.policy.clone(),
        })
    }

    /// Loc-RIB best paths changed: tell the kernel channel and every
    /// established peer. `changed` is what the RIB call returned; the RIB's
    /// own record of previous best paths drives export.
    pub(super) fn propagate(&mut self, changed: Vec<IpNetwork>) {
        self.propagate_except(changed, None);
    }

    /// [`Actor::propagate`] to every peer but `except` (which is about to
    /// get its whole table, built from the current Loc-RIB).
    pub(super) fn propagate_except(&mut self, changed: Vec<IpNetwork>, except: Option<IpAddr>) {
        let previous = self.rib.take_previous();
        if changed.is_empty() && previous.is_empty() {
            return;
        }
        if let Some(tx) = &self.route_tx {
            for (p, _) in previous.iter() {
                if let Some(u) = self.rib.route_update(p) {
                    tx.send(u);
                }
            }
        }
        // Update groups: policy + encoding capabilities.
        let mut groups: HashMap<_, Vec<(IpAddr, ExportTarget)>> = HashMap::new();
        for peer in self.peers.values() {
            if except == Some(peer.cfg.address) {
                continue;
            }
            let (Some(t), Some(est)) = (self.target(peer), peer.established.as_ref()) else {
                continue;
            };
            groups
                .entry((t.group_key(), caps_key(&est.caps)))
                .or_default()
                .push((peer.cfg.address, t));
        }
        for members in groups.into_values() {
            // Within a group export differs only for paths learnt from the
            // member itself (split horizon): compute the diff and its bytes
            // once, for a target that is none of them, and redo the few
            // members whose own paths changed.
            let mut anyone = members[0].1.clone();
            anyone.peer = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
            let (shared_diff, shared_delta) = self.diff_for(&previous, &anyone);
            let mut shared_bytes: Option<Bytes> = None;
            for (addr, target) in members {
                let own = |b: Option<&crate::rib::BestPath>| {
                    b.is_some_and(|b| b.source() == crate::rib::RouteSource::Peer(addr))
                };
                let involved = previous
                    .iter()
                    .any(|(p, old)| own(old.as_ref()) || own(self.rib.best(&p)));
                let Some(caps) = self
                    .peers
                    .get(&addr)
                    .and_then(|p| p.established.as_ref())
                    .map(|e| e.caps.clone())
                else {
                    continue;
                };
                let own_diff;
                let (diff, delta) = if involved {
                    own_diff = self.diff_for(&previous, &target);
                    (&own_diff.0, own_diff.1)
                } else {
                    (&shared_diff, shared_delta)
                };
                if diff.is_empty() {
                    continue;
                }
                let Some(peer) = self.peers.get_mut(&addr) else {
                    continue;
                };
                peer.advertised = peer.advertised.saturating_add_signed(delta);
                let Some((_, conn)) = &peer.primary.conn else {
                    continue;
                };
                if conn.accepts_bytes() {
                    let encode = || encode_all(build_updates(diff.iter().cloned()), &caps);
                    let bytes = if involved {
                        encode()
                    } else {
                        shared_bytes.get_or_insert_with(encode).clone()
                    };
                    conn.send_raw(bytes);
                } else {
                    // It fell behind: the changes join its pending diff
                    // (one entry per prefix, whatever the churn).
                    conn.send_routes(diff);
                }
            }
        }
    }

    /// A peer's filters changed (its session stays up). Export: what it
    /// was told under the old filters is diffed against the new ones over
    /// the whole Loc-RIB, and only the difference is sent (announce or
    /// withdraw). Import: the RIB applies the new filters to the paths the
    /// peer sent, all of which its Adj-RIB-In holds, so no ROUTE-REFRESH
    /// is needed; the best paths that change go out as usual.
    pub(super) fn set_filters(&mut self, addr: IpAddr, filters: Vec<crate::policy::Filter>) {
        // Pending Loc-RIB changes go out under the old export filters
        // first, so the diff below starts from what the peer holds.
        self.propagate(Vec::new());
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let names: Vec<String> = filters.iter().map(|f| f.name.clone()).collect();
        tracing::info!(peer = %addr, filters = ?names, "filters changed: re-evaluating routes, session kept");
        peer.cfg.filters = filters;
        let policy = peer.cfg.policy();
        // `target` reads `peer.policy`, still the old one here.
        let old_target = self.peers.get(&addr).and_then(|p| self.target(p));
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.policy = policy.clone();
        }
        let new_target = self.peers.get(&addr).and_then(|p| self.target(p));
        if let (Some(old), Some(new)) = (old_target, new_target) {
            let mut before = Exporter::new(&old);
            let mut after = Exporter::new(&new);
            let mut diff: Diff = Vec::new();
            let mut delta: isize = 0;
            for (prefix, best) in self.rib.loc_rib() {
                let b = before.export(&prefix, Some(best));
                let a = after.export(&prefix, Some(best));
                if b != a {
                    delta += isize::from(a.is_some()) - isize::from(b.is_some());
                    diff.push((prefix, a));
                }
            }
            self.send_diff(addr, &diff, delta);
        }
        let changed = self.rib.set_import_policy(addr, policy);
        self.propagate(changed);
    }

    /// Send one peer its Adj-RIB-Out changes.
    fn send_diff(&mut self, addr: IpAddr, diff: &Diff, delta: isize) {
        if diff.is_empty() {
            return;
        }
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        peer.advertised = peer.advertised.saturating_add_signed(delta);
        let (Some((_, conn)), Some(est)) = (&peer.primary.conn, peer.established.as_ref()) else {
            return;
        };
        if conn.accepts_bytes() {
            conn.send_raw(encode_all(build_updates(diff.iter().cloned()), &est.caps));
        } else {
            conn.send_routes(diff);
        }
    }

    /// What `target` must be told about the changed prefixes, and how its
    /// advertised count moves.
    fn diff_for(
        &self,
        previous: &PrefixMap<Option<crate::rib::BestPath>>,
        target: &ExportTarget,
    ) -> (Diff, isize) {
        let mut diff: Diff = Vec::new();
        let mut delta: isize = 0;
        let mut exporter = Exporter::new(target);
        for (prefix, old) in previous.iter() {
            let before = exporter.export(&prefix, old.as_ref());
            let after = exporter.export(&prefix, self.rib.best(&prefix));
            if before != after {
                delta += isize::from(after.is_some()) - isize::from(before.is_some());
                diff.push((prefix, after));
            }
        }
        (diff, delta)
    }
}

/// The parts of [`SessionCaps`] that change how an UPDATE is encoded.
pub(super) fn caps_key(c: &SessionCaps) -> (bool, bool, Vec<crate::packet::AfiSafi>) {
    (
        c.four_octet_as,
        c.extended_message,
        c.add_path_tx.iter().copied().collect(),
    )
}

/// Encode UPDATEs back to back (each split to fit the session's maximum
/// message length if needed).
pub(super) fn encode_all(updates: Vec<Update>, caps: &SessionCaps) -> Bytes {
    let mut out = Vec::new();
    for u in updates {
        let parts = match u.split_to_fit(caps) {
            Ok(parts) => parts,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode an UPDATE; dropped");
                continue;
            }
        };
        for part in parts {
            if let Err(e) = encode_message(&Message::Update(part), caps, &mut out) {
                tracing::warn!(error = %e, "cannot encode an UPDATE; dropped");
            }
        }
    }
    Bytes::from(out)
}
