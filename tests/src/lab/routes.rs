//! What Manx programmed into a lab node's routing table (protocol 77).

use std::collections::BTreeMap;

use super::LabState;
use crate::netns::Netns;

/// Each node's routing table, as `ip route` prints it, followed by `ip -6
/// route` in a lab with IPv6.
pub fn routes(state: &LabState) -> BTreeMap<String, String> {
    let v6 = state.spec.ip_family.v6();
    state
        .nodes
        .iter()
        .map(|n| {
            let ns = Netns::adopt(&n.netns);
            let show = |args: &[&str]| ns.ip(args).unwrap_or_else(|e| format!("{e:#}"));
            let mut text = show(&["route", "show"]);
            if v6 {
                text.push_str(&show(&["-6", "route", "show"]));
            }
            (n.name.clone(), text)
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
