//! BFD with ToR peers as their users configure them (issue 20): BIRD 2
//! (`protocol bfd`, `bfd on` in the bgp protocol, `graceful restart on`)
//! and FRR 8.4 (zebra + `bfdd` + bgpd, `neighbor X bfd` with a `bfd
//! profile`, `bgp graceful-restart`). manx-node peers with the ToR over eBGP with
//! `BGPPeer.spec.bfd` (100 ms x 3), served by manx-bfdd (the binary beside
//! manx-node), and originates its service range 10.96.0.0/12.
//!
//! The BIRD rack runs manx-bfdd itself (as a DaemonSet of its own would)
//! and manx-node with `MANX_BFDD=external`, which must use it and start
//! none; the FRR rack has manx-node start it (the default).
//!
//! One set-up per daemon, two checks:
//!
//! 1. kill -9 of manx-node, restarted 3 s later: manx-bfdd keeps BFD Up
//!    (C bit), so the ToR sees an agent restart and keeps the route through
//!    graceful restart: it is in the ToR's table at every look (50 ms),
//!    its path is the same afterwards (BIRD: the time of its last change
//!    too), the ToR's kernel saw no change of it (no withdraw, no changed
//!    re-announce), and BFD never left Up nor took the session down.
//! 2. node death: the node's switch port goes down (the ToR's own link
//!    stays up, so only BFD can tell): the ToR drops the route within the
//!    BFD detection time, not the 90 s hold time (the time is printed; the
//!    assertion is a generous bound, the 1 s target lives in `manx-lab
//!    bench-failover`), and says BFD did it.
//!
//! ```text
//!   tor (eth0) ── veth ── sw: br0 ── veth ── node (eth0, manx-node + manx-bfdd)
//!                          port pt        port pn  ← set down for node death
//! ```
//!
//! BIRD on 198.19.57.0/24, FRR on 198.19.58.0/24; pool 10.23.0.0/16.
//!
//! Not `neighbor X bfd check-control-plane-failure` on FRR: FRR 8.4.4's
//! bgpd never learns the peer's C bit (its `debug bgp bfd` log says `CPI
//! bit no` on every update, though manx-bfdd's packets carry it, as
//! `tcpdump -vv` shows: `Flags: [Control Plane Independent]`), so with
//! that option it takes every BFD Down of a graceful-restart peer for a
//! control-plane restart ("BFD DOWN message ignored in the process of
//! graceful restart when C bit is cleared") and a dead node's route stays
//! for the 90 s hold time. Without it, FRR takes the session down on BFD
//! Down whatever the C bit (RFC 5882 §4.3.2 then holds at Manx's own
//! peers, which read the C bit).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use datastore::client::Client;
use datastore::embedded::EmbeddedStore;
use datastore::model::{
    AsNumber, BFDSpec, BGPConfiguration, BGPConfigurationSpec, BGPPeer, BGPPeerSpec, CidrEntry,
    ObjectMeta,
};
use testkit::netns::veth;
use testkit::{Daemon, Netns, Prereqs, eventually};

const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";
const FRR: &str = "/usr/lib/frr";
const VTYSH: &str = "/usr/bin/vtysh";
const SERVICE: &str = "10.96.0.0/12";
const POOL: &str = "10.23.0.0/16";
const LIMIT: Duration = Duration::from_secs(60);
/// Far below the 90 s hold time: only BFD drops the route this soon.
const DEATH_BOUND: Duration = Duration::from_secs(10);

/// The three namespaces of one rack and the node's datastore.
struct Rack {
    dir: tempfile::TempDir,
    tor: Netns,
    sw: Netns,
    node: Netns,
    tor_ip: String,
    node_ip: String,
    /// manx-node with `MANX_BFDD=external` (manx-bfdd run by the test, as
    /// a DaemonSet of its own would run it) instead of starting its own.
    external_bfdd: bool,
}

fn manx_bfdd() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_manx-node"))
        .parent()
        .unwrap()
        .join("manx-bfdd")
}

