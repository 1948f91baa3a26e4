//! Ready-made topologies for `heavy_netns_topologies.rs`: a manx full
//! mesh, a manx reflector with clients and an observer (graceful-restart
//! tests), BIRD 2 as reflector for manx clients; plus what each node is
//! expected to learn.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::bird::{self, BirdNode};
use super::manx::{ManxNode, Neighbor, NodeSpec};
use super::observer::Observer;
use testkit::eventually;

use super::{AS, Topo, node_addr, node_block};

/// How long a topology may take to converge (sessions retry every second).
pub const CONVERGE: Duration = Duration::from_secs(40);

/// What node `me` should have learnt: every block of `origins` but its
/// own, with the originator's address as next hop, from peer `via` (or
/// from the originator itself when `via` is `None`), sorted like
/// [`ManxNode::learnt`].
pub fn expected(me: u8, origins: &[u8], via: Option<u8>) -> Vec<(String, Option<IpAddr>, IpAddr)> {
    let mut v: Vec<_> = origins
        .iter()
        .filter(|&&j| j != me)
        .map(|&j| {
            let nh = IpAddr::V4(node_addr(j));
            let from = via.map_or(nh, |r| IpAddr::V4(node_addr(r)));
            (node_block(j), Some(nh), from)
        })
        .collect();
    v.sort();
    v
}

/// An IPv4 address as `IpAddr` (what the control socket reports).
pub fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

/// A manx node originating its block.
pub fn block_node(i: u8) -> NodeSpec {
    let mut s = NodeSpec::new(i);
    s.networks.push(node_block(i));
    s
}

/// A full iBGP mesh of manx nodes `ids`, each originating its block;
/// `extra` may add to a node's spec before it starts.
pub fn start_mesh(topo: &Topo, ids: &[u8], extra: impl Fn(&mut NodeSpec)) -> Vec<ManxNode> {
    ids.iter()
        .map(|&i| {
            let mut s = block_node(i);
            for &j in ids.iter().filter(|&&j| j != i) {
                s.neighbors.push(Neighbor::ibgp(node_addr(i), node_addr(j)));
            }
            extra(&mut s);
            ManxNode::start(topo, s)
        })
        .collect()
}

/// Every mesh node is up with every other block, learnt from its originator.
pub fn mesh_converged(nodes: &[ManxNode], ids: &[u8]) -> bool {
    nodes
        .iter()
        .all(|n| n.all_established() && n.learnt() == expected(n.spec.index, ids, None))
}

/// BIRD 2 (node 0) as the route reflector of four manx clients (1..4),
/// converged. Field order is drop order: daemons before the namespaces.
pub struct BirdRrLab {
    pub clients: Vec<ManxNode>,
    pub bird: BirdNode,
    pub topo: Topo,
}

pub const BIRD_RR: u8 = 0;
pub const BIRD_RR_CLIENTS: [u8; 4] = [1, 2, 3, 4];

impl BirdRrLab {
    pub fn start() -> BirdRrLab {
        let all: Vec<u8> = std::iter::once(BIRD_RR).chain(BIRD_RR_CLIENTS).collect();
        let topo = Topo::new(&all);
        let bird = BirdNode::start(
            &topo,
            BIRD_RR,
            &bird::reflector_conf(BIRD_RR, "244.0.0.9".parse().unwrap(), &BIRD_RR_CLIENTS),
        );
        let clients: Vec<ManxNode> = BIRD_RR_CLIENTS
            .iter()
            .map(|&c| {
                let mut s = block_node(c);
                s.neighbors
                    .push(Neighbor::ibgp(node_addr(c), node_addr(BIRD_RR)));
                ManxNode::start(&topo, s)
            })
            .collect();
        let lab = BirdRrLab {
            clients,
            bird,
            topo,
        };
        assert!(
            eventually(CONVERGE, || lab.converged()),
            "manx clients of BIRD did not converge:\n{}",
            lab.describe()
        );
        lab
    }

