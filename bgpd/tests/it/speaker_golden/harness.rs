//! The scenario runner behind `speaker_golden.rs`: one real [`Speaker`]
//! (the device under test, "DUT") on a loopback address, scripted peers
//! ([`ScriptedPeer`]) that connect to it, and a transcript of what every
//! step made the DUT send (UPDATEs per peer) and emit (`RouteUpdate`s).
//!
//! # Script (`<name>.events.jsonl`, one JSON object per line, `#` comments)
//!
//! * `{"step":"speaker","address":A,"router_id":R,"cluster_id":C?,"networks":[..],
//!   "peers":[{"name":N,"address":A,"asn":AS,"rr_client":B?,"next_hop_mode":M?}]}`
//!   — first line: start the DUT (AS 64512) listening on `A`:0; every
//!   peer is passive on the DUT side (the scripted peers connect).
//! * `{"step":"connect","peer":N,"router_id":R,"restart_time":T?}` — TCP
//!   from the peer's address, OPEN (hold time 0: no timers), KEEPALIVE, then
//!   the DUT's initial table up to End-of-RIB. `restart_time` advertises
//!   the Graceful Restart capability (RFC 4724 §3).
//! * `{"step":"announce","peer":N,"prefixes":[..],"next_hop":H?,"as_path":[..]?,
//!   "origin":"igp|egp|incomplete"?,"med":M?,"local_pref":L?,"communities":[..]?,
//!   "originator_id":O?,"cluster_list":[..]?}` / `{"step":"withdraw","peer":N,"prefixes":[..]}`
//!   / `{"step":"eor","peer":N}` — one UPDATE.
//! * `{"step":"drop","peer":N}` — close the TCP connection, no NOTIFICATION.
//! * `{"step":"cease","peer":N}` — NOTIFICATION Cease/Administrative Shutdown, then close.
//! * `{"step":"rib"}` — also record the DUT's Loc-RIB.
//! * `{"step":"filters","peer":N,"filters":[..]}` — set the filters of the
//!   DUT's session with `N` live (the speaker step's peers take the same
//!   `"filters":[..]`): `bgpd::policy::Filter`s as `manx-bgpd`'s YAML
//!   writes them.
//! * BFD (RFC 5882): `"bfdd":true` in the speaker step serves the DUT's
//!   BFD from a scripted manx-bfdd (the real control socket protocol of
//!   `bgpd::bfd::daemon`, JSON lines over a unix socket) and a peer with
//!   `"bfd":true` asks it for a session. `{"step":"bfd","peer":N,"to":"up|down",
//!   "c_bit":B}` — that session's state change as manx-bfdd reports it, with
//!   the peer's C bit (control plane independent, RFC 5880 §4.1).
//!   `{"step":"await_stale_flush","peer":N}` — wait until the DUT dropped
//!   every route of `N` (a restart timer running out), failing if that came
//!   sooner than the restart time `N` advertised after its `drop`.
//! * `{"step":"multipath","ebgp":B?,"ibgp":B?,"relaxNeighborAS":B?}` — change
//!   which equal paths merge (the speaker step takes the same as
//!   `"multipath":{..}`); a route update with `next_hops` is a multipath one.
//!
//! # Determinism
//!
//! No sleeps decide anything. After an input from peer `P`, `P` sends a
//! *sentinel* prefix (10.255.<i>.0/24) in a second UPDATE and the runner
//! polls the DUT's Loc-RIB until the sentinel is there: messages of one
//! session are processed in order, so the step's UPDATE was too. Then the
//! DUT originates its own sentinel (10.255.255.0/24) and every connected
//! peer reads until it sees it: everything before it on the TCP stream is
//! the step's output (the actor handled the step before the sentinel
//! command). Sentinels (10.255.0.0/16) are left out of the transcript.
//! Within a step, each peer's output is flattened to one entry per prefix
//! and sorted by prefix (stable: one prefix's events keep their order), so
//! how the DUT batches prefixes into UPDATEs does not matter; ports and
//! times never appear.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bgpd::bfd::{Diag, State as BfdState, io::Event as BfdEvent};
use bgpd::config::{BfdConfig, ListenConfig, NextHopMode};
use bgpd::packet::{AsSegment, Message, Notification, Origin, PathAttribute, Update};
use bgpd::rib::{Multipath, RouteSource};
use bgpd::{PeerConfig, RouteUpdate, Speaker, SpeakerConfig, SpeakerHandle};
use ipnetwork::IpNetwork;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::peer::{Attrs, Event, PeerSpec, ScriptedPeer};

