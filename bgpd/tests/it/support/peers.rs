//! Peer daemons for interop tests: BIRD 2, BIRD 1.6 (bird + bird6), GoBGP.
//! Each runs in the lab's `peer` namespace, configured to peer with
//! manx-bgpd at 198.18.0.1 / fd42:18::1 and to originate one IPv4 and one
//! IPv6 prefix.

use std::time::Duration;

use testkit::{Daemon, Prereqs, eventually};

use super::{Lab, MANX_V4, MANX_V6, PEER_V4, PEER_V6};

pub const BIRD2: &str = "/usr/sbin/bird";
pub const BIRDC2: &str = "/usr/sbin/birdc";
pub const BIRD1: &str = "/opt/bird1/usr/sbin/bird";
pub const BIRD1_6: &str = "/opt/bird1/usr/sbin/bird6";
pub const BIRDC1: &str = "/opt/bird1/usr/sbin/birdc";
pub const BIRDC1_6: &str = "/opt/bird1/usr/sbin/birdc6";
pub const GOBGPD: &str = "/usr/bin/gobgpd";
pub const GOBGP: &str = "/usr/bin/gobgp";

/// The prefixes every peer daemon originates.
pub const PEER_NET_V4: &str = "10.201.0.0/24";
pub const PEER_NET_V6: &str = "fd42:201::/64";

/// Options of a peer daemon.
#[derive(Debug, Clone)]
pub struct PeerOpts {
    pub asn: u32,
    pub manx_asn: u32,
    pub password: Option<String>,
    /// GTSM (RFC 5082): BIRD 2 `ttl security on`.
    pub ttl_security: bool,
    /// Graceful restart (RFC 4724, restart time 120 s) with or without the
    /// N bit (RFC 8538); GoBGP only.
    pub graceful_restart: Option<GrNotification>,
}

/// The N bit of a peer's graceful-restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrNotification {
    On,
    Off,
}

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bird2,
    Bird1,
    Gobgp,
}

impl Kind {
    /// Its binaries, with the package that provides them.
    pub fn binaries(self) -> Vec<(&'static str, &'static str)> {
        const BIRD1_PKG: &str = "bird 1.6, unpacked by scripts/fetch-bird1.sh";
        match self {
            Kind::Bird2 => vec![(BIRD2, "bird2"), (BIRDC2, "bird2")],
            Kind::Bird1 => vec![
                (BIRD1, BIRD1_PKG),
                (BIRD1_6, BIRD1_PKG),
                (BIRDC1, BIRD1_PKG),
                (BIRDC1_6, BIRD1_PKG),
            ],
            Kind::Gobgp => vec![(GOBGPD, "gobgpd"), (GOBGP, "gobgpd")],
        }
    }

    /// What a lab with this peer needs: root, `ip` and the binaries.
    pub fn prereqs(self) -> Prereqs {
        self.binaries()
            .into_iter()
            .fold(Prereqs::new().root().command("ip"), |p, (bin, pkg)| {
                p.file(bin, pkg)
            })
    }
}

/// A running peer daemon (one or two processes).
#[derive(Debug)]
pub struct PeerDaemon {
    pub kind: Kind,
    pub daemons: Vec<Daemon>,
    socks: Vec<std::path::PathBuf>,
    ns: String,
    opts: PeerOpts,
}

fn bird2_conf(o: &PeerOpts) -> String {
    let ibgp = o.asn == o.manx_asn;
    let mut direct = if ibgp { "direct;" } else { "" }.to_string();
    if o.ttl_security {
        direct.push_str(" ttl security on;");
    }
    let pw = o
        .password
        .as_ref()
        .map(|p| format!("password \"{p}\";"))
        .unwrap_or_default();
    format!(
        r#"
router id {PEER_V4};
log stderr all;
protocol device {{ scan time 2; }}
protocol static s4 {{ ipv4; route {PEER_NET_V4} blackhole; }}
protocol static s6 {{ ipv6; route {PEER_NET_V6} blackhole; }}
protocol bgp manx4 {{
  local {PEER_V4} as {asn};
  neighbor {MANX_V4} as {manx};
  hold time 9; connect retry time 2; connect delay time 1; error wait time 1, 5;
  {pw} {direct}
  ipv4 {{ import all; export where source = RTS_STATIC; }};
}}
protocol bgp manx6 {{
  local {PEER_V6} as {asn};
  neighbor {MANX_V6} as {manx};
  hold time 9; connect retry time 2; connect delay time 1; error wait time 1, 5;
  {pw} {direct}
  ipv6 {{ import all; export where source = RTS_STATIC; }};
}}
"#,
        asn = o.asn,
        manx = o.manx_asn,
    )
}

