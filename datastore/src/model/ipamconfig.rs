//! `IPAMConfiguration` (the single `default` object of IPAM settings) and
//! `IPReservation` (addresses IPAM must never hand out).

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::model::meta::ObjectMeta;
use crate::model::validate::{Checker, ValidationErrors, parse_cidr_or_ip};

/// IPAM settings. Only the object named `default` is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IPAMConfiguration {
    pub metadata: ObjectMeta,
    pub spec: IPAMConfigurationSpec,
}

/// `IPAMConfiguration.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMConfigurationSpec {
    /// Never borrow addresses from another node's block (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_affinity: Option<bool>,
    /// Most blocks one host may claim; 0 = unlimited (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocks_per_host: Option<u32>,
    /// Claim new blocks when a host's are full (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_allocate_blocks: Option<bool>,
}

impl IPAMConfigurationSpec {
    pub fn strict_affinity(&self) -> bool {
        self.strict_affinity.unwrap_or(false)
    }
    /// `None` when unlimited.
    pub fn max_blocks_per_host(&self) -> Option<u32> {
        self.max_blocks_per_host.filter(|n| *n > 0)
    }
    pub fn auto_allocate_blocks(&self) -> bool {
        self.auto_allocate_blocks.unwrap_or(true)
    }
}

impl IPAMConfiguration {
    /// The name of the one IPAMConfiguration IPAM reads.
    pub const DEFAULT_NAME: &'static str = "default";

    pub fn new(spec: IPAMConfigurationSpec) -> Self {
        IPAMConfiguration {
            metadata: ObjectMeta::named(Self::DEFAULT_NAME),
            spec,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new("ipamconfiguration", &self.metadata.name);
        if self.metadata.name != Self::DEFAULT_NAME {
            c.error(
                "metadata.name",
                format!(
                    "{:?} is not allowed: there is one IPAMConfiguration, named \"default\"",
                    self.metadata.name
                ),
            );
        }
        c.finish()
    }
}

/// Addresses IPAM must not assign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IPReservation {
    pub metadata: ObjectMeta,
    pub spec: IPReservationSpec,
}

/// `IPReservation.spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPReservationSpec {
    /// CIDRs or single IPs, kept as written.
    #[serde(default, rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<String>,
}

impl IPReservationSpec {
    /// The reserved ranges (single IPs as /32 or /128); invalid entries,
    /// rejected by validation, are skipped.
    pub fn reserved_networks(&self) -> Vec<IpNetwork> {
        self.reserved_cidrs
            .iter()
            .filter_map(|c| parse_cidr_or_ip(c).ok())
            .collect()
    }
}

impl IPReservation {
    pub fn new(name: impl Into<String>, cidrs: Vec<String>) -> Self {
        IPReservation {
            metadata: ObjectMeta::named(name),
            spec: IPReservationSpec {
                reserved_cidrs: cidrs,
            },
        }
    }

    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new("ipreservation", &self.metadata.name);
        c.name(&self.metadata.name);
        if self.spec.reserved_cidrs.is_empty() {
            c.error(
                "spec.reservedCIDRs",
                "is empty: list the CIDRs or IPs to reserve",
            );
        }
        for (i, cidr) in self.spec.reserved_cidrs.iter().enumerate() {
            c.cidr_str(&format!("spec.reservedCIDRs[{i}]"), cidr);
        }
        c.finish()
    }
}
