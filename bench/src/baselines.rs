//! The reflectors `bgp-load` compares, each configured as its own
//! documentation advises for a route reflector with many clients: every
//! client an explicit passive iBGP neighbour in one peer group / template
//! (so one update group), cluster id 1.1.1.1, hold time as the clients
//! propose, one listener, nothing installed in the kernel.
//!
//! * manx-bgpd: [`crate::reflector::manx_config`].
//! * BIRD 2: [`crate::reflector::bird_config`] (its route-reflector example:
//!   an `rr client` template, `protocol direct` on `lo` for next hops).
//! * FRR `bgpd` 8.4 (Debian `frr`), standalone: `-Z` (no zebra; FRR then
//!   treats every next hop as reachable), `-n` (no kernel), `-S` (no
//!   privilege drop); a peer-group with `route-reflector-client` (FRR's
//!   docs: peer-groups and update-groups are how it scales to many peers).
//! * GoBGP `gobgpd` 3.10 (Debian `gobgpd`): TOML with a peer-group
//!   (`route-reflector-client`, `passive-mode`), one `[[neighbors]]` per
//!   client, its gRPC API on a private port, pprof off.
//! * OpenBGPD 7.7 (Debian `openbgpd`): a `group` with `route-reflector`
//!   and `passive`, one `neighbor` per client, `fib-update no`, `allow`
//!   rules (its default filter denies everything), control socket in the
//!   scratch directory.
//!
//! Listen backlogs as shipped (read from `ss -ltn` by the bench, not
//! assumed): BIRD hard-codes 8, OpenBGPD 5, FRR and GoBGP ask for the
//! system maximum (`net.core.somaxconn`), manx-bgpd (tokio) 1024.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::bgp_client::ASN;
use crate::reflector::{self, RrSetup};

/// One reflector implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// manx-bgpd (the subject).
    Manx,
    /// BIRD 2.
    Bird,
    /// FRR bgpd.
    Frr,
    /// GoBGP.
    Gobgp,
    /// OpenBGPD.
    Openbgpd,
}

impl Daemon {
    /// Every daemon, the subject first.
    pub const ALL: [Daemon; 5] = [
        Daemon::Manx,
        Daemon::Bird,
        Daemon::Frr,
        Daemon::Gobgp,
        Daemon::Openbgpd,
    ];

    /// The name printed and accepted by `--daemons`.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Manx => "manx-bgpd",
            Daemon::Bird => "bird2",
            Daemon::Frr => "frr",
            Daemon::Gobgp => "gobgp",
            Daemon::Openbgpd => "openbgpd",
        }
    }

    /// Parse a `--daemons` entry.
    pub fn parse(s: &str) -> anyhow::Result<Daemon> {
        Daemon::ALL
            .into_iter()
            .find(|d| {
                d.name() == s
                    || (s == "bird" && *d == Daemon::Bird)
                    || (s == "manx" && *d == Daemon::Manx)
            })
            .with_context(|| {
                format!("unknown daemon {s:?}: use manx-bgpd, bird2, frr, gobgp or openbgpd")
            })
    }

    /// The binary this daemon runs by default (manx-bgpd: next to the bench).
    pub fn default_binary(self) -> anyhow::Result<PathBuf> {
        Ok(match self {
            Daemon::Manx => reflector::manx_binary(None)?,
            Daemon::Bird => PathBuf::from("/usr/sbin/bird"),
            Daemon::Frr => PathBuf::from("/usr/lib/frr/bgpd"),
            Daemon::Gobgp => PathBuf::from("/usr/bin/gobgpd"),
            Daemon::Openbgpd => PathBuf::from("/usr/sbin/bgpd"),
        })
    }

    /// Write this daemon's config for `setup` into `dir`; returns the
    /// command that runs it in the foreground and the config's path.
    pub fn command(
        self,
        bin: &Path,
        setup: &RrSetup,
        dir: &Path,
    ) -> anyhow::Result<(Command, PathBuf)> {
        match self {
            Daemon::Manx => {
                let conf = reflector::manx_config(setup, dir)?;
                let mut cmd = Command::new(bin);
                cmd.arg("--config").arg(&conf);
                Ok((cmd, conf))
            }
            Daemon::Bird => {
                let conf = reflector::bird_config(setup, dir)?;
                let mut cmd = Command::new(bin);
                cmd.arg("-f")
                    .arg("-c")
                    .arg(&conf)
                    .arg("-s")
                    .arg(dir.join("bird.ctl"));
                Ok((cmd, conf))
            }
            Daemon::Frr => {
                let conf = dir.join("frr-bgpd.conf");
                std::fs::write(&conf, frr_config(setup))?;
                let mut cmd = Command::new(bin);
                cmd.arg("-f")
                    .arg(&conf)
                    .arg("-p")
                    .arg(setup.port.to_string())
                    .arg("-l")
                    .arg(setup.address.to_string())
                    .args(["-n", "-Z", "-S", "-P", "0"])
                    .arg("-i")
                    .arg(dir.join("frr-bgpd.pid"))
                    .arg("--vty_socket")
                    .arg(dir);
                Ok((cmd, conf))
            }
            Daemon::Gobgp => {
                let conf = dir.join("gobgpd.toml");
                std::fs::write(&conf, gobgp_config(setup))?;
                let mut cmd = Command::new(bin);
                cmd.arg("-f")
                    .arg(&conf)
                    .args(["-t", "toml", "--pprof-disable", "--disable-stdlog"])
                    .arg(format!(
                        "--api-hosts={}:{}",
                        setup.address,
                        setup.port + 100
                    ));
                Ok((cmd, conf))
            }
            Daemon::Openbgpd => {
                let conf = dir.join("openbgpd.conf");
                std::fs::write(&conf, openbgpd_config(setup, dir))?;
                // Its chroot (the _openbgpd user's home) must exist.
                let _ = std::fs::create_dir_all("/run/openbgpd");
                let mut cmd = Command::new(bin);
                cmd.arg("-d").arg("-f").arg(&conf);
                Ok((cmd, conf))
            }
        }
    }
}

