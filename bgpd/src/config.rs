//! Speaker configuration: the `manx-bgpd --config FILE` YAML, and the types
//! `manx-node` fills from the datastore.
//!
//! ```yaml
//! asNumber: 64512
//! routerId: 198.18.0.1
//! listen: { address: "::", port: 179 }
//! holdTime: 90
//! connectRetryTime: 5
//! peers:
//!   - address: 198.18.0.2
//!     asNumber: 64512
//!     password: s3cret          # TCP-MD5 (RFC 2385)
//!     passive: false
//!     sourceAddress: 198.18.0.1
//!     ttlSecurity: 1            # GTSM (RFC 5082): the peer is at most 1 hop away
//!                               # (true means 1, false or 0 off)
//!     type: node-to-node mesh
//!     rrClient: false           # RFC 4456 client (needs clusterId)
//!     nextHopMode: auto         # auto | self | keep
//!     restartTime: 120          # graceful restart (RFC 4724)
//!     bfd: {minRx: 300, minTx: 300, multiplier: 3}   # RFC 5880/5882, IPv4
//!     filters:                  # Calico BGPFilters, in order (see crate::policy)
//!       - name: tor
//!         importV4: [{action: Reject, prefix: {operator: Equal, cidr: 10.200.0.0/26,
//!                     minLength: 26, maxLength: 32}}]
//!         exportV4: [{action: Reject, remotePeersOnly: true}]
//! networks: [10.65.0.0/26, "fd42:65::/122"]
//! controlSocket: /run/manx/bgpd.sock
//! clusterId: 244.0.0.1          # be a route reflector
//! restartTime: 120
//! restarting: false
//! bfddSocket: /var/run/manx/bfdd.sock   # BFD served by manx-bfdd (C bit, survives restarts)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::fsm::{DEFAULT_CONNECT_RETRY, DEFAULT_HOLD_TIME};
use crate::packet::BGP_PORT;

/// Default AS number of a Manx cluster (Calico's too).
pub const DEFAULT_AS: u32 = 64512;

/// Errors reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("bgpd config {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML did not parse into the schema.
    #[error("bgpd config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: serde_norway::Error,
    },
    /// A value is out of range or inconsistent.
    #[error("bgpd config: {0}")]
    Invalid(String),
}

/// Where to accept BGP connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenConfig {
    /// Address to bind; `::` accepts IPv4 and IPv6.
    #[serde(default = "default_listen_address")]
    pub address: IpAddr,
    /// TCP port (179).
    #[serde(default = "default_port")]
    pub port: u16,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            address: default_listen_address(),
            port: BGP_PORT,
        }
    }
}

impl ListenConfig {
    /// The socket address to bind.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

fn default_listen_address() -> IpAddr {
    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}
fn default_listen() -> Option<ListenConfig> {
    Some(ListenConfig::default())
}
fn default_port() -> u16 {
    BGP_PORT
}
fn default_hold_time() -> u16 {
    DEFAULT_HOLD_TIME
}
fn default_connect_retry() -> u64 {
    DEFAULT_CONNECT_RETRY.as_secs()
}
fn default_as() -> u32 {
    DEFAULT_AS
}

/// How a peer came to be configured (Calico's peer types, shown by `manxctl node status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PeerType {
    /// A global BGPPeer (every node peers with it).
    #[default]
    #[serde(rename = "global")]
    Global,
    /// Another node of the full mesh.
    #[serde(rename = "node-to-node mesh")]
    NodeMesh,
    /// A BGPPeer selected for this node only.
    #[serde(rename = "node specific")]
    NodeSpecific,
}

impl std::fmt::Display for PeerType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerType::Global => "global",
            PeerType::NodeMesh => "node-to-node mesh",
            PeerType::NodeSpecific => "node specific",
        })
    }
}