fn bird1_conf(o: &PeerOpts, v6: bool) -> String {
    let ibgp = o.asn == o.manx_asn;
    let direct = if ibgp { "direct;" } else { "" };
    let pw = o
        .password
        .as_ref()
        .map(|p| format!("password \"{p}\";"))
        .unwrap_or_default();
    let (local, neighbor, net) = if v6 {
        (PEER_V6, MANX_V6, PEER_NET_V6)
    } else {
        (PEER_V4, MANX_V4, PEER_NET_V4)
    };
    format!(
        r#"
router id {PEER_V4};
log stderr all;
protocol device {{ scan time 2; }}
protocol static {{ route {net} blackhole; }}
protocol bgp manx {{
  local {local} as {asn};
  neighbor {neighbor} as {manx};
  hold time 9; connect retry time 2; connect delay time 1; error wait time 1, 5;
  {pw}
  {direct}
  import all;
  export where source = RTS_STATIC;
}}
"#,
        asn = o.asn,
        manx = o.manx_asn,
    )
}

fn gobgp_conf(o: &PeerOpts) -> String {
    let pw = o
        .password
        .as_ref()
        .map(|p| format!("    auth-password = \"{p}\"\n"))
        .unwrap_or_default();
    let (gr, mp_gr) = match o.graceful_restart {
        None => (String::new(), String::new()),
        Some(n) => (
            format!(
                "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n    notification-enabled = {}\n",
                n == GrNotification::On
            ),
            "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
                .to_string(),
        ),
    };
    let manx = o.manx_asn;
    // One neighbor per session: IPv4 routes over the IPv4 one, IPv6 over
    // the IPv6 one.
    let neighbor = |address: &str, local: &str, family: &str| {
        format!(
            r#"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{address}"
    peer-as = {manx}
{pw}  [neighbors.timers.config]
    connect-retry = 2
    hold-time = 9
    keepalive-interval = 3
  [neighbors.transport.config]
    local-address = "{local}"
{gr}  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "{family}"
{mp_gr}"#
        )
    };
    format!(
        r#"
[global.config]
  as = {asn}
  router-id = "{PEER_V4}"
  port = 179
  local-address-list = ["{PEER_V4}", "{PEER_V6}"]
{v4}{v6}"#,
        asn = o.asn,
        v4 = neighbor(MANX_V4, PEER_V4, "ipv4-unicast"),
        v6 = neighbor(MANX_V6, PEER_V6, "ipv6-unicast"),
    )
}

impl PeerDaemon {
    pub fn start(kind: Kind, lab: &Lab, opts: PeerOpts) -> PeerDaemon {
        let mut p = PeerDaemon {
            kind,
            daemons: Vec::new(),
            socks: Vec::new(),
            ns: lab.peer.name().to_string(),
            opts,
        };
        p.spawn(lab);
        p
    }

