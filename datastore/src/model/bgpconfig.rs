//! `BGPConfiguration`: cluster-wide (`default`) or per-node (`node.<name>`)
//! BGP settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::bfd::BFDSpec;
use crate::model::meta::{AsNumber, ObjectMeta, SecretSource, parse_go_duration};
use crate::model::validate::{Checker, ValidationErrors};

/// Default AS number of the cluster.
pub const DEFAULT_AS_NUMBER: AsNumber = AsNumber(64512);
/// Default BGP port.
pub const DEFAULT_BGP_PORT: u16 = 179;

/// A BGP configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BGPConfiguration {
    pub metadata: ObjectMeta,
    pub spec: BGPConfigurationSpec,
}

/// `{cidr: ...}` entries of the service IP lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrEntry {
    pub cidr: String,
}

/// A named BGP community (`aa:nn` standard or `aa:nn:mm` large).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Community {
    pub name: String,
    pub value: String,
}

/// Communities to attach to routes within a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixAdvertisement {
    pub cidr: String,
    /// Community names (from `communities`) or literal values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

/// Which addresses BIRD-style listeners bind to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindMode {
    None,
    NodeIP,
}

/// `BGPConfiguration.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    /// Default 64512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    /// Default 179.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_cluster_ips: Option<Vec<CidrEntry>>,
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_external_ips: Option<Vec<CidrEntry>>,
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_load_balancer_ips: Option<Vec<CidrEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<Vec<Community>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_advertisements: Option<Vec<PrefixAdvertisement>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<SecretSource>,
    /// Go duration, e.g. `"120s"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<BindMode>,
    /// Interfaces (BIRD patterns: `eth1`, `vpn*`) whose addresses are not
    /// connected subnets for the routes from outside the pools, as
    /// calico-node's BIRD leaves them out of `protocol direct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored_interfaces: Option<Vec<String>>,
    /// Manx extension: which equal BGP paths become one multipath (ECMP)
    /// kernel route. Unset: equal eBGP paths from the same neighbouring AS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipath: Option<MultipathSpec>,
    /// BFD on the node-to-node mesh's IPv4 sessions (a Manx extension).
    #[serde(
        default,
        rename = "nodeMeshBFD",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_mesh_bfd: Option<BFDSpec>,
}

/// `BGPConfiguration.spec.multipath` (a Manx extension; Calico installs one
/// next hop per prefix). Paths merge when the decision process cannot tell
/// them apart before the router-id tie-break, as BIRD's `merge paths`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MultipathSpec {
    /// Merge equal eBGP paths (two ToRs). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebgp: Option<bool>,
    /// Merge equal iBGP paths. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ibgp: Option<bool>,
    /// Merge paths from different neighbouring ASes (one AS per ToR).
    /// Default false.
    #[serde(
        default,
        rename = "relaxNeighborAS",
        skip_serializing_if = "Option::is_none"
    )]
    pub relax_neighbor_as: Option<bool>,
}

impl BGPConfigurationSpec {
    pub fn node_to_node_mesh_enabled(&self) -> bool {
        self.node_to_node_mesh_enabled.unwrap_or(true)
    }
    pub fn as_number(&self) -> AsNumber {
        self.as_number.unwrap_or(DEFAULT_AS_NUMBER)
    }
    pub fn listen_port(&self) -> u16 {
        self.listen_port.unwrap_or(DEFAULT_BGP_PORT)
    }
    /// Effective log level (`Info` unless set).
    pub fn log_severity_screen(&self) -> &str {
        self.log_severity_screen.as_deref().unwrap_or("Info")
    }
    /// Graceful-restart time of mesh sessions (default 120 s). An invalid
    /// string (rejected by validation) also gives the default.
    pub fn node_mesh_max_restart_time(&self) -> Duration {
        self.node_mesh_max_restart_time
            .as_deref()
            .and_then(|s| parse_go_duration(s).ok())
            .unwrap_or(Duration::from_secs(120))
    }
    /// Look up a community by name, or accept a literal value.
    pub fn resolve_community<'a>(&'a self, name_or_value: &'a str) -> Option<&'a str> {
        if let Some(c) = self
            .communities
            .iter()
            .flatten()
            .find(|c| c.name == name_or_value)
        {
            return Some(&c.value);
        }
        parse_community(name_or_value).ok().map(|_| name_or_value)
    }
}