/// One BGP neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConfig {
    /// The neighbour's address (also its identity: one session per address).
    pub address: IpAddr,
    /// Its TCP port (179).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Its AS number; equal to ours means iBGP.
    pub as_number: u32,
    /// TCP-MD5 password (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Never connect; only accept.
    #[serde(default)]
    pub passive: bool,
    /// Local address for outgoing connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
    /// GTSM (RFC 5082) with the peer at most this many hops away: send with
    /// TTL 255, accept only TTL ≥ 256 − hops (BIRD's `ttl security` with
    /// `multihop`, Calico's `ttlSecurity`). `None`: no GTSM.
    #[serde(
        default,
        deserialize_with = "ttl_hops",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl_security: Option<u8>,
    /// Where the peer came from.
    #[serde(default, rename = "type")]
    pub peer_type: PeerType,
    /// Hold time for this peer (overrides the global one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<u16>,
    /// A route-reflector client of ours (RFC 4456); only meaningful when
    /// the speaker has a `clusterId`.
    #[serde(default)]
    pub rr_client: bool,
    /// Which next hop to send this peer.
    #[serde(default)]
    pub next_hop_mode: NextHopMode,
    /// Graceful-restart time advertised to this peer (RFC 4724 §3),
    /// overriding the speaker's (Calico's `maxRestartTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_time: Option<u16>,
    /// BFD for this session (RFC 5880/5881 single hop, a Manx extension):
    /// a BFD Down takes the session down at once and its routes with it
    /// (RFC 5882), instead of waiting for the hold timer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd: Option<BfdConfig>,
    /// Accept eBGP paths with our own AS in their AS_PATH up to this many
    /// times (allowas-in, BIRD's `allow local as N`); 0: the RFC 4271
    /// loop check.
    #[serde(default)]
    pub allow_local_as: u8,
    /// Import and export filters, in order (Calico's `BGPPeer.spec.filters`,
    /// see [`crate::policy`]); changing them keeps the session up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<crate::policy::Filter>,
}

/// A peer's BFD timers; defaults 300 ms × 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BfdConfig {
    /// Required Min RX Interval, milliseconds.
    #[serde(default = "default_bfd_ms")]
    pub min_rx: u32,
    /// Desired Min TX Interval, milliseconds.
    #[serde(default = "default_bfd_ms")]
    pub min_tx: u32,
    /// Detect Mult.
    #[serde(default = "default_bfd_mult")]
    pub multiplier: u8,
}

fn default_bfd_ms() -> u32 {
    300
}

fn default_bfd_mult() -> u8 {
    3
}

impl Default for BfdConfig {
    fn default() -> Self {
        BfdConfig {
            min_rx: default_bfd_ms(),
            min_tx: default_bfd_ms(),
            multiplier: default_bfd_mult(),
        }
    }
}

/// The NEXT_HOP a peer is sent (RFC 4271 §5.1.3, RFC 4456 §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NextHopMode {
    /// eBGP: self; iBGP: self for our own prefixes, unchanged for learnt ones
    /// (what a route reflector must do).
    #[default]
    Auto,
    /// Always our session address.
    #[serde(rename = "self")]
    SelfAddr,
    /// Never rewrite a learnt next hop, even toward eBGP peers.
    Keep,
}

/// `ttlSecurity`: a hop count 1..=255, or `true` (1 hop) / `false` or 0 (off).
fn ttl_hops<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Hops {
        Flag(bool),
        Count(u8),
    }
    Ok(match Option::<Hops>::deserialize(d)? {
        None | Some(Hops::Flag(false)) | Some(Hops::Count(0)) => None,
        Some(Hops::Flag(true)) => Some(1),
        Some(Hops::Count(n)) => Some(n),
    })
}

impl PeerConfig {
    /// The lowest TTL (hop limit) accepted from this peer under GTSM:
    /// 256 − hops (RFC 5082 §3), or `None` without GTSM.
    pub fn min_ttl(&self) -> Option<u8> {
        self.ttl_security
            .map(|hops| (256 - u16::from(hops.max(1))) as u8)
    }

    /// A peer with defaults for everything but address and AS.
    pub fn new(address: IpAddr, as_number: u32) -> PeerConfig {
        PeerConfig {
            address,
            port: BGP_PORT,
            as_number,
            password: None,
            passive: false,
            source_address: None,
            ttl_security: None,
            peer_type: PeerType::Global,
            hold_time: None,
            rr_client: false,
            next_hop_mode: NextHopMode::Auto,
            restart_time: None,
            bfd: None,
            allow_local_as: 0,
            filters: Vec::new(),
        }
    }