/// The AS of every DUT.
pub const DUT_AS: u32 = 64512;
/// Bound of every wait: generous, since 2 shared cores can be slow.
const LIMIT: Duration = Duration::from_secs(30);

fn dut_sentinel() -> IpNetwork {
    "10.255.255.0/24".parse().unwrap()
}

fn is_sentinel(p: &IpNetwork) -> bool {
    match p {
        IpNetwork::V4(v4) => v4.ip().octets()[..2] == [10, 255],
        IpNetwork::V6(_) => false,
    }
}

/// The directory of scripts and goldens.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/speaker_golden")
}

struct PeerEntry {
    index: u8,
    address: IpAddr,
    asn: u32,
    session: Option<ScriptedPeer>,
    /// The restart time it advertised on connect.
    restart_time: Option<u16>,
    /// When the script dropped its connection.
    dropped_at: Option<Instant>,
    /// Its BFD session's state as the scripted manx-bfdd last reported it.
    bfd: BfdState,
}

/// A scripted manx-bfdd: the DUT connects to its socket and asks for
/// sessions (`add` lines); the script decides what it reports back.
struct FakeBfdd {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// Peers the DUT asked for (`add`).
    asked: Arc<Mutex<Vec<Ipv4Addr>>>,
    events: mpsc::UnboundedSender<BfdEvent>,
}

impl FakeBfdd {
    fn start() -> FakeBfdd {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bfdd.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (events, mut rx) = mpsc::unbounded_channel::<BfdEvent>();
        let seen = asked.clone();
        tokio::spawn(async move {
            // One client: the DUT's speaker.
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            loop {
                tokio::select! {
                    line = lines.next_line() => {
                        let Ok(Some(line)) = line else { return };
                        let req: bgpd::bfd::daemon::Request =
                            serde_json::from_str(&line).expect("a manx-bfdd request line");
                        if let bgpd::bfd::daemon::Request::Add { spec } = req {
                            seen.lock().unwrap().push(spec.peer);
                        }
                    }
                    ev = rx.recv() => {
                        let Some(ev) = ev else { return };
                        let mut line = serde_json::to_string(&ev).unwrap();
                        line.push('\n');
                        write.write_all(line.as_bytes()).await.unwrap();
                    }
                }
            }
        });
        FakeBfdd {
            _dir: dir,
            path,
            asked,
            events,
        }
    }
}

/// A running scenario.
pub struct Harness {
    speaker: Option<Speaker>,
    handle: SpeakerHandle,
    listen: SocketAddr,
    routes: mpsc::UnboundedReceiver<RouteUpdate>,
    peers: BTreeMap<String, PeerEntry>,
    names: HashMap<IpAddr, String>,
    /// The DUT's peer configurations, in the speaker step's order.
    configs: Vec<PeerConfig>,
    bfdd: Option<FakeBfdd>,
}

/// A `"filters":[..]` list.
fn filters(v: &Value) -> Vec<bgpd::policy::Filter> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("filters {v}: {e}"))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("step {v}: `{key}` must be a string"))
}

fn ip(v: &Value, key: &str) -> IpAddr {
    s(v, key)
        .parse()
        .unwrap_or_else(|e| panic!("step {v}: `{key}`: {e}"))
}

