//! Releasing addresses: by address (optionally guarded by the allocation's
//! sequence number) and by handle. Each block and the handle counts it
//! changes are written in one transaction (see [`crate::commit`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::allocator::Ipam;
use crate::block::Release;
use crate::blockrw::is_conflict;
use crate::commit::{HandleDeltas, Step};
use crate::error::{IpamError, Result};

impl Ipam {
    /// Find the block holding `ip` among `cidrs`.
    fn block_of(cidrs: &[IpNetwork], ip: IpAddr) -> Option<IpNetwork> {
        cidrs.iter().find(|c| c.contains(ip)).copied()
    }

    /// Release `ips` (idempotent: addresses not allocated are skipped).
    /// Returns the addresses actually freed.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<IpAddr>> {
        let with_seq: Vec<(IpAddr, Option<u64>)> = ips.iter().map(|ip| (*ip, None)).collect();
        self.release_checked(&with_seq).await
    }

    /// Release `ips`, each only if its allocation still has the given sequence
    /// number (when `Some`): GC's guard against freeing a reused address.
    pub async fn release_checked(&self, ips: &[(IpAddr, Option<u64>)]) -> Result<Vec<IpAddr>> {
        if ips.is_empty() {
            return Ok(Vec::new());
        }
        let mut cidrs = self.rw.list_block_cidrs(false).await?;
        cidrs.extend(self.rw.list_block_cidrs(true).await?);
        let mut by_block: BTreeMap<IpNetwork, Vec<(IpAddr, Option<u64>)>> = BTreeMap::new();
        for (ip, seq) in ips {
            if let Some(c) = Self::block_of(&cidrs, *ip) {
                by_block.entry(c).or_default().push((*ip, *seq));
            }
        }
        let now = self.now_ms();
        let mut freed = Vec::new();
        for (cidr, list) in by_block {
            let r = self
                .modify_block_and_handles(&cidr, |b| {
                    let mut done = Vec::new();
                    let mut deltas = HandleDeltas::new();
                    for (ip, seq) in &list {
                        if let Release::Released { handle_id } = b.release(*ip, *seq, now)? {
                            done.push(*ip);
                            if let Some(h) = handle_id {
                                *deltas.entry(h).or_default() -= 1;
                            }
                        }
                    }
                    Ok(if done.is_empty() {
                        Step::Skip(done)
                    } else {
                        Step::Write(done, deltas)
                    })
                })
                .await?;
            freed.extend(r.unwrap_or_default());
        }
        Ok(freed)
    }

    /// Release every address of `handle_id` and delete the handle. Idempotent:
    /// an unknown handle releases nothing.
    pub async fn release_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>> {
        let mut freed = Vec::new();
        for _ in 0..self.opts.max_retries {
            let Some(h) = self.rw.get_handle(handle_id).await? else {
                return Ok(freed);
            };
            let now = self.now_ms();
            // One transaction per block: the block frees the handle's
            // addresses and the handle drops that block's count (the last
            // one deletes the handle).
            let mut handle_gone = false;
            for (cidr_s, count) in &h.value.block {
                let Ok(cidr) = cidr_s.parse::<IpNetwork>() else {
                    continue;
                };
                let r = self
                    .modify_block_and_handles(&cidr, |b| {
                        let ips = b.release_handle(handle_id, now);
                        Ok(if ips.is_empty() {
                            Step::Skip((ips, false))
                        } else {
                            let n = -(ips.len() as i64);
                            let deltas = HandleDeltas::from([(handle_id.to_string(), n)]);
                            Step::Write((ips, true), deltas)
                        })
                    })
                    .await?;
                if let Some((ips, wrote)) = r {
                    // The handle counted exactly these and nothing else:
                    // the transaction deleted it.
                    handle_gone = wrote && h.value.block.len() == 1 && *count == ips.len() as u64;
                    freed.extend(ips);
                }
            }
            if handle_gone {
                return Ok(freed);
            }
            let Some(h) = self.rw.get_handle(handle_id).await? else {
                return Ok(freed);
            };
            // Blocks no longer holding what the handle counted (left by a
            // crash of an older version, or a concurrent writer): drop them.
            match self
                .rw
                .delete_raw(&crate::keys::handle(handle_id), Some(h.revision))
                .await
            {
                Ok(_) => return Ok(freed),
                // Someone changed the handle meanwhile (a concurrent assign
                // with the same handle): go round again.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => {
                    return Err(IpamError::store(format!("deleting handle {handle_id}"), e));
                }
            }
        }
        Err(IpamError::Contention {
            what: format!("handle {handle_id}"),
            attempts: self.opts.max_retries,
        })
    }
}
