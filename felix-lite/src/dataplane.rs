//! The dataplane: one owner of felix-lite's state. manx-node feeds it [`DataplaneInput`]s;
//! it computes the desired state and drives the reconcilers.
//!
//! ```text
//!  manx-node ──watch<DataplaneInput>──► Dataplane::run ──► calc::compute
//!                                            │                 │ DesiredDataplane
//!                     Clock (resync due?) ───┤                 ▼
//!                                            ├─► LinkReconciler   (tunl0, vxlan.manx, addrs)
//!                                            ├─► NeighbourReconciler (ARP + FDB on vxlan.manx)
//!                                            ├─► RouteReconciler  (proto 77, batched)
//!                                            ├─► sysctls          (/proc/sys)
//!                                            └─► NatReconciler    (nft table manx)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;

use crate::calc::{
    self, DegradeReason, DesiredDataplane, ExternalOutcome, KernelView, NextHop, TunnelDevice,
};
use crate::clock::Clock;
use crate::nat::{NatBackend, NatError, NatReconciler};
use crate::netlink::{
    ENOENT, EOPNOTSUPP, KernelLink, KernelNextHop, LinkKind, LinkSpec, NeighTable, Neighbour,
    Netlink, NlError, RouteKind, RouteOp,
};
use crate::reconcile::routes::{RouteMap, manx_multipath_route, manx_route};
use crate::reconcile::{LinkReconciler, NeighbourReconciler, RouteReconciler};
use crate::sysctl::{self, Sysctls};
use crate::tunnel::Tunnel;
use crate::tunnel::wireguard::{self, PrivateKey, WireguardDevice, WireguardSocket};
use crate::types::{DataplaneInput, MacAddr};
use crate::{VXLAN_PORT, VXLAN_VNI};

/// Where manx-node keeps this node's WireGuard private key unless configured otherwise.
pub const DEFAULT_WIREGUARD_KEY_FILE: &str = "/var/lib/manx/wireguard.key";

/// Settings that do not come from the datastore's per-object resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// Tunnel device MTUs; default the uplink MTU minus [`Tunnel::overhead`] (20 IPIP,
    /// 50 VXLAN, 70 VXLAN over IPv6).
    pub tunnel_mtu: BTreeMap<Tunnel, u32>,
    /// Tunnel device MACs; default [`Tunnel::default_mac`], derived from the node name
    /// (`<node>` for `vxlan.manx`, `<node>/v6` for `vxlan-v6.manx`).
    pub tunnel_mac: BTreeMap<Tunnel, MacAddr>,
    /// VXLAN network identifier.
    pub vxlan_vni: u32,
    /// VXLAN UDP port.
    pub vxlan_port: u16,
    /// Full resync period.
    pub resync_interval: Duration,
    /// First retry after a failed apply; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// While there are routes from outside the pools, how often the kernel's addresses and
    /// other routes are read again to resolve their next hops (BIRD's kernel `scan time`;
    /// calico-node's is 2 s).
    pub kernel_scan_interval: Duration,
    /// `rp_filter` for workload interfaces: "1" strict (Calico's default) or "2" loose.
    pub workload_rp_filter: &'static str,
    /// Program NAT outgoing.
    pub nat: bool,
    /// This node's WireGuard private key file (created 0600 when WireGuard is first on).
    pub wireguard_key_file: std::path::PathBuf,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            tunnel_mtu: BTreeMap::new(),
            tunnel_mac: BTreeMap::new(),
            vxlan_vni: VXLAN_VNI,
            vxlan_port: VXLAN_PORT,
            resync_interval: Duration::from_secs(90),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            kernel_scan_interval: Duration::from_secs(5),
            workload_rp_filter: "1",
            nat: true,
            wireguard_key_file: std::path::PathBuf::from(DEFAULT_WIREGUARD_KEY_FILE),
        }
    }
}

/// Why `wireguard.manx` could not be brought in line.
#[derive(Debug)]
enum WireguardError {
    /// The kernel has no WireGuard.
    Unsupported,
    /// Anything else (reported with the apply's errors; retried).
    Other(String),
}