fn prereqs(daemons: &[&str]) -> bool {
    Prereqs::new()
        .root()
        .command("ip")
        .commands(daemons)
        .file(
            manx_bfdd(),
            "manx-bfdd beside manx-node: cargo build -p manx-bgpd --bin manx-bfdd",
        )
        .ok()
}

fn rack(name: &str, subnet: u8) -> Rack {
    let tor_ip = format!("198.19.{subnet}.1");
    let node_ip = format!("198.19.{subnet}.2");
    let (tor, sw, node) = (Netns::new(name), Netns::new(name), Netns::new(name));
    veth(&tor, "eth0", &sw, "pt");
    veth(&node, "eth0", &sw, "pn");
    sw.ip(&["link", "add", "br0", "type", "bridge"]);
    sw.ip(&["link", "set", "pt", "master", "br0"]);
    sw.ip(&["link", "set", "pn", "master", "br0"]);
    sw.ip(&["link", "set", "br0", "up"]);
    tor.ip(&["addr", "add", &format!("{tor_ip}/24"), "dev", "eth0"]);
    node.ip(&["addr", "add", &format!("{node_ip}/24"), "dev", "eth0"]);
    let dir = tempfile::tempdir().unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = EmbeddedStore::open(dir.path().join("manx.db"))
                .await
                .unwrap();
            let client = Client::new(Arc::new(store));
            let peer = BGPPeer {
                metadata: ObjectMeta::named("tor"),
                spec: BGPPeerSpec {
                    peer_ip: Some(tor_ip.clone()),
                    as_number: Some(AsNumber(65001)),
                    bfd: Some(BFDSpec {
                        enabled: None,
                        min_rx: Some("100ms".into()),
                        min_tx: Some("100ms".into()),
                        multiplier: Some(3),
                    }),
                    ..Default::default()
                },
            };
            client.create(&peer).await.unwrap();
            let cfg = BGPConfiguration {
                metadata: ObjectMeta::named("default"),
                spec: BGPConfigurationSpec {
                    service_cluster_ips: Some(vec![CidrEntry {
                        cidr: SERVICE.into(),
                    }]),
                    ..Default::default()
                },
            };
            client.create(&cfg).await.unwrap();
        });
    Rack {
        dir,
        tor,
        sw,
        node,
        tor_ip,
        node_ip,
        external_bfdd: false,
    }
}

impl Rack {
    fn start_node(&self) -> Daemon {
        let env: &[(&str, &str)] = if self.external_bfdd {
            &[("MANX_BFDD", "external")]
        } else {
            &[]
        };
        crate::support::start_manx_node(&self.node, self.dir.path(), "bfd-node", POOL, env)
    }
}

/// What a check needs from the ToR daemon.
trait Tor: Sync {
    /// The ToR's view of the node's route: `Some(last change)` if it has it.
    fn route(&self) -> Option<String>;
    /// The BFD session to the node is Up.
    fn bfd_up(&self) -> bool;
    /// The BGP session to the node is Established.
    fn established(&self) -> bool;
    /// Its log or status says BFD took the session down.
    fn says_bfd_down(&self) -> bool;
    fn log(&self) -> String;
}

/// `ip -o monitor route` in the ToR: any change of the route in its kernel
/// (the daemon installs what it selects: a withdraw deletes it, a changed
/// path replaces it; an identical refresh changes nothing).
fn monitor(rack: &Rack) -> Daemon {
    Daemon::spawn(
        &rack.tor,
        rack.dir.path(),
        "tor-route-monitor",
        "ip",
        &["-o", "monitor", "route"],
        &[],
    )
}

