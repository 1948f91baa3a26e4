//! Tunnel devices, their addresses, and the VXLAN device's neighbour and FDB entries. These
//! sets are small, so each reconcile compares against a fresh dump (reads only) and writes
//! nothing when the kernel already matches.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::netlink::{
    KernelAddr, KernelLink, LinkKind, LinkSpec, NeighTable, Neighbour, Netlink, NlError,
};

/// Creates, fixes and removes the devices felix-lite owns.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkReconciler;

fn kind_matches(want: &LinkKind, have: &LinkKind) -> bool {
    match (want, have) {
        (LinkKind::Ipip, LinkKind::Ipip) | (LinkKind::Tun, LinkKind::Tun) => true,
        (
            LinkKind::Vxlan {
                vni,
                port,
                local,
                parent,
            },
            LinkKind::Vxlan {
                vni: v2,
                port: p2,
                local: l2,
                parent: pa2,
            },
        ) => vni == v2 && port == p2 && local == l2 && (parent.is_none() || parent == pa2),
        // Kinds created by name only (wireguard).
        (LinkKind::Other(Some(a)), LinkKind::Other(Some(b))) => a == b,
        _ => false,
    }
}

impl LinkReconciler {
    /// Make link `spec.name` exist with the spec's kind, MAC and MTU, and be up. `links` is a
    /// fresh dump, updated in place. Returns the index and the number of writes.
    pub async fn ensure<N: Netlink + ?Sized>(
        nl: &N,
        links: &mut Vec<KernelLink>,
        spec: &LinkSpec,
    ) -> Result<(u32, usize), NlError> {
        let mut writes = 0;
        if let Some(have) = links.iter().find(|l| l.name == spec.name) {
            let mac_ok = spec.mac.is_none() || spec.mac == have.mac;
            if !kind_matches(&spec.kind, &have.kind) || !mac_ok {
                tracing::info!(
                    device = %spec.name,
                    "device exists with other settings; recreating it"
                );
                match nl.del_link(have.index).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
                writes += 1;
                *links = nl.links().await?;
            }
        }
        if !links.iter().any(|l| l.name == spec.name) {
            match nl.add_link(spec).await {
                Ok(()) => {}
                // The ipip module creates tunl0 by itself when it loads.
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(e),
            }
            writes += 1;
            *links = nl.links().await?;
        }
        let Some(have) = links.iter_mut().find(|l| l.name == spec.name) else {
            return Err(NlError::other(
                "add link",
                &spec.name,
                "created but not listed by the kernel",
            ));
        };
        if have.mtu != spec.mtu || !have.up {
            nl.set_link(have.index, spec.mtu, true).await?;
            have.mtu = spec.mtu;
            have.up = true;
            writes += 1;
        }
        Ok((have.index, writes))
    }

    /// Delete link `name` if it exists. Returns the number of writes.
    pub async fn remove<N: Netlink + ?Sized>(
        nl: &N,
        links: &mut Vec<KernelLink>,
        name: &str,
    ) -> Result<usize, NlError> {
        let Some(pos) = links.iter().position(|l| l.name == name) else {
            return Ok(0);
        };
        match nl.del_link(links[pos].index).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        links.remove(pos);
        Ok(1)
    }

    /// Make the global addresses of family `v4` on link `index` exactly `want`.
    /// Returns the number of writes.
    pub async fn ensure_addresses<N: Netlink + ?Sized>(
        nl: &N,
        addrs: &[KernelAddr],
        index: u32,
        v4: bool,
        want: &[IpNetwork],
    ) -> Result<usize, NlError> {
        let mut writes = 0;
        let have: Vec<IpNetwork> = addrs
            .iter()
            .filter(|a| a.index == index && a.global && a.addr.is_ipv4() == v4)
            .map(|a| a.addr)
            .collect();
        for a in &have {
            if !want.contains(a) {
                match nl.del_address(index, *a).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
                writes += 1;
            }
        }
        for a in want {
            if !have.contains(a) {
                match nl.add_address(index, *a).await {
                    Ok(()) => {}
                    Err(e) if e.is_exists() => {}
                    Err(e) => return Err(e),
                }
                writes += 1;
            }
        }
        Ok(writes)
    }
}

/// Keeps the permanent ARP and FDB entries of a device equal to a desired set.
#[derive(Debug, Default, Clone, Copy)]
pub struct NeighbourReconciler;