/// A fatal failure of one apply (the dataplane keeps its state and retries).
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A netlink dump or device operation failed.
    #[error(transparent)]
    Netlink(#[from] NlError),
    /// nft failed.
    #[error(transparent)]
    Nat(#[from] NatError),
}

/// A pool felix-lite cannot program, for `manxctl node status`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DegradedPool {
    /// The pool.
    pub cidr: IpNetwork,
    /// One-line reason with what to do.
    pub reason: String,
}

/// What became of a route from outside the pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExternalState {
    /// In the kernel.
    Installed,
    /// Its next hop cannot be reached.
    Unreachable,
    /// Installing it would take over or shadow a route it must not.
    Refused,
    /// The kernel refused the write.
    Failed,
}

impl ExternalState {
    /// `installed`, `unreachable`, `refused`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExternalState::Installed => "installed",
            ExternalState::Unreachable => "unreachable",
            ExternalState::Refused => "refused",
            ExternalState::Failed => "failed",
        }
    }
}

/// A best BGP route from outside the pools and what the dataplane made of it, for
/// `manxctl node status --routes`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExternalRouteStatus {
    /// The prefix.
    pub prefix: IpNetwork,
    /// Its BGP next hops (several: ECMP).
    pub next_hops: Vec<IpAddr>,
    /// Installed or not.
    pub state: ExternalState,
    /// Installed: the kernel route (`via 198.19.50.1 dev eth0`, with `, resolved through
    /// <route>` when recursive); otherwise one line saying why not.
    pub detail: String,
}

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Whether the routes were resynced from a kernel dump.
    pub full_resync: bool,
    /// Route writes: added, replaced, deleted.
    pub routes_added: usize,
    /// Routes replaced.
    pub routes_replaced: usize,
    /// Routes deleted.
    pub routes_deleted: usize,
    /// Writes to links, addresses, neighbours and FDB.
    pub link_writes: usize,
    /// Sysctl writes.
    pub sysctl_writes: usize,
    /// nft applies.
    pub nat_writes: usize,
    /// Non-fatal errors (a resync follows).
    pub errors: Vec<String>,
}

impl ApplyReport {
    /// Total writes of every kind.
    pub fn writes(&self) -> usize {
        self.routes_added
            + self.routes_replaced
            + self.routes_deleted
            + self.link_writes
            + self.sysctl_writes
            + self.nat_writes
    }
}

/// The dataplane programmer.
#[derive(Debug)]
pub struct Dataplane<N, S, F, C> {
    nl: N,
    sysctls: S,
    nat_backend: F,
    clock: C,
    cfg: DataplaneConfig,
    routes: RouteReconciler,
    nat: NatReconciler,
    /// Tunnel kinds the kernel has shown it lacks.
    unsupported: BTreeSet<Tunnel>,
    degraded: BTreeMap<IpNetwork, DegradeReason>,
    logged: BTreeSet<(IpNetwork, DegradeReason)>,
    last_full: Option<Instant>,
    needs_resync: bool,
    sysctl_done: HashSet<(String, u32)>,
    globals_done: bool,
    /// The kernel as last read for the routes from outside the pools, and when.
    kernel_view: Option<(KernelView, Instant)>,
    external: Vec<ExternalRouteStatus>,
    /// The `reachableBy` peer routes of the last apply that are not installed, one line each.
    peer_route_problems: Vec<String>,
    wireguard: WireguardState,
}

/// What the dataplane knows of `wireguard.manx`.
#[derive(Debug, Default)]
struct WireguardState {
    /// The kernel has shown it has no WireGuard (logged once).
    unsupported: bool,
    key: Option<PrivateKey>,
    socket: Option<WireguardSocket>,
    /// The configuration last written, to write only changes between resyncs.
    applied: Option<WireguardDevice>,
    /// The public key the kernel computed, base64.
    public_key: Option<String>,
}

impl<N: Netlink, S: Sysctls, F: NatBackend, C: Clock> Dataplane<N, S, F, C> {
    /// A dataplane over the given kernel shims. Nothing is written until [`Self::apply`].
    pub fn new(nl: N, sysctls: S, nat_backend: F, clock: C, cfg: DataplaneConfig) -> Self {
        Dataplane {
            nl,
            sysctls,
            nat_backend,
            clock,
            cfg,
            routes: RouteReconciler::new(),
            nat: NatReconciler::default(),
            unsupported: BTreeSet::new(),
            degraded: BTreeMap::new(),
            logged: BTreeSet::new(),
            last_full: None,
            needs_resync: true,
            sysctl_done: HashSet::new(),
            globals_done: false,
            kernel_view: None,
            external: Vec::new(),
            peer_route_problems: Vec::new(),
            wireguard: WireguardState::default(),
        }
    }

