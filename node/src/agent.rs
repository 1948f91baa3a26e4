//! The agent: startup, then one loop that turns datastore changes and BGP
//! route changes into BGP peers, originated prefixes and dataplane state.
//!
//! ```text
//!   datastore watch (/manx/) ──► ClusterCache ──(debounce)──► ClusterView
//!                                                               │
//!                                              plan (pure) ◄────┘
//!        ┌───────────────────────────┬──────────────┬───────────┤
//!        ▼                           ▼              ▼           ▼
//!   bgpd Speaker ◄── set_peers /   restart task   tunnel     DataplaneInput ──watch──► felix-lite
//!        │           set_networks  (cluster id)   address     ▲                  Dataplane::run_observed
//!        │                            │           task(s)     │                   (its one retry loop)
//!        └── RouteFeed (per prefix) ──┼───────────────┼────────┘
//!                                     └── Event (mpsc) ┘──► loop
//!   monitor task: speaker.peers() every 250 ms ──► status socket, /readyz, /metrics,
//!                                                  Event::FirstSync
//!   ClusterView.workloads ──watch──► reclaim task (crate::reclaim_scan): marks, reclaims
//!                                    stale workloads in the datastore on its own
//! ```
//!
//! The loop is the one owner of the node's state and never waits on slow
//! work: [`crate::plan`] is a pure function of the view, and speaker
//! restarts, IPAM calls, Node writes and peer-state queries run in tasks
//! that report back as `Event`s. The dataplane task owns the kernel shims.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bgpd::cluster::{DesiredPeer, SecretDir};
use bgpd::config::{ListenConfig, SpeakerConfig};
use bgpd::fsm::State;
use bgpd::rib::{RouteFeed, RouteUpdate};
use bgpd::speaker::{Speaker, SpeakerHandle};
use datastore::client::Client;
use datastore::{Datastore, WatchEvent};
use felix::{Applied, DataplaneConfig, DataplaneInput, Tunnel, Uplink};
use futures::StreamExt;
use ipam::Ipam;
use ipam::resources::DatastoreTopology;
use ipnetwork::IpNetwork;
use tokio::sync::{mpsc, watch};

use crate::cluster::{ClusterCache, ClusterView, WATCH_PREFIX};
use crate::config::NodeConfig;
use crate::http::{self, Health};
use crate::metrics::{Metrics, names, node_metrics};
use crate::plan::{self, RemoteRoutes};
use crate::startup::{self, Tunnels};
use crate::status::{self, NodeStatus, PeerRow};

/// How long a burst of datastore events is gathered before recomputing.
const DEBOUNCE: Duration = Duration::from_millis(5);
/// After a restart, how long the dataplane waits for BGP to relearn routes
/// before its first full sync (so the kernel keeps forwarding meanwhile).
const FIRST_SYNC_MAX_WAIT: Duration = Duration::from_secs(10);
/// How often the monitor reads the speaker's peers.
const MONITOR_PERIOD: Duration = Duration::from_millis(250);
/// Where mounted BGPPeer password secrets live.
const SECRETS_DIR: &str = "/etc/manx/secrets";

type Dataplane = felix::Dataplane<
    felix::RealNetlink,
    felix::sysctl::ProcSysctl,
    felix::nat::NftCli,
    felix::SystemClock,
>;

