//! `manxctl node status | ready` (a client of manx-node's status socket,
//! whose protocol is the `manx-status` crate; the calicoctl-style table is
//! drawn here) and the set of live IPAM handles `ipam check` compares
//! allocations against.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use datastore::client::Client;
use datastore::model::{Node, WorkloadEndpoint};
use manx_status::{NodeStatus, PeerRow, RouteRow};

/// calicoctl-style peer table of the node at `run_dir`; with `routes`, its
/// BGP routes from outside the IP pools too.
pub async fn status(run_dir: &Path, routes: bool) -> Result<String> {
    let s = manx_status::query(run_dir).await.map_err(|e| anyhow!(e))?;
    let mut out = render(&s);
    if routes {
        out.push('\n');
        out.push_str(&render_routes(&s.routes));
    }
    Ok(out)
}

/// `node status --routes`: every BGP route from outside the IP pools, with
/// what the dataplane made of it.
pub fn render_routes(routes: &[RouteRow]) -> String {
    let mut out = String::from("BGP routes outside the IP pools\n");
    if routes.is_empty() {
        out.push_str("No BGP routes outside the IP pools.\n");
        return out;
    }
    let cells: Vec<[String; 4]> = routes
        .iter()
        .map(|r| {
            [
                r.prefix.clone(),
                r.next_hop.clone(),
                r.state.clone(),
                r.info.clone(),
            ]
        })
        .collect();
    out.push_str(&boxed(["PREFIX", "NEXT HOP", "STATE", "INFO"], &cells));
    out
}

/// Ok when the node at `run_dir` is ready.
pub async fn ready(run_dir: &Path) -> Result<()> {
    let s = manx_status::query(run_dir).await.map_err(|e| anyhow!(e))?;
    if !s.ready {
        bail!("manx-node {} is not ready: {}", s.node, s.not_ready);
    }
    Ok(())
}

/// Handles that belong to something alive: a WorkloadEndpoint's container
/// (`<network>.<container id>`, as the CNI IPAM plugin names them) or a
/// Node's tunnel address (`ipip-tunnel-addr-<node>`, `vxlan-tunnel-addr-<node>`).
pub async fn live_handles(client: &Client) -> Result<HashSet<String>> {
    let (weps, _) = client.list::<WorkloadEndpoint>().await?;
    let (nodes, _) = client.list::<Node>().await?;
    let containers: HashSet<String> = weps
        .iter()
        .filter_map(|w| w.spec.container_id.clone())
        .collect();
    let mut live = HashSet::new();
    for n in &nodes {
        let name = &n.metadata.name;
        live.insert(format!("ipip-tunnel-addr-{name}"));
        live.insert(format!("vxlan-tunnel-addr-{name}"));
        live.insert(format!("vxlan-v6-tunnel-addr-{name}"));
    }
    let prefix = ipam::keys::handles_prefix();
    let handles = client.store().list(&prefix).await?;
    for kv in handles.items {
        let id = kv.key.trim_start_matches(prefix.as_str()).to_string();
        if let Some((_, cid)) = id.split_once('.')
            && containers.contains(cid)
        {
            live.insert(id);
        }
    }
    Ok(live)
}

/// calicoctl's `node status` text.
pub fn render(status: &NodeStatus) -> String {
    let mut out = String::new();
    out.push_str(if status.ready {
        "Manx process is running.\n\n"
    } else {
        "Manx process is running but not ready.\n\n"
    });
    if !status.not_ready.is_empty() {
        out.push_str(&format!("Not ready: {}\n\n", status.not_ready));
    }
    for w in &status.warnings {
        out.push_str(&format!("Warning: {w}\n"));
    }
    out.push_str("IPv4 BGP status\n");
    let rows: Vec<&PeerRow> = status
        .peers
        .iter()
        .filter(|p| !p.address.contains(':'))
        .collect();
    out.push_str(&peer_table(&rows));
    out.push_str("\nIPv6 BGP status\n");
    let rows6: Vec<&PeerRow> = status
        .peers
        .iter()
        .filter(|p| p.address.contains(':'))
        .collect();
    if rows6.is_empty() {
        out.push_str("No IPv6 peers found.\n");
    } else {
        out.push_str(&peer_table(&rows6));
    }
    out
}

