//! What the load generators share: the client AS, the prefix numbering,
//! client source addresses and the UPDATEs a client announces (on the Manx
//! codec, `bgpd::packet`). The clients themselves: `load_client`
//! (`bgp-load`) and `sim_peer` (`rr-slow-peer`).

use std::net::Ipv4Addr;

use bgpd::packet::{AsPath, Nlri, Origin, PathAttribute, Update};
use ipnetwork::{IpNetwork, Ipv4Network};

/// The load client's AS (iBGP with the reflector).
pub const ASN: u32 = 64512;

/// The `n`-th /26 of 10.0.0.0/8.
pub fn prefix(n: u32) -> IpNetwork {
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + n * 64;
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(base), 26).expect("valid /26"))
}

/// Where `bgp-load`'s reflector listens: the first address of
/// [`LOAD_NET`], on `lo` of the bench's own network namespace.
pub const RR_ADDR: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

/// The subnet `bgp-load` puts on `lo` of its private network namespace
/// (RFC 6598 shared space, nothing the host routes): the reflector and
/// every client source address. Not 127/8: FRR refuses loopback next hops
/// as martians (NOTIFICATION 3/8), and next hops on a connected subnet
/// resolve for every daemon (BIRD's `protocol direct`, OpenBGPD's connected
/// routes) without any route added by hand.
pub const LOAD_NET: &str = "100.64.0.0/16";

/// The `i`-th client source address: 100.64.1.1, 100.64.1.2, … 250 per
/// /24 (skipping .0 and .251–.255), up to 63,750 clients.
pub fn client_addr(i: u32) -> Ipv4Addr {
    let n = i / 250;
    assert!(n < 255, "at most 63,750 clients");
    Ipv4Addr::new(100, 64, (1 + n) as u8, (i % 250 + 1) as u8)
}

/// UPDATEs announcing `prefixes` with next hop `src` (400 per UPDATE).
pub fn announcement(src: Ipv4Addr, prefixes: &[IpNetwork]) -> Vec<Update> {
    prefixes
        .chunks(400)
        .map(|chunk| Update {
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::default()),
                PathAttribute::NextHop(src),
                PathAttribute::LocalPref(100),
            ],
            nlri: chunk.iter().map(|p| Nlri::new(*p)).collect(),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn addresses_and_prefixes_are_distinct() {
        let addrs: HashSet<_> = (0..5000).map(client_addr).collect();
        assert_eq!(addrs.len(), 5000);
        assert!(addrs.iter().all(|a| a.octets()[..2] == [100, 64]
            && a.octets()[2] != 0
            && a.octets()[3] != 0
            && *a != RR_ADDR));
        let ps: HashSet<_> = (0..4000).map(prefix).collect();
        assert_eq!(ps.len(), 4000);
        assert_eq!(prefix(1).to_string(), "10.0.0.64/26");
    }
}