async fn connect(health: &Health) -> Arc<dyn Datastore> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let res = match datastore::config::DatastoreConfig::from_env() {
            Ok(c) => c
                .connect()
                .await
                .map_err(|e| format!("{} ({})", e, c.describe())),
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(store) => return store,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the datastore; retrying");
                health.set_not_ready("datastore", e);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The bgpd control socket (`$MANX_RUN_DIR/bgp.sock`) served for the
/// running speaker; the file is removed when this is dropped.
struct ControlSocket {
    path: std::path::PathBuf,
    _server: bgpd::tasks::TaskGuard,
}

impl ControlSocket {
    fn serve(path: &Path, speaker: SpeakerHandle) -> Result<ControlSocket> {
        let server = bgpd::control::serve(path, speaker)
            .with_context(|| format!("bgpd control socket {}: cannot listen", path.display()))?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            _server: server,
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the agent's tasks report back to its loop.
#[derive(Debug)]
enum Event {
    /// A speaker with the new route-reflector cluster id runs, feeding
    /// `feed` (its own: nothing from the old speaker can reach it).
    SpeakerRestarted {
        speaker: Speaker,
        feed: RouteFeed,
        /// Boxed: the configuration is most of the event's size.
        cfg: Box<SpeakerConfig>,
    },
    /// A tunnel address allocation finished.
    TunnelAllocated(Tunnel, Result<Option<IpAddr>, String>),
    /// BGP has relearnt what it will for speaker generation `epoch`.
    FirstSync(u64),
}

/// What the monitor task watches: the speaker of the moment and what the
/// first-sync gate needs.
#[derive(Debug, Clone)]
struct Generation {
    /// Bumped when the speaker is replaced.
    epoch: u64,
    speaker: SpeakerHandle,
    /// How many peers the node wants.
    desired: usize,
    /// When this speaker started.
    started: Instant,
    first_sync_done: bool,
}

/// The first-sync gate, as a pure state machine: "relearnt" is the speaker
/// saying it is synced (End-of-RIB from every peer it had) *and* every
/// desired peer Established for half a second. The second half matters
/// because the speaker is started before manx-node gives it its peers, so
/// its own notion can be true vacuously. With no peers, one second; in any
/// case at most [`FIRST_SYNC_MAX_WAIT`].
#[derive(Debug, Default)]
struct FirstSyncGate {
    all_up_since: Option<Instant>,
}

impl FirstSyncGate {
    fn observe(
        &mut self,
        now: Instant,
        started: Instant,
        desired: usize,
        states: &[State],
        speaker_synced: bool,
    ) -> bool {
        let all_up = !states.is_empty()
            && states.len() >= desired
            && states.iter().all(|s| *s == State::Established);
        let settled = match (all_up, self.all_up_since) {
            (true, None) => {
                self.all_up_since = Some(now);
                false
            }
            (true, Some(t)) => now.duration_since(t) >= Duration::from_millis(500),
            (false, _) => {
                self.all_up_since = None;
                false
            }
        };
        let waited = now.duration_since(started);
        let no_peers = desired == 0 && waited > Duration::from_secs(1);
        (settled && speaker_synced) || no_peers || waited > FIRST_SYNC_MAX_WAIT
    }
}

/// Everything the loop owns.
struct Agent {
    name: String,
    uplink: Uplink,
    client: Client,
    ipam: Arc<Ipam>,
    secrets: SecretDir,
    speaker: SpeakerHandle,
    /// The running speaker; `None` while a restart task has it.
    running: Option<Speaker>,
    /// The control socket, answering from `running`.
    control: Option<ControlSocket>,
    speaker_cfg: SpeakerConfig,
    /// Where the running speaker's best-path changes arrive.
    feed: RouteFeed,
    metrics: Arc<Metrics>,
    cache: ClusterCache,
    view: ClusterView,
    /// What the speaker was last given.
    peers: Vec<DesiredPeer>,
    networks: Vec<IpNetwork>,
    /// Best BGP routes learnt from peers.
    remote: RemoteRoutes,
    /// The communities last given to the speaker (`prefixAdvertisements`).
    local_communities: Vec<bgpd::rib::LocalCommunities>,
    /// `ignoredInterfaces` of the last plan, for the dataplane.
    ignored_interfaces: Vec<String>,
    /// This node's tunnel addresses and MACs.
    tunnels: Tunnels,
    /// Tunnel kinds with an allocation task running.
    allocating: BTreeSet<Tunnel>,
    /// The dataplane, until its first sync starts its task.
    dataplane: Option<(Dataplane, DataplaneObserver)>,
    dp_tx: Option<watch::Sender<DataplaneInput>>,
    generation: watch::Sender<Generation>,
    events: mpsc::Sender<Event>,
    tasks: Vec<tasks::Guard>,
    /// This node's workloads, for the stale-workload reclaim task.
    workloads: watch::Sender<Vec<datastore::model::WorkloadEndpoint>>,
    /// `$MANX_RUN_DIR` (the UDP data path's lock and log).
    run_dir: std::path::PathBuf,
    /// A peer has BFD: manx-bfdd must run (see `crate::bfdd`).
    bfd_wanted: watch::Sender<bool>,
}

impl Agent {
    fn epoch(&self) -> u64 {
        self.generation.borrow().epoch
    }

    fn first_sync_done(&self) -> bool {
        self.generation.borrow().first_sync_done
    }

    fn spawn(&mut self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.retain(|t| !t.0.is_finished());
        self.tasks.push(tasks::Guard(tokio::spawn(fut)));
    }

    /// After a burst of datastore events: plan, then hand each part to its
    /// owner. Never waits.
    fn recompute(&mut self) {
        self.view = self.cache.view();
        let plan = plan::bgp(&self.view, &self.name, &self.tunnels, &self.secrets);
        crate::logging::follow_datastore_level(plan.log_level);
        self.ignored_interfaces = plan.ignored_interfaces.clone();
        let listen = Some(listen_config(plan.listen, &self.uplink));
        if self.running.is_some() {
            if plan.cluster_id != self.speaker_cfg.cluster_id {
                self.restart_speaker(
                    plan.cluster_id,
                    listen,
                    &plan.peers,
                    "route-reflector cluster id changed",
                );
            } else if listen != self.speaker_cfg.listen {
                self.restart_speaker(
                    plan.cluster_id,
                    listen,
                    &plan.peers,
                    "bindMode or listenPort changed",
                );
            }
        }
        for tunnel in plan.missing_tunnels {
            if !self.allocating.contains(&tunnel) {
                self.allocate_tunnel(tunnel);
            }
        }
        // While a restart is under way the speaker gets everything once it
        // runs (see `on_event`).
        if self.running.is_some() {
            if plan.peers != self.peers {
                tracing::info!(count = plan.peers.len(), "BGP peers changed");
                self.speaker
                    .set_peers(plan.peers.iter().map(|p| p.config.clone()).collect());
                self.peers = plan.peers;
                let bfd = self.peers.iter().any(|p| p.config.bfd.is_some());
                self.bfd_wanted
                    .send_if_modified(|w| std::mem::replace(w, bfd) != bfd);
                let desired = self.peers.len();
                self.generation.send_modify(|g| g.desired = desired);
            }
            if plan.local_communities != self.local_communities {
                self.speaker
                    .set_local_communities(plan.local_communities.clone());
                self.local_communities = plan.local_communities;
            }
            if plan.multipath != self.speaker_cfg.multipath {
                tracing::info!(multipath = ?plan.multipath, "BGP multipath changed");
                self.speaker.set_multipath(plan.multipath);
                self.speaker_cfg.multipath = plan.multipath;
            }
            if plan.networks != self.networks {
                tracing::debug!(count = plan.networks.len(), "originated prefixes changed");
                self.speaker.set_networks(plan.networks.clone());
                self.networks = plan.networks;
            }
        }
        self.metrics.set(
            names::LOCAL_WORKLOADS,
            &[],
            self.view.workloads.len() as f64,
        );
        self.workloads.send_replace(self.view.workloads.clone());
        self.push_dataplane();
    }

    /// A node that becomes (or stops being) a route reflector, or whose
    /// listen address or port changes (`bindMode`, `listenPort`), gets a
    /// new speaker; its sessions restart once. The old speaker stops and
    /// the new one starts in a task.
    fn restart_speaker(
        &mut self,
        cluster_id: Option<Ipv4Addr>,
        listen: Option<ListenConfig>,
        peers: &[DesiredPeer],
        why: &'static str,
    ) {
        let Some(old) = self.running.take() else {
            return;
        };
        tracing::info!(?cluster_id, ?listen, "{why}: restarting the BGP speaker");
        self.control = None;
        let mut cfg = self.speaker_cfg.clone();
        cfg.cluster_id = cluster_id;
        cfg.listen = listen;
        cfg.restarting = true;
        // Started with its peers, as at start, so that its initial
        // convergence (End-of-RIB from each) gates the first sync.
        cfg.peers = peers.iter().map(|p| p.config.clone()).collect();
        let events = self.events.clone();
        self.spawn(async move {
            old.shutdown(why).await;
            let feed = RouteFeed::new();
            // The old speaker has released its port; a bind can still fail
            // for a moment: retry until it works (a node without a speaker
            // routes nothing new).
            let mut backoff = Duration::from_millis(200);
            let mut attempt = 1;
            let speaker = loop {
                match Speaker::start_with_feed(cfg.clone(), feed.clone()) {
                    Ok(sp) => break sp,
                    Err(e) => {
                        tracing::error!(error = %e, attempt, "cannot restart the BGP speaker");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        attempt += 1;
                    }
                }
            };
            let _ = events
                .send(Event::SpeakerRestarted {
                    speaker,
                    feed,
                    cfg: Box::new(cfg),
                })
                .await;
        });
    }

    /// Take a tunnel address when a pool starts needing one (a VXLAN or
    /// IPIP pool created after start), in a task.
    fn allocate_tunnel(&mut self, tunnel: Tunnel) {
        self.allocating.insert(tunnel);
        let ipam = self.ipam.clone();
        let name = self.name.clone();
        let pools = startup::tunnel_pools(&self.view.pools, tunnel);
        let events = self.events.clone();
        self.spawn(async move {
            let handle = startup::tunnel_handle(tunnel, &name);
            let r = startup::tunnel_address(&ipam, &name, &handle, pools, tunnel.ipv6())
                .await
                .map_err(|e| format!("{e:#}"));
            let _ = events.send(Event::TunnelAllocated(tunnel, r)).await;
        });
    }

    /// Record this node's tunnel addresses in its `Node`, in a task.
    fn record_tunnels(&mut self) {
        let client = self.client.clone();
        let name = self.name.clone();
        let tunnels = self.tunnels.clone();
        self.spawn(async move {
            if let Err(e) = startup::update_node(&client, &name, |n| tunnels.record(n)).await {
                tracing::warn!(error = %e, "cannot record the tunnel addresses in the Node");
            }
        });
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::SpeakerRestarted { speaker, feed, cfg } => {
                self.speaker_cfg = *cfg;
                self.speaker = speaker.handle();
                self.running = Some(speaker);
                self.feed = feed;
                // The control socket follows the running speaker.
                if let Some(path) = &self.speaker_cfg.control_socket {
                    match ControlSocket::serve(path, self.speaker.clone()) {
                        Ok(c) => self.control = Some(c),
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "bgpd control socket lost")
                        }
                    }
                }
                // Everything is pushed again to the new speaker, and its
                // routes are relearnt before the dataplane sees the new set
                // (no flap meanwhile).
                self.peers.clear();
                self.networks.clear();
                self.local_communities.clear();
                self.remote.clear();
                let handle = self.speaker.clone();
                self.generation.send_modify(|g| {
                    g.epoch += 1;
                    g.speaker = handle;
                    g.desired = 0;
                    g.started = Instant::now();
                    g.first_sync_done = false;
                });
                self.recompute();
            }
            Event::TunnelAllocated(tunnel, r) => {
                self.allocating.remove(&tunnel);
                let kind = tunnel.name();
                match r {
                    Ok(Some(ip)) => {
                        tracing::info!(%ip, kind, "tunnel address allocated");
                        self.metrics.inc(
                            names::IPAM_OPERATIONS,
                            &[("op", "tunnel-address"), ("result", "ok")],
                            1.0,
                        );
                        self.tunnels.addrs.insert(tunnel, ip);
                        self.record_tunnels();
                        self.push_dataplane();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.metrics.inc(
                            names::IPAM_OPERATIONS,
                            &[("op", "tunnel-address"), ("result", "error")],
                            1.0,
                        );
                        tracing::warn!(error = %e, kind, "cannot allocate a tunnel address yet");
                    }
                }
            }
            Event::FirstSync(epoch) => {
                if epoch != self.epoch() || self.first_sync_done() {
                    return;
                }
                tracing::info!(peers = self.peers.len(), "first dataplane sync");
                self.generation.send_modify(|g| g.first_sync_done = true);
                self.push_dataplane();
            }
        }
    }

    fn route_update(&mut self, u: RouteUpdate) {
        match u {
            RouteUpdate::Add {
                prefix,
                next_hops,
                peer,
            } => {
                self.remote.insert(prefix, (next_hops, peer));
            }
            RouteUpdate::Remove { prefix } => {
                self.remote.remove(&prefix);
            }
        }
    }

    /// Hand the dataplane its new input, unless we are still waiting for
    /// BGP after a restart. The first push starts the dataplane task.
    fn push_dataplane(&mut self) {
        if !self.first_sync_done() {
            return;
        }
        let input = plan::dataplane(
            &self.view,
            &self.name,
            &self.uplink,
            &self.remote,
            &self.tunnels,
            &self.peers,
            &self.ignored_interfaces,
        );
        if let Some(tx) = &self.dp_tx {
            tx.send_if_modified(|cur| {
                if *cur == input {
                    false
                } else {
                    *cur = input;
                    true
                }
            });
            return;
        }
        let Some((dp, observer)) = self.dataplane.take() else {
            return;
        };
        let (tx, rx) = watch::channel(input);
        self.spawn(crate::udp::supervise(tx.subscribe(), self.run_dir.clone()));
        self.dp_tx = Some(tx);
        self.spawn(async move {
            let mut observer = observer;
            dp.run_observed(rx, move |a| observer.observe(a)).await;
        });
    }
}

