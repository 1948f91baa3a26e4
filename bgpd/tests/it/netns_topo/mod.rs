//! Multi-node network-namespace topologies for bgpd tests.
//!
//! One "switch" namespace holds a Linux bridge; every node namespace gets a
//! veth into it (`eth0`, 198.19.0.(10+i)/24). Namespaces are named
//! `mxtp-<pid>-<n>`; 198.19.0.0/24 belongs to these tests only (198.18.0.0/24
//! is used by the two-namespace `support` lab, 192.0.2.0/24 and fd00::/64
//! by the host). Every namespace and daemon is a testkit Drop guard: a
//! panic still kills the processes and deletes the namespaces.

pub mod bird;
pub mod labs;
pub mod manx;
pub mod observer;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use testkit::netns::veth;
use testkit::{Netns, Prereqs};

/// bird 2.x.
pub const BIRD2: &str = "/usr/sbin/bird";
/// Its client.
pub const BIRDC2: &str = "/usr/sbin/birdc";
/// The AS every node of these topologies is in (iBGP).
pub const AS: u32 = 64512;

/// What every topology needs: root (namespaces) and `ip`.
pub fn needs() -> Prereqs {
    Prereqs::new().root().command("ip")
}

/// [`needs`] and BIRD 2.
pub fn needs_bird2() -> Prereqs {
    needs().file(BIRD2, "bird2").file(BIRDC2, "bird2")
}

/// Namespace names of these topologies: `mxtp-<pid>-<n>`.
const NS_PREFIX: &str = "mxtp";

/// Node `i`'s address on the switch: 198.19.0.(10+i).
pub fn node_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 0, 10 + i)
}

/// Node `i`'s pod block: 10.66.i.0/26.
pub fn node_block(i: u8) -> String {
    format!("10.66.{i}.0/26")
}

/// A switch namespace with bridge `br0` and node namespaces plugged into
/// it, plus a scratch directory for configs, sockets and logs.
#[derive(Debug)]
pub struct Topo {
    /// Node namespaces by node index (index 0 may be unused).
    nodes: Vec<Option<Netns>>,
    /// The bridge's namespace; dropped after the nodes.
    switch: Netns,
    /// Configs, control sockets, logs.
    pub dir: tempfile::TempDir,
}

impl Topo {
    /// A switch and one namespace per index in `indices`, node `i` at
    /// [`node_addr`]`(i)`.
    pub fn new(indices: &[u8]) -> Topo {
        let switch = Netns::new(NS_PREFIX);
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        let max = indices.iter().copied().max().unwrap_or(0);
        let mut nodes: Vec<Option<Netns>> = (0..=max).map(|_| None).collect();
        for &i in indices {
            let ns = Netns::new(NS_PREFIX);
            let port = format!("p{i}");
            veth(&switch, &port, &ns, "eth0");
            switch.ip(&["link", "set", &port, "master", "br0"]);
            ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", node_addr(i)),
                "dev",
                "eth0",
            ]);
            nodes[usize::from(i)] = Some(ns);
        }
        let dir = tempfile::Builder::new()
            .prefix("mxtp-")
            .tempdir()
            .expect("scratch directory");
        Topo { nodes, switch, dir }
    }

    /// Node `i`'s namespace.
    pub fn ns(&self, i: u8) -> &Netns {
        self.nodes
            .get(usize::from(i))
            .and_then(Option::as_ref)
            .unwrap_or_else(|| panic!("node {i} is not in this topology"))
    }

    /// A file in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every namespace of the topology (the switch last).
    pub fn namespaces(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flatten()
            .chain(std::iter::once(&self.switch))
            .map(|n| n.name().to_string())
            .collect()
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // Nodes first (their veths vanish with them), then the switch.
        self.nodes.clear();
    }
}