fn v4(text: &str) -> Ipv4Addr {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an IPv4 address: {e}"))
}

fn prefixes(v: &Value) -> Vec<IpNetwork> {
    v["prefixes"]
        .as_array()
        .unwrap_or_else(|| panic!("step {v}: `prefixes` must be a list"))
        .iter()
        .map(|p| p.as_str().unwrap().parse().unwrap())
        .collect()
}

fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Igp => "igp",
        Origin::Egp => "egp",
        Origin::Incomplete => "incomplete",
    }
}

/// The attributes of an UPDATE as the transcript shows them.
fn attrs_json(u: &Update) -> Value {
    let mut m = serde_json::Map::new();
    for a in &u.attributes {
        match a {
            PathAttribute::Origin(o) => {
                m.insert("origin".into(), json!(origin_name(*o)));
            }
            PathAttribute::AsPath(p) => {
                let flat: Vec<Value> = p
                    .segments
                    .iter()
                    .flat_map(|s| match s {
                        AsSegment::Sequence(v) => v.iter().map(|a| json!(a)).collect::<Vec<_>>(),
                        other => vec![json!(format!("{other:?}"))],
                    })
                    .collect();
                m.insert("as_path".into(), Value::Array(flat));
            }
            PathAttribute::NextHop(h) => {
                m.insert("next_hop".into(), json!(h.to_string()));
            }
            PathAttribute::MultiExitDisc(x) => {
                m.insert("med".into(), json!(x));
            }
            PathAttribute::LocalPref(x) => {
                m.insert("local_pref".into(), json!(x));
            }
            PathAttribute::Communities(c) => {
                let c: Vec<String> = c
                    .iter()
                    .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                    .collect();
                m.insert("communities".into(), json!(c));
            }
            PathAttribute::OriginatorId(o) => {
                m.insert("originator_id".into(), json!(o.to_string()));
            }
            PathAttribute::ClusterList(l) => {
                let l: Vec<String> = l.iter().map(|x| x.to_string()).collect();
                m.insert("cluster_list".into(), json!(l));
            }
            PathAttribute::MpReach(_) | PathAttribute::MpUnreach(_) => {}
            other => {
                m.insert(
                    format!("attr{}", other.type_code()),
                    json!(format!("{other:?}")),
                );
            }
        }
    }
    Value::Object(m)
}

/// One UPDATE as transcript entries, sentinels left out: (sort key, entry).
fn update_entries(u: &Update) -> Vec<(String, Value)> {
    if let Some(f) = u.is_end_of_rib() {
        // After every prefix of the step.
        return vec![("~eor".into(), json!({ "eor": f.to_string() }))];
    }
    let mut out = Vec::new();
    for (_, n) in u.withdrawals() {
        if !is_sentinel(&n.prefix) {
            out.push((
                n.prefix.to_string(),
                json!({ "withdraw": n.prefix.to_string() }),
            ));
        }
    }
    let attrs = attrs_json(u);
    for (_, n, _) in u.announcements() {
        if !is_sentinel(&n.prefix) {
            out.push((
                n.prefix.to_string(),
                json!({ "announce": n.prefix.to_string(), "attrs": attrs }),
            ));
        }
    }
    out
}

fn announces(u: &Update, p: IpNetwork) -> bool {
    u.announcements().iter().any(|(_, n, _)| n.prefix == p)
}

/// `{"ebgp":B?,"ibgp":B?,"relaxNeighborAS":B?}` (a `multipath` step, or
/// the speaker's `multipath`), the defaults of the fields left out.
fn multipath(v: &Value) -> Multipath {
    let mut fields = v.clone();
    if let Some(o) = fields.as_object_mut() {
        o.remove("step");
    }
    serde_json::from_value(fields).unwrap_or_else(|e| panic!("multipath {v}: {e}"))
}