/// Check 1 then check 2 against `tor`.
fn kill_9_then_node_death(rack: &Rack, tor: &dyn Tor, daemon: &str) {
    let mut manx = rack.start_node();
    assert!(
        eventually(LIMIT, || tor.route().is_some() && tor.bfd_up()),
        "{daemon}: no route from the node with BFD up:\n{}\n{}",
        tor.log(),
        manx.log_text()
    );
    let before = tor.route().unwrap();

    // 1. kill -9 of manx-node: routes kept, BFD stays Up.
    let mon = monitor(rack);
    std::thread::sleep(Duration::from_millis(300));
    let stop = AtomicBool::new(false);
    let (missing, bfd_left_up) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let (mut missing, mut down) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                missing += usize::from(tor.route().is_none());
                down += usize::from(!tor.bfd_up());
                std::thread::sleep(Duration::from_millis(50));
            }
            (missing, down)
        });
        manx.kill9();
        std::thread::sleep(Duration::from_secs(3));
        manx = rack.start_node();
        // Back: the session re-established, then a little longer for the
        // node's table and End-of-RIB (the ToR's stale sweep).
        let ready = eventually(LIMIT, || tor.established());
        assert!(ready, "{daemon}: the restarted node never re-established");
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::SeqCst);
        watcher.join().unwrap()
    });
    drop(mon);
    let after = tor.route();
    let changed: Vec<String> =
        std::fs::read_to_string(rack.dir.path().join("tor-route-monitor.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(SERVICE))
            .map(String::from)
            .collect();
    println!(
        "{daemon}: kill -9 of manx-node, restarted after 3 s: route missing at {missing} looks, BFD not Up at {bfd_left_up} looks, kernel route changes {changed:?}, path {before:?} -> {after:?}"
    );
    assert_eq!(
        missing,
        0,
        "{daemon} lost the route during the restart:\n{}",
        tor.log()
    );
    assert_eq!(
        bfd_left_up,
        0,
        "{daemon}'s BFD session left Up:\n{}",
        tor.log()
    );
    assert!(
        changed.is_empty(),
        "{daemon}'s kernel route changed: {changed:?}"
    );
    assert_eq!(
        after.as_deref(),
        Some(before.as_str()),
        "{daemon}: the route was withdrawn or re-announced (its path changed)"
    );
    assert!(
        !tor.says_bfd_down(),
        "{daemon} saw BFD go down:\n{}",
        tor.log()
    );

    // 2. Node death: its switch port goes down.
    let t0 = Instant::now();
    rack.sw.ip(&["link", "set", "pn", "down"]);
    let mut gone = None;
    while t0.elapsed() < LIMIT {
        if tor.route().is_none() {
            gone = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let gone = gone.unwrap_or_else(|| {
        panic!(
            "{daemon} still has the route {LIMIT:?} after the node died:\n{}",
            tor.log()
        )
    });
    println!(
        "{daemon}: node death (switch port down) -> route gone at the ToR in {} ms (BFD 100 ms x 3; hold time 90 s)",
        gone.as_millis()
    );
    assert!(
        gone < DEATH_BOUND,
        "{daemon}: the route went only after {gone:?}: BFD did not act"
    );
    assert!(
        eventually(Duration::from_secs(5), || tor.says_bfd_down()),
        "{daemon} does not say BFD took the session down:\n{}",
        tor.log()
    );
    manx.terminate(Duration::from_secs(20));
}

struct Bird {
    daemon: Daemon,
    sock: PathBuf,
    node: String,
}

impl Bird {
    fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new(BIRDC)
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Tor for Bird {
    fn route(&self) -> Option<String> {
        // `10.96.0.0/12 unicast [manx 21:30:01.123] * (100) [AS64512i]`:
        // the bracket holds the protocol and the time of the last change.
        let out = self.birdc(&["show", "route", SERVICE]);
        let line = out.lines().find(|l| l.contains(SERVICE))?;
        Some(line.split('[').nth(1)?.split(']').next()?.to_string())
    }
    fn bfd_up(&self) -> bool {
        self.birdc(&["show", "bfd", "sessions"])
            .lines()
            .any(|l| l.contains(&self.node) && l.contains(" Up "))
    }
    fn established(&self) -> bool {
        self.birdc(&["show", "protocols", "manx"])
            .contains("Established")
    }
    fn says_bfd_down(&self) -> bool {
        // `Last error: BFD session down` of the protocol.
        self.birdc(&["show", "protocols", "all", "manx"])
            .contains("BFD session down")
    }
    fn log(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.birdc(&["show", "protocols", "all", "manx"]),
            self.birdc(&["show", "bfd", "sessions"]),
            self.daemon.log_text()
        )
    }
}

fn bird_conf(tor: &str, node: &str) -> String {
    format!(
        "router id {tor};\nlog stderr all;\n\
         protocol device {{ scan time 2; }}\n\
         protocol kernel {{ ipv4 {{ export all; }}; }}\n\
         protocol bfd {{\n  interface \"eth0\" {{\n    min rx interval 100 ms;\n    \
         min tx interval 100 ms;\n    multiplier 3;\n  }};\n}}\n\
         protocol bgp manx {{\n  local {tor} as 65001;\n  neighbor {node} as 64512;\n  \
         graceful restart on;\n  bfd on;\n  connect retry time 1; error wait time 1, 5;\n  \
         ipv4 {{ import all; export none; }};\n}}\n"
    )
}

#[test]
fn bird2_with_bfd_keeps_routes_through_kill_9_and_drops_a_dead_node() {
    if !prereqs(&[BIRD, BIRDC]) {
        return;
    }
    let mut rack = rack("mxbfdbird", 57);
    // This rack runs manx-bfdd itself, as a DaemonSet of its own would (its
    // socket in manx-node's run dir); manx-node (MANX_BFDD=external) uses
    // it and starts none. The FRR rack covers manx-node starting it.
    rack.external_bfdd = true;
    let sock = rack.dir.path().join("run").join("bfdd.sock");
    let bfdd = Daemon::spawn(
        &rack.node,
        rack.dir.path(),
        "external-bfdd",
        manx_bfdd().to_str().unwrap(),
        &["--socket", sock.to_str().unwrap()],
        &[],
    );
    let conf = rack.dir.path().join("bird.conf");
    let sock = rack.dir.path().join("bird.ctl");
    std::fs::write(&conf, bird_conf(&rack.tor_ip, &rack.node_ip)).unwrap();
    let daemon = crate::support::spawn_bird(&rack.tor, rack.dir.path(), &conf, &sock);
    let bird = Bird {
        daemon,
        sock,
        node: rack.node_ip.clone(),
    };
    kill_9_then_node_death(&rack, &bird, "bird2");
    assert!(
        !rack.dir.path().join("run").join("bfdd.log").exists(),
        "manx-node started a manx-bfdd of its own with MANX_BFDD=external"
    );
    assert_eq!(
        bfdd.log_text().matches("manx-bfdd serving").count(),
        1,
        "the external manx-bfdd did not serve once:\n{}",
        bfdd.log_text()
    );
}

struct Frr {
    dir: PathBuf,
    node: String,
    daemons: Vec<Daemon>,
}

impl Frr {
    fn vtysh(&self, daemon: &str, cmd: &str) -> String {
        let out = Command::new(VTYSH)
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-d", daemon, "-c", cmd])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Tor for Frr {
    fn route(&self) -> Option<String> {
        // The path as FRR shows it (from its AS path line on: what it
        // advertises onwards is not the path) but its `Last update:` line:
        // FRR stamps the path on every UPDATE for it, an identical one too
        // (the refresh after a graceful restart), so the time says nothing;
        // an attribute that changed shows in the rest.
        let out = self.vtysh("bgpd", &format!("show bgp ipv4 unicast {SERVICE}"));
        if !out.contains("BGP routing table entry") {
            return None;
        }
        Some(
            out.lines()
                .skip_while(|l| l.trim() != "64512")
                .filter(|l| !l.trim().starts_with("Last update:"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }
    fn bfd_up(&self) -> bool {
        let out = self.vtysh("bfdd", "show bfd peers brief");
        out.lines()
            .any(|l| l.contains(&self.node) && l.contains(" up"))
    }
    fn established(&self) -> bool {
        self.vtysh("bgpd", &format!("show bgp neighbors {}", self.node))
            .contains("BGP state = Established")
    }
    fn says_bfd_down(&self) -> bool {
        // `Last reset 00:00:05,  Notification sent (Cease/BFD Down)`.
        self.vtysh("bgpd", &format!("show bgp neighbors {}", self.node))
            .contains("BFD Down")
    }
    fn log(&self) -> String {
        let mut s = self.vtysh("bgpd", &format!("show bgp neighbors {}", self.node));
        s.push_str(&self.vtysh("bfdd", "show bfd peers"));
        for d in &self.daemons {
            s.push_str(&format!("---- {} ----\n{}", d.name, d.log_text()));
        }
        s
    }
}

fn frr_bgpd_conf(tor: &str, node: &str) -> String {
    format!(
        "hostname tor\n!\nrouter bgp 65001\n bgp router-id {tor}\n \
         no bgp ebgp-requires-policy\n bgp graceful-restart\n \
         neighbor {node} remote-as 64512\n neighbor {node} timers connect 1\n \
         neighbor {node} bfd\n neighbor {node} bfd profile manx\n!\n"
    )
}

const FRR_BFDD_CONF: &str = "bfd\n profile manx\n  receive-interval 100\n  transmit-interval 100\n  detect-multiplier 3\n !\n!\n";

#[test]
fn frr_with_bfd_keeps_routes_through_kill_9_and_drops_a_dead_node() {
    let bins = [
        format!("{FRR}/zebra"),
        format!("{FRR}/bgpd"),
        format!("{FRR}/bfdd"),
    ];
    let mut need: Vec<&str> = bins.iter().map(String::as_str).collect();
    need.push(VTYSH);
    if !prereqs(&need) {
        return;
    }
    let rack = rack("mxbfdfrr", 58);
    let node = rack.node_ip.clone();
    // FRR drops to its user `frr`: its sockets, pid files and configs live
    // in a directory of its own.
    let d = rack.dir.path().join("frr");
    std::fs::create_dir(&d).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(rack.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    testkit::run(Command::new("chown").arg("frr:frr").arg(&d));
    let zserv = d.join("zserv.api");
    let conf = |name: &str, text: &str| {
        let p = d.join(format!("{name}.conf"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let common = |name: &str, conf: &Path| -> Vec<String> {
        vec![
            "-f".into(),
            conf.display().to_string(),
            "-z".into(),
            zserv.display().to_string(),
            "--vty_socket".into(),
            d.display().to_string(),
            "-i".into(),
            d.join(format!("{name}.pid")).display().to_string(),
            // No TCP vty (vtysh uses the sockets).
            "-P".into(),
            "0".into(),
            "--log".into(),
            "stdout".into(),
        ]
    };
    let spawn = |name: &str, conf: PathBuf, extra: &[String]| {
        let mut args = common(name, &conf);
        args.extend_from_slice(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Daemon::spawn(&rack.tor, &d, name, &format!("{FRR}/{name}"), &args, &[])
    };
    let mut daemons = vec![spawn("zebra", conf("zebra", "hostname tor\n"), &[])];
    assert!(
        eventually(LIMIT, || zserv.exists()),
        "zebra did not start:\n{}",
        daemons[0].log_text()
    );
    daemons.push(spawn(
        "bfdd",
        conf("bfdd", FRR_BFDD_CONF),
        &["--bfdctl".into(), d.join("bfdd.sock").display().to_string()],
    ));
    daemons.push(spawn(
        "bgpd",
        conf("bgpd", &frr_bgpd_conf(&rack.tor_ip, &node)),
        &[],
    ));
    let frr = Frr {
        dir: d.clone(),
        node,
        daemons,
    };
    kill_9_then_node_death(&rack, &frr, "frr");
}
