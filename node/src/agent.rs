//! The agent: startup, then one loop that turns datastore changes and BGP
//! route changes into BGP peers, originated prefixes and dataplane state.
//!
//! ```text
//!   datastore watch (/manx/) ──► ClusterCache ──(debounce)──► ClusterView
//!                                                               │
//!        ┌──────────────────────────────────────────────────────┤
//!        ▼                                                      ▼
//!   bgpd Speaker ◄── set_peers / announce / withdraw      DataplaneInput ──watch──► dataplane task
//!        │                                                      ▲                    (felix-lite)
//!        └── RouteUpdate (mpsc) ──► remote routes ──────────────┘
//!   status socket, /readyz, /metrics ◄── shared NodeStatus / Health / Metrics
//! ```
//!
//! The loop is the one owner of the node's state; the dataplane task owns
//! the kernel shims; they talk over a `watch` channel (latest state wins).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bgpd::config::{ListenConfig, SpeakerConfig};
use bgpd::rib::RouteUpdate;
use bgpd::speaker::{Speaker, SpeakerHandle};
use datastore::client::Client;
use datastore::{Datastore, WatchEvent};
use felix::{DataplaneConfig, DataplaneInput, Tunnel, Uplink};
use futures::StreamExt;
use ipam::Ipam;
use ipam::resources::DatastoreTopology;
use ipnetwork::IpNetwork;
use tokio::sync::mpsc;

use crate::cluster::{ClusterCache, ClusterView, WATCH_PREFIX};
use crate::config::NodeConfig;
use crate::http::{self, Health};
use crate::metrics::{Metrics, names, node_metrics};
use crate::startup::{self, Tunnels};
use crate::status::{self, NodeStatus, PeerRow};
use bgpd::cluster::{DesiredPeer, SecretDir, desired_peers};

/// How long a burst of datastore events is gathered before recomputing.
const DEBOUNCE: Duration = Duration::from_millis(5);
/// After a restart, how long the dataplane waits for BGP to relearn routes
/// before its first full sync (so the kernel keeps forwarding meanwhile).
const FIRST_SYNC_MAX_WAIT: Duration = Duration::from_secs(10);

