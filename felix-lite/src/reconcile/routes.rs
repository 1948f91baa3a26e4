//! The route-table reconciler. It owns the routes of the main table whose protocol is
//! [`MANX_ROUTE_PROTOCOL`], keeps a cache of what it believes the kernel holds, and writes
//! only the difference, batched. A full resync (at start, periodically, after errors) dumps
//! the kernel first, so stale Manx routes from an earlier run are purged and routes changed
//! behind our back are repaired. Routes of any other protocol are never written.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::MANX_ROUTE_PROTOCOL;
use crate::netlink::{
    KernelNextHop, KernelRoute, Netlink, NlError, RT_TABLE_MAIN, RouteKind, RouteOp, Scope,
};

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// Routes added.
    pub added: usize,
    /// Routes replaced (changed, or `EEXIST` on add).
    pub replaced: usize,
    /// Routes deleted (including ones already gone).
    pub deleted: usize,
    /// Writes that failed.
    pub errors: Vec<NlError>,
    /// The destinations of failed adds and replaces, with the error.
    pub failed: Vec<(IpNetwork, String)>,
    /// Guarded destinations (see [`RouteReconciler::apply_guarded`]) whose add found a
    /// route of another protocol in the way: left alone, not replaced.
    pub refused: Vec<IpNetwork>,
}

/// Whether the kernel's route already does what the desired one asks. Ignores what the kernel
/// fills in by itself: IPv6 metric 1024, IPv6 scope, the `lo` device of IPv6 blackholes.
pub fn same_forwarding(desired: &KernelRoute, actual: &KernelRoute) -> bool {
    if desired.kind != actual.kind {
        return false;
    }
    if desired.kind == RouteKind::Blackhole {
        return true;
    }
    let v4 = desired.dst.is_ipv4();
    // A multipath route's hops compare as a set: the kernel may list them in its own order.
    let hops = |r: &KernelRoute| {
        let mut h = r.multipath.clone();
        h.sort_unstable();
        h
    };
    desired.gateway == actual.gateway
        && desired.oif == actual.oif
        && desired.onlink == actual.onlink
        && (!v4 || desired.scope == actual.scope)
        && (desired.multipath.len() == actual.multipath.len() && hops(desired) == hops(actual))
}

/// A kernel route for felix-lite: main table, Manx protocol.
pub fn manx_route(
    dst: IpNetwork,
    kind: RouteKind,
    gateway: Option<IpAddr>,
    oif: Option<u32>,
    onlink: bool,
) -> KernelRoute {
    // Device routes without a gateway are link-scoped (`scope link`); IPv6 has no scopes.
    let scope = if dst.is_ipv4() && kind == RouteKind::Unicast && gateway.is_none() {
        Scope::Link
    } else {
        Scope::Universe
    };
    KernelRoute {
        dst,
        kind,
        gateway,
        oif,
        onlink,
        scope,
        protocol: MANX_ROUTE_PROTOCOL,
        table: RT_TABLE_MAIN,
        metric: 0,
        multipath: Vec::new(),
    }
}

/// A multipath kernel route for felix-lite (`nexthop via A dev X nexthop via B dev Y`):
/// main table, Manx protocol, the hops in the order given.
pub fn manx_multipath_route(dst: IpNetwork, hops: Vec<KernelNextHop>) -> KernelRoute {
    KernelRoute {
        multipath: hops,
        scope: Scope::Universe,
        ..manx_route(dst, RouteKind::Unicast, None, None, false)
    }
}

/// A small multiplicative hasher (the Fx hash of rustc) for prefix keys: route tables hold
/// 100k entries and SipHash dominated the diff time. Keys are our own prefixes, not
/// attacker-chosen, so DoS resistance is not needed.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // murmur3's fmix64: spreads entropy to the low bits hashbrown indexes with.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A route map keyed by destination, with the fast hasher.
pub type RouteMap = HashMap<IpNetwork, KernelRoute, BuildHasherDefault<FxHasher>>;

/// The reconciler. Keep one per kernel.
#[derive(Debug, Default)]
pub struct RouteReconciler {
    /// Our routes as we believe the kernel has them.
    cache: RouteMap,
    /// Extra Manx routes for a destination already in the cache (other metrics): purged.
    duplicates: Vec<KernelRoute>,
    synced: bool,
}

