//! NAT outgoing with nftables: a `manx` table per family with a postrouting NAT chain that
//! masquerades `saddr @pools daddr != @allpools` (Calico's `cali-nat-outgoing` rule, in nft).
//!
//! The whole table is replaced in one `nft -f -` transaction (`table` + `delete table` +
//! re-add), so the rules are never half-applied and re-applying is idempotent.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnetwork::IpNetwork;

use crate::types::PoolInfo;

/// Name of the nftables table (in both the `ip` and `ip6` families).
pub const NFT_TABLE: &str = "manx";

/// The NAT-outgoing sets of one address family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatFamily {
    /// Pools with natOutgoing: source addresses to masquerade.
    pub masq: Vec<IpNetwork>,
    /// Every pool of the family: destinations never masqueraded.
    pub all: Vec<IpNetwork>,
}

/// NAT outgoing for both families.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatSpec {
    /// IPv4.
    pub v4: NatFamily,
    /// IPv6.
    pub v6: NatFamily,
}

impl NatSpec {
    /// Sets from the pools. Disabled pools keep NAT: their pods still exist.
    pub fn from_pools(pools: &[PoolInfo]) -> NatSpec {
        let mut spec = NatSpec::default();
        for p in pools {
            let fam = if p.cidr.is_ipv4() {
                &mut spec.v4
            } else {
                &mut spec.v6
            };
            fam.all.push(p.cidr);
            if p.nat_outgoing {
                fam.masq.push(p.cidr);
            }
        }
        for f in [&mut spec.v4, &mut spec.v6] {
            f.all.sort();
            f.all.dedup();
            f.masq.sort();
            f.masq.dedup();
        }
        spec
    }
}

/// nft family keyword.
fn family_kw(v6: bool) -> &'static str {
    if v6 { "ip6" } else { "ip" }
}

