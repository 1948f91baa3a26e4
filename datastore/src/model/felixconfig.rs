//! `FelixConfiguration`: cluster-wide (`default`) or per-node (`node.<name>`)
//! dataplane settings, as Calico's kind of the same name.
//!
//! Manx reads the routing fields only: WireGuard encryption of pod traffic
//! between nodes (`wireguardEnabled`, `wireguardListeningPort`,
//! `wireguardMTU`). Every other field of Calico's schema is read (so a Calico
//! manifest parses) and refused by validation by name, never stored and
//! ignored; a field outside Calico's schema is an unknown field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::meta::ObjectMeta;
use crate::model::validate::{Checker, NOT_SUPPORTED, ValidationErrors, closest};

/// Default UDP port of the WireGuard device (Calico's).
pub const DEFAULT_WIREGUARD_PORT: u16 = 51820;
/// Bytes WireGuard adds to a packet over an IPv4 underlay: outer IPv4 (20), UDP (8),
/// WireGuard data header (16) and the Poly1305 tag (16).
pub const WIREGUARD_OVERHEAD: u32 = 60;

/// A Felix configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FelixConfiguration {
    pub metadata: ObjectMeta,
    pub spec: FelixConfigurationSpec,
}

/// `FelixConfiguration.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FelixConfigurationSpec {
    /// Encrypt IPv4 pod traffic between nodes with WireGuard (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled: Option<bool>,
    /// IPv6 WireGuard; only `false` is accepted (Manx has no IPv6 WireGuard yet).
    #[serde(
        default,
        rename = "wireguardEnabledV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_enabled_v6: Option<bool>,
    /// UDP port of `wireguard.manx` on every node (default 51820).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_listening_port: Option<u32>,
    /// MTU of `wireguard.manx` (default: the uplink MTU minus 60).
    #[serde(
        default,
        rename = "wireguardMTU",
        skip_serializing_if = "Option::is_none"
    )]
    pub wireguard_mtu: Option<u32>,
    /// Every other field, as written: validation refuses each by name.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl FelixConfigurationSpec {
    pub fn wireguard_enabled(&self) -> bool {
        self.wireguard_enabled.unwrap_or(false)
    }

    /// The WireGuard UDP port (a value out of range, refused by validation, gives the
    /// default).
    pub fn wireguard_listening_port(&self) -> u16 {
        self.wireguard_listening_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_WIREGUARD_PORT)
    }

    /// The configured WireGuard MTU; `None` (or 0, Calico's "auto") means the uplink's
    /// minus [`WIREGUARD_OVERHEAD`].
    pub fn wireguard_mtu(&self) -> Option<u32> {
        self.wireguard_mtu.filter(|m| *m != 0)
    }

    /// The settings in force on a node: each field of its `node.<name>` object, where
    /// set, over the cluster-wide `default`'s (as Felix merges them).
    pub fn merged(global: Option<&Self>, node: Option<&Self>) -> Self {
        let g = global.cloned().unwrap_or_default();
        let Some(n) = node else { return g };
        FelixConfigurationSpec {
            wireguard_enabled: n.wireguard_enabled.or(g.wireguard_enabled),
            wireguard_enabled_v6: n.wireguard_enabled_v6.or(g.wireguard_enabled_v6),
            wireguard_listening_port: n.wireguard_listening_port.or(g.wireguard_listening_port),
            wireguard_mtu: n.wireguard_mtu.or(g.wireguard_mtu),
            other: BTreeMap::new(),
        }
    }
}

impl FelixConfiguration {
    /// The cluster-wide configuration's name.
    pub const DEFAULT_NAME: &'static str = "default";

    /// A configuration with an empty spec.
    pub fn new(name: impl Into<String>) -> Self {
        FelixConfiguration {
            metadata: ObjectMeta::named(name),
            spec: FelixConfigurationSpec::default(),
        }
    }

    /// `default` is cluster-wide; `node.<name>` applies to one node.
    pub fn is_default(&self) -> bool {
        self.metadata.name == Self::DEFAULT_NAME
    }

    /// The node a `node.<name>` configuration applies to.
    pub fn node_name(&self) -> Option<&str> {
        self.metadata.name.strip_prefix("node.")
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new("felixconfiguration", &self.metadata.name);
        c.name(&self.metadata.name);
        if !self.is_default() && self.node_name().is_none_or(str::is_empty) {
            c.error(
                "metadata.name",
                "must be \"default\" (cluster-wide) or \"node.<nodename>\" (one node)",
            );
        }
        let s = &self.spec;
        c.unsupported(
            s.wireguard_enabled_v6 == Some(true),
            "spec.wireguardEnabledV6",
        );
        if let Some(port) = s.wireguard_listening_port
            && !(1..=65535).contains(&port)
        {
            c.error(
                "spec.wireguardListeningPort",
                format!("{port} is out of range 1..=65535 (default {DEFAULT_WIREGUARD_PORT})"),
            );
        }
        if let Some(mtu) = s.wireguard_mtu
            && mtu != 0
            && !(1280..=65535 - WIREGUARD_OVERHEAD).contains(&mtu)
        {
            c.error(
                "spec.wireguardMTU",
                format!(
                    "{mtu} is out of range 1280..={} (0 or unset: the uplink MTU minus \
                     {WIREGUARD_OVERHEAD})",
                    65535 - WIREGUARD_OVERHEAD
                ),
            );
        }
        for key in s.other.keys() {
            let field = format!("spec.{key}");
            if CALICO_FIELDS.contains(&key.as_str()) {
                c.error(&field, NOT_SUPPORTED);
            } else {
                let hint = closest(key, ACCEPTED_FIELDS)
                    .map(|h| format!(" (did you mean {h}?)"))
                    .unwrap_or_default();
                c.error(
                    &field,
                    format!(
                        "is not a FelixConfiguration field{hint}: Manx reads {}",
                        ACCEPTED_FIELDS.join(", ")
                    ),
                );
            }
        }
        c.finish()
    }
}