    /// This node's WireGuard public key (base64, as `Node.status.wireguardPublicKey`
    /// carries it), once `wireguard.manx` is configured.
    pub fn wireguard_public_key(&self) -> Option<&str> {
        self.wireguard.public_key.as_deref()
    }

    /// False once the kernel has shown it has no WireGuard.
    pub fn supports_wireguard(&self) -> bool {
        !self.wireguard.unsupported
    }

    /// False once creating the kind's device failed because the kernel lacks it (IPIP).
    pub fn supports(&self, tunnel: Tunnel) -> bool {
        !self.unsupported.contains(&tunnel)
    }

    /// Pools that cannot be programmed on this node, with the reason.
    pub fn degraded_pools(&self) -> Vec<DegradedPool> {
        self.degraded
            .iter()
            .map(|(cidr, r)| DegradedPool {
                cidr: *cidr,
                reason: r.message(cidr),
            })
            .collect()
    }

    /// The routes from outside the pools as of the last apply, in prefix order.
    pub fn external_routes(&self) -> &[ExternalRouteStatus] {
        &self.external
    }

    /// The host routes to `reachableBy` peers of the last apply that are not installed,
    /// one line each saying why.
    pub fn peer_route_problems(&self) -> &[String] {
        &self.peer_route_problems
    }

