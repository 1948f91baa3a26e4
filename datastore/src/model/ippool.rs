//! `IPPool`: a range of pod addresses, cut into blocks that nodes claim.

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::model::meta::ObjectMeta;
use crate::model::validate::{Checker, ValidationError, ValidationErrors, object_name};

/// IPIP / VXLAN encapsulation mode of a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncapMode {
    /// Encapsulate all traffic to other nodes.
    Always,
    /// Encapsulate only to nodes in another subnet.
    CrossSubnet,
    /// Never encapsulate.
    #[default]
    Never,
}

impl std::fmt::Display for EncapMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
            EncapMode::Never => "Never",
        })
    }
}

/// What a pool's addresses may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AllowedUse {
    /// Pod (workload) addresses.
    Workload,
    /// Node tunnel addresses (IPIP `tunl0`, VXLAN).
    Tunnel,
}

/// Whether IPAM may pick this pool without being asked for it by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AssignmentMode {
    Automatic,
    Manual,
}

/// An IP pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IPPool {
    pub metadata: ObjectMeta,
    pub spec: IPPoolSpec,
}

/// `IPPool.spec`. Fields the operator omitted stay `None` so a round trip
/// gives back what was written; the accessors give effective values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {
    /// The pool's range.
    pub cidr: IpNetwork,
    /// Prefix length of the blocks (default 26 for IPv4, 122 for IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    /// Manx extension (not in Calico): Flannel's UDP backend, IPv4 packets in UDP
    /// port 8285 through the TUN device `udp.manx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(
        default,
        rename = "disableBGPExport",
        skip_serializing_if = "Option::is_none"
    )]
    pub disable_bgp_export: Option<bool>,
    /// Which nodes may take blocks from this pool (default `all()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    /// Default `[Workload, Tunnel]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_uses: Option<Vec<AllowedUse>>,
    /// Default `Automatic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
}

impl IPPoolSpec {
    /// A spec with only a CIDR; everything else default.
    pub fn new(cidr: IpNetwork) -> Self {
        IPPoolSpec {
            cidr,
            block_size: None,
            ipip_mode: None,
            vxlan_mode: None,
            udp_mode: None,
            nat_outgoing: None,
            disabled: None,
            disable_bgp_export: None,
            node_selector: None,
            allowed_uses: None,
            assignment_mode: None,
        }
    }

    /// Effective block prefix length: 26 (IPv4) / 122 (IPv6) unless set.
    pub fn block_size(&self) -> u8 {
        self.block_size
            .unwrap_or(if self.cidr.is_ipv4() { 26 } else { 122 })
    }
    pub fn ipip_mode(&self) -> EncapMode {
        self.ipip_mode.unwrap_or_default()
    }
    pub fn vxlan_mode(&self) -> EncapMode {
        self.vxlan_mode.unwrap_or_default()
    }
    pub fn udp_mode(&self) -> EncapMode {
        self.udp_mode.unwrap_or_default()
    }
    pub fn nat_outgoing(&self) -> bool {
        self.nat_outgoing.unwrap_or(false)
    }
    pub fn disabled(&self) -> bool {
        self.disabled.unwrap_or(false)
    }
    pub fn disable_bgp_export(&self) -> bool {
        self.disable_bgp_export.unwrap_or(false)
    }
    /// Effective node selector (`all()` unless set).
    pub fn node_selector(&self) -> &str {
        match self.node_selector.as_deref() {
            Some(s) if !s.trim().is_empty() => s,
            _ => "all()",
        }
    }
    /// May a node with these labels take blocks from this pool? An invalid
    /// selector (rejected by validation) matches nothing.
    pub fn selects_node(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        crate::selector::Selector::parse(self.node_selector()).is_ok_and(|s| s.matches(labels))
    }
    /// Effective allowed uses (`[Workload, Tunnel]` unless set).
    pub fn allowed_uses(&self) -> Vec<AllowedUse> {
        self.allowed_uses
            .clone()
            .unwrap_or_else(|| vec![AllowedUse::Workload, AllowedUse::Tunnel])
    }
    pub fn allows(&self, use_: AllowedUse) -> bool {
        self.allowed_uses().contains(&use_)
    }
    pub fn assignment_mode(&self) -> AssignmentMode {
        self.assignment_mode.unwrap_or(AssignmentMode::Automatic)
    }
}

impl IPPool {
    /// A pool named `name` over `cidr`, other fields default.
    pub fn new(name: impl Into<String>, cidr: IpNetwork) -> Self {
        IPPool {
            metadata: ObjectMeta::named(name),
            spec: IPPoolSpec::new(cidr),
        }
    }