    /// The peer's filters as one policy, `None` when they hold no rule.
    pub fn policy(&self) -> Option<std::sync::Arc<crate::policy::Policy>> {
        let p = crate::policy::Policy::new(self.filters.clone());
        (!p.is_empty()).then(|| std::sync::Arc::new(p))
    }

    /// Where to connect.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

/// The whole speaker configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpeakerConfig {
    /// Our AS number.
    #[serde(default = "default_as")]
    pub as_number: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Listener; omitted in YAML means `[::]:179`; `None` (YAML `null`)
    /// means no listener: every peer is dialled, none can connect to us.
    #[serde(default = "default_listen")]
    pub listen: Option<ListenConfig>,
    /// Hold time proposed to peers (0 or ≥ 3).
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// ConnectRetry time in seconds.
    #[serde(default = "default_connect_retry")]
    pub connect_retry_time: u64,
    /// Neighbours.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Prefixes to originate.
    #[serde(default)]
    pub networks: Vec<IpNetwork>,
    /// Unix socket for `manxctl node status` (see [`crate::control`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_socket: Option<PathBuf>,
    /// Route-reflector cluster id (RFC 4456 §7): set, this speaker reflects
    /// routes between its `rrClient` peers and the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<Ipv4Addr>,
    /// Graceful-restart time we advertise (RFC 4724 §3, seconds, ≤ 4095).
    #[serde(default = "default_restart_time")]
    pub restart_time: u16,
    /// We are coming back from a restart: advertise the GR R bit so that
    /// helpers keep our routes until our End-of-RIB (RFC 4724 §4.1).
    #[serde(default)]
    pub restarting: bool,
    /// Seconds a peer's pending output may wait for its socket without a
    /// single octet written before the session is closed with Cease / Out
    /// of Resources (RFC 4486 §4, subcode 8); 0 never closes it (BIRD's and
    /// FRR's default). Default [`DEFAULT_SEND_STALL_TIMEOUT`]: a peer whose
    /// TCP window stays shut for the RFC 4271 suggested hold time cannot
    /// receive our KEEPALIVEs either, so it is as dead as one whose
    /// keepalives we stopped hearing for that long; shorter would drop a
    /// peer that is briefly starved of CPU. Memory does not depend on it: a
    /// slow peer's output is a per-prefix diff, O(table), see `session/conn.rs`.
    #[serde(default = "default_send_stall_timeout")]
    pub send_stall_timeout: u64,
    /// Which equal paths become one multipath (ECMP) kernel route; default:
    /// equal eBGP paths from the same neighbouring AS (two ToRs).
    #[serde(default)]
    pub multipath: crate::rib::Multipath,
    /// Serve BFD through manx-bfdd at this control socket instead of in
    /// this process: the sessions survive a restart of the speaker and
    /// advertise the C bit (RFC 5882 §4.3.2). Unset: in-process BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfdd_socket: Option<PathBuf>,
}

fn default_send_stall_timeout() -> u64 {
    DEFAULT_SEND_STALL_TIMEOUT
}

/// Default [`SpeakerConfig::send_stall_timeout`] (seconds): the suggested
/// hold time of RFC 4271 §10.
pub const DEFAULT_SEND_STALL_TIMEOUT: u64 = 90;

fn default_restart_time() -> u16 {
    DEFAULT_RESTART_TIME
}

/// Default graceful-restart time (seconds), as BIRD and Calico use.
pub const DEFAULT_RESTART_TIME: u16 = 120;

impl SpeakerConfig {
    /// A config with defaults and no peers.
    pub fn new(as_number: u32, router_id: Ipv4Addr) -> SpeakerConfig {
        SpeakerConfig {
            as_number,
            router_id,
            listen: Some(ListenConfig::default()),
            hold_time: DEFAULT_HOLD_TIME,
            connect_retry_time: DEFAULT_CONNECT_RETRY.as_secs(),
            peers: Vec::new(),
            networks: Vec::new(),
            control_socket: None,
            cluster_id: None,
            restart_time: DEFAULT_RESTART_TIME,
            restarting: false,
            send_stall_timeout: DEFAULT_SEND_STALL_TIMEOUT,
            multipath: crate::rib::Multipath::default(),
            bfdd_socket: None,
        }
    }

