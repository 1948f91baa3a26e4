//! The actor's routing duties: push Loc-RIB changes to the kernel channel
//! and to every established peer's Adj-RIB-Out, as UPDATEs.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::Actor;
use crate::packet::{Message, Update};
use crate::rib::PathAttrs;
use crate::rib::export::{ExportTarget, build_updates, export};

use super::peer::Peer;

impl Actor {
    fn ibgp_peers(&self) -> HashSet<IpAddr> {
        self.peers
            .values()
            .filter(|p| p.ibgp(self.cfg.as_number))
            .map(|p| p.cfg.address)
            .collect()
    }

    fn target(&self, peer: &Peer) -> Option<ExportTarget> {
        let est = peer.established.as_ref()?;
        Some(ExportTarget {
            peer: peer.cfg.address,
            ibgp: peer.ibgp(self.cfg.as_number),
            local_as: self.cfg.as_number,
            local_addr: est.local_addr,
            families: est.families.clone(),
        })
    }

    /// Loc-RIB best paths changed for `changed`: tell the kernel channel and
    /// every established peer.
    pub(super) fn propagate(&mut self, changed: Vec<IpNetwork>) {
        if changed.is_empty() {
            return;
        }
        if let Some(tx) = &self.route_tx {
            for p in &changed {
                if let Some(u) = self.rib.route_update(*p) {
                    let _ = tx.send(u);
                }
            }
        }
        let ibgp = self.ibgp_peers();
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            let Some(target) = self.peers.get(&addr).and_then(|p| self.target(p)) else {
                continue;
            };
            let mut diffs: Vec<(IpNetwork, Option<PathAttrs>)> = Vec::new();
            let peer = self.peers.get_mut(&addr).expect("peer exists");
            for prefix in &changed {
                let new = export(prefix, self.rib.best(prefix), &target, |a| {
                    ibgp.contains(&a)
                });
                if peer.adj_out.get(prefix) != new.as_ref() {
                    match &new {
                        Some(a) => peer.adj_out.insert(*prefix, a.clone()),
                        None => peer.adj_out.remove(prefix),
                    };
                    diffs.push((*prefix, new));
                }
            }
            send_updates(peer, build_updates(diffs));
        }
    }

    /// Send a new (or refreshed) session the whole table, then End-of-RIB
    /// for each negotiated family (RFC 4724 §2).
    pub(super) fn advertise_all(&mut self, addr: IpAddr) {
        let ibgp = self.ibgp_peers();
        let Some(target) = self.peers.get(&addr).and_then(|p| self.target(p)) else {
            return;
        };
        let peer = self.peers.get_mut(&addr).expect("peer exists");
        let mut diffs = Vec::new();
        for (prefix, best) in self.rib.loc_rib() {
            if let Some(a) = export(prefix, Some(best), &target, |a| ibgp.contains(&a)) {
                peer.adj_out.insert(*prefix, a.clone());
                diffs.push((*prefix, Some(a)));
            }
        }
        let mut updates = build_updates(diffs);
        updates.extend(target.families.iter().map(|f| Update::end_of_rib(*f)));
        tracing::debug!(peer = %addr, prefixes = peer.adj_out.len(), "initial advertisement");
        send_updates(peer, updates);
    }
}

fn send_updates(peer: &Peer, updates: Vec<Update>) {
    let Some((_, conn)) = &peer.primary.conn else {
        return;
    };
    for u in updates {
        conn.send(Message::Update(u));
    }
}