fn withdraws(u: &Update, p: IpNetwork) -> bool {
    u.withdrawals().iter().any(|(_, n)| n.prefix == p)
}

impl Harness {
    fn start(step: &Value) -> Harness {
        assert_eq!(
            s(step, "step"),
            "speaker",
            "the first step starts the speaker"
        );
        let address = ip(step, "address");
        let mut cfg = SpeakerConfig::new(DUT_AS, v4(s(step, "router_id")));
        cfg.listen = Some(ListenConfig { address, port: 0 });
        cfg.cluster_id = step["cluster_id"].as_str().map(v4);
        if step.get("multipath").is_some() {
            cfg.multipath = multipath(&step["multipath"]);
        }
        cfg.networks = step["networks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| p.as_str().unwrap().parse().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let bfdd = step["bfdd"]
            .as_bool()
            .unwrap_or(false)
            .then(FakeBfdd::start);
        cfg.bfdd_socket = bfdd.as_ref().map(|b| b.path.clone());
        let mut peers = BTreeMap::new();
        let mut names = HashMap::new();
        for (i, p) in step["peers"].as_array().expect("peers").iter().enumerate() {
            let name = s(p, "name").to_string();
            let address = ip(p, "address");
            let asn = p["asn"].as_u64().map_or(DUT_AS, |a| a as u32);
            let mut pc = PeerConfig::new(address, asn);
            pc.passive = true;
            pc.rr_client = p["rr_client"].as_bool().unwrap_or(false);
            pc.next_hop_mode = match p["next_hop_mode"].as_str() {
                None | Some("auto") => NextHopMode::Auto,
                Some("self") => NextHopMode::SelfAddr,
                Some("keep") => NextHopMode::Keep,
                Some(other) => panic!("next_hop_mode {other:?}: use auto, self or keep"),
            };
            if let Some(f) = p.get("filters") {
                pc.filters = filters(f);
            }
            if p["bfd"].as_bool().unwrap_or(false) {
                assert!(
                    bfdd.is_some(),
                    "peer {name}: bfd needs \"bfdd\": true in the speaker step"
                );
                pc.bfd = Some(BfdConfig::default());
            }
            cfg.peers.push(pc);
            names.insert(address, name.clone());
            peers.insert(
                name,
                PeerEntry {
                    index: i as u8,
                    address,
                    asn,
                    session: None,
                    restart_time: None,
                    dropped_at: None,
                    bfd: BfdState::Down,
                },
            );
        }
        let (tx, routes) = mpsc::unbounded_channel();
        let configs = cfg.peers.clone();
        let speaker = Speaker::start(cfg, Some(tx)).expect("start the speaker under test");
        Harness {
            handle: speaker.handle(),
            listen: speaker.listen_addr().expect("listening"),
            speaker: Some(speaker),
            routes,
            peers,
            names,
            configs,
            bfdd,
        }
    }

    fn name_of(&self, a: IpAddr) -> String {
        self.names.get(&a).cloned().unwrap_or_else(|| a.to_string())
    }

    fn peer(&mut self, step: &Value) -> (String, &mut PeerEntry) {
        let name = s(step, "peer").to_string();
        let e = self
            .peers
            .get_mut(&name)
            .unwrap_or_else(|| panic!("step {step}: no peer {name:?} in the speaker step"));
        (name, e)
    }

    async fn poll(&self, what: &str, mut f: impl AsyncFnMut(&SpeakerHandle) -> bool) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !f(&self.handle).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not reached in {LIMIT:?}; peers: {:#?}",
                self.handle.peers().await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until the DUT processed everything peer `name` sent so far.
    async fn input_barrier(&mut self, name: &str) {
        let (addr, sentinel, attrs) = {
            let e = &self.peers[name];
            let sentinel: IpNetwork = format!("10.255.{}.0/24", e.index).parse().unwrap();
            let IpAddr::V4(nh) = e.address else {
                panic!("IPv4 peers only")
            };
            let mut attrs = Attrs::new(nh);
            if e.asn != DUT_AS {
                attrs.as_path = vec![e.asn];
            }
            (e.address, sentinel, attrs)
        };
        let session = self.peers.get_mut(name).unwrap().session.as_mut().unwrap();
        session.announce(&[sentinel], &attrs).await;
        let present = async |h: &SpeakerHandle| {
            h.routes()
                .await
                .iter()
                .any(|r| r.prefix == sentinel && r.source == RouteSource::Peer(addr))
        };
        self.poll(&format!("{name}'s sentinel in the Loc-RIB"), present)
            .await;
        let session = self.peers.get_mut(name).unwrap().session.as_mut().unwrap();
        session.withdraw(&[sentinel]).await;
        self.poll(&format!("{name}'s sentinel withdrawn"), async |h| {
            !h.routes().await.iter().any(|r| r.prefix == sentinel)
        })
        .await;
    }

    /// Read peer `name`'s events until `until` matches an UPDATE; returns
    /// the entries before it (and after it, from that UPDATE).
    async fn read_until(
        &mut self,
        name: &str,
        until: impl Fn(&Update) -> bool,
    ) -> Vec<(String, Value)> {
        let entry = self.peers.get_mut(name).unwrap();
        let Some(session) = entry.session.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        loop {
            match session.recv(LIMIT).await {
                Some(Event::Msg(Message::Update(u))) => {
                    out.extend(update_entries(&u));
                    if until(&u) {
                        return out;
                    }
                }
                Some(Event::Msg(Message::Notification(n))) => {
                    out.push((
                        "~notification".into(),
                        json!({ "notification": n.describe() }),
                    ));
                }
                Some(Event::Msg(Message::Keepalive)) => {}
                Some(Event::Msg(other)) => {
                    out.push((
                        "~other".into(),
                        json!({ "unexpected": format!("{other:?}") }),
                    ));
                }
                Some(Event::Closed(why)) => {
                    out.push(("~closed".into(), json!({ "closed": why })));
                    entry.session = None;
                    return out;
                }
                None => {
                    panic!("{name}: nothing from the speaker in {LIMIT:?} (waiting for a sentinel)")
                }
            }
        }
    }

    /// Run one step; returns its transcript line.
    async fn step(&mut self, n: usize, step: &Value) -> String {
        let mut out: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
        let mut rib = None;
        match s(step, "step") {
            "connect" => {
                let listen = self.listen;
                let (name, e) = self.peer(step);
                let spec = PeerSpec {
                    asn: e.asn,
                    router_id: v4(s(step, "router_id")),
                    restart_time: step["restart_time"].as_u64().map(|t| t as u16),
                    notification: step["gr_notification"].as_bool().unwrap_or(false),
                };
                let local = e.address;
                e.restart_time = spec.restart_time;
                e.dropped_at = None;
                e.session = Some(ScriptedPeer::connect_retrying(local, listen, &spec, LIMIT).await);
                // The initial table ends with End-of-RIB (RFC 4724 §2).
                let initial = self
                    .read_until(&name, |u| u.is_end_of_rib().is_some())
                    .await;
                out.insert(name, initial);
            }
            "announce" => {
                let (name, e) = self.peer(step);
                let IpAddr::V4(own) = e.address else {
                    panic!("IPv4 peers only")
                };
                let mut a = Attrs::new(step["next_hop"].as_str().map_or(own, v4));
                a.as_path = step["as_path"]
                    .as_array()
                    .map(|l| l.iter().map(|x| x.as_u64().unwrap() as u32).collect())
                    .unwrap_or_else(|| if e.asn == DUT_AS { vec![] } else { vec![e.asn] });
                a.origin = match step["origin"].as_str() {
                    None | Some("igp") => Origin::Igp,
                    Some("egp") => Origin::Egp,
                    Some("incomplete") => Origin::Incomplete,
                    Some(o) => panic!("origin {o:?}"),
                };
                a.med = step["med"].as_u64().map(|x| x as u32);
                // RFC 4271 §5.1.5: an iBGP speaker always sends LOCAL_PREF.
                a.local_pref = step["local_pref"]
                    .as_u64()
                    .map(|x| x as u32)
                    .or((e.asn == DUT_AS).then_some(100));
                a.communities = step["communities"]
                    .as_array()
                    .map(|l| l.iter().map(|x| x.as_u64().unwrap() as u32).collect())
                    .unwrap_or_default();
                a.originator_id = step["originator_id"].as_str().map(v4);
                a.cluster_list = step["cluster_list"]
                    .as_array()
                    .map(|l| l.iter().map(|x| v4(x.as_str().unwrap())).collect())
                    .unwrap_or_default();
                let p = prefixes(step);
                e.session
                    .as_mut()
                    .expect("connected")
                    .announce(&p, &a)
                    .await;
                self.input_barrier(&name).await;
            }
            "withdraw" => {
                let (name, e) = self.peer(step);
                let p = prefixes(step);
                e.session.as_mut().expect("connected").withdraw(&p).await;
                self.input_barrier(&name).await;
            }
            "eor" => {
                let (name, e) = self.peer(step);
                e.session.as_mut().expect("connected").end_of_rib().await;
                self.input_barrier(&name).await;
            }
            kind @ ("drop" | "cease") => {
                let (name, e) = self.peer(step);
                let addr = e.address;
                e.dropped_at = Some(Instant::now());
                let mut session = e.session.take().expect("connected");
                if kind == "cease" {
                    let cease = Notification::cease_shutdown("scripted");
                    let n = if step["hard_reset"].as_bool().unwrap_or(false) {
                        Notification::hard_reset(&cease)
                    } else {
                        cease
                    };
                    session.notify(n).await;
                }
                session.close();
                self.poll(&format!("{name} down"), async |h| {
                    h.peers()
                        .await
                        .iter()
                        .any(|p| p.address == addr && p.state != bgpd::fsm::State::Established)
                })
                .await;
            }
            "multipath" => self.handle.set_multipath(multipath(step)),
            "filters" => {
                let (_, e) = self.peer(step);
                let addr = e.address;
                let wanted = filters(&step["filters"]);
                for c in &mut self.configs {
                    if c.address == addr {
                        c.filters = wanted.clone();
                    }
                }
                self.handle.set_peers(self.configs.clone());
            }
            "bfd" => self.bfd_step(step).await,
            "await_stale_flush" => {
                let (name, e) = self.peer(step);
                let (addr, dropped, restart) = (
                    e.address,
                    e.dropped_at
                        .unwrap_or_else(|| panic!("step {step}: {name} was never dropped")),
                    e.restart_time.unwrap_or_else(|| {
                        panic!("step {step}: {name} advertised no restart time")
                    }),
                );
                self.poll(&format!("{name}'s stale routes flushed"), async |h| {
                    !h.routes()
                        .await
                        .iter()
                        .any(|r| r.source == RouteSource::Peer(addr))
                })
                .await;
                let waited = dropped.elapsed();
                assert!(
                    waited >= Duration::from_secs(u64::from(restart)),
                    "{name}'s stale routes went {waited:?} after its drop, before its restart time of {restart} s (RFC 4724 §4.2)"
                );
            }
            "rib" => {
                let mut routes = self.handle.routes().await;
                routes.retain(|r| !is_sentinel(&r.prefix));
                routes.sort_by_key(|r| r.prefix);
                rib = Some(Value::Array(
                    routes
                        .iter()
                        .map(|r| {
                            let from = match r.source {
                                RouteSource::Local => "local".to_string(),
                                RouteSource::Peer(a) => self.name_of(a),
                            };
                            json!({
                                "prefix": r.prefix.to_string(),
                                "from": from,
                                "next_hop": r.next_hop.map(|h| h.to_string()),
                                "as_path": r.as_path,
                                "local_pref": r.local_pref,
                            })
                        })
                        .collect(),
                ));
            }
            other => panic!("unknown step {other:?} in {step}"),
        }
        self.output_barrier(&mut out).await;
        let mut route_updates: Vec<(String, Value)> = Vec::new();
        while let Ok(u) = self.routes.try_recv() {
            let entry = match u {
                RouteUpdate::Add {
                    prefix,
                    next_hops,
                    peer,
                } => {
                    // One next hop prints as before; a multipath route lists them.
                    let mut e = json!({ "add": prefix.to_string() });
                    match next_hops.as_slice() {
                        [one] => e["next_hop"] = json!(one.to_string()),
                        many => {
                            e["next_hops"] = many.iter().map(|h| h.to_string()).collect();
                        }
                    }
                    e["from"] = json!(self.name_of(peer));
                    (prefix, e)
                }
                RouteUpdate::Remove { prefix } => (prefix, json!({ "remove": prefix.to_string() })),
            };
            if !is_sentinel(&entry.0) {
                route_updates.push((entry.0.to_string(), entry.1));
            }
        }
        let sorted = |mut v: Vec<(String, Value)>| {
            v.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Array(v.into_iter().map(|(_, e)| e).collect())
        };
        let sent: serde_json::Map<String, Value> = out
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k, sorted(v)))
            .collect();
        let mut line = format!(
            "{{\"n\":{n},\"in\":{},\"sent\":{},\"route_updates\":{}",
            step,
            Value::Object(sent),
            sorted(route_updates)
        );
        if let Some(r) = rib {
            line.push_str(&format!(",\"rib\":{r}"));
        }
        line.push('}');
        line
    }

