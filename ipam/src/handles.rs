//! Handle bookkeeping: per-handle, per-block address counts (CAS, retried).

use std::collections::BTreeMap;

use datastore::model::ipam::IPAMHandle;
use ipnetwork::IpNetwork;

use crate::allocator::Ipam;
use crate::blockrw::is_conflict;
use crate::error::{IpamError, Result};

impl Ipam {
    /// Add `delta` to `handle`'s count for `cidr` (creating / deleting the
    /// handle as needed). CAS, retried.
    pub(crate) async fn handle_add(
        &self,
        handle: &str,
        cidr: &IpNetwork,
        delta: i64,
    ) -> Result<()> {
        let key = crate::keys::handle(handle);
        let cidr_s = cidr.to_string();
        // Fresh handles are the common case (one per pod): try create first.
        let mut try_create = delta > 0;
        for _ in 0..self.opts.max_retries {
            if try_create {
                let h = IPAMHandle {
                    handle_id: handle.to_string(),
                    block: BTreeMap::from([(cidr_s.clone(), delta as u64)]),
                    deleted: false,
                };
                match self.rw.create_raw(&key, &h).await {
                    Ok(_) => return Ok(()),
                    Err(e) if is_conflict(&e) => try_create = false,
                    Err(e) => return Err(IpamError::store(format!("creating handle {handle}"), e)),
                }
            }
            let Some(cur) = self.rw.get_handle(handle).await? else {
                if delta <= 0 {
                    return Ok(());
                }
                try_create = true;
                continue;
            };
            let mut h = cur.value;
            let count = h.block.get(&cidr_s).copied().unwrap_or(0) as i64 + delta;
            if count > 0 {
                h.block.insert(cidr_s.clone(), count as u64);
            } else {
                h.block.remove(&cidr_s);
            }
            let res = if h.block.is_empty() {
                self.rw.delete_raw(&key, Some(cur.revision)).await
            } else {
                self.rw.update_raw(&key, &h, cur.revision).await
            };
            match res {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(IpamError::store(format!("updating handle {handle}"), e)),
            }
        }
        Err(IpamError::Contention {
            what: format!("handle {handle}"),
            attempts: self.opts.max_retries,
        })
    }
}
