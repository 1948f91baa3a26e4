//! manx-node settings, by flag or by environment exactly as calico-node reads
//! them (`NODENAME`, `IP`, `IP_AUTODETECTION_METHOD`, `AS`, `CALICO_IPV4POOL_*`
//! renamed `MANX_IPV4POOL_*`, ...).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// How the node's address is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpSetting {
    /// Detect with the autodetection method.
    Autodetect,
    /// Use this address (with its prefix length, `/32` if none given).
    Fixed(ipnetwork::IpNetwork),
    /// No address of this family.
    None,
}

impl std::str::FromStr for IpSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "autodetect" => Ok(IpSetting::Autodetect),
            "none" => Ok(IpSetting::None),
            other => other
                .parse::<ipnetwork::IpNetwork>()
                .map(IpSetting::Fixed)
                .map_err(|e| {
                    format!(
                        "IP={other:?}: {e}; use autodetect, none, or an address like 10.0.0.5/24"
                    )
                }),
        }
    }
}

/// Who runs manx-bfdd, the BFD process that outlives manx-node
/// (`MANX_BFDD`, see `crate::bfdd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BfddMode {
    /// manx-node starts it (the binary beside manx-node) once a peer has
    /// BFD, or uses one already answering on `$MANX_RUN_DIR/bfdd.sock`.
    Spawn,
    /// Something else runs it (a DaemonSet or unit of its own) at
    /// `$MANX_RUN_DIR/bfdd.sock`: manx-node only connects (retrying until it
    /// answers) and never starts one, so it survives a restart of
    /// manx-node's container.
    External,
}

/// Encapsulation setting of the default pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PoolEncap {
    Always,
    #[value(name = "CrossSubnet", alias = "crosssubnet", alias = "cross-subnet")]
    CrossSubnet,
    Never,
    /// Calico accepts `Off` for Never.
    Off,
}

/// manx-node's configuration.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "manx-node",
    about = "Manx per-node agent: BGP, routes, tunnels, IPAM",
    version
)]
pub struct NodeConfig {
    /// This node's name (default: the hostname).
    #[arg(long, env = "NODENAME")]
    pub nodename: Option<String>,
    /// IPv4 address: autodetect, none, or an address with prefix length.
    #[arg(long, env = "IP", default_value = "autodetect")]
    pub ip: IpSetting,
    /// first-found | interface=REGEX,… | skip-interface=REGEX,… | can-reach=DEST | cidr=CIDR,…
    #[arg(long, env = "IP_AUTODETECTION_METHOD", default_value = "first-found")]
    pub ip_autodetection_method: String,
    /// IPv6 address: autodetect, none, or an address with prefix length.
    #[arg(long, env = "IP6", default_value = "none")]
    pub ip6: IpSetting,
    #[arg(long, env = "IP6_AUTODETECTION_METHOD", default_value = "first-found")]
    pub ip6_autodetection_method: String,
    /// This node's AS number (default: the cluster's, from BGPConfiguration).
    #[arg(long = "as", env = "AS")]
    pub as_number: Option<u32>,