/// The `spec` fields Manx acts on.
pub const ACCEPTED_FIELDS: &[&str] = &[
    "wireguardEnabled",
    "wireguardEnabledV6",
    "wireguardListeningPort",
    "wireguardMTU",
];

/// Calico's other `FelixConfiguration.spec` fields (projectcalico.org/v3, Calico 3.29):
/// accepted by the parser so a Calico manifest reads, then refused by name.
const CALICO_FIELDS: &[&str] = &[
    "allowIPIPPacketsFromWorkloads",
    "allowVXLANPacketsFromWorkloads",
    "awsSrcDstCheck",
    "bpfAttachType",
    "bpfCTLBLogFilter",
    "bpfConnectTimeLoadBalancing",
    "bpfConnectTimeLoadBalancingEnabled",
    "bpfConntrackLogLevel",
    "bpfConntrackMode",
    "bpfConntrackTimeouts",
    "bpfDSROptoutCIDRs",
    "bpfDataIfacePattern",
    "bpfDisableGROForIfaces",
    "bpfDisableUnprivileged",
    "bpfEnabled",
    "bpfEnforceRPF",
    "bpfExcludeCIDRsFromNAT",
    "bpfExportBufferSizeMB",
    "bpfExtToServiceConnmark",
    "bpfExternalServiceMode",
    "bpfForceTrackPacketsFromIfaces",
    "bpfHostConntrackBypass",
    "bpfHostNetworkedNATWithoutCTLB",
    "bpfKubeProxyEndpointSlicesEnabled",
    "bpfKubeProxyIptablesCleanupEnabled",
    "bpfKubeProxyMinSyncPeriod",
    "bpfL3IfacePattern",
    "bpfLogFilters",
    "bpfLogLevel",
    "bpfMapSizeConntrack",
    "bpfMapSizeConntrackCleanupQueue",
    "bpfMapSizeIPSets",
    "bpfMapSizeIfState",
    "bpfMapSizeNATAffinity",
    "bpfMapSizeNATBackend",
    "bpfMapSizeNATFrontend",
    "bpfMapSizePerCpuConntrack",
    "bpfMapSizeRoute",
    "bpfPSNATPorts",
    "bpfPolicyDebugEnabled",
    "bpfProfiling",
    "bpfRedirectToPeer",
    "chainInsertMode",
    "cgroupV2Path",
    "dataplaneDriver",
    "dataplaneWatchdogTimeout",
    "debugDisableLogDropping",
    "debugHost",
    "debugMemoryProfilePath",
    "debugPort",
    "debugSimulateCalcGraphHangAfter",
    "debugSimulateDataplaneApplyDelay",
    "debugSimulateDataplaneHangAfter",
    "defaultEndpointToHostAction",
    "deviceRouteProtocol",
    "deviceRouteSourceAddress",
    "deviceRouteSourceAddressIPv6",
    "disableConntrackInvalidCheck",
    "endpointReportingDelay",
    "endpointReportingEnabled",
    "endpointStatusPathPrefix",
    "externalNodesList",
    "failsafeInboundHostPorts",
    "failsafeOutboundHostPorts",
    "featureDetectOverride",
    "featureGates",
    "floatingIPs",
    "flowLogsCollectorDebugTrace",
    "flowLogsFlushInterval",
    "flowLogsGoldmaneServer",
    "flowLogsMaxOriginalIPsIncluded",
    "genericXDPEnabled",
    "goGCThreshold",
    "goMaxProcs",
    "goMemoryLimitMB",
    "healthEnabled",
    "healthHost",
    "healthPort",
    "healthTimeoutOverrides",
    "interfaceExclude",
    "interfacePrefix",
    "interfaceRefreshInterval",
    "ipForwarding",
    "ipipEnabled",
    "ipipMTU",
    "ipsetsRefreshInterval",
    "iptablesBackend",
    "iptablesFilterAllowAction",
    "iptablesFilterDenyAction",
    "iptablesLockFilePath",
    "iptablesLockProbeInterval",
    "iptablesLockTimeout",
    "iptablesMangleAllowAction",
    "iptablesMarkMask",
    "iptablesNATOutgoingInterfaceFilter",
    "iptablesPostWriteCheckInterval",
    "iptablesRefreshInterval",
    "ipv6Support",
    "kubeNodePortRanges",
    "logDebugFilenameRegex",
    "logFilePath",
    "logPrefix",
    "logSeverityFile",
    "logSeverityScreen",
    "logSeveritySys",
    "maxIpsetSize",
    "metadataAddr",
    "metadataPort",
    "mtuIfacePattern",
    "natOutgoingAddress",
    "natPortRange",
    "netlinkTimeout",
    "nfNetlinkBufSize",
    "nftablesFilterAllowAction",
    "nftablesFilterDenyAction",
    "nftablesMangleAllowAction",
    "nftablesMarkMask",
    "nftablesMode",
    "nftablesRefreshInterval",
    "openstackRegion",
    "policySyncPathPrefix",
    "prometheusGoMetricsEnabled",
    "prometheusMetricsEnabled",
    "prometheusMetricsHost",
    "prometheusMetricsPort",
    "prometheusProcessMetricsEnabled",
    "prometheusWireGuardMetricsEnabled",
    "removeExternalRoutes",
    "reportingInterval",
    "reportingTTL",
    "routeRefreshInterval",
    "routeSource",
    "routeSyncDisabled",
    "routeTableRange",
    "routeTableRanges",
    "serviceLoopPrevention",
    "sidecarAccelerationEnabled",
    "usageReportingEnabled",
    "usageReportingInitialDelay",
    "usageReportingInterval",
    "useInternalDataplaneDriver",
    "vxlanEnabled",
    "vxlanMTU",
    "vxlanMTUV6",
    "vxlanPort",
    "vxlanVNI",
    "windowsManageFirewallRules",
    "wireguardHostEncryptionEnabled",
    "wireguardInterfaceName",
    "wireguardInterfaceNameV6",
    "wireguardKeepAlive",
    "wireguardListeningPortV6",
    "wireguardMTUV6",
    "wireguardRoutingRulePriority",
    "wireguardThreadingEnabled",
    "workloadSourceSpoofing",
    "xdpEnabled",
    "xdpRefreshInterval",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> FelixConfigurationSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn calico_fields_are_refused_by_name_and_others_are_unknown() {
        let mut fc = FelixConfiguration::new("default");
        fc.spec = spec(serde_json::json!({
            "wireguardEnabled": false,
            "ipipMTU": 1400,
            "bpfEnabled": true,
            "wireguardMtu": 1400,
        }));
        let errs = fc.validate().unwrap_err().to_string();
        assert!(
            errs.contains(&format!(
                "felixconfiguration default: spec.ipipMTU {NOT_SUPPORTED}"
            )),
            "{errs}"
        );
        assert!(
            errs.contains(&format!("spec.bpfEnabled {NOT_SUPPORTED}")),
            "{errs}"
        );
        assert!(
            errs.contains(
                "spec.wireguardMtu is not a FelixConfiguration field (did you mean wireguardMTU?)"
            ),
            "{errs}"
        );
        assert_eq!(errs.lines().count(), 3, "{errs}");
    }

    #[test]
    fn names_ports_mtus_and_v6_are_checked() {
        let mut fc = FelixConfiguration::new("mine");
        fc.spec = spec(serde_json::json!({
            "wireguardEnabledV6": true,
            "wireguardListeningPort": 70000,
            "wireguardMTU": 576,
        }));
        let errs = fc.validate().unwrap_err().to_string();
        for want in [
            "metadata.name must be \"default\"",
            "spec.wireguardEnabledV6 is not supported",
            "spec.wireguardListeningPort 70000 is out of range",
            "spec.wireguardMTU 576 is out of range",
        ] {
            assert!(errs.contains(want), "{want} not in {errs}");
        }
        let mut ok = FelixConfiguration::new("node.n1");
        ok.spec = spec(serde_json::json!({"wireguardEnabled": true, "wireguardMTU": 0}));
        ok.validate().unwrap();
        assert_eq!(ok.spec.wireguard_mtu(), None);
        assert_eq!(ok.spec.wireguard_listening_port(), 51820);
    }

    #[test]
    fn a_node_object_overrides_the_default_field_by_field() {
        let global =
            spec(serde_json::json!({"wireguardEnabled": true, "wireguardListeningPort": 5000}));
        let node = spec(serde_json::json!({"wireguardListeningPort": 6000}));
        let m = FelixConfigurationSpec::merged(Some(&global), Some(&node));
        assert!(m.wireguard_enabled());
        assert_eq!(m.wireguard_listening_port(), 6000);
        let off = spec(serde_json::json!({"wireguardEnabled": false}));
        assert!(!FelixConfigurationSpec::merged(Some(&global), Some(&off)).wireguard_enabled());
        assert!(!FelixConfigurationSpec::merged(None, None).wireguard_enabled());
    }

    #[test]
    fn a_spec_round_trips_as_written() {
        let json = serde_json::json!({"wireguardEnabled": true, "wireguardMTU": 1400});
        let s = spec(json.clone());
        assert_eq!(serde_json::to_value(&s).unwrap(), json);
    }
}