fn elements(nets: &[IpNetwork]) -> String {
    nets.iter()
        .map(|n| format!("{}/{}", n.network(), n.prefix()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A stable tag for the desired content of one family's table (FNV-1a of the sets).
pub fn fingerprint(fam: &NatFamily, v6: bool) -> String {
    let text = format!("{v6} {} | {}", elements(&fam.masq), elements(&fam.all));
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("manx:{h:016x}")
}

/// The `nft -f` script that makes the kernel match `fam` for one family: replaces the table,
/// or deletes it when no pool needs NAT. `table_exists` avoids deleting a missing table
/// (an error in nft).
pub fn script(fam: &NatFamily, v6: bool, table_exists: bool) -> String {
    let kw = family_kw(v6);
    let addr_type = if v6 { "ipv6_addr" } else { "ipv4_addr" };
    let mut s = String::new();
    if fam.masq.is_empty() {
        if table_exists {
            s.push_str(&format!("delete table {kw} {NFT_TABLE}\n"));
        }
        return s;
    }
    // Declaring the table first makes `delete` valid even when it does not exist yet.
    s.push_str(&format!("table {kw} {NFT_TABLE} {{}}\n"));
    s.push_str(&format!("delete table {kw} {NFT_TABLE}\n"));
    s.push_str(&format!("table {kw} {NFT_TABLE} {{\n"));
    // The fingerprint lets a restarted felix-lite see that the table is already right.
    s.push_str(&format!("  comment \"{}\"\n", fingerprint(fam, v6)));
    s.push_str(&format!(
        "  set pools {{\n    type {addr_type}\n    flags interval\n    elements = {{ {} }}\n  }}\n",
        elements(&fam.masq)
    ));
    s.push_str(&format!(
        "  set allpools {{\n    type {addr_type}\n    flags interval\n    elements = {{ {} }}\n  }}\n",
        elements(&fam.all)
    ));
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    s.push_str(&format!(
        "    {kw} saddr @pools {kw} daddr != @allpools masquerade\n  }}\n}}\n"
    ));
    s
}

/// Failure to program NAT.
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    /// The nft binary could not be run.
    #[error("cannot run nft ({0}): install nftables or put nft on PATH")]
    Spawn(std::io::Error),
    /// nft rejected the ruleset.
    #[error("nft -f - failed for table {family} {NFT_TABLE}: {stderr}")]
    Rejected {
        /// `ip` or `ip6`.
        family: &'static str,
        /// nft's error output.
        stderr: String,
    },
}

/// Where NAT rules go.
pub trait NatBackend: Send + Sync {
    /// The current listing of the `manx` table of a family (`nft list table`), or `None` if
    /// there is no such table.
    fn list(&self, v6: bool) -> Result<Option<String>, NatError>;
    /// Run a script atomically.
    fn apply(&self, v6: bool, script: &str) -> Result<(), NatError>;
}

impl<T: NatBackend + ?Sized> NatBackend for std::sync::Arc<T> {
    fn list(&self, v6: bool) -> Result<Option<String>, NatError> {
        (**self).list(v6)
    }
    fn apply(&self, v6: bool, script: &str) -> Result<(), NatError> {
        (**self).apply(v6, script)
    }
}

/// The `nft` command line, run in the caller's network namespace.
#[derive(Debug, Clone)]
pub struct NftCli {
    /// Path of the nft binary.
    pub binary: String,
}

impl Default for NftCli {
    fn default() -> Self {
        NftCli {
            binary: "nft".into(),
        }
    }
}

impl NatBackend for NftCli {
    fn list(&self, v6: bool) -> Result<Option<String>, NatError> {
        let out = Command::new(&self.binary)
            .args(["list", "table", family_kw(v6), NFT_TABLE])
            .stdin(Stdio::null())
            .output()
            .map_err(NatError::Spawn)?;
        if out.status.success() {
            Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
        } else {
            Ok(None)
        }
    }

    fn apply(&self, v6: bool, script: &str) -> Result<(), NatError> {
        let mut child = Command::new(&self.binary)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(NatError::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(NatError::Spawn)?;
        }
        let out = child.wait_with_output().map_err(NatError::Spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(NatError::Rejected {
                family: family_kw(v6),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// An in-memory backend that stores the last script per family and counts applies.
#[derive(Debug, Default)]
pub struct MemNat {
    state: std::sync::Mutex<([Option<String>; 2], usize)>,
}

impl MemNat {
    /// How many scripts were applied.
    pub fn applies(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }
    /// The table as last applied, if present.
    pub fn table(&self, v6: bool) -> Option<String> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0[usize::from(v6)].clone()
    }
}

impl NatBackend for MemNat {
    fn list(&self, v6: bool) -> Result<Option<String>, NatError> {
        Ok(self.table(v6))
    }
    fn apply(&self, v6: bool, script: &str) -> Result<(), NatError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += 1;
        // Keep only the last `table … {` block; a delete-only script removes the table.
        s.0[usize::from(v6)] = script
            .rfind(&format!("table {} {NFT_TABLE} {{\n", family_kw(v6)))
            .map(|i| script[i..].to_string());
        Ok(())
    }
}

/// Applies [`NatSpec`]s, writing only when the table differs from what was last applied.
#[derive(Debug, Default)]
pub struct NatReconciler {
    // Per family: the spec last applied and the listing nft gave right after.
    applied: [Option<(NatFamily, Option<String>)>; 2],
}

impl NatReconciler {
    /// Make the kernel match `spec`. With `verify`, list the tables and re-apply when they
    /// were changed behind our back; otherwise trust the cache.
    pub fn apply(
        &mut self,
        backend: &dyn NatBackend,
        spec: &NatSpec,
        verify: bool,
    ) -> Result<usize, NatError> {
        let mut writes = 0;
        for (v6, fam) in [(false, &spec.v4), (true, &spec.v6)] {
            let slot = &mut self.applied[usize::from(v6)];
            let cached_same = slot.as_ref().is_some_and(|(f, _)| f == fam);
            if cached_same && !verify {
                continue;
            }
            let now = match backend.list(v6) {
                // No nft on this node and no pool to masquerade: there is no table of ours
                // to remove either, so a node without nftables runs fine until a pool asks
                // for natOutgoing.
                Err(NatError::Spawn(e))
                    if fam.masq.is_empty() && e.kind() == std::io::ErrorKind::NotFound =>
                {
                    *slot = Some((fam.clone(), None));
                    continue;
                }
                listed => listed?,
            };
            if cached_same && slot.as_ref().is_some_and(|(_, l)| *l == now) {
                continue;
            }
            // Fresh start (or changed spec): a table carrying the desired fingerprint is
            // already right; adopt it without writing.
            if !cached_same
                && !fam.masq.is_empty()
                && now
                    .as_deref()
                    .is_some_and(|l| l.contains(&format!("\"{}\"", fingerprint(fam, v6))))
            {
                *slot = Some((fam.clone(), now));
                continue;
            }
            let exists = now.is_some();
            if fam.masq.is_empty() && !exists {
                *slot = Some((fam.clone(), None));
                continue;
            }
            let script = script(fam, v6, exists);
            backend.apply(v6, &script)?;
            writes += 1;
            let after = backend.list(v6)?;
            *slot = Some((fam.clone(), after));
        }
        Ok(writes)
    }

    /// Forget what was applied (the next apply re-checks the kernel).
    pub fn invalidate(&mut self) {
        self.applied = [None, None];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, nat: bool) -> PoolInfo {
        let mut p = PoolInfo::new(cidr.parse().unwrap());
        p.nat_outgoing = nat;
        p
    }

    #[test]
    fn script_masquerades_nat_pools_to_non_pool_destinations() {
        let spec = NatSpec::from_pools(&[pool("10.19.0.0/16", true), pool("10.20.0.0/16", false)]);
        let s = script(&spec.v4, false, false);
        assert!(s.starts_with("table ip manx {}\ndelete table ip manx\n"));
        assert!(s.contains(
            "set pools {\n    type ipv4_addr\n    flags interval\n    elements = { 10.19.0.0/16 }"
        ));
        assert!(s.contains("elements = { 10.19.0.0/16, 10.20.0.0/16 }"));
        assert!(s.contains("ip saddr @pools ip daddr != @allpools masquerade"));
        assert!(s.contains("type nat hook postrouting priority srcnat"));
    }

    #[test]
    fn no_nat_pool_removes_the_table_only_if_present() {
        let spec = NatSpec::from_pools(&[pool("10.19.0.0/16", false)]);
        assert_eq!(script(&spec.v4, false, true), "delete table ip manx\n");
        assert_eq!(script(&spec.v4, false, false), "");
    }

    #[test]
    fn reconciler_writes_once_then_only_on_change() {
        let be = MemNat::default();
        let mut r = NatReconciler::default();
        let spec = NatSpec::from_pools(&[pool("10.19.0.0/16", true), pool("fd42:19:1::/64", true)]);
        assert_eq!(r.apply(&be, &spec, true).unwrap(), 2);
        assert_eq!(r.apply(&be, &spec, true).unwrap(), 0);
        assert_eq!(r.apply(&be, &spec, false).unwrap(), 0);
        assert!(be.table(true).unwrap().contains("ip6 saddr @pools"));
        let none = NatSpec::from_pools(&[pool("10.19.0.0/16", false)]);
        assert_eq!(r.apply(&be, &none, false).unwrap(), 2);
        assert_eq!(be.table(false), None);
        assert_eq!(r.apply(&be, &none, true).unwrap(), 0);
        assert_eq!(be.applies(), 4);
    }

    #[test]
    fn without_nft_only_a_nat_pool_is_an_error() {
        let missing = NftCli {
            binary: "/nonexistent/manx-test/nft".into(),
        };
        let mut r = NatReconciler::default();
        let none = NatSpec::from_pools(&[pool("10.19.0.0/16", false)]);
        assert_eq!(r.apply(&missing, &none, true).unwrap(), 0);
        assert_eq!(r.apply(&missing, &none, true).unwrap(), 0);
        let nat = NatSpec::from_pools(&[pool("10.19.0.0/16", true)]);
        let err = r.apply(&missing, &nat, true).unwrap_err();
        assert!(
            err.to_string().contains("install nftables"),
            "unexpected error: {err}"
        );
    }

    #[test]
    fn a_restarted_reconciler_adopts_a_table_with_the_right_fingerprint() {
        let be = MemNat::default();
        let spec = NatSpec::from_pools(&[pool("10.19.0.0/16", true)]);
        NatReconciler::default().apply(&be, &spec, true).unwrap();
        let mut fresh = NatReconciler::default();
        assert_eq!(fresh.apply(&be, &spec, true).unwrap(), 0);
        let other = NatSpec::from_pools(&[pool("10.19.0.0/16", true), pool("10.20.0.0/16", true)]);
        assert_eq!(fresh.apply(&be, &other, true).unwrap(), 1);
        assert!(be.table(false).unwrap().contains("10.20.0.0/16"));
    }
}