/// A parsed community value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommunityValue {
    /// RFC 1997 `aa:nn`.
    Standard(u16, u16),
    /// RFC 8092 `aa:nn:mm`.
    Large(u32, u32, u32),
}

/// Parse `aa:nn` (each 0..=65535) or `aa:nn:mm` (each 32-bit).
pub fn parse_community(text: &str) -> Result<CommunityValue, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad =
        || format!("{text:?} is not a community: write aa:nn (each 0..=65535) or aa:nn:mm (large)");
    match parts.as_slice() {
        [a, n] => Ok(CommunityValue::Standard(
            a.parse().map_err(|_| bad())?,
            n.parse().map_err(|_| bad())?,
        )),
        [a, n, m] => Ok(CommunityValue::Large(
            a.parse().map_err(|_| bad())?,
            n.parse().map_err(|_| bad())?,
            m.parse().map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

/// An `ignoredInterfaces` entry as libcalico-go validates it: 1 to 15 of
/// `[A-Za-z0-9_.*-]`, a BIRD interface pattern (`*` any run of characters),
/// and not `*` alone (that would ignore every interface).
pub fn check_interface_pattern(p: &str) -> Result<(), String> {
    let ok = (1..=15).contains(&p.len())
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.*-".contains(&b));
    if !ok {
        return Err(format!(
            "{p:?} is not an interface name or pattern: 1 to 15 of letters, digits, '_', '.', '-' and '*' (any run of characters)"
        ));
    }
    if p == "*" {
        return Err("\"*\" would ignore every interface: name the interfaces (eth1, vpn*)".into());
    }
    Ok(())
}

const LOG_LEVELS: &[&str] = &["Debug", "Info", "Warning", "Error", "Fatal", "None"];

impl BGPConfiguration {
    /// A configuration with an empty spec.
    pub fn new(name: impl Into<String>) -> Self {
        BGPConfiguration {
            metadata: ObjectMeta::named(name),
            spec: BGPConfigurationSpec::default(),
        }
    }

    /// `default` is cluster-wide; `node.<name>` applies to one node.
    pub fn is_default(&self) -> bool {
        self.metadata.name == "default"
    }

    /// The node a `node.<name>` configuration applies to.
    pub fn node_name(&self) -> Option<&str> {
        self.metadata.name.strip_prefix("node.")
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new("bgpconfiguration", &self.metadata.name);
        c.name(&self.metadata.name);
        let s = &self.spec;
        if !self.is_default() {
            if self.node_name().is_none() {
                c.error(
                    "metadata.name",
                    "must be \"default\" (cluster-wide) or \"node.<nodename>\" (one node)",
                );
            }
            // As libcalico-go: these are cluster-wide settings.
            // Manx listens on one port per node, from `default`.
            c.unsupported(s.listen_port.is_some(), "spec.listenPort");
            for (set, field) in [
                (
                    s.node_to_node_mesh_enabled.is_some(),
                    "spec.nodeToNodeMeshEnabled",
                ),
                (s.as_number.is_some(), "spec.asNumber"),
                (s.service_cluster_ips.is_some(), "spec.serviceClusterIPs"),
                (s.service_external_ips.is_some(), "spec.serviceExternalIPs"),
                (
                    s.service_load_balancer_ips.is_some(),
                    "spec.serviceLoadBalancerIPs",
                ),
                (s.node_mesh_password.is_some(), "spec.nodeMeshPassword"),
                (
                    s.node_mesh_max_restart_time.is_some(),
                    "spec.nodeMeshMaxRestartTime",
                ),
                (s.multipath.is_some(), "spec.multipath"),
                (s.communities.is_some(), "spec.communities"),
                (
                    s.prefix_advertisements.is_some(),
                    "spec.prefixAdvertisements",
                ),
                (s.node_mesh_bfd.is_some(), "spec.nodeMeshBFD"),
                // Calico reads it from `default` only (confd's global key).
                (s.ignored_interfaces.is_some(), "spec.ignoredInterfaces"),
            ] {
                if set {
                    c.error(
                        field,
                        "can only be set in the BGPConfiguration named \"default\"; move it there",
                    );
                }
            }
        }
        for (i, pattern) in s.ignored_interfaces.iter().flatten().enumerate() {
            if let Err(why) = check_interface_pattern(pattern) {
                c.error(&format!("spec.ignoredInterfaces[{i}]"), why);
            }
        }
        if let Some(level) = &s.log_severity_screen
            && !LOG_LEVELS.contains(&level.as_str())
        {
            c.error(
                "spec.logSeverityScreen",
                format!(
                    "{level:?} is not a log level; use one of {}",
                    LOG_LEVELS.join(", ")
                ),
            );
        }
        if let Some(asn) = s.as_number {
            c.as_number("spec.asNumber", asn);
        }
        if s.listen_port == Some(0) {
            c.error(
                "spec.listenPort",
                "0 is not a port; use 1..=65535 (default 179)",
            );
        }
        for (list, field) in [
            (&s.service_cluster_ips, "spec.serviceClusterIPs"),
            (&s.service_external_ips, "spec.serviceExternalIPs"),
            (&s.service_load_balancer_ips, "spec.serviceLoadBalancerIPs"),
        ] {
            for (i, e) in list.iter().flatten().enumerate() {
                c.cidr_str(&format!("{field}[{i}].cidr"), &e.cidr);
            }
        }
        for (i, comm) in s.communities.iter().flatten().enumerate() {
            if comm.name.is_empty() {
                c.error(&format!("spec.communities[{i}].name"), "is empty");
            }
            if let Err(why) = parse_community(&comm.value) {
                c.error(&format!("spec.communities[{i}].value"), why);
            }
        }
        for (i, adv) in s.prefix_advertisements.iter().flatten().enumerate() {
            c.cidr_str(&format!("spec.prefixAdvertisements[{i}].cidr"), &adv.cidr);
            for (j, name) in adv.communities.iter().enumerate() {
                if s.resolve_community(name).is_none() {
                    c.error(
                        &format!("spec.prefixAdvertisements[{i}].communities[{j}]"),
                        format!(
                            "{name:?} is neither a community defined in spec.communities nor a value like 65001:100"
                        ),
                    );
                }
            }
        }
        if let Some(pw) = &s.node_mesh_password
            && pw.secret_key_ref.is_none()
        {
            c.error("spec.nodeMeshPassword", "needs secretKeyRef {name, key}");
        }
        if let Some(d) = &s.node_mesh_max_restart_time
            && let Err(why) = parse_go_duration(d)
        {
            c.error("spec.nodeMeshMaxRestartTime", why);
        }
        if let Some(bfd) = &s.node_mesh_bfd {
            bfd.check(&mut c, "spec.nodeMeshBFD");
        }
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities() {
        // RFC 1997 (standard) and RFC 8092 (large) notations.
        assert_eq!(
            parse_community("65001:100").unwrap(),
            CommunityValue::Standard(65001, 100)
        );
        assert_eq!(
            parse_community("4200000000:1:2").unwrap(),
            CommunityValue::Large(4_200_000_000, 1, 2)
        );
        assert!(parse_community("70000:1").is_err());
        assert!(parse_community("x").is_err());
    }
}
