//! The stale-workload scan (issue 16): a task of the agent that, every
//! [`SCAN_ENV`] seconds (default [`DEFAULT_SCAN`]), looks at this node's
//! WorkloadEndpoints, gathers each one's [`Facts`] (does the pod netns path
//! the CNI plugin recorded in [`NETNS_ANNOTATION`] exist; does the host veth
//! `spec.interfaceName` exist in this node's network namespace, one netlink
//! link dump per scan) and acts on [`decide`]:
//!
//! * `Mark` / `Clear`: write or remove the stale mark (the annotations
//!   [`STALE_SINCE_ANNOTATION`], [`STALE_REASON_ANNOTATION`] and
//!   [`RECLAIM_AT_ANNOTATION`]; `manxctl ipam check` reports them), a CAS
//!   update of the endpoint as just read;
//! * `Reclaim`: with the veth checked gone once more, release the
//!   endpoint's addresses by its IPAM handle (`<network>.<container id>`,
//!   as manx-ipam names it) and delete the endpoint at the revision read.
//!   A kubelet DEL later finds nothing and succeeds; a DEL meanwhile makes
//!   the delete a no-op.
//!
//! The endpoints come from the agent's cluster cache (a `watch` channel, no
//! listing of the datastore per scan); an endpoint is read fresh before any
//! write and the decision taken again on what was read, so a stale cache
//! never causes a wrong write. Nothing is written while all is well.
//!
//! An endpoint without a recorded netns path (written by an older plugin)
//! is judged by its veth alone; one without a host veth name is never
//! marked.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datastore::client::{Client, ClientError};
use datastore::model::WorkloadEndpoint;
use datastore::store::StoreError;
use ipam::Ipam;
pub use ipam::check::{RECLAIM_AT_ANNOTATION, STALE_REASON_ANNOTATION};
use tokio::sync::watch;

use crate::reclaim::{self, Decision, Facts, STALE_SINCE_ANNOTATION, decide};

/// manx-node env var: seconds between scans (decimals allowed, e.g. `0.5`);
/// `0` turns the reclaim off.
pub const SCAN_ENV: &str = "MANX_STALE_WORKLOAD_SCAN_SECS";

/// Default time between scans.
pub const DEFAULT_SCAN: Duration = Duration::from_secs(10);

/// The pod's netns path, recorded by the CNI plugin at ADD (the same name
/// as `cni::store::ANNOTATION_NETNS`).
pub const NETNS_ANNOTATION: &str = "manx.dev/netns";

/// The network name, recorded by the CNI plugin at ADD (the same name as
/// `cni::store::ANNOTATION_NETWORK`).
pub const NETWORK_ANNOTATION: &str = "manx.dev/network";

/// The reclaim settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimConfig {
    pub grace: Duration,
    /// `None`: reclaim turned off.
    pub interval: Option<Duration>,
}

impl ReclaimConfig {
    /// From the two variables' values; a bad value is refused by name.
    pub fn from_values(grace: Option<&str>, scan: Option<&str>) -> Result<ReclaimConfig, String> {
        let grace = reclaim::grace_from(grace)?;
        let interval = match scan.map(str::trim) {
            None | Some("") => Some(DEFAULT_SCAN),
            Some(s) => match s.parse::<f64>() {
                Ok(0.0) => None,
                Ok(v) if (0.01..=86_400.0).contains(&v) => Some(Duration::from_secs_f64(v)),
                _ => {
                    return Err(format!(
                        "{SCAN_ENV}={s:?} is not a number of seconds between 0.01 and 86400: \
                         set it like {SCAN_ENV}=10 (the default), or 0 to turn the stale-workload reclaim off"
                    ));
                }
            },
        };
        Ok(ReclaimConfig { grace, interval })
    }

    /// From [`reclaim::GRACE_ENV`] and [`SCAN_ENV`].
    pub fn from_env() -> Result<ReclaimConfig, String> {
        let g = std::env::var(reclaim::GRACE_ENV).ok();
        let s = std::env::var(SCAN_ENV).ok();
        ReclaimConfig::from_values(g.as_deref(), s.as_deref())
    }
}

/// The names of the links in this node's network namespace.
pub trait LinkSource: Send + Sync {
    fn link_names(&self) -> impl Future<Output = Result<HashSet<String>, String>> + Send;
}

/// Links read with netlink.
#[derive(Debug)]
pub struct NetlinkLinks(pub felix::RealNetlink);

impl LinkSource for NetlinkLinks {
    async fn link_names(&self) -> Result<HashSet<String>, String> {
        use felix::Netlink;
        self.0
            .links()
            .await
            .map(|ls| ls.into_iter().map(|l| l.name).collect())
            .map_err(|e| e.to_string())
    }
}

/// What one scan did (for tests and the log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// `namespace/name` of endpoints marked (or whose mark changed).
    pub marked: Vec<String>,
    pub cleared: Vec<String>,
    pub reclaimed: Vec<String>,
    /// Endpoints whose write failed or was overtaken (retried next scan).
    pub failed: Vec<String>,
}