impl RouteReconciler {
    /// A reconciler that will resync on its first apply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a full resync has happened.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Number of routes believed installed.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether no route is believed installed.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Reload the cache from the kernel: only routes with the Manx protocol in the main table.
    pub async fn resync<N: Netlink + ?Sized>(&mut self, nl: &N) -> Result<(), NlError> {
        let routes = nl.routes().await?;
        self.load(routes);
        Ok(())
    }

    /// [`Self::resync`] from a dump the caller just made (so one dump serves two readers).
    pub fn load(&mut self, routes: Vec<KernelRoute>) {
        self.cache.clear();
        self.duplicates.clear();
        for r in routes {
            if r.protocol != MANX_ROUTE_PROTOCOL || r.table != RT_TABLE_MAIN {
                continue;
            }
            match self.cache.entry(r.dst) {
                std::collections::hash_map::Entry::Occupied(_) => self.duplicates.push(r),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(r);
                }
            }
        }
        self.synced = true;
    }

    /// Make the kernel's Manx routes equal `desired`. With `full`, resync from the kernel
    /// first. Returns what was done; failed writes are in `errors` (the caller should resync
    /// soon), and a failed dump is an `Err`.
    pub async fn apply<N: Netlink + ?Sized, H: BuildHasher>(
        &mut self,
        nl: &N,
        desired: &HashMap<IpNetwork, KernelRoute, H>,
        full: bool,
    ) -> Result<RouteStats, NlError> {
        self.apply_guarded(nl, desired, full, &HashSet::new()).await
    }

    /// [`Self::apply`], except that a destination in `guarded` never takes over a route
    /// of another protocol: an add that finds one (`EEXIST`) is left undone and listed in
    /// [`RouteStats::refused`], where other routes are replaced (a CNI-made workload route
    /// is Manx's to take). For routes learnt from outside the cluster, which must not
    /// replace the host's own.
    pub async fn apply_guarded<N: Netlink + ?Sized, H: BuildHasher, G: BuildHasher>(
        &mut self,
        nl: &N,
        desired: &HashMap<IpNetwork, KernelRoute, H>,
        full: bool,
        guarded: &HashSet<IpNetwork, G>,
    ) -> Result<RouteStats, NlError> {
        if full || !self.synced {
            self.resync(nl).await?;
        }
        let mut ops = Vec::new();
        for r in self.duplicates.drain(..) {
            ops.push(RouteOp::Delete(r));
        }
        let mut matched = 0;
        for (dst, want) in desired {
            match self.cache.get(dst) {
                None => ops.push(RouteOp::Add(want.clone())),
                Some(have) => {
                    matched += 1;
                    if !same_forwarding(want, have) {
                        ops.push(RouteOp::Replace(want.clone()))
                    }
                }
            }
        }
        // Every cached route was matched by a desired one: nothing to delete, skip the scan.
        if matched != self.cache.len() {
            for (dst, have) in &self.cache {
                if !desired.contains_key(dst) {
                    ops.push(RouteOp::Delete(have.clone()));
                }
            }
        }
        let mut stats = RouteStats::default();
        if ops.is_empty() {
            return Ok(stats);
        }
        tracing::debug!(ops = ops.len(), "programming routes");
        let results = nl.apply_routes(ops.clone()).await;
        let mut retries = Vec::new();
        for (op, res) in ops.into_iter().zip(results) {
            match (op, res) {
                (RouteOp::Add(r), Ok(())) => {
                    stats.added += 1;
                    self.cache.insert(r.dst, r);
                }
                (RouteOp::Replace(r), Ok(())) => {
                    stats.replaced += 1;
                    self.cache.insert(r.dst, r);
                }
                (RouteOp::Delete(r), Ok(())) => {
                    stats.deleted += 1;
                    self.forget(&r);
                }
                // Someone else's route holds the key, and this one must not replace it.
                (RouteOp::Add(r), Err(e)) if e.is_exists() && guarded.contains(&r.dst) => {
                    tracing::debug!(route = %r, "a route of another protocol holds the key; not replaced");
                    stats.refused.push(r.dst);
                }
                // Someone else's route (or one we lost track of) holds the key: take it over.
                (RouteOp::Add(r), Err(e)) if e.is_exists() => retries.push(RouteOp::Replace(r)),
                // Already gone counts as deleted.
                (RouteOp::Delete(r), Err(e)) if e.is_not_found() => {
                    stats.deleted += 1;
                    self.forget(&r);
                }
                (op, Err(e)) => {
                    tracing::warn!(error = %e, "route write failed; will resync");
                    match op {
                        RouteOp::Replace(r) => {
                            // Unknown state now: the next resync tells.
                            self.cache.remove(&r.dst);
                            stats.failed.push((r.dst, e.to_string()));
                        }
                        RouteOp::Add(r) => stats.failed.push((r.dst, e.to_string())),
                        RouteOp::Delete(_) => {}
                    }
                    stats.errors.push(e);
                }
            }
        }
        if !retries.is_empty() {
            let results = nl.apply_routes(retries.clone()).await;
            for (op, res) in retries.into_iter().zip(results) {
                let r = op.route().clone();
                match res {
                    Ok(()) => {
                        stats.replaced += 1;
                        self.cache.insert(r.dst, r);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "route replace failed; will resync");
                        stats.failed.push((r.dst, e.to_string()));
                        stats.errors.push(e);
                    }
                }
            }
        }
        Ok(stats)
    }

    fn forget(&mut self, r: &KernelRoute) {
        if self.cache.get(&r.dst) == Some(r) {
            self.cache.remove(&r.dst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{ESRCH, MemNetlink, Op};

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn desired_blocks(n: u32, oif: u32) -> HashMap<IpNetwork, KernelRoute> {
        (0..n)
            .map(|i| {
                let dst = net(&format!("10.19.{}.{}/26", i / 4, (i % 4) * 64));
                let gw = Some(format!("198.19.0.{}", 2 + i % 200).parse().unwrap());
                (
                    dst,
                    manx_route(dst, RouteKind::Unicast, gw, Some(oif), false),
                )
            })
            .collect()
    }

    fn other_proto(dst: &str, proto: u8) -> KernelRoute {
        KernelRoute {
            protocol: proto,
            ..manx_route(net(dst), RouteKind::Blackhole, None, None, false)
        }
    }

    #[tokio::test]
    async fn restart_with_unchanged_desired_state_writes_nothing() {
        let nl = MemNetlink::new();
        let eth = nl.add_host_link("eth0", 1500, &[net("198.19.0.1/24")]);
        let desired = desired_blocks(300, eth);
        let mut r = RouteReconciler::new();
        let s = r.apply(&nl, &desired, true).await.unwrap();
        assert_eq!(s.added, 300);
        // Same process, periodic full resync.
        nl.clear_log();
        let s = r.apply(&nl, &desired, true).await.unwrap();
        assert_eq!(s, RouteStats::default());
        assert_eq!(nl.writes(), 0);
        // A new process (fresh reconciler) starting over the same kernel.
        let mut fresh = RouteReconciler::new();
        let s = fresh.apply(&nl, &desired, false).await.unwrap();
        assert_eq!(s, RouteStats::default());
        assert_eq!(nl.writes(), 0);
        assert_eq!(nl.log(), vec![Op::DumpRoutes, Op::DumpRoutes]);
    }

    #[tokio::test]
    async fn stale_manx_routes_are_purged_and_other_protocols_untouched() {
        let nl = MemNetlink::new();
        let eth = nl.add_host_link("eth0", 1500, &[net("198.19.0.1/24")]);
        nl.insert_route(other_proto("10.99.0.0/24", MANX_ROUTE_PROTOCOL)); // stale, ours
        nl.insert_route(other_proto("10.98.0.0/24", 12)); // bird's
        nl.insert_route(other_proto("10.97.0.0/24", 80)); // Calico felix's
        let desired = desired_blocks(2, eth);
        let mut r = RouteReconciler::new();
        let s = r.apply(&nl, &desired, true).await.unwrap();
        assert_eq!((s.added, s.deleted, s.replaced), (2, 1, 0));
        let table = nl.route_table();
        assert!(!table.iter().any(|x| x.dst == net("10.99.0.0/24")));
        assert!(
            table
                .iter()
                .any(|x| x.dst == net("10.98.0.0/24") && x.protocol == 12)
        );
        assert!(
            table
                .iter()
                .any(|x| x.dst == net("10.97.0.0/24") && x.protocol == 80)
        );
        // No write ever named the foreign routes.
        for op in nl.log() {
            if let Op::Route(op) = op {
                assert_eq!(op.route().protocol, MANX_ROUTE_PROTOCOL);
            }
        }
    }

    #[tokio::test]
    async fn changed_routes_are_replaced_and_removed_ones_deleted() {
        let nl = MemNetlink::new();
        let eth = nl.add_host_link("eth0", 1500, &[]);
        let mut desired = desired_blocks(10, eth);
        let mut r = RouteReconciler::new();
        r.apply(&nl, &desired, true).await.unwrap();
        let first = net("10.19.0.0/26");
        desired.get_mut(&first).unwrap().gateway = Some("198.19.0.250".parse().unwrap());
        desired.remove(&net("10.19.0.64/26"));
        nl.clear_log();
        let s = r.apply(&nl, &desired, false).await.unwrap();
        assert_eq!((s.added, s.replaced, s.deleted), (0, 1, 1));
        assert_eq!(nl.writes(), 2);
        let table = nl.route_table();
        assert_eq!(table.len(), 9);
        assert_eq!(
            table.iter().find(|x| x.dst == first).unwrap().gateway,
            Some("198.19.0.250".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn exists_on_add_becomes_replace() {
        let nl = MemNetlink::new();
        let eth = nl.add_host_link("eth0", 1500, &[]);
        // A CNI-made route of another protocol holds the workload's /32.
        nl.insert_route(KernelRoute {
            protocol: 3,
            ..manx_route(
                net("10.19.0.5/32"),
                RouteKind::Unicast,
                None,
                Some(eth),
                false,
            )
        });
        let mut desired = HashMap::new();
        let dst = net("10.19.0.5/32");
        desired.insert(
            dst,
            manx_route(dst, RouteKind::Unicast, None, Some(eth), false),
        );
        let mut r = RouteReconciler::new();
        let s = r.apply(&nl, &desired, true).await.unwrap();
        assert_eq!((s.added, s.replaced), (0, 1));
        assert!(s.errors.is_empty());
        let table = nl.route_table();
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].protocol, MANX_ROUTE_PROTOCOL);
    }

    #[tokio::test]
    async fn a_guarded_destination_never_takes_over_another_protocol() {
        let nl = MemNetlink::new();
        let eth = nl.add_host_link("eth0", 1500, &[]);
        let host = KernelRoute {
            protocol: 3,
            ..manx_route(
                net("0.0.0.0/0"),
                RouteKind::Unicast,
                Some("198.19.0.1".parse().unwrap()),
                Some(eth),
                false,
            )
        };
        nl.insert_route(host.clone());
        let dst = net("0.0.0.0/0");
        let gw = Some("198.19.0.254".parse().unwrap());
        let desired = HashMap::from([(
            dst,
            manx_route(dst, RouteKind::Unicast, gw, Some(eth), false),
        )]);
        let mut r = RouteReconciler::new();
        let s = r
            .apply_guarded(&nl, &desired, true, &HashSet::from([dst]))
            .await
            .unwrap();
        assert_eq!((s.added, s.replaced, s.refused), (0, 0, vec![dst]));
        assert!(s.errors.is_empty());
        assert_eq!(nl.route_table(), vec![host]);
        // Unguarded, the same add takes the key over (a workload's CNI route).
        let s = r.apply(&nl, &desired, true).await.unwrap();
        assert_eq!(s.replaced, 1);
    }

    #[tokio::test]
    async fn no_such_route_on_delete_counts_as_done() {
        let nl = MemNetlink::new();
        let eth = nl.add_host_link("eth0", 1500, &[]);
        let desired = desired_blocks(3, eth);
        let mut r = RouteReconciler::new();
        r.apply(&nl, &desired, true).await.unwrap();
        let victim = net("10.19.0.0/26");
        nl.fail_route(victim, ESRCH);
        let mut smaller = desired.clone();
        smaller.remove(&victim);
        let s = r.apply(&nl, &smaller, false).await.unwrap();
        assert_eq!(s.deleted, 1);
        assert!(s.errors.is_empty());
        assert_eq!(r.len(), 2);
    }

    #[tokio::test]
    async fn failed_write_is_reported_and_repaired_by_resync() {
        let nl = MemNetlink::new();
        let eth = nl.add_host_link("eth0", 1500, &[]);
        let desired = desired_blocks(3, eth);
        let victim = net("10.19.0.64/26");
        nl.fail_route(victim, libc::ENOMEM);
        let mut r = RouteReconciler::new();
        let s = r.apply(&nl, &desired, true).await.unwrap();
        assert_eq!(s.added, 2);
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].errno, Some(libc::ENOMEM));
        nl.fail_route(victim, 0);
        let s = r.apply(&nl, &desired, true).await.unwrap();
        assert_eq!(s.added, 1);
        assert_eq!(nl.route_table().len(), 3);
    }

    #[tokio::test]
    async fn routes_changed_behind_our_back_are_fixed_on_full_resync_only() {
        let nl = MemNetlink::new();
        let eth = nl.add_host_link("eth0", 1500, &[]);
        let desired = desired_blocks(2, eth);
        let mut r = RouteReconciler::new();
        r.apply(&nl, &desired, true).await.unwrap();
        // An admin deletes one of our routes.
        let gone = net("10.19.0.0/26");
        nl.apply_routes(vec![RouteOp::Delete(desired[&gone].clone())])
            .await
            .into_iter()
            .for_each(|x| x.unwrap());
        nl.clear_log();
        let s = r.apply(&nl, &desired, false).await.unwrap();
        assert_eq!(s.added, 0, "incremental apply trusts the cache");
        let s = r.apply(&nl, &desired, true).await.unwrap();
        assert_eq!(s.added, 1);
        assert_eq!(nl.writes(), 1);
    }

    #[test]
    fn ipv6_routes_compare_without_kernel_defaults() {
        let dst = net("fd42:19:1::5/128");
        let want = manx_route(dst, RouteKind::Unicast, None, Some(4), false);
        let have = KernelRoute {
            metric: 1024,
            scope: Scope::Universe,
            ..want.clone()
        };
        assert!(same_forwarding(&want, &have));
        let bh = manx_route(
            net("fd42:19:1::/122"),
            RouteKind::Blackhole,
            None,
            None,
            false,
        );
        let have = KernelRoute {
            oif: Some(1),
            ..bh.clone()
        };
        assert!(same_forwarding(&bh, &have));
    }

    fn kernel_manx_routes(nl: &MemNetlink) -> HashMap<IpNetwork, KernelRoute> {
        nl.route_table()
            .into_iter()
            .filter(|r| r.protocol == MANX_ROUTE_PROTOCOL)
            .map(|r| (r.dst, r))
            .collect()
    }

    proptest::proptest! {
        // Any sequence of desired states converges exactly (foreign routes untouched), and
        // re-applying a converged state, incrementally or after a resync, writes nothing.
        #[test]
        fn any_sequence_of_desired_states_converges(
            states in proptest::collection::vec(
                proptest::collection::btree_map(0u8..40, (0u8..3, proptest::bool::ANY), 0..25),
                1..6,
            ),
            full in proptest::collection::vec(proptest::bool::ANY, 6),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(async {
                let nl = MemNetlink::new();
                let eth = nl.add_host_link("eth0", 1500, &[]);
                let cali = nl.add_host_link("cali1", 1500, &[]);
                nl.insert_route(other_proto("10.19.250.0/24", 12));
                let mut r = RouteReconciler::new();
                for (step, state) in states.iter().enumerate() {
                    let desired: HashMap<IpNetwork, KernelRoute> = state
                        .iter()
                        .map(|(k, (shape, alt))| {
                            let dst = net(&format!("10.19.{k}.0/26"));
                            let gw = if *alt { "198.19.0.3" } else { "198.19.0.2" };
                            let route = match shape {
                                0 => manx_route(dst, RouteKind::Blackhole, None, None, false),
                                1 => manx_route(
                                    dst,
                                    RouteKind::Unicast,
                                    None,
                                    Some(if *alt { cali } else { eth }),
                                    false,
                                ),
                                _ => manx_route(
                                    dst,
                                    RouteKind::Unicast,
                                    Some(gw.parse().unwrap()),
                                    Some(eth),
                                    *alt,
                                ),
                            };
                            (dst, route)
                        })
                        .collect();
                    let s = r.apply(&nl, &desired, full[step]).await.unwrap();
                    proptest::prop_assert!(s.errors.is_empty());
                    let have = kernel_manx_routes(&nl);
                    proptest::prop_assert_eq!(have.len(), desired.len());
                    for (dst, want) in &desired {
                        proptest::prop_assert!(same_forwarding(want, &have[dst]));
                    }
                    nl.clear_log();
                    r.apply(&nl, &desired, false).await.unwrap();
                    r.apply(&nl, &desired, true).await.unwrap();
                    proptest::prop_assert_eq!(nl.writes(), 0);
                }
                proptest::prop_assert!(
                    nl.route_table().iter().any(|x| x.protocol == 12),
                    "foreign route removed"
                );
                Ok(())
            })?;
        }
    }
}