    /// A `bfd` step: the scripted manx-bfdd reports the peer's session
    /// going to `to`, with the peer's C bit; done once the DUT shows the new
    /// state (its reaction, routes included, happens in the same turn).
    async fn bfd_step(&mut self, step: &Value) {
        let to = match s(step, "to") {
            "up" => BfdState::Up,
            "down" => BfdState::Down,
            other => panic!("step {step}: to {other:?}: use up or down"),
        };
        let c_bit = step["c_bit"].as_bool().unwrap_or(false);
        let (name, e) = self.peer(step);
        let IpAddr::V4(peer) = e.address else {
            panic!("IPv4 peers only")
        };
        let from = std::mem::replace(&mut e.bfd, to);
        let addr = e.address;
        let bfdd = self
            .bfdd
            .as_ref()
            .unwrap_or_else(|| panic!("step {step}: no \"bfdd\": true in the speaker step"));
        let asked = bfdd.asked.clone();
        self.poll(
            &format!("the DUT asking manx-bfdd for {name}'s session"),
            async |_| asked.lock().unwrap().contains(&peer),
        )
        .await;
        let diag = if to == BfdState::Up {
            Diag::None
        } else {
            Diag::ControlDetectionTimeExpired
        };
        bfdd.events
            .send(BfdEvent {
                peer,
                from,
                to,
                diag,
                remote_control_plane_independent: c_bit,
            })
            .unwrap();
        self.poll(&format!("the DUT seeing {name}'s BFD {to:?}"), async |h| {
            h.peers()
                .await
                .iter()
                .any(|p| p.address == addr && p.bfd == Some(to))
        })
        .await;
    }

