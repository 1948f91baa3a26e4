//! The allocator over a [`Datastore`]: auto-assign, assign a given address,
//! release by address or by handle.
//!
//! # Write order, and why
//!
//! The block is the single source of truth for "who holds this address": an
//! address is allocated iff its ordinal is allocated in the stored block, and
//! every block write is a compare-and-swap on the block's revision, so two
//! writers can never both hand out the same ordinal. Everything else (handles,
//! affinities) is bookkeeping that may run ahead or behind the block; the order
//! makes sure a crash between two writes leaves only something `check` sees
//! and GC can undo, never a duplicate address:
//!
//! * **Allocate**: one transaction writes the block (CAS on its revision)
//!   and the handle's count for it (create, or CAS on the handle's
//!   revision) together ([`crate::commit`]). There is no state between
//!   them for a crash to leave: the store has both or neither. Steady state:
//!   1 write per allocation, and concurrent requests on one block in one
//!   process share that write (group commit). A crash after the commit and
//!   before the caller hears of it leaves an allocation with its handle: the
//!   CNI runtime's DEL releases it, and `check` with the live workloads
//!   reports it if nobody does.
//! * **Claim a block**: (1) affinity `pending`, (2) one transaction that
//!   creates the block (already affine, and already holding the claimer's
//!   addresses), confirms the affinity and writes the claimer's handle: a
//!   claim with its first allocation is two writes. The pending affinity marks the claim before the
//!   block exists, so a crash after (1) leaves a dangling pending affinity
//!   (GC deletes it). Creating the block is the CAS that decides between two
//!   racing claimers. A block whose affinity is still pending (written by
//!   an older version that made (2) two writes) is confirmed by the next
//!   listing of the node's blocks.
//! * **Release**: likewise one transaction per block: the block freeing
//!   the ordinals and each handle's count (decremented, or the handle
//!   deleted when it reaches zero).
//! * **Release an empty block's affinity** (after the grace period): (1)
//!   affinity `pendingDeletion` (allocators stop using it), (2) delete the
//!   block at the revision seen empty (fails if anyone allocated meanwhile:
//!   then the affinity goes back to `confirmed`), (3) delete the affinity.
//!
//! Every write that can race is a CAS retried a bounded number of times.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datastore::Datastore;
use datastore::model::ipam::IPAMConfig;
use ipnetwork::IpNetwork;

use crate::block::{Attrs, IntendedUse};
use crate::blockrw::{BlockRw, FaultPlan, is_conflict};
use crate::claim::First;
use crate::commit::{Freshness, Slot, Want};
use crate::error::{IpamError, Result};
use crate::topology::{Labels, Pool, Topology};

/// Milliseconds since the Unix epoch, injectable for tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in ms since the epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// Starting at `ms`.
    pub fn new(ms: u64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicU64::new(ms)))
    }
    /// Move forward.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct IpamOptions {
    /// How long a block must stay empty before it loses its affinity.
    pub empty_block_grace: Duration,
    /// Attempts of each CAS loop before giving up with `Contention`.
    pub max_retries: usize,
    /// How long a read IPAM config is reused (other writers' changes take
    /// this long to be seen; changes through this `Ipam` are seen at once).
    pub config_ttl: Duration,
    /// Folder of the host-wide claim lock files (`ipam-<node>-v4.lock`):
    /// every process on the host claiming for a node takes an exclusive
    /// flock there around "are my affine blocks full? then claim one"
    /// (issue 17). `None`: in-process serialization only.
    pub claim_lock_dir: Option<std::path::PathBuf>,
}

impl Default for IpamOptions {
    fn default() -> Self {
        IpamOptions {
            empty_block_grace: Duration::from_secs(300),
            max_retries: 100,
            config_ttl: Duration::from_secs(1),
            claim_lock_dir: None,
        }
    }
}

