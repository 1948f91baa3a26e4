//! The block-owner map of the data path, read back from the kernel: every IPv4 route
//! `<block> via <node IP> dev udp.manx` that felix-lite programmed says that packets to
//! `<block>` go to `<node IP>`. Longest prefix wins, as in the kernel.

use std::net::{IpAddr, Ipv4Addr};

use crate::netlink::{KernelRoute, RouteKind};

/// Destination prefix → owner node, and the set of owners (the only sources accepted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockTable {
    /// Per prefix length, longest first: (mask, sorted (network, node)).
    by_len: Vec<(u32, Vec<(u32, u32)>)>,
    /// Owner addresses, sorted.
    peers: Vec<u32>,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl BlockTable {
    /// The table of the unicast IPv4 routes with a gateway out of link `oif`.
    pub fn from_routes(routes: &[KernelRoute], oif: u32) -> BlockTable {
        let mut entries: Vec<(u8, u32, u32)> = routes
            .iter()
            .filter(|r| r.oif == Some(oif) && r.kind == RouteKind::Unicast)
            .filter_map(|r| match (r.dst, r.gateway) {
                (ipnetwork::IpNetwork::V4(d), Some(IpAddr::V4(gw))) => {
                    let m = mask(d.prefix());
                    Some((d.prefix(), u32::from(d.ip()) & m, u32::from(gw)))
                }
                _ => None,
            })
            .collect();
        entries.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut t = BlockTable::default();
        for (len, net, gw) in entries {
            match t.by_len.last_mut() {
                Some((m, v)) if *m == mask(len) => v.push((net, gw)),
                _ => t.by_len.push((mask(len), vec![(net, gw)])),
            }
            t.peers.push(gw);
        }
        t.peers.sort_unstable();
        t.peers.dedup();
        t
    }

    /// The node that owns `dst`.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        let dst = u32::from(dst);
        for (m, v) in &self.by_len {
            let key = dst & m;
            if let Ok(i) = v.binary_search_by(|(n, _)| n.cmp(&key)) {
                return Some(Ipv4Addr::from(v[i].1));
            }
        }
        None
    }

    /// Whether `src` owns a block (a datagram from anyone else is dropped).
    pub fn is_peer(&self, src: Ipv4Addr) -> bool {
        self.peers.binary_search(&u32::from(src)).is_ok()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.by_len.iter().map(|(_, v)| v.len()).sum()
    }

    /// Whether there are no prefixes.
    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{RT_TABLE_MAIN, Scope};

    fn route(dst: &str, gw: &str, oif: u32) -> KernelRoute {
        KernelRoute {
            dst: dst.parse().unwrap(),
            kind: RouteKind::Unicast,
            gateway: Some(gw.parse().unwrap()),
            oif: Some(oif),
            onlink: true,
            scope: Scope::Universe,
            protocol: 77,
            table: RT_TABLE_MAIN,
            metric: 0,
            multipath: Vec::new(),
        }
    }

    #[test]
    fn longest_prefix_of_the_tun_routes_wins() {
        let t = BlockTable::from_routes(
            &[
                route("10.70.1.0/26", "172.31.0.2", 9),
                route("10.70.1.64/26", "172.31.0.3", 9),
                route("10.70.1.66/32", "172.31.0.4", 9),
                route("10.70.0.0/16", "172.31.0.5", 9),
                // Another device's route is not ours.
                route("10.80.0.0/26", "172.31.0.6", 3),
            ],
            9,
        );
        let at = |s: &str| t.lookup(s.parse().unwrap()).map(|a| a.to_string());
        assert_eq!(at("10.70.1.5").as_deref(), Some("172.31.0.2"));
        assert_eq!(at("10.70.1.65").as_deref(), Some("172.31.0.3"));
        assert_eq!(at("10.70.1.66").as_deref(), Some("172.31.0.4"));
        assert_eq!(at("10.70.9.9").as_deref(), Some("172.31.0.5"));
        assert_eq!(at("10.80.0.1"), None);
        assert_eq!(t.len(), 4);
        assert!(t.is_peer("172.31.0.4".parse().unwrap()));
        assert!(!t.is_peer("172.31.0.6".parse().unwrap()));
    }
}
