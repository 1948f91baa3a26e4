//! Key layout of IPAM data in the datastore (as Calico's etcd v3 layout under
//! `/calico/ipam/v2/`, with our own root):
//!
//! | key | value |
//! |-----|-------|
//! | `/manx/ipam/v2/assignment/ipv4/block/10.0.0.0-26` | `IPAMBlock` |
//! | `/manx/ipam/v2/assignment/ipv6/block/fd10::-122` | `IPAMBlock` |
//! | `/manx/ipam/v2/host/<node>/ipv4/block/10.0.0.0-26` | `BlockAffinity` |
//! | `/manx/ipam/v2/handle/<handle>` | `IPAMHandle` |
//!
//! The configuration is the `IPAMConfiguration` resource named `default`
//! (`/manx/v3/projectcalico.org/ipamconfigurations/default`).
//!
//! The CIDR's `/` becomes `-` so each block is one path segment.

use ipnetwork::IpNetwork;

/// Root of every IPAM key.
pub const ROOT: &str = "/manx/ipam/v2/";

fn family(cidr: &IpNetwork) -> &'static str {
    if cidr.is_ipv4() { "ipv4" } else { "ipv6" }
}

fn cidr_segment(cidr: &IpNetwork) -> String {
    format!("{}-{}", cidr.network(), cidr.prefix())
}

/// Prefix of all blocks of a family (`v6` false: IPv4).
pub fn blocks_prefix(v6: bool) -> String {
    format!(
        "{ROOT}assignment/{}/block/",
        if v6 { "ipv6" } else { "ipv4" }
    )
}

/// Prefix of every block of both families.
pub fn all_blocks_prefix() -> String {
    format!("{ROOT}assignment/")
}

/// Key of the block `cidr`.
pub fn block(cidr: &IpNetwork) -> String {
    format!(
        "{ROOT}assignment/{}/block/{}",
        family(cidr),
        cidr_segment(cidr)
    )
}

/// Prefix of every affinity of `node` (both families).
pub fn node_affinities_prefix(node: &str) -> String {
    format!("{ROOT}host/{node}/")
}

/// Prefix of every affinity of every node.
pub fn all_affinities_prefix() -> String {
    format!("{ROOT}host/")
}

/// Key of `node`'s affinity to block `cidr`.
pub fn affinity(node: &str, cidr: &IpNetwork) -> String {
    format!(
        "{ROOT}host/{node}/{}/block/{}",
        family(cidr),
        cidr_segment(cidr)
    )
}

/// Prefix of every handle.
pub fn handles_prefix() -> String {
    format!("{ROOT}handle/")
}

/// Key of handle `id`.
pub fn handle(id: &str) -> String {
    format!("{ROOT}handle/{id}")
}

/// Parse the `10.0.0.0-26` last segment of a block or affinity key.
pub fn parse_cidr_segment(key: &str) -> Option<IpNetwork> {
    let seg = key.rsplit('/').next()?;
    let (ip, len) = seg.rsplit_once('-')?;
    IpNetwork::new(ip.parse().ok()?, len.parse().ok()?).ok()
}

/// The `(node, cidr)` of an affinity key.
pub fn parse_affinity(key: &str) -> Option<(String, IpNetwork)> {
    let rest = key.strip_prefix(ROOT)?.strip_prefix("host/")?;
    let (node, _) = rest.split_once('/')?;
    Some((node.to_string(), parse_cidr_segment(key)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_calico_shape() {
        let c: IpNetwork = "10.0.0.0/26".parse().unwrap();
        assert_eq!(block(&c), "/manx/ipam/v2/assignment/ipv4/block/10.0.0.0-26");
        assert_eq!(
            affinity("n1", &c),
            "/manx/ipam/v2/host/n1/ipv4/block/10.0.0.0-26"
        );
        assert_eq!(handle("net.c1"), "/manx/ipam/v2/handle/net.c1");
        let c6: IpNetwork = "fd10::/122".parse().unwrap();
        assert_eq!(block(&c6), "/manx/ipam/v2/assignment/ipv6/block/fd10::-122");
        assert_eq!(parse_cidr_segment(&block(&c6)), Some(c6));
        assert_eq!(
            parse_affinity(&affinity("n-2", &c)),
            Some(("n-2".to_string(), c))
        );
        assert!(block(&c).starts_with(&blocks_prefix(false)));
    }
}
