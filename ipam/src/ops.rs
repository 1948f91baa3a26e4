//! The operations behind `manxctl ipam ...`, returning data with `Display`
//! (tables, like calicoctl) and `Serialize` (for `-o json`):
//!
//! * `ipam show [--show-blocks] [--show-borrowed]` → [`show`]
//! * `ipam show --ip X` → [`show_ip`]
//! * `ipam check [-o report.json]` → [`Ipam::check`] ([`crate::check::CheckReport`])
//! * `ipam release --ip X` → [`release_ip`]; `--from-report F` → [`release_from_report`]
//! * `ipam configure --strictaffinity=true|false` → [`configure`]

use std::fmt;
use std::net::IpAddr;

use datastore::model::ipam::{AllocationAttribute, IPAMConfig};
use ipnetwork::IpNetwork;
use serde::Serialize;

use crate::allocator::Ipam;
use crate::check::CheckReport;
use crate::error::{IpamError, Result};

/// Render rows as an aligned text table with upper-case headers.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Usage of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNetwork,
    pub size: u128,
    pub in_use: u64,
    pub blocks: usize,
}

/// Usage of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockUsage {
    pub cidr: IpNetwork,
    pub node: Option<String>,
    pub size: u32,
    pub in_use: u32,
}

/// An address a node holds in a block affine to another node (or to none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BorrowedIp {
    pub ip: IpAddr,
    pub block: IpNetwork,
    pub block_node: Option<String>,
    pub borrowing_node: Option<String>,
    pub handle_id: Option<String>,
}

/// `manxctl ipam show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IpamShow {
    pub pools: Vec<PoolUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<BlockUsage>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub borrowed: Option<Vec<BorrowedIp>>,
}

fn pct(n: u128, d: u128) -> String {
    match (n * 100).checked_div(d) {
        Some(p) => format!("{p}%"),
        None => "0%".into(),
    }
}

impl fmt::Display for IpamShow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<Vec<String>> = self
            .pools
            .iter()
            .map(|p| {
                vec![
                    "IP Pool".into(),
                    p.cidr.to_string(),
                    p.size.to_string(),
                    format!("{} ({})", p.in_use, pct(p.in_use as u128, p.size)),
                    format!(
                        "{} ({})",
                        p.size - p.in_use as u128,
                        pct(p.size - p.in_use as u128, p.size)
                    ),
                ]
            })
            .chain(self.blocks.iter().flatten().map(|b| {
                vec![
                    format!("Block ({})", b.node.as_deref().unwrap_or("-")),
                    b.cidr.to_string(),
                    b.size.to_string(),
                    format!("{} ({})", b.in_use, pct(b.in_use as u128, b.size as u128)),
                    format!(
                        "{} ({})",
                        b.size - b.in_use,
                        pct((b.size - b.in_use) as u128, b.size as u128)
                    ),
                ]
            }))
            .collect();
        f.write_str(&render_table(
            &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
            &rows,
        ))?;
        if let Some(borrowed) = &self.borrowed {
            writeln!(f)?;
            let rows: Vec<Vec<String>> = borrowed
                .iter()
                .map(|b| {
                    vec![
                        b.ip.to_string(),
                        b.block.to_string(),
                        b.block_node.clone().unwrap_or_else(|| "-".into()),
                        b.borrowing_node.clone().unwrap_or_else(|| "-".into()),
                        b.handle_id.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            f.write_str(&render_table(
                &[
                    "IP",
                    "BORROWED FROM BLOCK",
                    "BLOCK OWNER",
                    "BORROWING NODE",
                    "HANDLE",
                ],
                &rows,
            ))?;
        }
        Ok(())
    }
}

/// Options of [`show`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ShowOptions {
    pub show_blocks: bool,
    pub show_borrowed: bool,
}

/// `manxctl ipam show`.
pub async fn show(ipam: &Ipam, opts: ShowOptions) -> Result<IpamShow> {
    let pools = ipam.topology().pools().await?;
    let blocks = ipam.rw().list_blocks().await?;
    let mut out = IpamShow::default();
    for p in &pools {
        let in_pool: Vec<_> = blocks
            .iter()
            .filter(|b| p.cidr.contains(b.value.cidr().network()))
            .collect();
        let host_bits = if p.cidr.is_ipv4() { 32 } else { 128 } - p.cidr.prefix() as u32;
        out.pools.push(PoolUsage {
            name: p.name.clone(),
            cidr: p.cidr,
            size: 1u128.checked_shl(host_bits).unwrap_or(u128::MAX),
            in_use: in_pool.iter().map(|b| b.value.in_use() as u64).sum(),
            blocks: in_pool.len(),
        });
    }
    if opts.show_blocks {
        out.blocks = Some(
            blocks
                .iter()
                .map(|b| BlockUsage {
                    cidr: b.value.cidr(),
                    node: b.value.affine_node().map(str::to_string),
                    size: b.value.size(),
                    in_use: b.value.in_use(),
                })
                .collect(),
        );
    }
    if opts.show_borrowed {
        let mut borrowed = Vec::new();
        for b in &blocks {
            let owner = b.value.affine_node();
            for (ip, attr, _) in b.value.allocated() {
                let user = attr.secondary.get(crate::block::ATTR_NODE);
                if user.map(String::as_str) != owner {
                    borrowed.push(BorrowedIp {
                        ip,
                        block: b.value.cidr(),
                        block_node: owner.map(str::to_string),
                        borrowing_node: user.cloned(),
                        handle_id: attr.handle_id.clone(),
                    });
                }
            }
        }
        out.borrowed = Some(borrowed);
    }
    Ok(out)
}