    /// Default IPv4 pool, created on first start unless a pool exists.
    #[arg(long, env = "MANX_IPV4POOL_CIDR", default_value = "192.168.0.0/16")]
    pub ipv4pool_cidr: ipnetwork::Ipv4Network,
    #[arg(long, env = "MANX_IPV4POOL_BLOCK_SIZE", default_value_t = 26)]
    pub ipv4pool_block_size: u8,
    #[arg(
        long,
        env = "MANX_IPV4POOL_IPIP",
        default_value = "Always",
        ignore_case = true
    )]
    pub ipv4pool_ipip: PoolEncap,
    #[arg(
        long,
        env = "MANX_IPV4POOL_VXLAN",
        default_value = "Never",
        ignore_case = true
    )]
    pub ipv4pool_vxlan: PoolEncap,
    /// The default pool's `udpMode` (Manx extension: Flannel's UDP backend).
    #[arg(
        long,
        env = "MANX_IPV4POOL_UDP",
        default_value = "Never",
        ignore_case = true
    )]
    pub ipv4pool_udp: PoolEncap,
    #[arg(long, env = "MANX_IPV4POOL_NAT_OUTGOING", default_value_t = true, action = clap::ArgAction::Set)]
    pub ipv4pool_nat_outgoing: bool,
    /// Default IPv6 pool (`CALICO_IPV6POOL_CIDR`), created on first start
    /// unless an IPv6 pool exists, and only on a node with IPv6 (`IP6` not
    /// `none`). Unset: a ULA /48 chosen at random, as calico-node does.
    #[arg(long, env = "MANX_IPV6POOL_CIDR")]
    pub ipv6pool_cidr: Option<ipnetwork::Ipv6Network>,
    #[arg(long, env = "MANX_IPV6POOL_BLOCK_SIZE", default_value_t = 122)]
    pub ipv6pool_block_size: u8,
    /// IPv6 pools have no IPIP; VXLAN runs over `vxlan-v6.manx`.
    #[arg(
        long,
        env = "MANX_IPV6POOL_VXLAN",
        default_value = "Never",
        ignore_case = true
    )]
    pub ipv6pool_vxlan: PoolEncap,
    #[arg(long, env = "MANX_IPV6POOL_NAT_OUTGOING", default_value_t = false, action = clap::ArgAction::Set)]
    pub ipv6pool_nat_outgoing: bool,
    /// Create no default pool.
    #[arg(long, env = "NO_DEFAULT_POOLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub no_default_pools: bool,

    /// Directory for the status socket and the nodename file.
    #[arg(long, env = "MANX_RUN_DIR", default_value = "/var/run/manx")]
    pub run_dir: PathBuf,
    /// Where the CNI plugin finds this node's name.
    #[arg(
        long,
        env = "MANX_NODENAME_FILE",
        default_value = "/var/lib/manx/nodename"
    )]
    pub nodename_file: PathBuf,
    /// This node's WireGuard private key (created 0600 when FelixConfiguration
    /// wireguardEnabled is first on; delete it and restart to rotate the key).
    #[arg(
        long,
        env = "MANX_WIREGUARD_KEY_FILE",
        default_value = felix::dataplane::DEFAULT_WIREGUARD_KEY_FILE
    )]
    pub wireguard_key_file: PathBuf,
    /// Who runs manx-bfdd: `spawn` (manx-node, the default) or `external`.
    #[arg(
        long,
        env = "MANX_BFDD",
        value_enum,
        default_value = "spawn",
        ignore_case = true
    )]
    pub bfdd: BfddMode,
    /// `/livez`, `/readyz` and `/metrics`.
    #[arg(long, env = "MANX_HEALTH_LISTEN", default_value = "127.0.0.1:9099")]
    pub health_listen: SocketAddr,
    /// A second listener for `/metrics` (e.g. 0.0.0.0:9091 for Prometheus).
    #[arg(long, env = "MANX_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Full dataplane resync period in seconds.
    #[arg(long, env = "MANX_RESYNC_SECONDS", default_value_t = 90)]
    pub resync_seconds: u64,
    /// Log format: text or json.
    #[arg(long, env = "MANX_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Log level or filter (`info`, `manx_node=debug,bgpd=info`).
    #[arg(long, env = "MANX_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl NodeConfig {
    /// The node name: `NODENAME`, else the kernel's hostname.
    pub fn node_name(&self) -> String {
        self.nodename.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        })
    }
}

impl PoolEncap {
    /// The v3 spelling (`Always`, `CrossSubnet`, `Never`).
    pub fn as_v3(self) -> &'static str {
        match self {
            PoolEncap::Always => "Always",
            PoolEncap::CrossSubnet => "CrossSubnet",
            PoolEncap::Never | PoolEncap::Off => "Never",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_calico_style_settings() {
        let c = NodeConfig::try_parse_from([
            "manx-node",
            "--nodename",
            "n1",
            "--ip",
            "10.0.0.5/24",
            "--ipv4pool-ipip",
            "crosssubnet",
            "--ipv4pool-nat-outgoing",
            "false",
        ])
        .unwrap();
        assert_eq!(c.node_name(), "n1");
        assert_eq!(c.ip, IpSetting::Fixed("10.0.0.5/24".parse().unwrap()));
        assert_eq!(c.ipv4pool_ipip, PoolEncap::CrossSubnet);
        assert!(!c.ipv4pool_nat_outgoing);
        assert_eq!(c.ip6, IpSetting::None);
        assert_eq!(c.ipv6pool_cidr, None);
        assert_eq!(c.ipv6pool_block_size, 122);
        assert_eq!(c.ipv6pool_vxlan, PoolEncap::Never);
        assert!(!c.ipv6pool_nat_outgoing);
    }

    #[test]
    fn reads_the_ipv6_settings() {
        let c = NodeConfig::try_parse_from([
            "manx-node",
            "--ip6",
            "autodetect",
            "--ip6-autodetection-method",
            "interface=eth0",
            "--ipv6pool-cidr",
            "fd65::/48",
            "--ipv6pool-vxlan",
            "crosssubnet",
            "--ipv6pool-nat-outgoing",
            "true",
        ])
        .unwrap();
        assert_eq!(c.ip6, IpSetting::Autodetect);
        assert_eq!(c.ip6_autodetection_method, "interface=eth0");
        assert_eq!(c.ipv6pool_cidr, Some("fd65::/48".parse().unwrap()));
        assert_eq!(c.ipv6pool_vxlan, PoolEncap::CrossSubnet);
        assert!(c.ipv6pool_nat_outgoing);
    }

    #[test]
    fn bad_ip_names_the_setting_and_the_fix() {
        let e = "10.0.0.300".parse::<IpSetting>().unwrap_err();
        assert!(
            e.contains("IP=\"10.0.0.300\"") && e.contains("autodetect"),
            "{e}"
        );
    }
}