/// Arguments of [`Ipam::auto_assign`] (Calico `AutoAssignArgs`).
#[derive(Debug, Clone, Default)]
pub struct AutoAssignArgs {
    /// IPv4 addresses wanted.
    pub num_v4: usize,
    /// IPv6 addresses wanted.
    pub num_v6: usize,
    /// Handle that will own the addresses.
    pub handle_id: String,
    /// Metadata stored with the allocation (`handle_id` is overwritten).
    pub attrs: Attrs,
    /// Node asking.
    pub hostname: String,
    /// Only these IPv4 pools (names or CIDRs); empty = every pool selecting the node.
    pub ipv4_pools: Vec<String>,
    /// Only these IPv6 pools.
    pub ipv6_pools: Vec<String>,
    /// What the addresses are for.
    pub intended_use: IntendedUse,
    /// Overrides the config's `maxBlocksPerHost` (0 = unlimited).
    pub max_blocks_per_host: Option<u32>,
}

/// Result of [`Ipam::auto_assign`]: each address with its block's prefix length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoAssignResult {
    pub ipv4: Vec<IpNetwork>,
    pub ipv6: Vec<IpNetwork>,
}

/// Serializes one node's claims within the process.
type ClaimLock = Arc<tokio::sync::Mutex<()>>;

/// One family's assignment, as [`Ipam::take_from`] needs it.
struct Request<'a> {
    /// Addresses wanted in all.
    n: usize,
    attrs: &'a Attrs,
    reserved: &'a Arc<Vec<IpNetwork>>,
    /// The handle already holds addresses (of the other family).
    held: bool,
}

/// The IPAM allocator. Cheap to share (`Arc<Ipam>`); concurrent calls are fine.
pub struct Ipam {
    pub(crate) rw: BlockRw,
    pub(crate) topology: Arc<dyn Topology>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) opts: IpamOptions,
    pub(crate) slots: Mutex<HashMap<IpNetwork, Arc<Slot>>>,
    /// (node, v6) -> the node's blocks as last listed.
    pub(crate) affine_cache: Mutex<HashMap<(String, bool), Vec<IpNetwork>>>,
    config_cache: Mutex<Option<(std::time::Instant, IPAMConfig)>>,
    /// (node, v6) -> serializes this process's claims for a node.
    claim_locks: Mutex<HashMap<(String, bool), ClaimLock>>,
    /// v6 -> block CIDRs known to exist (claims skip them without a read).
    pub(crate) known_blocks: Mutex<HashMap<bool, HashSet<IpNetwork>>>,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("rw", &self.rw)
            .field("topology", &self.topology)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// `<dir>/ipam-<node>-<what>`, the node name made safe for a file name:
/// the claim locks, the DEL sweep stamp and the node agent's IPAM socket
/// (`crate::service`) of one node on one host.
pub fn host_file(dir: &std::path::Path, node: &str, what: &str) -> std::path::PathBuf {
    let safe: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("ipam-{safe}-{what}"))
}

/// The reservations as a predicate.
pub(crate) fn is_reserved(reserved: &[IpNetwork], ip: IpAddr) -> bool {
    reserved.iter().any(|r| r.contains(ip))
}

/// Whether a pool name or CIDR in `filter` designates `pool`.
fn pool_requested(filter: &[String], pool: &Pool) -> bool {
    filter
        .iter()
        .any(|f| *f == pool.name || f.parse::<IpNetwork>().is_ok_and(|c| c == pool.cidr))
}

impl Ipam {
    /// An allocator over `store` with pools etc. from `topology`.
    pub fn new(store: Arc<dyn Datastore>, topology: Arc<dyn Topology>) -> Self {
        Ipam {
            rw: BlockRw::new(store),
            topology,
            clock: Arc::new(SystemClock),
            opts: IpamOptions::default(),
            slots: Mutex::new(HashMap::new()),
            affine_cache: Mutex::new(HashMap::new()),
            config_cache: Mutex::new(None),
            claim_locks: Mutex::new(HashMap::new()),
            known_blocks: Mutex::new(HashMap::new()),
        }
    }

