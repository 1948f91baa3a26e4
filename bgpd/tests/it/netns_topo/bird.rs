//! BIRD 2 nodes: a route reflector for manx clients, or a client that
//! originates its node block (static blackhole) toward a manx reflector.
//! No `kernel` protocol: BIRD never touches the namespace's routes.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use testkit::Daemon;

use super::{AS, BIRD2, BIRDC2, Topo, node_addr, node_block};

/// Timers short enough for tests (hold 9 s like the manx nodes).
const TIMERS: &str =
    "hold time 9; connect retry time 1; connect delay time 1; error wait time 1, 5;";

/// A route reflector at node `index` with `clients` (node indices) as RR
/// clients. Passive toward clients with a higher address (Calico's rule).
pub fn reflector_conf(index: u8, cluster_id: Ipv4Addr, clients: &[u8]) -> String {
    let me = node_addr(index);
    let mut c = format!(
        "router id {me};\nlog stderr all;\nprotocol device {{ scan time 2; }}\n\
         template bgp rrc {{\n  local {me} as {AS};\n  rr client;\n  rr cluster id {cluster_id};\n  graceful restart on;\n  \
         {TIMERS}\n  direct;\n  ipv4 {{ import all; export all; }};\n}}\n"
    );
    for &i in clients {
        let peer = node_addr(i);
        let passive = if peer > me { "passive on;" } else { "" };
        c.push_str(&format!(
            "protocol bgp client{i} from rrc {{ neighbor {peer} as {AS}; {passive} }}\n"
        ));
    }
    c
}

/// A client at node `index` of the reflector at node `rr`, originating
/// its node block.
pub fn client_conf(index: u8, rr: u8) -> String {
    let me = node_addr(index);
    let peer = node_addr(rr);
    let passive = if peer > me { "passive on;" } else { "" };
    format!(
        "router id {me};\nlog stderr all;\nprotocol device {{ scan time 2; }}\n\
         protocol static own {{ ipv4; route {block} blackhole; }}\n\
         protocol bgp upstream {{\n  local {me} as {AS};\n  neighbor {peer} as {AS};\n  {passive}\n  \
         {TIMERS}\n  direct;\n  ipv4 {{ import all; export where source = RTS_STATIC; }};\n}}\n",
        block = node_block(index),
    )
}

fn spawn(topo: &Topo, index: u8, recovery: bool) -> Daemon {
    let conf = topo.path(&format!("bird{index}.conf"));
    let sock = topo.path(&format!("bird{index}.ctl"));
    let mut args = vec![
        "-f",
        "-s",
        sock.to_str().expect("utf-8"),
        "-c",
        conf.to_str().expect("utf-8"),
    ];
    if recovery {
        args.push("-R");
    }
    Daemon::spawn(
        topo.ns(index),
        topo.dir.path(),
        &format!("bird{index}"),
        BIRD2,
        &args,
        &[],
    )
}

/// A running BIRD 2.
#[derive(Debug)]
pub struct BirdNode {
    /// Node index.
    pub index: u8,
    /// The process.
    pub daemon: Daemon,
    /// Its control socket (a path: reachable from any namespace).
    pub sock: PathBuf,
}

impl BirdNode {
    /// Start bird at node `index` with `conf`.
    pub fn start(topo: &Topo, index: u8, conf: &str) -> BirdNode {
        let path = topo.path(&format!("bird{index}.conf"));
        let sock = topo.path(&format!("bird{index}.ctl"));
        std::fs::write(&path, conf).expect("write bird config");
        BirdNode {
            index,
            daemon: spawn(topo, index, false),
            sock,
        }
    }

    /// `kill -9` bird.
    pub fn kill9(&mut self) {
        self.daemon.kill9();
    }

    /// Start again after [`BirdNode::kill9`] with `-R` (graceful restart
    /// recovery: R bit, route selection deferred until its peers'
    /// End-of-RIB, RFC 4724 §4.1).
    pub fn restart_graceful(&mut self, topo: &Topo) {
        self.restart(topo, true);
    }

    /// Start again after [`BirdNode::kill9`]; `recovery` adds `-R`.
    /// Without it BIRD comes back with the GR capability but neither the R
    /// bit nor the per-family F (forwarding state) bit.
    pub fn restart(&mut self, topo: &Topo, recovery: bool) {
        assert!(!self.daemon.alive(), "restart of a running bird");
        let _ = std::fs::remove_file(&self.sock);
        self.daemon = spawn(topo, self.index, recovery);
    }

    /// `birdc -s <sock> <args>` output ("" if birdc failed).
    pub fn birdc(&self, args: &[&str]) -> String {
        Command::new(BIRDC2)
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `show route` parsed into `(prefix, next hop)` for BGP routes
    /// (those with a `via` gateway), sorted.
    pub fn routes(&self) -> Vec<(String, IpAddr)> {
        parse_show_route(&self.birdc(&["show", "route"]))
    }

    /// Names of the BGP protocols that are Established.
    pub fn established(&self) -> usize {
        self.birdc(&["show", "protocols"])
            .lines()
            .filter(|l| l.contains(" BGP ") && l.contains("Established"))
            .count()
    }
}

/// Parse BIRD 2's `show route`:
///
/// ```text
/// Table master4:
/// 10.66.2.0/26         unicast [rr 05:01:02.345] * (100) [i]
///         via 198.19.0.12 on eth0
/// ```
///
/// A prefix line is followed by its `via` line; further paths of the same
/// prefix start with whitespace and `unicast`.
pub fn parse_show_route(text: &str) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if !line.starts_with(char::is_whitespace) && first.contains('/') {
            current = Some(first.to_string());
        } else if first == "via"
            && let (Some(p), Some(nh)) = (
                &current,
                line.split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse::<IpAddr>().ok()),
            )
        {
            out.push((p.clone(), nh));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_bird2_show_route() {
        let text = "BIRD 2.0.12 ready.\nTable master4:\n\
            10.66.2.0/26         unicast [client2 05:01:02.345] * (100) [i]\n\
            \tvia 198.19.0.12 on eth0\n\
            10.66.1.0/26         blackhole [own 05:01:00.000] * (200)\n";
        let r = super::parse_show_route(text);
        assert_eq!(
            r,
            vec![("10.66.2.0/26".into(), "198.19.0.12".parse().unwrap())]
        );
    }
}