/// FRR bgpd: a peer-group of passive route-reflector clients.
pub fn frr_config(setup: &RrSetup) -> String {
    let mut s = format!(
        "hostname rr\n\
         !\n\
         router bgp {ASN}\n \
         bgp router-id {rid}\n \
         bgp cluster-id 1.1.1.1\n \
         no bgp default ipv4-unicast\n \
         neighbor RRC peer-group\n \
         neighbor RRC remote-as {ASN}\n \
         neighbor RRC passive\n \
         neighbor RRC timers {ka} {hold}\n",
        rid = setup.address,
        ka = setup.hold_time / 3,
        hold = setup.hold_time,
    );
    for a in &setup.clients {
        let _ = writeln!(s, " neighbor {a} peer-group RRC");
    }
    s.push_str(
        " !\n address-family ipv4 unicast\n  neighbor RRC activate\n  neighbor RRC route-reflector-client\n exit-address-family\n!\n",
    );
    s
}

/// GoBGP: a peer-group of passive route-reflector clients, one neighbour
/// entry per client.
pub fn gobgp_config(setup: &RrSetup) -> String {
    let mut s = format!(
        "[global.config]\n  as = {ASN}\n  router-id = \"{rid}\"\n  port = {port}\n  local-address-list = [\"{rid}\"]\n\n\
         [[peer-groups]]\n  [peer-groups.config]\n    peer-group-name = \"rrc\"\n    peer-as = {ASN}\n\
         \x20 [peer-groups.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"1.1.1.1\"\n\
         \x20 [peer-groups.transport.config]\n    passive-mode = true\n\
         \x20 [peer-groups.timers.config]\n    hold-time = {hold}\n    keepalive-interval = {ka}\n\
         \x20 [[peer-groups.afi-safis]]\n    [peer-groups.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n",
        rid = setup.address,
        port = setup.port,
        hold = setup.hold_time,
        ka = setup.hold_time / 3,
    );
    for a in &setup.clients {
        let _ = write!(
            s,
            "\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{a}\"\n    peer-group = \"rrc\"\n"
        );
    }
    s
}

/// OpenBGPD: a group of passive route-reflector clients.
pub fn openbgpd_config(setup: &RrSetup, dir: &Path) -> String {
    let mut s = format!(
        "AS {ASN}\nrouter-id {rid}\nlisten on {rid} port {port}\nfib-update no\n\
         socket \"{sock}\"\n\n\
         group \"rrc\" {{\n  remote-as {ASN}\n  route-reflector 1.1.1.1\n  passive\n  holdtime {hold}\n",
        port = setup.port,
        hold = setup.hold_time,
        rid = setup.address,
        sock = dir.join("openbgpd.sock").display(),
    );
    for a in &setup.clients {
        let _ = writeln!(s, "  neighbor {a}");
    }
    s.push_str("}\n\nallow from any\nallow to any\n");
    s
}
