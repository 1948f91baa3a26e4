//! The one-line explanation of why no address could be found.

use std::sync::Arc;

use datastore::model::ipam::IPAMConfig;
use ipnetwork::IpNetwork;

use crate::allocator::{Ipam, is_reserved};
use crate::block::Block;
use crate::error::Result;
use crate::topology::Pool;

impl Ipam {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn explain_exhaustion(
        &self,
        node: &str,
        pools: &[Pool],
        cfg: &IPAMConfig,
        max_blocks: u32,
        v6: bool,
        n: usize,
        reserved: &Arc<Vec<IpNetwork>>,
    ) -> Result<String> {
        let blocks = self.rw.list_blocks().await?;
        let mut parts = Vec::new();
        for p in pools {
            let total = p.block_count();
            let in_pool: Vec<&Block> = blocks
                .iter()
                .map(|b| &b.value)
                .filter(|b| b.cidr().is_ipv6() == v6 && p.cidr.contains(b.cidr().network()))
                .collect();
            let own = in_pool
                .iter()
                .filter(|b| b.affine_node() == Some(node))
                .count();
            let others = in_pool
                .iter()
                .filter(|b| b.affine_node().is_some_and(|a| a != node))
                .count();
            let free_own: u32 = in_pool
                .iter()
                .filter(|b| b.affine_node() == Some(node))
                .map(|b| b.available(&|ip| is_reserved(reserved, ip)))
                .sum();
            let free_other: u32 = in_pool
                .iter()
                .filter(|b| b.affine_node() != Some(node))
                .map(|b| b.available(&|ip| is_reserved(reserved, ip)))
                .sum();
            let mut s = format!("pool {} has {total} blocks", p.cidr);
            if in_pool.len() as u128 == total && own == 0 && others as u128 == total {
                s.push_str(", all affine to other nodes");
            } else {
                s.push_str(&format!(
                    " ({own} affine to {node} with {free_own} free, {others} affine to other nodes, {} unclaimed)",
                    total - in_pool.len() as u128
                ));
            }
            if cfg.strict_affinity && (free_other > 0 || others > 0) {
                s.push_str(", and strictAffinity is on");
            } else if free_other == 0 && others > 0 {
                s.push_str(", and every other block is full");
            }
            parts.push(s);
        }
        if max_blocks > 0 {
            parts.push(format!("node {node} is at maxBlocksPerHost={max_blocks}"));
        }
        if !cfg.auto_allocate_blocks {
            parts.push("autoAllocateBlocks is off".into());
        }
        Ok(format!("wanted {n}: {}", parts.join("; ")))
    }
}
