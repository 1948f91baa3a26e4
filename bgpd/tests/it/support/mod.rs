//! Shared support for bgpd's two-namespace tests: testkit namespaces
//! `mxbg-<pid>-<n>` joined by a veth (198.18.0.0/24 + fd42:18::/64),
//! manx-bgpd's YAML and control socket, peer daemons (`peers`), interop
//! scenarios (`scenario`) and a raw injector (`inject`). Namespaces and
//! daemons are testkit's Drop guards: they clean up even on panic.
#![allow(dead_code)]

pub mod inject;
pub mod peers;
pub mod scenario;

use std::path::PathBuf;
use std::time::Duration;

use testkit::netns::veth;
use testkit::{Daemon, Netns, eventually};

/// manx-bgpd's log level in every test daemon.
pub const MANX_LOG: (&str, &str) = ("MANX_LOG", "debug");

/// Namespace names of this lab: `mxbg-<pid>-<n>`.
const NS_PREFIX: &str = "mxbg";

/// manx-bgpd's side of the link.
pub const MANX_V4: &str = "198.18.0.1";
/// manx-bgpd's IPv6 address.
pub const MANX_V6: &str = "fd42:18::1";
/// The peer daemon's address.
pub const PEER_V4: &str = "198.18.0.2";
/// The peer daemon's IPv6 address.
pub const PEER_V6: &str = "fd42:18::2";
/// Extra addresses in the peer namespace (injectors, second peers).
pub const EXTRA_V4: [&str; 12] = [
    "198.18.0.3",
    "198.18.0.4",
    "198.18.0.5",
    "198.18.0.6",
    "198.18.0.7",
    "198.18.0.8",
    "198.18.0.9",
    "198.18.0.10",
    "198.18.0.11",
    "198.18.0.12",
    "198.18.0.13",
    "198.18.0.14",
];

/// Two namespaces joined by a veth: `manx` (198.18.0.1, fd42:18::1) and
/// `peer` (198.18.0.2-14, fd42:18::2), plus a scratch directory.
#[derive(Debug)]
pub struct Lab {
    pub manx: Netns,
    pub peer: Netns,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        let manx = Netns::new(NS_PREFIX);
        let peer = Netns::new(NS_PREFIX);
        veth(&manx, "mxa", &peer, "mxb");
        manx.ip(&["addr", "add", &format!("{MANX_V4}/24"), "dev", "mxa"]);
        manx.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{MANX_V6}/64"),
            "dev",
            "mxa",
            "nodad",
        ]);
        peer.ip(&["addr", "add", &format!("{PEER_V4}/24"), "dev", "mxb"]);
        for a in EXTRA_V4 {
            peer.ip(&["addr", "add", &format!("{a}/24"), "dev", "mxb"]);
        }
        peer.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{PEER_V6}/64"),
            "dev",
            "mxb",
            "nodad",
        ]);
        let dir = tempfile::Builder::new()
            .prefix("mxbg-")
            .tempdir()
            .expect("tempdir");
        Lab { manx, peer, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The manx-bgpd binary under test.
pub fn manx_bgpd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_manx-bgpd")
}

/// A manx-bgpd peer entry in YAML.
#[derive(Debug, Clone)]
pub struct ManxPeer {
    pub address: String,
    pub asn: u32,
    pub password: Option<String>,
    pub passive: bool,
    pub hold_time: Option<u16>,
    pub ttl_security: bool,
    /// BFD at 100 ms x 3.
    pub bfd: bool,
}

impl ManxPeer {
    pub fn new(address: &str, asn: u32) -> ManxPeer {
        ManxPeer {
            address: address.into(),
            asn,
            password: None,
            passive: false,
            hold_time: None,
            ttl_security: false,
            bfd: false,
        }
    }
}

/// manx-bgpd running in the lab's `manx` namespace.
#[derive(Debug)]
pub struct Manx {
    pub daemon: Daemon,
    pub control: PathBuf,
    pub config: PathBuf,
}

impl Manx {
    pub fn start(lab: &Lab, asn: u32, peers: &[ManxPeer], networks: &[&str]) -> Manx {
        let control = lab.path("manx.sock");
        let config = lab.path("manx.yaml");
        let mut yaml = format!(
            "asNumber: {asn}\nrouterId: {MANX_V4}\nholdTime: 9\nconnectRetryTime: 2\ncontrolSocket: {}\nlisten: {{address: \"::\", port: 179}}\npeers:\n",
            control.display()
        );
        for p in peers {
            yaml.push_str(&format!(
                "  - address: \"{}\"\n    asNumber: {}\n    passive: {}\n    ttlSecurity: {}\n",
                p.address, p.asn, p.passive, p.ttl_security
            ));
            if let Some(pw) = &p.password {
                yaml.push_str(&format!("    password: \"{pw}\"\n"));
            }
            if let Some(h) = p.hold_time {
                yaml.push_str(&format!("    holdTime: {h}\n"));
            }
            if p.bfd {
                yaml.push_str("    bfd: {minRx: 100, minTx: 100, multiplier: 3}\n");
            }
        }
        yaml.push_str("networks:\n");
        for n in networks {
            yaml.push_str(&format!("  - \"{n}\"\n"));
        }
        std::fs::write(&config, yaml).unwrap();
        let daemon = Daemon::spawn(
            &lab.manx,
            lab.dir.path(),
            "manx-bgpd",
            manx_bgpd_bin(),
            &["--config", config.to_str().unwrap()],
            &[MANX_LOG],
        );
        let m = Manx {
            daemon,
            control,
            config,
        };
        assert!(
            eventually(Duration::from_secs(10), || m.control.exists()),
            "manx-bgpd control socket never appeared"
        );
        m
    }

    pub fn peers(&self) -> Vec<bgpd::PeerStatus> {
        bgpd::query_peers(&self.control).unwrap_or_default()
    }

    pub fn peer_state(&self, addr: &str) -> Option<bgpd::fsm::State> {
        let addr: std::net::IpAddr = addr.parse().unwrap();
        self.peers()
            .into_iter()
            .find(|p| p.address == addr)
            .map(|p| p.state)
    }

    pub fn established(&self, addr: &str) -> bool {
        self.peer_state(addr) == Some(bgpd::fsm::State::Established)
    }

    /// Prefixes in the Loc-RIB learnt from a peer (not local ones).
    pub fn learnt(&self) -> Vec<String> {
        bgpd::query_routes(&self.control)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.source != bgpd::rib::RouteSource::Local)
            .map(|r| r.prefix.to_string())
            .collect()
    }

    pub fn has_route(&self, prefix: &str) -> bool {
        self.learnt().iter().any(|p| p == prefix)
    }

    pub fn request(&self, req: bgpd::control::Request) {
        bgpd::control::request(&self.control, &req).expect("control request");
    }

    pub fn withdraw(&self, prefix: &str) {
        self.request(bgpd::control::Request::Withdraw {
            prefix: prefix.parse().unwrap(),
        });
    }

    pub fn announce(&self, prefix: &str) {
        self.request(bgpd::control::Request::Announce {
            prefix: prefix.parse().unwrap(),
        });
    }
}
