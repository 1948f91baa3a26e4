//! `manx-bgpd` nodes: YAML config generation (see `bgpd::config`), start,
//! `kill -9`, restart with the graceful-restart R bit, and RIB / peer
//! queries over the control socket.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use bgpd::control::{PeerStatus, RouteStatus};
use bgpd::fsm::State;
use bgpd::rib::RouteSource;

use testkit::{Daemon, eventually};

use super::{AS, Topo, node_addr};
use crate::support::MANX_LOG;

/// One neighbour of a manx node.
#[derive(Debug, Clone)]
pub struct Neighbor {
    /// Its address.
    pub address: Ipv4Addr,
    /// Its AS.
    pub asn: u32,
    /// Only accept its connection.
    pub passive: bool,
    /// A route-reflector client of ours.
    pub rr_client: bool,
}

impl Neighbor {
    /// An iBGP neighbour, passive when its address is higher than ours
    /// (Calico's rule against connection collisions: exactly one side dials).
    pub fn ibgp(own: Ipv4Addr, address: Ipv4Addr) -> Neighbor {
        Neighbor {
            address,
            asn: AS,
            passive: address > own,
            rr_client: false,
        }
    }

    /// An iBGP route-reflector client.
    pub fn client(own: Ipv4Addr, address: Ipv4Addr) -> Neighbor {
        Neighbor {
            rr_client: true,
            ..Neighbor::ibgp(own, address)
        }
    }
}

/// What a manx node runs with.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node index (address 198.19.0.(10+i)).
    pub index: u8,
    /// Neighbours.
    pub neighbors: Vec<Neighbor>,
    /// Originated prefixes.
    pub networks: Vec<String>,
    /// Route-reflector cluster id.
    pub cluster_id: Option<Ipv4Addr>,
    /// Graceful-restart time we advertise.
    pub restart_time: u16,
}

impl NodeSpec {
    /// A node with no neighbours and nothing to originate.
    pub fn new(index: u8) -> NodeSpec {
        NodeSpec {
            index,
            neighbors: Vec::new(),
            networks: Vec::new(),
            cluster_id: None,
            restart_time: 120,
        }
    }

    /// This node's address.
    pub fn addr(&self) -> Ipv4Addr {
        node_addr(self.index)
    }

    /// The `manx-bgpd --config` YAML.
    pub fn yaml(&self, control: &std::path::Path, restarting: bool) -> String {
        let me = self.addr();
        let mut y = format!(
            "asNumber: {AS}\nrouterId: {me}\nlisten: {{address: \"{me}\", port: 179}}\n\
             holdTime: 9\nconnectRetryTime: 1\ncontrolSocket: {}\nrestartTime: {}\nrestarting: {restarting}\n",
            control.display(),
            self.restart_time,
        );
        if let Some(c) = self.cluster_id {
            y.push_str(&format!("clusterId: {c}\n"));
        }
        y.push_str("peers:\n");
        for n in &self.neighbors {
            y.push_str(&format!(
                "  - address: {}\n    asNumber: {}\n    passive: {}\n    rrClient: {}\n    sourceAddress: {me}\n",
                n.address, n.asn, n.passive, n.rr_client
            ));
        }
        y.push_str("networks:\n");
        for n in &self.networks {
            y.push_str(&format!("  - \"{n}\"\n"));
        }
        y
    }
}

/// A running manx-bgpd node.
#[derive(Debug)]
pub struct ManxNode {
    /// Its configuration.
    pub spec: NodeSpec,
    /// The process.
    pub daemon: Daemon,
    /// Its control socket.
    pub control: PathBuf,
}

fn spawn(topo: &Topo, spec: &NodeSpec, restarting: bool) -> (Daemon, PathBuf) {
    let i = spec.index;
    let control = topo.path(&format!("manx{i}.sock"));
    let _ = std::fs::remove_file(&control);
    let config = topo.path(&format!(
        "manx{i}{}.yaml",
        if restarting { "-restart" } else { "" }
    ));
    std::fs::write(&config, spec.yaml(&control, restarting)).expect("write config");
    let daemon = Daemon::spawn(
        topo.ns(i),
        topo.dir.path(),
        &format!("manx{i}"),
        env!("CARGO_BIN_EXE_manx-bgpd"),
        &["--config", config.to_str().expect("utf-8 path")],
        &[MANX_LOG],
    );
    assert!(
        eventually(Duration::from_secs(10), || control.exists()),
        "manx-bgpd node {i}: control socket {} never appeared",
        control.display()
    );
    (daemon, control)
}

impl ManxNode {
    /// Start node `spec.index` in its namespace.
    pub fn start(topo: &Topo, spec: NodeSpec) -> ManxNode {
        let (daemon, control) = spawn(topo, &spec, false);
        ManxNode {
            spec,
            daemon,
            control,
        }
    }

    /// `kill -9` the speaker (no CEASE, sockets closed by the kernel).
    pub fn kill9(&mut self) {
        self.daemon.kill9();
    }

    /// Start again after [`ManxNode::kill9`], as the restarting speaker
    /// (`restarting: true`: R bit, deferred initial table, RFC 4724 §4.1).
    pub fn restart(&mut self, topo: &Topo) {
        assert!(!self.daemon.alive(), "restart of a running node");
        let (daemon, control) = spawn(topo, &self.spec, true);
        // The old Daemon holds no child any more; replacing it keeps one log.
        self.daemon = daemon;
        self.control = control;
    }

    /// This node's address.
    pub fn addr(&self) -> Ipv4Addr {
        self.spec.addr()
    }

    /// The peer table (empty if the daemon does not answer).
    pub fn peers(&self) -> Vec<PeerStatus> {
        bgpd::query_peers(&self.control).unwrap_or_default()
    }

    /// One peer's status.
    pub fn peer(&self, addr: Ipv4Addr) -> Option<PeerStatus> {
        self.peers()
            .into_iter()
            .find(|p| p.address == IpAddr::V4(addr))
    }

    /// Every configured peer is Established.
    pub fn all_established(&self) -> bool {
        let peers = self.peers();
        !peers.is_empty()
            && peers.len() == self.spec.neighbors.len()
            && peers.iter().all(|p| p.state == State::Established)
    }

    /// The Loc-RIB (empty if the daemon does not answer).
    pub fn routes(&self) -> Vec<RouteStatus> {
        bgpd::query_routes(&self.control).unwrap_or_default()
    }

    /// Learnt routes as `(prefix, next hop, from peer)`, sorted.
    pub fn learnt(&self) -> Vec<(String, Option<IpAddr>, IpAddr)> {
        let mut v: Vec<_> = self
            .routes()
            .into_iter()
            .filter_map(|r| match r.source {
                RouteSource::Peer(from) => Some((r.prefix.to_string(), r.next_hop, from)),
                RouteSource::Local => None,
            })
            .collect();
        v.sort();
        v
    }

    /// The Loc-RIB entry for `prefix`.
    pub fn route(&self, prefix: &str) -> Option<RouteStatus> {
        self.routes()
            .into_iter()
            .find(|r| r.prefix.to_string() == prefix)
    }

    /// A summary for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "node {} ({}): peers {:?}\n  learnt {:?}",
            self.spec.index,
            self.addr(),
            self.peers()
                .iter()
                .map(|p| (p.address, p.state, p.prefixes_received, p.prefixes_accepted))
                .collect::<Vec<_>>(),
            self.learnt()
        )
    }
}