impl NeighbourReconciler {
    /// Make the permanent entries of `table` on link `index` exactly `want`. ARP entries
    /// are keyed by IP, FDB entries by MAC. Returns the number of writes.
    pub async fn sync<N: Netlink + ?Sized>(
        nl: &N,
        table: NeighTable,
        index: u32,
        want: &[Neighbour],
    ) -> Result<usize, NlError> {
        let have = nl.neighbours(table, index).await?;
        let key = |n: &Neighbour| -> (Option<IpAddr>, Option<[u8; 6]>) {
            match table {
                NeighTable::Neigh => (Some(n.ip), None),
                NeighTable::Fdb => (None, Some(n.mac.0)),
            }
        };
        let mut writes = 0;
        for h in &have {
            if !want.iter().any(|w| key(w) == key(h)) {
                match nl.del_neighbour(table, h).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
                writes += 1;
            }
        }
        for w in want {
            if !have.contains(w) {
                nl.set_neighbour(table, w).await?;
                writes += 1;
            }
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{EOPNOTSUPP, MemNetlink};
    use crate::types::MacAddr;

    fn vxlan_spec(local: &str) -> LinkSpec {
        LinkSpec {
            name: "vxlan.manx".into(),
            kind: LinkKind::Vxlan {
                vni: 4096,
                port: 4789,
                local: local.parse().unwrap(),
                parent: None,
            },
            mtu: 1450,
            mac: Some(MacAddr([2, 1, 2, 3, 4, 5])),
        }
    }

    #[tokio::test]
    async fn ensure_creates_once_then_writes_nothing() {
        let nl = MemNetlink::new();
        let mut links = nl.links().await.unwrap();
        let (idx, w) = LinkReconciler::ensure(&nl, &mut links, &vxlan_spec("198.19.0.1"))
            .await
            .unwrap();
        assert_eq!(w, 2); // add + set up/mtu
        nl.clear_log();
        let mut links = nl.links().await.unwrap();
        let (idx2, w) = LinkReconciler::ensure(&nl, &mut links, &vxlan_spec("198.19.0.1"))
            .await
            .unwrap();
        assert_eq!((idx, w), (idx2, 0));
        assert_eq!(nl.writes(), 0);
    }

    #[tokio::test]
    async fn changed_local_address_recreates_the_device() {
        let nl = MemNetlink::new();
        let mut links = nl.links().await.unwrap();
        LinkReconciler::ensure(&nl, &mut links, &vxlan_spec("198.19.0.1"))
            .await
            .unwrap();
        let (_, w) = LinkReconciler::ensure(&nl, &mut links, &vxlan_spec("198.19.0.9"))
            .await
            .unwrap();
        assert_eq!(w, 3); // delete, add, up
        let l = nl.link_list();
        let v = l.iter().find(|l| l.name == "vxlan.manx").unwrap();
        assert!(
            matches!(v.kind, LinkKind::Vxlan { local, .. } if local.to_string() == "198.19.0.9")
        );
    }

    #[tokio::test]
    async fn ipip_on_a_kernel_without_it_reports_eopnotsupp() {
        let nl = MemNetlink::new();
        nl.set_ipip_unsupported(true);
        let mut links = nl.links().await.unwrap();
        let spec = LinkSpec {
            name: "tunl0".into(),
            kind: LinkKind::Ipip,
            mtu: 1480,
            mac: None,
        };
        let err = LinkReconciler::ensure(&nl, &mut links, &spec)
            .await
            .unwrap_err();
        assert_eq!(err.errno, Some(EOPNOTSUPP));
    }

    #[tokio::test]
    async fn addresses_and_neighbours_converge_with_minimal_writes() {
        let nl = MemNetlink::new();
        let idx = nl.add_host_link("vxlan.manx", 1450, &["10.19.9.9/32".parse().unwrap()]);
        let want: Vec<IpNetwork> = vec!["10.19.0.0/32".parse().unwrap()];
        let addrs = nl.addresses().await.unwrap();
        let w = LinkReconciler::ensure_addresses(&nl, &addrs, idx, true, &want)
            .await
            .unwrap();
        assert_eq!(w, 2);
        let addrs = nl.addresses().await.unwrap();
        let w = LinkReconciler::ensure_addresses(&nl, &addrs, idx, true, &want)
            .await
            .unwrap();
        assert_eq!(w, 0);

        let n = |ip: &str, m: u8| Neighbour {
            index: idx,
            ip: ip.parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, m]),
        };
        let w = NeighbourReconciler::sync(&nl, NeighTable::Neigh, idx, &[n("10.19.1.0", 1)])
            .await
            .unwrap();
        assert_eq!(w, 1);
        // Changed MAC for the same IP: one replace, no delete.
        let w = NeighbourReconciler::sync(&nl, NeighTable::Neigh, idx, &[n("10.19.1.0", 2)])
            .await
            .unwrap();
        assert_eq!(w, 1);
        assert_eq!(
            nl.neighbour_table(NeighTable::Neigh),
            vec![n("10.19.1.0", 2)]
        );
        let w = NeighbourReconciler::sync(&nl, NeighTable::Neigh, idx, &[])
            .await
            .unwrap();
        assert_eq!(w, 1);
        assert!(nl.neighbour_table(NeighTable::Neigh).is_empty());
    }
}
