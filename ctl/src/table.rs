//! Column-aligned tables as calicoctl prints them: upper-case headers, two
//! spaces between columns, no borders.

use datastore::model::{EncapMode, Resource};

/// A table: a header row and data rows of equal width.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: vec![],
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Render with every column padded to its widest cell.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(&format!("{:<w$}   ", cell, w = widths[i]));
                }
            }
            out.push_str(s.trim_end());
            out.push('\n');
        };
        line(&self.headers);
        for row in &self.rows {
            line(row);
        }
        out
    }
}

fn encap(mode: EncapMode) -> String {
    format!("{mode:?}")
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The table calicoctl prints for these resources (all of one kind), with
/// its default columns or its `-o wide` ones.
pub fn resources_table(items: &[Resource], wide: bool) -> Table {
    let Some(first) = items.first() else {
        return Table::new(&["NAME"]);
    };
    use datastore::model::KindId::*;
    let mut t = match (first.kind(), wide) {
        (IPPool, false) => Table::new(&["NAME", "CIDR", "SELECTOR"]),
        (IPPool, true) => Table::new(&[
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
        ]),
        (BGPPeer, _) => Table::new(&["NAME", "PEERIP", "NODE", "ASN"]),
        (BGPConfiguration, _) => Table::new(&["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"]),
        (Node, false) => Table::new(&["NAME"]),
        (Node, true) => Table::new(&["NAME", "ASN", "IPV4", "IPV6"]),
        (IPAMConfiguration, _) => Table::new(&["NAME", "STRICTAFFINITY", "MAXBLOCKSPERHOST"]),
        (IPReservation, _) => Table::new(&["NAME", "CIDRS"]),
        (FelixConfiguration, _) => Table::new(&["NAME", "WIREGUARD", "WGPORT", "WGMTU"]),
        // Rules per list: what each filter holds at a glance.
        (BGPFilter, _) => Table::new(&["NAME", "EXPORTV4", "IMPORTV4", "EXPORTV6", "IMPORTV6"]),
        (WorkloadEndpoint, false) => Table::new(&["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"]),
        (WorkloadEndpoint, true) => Table::new(&[
            "NAMESPACE",
            "WORKLOAD",
            "NODE",
            "NETWORKS",
            "INTERFACE",
            "PROFILES",
            "NATS",
        ]),
    };
    for r in items {
        let row = match r {
            Resource::IPPool(p) => {
                let s = &p.spec;
                if wide {
                    vec![
                        p.metadata.name.clone(),
                        s.cidr.to_string(),
                        s.nat_outgoing().to_string(),
                        encap(s.ipip_mode()),
                        encap(s.vxlan_mode()),
                        s.disabled().to_string(),
                        s.disable_bgp_export().to_string(),
                        s.node_selector().to_string(),
                    ]
                } else {
                    vec![
                        p.metadata.name.clone(),
                        s.cidr.to_string(),
                        s.node_selector().to_string(),
                    ]
                }
            }
            Resource::BGPPeer(p) => {
                let node = match (&p.spec.node, &p.spec.node_selector) {
                    (Some(n), _) => n.clone(),
                    (None, Some(sel)) => sel.clone(),
                    (None, None) => "(global)".into(),
                };
                let peer = match (&p.spec.peer_ip, &p.spec.peer_selector) {
                    (Some(ip), _) => ip.clone(),
                    (None, Some(sel)) => sel.clone(),
                    (None, None) => String::new(),
                };
                vec![
                    p.metadata.name.clone(),
                    peer,
                    node,
                    opt(p.spec.as_number.map(|a| a.0)),
                ]
            }
            Resource::BGPConfiguration(c) => vec![
                c.metadata.name.clone(),
                c.spec.log_severity_screen().to_string(),
                c.spec.node_to_node_mesh_enabled().to_string(),
                c.spec.as_number().0.to_string(),
            ],
            Resource::Node(n) => {
                if wide {
                    let bgp = n.spec.bgp.clone().unwrap_or_default();
                    vec![
                        n.metadata.name.clone(),
                        opt(n.as_number().map(|a| a.0)),
                        bgp.ipv4_address.unwrap_or_default(),
                        bgp.ipv6_address.unwrap_or_default(),
                    ]
                } else {
                    vec![n.metadata.name.clone()]
                }
            }
            Resource::IPAMConfiguration(c) => vec![
                c.metadata.name.clone(),
                opt(c.spec.strict_affinity),
                opt(c.spec.max_blocks_per_host),
            ],
            Resource::IPReservation(r) => {
                vec![r.metadata.name.clone(), r.spec.reserved_cidrs.join(",")]
            }
            Resource::BGPFilter(f) => vec![
                f.metadata.name.clone(),
                f.spec.export_v4.len().to_string(),
                f.spec.import_v4.len().to_string(),
                f.spec.export_v6.len().to_string(),
                f.spec.import_v6.len().to_string(),
            ],
            Resource::FelixConfiguration(c) => vec![
                c.metadata.name.clone(),
                opt(c.spec.wireguard_enabled),
                opt(c.spec.wireguard_listening_port),
                opt(c.spec.wireguard_mtu),
            ],
            Resource::WorkloadEndpoint(w) => {
                let nets = w
                    .spec
                    .ip_networks
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(",");
                let workload = w
                    .spec
                    .workload
                    .clone()
                    .or(w.spec.pod.clone())
                    .unwrap_or_default();
                let node = w.spec.node.clone().unwrap_or_default();
                let iface = w.spec.interface_name.clone().unwrap_or_default();
                if wide {
                    vec![
                        w.metadata.namespace.clone().unwrap_or_default(),
                        workload,
                        node,
                        nets,
                        iface,
                        w.spec.profiles.join(","),
                        w.spec
                            .ip_nats
                            .iter()
                            .map(|n| format!("{}->{}", n.internal_ip, n.external_ip))
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                } else {
                    vec![workload, node, nets, iface]
                }
            }
        };
        t.push(row);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use datastore::model::parse_manifests;

    #[test]
    fn ippool_columns_match_calicoctl() {
        let items = parse_manifests(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  cidr: 192.168.0.0/16\n  ipipMode: Always\n  natOutgoing: true\n",
            "t.yaml",
        )
        .unwrap();
        let t = resources_table(&items, false).render();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "CIDR", "SELECTOR"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["default-ipv4-ippool", "192.168.0.0/16", "all()"]
        );
        let wide = resources_table(&items, true).render();
        assert!(wide.starts_with("NAME"));
        assert!(
            wide.contains("IPIPMODE") && wide.contains("Always"),
            "{wide}"
        );
    }

    #[test]
    fn bgpfilter_columns_count_the_rules_of_each_list() {
        let items = parse_manifests(
            "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: tor\nspec:\n  importV4:\n  - {action: Reject, matchOperator: Equal, cidr: 10.0.0.0/8}\n  - {action: Accept}\n  exportV6:\n  - {action: Reject, source: RemotePeers}\n",
            "t.yaml",
        )
        .unwrap();
        let t = resources_table(&items, false).render();
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows[0],
            ["NAME", "EXPORTV4", "IMPORTV4", "EXPORTV6", "IMPORTV6"]
        );
        assert_eq!(rows[1], ["tor", "0", "2", "1", "0"]);
    }

    #[test]
    fn felixconfiguration_columns_show_what_was_written() {
        let items = parse_manifests(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  wireguardEnabled: false\n  wireguardListeningPort: 51821\n",
            "t.yaml",
        )
        .unwrap();
        let t = resources_table(&items, false).render();
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["NAME", "WIREGUARD", "WGPORT", "WGMTU"]);
        assert_eq!(rows[1][0], "default");
        assert_eq!(rows[1][2], "51821");
    }
}
