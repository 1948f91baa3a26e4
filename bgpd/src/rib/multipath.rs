//! Multipath (ECMP): which equal paths of a prefix are merged with its best
//! path into one multipath kernel route. BIRD's `merge paths` is the
//! reference (`bgp_rte_mergable`): a path merges with the best if the
//! decision process of RFC 4271 §9.1.2.2 cannot tell them apart up to and
//! including the IGP-cost step (e), i.e. same degree of preference
//! (LOCAL_PREF), (a) AS_PATH length, (b) ORIGIN, (c) MED when both come from
//! the same neighbouring AS, (d) both eBGP or both iBGP; (e) is equal here
//! (every next hop is one hop away). The tie-breaks after (e) (BGP
//! identifier, CLUSTER_LIST length, peer address) pick which of the merged
//! paths is *the* best path (the one exported), not whether they merge.
//! As FRR and Junos, the paths must also come from the same neighbouring AS
//! unless `relax_neighbor_as` (FRR's `bestpath as-path multipath-relax`).
//! Only the kernel route is multipath: export still sends one path.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Candidate;
use super::export::DEFAULT_LOCAL_PREF;

/// Which equal paths become one multipath kernel route (Manx's
/// `BGPConfiguration.spec.multipath`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Multipath {
    /// Merge equal eBGP paths (two ToRs): default on.
    pub ebgp: bool,
    /// Merge equal iBGP paths: default off.
    pub ibgp: bool,
    /// Merge eBGP paths from different neighbouring ASes (per-ToR AS
    /// designs): default off.
    #[serde(rename = "relaxNeighborAS")]
    pub relax_neighbor_as: bool,
}

impl Default for Multipath {
    fn default() -> Self {
        Multipath {
            ebgp: true,
            ibgp: false,
            relax_neighbor_as: false,
        }
    }
}

impl Multipath {
    /// No merging at all: one next hop per prefix.
    pub const OFF: Multipath = Multipath {
        ebgp: false,
        ibgp: false,
        relax_neighbor_as: false,
    };

    /// Whether paths of this kind (iBGP or eBGP) can merge at all.
    fn enabled_for(&self, ibgp: bool) -> bool {
        if ibgp { self.ibgp } else { self.ebgp }
    }

    /// The next hops of the paths merged with `best` (its own included),
    /// sorted and without duplicates; `None` when that is a single one.
    pub(super) fn next_hops(
        &self,
        best: &Candidate<'_>,
        candidates: &[Candidate<'_>],
        local_as: u32,
    ) -> Option<Box<[IpAddr]>> {
        if !self.enabled_for(best.meta.ibgp) || candidates.len() < 2 {
            return None;
        }
        let mut hops: Vec<IpAddr> = candidates
            .iter()
            .filter(|c| self.mergeable(best, c, local_as))
            .filter_map(|c| c.attrs.next_hop)
            .collect();
        hops.sort_unstable();
        hops.dedup();
        (hops.len() > 1).then(|| hops.into_boxed_slice())
    }

    /// Whether `other` is equal to `best` up to and including §9.1.2.2 (e).
    fn mergeable(&self, best: &Candidate<'_>, other: &Candidate<'_>, local_as: u32) -> bool {
        let (a, b) = (&best.attrs, &other.attrs);
        let neighbour = |c: &Candidate<'_>| c.attrs.as_path.first_as().unwrap_or(local_as);
        let same_neighbour = neighbour(best) == neighbour(other);
        best.meta.ibgp == other.meta.ibgp
            && a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
                == b.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
            && a.as_path.path_len() == b.as_path.path_len()
            && a.origin == b.origin
            && (!same_neighbour || a.med.unwrap_or(0) == b.med.unwrap_or(0))
            && (same_neighbour || self.relax_neighbor_as)
    }
}