/// `manxctl ipam show --ip X`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpInfo {
    pub ip: IpAddr,
    pub block: Option<IpNetwork>,
    pub block_node: Option<String>,
    pub allocated: bool,
    pub sequence: Option<u64>,
    pub attributes: Option<AllocationAttribute>,
}

impl fmt::Display for IpInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.block, &self.attributes) {
            (None, _) => writeln!(f, "IP {} is not in any allocated block.", self.ip),
            (Some(b), None) => writeln!(f, "IP {} is not assigned (block {b}).", self.ip),
            (Some(b), Some(a)) => {
                writeln!(f, "IP {} is in use (block {b}).", self.ip)?;
                writeln!(f, "  handle: {}", a.handle_id.as_deref().unwrap_or("-"))?;
                for (k, v) in &a.secondary {
                    writeln!(f, "  {k}: {v}")?;
                }
                Ok(())
            }
        }
    }
}

/// Find the stored block holding `ip`.
async fn block_of(
    ipam: &Ipam,
    ip: IpAddr,
) -> Result<Option<crate::blockrw::Versioned<crate::Block>>> {
    let cidrs = ipam.rw().list_block_cidrs(ip.is_ipv6()).await?;
    match cidrs.into_iter().find(|c| c.contains(ip)) {
        Some(c) => ipam.rw().get_block(&c).await,
        None => Ok(None),
    }
}

/// `manxctl ipam show --ip X`.
pub async fn show_ip(ipam: &Ipam, ip: IpAddr) -> Result<IpInfo> {
    let b = block_of(ipam, ip).await?;
    Ok(IpInfo {
        ip,
        block: b.as_ref().map(|b| b.value.cidr()),
        block_node: b
            .as_ref()
            .and_then(|b| b.value.affine_node().map(str::to_string)),
        allocated: b
            .as_ref()
            .is_some_and(|b| b.value.attributes_of(ip).is_some()),
        sequence: b.as_ref().and_then(|b| b.value.sequence_of(ip)),
        attributes: b.as_ref().and_then(|b| b.value.attributes_of(ip).cloned()),
    })
}

/// Result of a release command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReleaseSummary {
    pub released: Vec<IpAddr>,
    /// Addresses skipped, with why.
    pub skipped: Vec<(IpAddr, String)>,
}

impl fmt::Display for ReleaseSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Released {} address(es).", self.released.len())?;
        for ip in &self.released {
            writeln!(f, "  released {ip}")?;
        }
        for (ip, why) in &self.skipped {
            writeln!(f, "  skipped {ip}: {why}")?;
        }
        Ok(())
    }
}

/// `manxctl ipam release --ip X`.
pub async fn release_ip(ipam: &Ipam, ip: IpAddr) -> Result<ReleaseSummary> {
    let released = ipam.release_ips(&[ip]).await?;
    let skipped = if released.is_empty() {
        vec![(ip, "not allocated".to_string())]
    } else {
        Vec::new()
    };
    Ok(ReleaseSummary { released, skipped })
}

/// `manxctl ipam release --from-report F`: release the report's leaked
/// addresses, each only if it still has the sequence number the report saw
/// (so an address reused since the report is left alone).
pub async fn release_from_report(ipam: &Ipam, report: &CheckReport) -> Result<ReleaseSummary> {
    let mut out = ReleaseSummary::default();
    for l in &report.leaked_addresses {
        let r = ipam.release_checked(&[(l.ip, Some(l.sequence))]).await?;
        if r.is_empty() {
            out.skipped.push((
                l.ip,
                "no longer allocated with the reported sequence number".into(),
            ));
        }
        out.released.extend(r);
    }
    Ok(out)
}

/// Parse a report written by `ipam check -o`.
pub fn parse_report(json: &str) -> Result<CheckReport> {
    serde_json::from_str(json).map_err(|e| {
        IpamError::Invalid(format!(
            "IPAM check report: {e}; pass a file written by `manxctl ipam check -o`"
        ))
    })
}

/// `manxctl ipam configure`: change the given settings, return the result.
pub async fn configure(
    ipam: &Ipam,
    strict_affinity: Option<bool>,
    max_blocks_per_host: Option<u32>,
    auto_allocate_blocks: Option<bool>,
) -> Result<IPAMConfig> {
    ipam.update_config(|c| {
        if let Some(v) = strict_affinity {
            c.strict_affinity = v;
        }
        if let Some(v) = max_blocks_per_host {
            c.max_blocks_per_host = v;
        }
        if let Some(v) = auto_allocate_blocks {
            c.auto_allocate_blocks = v;
        }
    })
    .await
}

/// Display of the IPAM config, calicoctl-style.
pub fn render_config(cfg: &IPAMConfig) -> String {
    render_table(
        &["STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"],
        &[vec![
            cfg.strict_affinity.to_string(),
            cfg.auto_allocate_blocks.to_string(),
            cfg.max_blocks_per_host.to_string(),
        ]],
    )
}