    fn spawn(&mut self, lab: &Lab) {
        let dir = lab.dir.path();
        match self.kind {
            Kind::Bird2 => {
                let conf = dir.join("bird2.conf");
                let sock = dir.join("bird2.ctl");
                std::fs::write(&conf, bird2_conf(&self.opts)).unwrap();
                self.daemons.push(Daemon::spawn(
                    &lab.peer,
                    dir,
                    "bird2",
                    BIRD2,
                    &[
                        "-f",
                        "-s",
                        sock.to_str().unwrap(),
                        "-c",
                        conf.to_str().unwrap(),
                    ],
                    &[],
                ));
                self.socks = vec![sock];
            }
            Kind::Bird1 => {
                let mut socks = Vec::new();
                for (v6, bin) in [(false, BIRD1), (true, BIRD1_6)] {
                    let name = if v6 { "bird1-6" } else { "bird1-4" };
                    let conf = dir.join(format!("{name}.conf"));
                    let sock = dir.join(format!("{name}.ctl"));
                    std::fs::write(&conf, bird1_conf(&self.opts, v6)).unwrap();
                    self.daemons.push(Daemon::spawn(
                        &lab.peer,
                        dir,
                        name,
                        bin,
                        &[
                            "-f",
                            "-s",
                            sock.to_str().unwrap(),
                            "-c",
                            conf.to_str().unwrap(),
                        ],
                        &[],
                    ));
                    socks.push(sock);
                }
                self.socks = socks;
            }
            Kind::Gobgp => {
                let conf = dir.join("gobgpd.toml");
                std::fs::write(&conf, gobgp_conf(&self.opts)).unwrap();
                self.daemons.push(Daemon::spawn(
                    &lab.peer,
                    dir,
                    "gobgpd",
                    GOBGPD,
                    &[
                        "-f",
                        conf.to_str().unwrap(),
                        "-t",
                        "toml",
                        "--api-hosts",
                        "127.0.0.1:50051",
                    ],
                    &[],
                ));
                // Originate once the API is up.
                let ns = self.ns.clone();
                assert!(
                    eventually(Duration::from_secs(15), || gobgp(&ns, &["global"])
                        .is_some()),
                    "gobgpd API never came up"
                );
                gobgp(&ns, &["global", "rib", "add", PEER_NET_V4, "-a", "ipv4"])
                    .expect("gobgp add v4");
                gobgp(&ns, &["global", "rib", "add", PEER_NET_V6, "-a", "ipv6"])
                    .expect("gobgp add v6");
            }
        }
    }

    /// Stop (SIGTERM, up to 10 s) and start again with the same
    /// configuration.
    pub fn restart(&mut self, lab: &Lab) {
        for d in &mut self.daemons {
            d.terminate(Duration::from_secs(10));
        }
        self.daemons.clear();
        self.spawn(lab);
    }

    /// The routing table as text (`show route` / `gobgp global rib`).
    pub fn routes(&self) -> String {
        match self.kind {
            Kind::Bird2 => birdc(BIRDC2, &self.socks[0], &["show", "route"]),
            Kind::Bird1 => {
                birdc(BIRDC1, &self.socks[0], &["show", "route"])
                    + &birdc(BIRDC1_6, &self.socks[1], &["show", "route"])
            }
            Kind::Gobgp => {
                gobgp(&self.ns, &["global", "rib", "-a", "ipv4"]).unwrap_or_default()
                    + &gobgp(&self.ns, &["global", "rib", "-a", "ipv6"]).unwrap_or_default()
            }
        }
    }

    /// Whether the peer holds a route to `prefix` learnt from manx-bgpd.
    pub fn has_route(&self, prefix: &str) -> bool {
        self.routes()
            .lines()
            .any(|l| l.split_whitespace().any(|w| w == prefix) || l.contains(&format!("{prefix} ")))
    }

    /// Stop originating the peer's prefixes.
    pub fn withdraw_own(&self) {
        match self.kind {
            Kind::Bird2 => {
                birdc(BIRDC2, &self.socks[0], &["disable", "s4"]);
                birdc(BIRDC2, &self.socks[0], &["disable", "s6"]);
            }
            Kind::Bird1 => {
                birdc(BIRDC1, &self.socks[0], &["disable", "static1"]);
                birdc(BIRDC1_6, &self.socks[1], &["disable", "static1"]);
            }
            Kind::Gobgp => {
                gobgp(
                    &self.ns,
                    &["global", "rib", "del", PEER_NET_V4, "-a", "ipv4"],
                )
                .expect("gobgp del v4");
                gobgp(
                    &self.ns,
                    &["global", "rib", "del", PEER_NET_V6, "-a", "ipv6"],
                )
                .expect("gobgp del v6");
            }
        }
    }

    pub fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| format!("---- {} ----\n{}", d.name, d.log_text()))
            .collect()
    }
}

/// `birdc -s sock <args>` (control sockets are file-system paths, reachable
/// from any network namespace).
pub fn birdc(bin: &str, sock: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(bin)
        .arg("-s")
        .arg(sock)
        .args(args)
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(_) => String::new(),
    }
}

/// `gobgp` inside the peer namespace; `None` if it failed.
pub fn gobgp(ns: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, GOBGP, "-u", "127.0.0.1", "-p", "50051"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