    /// Check this pool on its own (not against other pools).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Checker::new("ippool", &self.metadata.name);
        c.name(&self.metadata.name);
        let spec = &self.spec;
        c.network("spec.cidr", &spec.cidr);
        let (family, range) = if spec.cidr.is_ipv4() {
            ("IPv4", 20..=32)
        } else {
            ("IPv6", 116..=128)
        };
        let bs = spec.block_size();
        if !range.contains(&bs) {
            c.error(
                "spec.blockSize",
                format!(
                    "{bs} is out of range {}..={} for {family}",
                    range.start(),
                    range.end()
                ),
            );
        } else if bs < spec.cidr.prefix() {
            c.error(
                "spec.blockSize",
                format!(
                    "{bs} makes blocks larger than the pool {}: use a blockSize of at least {} or a larger pool",
                    spec.cidr,
                    spec.cidr.prefix()
                ),
            );
        }
        let modes = [
            ("ipipMode", spec.ipip_mode()),
            ("vxlanMode", spec.vxlan_mode()),
            ("udpMode", spec.udp_mode()),
        ];
        let set: Vec<String> = modes
            .iter()
            .filter(|(_, m)| *m != EncapMode::Never)
            .map(|(f, m)| format!("{f} ({m:?})"))
            .collect();
        if set.len() == 2 {
            c.error(
                "spec",
                format!(
                    "sets both {} and {}: a pool uses one encapsulation; set one of them to Never",
                    set[0], set[1]
                ),
            );
        } else if set.len() > 2 {
            c.error(
                "spec",
                format!(
                    "sets {}: a pool uses one encapsulation; set all but one of them to Never",
                    set.join(", ")
                ),
            );
        }
        if spec.cidr.is_ipv6() && spec.ipip_mode() != EncapMode::Never {
            c.error(
                "spec.ipipMode",
                "must be Never for an IPv6 pool: IPIP carries IPv4 only; use vxlanMode",
            );
        }
        if spec.cidr.is_ipv6() && spec.udp_mode() != EncapMode::Never {
            c.error(
                "spec.udpMode",
                "must be Never for an IPv6 pool: the UDP backend carries IPv4 only; use vxlanMode",
            );
        }
        if let Some(sel) = &spec.node_selector {
            c.selector("spec.nodeSelector", sel);
        }
        if let Some(uses) = &spec.allowed_uses
            && uses.is_empty()
        {
            c.error(
                "spec.allowedUses",
                "is empty: list Workload and/or Tunnel, or omit it for both",
            );
        }
        c.finish()
    }

    /// What changing the stored pool `self` into `new` would change that
    /// must not change. As libcalico-go: blocks are cut from cidr and
    /// blockSize, so changing either would orphan allocations.
    pub fn immutable_field_errors(&self, new: &IPPool) -> Vec<ValidationError> {
        let object = object_name("ippool", &new.metadata.name);
        let mut errors = Vec::new();
        if self.spec.cidr != new.spec.cidr {
            errors.push(ValidationError {
                object: object.clone(),
                field: "spec.cidr".into(),
                message: format!(
                    "cannot change from {} to {}: create a new pool, then disable and delete this one",
                    self.spec.cidr, new.spec.cidr
                ),
            });
        }
        if self.spec.block_size() != new.spec.block_size() {
            errors.push(ValidationError {
                object,
                field: "spec.blockSize".into(),
                message: format!(
                    "cannot change from {} to {}: create a new pool instead",
                    self.spec.block_size(),
                    new.spec.block_size()
                ),
            });
        }
        errors
    }

    /// Check this pool against pools that already exist (its own previous
    /// version, same name, is skipped): CIDRs must not overlap.
    pub fn validate_pool_against(&self, existing: &[IPPool]) -> Result<(), ValidationErrors> {
        let errors: Vec<_> = existing
            .iter()
            .filter(|other| {
                other.metadata.name != self.metadata.name
                    && networks_overlap(&self.spec.cidr, &other.spec.cidr)
            })
            .map(|other| pool_overlap_error(self, other))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// The error for `pool`, whose CIDR overlaps `other`'s.
pub fn pool_overlap_error(pool: &IPPool, other: &IPPool) -> ValidationError {
    ValidationError {
        object: object_name("ippool", &pool.metadata.name),
        field: "spec.cidr".to_string(),
        message: format!(
            "{} overlaps {} ({}): pools must not overlap; pick a disjoint CIDR",
            pool.spec.cidr,
            object_name("ippool", &other.metadata.name),
            other.spec.cidr
        ),
    }
}

/// Every pool that overlaps another among `cidrs`, in O(N log N): pairs
/// (index, index of one network it overlaps), each overlapping network
/// reported once (the later in address order). CIDRs are nested or
/// disjoint, so after sorting by first address (wider network first) a
/// network overlaps an earlier one exactly when it starts at or before the
/// farthest end seen so far in its family.
pub fn overlapping_networks(cidrs: &[IpNetwork]) -> Vec<(usize, usize)> {
    fn range(n: &IpNetwork) -> (bool, u128, u128) {
        match n {
            IpNetwork::V4(v4) => (
                false,
                u128::from(u32::from(v4.network())),
                u128::from(u32::from(v4.broadcast())),
            ),
            IpNetwork::V6(v6) => {
                let start = u128::from(v6.network());
                let host_bits = 128 - u32::from(v6.prefix());
                let span = if host_bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << host_bits) - 1
                };
                (true, start, start | span)
            }
        }
    }
    let mut order: Vec<(bool, u128, u128, usize)> = cidrs
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (v6, start, end) = range(n);
            (v6, start, end, i)
        })
        .collect();
    // Same start: the wider (larger end) first.
    order.sort_unstable_by(|a, b| {
        (a.0, a.1, std::cmp::Reverse(a.2)).cmp(&(b.0, b.1, std::cmp::Reverse(b.2)))
    });
    let mut pairs = Vec::new();
    let mut reach: Option<(bool, u128, usize)> = None;
    for (v6, start, end, i) in order {
        match reach {
            Some((family, far, j)) if family == v6 && start <= far => {
                pairs.push((i, j));
                if end > far {
                    reach = Some((v6, end, i));
                }
            }
            _ => reach = Some((v6, end, i)),
        }
    }
    pairs
}

/// Do two networks share any address?
pub fn networks_overlap(a: &IpNetwork, b: &IpNetwork) -> bool {
    match (a, b) {
        (IpNetwork::V4(_), IpNetwork::V4(_)) | (IpNetwork::V6(_), IpNetwork::V6(_)) => {
            a.contains(b.network()) || b.contains(a.network())
        }
        _ => false,
    }
}