    /// Before the first [`Self::apply`] (which purges what it does not want): add only the
    /// host routes to `reachableBy` peers, so that their sessions can come up while the
    /// rest of the dataplane waits for BGP to be relearnt. Adds, never replaces: a route
    /// already there (the previous agent's, or another protocol's) stays, and the first
    /// apply reconciles. Returns how many were added.
    pub async fn add_peer_routes(&mut self, input: &DataplaneInput) -> Result<usize, NlError> {
        if input.peer_routes.is_empty() {
            return Ok(0);
        }
        let links = self.nl.links().await?;
        let addrs = self.nl.addresses().await?;
        let routes = self.nl.routes().await?;
        let view = KernelView::from_kernel(&links, &addrs, &routes);
        let only_peers = DataplaneInput {
            node_name: input.node_name.clone(),
            uplink: input.uplink.clone(),
            tunnel_addrs: input.tunnel_addrs.clone(),
            peer_routes: input.peer_routes.clone(),
            ..DataplaneInput::default()
        };
        let desired = calc::compute_with(&only_peers, &self.cfg, &self.unsupported, &view);
        let ops: Vec<RouteOp> = kernel_routes(&desired, &links)
            .into_values()
            .map(RouteOp::Add)
            .collect();
        let mut added = 0;
        for r in self.nl.apply_routes(ops).await {
            match r {
                Ok(()) => added += 1,
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(added)
    }

    /// The MAC the kind's device gets on this node (record it in the Node resource);
    /// None for kinds without VTEPs.
    pub fn tunnel_mac(&self, tunnel: Tunnel, node_name: &str) -> Option<MacAddr> {
        self.cfg
            .tunnel_mac
            .get(&tunnel)
            .copied()
            .or_else(|| tunnel.default_mac(node_name))
    }

    /// The kernel shim (tests read it).
    pub fn netlink(&self) -> &N {
        &self.nl
    }

    /// Force a full resync on the next apply.
    pub fn request_resync(&mut self) {
        self.needs_resync = true;
    }

    fn scan_due(&self) -> bool {
        self.kernel_view.as_ref().is_none_or(|(_, t)| {
            self.clock.now().saturating_duration_since(*t) >= self.cfg.kernel_scan_interval
        })
    }

    fn compute(&self, input: &DataplaneInput) -> DesiredDataplane {
        let view = self.kernel_view.as_ref().map(|(v, _)| v);
        // Without WireGuard in the kernel, every pool keeps its own encapsulation.
        let plain;
        let input = if self.wireguard.unsupported && input.wireguard.is_some() {
            plain = DataplaneInput {
                wireguard: None,
                ..input.clone()
            };
            &plain
        } else {
            input
        };
        calc::compute_with(
            input,
            &self.cfg,
            &self.unsupported,
            view.unwrap_or(&KernelView::default()),
        )
    }

    fn resync_due(&self) -> bool {
        self.needs_resync
            || self.last_full.is_none_or(|t| {
                self.clock.now().saturating_duration_since(t) >= self.cfg.resync_interval
            })
    }

    /// Bring the kernel in line with `input`. A full resync from kernel dumps happens on the
    /// first call, after errors and every `resync_interval`; other calls write only what
    /// changed since the last one.
    pub async fn apply(&mut self, input: &DataplaneInput) -> Result<ApplyReport, DataplaneError> {
        let full = self.resync_due();
        let res = self.apply_inner(input, full).await;
        match &res {
            Ok(r) if r.errors.is_empty() => {
                if full {
                    self.last_full = Some(self.clock.now());
                    self.needs_resync = false;
                }
            }
            _ => self.needs_resync = true,
        }
        res
    }

    async fn apply_inner(
        &mut self,
        input: &DataplaneInput,
        full: bool,
    ) -> Result<ApplyReport, DataplaneError> {
        let mut report = ApplyReport {
            full_resync: full,
            ..ApplyReport::default()
        };
        if full {
            self.sysctl_done.clear();
            self.globals_done = false;
        }
        let mut links = self.nl.links().await?;
        // Routes from outside the pools resolve through the kernel's other routes: read
        // them when due (one dump serves the route resync below too).
        let mut dumped = None;
        if input.external_routes.is_empty() && input.peer_routes.is_empty() {
            self.kernel_view = None;
        } else if full || self.scan_due() {
            let addrs = self.nl.addresses().await?;
            let routes = self.nl.routes().await?;
            let view = KernelView::from_kernel(&links, &addrs, &routes);
            self.kernel_view = Some((view, self.clock.now()));
            dumped = Some(routes);
        }
        let mut desired = self.compute(input);

        // One device per tunnel kind (tunl0, vxlan.manx, vxlan-v6.manx).
        for tunnel in Tunnel::ALL {
            let Some(dev) = desired.tunnels.get(&tunnel).cloned() else {
                if tunnel.removable() {
                    report.link_writes +=
                        LinkReconciler::remove(&self.nl, &mut links, tunnel.device()).await?;
                }
                continue;
            };
            match self.sync_tunnel(&mut links, tunnel, &dev).await {
                Ok(w) => report.link_writes += w,
                Err(e) if e.errno == Some(EOPNOTSUPP) => {
                    self.unsupported.insert(tunnel);
                    desired = self.compute(input);
                }
                Err(e) => return Err(e.into()),
            }
        }
        match self.sync_wireguard(&mut links, &desired, full).await {
            Ok(w) => report.link_writes += w,
            Err(WireguardError::Unsupported) => desired = self.compute(input),
            Err(WireguardError::Other(e)) => report.errors.push(e),
        }
        self.note_degraded(&desired);

        // Routes. Those from outside the pools never take over another protocol's route.
        let kroutes = kernel_routes(&desired, &links);
        let guarded: HashSet<IpNetwork> = desired
            .external
            .keys()
            .copied()
            .chain(desired.peer_routes.keys().map(|p| IpNetwork::from(*p)))
            .collect();
        let stats = match dumped {
            // The dump is still the kernel's routes if no device came or went since.
            Some(routes) if full && report.link_writes == 0 => {
                self.routes.load(routes);
                self.routes
                    .apply_guarded(&self.nl, &kroutes, false, &guarded)
                    .await?
            }
            _ => {
                self.routes
                    .apply_guarded(&self.nl, &kroutes, full, &guarded)
                    .await?
            }
        };
        self.note_external(&desired, &kroutes, &stats);
        self.note_peer_routes(input, &desired, &stats);
        report.routes_added = stats.added;
        report.routes_replaced = stats.replaced;
        report.routes_deleted = stats.deleted;
        report
            .errors
            .extend(stats.errors.iter().map(ToString::to_string));

        // Sysctls.
        self.apply_sysctls(&desired, &links, &mut report);

        // NAT outgoing.
        if self.cfg.nat {
            match self.nat.apply(&self.nat_backend, &desired.nat, full) {
                Ok(w) => report.nat_writes = w,
                Err(e) => {
                    self.nat.invalidate();
                    report.errors.push(e.to_string());
                }
            }
        }
        if !report.errors.is_empty() {
            tracing::warn!(
                errors = report.errors.len(),
                "dataplane apply had errors; will resync"
            );
        }
        Ok(report)
    }

    /// Create, configure or remove `wireguard.manx` as `desired` says. A kernel without
    /// WireGuard (the link kind or the generic netlink family missing) is logged once and
    /// reported as [`WireguardError::Unsupported`]; the caller then computes without it.
    async fn sync_wireguard(
        &mut self,
        links: &mut Vec<KernelLink>,
        desired: &DesiredDataplane,
        full: bool,
    ) -> Result<usize, WireguardError> {
        let Some(dev) = &desired.wireguard else {
            self.wireguard.applied = None;
            self.wireguard.public_key = None;
            return LinkReconciler::remove(&self.nl, links, wireguard::DEVICE)
                .await
                .map_err(|e| WireguardError::Other(e.to_string()));
        };
        let spec = LinkSpec {
            name: wireguard::DEVICE.into(),
            kind: LinkKind::Other(Some("wireguard".into())),
            mtu: dev.mtu,
            mac: None,
        };
        let mut writes = match LinkReconciler::ensure(&self.nl, links, &spec).await {
            Ok((_, w)) => w,
            Err(e) if e.errno == Some(EOPNOTSUPP) => return Err(self.no_wireguard()),
            Err(e) => return Err(WireguardError::Other(e.to_string())),
        };
        if self.wireguard.socket.is_none() {
            match WireguardSocket::open() {
                Ok(s) => self.wireguard.socket = Some(s),
                Err(e) if e.errno == Some(ENOENT) => {
                    // The link exists (another implementation?) but the family does not.
                    let _ = LinkReconciler::remove(&self.nl, links, wireguard::DEVICE).await;
                    return Err(self.no_wireguard());
                }
                Err(e) => return Err(WireguardError::Other(e.to_string())),
            }
        }
        if self.wireguard.key.is_none() {
            let path = &self.cfg.wireguard_key_file;
            let key = PrivateKey::load_or_create(path).map_err(|e| {
                WireguardError::Other(format!(
                    "WireGuard private key file {}: {e}; manx-node needs it readable and \
                     writable by root (MANX_WIREGUARD_KEY_FILE sets another path)",
                    path.display()
                ))
            })?;
            self.wireguard.key = Some(key);
        }
        if !full && self.wireguard.applied.as_ref() == Some(dev) && writes == 0 {
            return Ok(0);
        }
        let (Some(socket), Some(key)) = (self.wireguard.socket.as_mut(), &self.wireguard.key)
        else {
            return Ok(writes);
        };
        match socket.set_device(wireguard::DEVICE, key, dev) {
            Ok(kernel) => {
                writes += 1;
                let public = kernel.public_key.map(|k| wireguard::base64_encode(&k));
                if public != self.wireguard.public_key {
                    tracing::info!(
                        device = wireguard::DEVICE,
                        public_key = public.as_deref().unwrap_or("-"),
                        peers = dev.peers.len(),
                        "WireGuard configured"
                    );
                }
                self.wireguard.public_key = public;
                self.wireguard.applied = Some(dev.clone());
                Ok(writes)
            }
            Err(e) => {
                self.wireguard.socket = None;
                self.wireguard.applied = None;
                Err(WireguardError::Other(e.to_string()))
            }
        }
    }

    fn no_wireguard(&mut self) -> WireguardError {
        if !self.wireguard.unsupported {
            tracing::warn!("{}", wireguard::unsupported_message());
        }
        self.wireguard.unsupported = true;
        self.wireguard.public_key = None;
        WireguardError::Unsupported
    }

    /// Create/fix one tunnel device with its address and, for kinds with VTEPs, its
    /// neighbour and FDB entries. Returns the writes.
    async fn sync_tunnel(
        &self,
        links: &mut Vec<KernelLink>,
        tunnel: Tunnel,
        dev: &TunnelDevice,
    ) -> Result<usize, NlError> {
        let parent = links.iter().find(|l| l.name == dev.parent).map(|l| l.index);
        let spec = LinkSpec {
            name: tunnel.device().into(),
            kind: tunnel.link_kind(&self.cfg, dev.local, parent),
            mtu: dev.mtu,
            mac: dev.mac,
        };
        let (index, mut writes) = LinkReconciler::ensure(&self.nl, links, &spec).await?;
        let addrs = self.nl.addresses().await?;
        let want: Vec<IpNetwork> = dev.addr.map(IpNetwork::from).into_iter().collect();
        writes += LinkReconciler::ensure_addresses(&self.nl, &addrs, index, !tunnel.ipv6(), &want)
            .await?;
        if !tunnel.has_vteps() {
            return Ok(writes);
        }
        let entries = |m: Vec<(IpAddr, MacAddr)>| -> Vec<Neighbour> {
            m.into_iter()
                .map(|(ip, mac)| Neighbour { index, ip, mac })
                .collect()
        };
        let arp = entries(dev.neighbours.iter().map(|(ip, mac)| (*ip, *mac)).collect());
        writes += NeighbourReconciler::sync(&self.nl, NeighTable::Neigh, index, &arp).await?;
        let fdb = entries(dev.fdb.iter().map(|(mac, ip)| (*ip, *mac)).collect());
        writes += NeighbourReconciler::sync(&self.nl, NeighTable::Fdb, index, &fdb).await?;
        Ok(writes)
    }

    /// Record what became of each route from outside the pools; log each change of state.
    /// Record (and log once each) the `reachableBy` peer routes that are not installed.
    fn note_peer_routes(
        &mut self,
        input: &DataplaneInput,
        desired: &DesiredDataplane,
        stats: &crate::reconcile::RouteStats,
    ) {
        let problems: Vec<String> = desired
            .peer_routes
            .iter()
            .filter_map(|(peer, outcome)| {
                let gw = input.peer_routes.get(peer)?;
                let why = match outcome {
                    Err(why) => why.clone(),
                    Ok(()) if stats.refused.contains(&IpNetwork::from(*peer)) => format!(
                        "kernel already has a route for {} of another protocol; not replaced",
                        IpNetwork::from(*peer)
                    ),
                    Ok(()) => return None,
                };
                Some(format!(
                    "route to BGP peer {peer} via its reachableBy gateway {gw} not installed: {why}"
                ))
            })
            .collect();
        for p in problems
            .iter()
            .filter(|p| !self.peer_route_problems.contains(p))
        {
            tracing::warn!("{p}");
        }
        self.peer_route_problems = problems;
    }

    fn note_external(
        &mut self,
        desired: &DesiredDataplane,
        kroutes: &RouteMap,
        stats: &crate::reconcile::RouteStats,
    ) {
        let failed: HashMap<IpNetwork, &str> =
            stats.failed.iter().map(|(d, e)| (*d, e.as_str())).collect();
        let before: HashMap<IpNetwork, (ExternalState, Vec<IpAddr>)> = self
            .external
            .drain(..)
            .map(|e| (e.prefix, (e.state, e.next_hops)))
            .collect();
        self.external = desired
            .external
            .iter()
            .map(|(prefix, ext)| {
                let (state, detail) = match &ext.outcome {
                    ExternalOutcome::Installed { .. } if stats.refused.contains(prefix) => (
                        ExternalState::Refused,
                        format!(
                            "kernel already has a route for {prefix} of another protocol; not replaced"
                        ),
                    ),
                    ExternalOutcome::Installed { .. } if failed.contains_key(prefix) => (
                        ExternalState::Failed,
                        format!("the kernel refused it: {}", failed[prefix]),
                    ),
                    ExternalOutcome::Installed { through, left_out } => {
                        match desired.routes.get(prefix) {
                            Some(NextHop::Via { gateway, dev, .. })
                                if kroutes.contains_key(prefix) =>
                            {
                                let via = format!("via {gateway} dev {dev}");
                                let mut detail = match through {
                                    Some(t) => format!("{via}, resolved through {t}"),
                                    None => via,
                                };
                                for why in left_out {
                                    detail.push_str(&format!("; left out: {why}"));
                                }
                                (ExternalState::Installed, detail)
                            }
                            Some(NextHop::Multipath(hops)) if kroutes.contains_key(prefix) => {
                                let mut detail = hops
                                    .iter()
                                    .map(|h| format!("nexthop via {} dev {}", h.gateway, h.dev))
                                    .collect::<Vec<_>>()
                                    .join(" ");
                                for why in left_out {
                                    detail.push_str(&format!("; left out: {why}"));
                                }
                                (ExternalState::Installed, detail)
                            }
                            Some(NextHop::Via { dev, .. }) => (
                                ExternalState::Failed,
                                format!("device {dev} is missing"),
                            ),
                            Some(NextHop::Multipath(_)) => (
                                ExternalState::Failed,
                                "a device of the multipath route is missing".into(),
                            ),
                            _ => (ExternalState::Failed, "no route computed".into()),
                        }
                    }
                    ExternalOutcome::Unreachable(why) => (ExternalState::Unreachable, why.clone()),
                    ExternalOutcome::Refused(why) => (ExternalState::Refused, why.clone()),
                };
                ExternalRouteStatus {
                    prefix: *prefix,
                    next_hops: ext.next_hops.clone(),
                    state,
                    detail,
                }
            })
            .collect();
        for e in &self.external {
            if before
                .get(&e.prefix)
                .is_some_and(|(state, hops)| (*state, hops) == (e.state, &e.next_hops))
            {
                continue;
            }
            let next_hop = e
                .next_hops
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",");
            match e.state {
                ExternalState::Installed => tracing::info!(
                    prefix = %e.prefix,
                    next_hop = %next_hop,
                    "BGP route outside the pools installed {}",
                    e.detail
                ),
                _ => tracing::warn!(
                    prefix = %e.prefix,
                    next_hop = %next_hop,
                    state = e.state.as_str(),
                    "BGP route outside the pools not installed: {}",
                    e.detail
                ),
            }
        }
    }

    fn note_degraded(&mut self, desired: &DesiredDataplane) {
        for (cidr, reason) in &desired.degraded {
            // One line per pool and reason for the life of the process, not per resync.
            if self.logged.insert((*cidr, *reason)) {
                tracing::error!("{}", reason.message(cidr));
            }
        }
        self.degraded = desired.degraded.clone();
    }

    fn apply_sysctls(
        &mut self,
        desired: &DesiredDataplane,
        links: &[KernelLink],
        report: &mut ApplyReport,
    ) {
        let set = |path: &str, value: &str, report: &mut ApplyReport| -> bool {
            match sysctl::ensure(&self.sysctls, path, value) {
                Ok(true) => {
                    report.sysctl_writes += 1;
                    true
                }
                Ok(false) => true,
                // The interface went away between dump and write: not an error.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => {
                    report.errors.push(format!("sysctl {path}={value}: {e}"));
                    false
                }
            }
        };
        if !self.globals_done {
            let mut ok = true;
            for (path, value) in sysctl::global_settings(desired.ipv6) {
                ok &= set(&path, value, report);
            }
            self.globals_done = ok;
        }
        let index: HashMap<&str, u32> = links.iter().map(|l| (l.name.as_str(), l.index)).collect();
        let mut live = HashSet::new();
        for (iface, (v4, v6)) in &desired.workload_ifaces {
            let Some(idx) = index.get(iface.as_str()) else {
                continue;
            };
            let key = (iface.clone(), *idx);
            live.insert(key.clone());
            if self.sysctl_done.contains(&key) {
                continue;
            }
            let mut ok = true;
            for (path, value) in
                sysctl::workload_settings(iface, *v4, *v6, self.cfg.workload_rp_filter)
            {
                ok &= set(&path, value, report);
            }
            if ok {
                self.sysctl_done.insert(key);
            }
        }
        self.sysctl_done.retain(|k| live.contains(k));
    }