async fn connect(cfg: &NodeConfig, health: &Health) -> Arc<dyn Datastore> {
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
        let _ = cfg;
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

/// Everything the loop owns.
struct Agent {
    name: String,
    uplink: Uplink,
    client: Client,
    speaker: SpeakerHandle,
    /// The running speaker (restarted when the node's route-reflector
    /// cluster id changes) and how to start another.
    running: Option<Speaker>,
    /// The control socket, answering from `running`.
    control: Option<ControlSocket>,
    speaker_cfg: SpeakerConfig,
    route_tx: mpsc::UnboundedSender<RouteUpdate>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    status: Arc<Mutex<NodeStatus>>,
    cache: ClusterCache,
    view: ClusterView,
    peers: Vec<DesiredPeer>,
    originated: BTreeSet<IpNetwork>,
    /// Best BGP routes learnt from peers: prefix → (next hop, peer).
    remote: BTreeMap<IpNetwork, (IpAddr, IpAddr)>,
    /// This node's tunnel addresses and MACs.
    tunnels: Tunnels,
    ipam: Arc<Ipam>,
    dp_tx: tokio::sync::watch::Sender<Option<DataplaneInput>>,
    started: Instant,
    all_up_since: Option<Instant>,
    first_sync_done: bool,
}

impl Agent {
    /// Take a tunnel address when a pool starts needing one (a VXLAN or
    /// IPIP pool created after start), and record it in the Node.
    async fn ensure_tunnels(&mut self) {
        let mut changed = false;
        for tunnel in Tunnel::ALL {
            let kind = tunnel.name();
            let pools = startup::tunnel_pools(&self.view.pools, tunnel);
            if self.tunnels.addrs.contains_key(&tunnel) || pools.is_empty() {
                continue;
            }
            let handle = startup::tunnel_handle(tunnel, &self.name);
            let v6 = tunnel.ipv6();
            match startup::tunnel_address(&self.ipam, &self.name, &handle, pools, v6).await {
                Ok(Some(ip)) => {
                    tracing::info!(%ip, kind, "tunnel address allocated");
                    self.metrics.inc(
                        names::IPAM_OPERATIONS,
                        &[("op", "tunnel-address"), ("result", "ok")],
                        1.0,
                    );
                    self.tunnels.addrs.insert(tunnel, ip);
                    changed = true;
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
        if changed {
            let tunnels = &self.tunnels;
            if let Err(e) =
                startup::update_node(&self.client, &self.name, |n| tunnels.record(n)).await
            {
                tracing::warn!(error = %e, "cannot record the tunnel addresses in the Node");
            }
        }
    }

    /// A node that becomes (or stops being) a route reflector gets a
    /// speaker with the new cluster id; its sessions restart once.
    async fn check_cluster_id(&mut self) {
        let id = self
            .view
            .nodes
            .iter()
            .find(|n| n.metadata.name == self.name)
            .and_then(|n| n.route_reflector_cluster_id());
        if id == self.speaker_cfg.cluster_id {
            return;
        }
        tracing::info!(cluster_id = ?id, "route-reflector cluster id changed: restarting the BGP speaker");
        if let Some(old) = self.running.take() {
            old.shutdown("route-reflector cluster id changed").await;
        }
        let mut cfg = self.speaker_cfg.clone();
        cfg.cluster_id = id;
        cfg.restarting = true;
        // The old speaker has released its port; a bind can still fail for
        // a moment (or for good: then a later recompute tries again, since
        // the cluster id is recorded only once a speaker runs with it).
        let mut started = None;
        for attempt in 1..=10 {
            match Speaker::start(cfg.clone(), Some(self.route_tx.clone())) {
                Ok(sp) => {
                    started = Some(sp);
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, attempt, "cannot restart the BGP speaker");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let Some(sp) = started else {
            return;
        };
        self.speaker_cfg = cfg;
        self.speaker = sp.handle();
        self.running = Some(sp);
        // The control socket follows the running speaker.
        self.control = None;
        if let Some(path) = &self.speaker_cfg.control_socket {
            match ControlSocket::serve(path, self.speaker.clone()) {
                Ok(c) => self.control = Some(c),
                Err(e) => tracing::error!(error = %format!("{e:#}"), "bgpd control socket lost"),
            }
        }
        // Everything is pushed again to the new speaker, and its routes are
        // relearnt before the dataplane sees the new set (no flap meanwhile).
        self.peers.clear();
        self.originated.clear();
        self.remote.clear();
        self.first_sync_done = false;
        self.all_up_since = None;
        self.started = Instant::now();
    }

    async fn recompute(&mut self) {
        self.view = self.cache.view(&self.name);
        self.check_cluster_id().await;
        self.ensure_tunnels().await;
        crate::logging::follow_datastore_level(bgpd::northbound::node_log_level(
            &self.view.bgp_configs,
            &self.name,
        ));
        let secrets = SecretDir("/etc/manx/secrets".into());
        let peers = desired_peers(
            &self.name,
            &self.view.nodes,
            &self.view.bgp_peers,
            &self.view.bgp_configs,
            &secrets,
        );
        if peers != self.peers {
            tracing::info!(count = peers.len(), "BGP peers changed");
            self.speaker
                .set_peers(peers.iter().map(|p| p.config.clone()).collect());
            self.peers = peers;
        }
        let want: BTreeSet<IpNetwork> = self.view.originated().into_iter().collect();
        for p in want.difference(&self.originated) {
            tracing::debug!(prefix = %p, "announce");
            self.speaker.announce(*p).await;
        }
        for p in self.originated.difference(&want) {
            tracing::debug!(prefix = %p, "withdraw");
            self.speaker.withdraw(*p).await;
        }
        self.originated = want;
        self.metrics.set(
            names::LOCAL_WORKLOADS,
            &[],
            self.view.workloads.len() as f64,
        );
        self.push_dataplane();
    }

    fn dataplane_input(&self) -> DataplaneInput {
        self.view
            .dataplane_input(&self.name, &self.uplink, &self.remote, &self.tunnels)
    }

    /// Hand the dataplane its new input, unless we are still waiting for
    /// BGP after a restart.
    fn push_dataplane(&mut self) {
        if !self.first_sync_done {
            return;
        }
        let input = self.dataplane_input();
        self.dp_tx.send_if_modified(|cur| {
            if cur.as_ref() == Some(&input) {
                false
            } else {
                *cur = Some(input);
                true
            }
        });
    }

    fn route_update(&mut self, u: RouteUpdate) {
        match u {
            RouteUpdate::Add {
                prefix,
                next_hop,
                peer,
            } => {
                self.remote.insert(prefix, (next_hop, peer));
            }
            RouteUpdate::Remove { prefix } => {
                self.remote.remove(&prefix);
            }
        }
    }

    /// BGP has relearnt what it will, or we waited long enough: let the
    /// dataplane do its first full sync. "Relearnt" is: the speaker says it
    /// is synced (End-of-RIB from every peer it had, `SpeakerHandle::synced`)
    /// *and* every desired peer has been Established for half a second. The
    /// second half matters because the speaker is started before manx-node
    /// gives it its peers, so its own notion can be true vacuously.
    async fn maybe_first_sync(&mut self) {
        if self.first_sync_done {
            return;
        }
        let states = self.speaker.peers().await;
        let all_up = !states.is_empty()
            && states.len() >= self.peers.len()
            && states
                .iter()
                .all(|p| format!("{:?}", p.state) == "Established");
        let now = Instant::now();
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
        let waited = self.started.elapsed();
        let no_peers = self.peers.is_empty() && waited > Duration::from_secs(1);
        if (settled && self.speaker.is_synced()) || no_peers || waited > FIRST_SYNC_MAX_WAIT {
            tracing::info!(peers = states.len(), ?waited, "first dataplane sync");
            self.first_sync_done = true;
            self.push_dataplane();
        }
    }

    async fn refresh_status(&mut self, warnings: Vec<String>) {
        let peers = self.speaker.peers().await;
        let mut by_state: BTreeMap<String, f64> = BTreeMap::new();
        let rows = peers
            .iter()
            .map(|p| {
                let state = format!("{:?}", p.state);
                *by_state.entry(state.clone()).or_default() += 1.0;
                let up = state == "Established";
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
                }
            })
            .collect();
        let series: Vec<(Vec<(&str, &str)>, f64)> = by_state
            .iter()
            .map(|(s, n)| (vec![("state", s.as_str())], *n))
            .collect();
        self.metrics.set_all(names::BGP_SESSIONS, &series);
        if self.peers.is_empty()
            || peers
                .iter()
                .any(|p| format!("{:?}", p.state) == "Established")
        {
            self.health.set_ready("bgp");
        } else {
            self.health
                .set_not_ready("bgp", "no BGP session established yet");
        }
        let (ready, not_ready) = match self.health.readiness() {
            Ok(()) => (true, String::new()),
            Err(e) => (false, e),
        };
        *self.status.lock().unwrap() = NodeStatus {
            node: self.name.clone(),
            ready,
            not_ready,
            peers: rows,
            warnings,
        };
    }
}

/// The dataplane task: applies each new input, resyncs periodically,
/// retries after errors, and reports into metrics and health.
async fn dataplane_task(
    mut dp: felix::Dataplane<
        felix::RealNetlink,
        felix::sysctl::ProcSysctl,
        felix::nat::NftCli,
        felix::SystemClock,
    >,
    mut rx: tokio::sync::watch::Receiver<Option<DataplaneInput>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    warnings: Arc<Mutex<Vec<String>>>,
    resync: Duration,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let input = rx.borrow_and_update().clone();
        let mut wait = resync;
        if let Some(input) = input {
            let t0 = Instant::now();
            let res = dp.apply(&input).await;
            let secs = t0.elapsed().as_secs_f64();
            metrics.inc(names::RECONCILE_RUNS, &[], 1.0);
            metrics.inc(names::RECONCILE_SECONDS, &[], secs);
            metrics.set(names::RECONCILE_LAST_SECONDS, &[], secs);
            match res {
                Ok(r) if r.errors.is_empty() => {
                    backoff = Duration::from_millis(200);
                    health.set_ready("dataplane");
                    for (kind, n) in [
                        ("remote-block", input.remote_blocks.len()),
                        ("blackhole", input.local_blocks.len()),
                        ("workload", input.workloads.len()),
                    ] {
                        metrics.set(names::ROUTES_PROGRAMMED, &[("kind", kind)], n as f64);
                    }
                }
                Ok(r) => {
                    tracing::warn!(errors = ?r.errors, "dataplane apply had errors; resync follows");
                    wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dataplane apply failed; retrying");
                    health.set_not_ready("dataplane", e.to_string());
                    wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
            *warnings.lock().unwrap() = dp.degraded_pools().into_iter().map(|d| d.reason).collect();
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
        }
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

    let store = connect(&cfg, &health).await;
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

    let mut cache = ClusterCache::default();
    cache.reset(store.list(WATCH_PREFIX).await?);
    let view = cache.view(&name);
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
        ..Default::default()
    };
    let dp = felix::Dataplane::new(
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

    let cluster_cfg = bgpd::cluster::cluster_config(&view.bgp_configs).cloned();
    let asn = cfg
        .as_number
        .or(node.as_number().map(|a| a.0))
        .or(cluster_cfg.as_ref().map(|c| c.spec.as_number().0))
        .unwrap_or(datastore::model::DEFAULT_AS_NUMBER.0);
    let port = cluster_cfg
        .as_ref()
        .map(|c| c.spec.listen_port())
        .unwrap_or(179);
    let mut scfg = SpeakerConfig::new(asn, startup::router_id(&uplink, &name));
    // Our Node was registered before: this is a restart, and peers may be
    // holding our routes for us (RFC 4724 R bit).
    scfg.restarting = existed;
    scfg.cluster_id = node.route_reflector_cluster_id();
    let any: IpAddr = if agent_v6(&uplink) {
        "::".parse()?
    } else {
        "0.0.0.0".parse()?
    };
    scfg.listen = Some(ListenConfig { address: any, port });
    scfg.control_socket = Some(cfg.run_dir.join("bgp.sock"));
    let (route_tx, mut route_rx) = mpsc::unbounded_channel();
    let speaker =
        Speaker::start(scfg.clone(), Some(route_tx.clone())).map_err(|e| anyhow!("{e}"))?;
    let control = match &scfg.control_socket {
        Some(path) => Some(ControlSocket::serve(path, speaker.handle())?),
        None => None,
    };

    let warnings = Arc::new(Mutex::new(Vec::new()));
    let (dp_tx, dp_rx) = tokio::sync::watch::channel(None);
    let _dp_task = tasks::Guard(tokio::spawn(dataplane_task(
        dp,
        dp_rx,
        metrics.clone(),
        health.clone(),
        warnings.clone(),
        Duration::from_secs(cfg.resync_seconds),
    )));

    let mut agent = Agent {
        name: name.clone(),
        uplink,
        client,
        speaker: speaker.handle(),
        running: Some(speaker),
        control,
        speaker_cfg: scfg,
        route_tx,
        metrics: metrics.clone(),
        health: health.clone(),
        status: status_state.clone(),
        cache,
        view: ClusterView::default(),
        peers: vec![],
        originated: BTreeSet::new(),
        remote: BTreeMap::new(),
        tunnels,
        ipam: ipam.clone(),
        dp_tx,
        started: Instant::now(),
        all_up_since: None,
        first_sync_done: false,
    };
    agent.recompute().await;

    let mut watch = store.watch(WATCH_PREFIX, agent.cache.revision).await?;
    let mut dirty = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tracing::info!(node = %name, asn, "manx-node running");
    loop {
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
            Some(u) = route_rx.recv() => {
                agent.route_update(u);
                // Gather the burst an UPDATE brings.
                while let Ok(u) = route_rx.try_recv() {
                    agent.route_update(u);
                }
                agent.push_dataplane();
            }
            _ = tokio::time::sleep(DEBOUNCE), if dirty => {
                dirty = false;
                agent.recompute().await;
            }
            _ = tick.tick() => {
                agent.maybe_first_sync().await;
                let w = warnings.lock().unwrap().clone();
                agent.refresh_status(w).await;
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