/// Reports each dataplane apply into metrics, health and the status
/// warnings (felix-lite's `run_observed` does the applying and retrying).
#[derive(Debug)]
struct DataplaneObserver {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    warnings: Arc<Mutex<status::DataplaneStatus>>,
    wireguard: WireguardPublisher,
}

/// Publishes this node's WireGuard public key in its `Node.status.wireguardPublicKey`
/// (removes it while WireGuard is off or the kernel has none), once per change.
#[derive(Debug)]
struct WireguardPublisher {
    client: Client,
    name: String,
    /// What the Node holds as far as we know; None: not known yet (read it first).
    published: Arc<Mutex<Option<Option<String>>>>,
    writing: Arc<std::sync::atomic::AtomicBool>,
}

impl WireguardPublisher {
    fn observe(&self, key: Option<&str>) {
        use std::sync::atomic::Ordering;
        if self
            .published
            .lock()
            .unwrap()
            .as_ref()
            .map(Option::as_deref)
            == Some(key)
        {
            return;
        }
        if self.writing.swap(true, Ordering::AcqRel) {
            return; // The write under way is followed by another look at the next apply.
        }
        let (client, name) = (self.client.clone(), self.name.clone());
        let (published, writing) = (self.published.clone(), self.writing.clone());
        let key = key.map(str::to_string);
        tokio::spawn(async move {
            let r = startup::update_node(&client, &name, |n| {
                crate::cluster::record_wireguard_key(n, key.as_deref())
            })
            .await;
            match r {
                Ok(_) => {
                    if let Some(k) = &key {
                        tracing::info!(public_key = %k, "WireGuard public key published in the Node");
                    }
                    *published.lock().unwrap() = Some(key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot publish the WireGuard public key in the Node")
                }
            }
            writing.store(false, Ordering::Release);
        });
    }
}

impl DataplaneObserver {
    fn observe(&mut self, a: Applied<'_>) {
        let secs = a.elapsed.as_secs_f64();
        self.metrics.inc(names::RECONCILE_RUNS, &[], 1.0);
        self.metrics.inc(names::RECONCILE_SECONDS, &[], secs);
        self.metrics.set(names::RECONCILE_LAST_SECONDS, &[], secs);
        match a.result {
            Ok(r) if r.errors.is_empty() => {
                self.health.set_ready("dataplane");
                for (kind, n) in [
                    ("remote-block", a.input.remote_blocks.len()),
                    ("blackhole", a.input.local_blocks.len()),
                    ("workload", a.input.workloads.len()),
                ] {
                    self.metrics
                        .set(names::ROUTES_PROGRAMMED, &[("kind", kind)], n as f64);
                }
            }
            Ok(_) => {}
            Err(e) => self.health.set_not_ready("dataplane", e.to_string()),
        }
        *self.warnings.lock().unwrap() = status::DataplaneStatus::from_applied(&a);
        if a.result.is_ok() {
            self.wireguard.observe(a.wireguard_public_key.as_deref());
        }
    }
}

/// The monitor task: every [`MONITOR_PERIOD`], the speaker's peers become
/// the status socket's rows, the session metrics and the `bgp` readiness;
/// and it tells the loop when the first dataplane sync is due.
async fn monitor(
    name: String,
    mut generation: watch::Receiver<Generation>,
    events: mpsc::Sender<Event>,
    status: Arc<Mutex<NodeStatus>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    warnings: Arc<Mutex<status::DataplaneStatus>>,
) {
    let mut tick = tokio::time::interval(MONITOR_PERIOD);
    let mut gate = FirstSyncGate::default();
    let mut gate_epoch = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = generation.changed() => if changed.is_err() { return },
        }
        let g = generation.borrow_and_update().clone();
        let peers = g.speaker.peers().await;
        if !g.first_sync_done {
            if gate_epoch != Some(g.epoch) {
                gate = FirstSyncGate::default();
                gate_epoch = Some(g.epoch);
            }
            let states: Vec<State> = peers.iter().map(|p| p.state).collect();
            if gate.observe(
                Instant::now(),
                g.started,
                g.desired,
                &states,
                g.speaker.is_synced(),
            ) {
                let _ = events.send(Event::FirstSync(g.epoch)).await;
            }
        }
        let mut by_state: std::collections::BTreeMap<String, f64> = Default::default();
        let rows = peers
            .iter()
            .map(|p| {
                let state = format!("{:?}", p.state);
                *by_state.entry(state.clone()).or_default() += 1.0;
                let up = p.state == State::Established;
                PeerRow {
                    address: p.address.to_string(),
                    peer_type: p.peer_type.to_string(),
                    state: if up {
                        "up".into()
                    } else {
                        state.to_lowercase()
                    },
                    since: p.since.clone(),
                    info: if up {
                        "Established".into()
                    } else {
                        p.last_error.clone().unwrap_or_else(|| state.clone())
                    },
                    prefixes_received: p.prefixes_received as u64,
                    prefixes_accepted: p.prefixes_accepted as u64,
                    prefixes_advertised: p.prefixes_advertised as u64,
                    bfd: p
                        .bfd
                        .map(|s| s.to_string().to_lowercase())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let series: Vec<(Vec<(&str, &str)>, f64)> = by_state
            .iter()
            .map(|(s, n)| (vec![("state", s.as_str())], *n))
            .collect();
        metrics.set_all(names::BGP_SESSIONS, &series);
        if g.desired == 0 || peers.iter().any(|p| p.state == State::Established) {
            health.set_ready("bgp");
        } else {
            health.set_not_ready("bgp", "no BGP session established yet");
        }
        let (ready, not_ready) = match health.readiness() {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e),
        };
        let dataplane = warnings.lock().unwrap().clone();
        *status.lock().unwrap() = NodeStatus {
            node: name.clone(),
            ready,
            not_ready,
            peers: rows,
            warnings: dataplane.warnings,
            routes: dataplane.routes,
        };
    }
}

async fn serve_http(addr: SocketAddr, health: Arc<Health>, metrics: Arc<Metrics>) -> Result<()> {
    let l = http::bind(addr)
        .await
        .with_context(|| format!("binding {addr} for /readyz and /metrics"))?;
    tokio::spawn(http::serve(l, health, metrics));
    Ok(())
}

fn write_nodename(path: &Path, name: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, name) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the nodename file for the CNI plugin");
    }
}