    /// Everything the DUT sent because of the step: originate the DUT
    /// sentinel and read every connected peer up to it, then withdraw it.
    async fn output_barrier(&mut self, out: &mut BTreeMap<String, Vec<(String, Value)>>) {
        let sentinel = dut_sentinel();
        self.handle.announce(sentinel).await;
        let names: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, e)| e.session.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            let got = self.read_until(name, |u| announces(u, sentinel)).await;
            out.entry(name.clone()).or_default().extend(got);
        }
        self.handle.withdraw(sentinel).await;
        for name in &names {
            let got = self.read_until(name, |u| withdraws(u, sentinel)).await;
            out.entry(name.clone()).or_default().extend(got);
        }
    }

    /// Stop the DUT; each connected peer closes once it got the CEASE, as
    /// a real speaker does (RFC 4271 §6: the connection is closed after a
    /// NOTIFICATION), so the DUT does not linger waiting for the close.
    async fn finish(mut self) {
        let Some(speaker) = self.speaker.take() else {
            return;
        };
        let stop = tokio::spawn(speaker.shutdown("scenario done"));
        for e in self.peers.values_mut() {
            let Some(mut session) = e.session.take() else {
                continue;
            };
            while let Some(ev) = session.recv(LIMIT).await {
                if matches!(ev, Event::Closed(_) | Event::Msg(Message::Notification(_))) {
                    break;
                }
            }
            session.close();
        }
        stop.await.expect("speaker shutdown");
    }
}