    /// Replace the options.
    pub fn with_options(mut self, opts: IpamOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Replace the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Enable fault injection (crash tests).
    pub fn with_faults(mut self, faults: Arc<FaultPlan>) -> Self {
        self.rw = self.rw.with_faults(faults);
        self
    }

    /// The CAS layer.
    pub fn rw(&self) -> &BlockRw {
        &self.rw
    }

    /// The topology.
    pub fn topology(&self) -> &Arc<dyn Topology> {
        &self.topology
    }

    /// Now per the clock (ms).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// `<claim_lock_dir>/ipam-<node>-<what>` (the node name made safe for
    /// a file name), if a lock folder is configured.
    pub(crate) fn host_file(&self, node: &str, what: &str) -> Option<std::path::PathBuf> {
        let dir = self.opts.claim_lock_dir.as_ref()?;
        Some(host_file(dir, node, what))
    }

    /// Takes the host-wide claim lock of (node, family), if configured; an
    /// unusable lock file is logged and skipped (in-process lock only).
    async fn host_claim_lock(&self, node: &str, v6: bool) -> Option<std::fs::File> {
        let dir = self.opts.claim_lock_dir.clone()?;
        let path = self.host_file(node, if v6 { "v6.lock" } else { "v4.lock" })?;
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            std::fs::create_dir_all(&dir)?;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            f.lock()?;
            Ok(f)
        })
        .await;
        match res {
            Ok(Ok(f)) => Some(f),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "host-wide IPAM claim lock unusable; in-process lock only");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "host-wide IPAM claim lock task failed");
                None
            }
        }
    }

    fn claim_lock(&self, node: &str, v6: bool) -> ClaimLock {
        self.claim_locks
            .lock()
            .expect("poisoned")
            .entry((node.to_string(), v6))
            .or_default()
            .clone()
    }

    /// The IPAM configuration (defaults if never written).
    pub async fn config(&self) -> Result<IPAMConfig> {
        if let Some((at, cfg)) = self.config_cache.lock().expect("poisoned").as_ref()
            && at.elapsed() < self.opts.config_ttl
        {
            return Ok(cfg.clone());
        }
        let cfg = self.rw.get_config().await?.value;
        *self.config_cache.lock().expect("poisoned") =
            Some((std::time::Instant::now(), cfg.clone()));
        Ok(cfg)
    }

    /// Change the configuration with `f` (CAS, retried).
    pub async fn update_config(&self, f: impl Fn(&mut IPAMConfig)) -> Result<IPAMConfig> {
        for _ in 0..self.opts.max_retries {
            let cur = self.rw.get_config().await?;
            let mut cfg = cur.value.clone();
            f(&mut cfg);
            match self.rw.put_config(&cfg, cur.revision).await {
                Ok(_) => {
                    *self.config_cache.lock().expect("poisoned") = None;
                    return Ok(cfg);
                }
                Err(IpamError::Store { source, .. }) if is_conflict(&source) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(IpamError::Contention {
            what: "IPAM config".into(),
            attempts: self.opts.max_retries,
        })
    }

    // ------------------------------------------------------------------
    // Auto-assign

    /// Pools usable by `node` for `use_` in a family, honouring an explicit
    /// filter (which, as in Calico, overrides the node selector).
    pub(crate) async fn eligible_pools(
        &self,
        node: &str,
        labels: &Labels,
        v6: bool,
        filter: &[String],
        use_: IntendedUse,
    ) -> Result<(Vec<Pool>, Vec<String>)> {
        let mut ok = Vec::new();
        let mut why_not = Vec::new();
        for p in self.topology.pools().await? {
            if p.cidr.is_ipv6() != v6 {
                continue;
            }
            if !filter.is_empty() && !pool_requested(filter, &p) {
                continue;
            }
            if filter.is_empty() && p.manual_assignment {
                continue;
            }
            if p.disabled {
                why_not.push(format!("pool {} is disabled", p.cidr));
            } else if !p.allows(use_) {
                why_not.push(format!("pool {} does not allow {use_} use", p.cidr));
            } else if filter.is_empty()
                && !self.topology.selector_matches(&p.node_selector, labels)?
            {
                why_not.push(format!(
                    "pool {}'s nodeSelector {:?} does not select node {node}",
                    p.cidr, p.node_selector
                ));
            } else if let Err(e) = p.validate() {
                why_not.push(e.to_string());
            } else {
                ok.push(p);
            }
        }
        for f in filter {
            if !ok
                .iter()
                .any(|p| pool_requested(std::slice::from_ref(f), p))
                && !why_not.iter().any(|w| w.contains(f.as_str()))
            {
                why_not.push(format!("requested pool {f} does not exist"));
            }
        }
        Ok((ok, why_not))
    }

    /// Assign `num_v4` + `num_v6` addresses to `handle_id` on `hostname`.
    /// All or nothing: on error nothing stays allocated.
    pub async fn auto_assign(&self, args: &AutoAssignArgs) -> Result<AutoAssignResult> {
        if args.handle_id.is_empty() {
            return Err(IpamError::Invalid("auto_assign: empty handle id".into()));
        }
        let mut attrs = args.attrs.clone();
        attrs.handle_id = args.handle_id.clone();
        attrs.intended_use = args.intended_use;
        if attrs.node.is_none() {
            attrs.node = Some(args.hostname.clone());
        }
        let cfg = self.config().await?;
        let labels = self
            .topology
            .node_labels(&args.hostname)
            .await?
            .unwrap_or_default();
        let reserved = Arc::new(self.topology.reservations().await?);
        let mut result = AutoAssignResult::default();
        for (v6, n, filter) in [
            (false, args.num_v4, &args.ipv4_pools),
            (true, args.num_v6, &args.ipv6_pools),
        ] {
            if n == 0 {
                continue;
            }
            match self
                .assign_family(
                    args,
                    &attrs,
                    &cfg,
                    &labels,
                    &reserved,
                    v6,
                    n,
                    filter,
                    !result.ipv4.is_empty(),
                )
                .await
            {
                Ok(got) => {
                    if v6 {
                        result.ipv6 = got;
                    } else {
                        result.ipv4 = got;
                    }
                }
                Err(e) => {
                    if !matches!(e, IpamError::InjectedCrash(_)) {
                        let ips: Vec<IpAddr> = result.ipv4.iter().map(|n| n.ip()).collect();
                        let _ = self.release_ips(&ips).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    async fn assign_family(
        &self,
        args: &AutoAssignArgs,
        attrs: &Attrs,
        cfg: &IPAMConfig,
        labels: &Labels,
        reserved: &Arc<Vec<IpNetwork>>,
        v6: bool,
        n: usize,
        filter: &[String],
        held: bool,
    ) -> Result<Vec<IpNetwork>> {
        let node = args.hostname.as_str();
        let (pools, why_not) = self
            .eligible_pools(node, labels, v6, filter, args.intended_use)
            .await?;
        let family = if v6 { "IPv6" } else { "IPv4" };
        if pools.is_empty() {
            let detail = if why_not.is_empty() {
                format!("no {family} pool exists; create an IPPool")
            } else {
                format!("no usable {family} pool: {}", why_not.join("; "))
            };
            return Err(IpamError::Exhausted {
                node: node.to_string(),
                detail,
            });
        }
        let in_pools = |c: &IpNetwork| {
            pools
                .iter()
                .find(|p| p.cidr.contains(c.network()) && p.block_size == c.prefix())
        };
        let mut got: Vec<IpNetwork> = Vec::new();
        let req = Request {
            n,
            attrs,
            reserved,
            held,
        };

        // 1. The node's own blocks: from the in-process list first (the
        // block write re-checks the affinity, so a stale list is harmless),
        // then, if that was not enough, from a fresh listing and fresh blocks.
        let mut own_count = 0;
        for fresh in [false, true] {
            let affine = if fresh {
                let list = self.affine_blocks(node, v6).await?;
                self.affine_cache
                    .lock()
                    .expect("poisoned")
                    .insert((node.to_string(), v6), list.clone());
                list
            } else {
                let cached = self
                    .affine_cache
                    .lock()
                    .expect("poisoned")
                    .get(&(node.to_string(), v6))
                    .cloned();
                match cached {
                    Some(list) => list,
                    None => continue,
                }
            };
            own_count = affine.len();
            for cidr in affine.iter().filter(|c| in_pools(c).is_some()) {
                if got.len() == n {
                    break;
                }
                let mode = if fresh {
                    Freshness::RefreshStale
                } else {
                    Freshness::Hint
                };
                self.take_from(&req, cidr, Some(node), mode, &mut got)
                    .await?;
            }
            if got.len() == n {
                break;
            }
        }

        // 2. Claim new blocks, one claimer per node at a time in this
        // process: the others wait, then use the block it claimed.
        let max_blocks = args.max_blocks_per_host.unwrap_or(cfg.max_blocks_per_host);
        let claim_lock = self.claim_lock(node, v6);
        let _claiming = if got.len() < n {
            let guard = claim_lock.lock().await;
            let cached = self
                .affine_cache
                .lock()
                .expect("poisoned")
                .get(&(node.to_string(), v6))
                .cloned()
                .unwrap_or_default();
            own_count = own_count.max(cached.len());
            for cidr in cached.iter().filter(|c| in_pools(c).is_some()) {
                if got.len() == n {
                    break;
                }
                self.take_from(&req, cidr, Some(node), Freshness::Hint, &mut got)
                    .await?;
            }
            // Host-wide: other processes claiming for this node wait here;
            // under the lock the node's affine blocks are re-read, so a
            // block another process claimed meanwhile is used, not a new one.
            let host = if got.len() < n {
                self.host_claim_lock(node, v6).await
            } else {
                None
            };
            if host.is_some() {
                let list = self.affine_blocks(node, v6).await?;
                self.affine_cache
                    .lock()
                    .expect("poisoned")
                    .insert((node.to_string(), v6), list.clone());
                own_count = own_count.max(list.len());
                for cidr in list.iter().filter(|c| in_pools(c).is_some()) {
                    if got.len() == n {
                        break;
                    }
                    self.take_from(&req, cidr, Some(node), Freshness::Refresh, &mut got)
                        .await?;
                }
            }
            Some((guard, host))
        } else {
            None
        };
        while got.len() < n && cfg.auto_allocate_blocks {
            if max_blocks > 0 && own_count >= max_blocks as usize {
                break;
            }
            let first = First {
                n: n - got.len(),
                attrs,
                reserved,
                held: held || !got.is_empty(),
            };
            let Some((cidr, first_got)) = self
                .claim_block(node, &pools, v6, reserved, Some(&first))
                .await?
            else {
                break;
            };
            got.extend(
                first_got
                    .iter()
                    .map(|(ip, _)| IpNetwork::new(*ip, cidr.prefix()).expect("valid")),
            );
            own_count += 1;
            self.affine_cache
                .lock()
                .expect("poisoned")
                .entry((node.to_string(), v6))
                .or_default()
                .push(cidr);
            // The claim made the first allocation and left the new block
            // in this process's cache for the rest (if any).
            if got.len() < n {
                self.take_from(&req, &cidr, Some(node), Freshness::Hint, &mut got)
                    .await?;
            }
        }

        // 2b. Before borrowing or giving up: re-read every own block (another
        // process may have freed addresses in one the hints call full).
        if got.len() < n {
            for cidr in self.affine_blocks(node, v6).await? {
                if got.len() == n {
                    break;
                }
                if in_pools(&cidr).is_none() {
                    continue;
                }
                self.take_from(&req, &cidr, Some(node), Freshness::Refresh, &mut got)
                    .await?;
            }
        }

        // 3. Borrow from other nodes' blocks.
        if got.len() < n && !cfg.strict_affinity {
            let mut blocks = self.rw.list_blocks().await?;
            blocks.retain(|b| {
                b.value.cidr().is_ipv6() == v6
                    && b.value.affine_node() != Some(node)
                    && in_pools(&b.value.cidr()).is_some()
                    && b.value.available(&|ip| is_reserved(reserved, ip)) > 0
            });
            for b in blocks {
                if got.len() == n {
                    break;
                }
                let cidr = b.value.cidr();
                self.take_from(&req, &cidr, None, Freshness::Refresh, &mut got)
                    .await?;
            }
        }

        if got.len() < n {
            let ips: Vec<IpAddr> = got.iter().map(|n| n.ip()).collect();
            self.release_ips(&ips).await?;
            let detail = self
                .explain_exhaustion(node, &pools, cfg, max_blocks, v6, n, reserved)
                .await?;
            return Err(IpamError::Exhausted {
                node: node.to_string(),
                detail,
            });
        }
        Ok(got)
    }

    /// Take up to `req.n - got.len()` addresses from block `cidr` into
    /// `got`. On error, release what `got` holds (unless crashing: a crash
    /// does no clean-up, like `kill -9`).
    async fn take_from(
        &self,
        req: &Request<'_>,
        cidr: &IpNetwork,
        node: Option<&str>,
        mode: Freshness,
        got: &mut Vec<IpNetwork>,
    ) -> Result<()> {
        let held = req.held || !got.is_empty();
        let r = self
            .try_block(
                cidr,
                req.n - got.len(),
                req.attrs,
                node,
                req.reserved,
                mode,
                held,
            )
            .await;
        match r {
            Ok(v) => {
                got.extend(
                    v.iter()
                        .map(|(ip, _)| IpNetwork::new(*ip, cidr.prefix()).expect("valid")),
                );
                Ok(())
            }
            Err(e @ IpamError::InjectedCrash(_)) => Err(e),
            Err(e) => {
                let ips: Vec<IpAddr> = got.iter().map(|n| n.ip()).collect();
                let _ = self.release_ips(&ips).await;
                Err(e)
            }
        }
    }

    // ------------------------------------------------------------------
    // Assign a given address, release

    /// Assign exactly `ip` to `handle_id` on `host` (Calico `AssignIP`). The
    /// address must be in a pool; its block is claimed for `host` if absent.
    pub async fn assign_ip(
        &self,
        ip: IpAddr,
        handle_id: &str,
        attrs: &Attrs,
        host: &str,
    ) -> Result<()> {
        let pools = self.topology.pools().await?;
        let pool =
            pools
                .iter()
                .find(|p| p.cidr.contains(ip))
                .ok_or_else(|| IpamError::Address {
                    ip,
                    reason: "not in any IP pool; pick an address from a pool or create one".into(),
                })?;
        let reserved = self.topology.reservations().await?;
        if is_reserved(&reserved, ip) {
            return Err(IpamError::Address {
                ip,
                reason: "is reserved by an IPReservation".into(),
            });
        }
        let cidr =
            IpNetwork::new(ip, pool.block_size).map_err(|e| IpamError::Invalid(e.to_string()))?;
        let cidr = IpNetwork::new(cidr.network(), pool.block_size).expect("valid");
        if self.rw.get_block(&cidr).await?.is_none() {
            // Claim it for the host; losing the race is fine (someone created it).
            self.claim_one(host, &cidr, None).await?;
        }
        let mut attrs = attrs.clone();
        attrs.handle_id = handle_id.to_string();
        if attrs.node.is_none() {
            attrs.node = Some(host.to_string());
        }
        let got = self
            .allocate_in_block(
                &cidr,
                Want::Exact(ip),
                &attrs,
                None,
                &Arc::new(reserved),
                false,
                true,
            )
            .await?;
        if got.is_empty() {
            return Err(IpamError::Address {
                ip,
                reason: format!("block {cidr} vanished while assigning; retry"),
            });
        }
        Ok(())
    }

    /// Addresses held by `handle_id`.
    pub async fn ips_by_handle(&self, handle_id: &str) -> Result<Vec<IpAddr>> {
        let Some(h) = self.rw.get_handle(handle_id).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for cidr_s in h.value.block.keys() {
            if let Ok(cidr) = cidr_s.parse::<IpNetwork>()
                && let Some(b) = self.rw.get_block(&cidr).await?
            {
                out.extend(b.value.ips_of_handle(handle_id));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;