/// Run the node until SIGTERM/SIGINT.
pub async fn run(cfg: NodeConfig) -> Result<()> {
    let reclaim_cfg = crate::reclaim_scan::ReclaimConfig::from_env().map_err(|e| anyhow!(e))?;
    let block_grace = crate::block_sweep::grace_from_env().map_err(|e| anyhow!(e))?;
    let name = cfg.node_name();
    let metrics = Arc::new(node_metrics());
    let health = Arc::new(Health::new(&["datastore", "bgp", "dataplane"]));
    let status_state = Arc::new(Mutex::new(NodeStatus {
        node: name.clone(),
        not_ready: "starting".into(),
        ..Default::default()
    }));
    serve_http(cfg.health_listen, health.clone(), metrics.clone()).await?;
    if let Some(m) = cfg.metrics_listen {
        serve_http(m, health.clone(), metrics.clone()).await?;
    }
    let st = status_state.clone();
    let sock = status::socket_path(&cfg.run_dir);
    let _status_task = tasks::Guard(tokio::spawn(async move {
        if let Err(e) =
            status::serve(sock.clone(), Arc::new(move || st.lock().unwrap().clone())).await
        {
            tracing::error!(path = %sock.display(), error = %e, "status socket failed");
        }
    }));

    let store = connect(&health).await;
    health.set_ready("datastore");
    let client = Client::new(store.clone());
    let ipam = Arc::new(Ipam::new(
        store.clone(),
        Arc::new(DatastoreTopology::new(store.clone())),
    ));

    let nl = felix::RealNetlink::new().map_err(|e| anyhow!("opening netlink: {e}"))?;
    let uplink = startup::detect_uplink(&nl, &cfg).await?;
    tracing::info!(node = %name, iface = %uplink.iface, v4 = ?uplink.v4, v6 = ?uplink.v6, mtu = uplink.mtu, "uplink");
    startup::ensure_default_pool(&client, &cfg).await?;
    let existed = client.get::<datastore::model::Node>(&name).await?.is_some();
    let node = startup::register_node(&client, &name, &uplink, cfg.as_number).await?;
    write_nodename(&cfg.nodename_file, &name);
    // CNI IPAM for this node's pods over a local socket (issue 17), from
    // the registration on; before it, and whenever this agent is down,
    // manx-ipam allocates directly.
    let _ipam_socket = crate::ipam_service::start(
        store.clone(),
        &datastore::config::DatastoreConfig::from_env()
            .map(|c| c.describe())
            .unwrap_or_default(),
        &name,
        &crate::ipam_service::folder(&cfg.run_dir),
        block_grace,
    );

    let mut cache = ClusterCache::new(&name);
    cache.reset(store.list(WATCH_PREFIX).await?);
    let view = cache.view();
    let mut tunnels = Tunnels::default();
    for tunnel in Tunnel::ALL {
        let addr = startup::tunnel_address(
            &ipam,
            &name,
            &startup::tunnel_handle(tunnel, &name),
            startup::tunnel_pools(&view.pools, tunnel),
            tunnel.ipv6(),
        )
        .await
        .with_context(|| format!("allocating the {tunnel} tunnel address"))?;
        tunnels.addrs.extend(addr.map(|a| (tunnel, a)));
    }
    if !tunnels.addrs.is_empty() {
        metrics.inc(
            names::IPAM_OPERATIONS,
            &[("op", "tunnel-address"), ("result", "ok")],
            1.0,
        );
    }

    let dp_cfg = DataplaneConfig {
        resync_interval: Duration::from_secs(cfg.resync_seconds),
        wireguard_key_file: cfg.wireguard_key_file.clone(),
        ..Default::default()
    };
    let mut dp = felix::Dataplane::new(
        nl,
        felix::sysctl::ProcSysctl::default(),
        felix::nat::NftCli::default(),
        felix::SystemClock,
        dp_cfg,
    );
    tunnels.macs = Tunnel::ALL
        .into_iter()
        .filter_map(|t| Some((t, dp.tunnel_mac(t, &name)?)))
        .collect();
    startup::update_node(&client, &name, |n| tunnels.record(n)).await?;

    let (_, bgp_configs) = bgpd::northbound::usable_bgp(&[], &view.bgp_configs);
    let secrets = SecretDir(SECRETS_DIR.into());
    let settings = bgpd::northbound::cluster_settings(&bgp_configs, &secrets);
    let asn = cfg
        .as_number
        .or(node.as_number().map(|a| a.0))
        .unwrap_or(settings.as_number);
    let mut scfg = SpeakerConfig::new(asn, startup::router_id(&uplink, &name));
    // Our Node was registered before: this is a restart, and peers may be
    // holding our routes for us (RFC 4724 R bit).
    scfg.restarting = existed;
    scfg.cluster_id = node.route_reflector_cluster_id();
    let initial = plan::bgp(&view, &name, &tunnels, &secrets);
    scfg.listen = Some(listen_config(initial.listen, &uplink));
    scfg.control_socket = Some(cfg.run_dir.join("bgp.sock"));
    // BFD through manx-bfdd, which survives our restarts (C bit): one we
    // start, or (MANX_BFDD=external) one something else runs; without the
    // binary, in-process BFD (a restart then looks like a node death to
    // peers with BFD).
    let (socket, bfdd) = crate::bfdd::plan(cfg.bfdd, crate::bfdd::binary(), &cfg.run_dir);
    match (&socket, cfg.bfdd) {
        (Some(path), crate::config::BfddMode::External) => {
            tracing::info!(socket = %path.display(), "MANX_BFDD=external: using the manx-bfdd something else runs; starting none")
        }
        (None, _) => tracing::warn!(
            "no manx-bfdd beside manx-node: BFD runs in-process and does not survive a restart of manx-node"
        ),
        _ => {}
    }
    scfg.bfdd_socket = socket;
    let (bfd_wanted, bfd_wanted_rx) = watch::channel(false);
    let feed = RouteFeed::new();
    // The speaker starts with its peers, so that its initial convergence
    // (the first-sync gate's `is_synced`) waits for their End-of-RIB; with
    // none configured it is reached at once, and a peer slower than half a
    // second to resend its routes (a BIRD ToR helping our restart) had them
    // purged from the kernel by the first sync.
    let mut first = scfg.clone();
    // The host routes to `reachableBy` peers go in now: the first sync waits
    // for every session, and those need their route to come up.
    let peer_routes = plan::peer_routes(&initial.peers);
    if !peer_routes.is_empty() {
        let input = felix::DataplaneInput {
            node_name: name.clone(),
            uplink: Some(uplink.clone()),
            peer_routes,
            ..Default::default()
        };
        match dp.add_peer_routes(&input).await {
            Ok(n) => tracing::info!(
                added = n,
                "routes to reachableBy peers before the first sync"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot add the routes to reachableBy peers yet"),
        }
    }
    first.peers = initial.peers.into_iter().map(|p| p.config).collect();
    let speaker = Speaker::start_with_feed(first, feed.clone()).map_err(|e| anyhow!("{e}"))?;
    let control = match &scfg.control_socket {
        Some(path) => Some(ControlSocket::serve(path, speaker.handle())?),
        None => None,
    };

    let warnings = Arc::new(Mutex::new(status::DataplaneStatus::default()));
    let (events_tx, mut events) = mpsc::channel(32);
    let (generation, generation_rx) = watch::channel(Generation {
        epoch: 0,
        speaker: speaker.handle(),
        desired: 0,
        started: Instant::now(),
        first_sync_done: false,
    });
    let _monitor = tasks::Guard(tokio::spawn(monitor(
        name.clone(),
        generation_rx,
        events_tx.clone(),
        status_state.clone(),
        health.clone(),
        metrics.clone(),
        warnings.clone(),
    )));
    let observer = DataplaneObserver {
        metrics: metrics.clone(),
        health: health.clone(),
        warnings,
        wireguard: WireguardPublisher {
            client: client.clone(),
            name: name.clone(),
            published: Arc::new(Mutex::new(None)),
            writing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        },
    };

    let _block_sweep = tasks::Guard(tokio::spawn(crate::block_sweep::run(
        store.clone(),
        name.clone(),
        block_grace,
    )));
    let (workloads_tx, workloads_rx) = watch::channel(Vec::new());
    let _reclaim = start_reclaim(
        reclaim_cfg,
        Client::new(store.clone()),
        ipam.clone(),
        &name,
        workloads_rx,
    );

    let mut agent = Agent {
        name: name.clone(),
        uplink,
        client,
        ipam: ipam.clone(),
        secrets,
        speaker: speaker.handle(),
        running: Some(speaker),
        control,
        speaker_cfg: scfg,
        feed,
        metrics: metrics.clone(),
        cache,
        view: ClusterView::default(),
        peers: vec![],
        networks: vec![],
        remote: RemoteRoutes::new(),
        local_communities: Vec::new(),
        ignored_interfaces: Vec::new(),
        tunnels,
        allocating: BTreeSet::new(),
        dataplane: Some((dp, observer)),
        dp_tx: None,
        generation,
        events: events_tx,
        tasks: Vec::new(),
        workloads: workloads_tx,
        run_dir: cfg.run_dir.clone(),
        bfd_wanted,
    };
    if let Some(bin) = bfdd {
        agent.spawn(crate::bfdd::supervise(
            bin,
            cfg.run_dir.clone(),
            bfd_wanted_rx,
        ));
    }
    agent.recompute();

    let mut watch = store.watch(WATCH_PREFIX, agent.cache.revision).await?;
    let mut dirty = false;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tracing::info!(node = %name, asn, "manx-node running");
    loop {
        let feed = agent.feed.clone();
        tokio::select! {
            ev = watch.next() => match ev {
                Some(Ok(ev)) => {
                    metrics.inc(names::DATASTORE_EVENTS, &[], 1.0);
                    if matches!(ev, WatchEvent::Resync(_)) {
                        tracing::info!("datastore history compacted: resynced");
                    }
                    dirty |= agent.cache.apply(ev);
                }
                Some(Err(e)) => {
                    metrics.inc(names::DATASTORE_ERRORS, &[("op", "watch")], 1.0);
                    tracing::warn!(error = %e, "datastore watch error");
                }
                None => {
                    metrics.inc(names::DATASTORE_ERRORS, &[("op", "watch")], 1.0);
                    tracing::warn!("datastore watch ended; restarting it");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    watch = store.watch(WATCH_PREFIX, agent.cache.revision).await?;
                }
            },
            batch = feed.recv() => {
                for u in batch {
                    agent.route_update(u);
                }
                agent.push_dataplane();
            }
            Some(ev) = events.recv() => agent.on_event(ev),
            _ = tokio::time::sleep(DEBOUNCE), if dirty => {
                dirty = false;
                agent.recompute();
            }
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!("stopping: kernel routes stay in place, peers keep ours (graceful restart)");
    agent.control = None;
    if let Some(sp) = agent.running.take() {
        sp.shutdown_for_restart().await;
    }
    Ok(())
}

/// The stale-workload reclaim task, unless turned off.
fn start_reclaim(
    cfg: crate::reclaim_scan::ReclaimConfig,
    client: Client,
    ipam: Arc<Ipam>,
    name: &str,
    workloads: watch::Receiver<Vec<datastore::model::WorkloadEndpoint>>,
) -> Option<tasks::Guard> {
    use crate::reclaim_scan::{NetlinkLinks, SCAN_ENV, Scanner};
    let Some(interval) = cfg.interval else {
        tracing::info!("stale-workload reclaim turned off ({SCAN_ENV}=0)");
        return None;
    };
    let links = match felix::RealNetlink::new() {
        Ok(nl) => NetlinkLinks(nl),
        Err(e) => {
            tracing::error!(error = %e, "stale-workload reclaim not started: cannot open netlink");
            return None;
        }
    };
    let scanner = Scanner {
        client,
        ipam,
        node: name.to_string(),
        grace: cfg.grace,
        links,
    };
    Some(tasks::Guard(tokio::spawn(scanner.run(interval, workloads))))
}

/// The speaker's listener for a plan's `(address, port)`: the node's IP
/// with `bindMode: NodeIP`, else every address of the uplink's family.
fn listen_config(listen: (Option<IpAddr>, u16), uplink: &Uplink) -> ListenConfig {
    let any = if agent_v6(uplink) {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    ListenConfig {
        address: listen.0.unwrap_or(any),
        port: listen.1,
    }
}

fn agent_v6(uplink: &Uplink) -> bool {
    uplink.v6.is_some()
}

mod tasks {
    /// Aborts its task when dropped.
    #[derive(Debug)]
    pub struct Guard(pub tokio::task::JoinHandle<()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn first_sync_waits_for_every_desired_peer_up_half_a_second_and_synced() {
        let t0 = Instant::now();
        let mut g = FirstSyncGate::default();
        let up = [State::Established, State::Established];
        // The speaker knows no peers yet: vacuously synced, but two desired.
        assert!(!g.observe(at(t0, 100), t0, 2, &[], true));
        assert!(!g.observe(at(t0, 200), t0, 2, &[State::Established], true));
        assert!(!g.observe(at(t0, 300), t0, 2, &up, true), "just came up");
        assert!(!g.observe(at(t0, 600), t0, 2, &up, true), "up 300 ms");
        // A flap restarts the half second.
        assert!(!g.observe(
            at(t0, 700),
            t0,
            2,
            &[State::Established, State::Active],
            true
        ));
        assert!(!g.observe(at(t0, 800), t0, 2, &up, true));
        assert!(
            !g.observe(at(t0, 1400), t0, 2, &up, false),
            "End-of-RIB not in yet"
        );
        assert!(g.observe(at(t0, 1500), t0, 2, &up, true));
    }

    #[test]
    fn first_sync_without_peers_after_a_second_and_never_after_the_bound() {
        let t0 = Instant::now();
        let mut g = FirstSyncGate::default();
        assert!(!g.observe(at(t0, 500), t0, 0, &[], true));
        assert!(g.observe(at(t0, 1100), t0, 0, &[], true));
        let mut g = FirstSyncGate::default();
        let down = [State::Connect];
        assert!(!g.observe(at(t0, 9_000), t0, 1, &down, false));
        assert!(g.observe(
            t0 + FIRST_SYNC_MAX_WAIT + Duration::from_millis(1),
            t0,
            1,
            &down,
            false
        ));
    }
}