/// calicoctl's five columns; a BFD column after STATE once any peer has
/// BFD (a Manx extension), so a cluster without BFD prints what calicoctl
/// prints.
fn peer_table(rows: &[&PeerRow]) -> String {
    if rows.iter().any(|p| !p.bfd.is_empty()) {
        let headers = ["PEER ADDRESS", "PEER TYPE", "STATE", "BFD", "SINCE", "INFO"];
        let cells: Vec<[String; 6]> = rows
            .iter()
            .map(|p| {
                let bfd = if p.bfd.is_empty() {
                    "-"
                } else {
                    p.bfd.as_str()
                };
                [
                    p.address.clone(),
                    p.peer_type.clone(),
                    p.state.clone(),
                    bfd.to_string(),
                    p.since.clone(),
                    p.info.clone(),
                ]
            })
            .collect();
        return boxed(headers, &cells);
    }
    let headers = ["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|p| {
            [
                p.address.clone(),
                p.peer_type.clone(),
                p.state.clone(),
                p.since.clone(),
                p.info.clone(),
            ]
        })
        .collect();
    boxed(headers, &cells)
}

/// A calicoctl `node status` table: `+---+` rules, `| cell |` rows.
fn boxed<const N: usize>(headers: [&str; N], cells: &[[String; N]]) -> String {
    let mut widths = headers.map(str::len);
    for r in cells {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let sep: String = widths
        .iter()
        .map(|w| "-".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("+");
    let line = |cells: [&str; N]| {
        let inner: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!(" {:<w$} ", c, w = widths[i]))
            .collect();
        format!("|{}|\n", inner.join("|"))
    };
    let mut out = format!("+{sep}+\n");
    out.push_str(&line(headers));
    out.push_str(&format!("+{sep}+\n"));
    for r in cells {
        out.push_str(&line(r.each_ref().map(String::as_str)));
    }
    out.push_str(&format!("+{sep}+\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_calicoctl_style_table() {
        let s = NodeStatus {
            node: "n1".into(),
            ready: true,
            not_ready: String::new(),
            peers: vec![PeerRow {
                address: "172.30.0.12".into(),
                peer_type: "node-to-node mesh".into(),
                state: "up".into(),
                since: "01:02:03".into(),
                info: "Established".into(),
                prefixes_received: 1,
                prefixes_accepted: 1,
                prefixes_advertised: 1,
                bfd: String::new(),
            }],
            warnings: vec![],
            routes: vec![],
        };
        let text = render(&s);
        assert!(
            text.contains("| PEER ADDRESS | PEER TYPE         | STATE | SINCE    | INFO        |"),
            "{text}"
        );
        assert!(
            text.contains("| 172.30.0.12  | node-to-node mesh | up    | 01:02:03 | Established |"),
            "{text}"
        );
        assert!(text.contains("No IPv6 peers found."));
    }

    #[test]
    fn a_bfd_column_once_a_peer_has_bfd() {
        let row = |address: &str, bfd: &str| PeerRow {
            address: address.into(),
            peer_type: "node-to-node mesh".into(),
            state: "up".into(),
            since: "01:02:03".into(),
            info: "Established".into(),
            prefixes_received: 0,
            prefixes_accepted: 0,
            prefixes_advertised: 0,
            bfd: bfd.into(),
        };
        let s = NodeStatus {
            node: "n1".into(),
            ready: true,
            peers: vec![row("172.30.0.12", "up"), row("172.30.0.13", "")],
            ..Default::default()
        };
        let text = render(&s);
        assert!(
            text.contains(
                "| PEER ADDRESS | PEER TYPE         | STATE | BFD | SINCE    | INFO        |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| 172.30.0.12  | node-to-node mesh | up    | up  | 01:02:03 | Established |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| 172.30.0.13  | node-to-node mesh | up    | -   | 01:02:03 | Established |"
            ),
            "{text}"
        );
    }

    #[test]
    fn renders_the_routes_outside_the_pools() {
        assert_eq!(
            render_routes(&[]),
            "BGP routes outside the IP pools\nNo BGP routes outside the IP pools.\n"
        );
        let row = |prefix: &str, nh: &str, state: &str, info: &str| RouteRow {
            prefix: prefix.into(),
            next_hop: nh.into(),
            state: state.into(),
            info: info.into(),
        };
        let text = render_routes(&[
            row(
                "10.200.0.0/26",
                "198.19.50.1",
                "installed",
                "via 198.19.50.1 dev eth0",
            ),
            row(
                "10.202.0.0/24",
                "192.0.2.1",
                "unreachable",
                "next hop 192.0.2.1 is unreachable: no connected subnet or kernel route covers it",
            ),
        ]);
        assert!(
            text.contains("| PREFIX        | NEXT HOP    | STATE       | INFO "),
            "{text}"
        );
        assert!(
            text.contains(
                "| 10.200.0.0/26 | 198.19.50.1 | installed   | via 198.19.50.1 dev eth0 "
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| 10.202.0.0/24 | 192.0.2.1   | unreachable | next hop 192.0.2.1 is unreachable"
            ),
            "{text}"
        );
    }
}
