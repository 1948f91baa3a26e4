//! What Manx programmed into a lab node's routing table (protocol 77).

use std::collections::BTreeMap;

use super::LabState;
use crate::netns::Netns;

/// Each node's routing table, as `ip route` prints it.
pub fn routes(state: &LabState) -> BTreeMap<String, String> {
    state
        .nodes
        .iter()
        .map(|n| {
            let ns = Netns::adopt(&n.netns);
            (
                n.name.clone(),
                ns.ip(&["route", "show"])
                    .unwrap_or_else(|e| format!("{e:#}")),
            )
        })
        .collect()
}

/// The prefixes of one routing-table listing, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeRoutes {
    /// `blackhole <block>` (this node's blocks).
    pub blackholes: Vec<String>,
    /// `<block> via ...` routes Manx programmed (other nodes' blocks).
    pub remote: Vec<String>,
    /// `<ip> dev cali...` workload routes.
    pub workloads: Vec<String>,
}

/// Parse `ip route` output into Manx's kinds of routes (protocol 77).
pub fn parse_routes(text: &str) -> NodeRoutes {
    let mut r = NodeRoutes::default();
    for line in text.lines().filter(|l| l.contains("proto 77")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"blackhole") {
            r.blackholes.push(words[1].to_string());
        } else if line.contains(" dev cali") {
            r.workloads.push(words[0].to_string());
        } else if line.contains(" via ") {
            r.remote.push(words[0].to_string());
        }
    }
    for v in [&mut r.blackholes, &mut r.remote, &mut r.workloads] {
        v.sort();
    }
    r
}