    /// Run until `input`'s sender is dropped: apply every new input, resync every
    /// `resync_interval`, retry after errors with backoff (`retry_min` doubling to
    /// `retry_max`).
    pub async fn run(self, input: tokio::sync::watch::Receiver<DataplaneInput>) {
        self.run_observed(input, |_| {}).await;
    }

    /// [`Dataplane::run`], calling `observe` after every apply (for the caller's
    /// metrics and health; the dataplane's one retry loop is this one).
    pub async fn run_observed(
        mut self,
        mut input: tokio::sync::watch::Receiver<DataplaneInput>,
        mut observe: impl FnMut(Applied<'_>) + Send,
    ) {
        let mut backoff = self.cfg.retry_min;
        loop {
            let current = input.borrow_and_update().clone();
            let started = self.clock.now();
            let result = self.apply(&current).await;
            let elapsed = self.clock.now().saturating_duration_since(started);
            let wait = match &result {
                Ok(r) if r.errors.is_empty() => {
                    backoff = self.cfg.retry_min;
                    if r.writes() > 0 {
                        tracing::debug!(
                            writes = r.writes(),
                            full = r.full_resync,
                            "dataplane applied"
                        );
                    }
                    if current.external_routes.is_empty() && current.peer_routes.is_empty() {
                        self.cfg.resync_interval
                    } else {
                        // Next hops follow the kernel's other routes, read this often.
                        self.cfg.resync_interval.min(self.cfg.kernel_scan_interval)
                    }
                }
                Ok(r) => {
                    tracing::warn!(errors = ?r.errors, "dataplane apply had errors; resync follows");
                    let b = backoff;
                    backoff = (backoff * 2).min(self.cfg.retry_max);
                    b
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dataplane apply failed; retrying");
                    let b = backoff;
                    backoff = (backoff * 2).min(self.cfg.retry_max);
                    b
                }
            };
            observe(Applied {
                input: &current,
                result: &result,
                elapsed,
                degraded: self.degraded_pools(),
                external_routes: self.external.clone(),
                peer_route_problems: self.peer_route_problems.clone(),
                wireguard_public_key: self.wireguard.public_key.clone(),
            });
            tokio::select! {
                changed = input.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// One apply, as [`Dataplane::run_observed`] reports it.
#[derive(Debug)]
pub struct Applied<'a> {
    /// What was applied.
    pub input: &'a DataplaneInput,
    /// Its outcome.
    pub result: &'a Result<ApplyReport, DataplaneError>,
    /// How long it took.
    pub elapsed: Duration,
    /// Pools that cannot be programmed on this kernel, and why.
    pub degraded: Vec<DegradedPool>,
    /// The routes from outside the pools, installed or not and why.
    pub external_routes: Vec<ExternalRouteStatus>,
    /// The host routes to `reachableBy` peers that are not installed, one line each.
    pub peer_route_problems: Vec<String>,
    /// This node's WireGuard public key (base64) once `wireguard.manx` is configured; None
    /// while WireGuard is off or the kernel has none.
    pub wireguard_public_key: Option<String>,
}

/// Resolve device names to indexes. Routes whose device does not exist (yet) are left out:
/// a workload veth that is gone, or a tunnel that failed.
pub fn kernel_routes(desired: &DesiredDataplane, links: &[KernelLink]) -> RouteMap {
    let index: HashMap<&str, u32> = links.iter().map(|l| (l.name.as_str(), l.index)).collect();
    let mut out = RouteMap::with_capacity_and_hasher(desired.routes.len(), Default::default());
    for (dst, nh) in &desired.routes {
        let route = match nh {
            NextHop::Blackhole => manx_route(*dst, RouteKind::Blackhole, None, None, false),
            NextHop::Device(dev) => {
                let Some(i) = index.get(dev.as_str()) else {
                    tracing::debug!(route = %dst, device = %dev, "device missing; route skipped");
                    continue;
                };
                manx_route(*dst, RouteKind::Unicast, None, Some(*i), false)
            }
            NextHop::Via {
                gateway,
                dev,
                onlink,
            } => {
                let Some(i) = index.get(dev.as_str()) else {
                    tracing::debug!(route = %dst, device = %dev, "device missing; route skipped");
                    continue;
                };
                manx_route(*dst, RouteKind::Unicast, Some(*gateway), Some(*i), *onlink)
            }
            NextHop::Multipath(hops) => {
                let Some(hops) = hops
                    .iter()
                    .map(|h| {
                        Some(KernelNextHop {
                            gateway: h.gateway,
                            oif: *index.get(h.dev.as_str())?,
                            onlink: h.onlink,
                        })
                    })
                    .collect::<Option<Vec<_>>>()
                else {
                    tracing::debug!(route = %dst, "a device of the multipath route is missing; route skipped");
                    continue;
                };
                manx_multipath_route(*dst, hops)
            }
        };
        out.insert(*dst, route);
    }
    out
}