/// The scanner of one node.
#[derive(Debug)]
pub struct Scanner<L> {
    pub client: Client,
    pub ipam: Arc<Ipam>,
    pub node: String,
    pub grace: Duration,
    pub links: L,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn label(w: &WorkloadEndpoint) -> String {
    format!(
        "{}/{}",
        w.metadata.namespace.as_deref().unwrap_or(""),
        w.metadata.name
    )
}

fn addresses(w: &WorkloadEndpoint) -> String {
    w.spec
        .ip_networks
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The endpoint's facts given this node's links.
pub fn facts_of(w: &WorkloadEndpoint, links: &HashSet<String>, now: u64) -> Facts {
    let netns_exists = match w.metadata.annotations.get(NETNS_ANNOTATION) {
        Some(p) if !p.trim().is_empty() => Path::new(p).exists(),
        // Not recorded: the veth alone decides.
        _ => true,
    };
    let veth_exists = match w.spec.interface_name.as_deref() {
        Some(n) if !n.is_empty() => links.contains(n),
        // Unknown veth: never marked, never reclaimed.
        _ => true,
    };
    Facts {
        netns_exists,
        veth_exists,
        now,
    }
}

/// What is gone, in words.
fn reason(w: &WorkloadEndpoint, f: &Facts) -> String {
    let mut parts = Vec::new();
    if !f.netns_exists {
        let p = w
            .metadata
            .annotations
            .get(NETNS_ANNOTATION)
            .map(String::as_str)
            .unwrap_or("");
        parts.push(format!("netns {p} is gone"));
    }
    let veth = w.spec.interface_name.as_deref().unwrap_or("");
    if f.veth_exists {
        if !parts.is_empty() {
            parts.push(format!("veth {veth} still exists"));
        }
    } else {
        parts.push(format!("veth {veth} is gone"));
    }
    parts.join("; ")
}

/// The mark's annotations for a workload stale since `since`.
fn mark_annotations(
    w: &WorkloadEndpoint,
    since: u64,
    f: &Facts,
    grace: Duration,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(STALE_SINCE_ANNOTATION.to_string(), since.to_string());
    a.insert(STALE_REASON_ANNOTATION.to_string(), reason(w, f));
    if !f.veth_exists {
        a.insert(
            RECLAIM_AT_ANNOTATION.to_string(),
            (since + grace.as_secs()).to_string(),
        );
    }
    a
}

const MARK_KEYS: [&str; 3] = [
    STALE_SINCE_ANNOTATION,
    STALE_REASON_ANNOTATION,
    RECLAIM_AT_ANNOTATION,
];

fn current_mark(w: &WorkloadEndpoint) -> BTreeMap<String, String> {
    MARK_KEYS
        .iter()
        .filter_map(|k| Some((k.to_string(), w.metadata.annotations.get(*k)?.clone())))
        .collect()
}

/// What the endpoint's mark should be now, if it should change.
enum Action {
    None,
    SetMark(BTreeMap<String, String>),
    Clear,
    Reclaim,
}

fn action(w: &WorkloadEndpoint, f: &Facts, grace: Duration) -> Action {
    let since = reclaim::parse_since(
        w.metadata
            .annotations
            .get(STALE_SINCE_ANNOTATION)
            .map(String::as_str),
    );
    match decide(since, *f, grace) {
        Decision::Keep => Action::None,
        Decision::Clear => Action::Clear,
        Decision::Mark { since } => Action::SetMark(mark_annotations(w, since, f, grace)),
        Decision::Wait => {
            // The facts may have changed since the mark (the veth went):
            // keep the mark's time, refresh its words.
            let want = mark_annotations(w, since.unwrap_or(f.now), f, grace);
            if want == current_mark(w) {
                Action::None
            } else {
                Action::SetMark(want)
            }
        }
        Decision::Reclaim => Action::Reclaim,
    }
}

fn gone(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::NotFound { .. } | ClientError::Store(StoreError::NotFound { .. })
    )
}

impl<L: LinkSource> Scanner<L> {
    /// One scan over `endpoints` (this node's, possibly from a stale cache).
    pub async fn scan(&self, endpoints: &[WorkloadEndpoint]) -> ScanReport {
        let mut report = ScanReport::default();
        let links = match self.links.link_names().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "stale-workload scan: cannot list links; skipped");
                return report;
            }
        };
        let now = now_secs();
        for w in endpoints
            .iter()
            .filter(|w| w.spec.node.as_deref() == Some(self.node.as_str()))
        {
            let f = facts_of(w, &links, now);
            if matches!(action(w, &f, self.grace), Action::None) {
                continue;
            }
            let l = label(w);
            match self.act(w).await {
                Ok(Some(Done::Marked)) => report.marked.push(l),
                Ok(Some(Done::Cleared)) => report.cleared.push(l),
                Ok(Some(Done::Reclaimed)) => report.reclaimed.push(l),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(endpoint = %l, error = %e, "stale-workload scan: retried next scan");
                    report.failed.push(l);
                }
            }
        }
        report
    }

    /// Reads the endpoint fresh, decides again and acts.
    async fn act(&self, cached: &WorkloadEndpoint) -> Result<Option<Done>, String> {
        let ns = cached.metadata.namespace.as_deref().unwrap_or_default();
        let name = &cached.metadata.name;
        let Some(w) = self
            .client
            .get_namespaced::<WorkloadEndpoint>(ns, name)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        if w.spec.node.as_deref() != Some(self.node.as_str()) {
            return Ok(None);
        }
        let links = self.links.link_names().await?;
        let f = facts_of(&w, &links, now_secs());
        let cid = w.spec.container_id.clone().unwrap_or_default();
        match action(&w, &f, self.grace) {
            Action::None => Ok(None),
            Action::SetMark(mark) => {
                let first = !w.metadata.annotations.contains_key(STALE_SINCE_ANNOTATION);
                let mut new = w.clone();
                for k in MARK_KEYS {
                    new.metadata.annotations.remove(k);
                }
                new.metadata.annotations.extend(mark.clone());
                match self.client.update(&new).await {
                    Ok(_) => {}
                    Err(e) if gone(&e) => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                }
                let why = mark
                    .get(STALE_REASON_ANNOTATION)
                    .cloned()
                    .unwrap_or_default();
                let when = match mark.get(RECLAIM_AT_ANNOTATION) {
                    Some(at) => format!("reclaimed at {at} (Unix seconds) unless it comes back"),
                    None => "kept while its veth exists".to_string(),
                };
                tracing::info!(
                    endpoint = %label(&w),
                    container = %cid,
                    addresses = %addresses(&w),
                    reason = %why,
                    "{} {when}",
                    if first { "stale workload marked:" } else { "stale workload mark updated:" }
                );
                Ok(Some(Done::Marked))
            }
            Action::Clear => {
                let mut new = w.clone();
                for k in MARK_KEYS {
                    new.metadata.annotations.remove(k);
                }
                match self.client.update(&new).await {
                    Ok(_) => {}
                    Err(e) if gone(&e) => return Ok(None),
                    Err(e) => return Err(e.to_string()),
                }
                tracing::info!(endpoint = %label(&w), container = %cid, "workload is back: stale mark cleared");
                Ok(Some(Done::Cleared))
            }
            Action::Reclaim => self.reclaim(&w, &cid).await.map(Some),
        }
    }

    /// Releases the endpoint's addresses and deletes it (at the revision
    /// read, so a newer ADD's endpoint is never deleted).
    async fn reclaim(&self, w: &WorkloadEndpoint, cid: &str) -> Result<Done, String> {
        let handles = self.handles_of(w, cid).await?;
        let mut released = Vec::new();
        for h in &handles {
            released.extend(
                self.ipam
                    .release_by_handle(h)
                    .await
                    .map_err(|e| format!("releasing handle {h}: {e}"))?,
            );
        }
        let ns = w.metadata.namespace.as_deref().unwrap_or_default();
        let revision = w
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok());
        match self
            .client
            .delete_namespaced::<WorkloadEndpoint>(ns, &w.metadata.name, revision)
            .await
        {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(format!("deleting the endpoint: {e}")),
        }
        let released = released
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(
            endpoint = %label(w),
            container = %cid,
            addresses = %addresses(w),
            released = %released,
            handles = ?handles,
            grace_secs = self.grace.as_secs(),
            "stale workload reclaimed: addresses released and endpoint deleted (its runtime never called CNI DEL)"
        );
        Ok(Done::Reclaimed)
    }

    /// The IPAM handles of the endpoint: `<network>.<container id>` when the
    /// plugin recorded the network, else every `*.<container id>` handle.
    async fn handles_of(&self, w: &WorkloadEndpoint, cid: &str) -> Result<Vec<String>, String> {
        if cid.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(net) = w.metadata.annotations.get(NETWORK_ANNOTATION)
            && !net.is_empty()
        {
            return Ok(vec![format!("{net}.{cid}")]);
        }
        let suffix = format!(".{cid}");
        Ok(self
            .ipam
            .rw()
            .list_handles()
            .await
            .map_err(|e| format!("listing IPAM handles: {e}"))?
            .into_iter()
            .map(|h| h.value.handle_id)
            .filter(|id| id.ends_with(&suffix))
            .collect())
    }

    /// Scans every `interval` over the latest endpoints from `endpoints`,
    /// until the sender is dropped.
    pub async fn run(
        self,
        interval: Duration,
        mut endpoints: watch::Receiver<Vec<WorkloadEndpoint>>,
    ) {
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            grace_secs = self.grace.as_secs(),
            "stale-workload reclaim running"
        );
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if endpoints.has_changed().is_err() {
                return;
            }
            let eps = endpoints.borrow_and_update().clone();
            let r = self.scan(&eps).await;
            if r != ScanReport::default() {
                tracing::debug!(?r, "stale-workload scan");
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Marked,
    Cleared,
    Reclaimed,
}

#[cfg(test)]
#[path = "reclaim_scan_tests.rs"]
mod tests;