/// Run the script `<name>.events.jsonl`; returns the transcript.
pub async fn run_script(name: &str) -> String {
    let path = dir().join(format!("{name}.events.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let steps: Vec<Value> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {l}: {e}", path.display())))
        .collect();
    let mut h = Harness::start(&steps[0]);
    let mut transcript = String::new();
    for (n, step) in steps.iter().enumerate().skip(1) {
        transcript.push_str(&h.step(n, step).await);
        transcript.push('\n');
    }
    h.finish().await;
    transcript
}

/// Compare a transcript with its golden; `Err` holds a readable diff.
pub fn compare(name: &str, actual: &str, expected: &str) -> Result<(), String> {
    if actual == expected {
        return Ok(());
    }
    let a: Vec<&str> = actual.lines().collect();
    let e: Vec<&str> = expected.lines().collect();
    let mut msg = format!(
        "scenario {name}: the transcript differs from {name}.golden.jsonl \
         (review, then MANX_BLESS=1 to accept a deliberate change):\n"
    );
    for i in 0..a.len().max(e.len()) {
        let (x, y) = (e.get(i), a.get(i));
        if x != y {
            msg.push_str(&format!(
                "line {}:\n  - {}\n  + {}\n",
                i + 1,
                x.unwrap_or(&"<none>"),
                y.unwrap_or(&"<none>")
            ));
            if let (Some(Ok(x)), Some(Ok(y))) = (
                x.map(|l| serde_json::from_str::<Value>(l)),
                y.map(|l| serde_json::from_str::<Value>(l)),
            ) {
                let mut paths = Vec::new();
                json_diff("", &x, &y, &mut paths);
                for p in paths {
                    msg.push_str(&format!("    {p}\n"));
                }
            }
        }
    }
    Err(msg)
}

/// Where two JSON values differ: `path: expected -> actual`.
fn json_diff(path: &str, e: &Value, a: &Value, out: &mut Vec<String>) {
    match (e, a) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (vx, vy) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                json_diff(&format!("{path}.{k}"), vx, vy, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (vx, vy)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), vx, vy, out);
            }
        }
        _ if e != a => out.push(format!("{path}: expected {e}, got {a}")),
        _ => {}
    }
}

/// Run a scenario and check (or with `MANX_BLESS=1`, rewrite) its golden.
/// Returns the transcript.
pub async fn check(name: &str) -> String {
    let actual = run_script(name).await;
    let golden = dir().join(format!("{name}.golden.jsonl"));
    if std::env::var("MANX_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&golden, &actual).unwrap();
        return actual;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with MANX_BLESS=1 to create it, then review it)",
            golden.display()
        )
    });
    if let Err(diff) = compare(name, &actual, &expected) {
        panic!("{diff}");
    }
    actual
}