    /// Parse YAML text (no file).
    pub fn from_yaml(text: &str, origin: &Path) -> Result<SpeakerConfig, ConfigError> {
        let cfg: SpeakerConfig =
            serde_norway::from_str(text).map_err(|source| ConfigError::Parse {
                path: origin.to_path_buf(),
                source,
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and check a YAML file.
    pub fn load(path: &Path) -> Result<SpeakerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// ConnectRetry as a duration.
    pub fn connect_retry(&self) -> Duration {
        Duration::from_secs(self.connect_retry_time)
    }

    /// The send stall timeout (`None`: disabled).
    pub fn send_stall(&self) -> Option<Duration> {
        (self.send_stall_timeout > 0).then(|| Duration::from_secs(self.send_stall_timeout))
    }

    /// Check ranges and duplicates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check_hold = |what: &str, h: u16| {
            if h == 1 || h == 2 {
                Err(ConfigError::Invalid(format!(
                    "{what}: holdTime {h} is not allowed; use 0 (no keepalives) or at least 3 seconds (RFC 4271 §4.2)"
                )))
            } else {
                Ok(())
            }
        };
        check_hold("speaker", self.hold_time)?;
        if self.router_id.is_unspecified() {
            return Err(ConfigError::Invalid(
                "routerId 0.0.0.0 is not a valid BGP identifier; set a unique IPv4 address".into(),
            ));
        }
        if self.as_number == 0 {
            return Err(ConfigError::Invalid(
                "asNumber 0 is reserved; use e.g. 64512".into(),
            ));
        }
        if self.connect_retry_time == 0 {
            return Err(ConfigError::Invalid(
                "connectRetryTime must be at least 1 second".into(),
            ));
        }
        if self.restart_time > 4095 {
            return Err(ConfigError::Invalid(format!(
                "restartTime {} does not fit the 12-bit field; use at most 4095 seconds (RFC 4724 §3)",
                self.restart_time
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.peers {
            if let Some(b) = &p.bfd {
                if !p.address.is_ipv4() {
                    return Err(ConfigError::Invalid(format!(
                        "peer {}: bfd is IPv4-only in Manx so far; remove it from this peer",
                        p.address
                    )));
                }
                if b.multiplier == 0 || b.min_rx < 10 || b.min_tx < 10 {
                    return Err(ConfigError::Invalid(format!(
                        "peer {}: bfd needs multiplier >= 1 and minRx, minTx >= 10 ms (got {} / {} ms x {})",
                        p.address, b.min_rx, b.min_tx, b.multiplier
                    )));
                }
            }
            if p.restart_time.is_some_and(|t| t > 4095) {
                return Err(ConfigError::Invalid(format!(
                    "peer {}: restartTime must be at most 4095 seconds (RFC 4724 §3)",
                    p.address
                )));
            }
            check_hold(
                &format!("peer {}", p.address),
                p.hold_time.unwrap_or(self.hold_time),
            )?;
            if let Some(pw) = &p.password
                && pw.len() > crate::session::sockopt::TCP_MD5SIG_MAXKEYLEN
            {
                return Err(ConfigError::Invalid(format!(
                    "peer {}: password is {} bytes; the kernel's TCP-MD5 keys are at most {} bytes \
                     (TCP_MD5SIG_MAXKEYLEN): use a shorter password",
                    p.address,
                    pw.len(),
                    crate::session::sockopt::TCP_MD5SIG_MAXKEYLEN
                )));
            }
            if !seen.insert(p.address) {
                return Err(ConfigError::Invalid(format!(
                    "peer {} is listed twice; keep one entry",
                    p.address
                )));
            }
            if p.as_number == 0 {
                return Err(ConfigError::Invalid(format!(
                    "peer {}: asNumber 0 is reserved",
                    p.address
                )));
            }
            if let Some(src) = p.source_address
                && src.is_ipv4() != p.address.is_ipv4()
            {
                return Err(ConfigError::Invalid(format!(
                    "peer {}: sourceAddress {src} is not of the same address family",
                    p.address
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18: 81-byte TCP-MD5 passwords are refused when the config is
    /// read (the kernel limit is 80), naming the peer and the field.
    #[test]
    fn md5_password_over_80_bytes_is_refused() {
        let yaml = |pw: &str| {
            format!(
                "asNumber: 64512\nrouterId: 198.18.0.1\npeers:\n  - address: 198.18.0.2\n    asNumber: 64512\n    password: \"{pw}\"\n"
            )
        };
        let ok = SpeakerConfig::from_yaml(&yaml(&"p".repeat(80)), Path::new("t.yaml")).unwrap();
        ok.validate().unwrap();
        let long = SpeakerConfig::from_yaml(&yaml(&"p".repeat(81)), Path::new("t.yaml"));
        let e = long.and_then(|c| c.validate()).unwrap_err().to_string();
        assert!(e.contains("peer 198.18.0.2: password is 81 bytes"), "{e}");
        assert!(e.contains("at most 80"), "{e}");
    }

    #[test]
    fn parses_the_documented_example() {
        let yaml = r#"
asNumber: 64512
routerId: 198.18.0.1
listen: { address: "::", port: 1179 }
holdTime: 30
peers:
  - address: 198.18.0.2
    asNumber: 64512
    password: s3cret
    ttlSecurity: true
    type: node-to-node mesh
  - address: "fd42:18::2"
    asNumber: 65001
    passive: true
    holdTime: 9
    type: node specific
networks: [10.65.0.0/26, "fd42:65::/122"]
controlSocket: /run/manx/bgpd.sock
"#;
        let cfg = SpeakerConfig::from_yaml(yaml, Path::new("test.yaml")).unwrap();
        assert_eq!(cfg.as_number, 64512);
        assert_eq!(cfg.listen.as_ref().unwrap().port, 1179);
        assert_eq!(cfg.peers.len(), 2);
        assert_eq!(cfg.peers[0].peer_type, PeerType::NodeMesh);
        assert_eq!(cfg.peers[0].port, 179);
        assert_eq!(cfg.peers[0].ttl_security, Some(1));
        assert_eq!(cfg.peers[0].min_ttl(), Some(255));
        assert_eq!(cfg.peers[1].min_ttl(), None);
        assert_eq!(cfg.peers[1].hold_time, Some(9));
        assert!(cfg.peers[1].passive);
        assert_eq!(cfg.networks.len(), 2);
        assert_eq!(cfg.connect_retry(), Duration::from_secs(5));
    }

    #[test]
    fn ttl_security_is_a_hop_count() {
        let peer = |v: &str| {
            let yaml = format!(
                "routerId: 1.1.1.1\npeers:\n- {{address: 10.0.0.1, asNumber: 1, ttlSecurity: {v}}}\n"
            );
            SpeakerConfig::from_yaml(&yaml, Path::new("x"))
                .unwrap()
                .peers
                .remove(0)
        };
        assert_eq!(peer("2").min_ttl(), Some(254));
        assert_eq!(peer("3").min_ttl(), Some(253));
        assert_eq!(peer("255").min_ttl(), Some(1));
        assert_eq!(peer("false").min_ttl(), None);
        assert_eq!(peer("0").min_ttl(), None);
    }

    #[test]
    fn omitted_listen_means_all_addresses_port_179() {
        let cfg = SpeakerConfig::from_yaml("routerId: 1.1.1.1\n", Path::new("x")).unwrap();
        assert_eq!(cfg.listen, Some(ListenConfig::default()));
        assert_eq!(cfg.listen.unwrap().socket_addr().to_string(), "[::]:179");
        let cfg =
            SpeakerConfig::from_yaml("routerId: 1.1.1.1\nlisten: null\n", Path::new("x")).unwrap();
        assert_eq!(cfg.listen, None);
    }

    #[test]
    fn rejects_hold_time_two_with_a_hint() {
        let err = SpeakerConfig::from_yaml("routerId: 1.1.1.1\nholdTime: 2\n", Path::new("x"))
            .unwrap_err();
        assert!(err.to_string().contains("holdTime 2"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields_and_duplicate_peers() {
        assert!(SpeakerConfig::from_yaml("routerId: 1.1.1.1\nbogus: 1\n", Path::new("x")).is_err());
        let yaml = "routerId: 1.1.1.1\npeers:\n- {address: 10.0.0.1, asNumber: 1}\n- {address: 10.0.0.1, asNumber: 2}\n";
        let err = SpeakerConfig::from_yaml(yaml, Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }
}