    pub fn converged(&self) -> bool {
        self.clients.iter().all(|n| {
            n.all_established()
                && n.learnt() == expected(n.spec.index, &BIRD_RR_CLIENTS, Some(BIRD_RR))
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{}\n---- birdc show protocols ----\n{}\n---- birdc show route ----\n{}",
            self.clients
                .iter()
                .map(ManxNode::describe)
                .collect::<Vec<_>>()
                .join("\n"),
            self.bird.birdc(&["show", "protocols"]),
            self.bird.birdc(&["show", "route"])
        )
    }

    /// Every client's learnt routes with their change counters.
    pub fn counters(&self) -> Vec<(u8, String, u64)> {
        route_counters(&self.clients)
    }
}

/// Learnt routes of `nodes` with their change counters.
pub fn route_counters(nodes: &[ManxNode]) -> Vec<(u8, String, u64)> {
    nodes
        .iter()
        .flat_map(|n| {
            n.routes()
                .into_iter()
                .filter(|r| r.source != bgpd::rib::RouteSource::Local)
                .map(|r| (n.spec.index, r.prefix.to_string(), r.changes))
        })
        .collect()
}

/// A manx reflector (node 1, cluster 244.0.0.1), four manx clients (2..5)
/// and an observer (node 9, our codec) as one more RR client that records
/// every UPDATE the reflector sends it. Client 2 advertises graceful
/// restart with `restart_time`.
pub struct GrLab {
    pub clients: Vec<ManxNode>,
    pub rr: ManxNode,
    pub observer: Observer,
    pub topo: Topo,
}

pub const GR_RR: u8 = 1;
pub const GR_CLIENTS: [u8; 4] = [2, 3, 4, 5];
pub const GR_OBSERVER: u8 = 9;
/// The client that is killed.
pub const VICTIM: u8 = 2;

impl GrLab {
    pub fn start(victim_restart_time: u16) -> GrLab {
        let all: Vec<u8> = std::iter::once(GR_RR)
            .chain(GR_CLIENTS)
            .chain([GR_OBSERVER])
            .collect();
        let topo = Topo::new(&all);
        let mut s = NodeSpec::new(GR_RR);
        s.cluster_id = Some("244.0.0.1".parse().unwrap());
        for c in GR_CLIENTS.iter().chain(&[GR_OBSERVER]) {
            s.neighbors
                .push(Neighbor::client(node_addr(GR_RR), node_addr(*c)));
        }
        let rr = ManxNode::start(&topo, s);
        let clients: Vec<ManxNode> = GR_CLIENTS
            .iter()
            .map(|&c| {
                let mut s = block_node(c);
                if c == VICTIM {
                    s.restart_time = victim_restart_time;
                }
                s.neighbors
                    .push(Neighbor::ibgp(node_addr(c), node_addr(GR_RR)));
                ManxNode::start(&topo, s)
            })
            .collect();
        let observer = Observer::start(
            topo.ns(GR_OBSERVER),
            node_addr(GR_OBSERVER),
            node_addr(GR_RR),
            AS,
        );
        let lab = GrLab {
            clients,
            rr,
            observer,
            topo,
        };
        let converged = eventually(CONVERGE, || {
            lab.rr.all_established()
                && lab.rr.learnt() == expected(GR_RR, &GR_CLIENTS, None)
                && lab.clients.iter().all(|n| {
                    n.all_established()
                        && n.learnt() == expected(n.spec.index, &GR_CLIENTS, Some(GR_RR))
                })
                && GR_CLIENTS
                    .iter()
                    .all(|&c| lab.observer.holds(&node_block(c)))
        });
        assert!(converged, "GR lab did not converge:\n{}", lab.describe());
        lab
    }

    pub fn describe(&self) -> String {
        let mut s = self.rr.describe();
        for n in &self.clients {
            s.push('\n');
            s.push_str(&n.describe());
        }
        s.push_str(&format!("\nobserver: {:?}", self.observer.events()));
        s
    }

    pub fn victim(&mut self) -> &mut ManxNode {
        &mut self.clients[0]
    }

    /// The victim's block's change counter on the reflector and the
    /// surviving clients (`None` where the route is missing).
    pub fn victim_route_changes(&self) -> Vec<(u8, Option<u64>)> {
        let block = node_block(VICTIM);
        std::iter::once(&self.rr)
            .chain(self.clients.iter().skip(1))
            .map(|n| (n.spec.index, n.route(&block).map(|r| r.changes)))
            .collect()
    }
}

/// Every client's learnt routes with their change counters.
pub fn client_counters(lab: &GrLab) -> Vec<(u8, String, u64)> {
    route_counters(&lab.clients)
}
