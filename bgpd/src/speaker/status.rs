//! The actor's answers to control requests (`manxctl node status` data).

use super::Actor;
use crate::control::{PeerStatus, Request, Response, RouteStatus, rfc3339};

impl Actor {
    pub(super) fn control(&mut self, req: Request) -> Response {
        let ok = Response {
            ok: true,
            ..Default::default()
        };
        match req {
            Request::Peers => Response {
                peers: Some(self.peer_status()),
                ..ok
            },
            Request::Routes => Response {
                routes: Some(self.route_status()),
                ..ok
            },
            Request::Announce { prefix } => {
                let changed = self.rib.add_local(prefix);
                self.propagate(changed);
                ok
            }
            Request::Withdraw { prefix } => {
                let changed = self.rib.remove_local(prefix);
                self.propagate(changed);
                ok
            }
        }
    }

    fn peer_status(&self) -> Vec<PeerStatus> {
        self.peers
            .values()
            .map(|p| {
                let stats = self.rib.adj_in_stats(p.cfg.address);
                PeerStatus {
                    address: p.cfg.address,
                    peer_type: p.cfg.peer_type,
                    as_number: p.cfg.as_number,
                    state: p.primary.fsm.state(),
                    since: rfc3339(p.since_unix()),
                    since_unix: p.since_unix(),
                    last_error: p.last_error.clone(),
                    prefixes_received: stats.received,
                    prefixes_accepted: stats.accepted,
                    prefixes_advertised: p.advertised,
                    router_id: p.router_id,
                    hold_time: p.established.as_ref().map(|e| e.hold_time),
                    bfd: self.bfd_state.get(&p.cfg.address).copied(),
                }
            })
            .collect()
    }

    fn route_status(&self) -> Vec<RouteStatus> {
        self.rib
            .loc_rib()
            .map(|(prefix, best)| RouteStatus {
                prefix,
                source: best.source(),
                next_hop: best.attrs.next_hop,
                as_path: best
                    .attrs
                    .as_path
                    .segments
                    .iter()
                    .flat_map(|s| s.asns().iter().copied())
                    .collect(),
                local_pref: best.attrs.local_pref,
                changes: self.rib.change_count(&prefix),
            })
            .collect()
    }
}
