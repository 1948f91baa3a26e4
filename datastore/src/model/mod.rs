//! Resource types in the `projectcalico.org/v3` shape.
//!
//! Every resource reads and prints as
//!
//! ```yaml
//! apiVersion: projectcalico.org/v3
//! kind: IPPool
//! metadata: {name: ..., labels: ..., resourceVersion: ...}
//! spec: {...}
//! ```
//!
//! so existing Calico manifests apply unchanged. Unknown fields are errors,
//! never silently dropped. Fields the operator did not write stay `None` (a
//! round trip gives back what was written); accessor methods such as
//! [`IPPoolSpec::block_size`] give the effective values with defaults.
//!
//! * [`Resource`] is the kind-dispatching envelope; [`Kind`] is implemented
//!   by each resource type for typed code ([`crate::client::Client`]).
//! * [`manifest`] reads YAML/JSON manifests with line/column errors and
//!   prints them back.
//! * Each type has `validate()`; [`validate_all`] adds cross-object checks.

pub mod bfd;
pub mod bgpconfig;
pub mod bgpfilter;
pub mod bgppeer;
mod envelope;
pub mod felixconfig;
pub mod ipam;
pub mod ipamconfig;
pub mod ippool;
pub mod manifest;
pub mod meta;
pub mod node;
pub mod validate;
pub mod workload;

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use bfd::{BFDSpec, BfdTimers};
pub use bgpconfig::{
    BGPConfiguration, BGPConfigurationSpec, BindMode, CidrEntry, Community, CommunityValue,
    DEFAULT_AS_NUMBER, DEFAULT_BGP_PORT, MultipathSpec, PrefixAdvertisement, parse_community,
};
pub use bgpfilter::{
    BGPFilter, BGPFilterRule, BGPFilterSpec, FilterAction, FilterSource, MatchOperator,
    PrefixLength,
};
pub use bgppeer::{BGPPeer, BGPPeerSpec, NextHopMode, SourceAddress, parse_peer_ip};
pub use felixconfig::{
    DEFAULT_WIREGUARD_PORT, FelixConfiguration, FelixConfigurationSpec, WIREGUARD_OVERHEAD,
};
pub use ipamconfig::{IPAMConfiguration, IPAMConfigurationSpec, IPReservation, IPReservationSpec};
pub use ippool::{
    AllowedUse, AssignmentMode, EncapMode, IPPool, IPPoolSpec, networks_overlap,
    overlapping_networks, pool_overlap_error,
};
pub use manifest::{
    ManifestError, ManifestProblem, list_to_json, list_to_yaml, parse_manifests,
    parse_manifests_unvalidated, to_json, to_yaml,
};
pub use meta::{API_VERSION, AsNumber, ObjectMeta, SecretKeyRef, SecretSource, parse_go_duration};
pub use node::{Node, NodeAddress, NodeBGPSpec, NodeSpec, OrchRef};
pub use validate::{ValidationError, ValidationErrors, parse_cidr_or_ip};
pub use workload::{EndpointPort, IpNat, Protocol, WorkloadEndpoint, WorkloadEndpointSpec};

/// Identifies a resource kind at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KindId {
    IPPool,
    BGPConfiguration,
    BGPPeer,
    Node,
    IPAMConfiguration,
    IPReservation,
    WorkloadEndpoint,
    FelixConfiguration,
    BGPFilter,
}

impl KindId {
    /// Every kind, in a stable order (the order `manxctl` applies a mixed
    /// manifest in is the caller's business).
    pub const ALL: [KindId; 9] = [
        KindId::IPPool,
        KindId::BGPConfiguration,
        KindId::BGPPeer,
        KindId::Node,
        KindId::IPAMConfiguration,
        KindId::IPReservation,
        KindId::WorkloadEndpoint,
        KindId::FelixConfiguration,
        KindId::BGPFilter,
    ];

    /// The `kind:` string, e.g. `IPPool`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KindId::IPPool => "IPPool",
            KindId::BGPConfiguration => "BGPConfiguration",
            KindId::BGPPeer => "BGPPeer",
            KindId::Node => "Node",
            KindId::IPAMConfiguration => "IPAMConfiguration",
            KindId::IPReservation => "IPReservation",
            KindId::WorkloadEndpoint => "WorkloadEndpoint",
            KindId::FelixConfiguration => "FelixConfiguration",
            KindId::BGPFilter => "BGPFilter",
        }
    }

    /// Lower-case plural, used in datastore keys: `ippools`.
    pub const fn plural(self) -> &'static str {
        match self {
            KindId::IPPool => "ippools",
            KindId::BGPConfiguration => "bgpconfigurations",
            KindId::BGPPeer => "bgppeers",
            KindId::Node => "nodes",
            KindId::IPAMConfiguration => "ipamconfigurations",
            KindId::IPReservation => "ipreservations",
            KindId::WorkloadEndpoint => "workloadendpoints",
            KindId::FelixConfiguration => "felixconfigurations",
            KindId::BGPFilter => "bgpfilters",
        }
    }

    /// Lower-case singular, used in messages: `ippool pool1: ...`.
    pub const fn lower(self) -> &'static str {
        match self {
            KindId::IPPool => "ippool",
            KindId::BGPConfiguration => "bgpconfiguration",
            KindId::BGPPeer => "bgppeer",
            KindId::Node => "node",
            KindId::IPAMConfiguration => "ipamconfiguration",
            KindId::IPReservation => "ipreservation",
            KindId::WorkloadEndpoint => "workloadendpoint",
            KindId::FelixConfiguration => "felixconfiguration",
            KindId::BGPFilter => "bgpfilter",
        }
    }

    /// The names calicoctl accepts on the command line for this kind.
    pub const fn names(self) -> &'static [&'static str] {
        match self {
            KindId::IPPool => &["ippool", "ippools", "pool", "pools"],
            KindId::BGPConfiguration => &[
                "bgpconfiguration",
                "bgpconfigurations",
                "bgpconfig",
                "bgpconfigs",
            ],
            KindId::BGPPeer => &["bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"],
            KindId::Node => &["node", "nodes", "no", "nos"],
            KindId::IPAMConfiguration => &[
                "ipamconfiguration",
                "ipamconfigurations",
                "ipamconfig",
                "ipamconfigs",
            ],
            KindId::IPReservation => &["ipreservation", "ipreservations"],
            KindId::WorkloadEndpoint => &["workloadendpoint", "workloadendpoints", "wep", "weps"],
            KindId::FelixConfiguration => &[
                "felixconfiguration",
                "felixconfigurations",
                "felixconfig",
                "felixconfigs",
            ],
            KindId::BGPFilter => &["bgpfilter", "bgpfilters"],
        }
    }

    /// Only `WorkloadEndpoint` lives in a namespace.
    pub const fn namespaced(self) -> bool {
        matches!(self, KindId::WorkloadEndpoint)
    }

    /// Parse a `kind:` string exactly (`IPPool`).
    pub fn from_kind_str(kind: &str) -> Option<KindId> {
        KindId::ALL.into_iter().find(|k| k.as_str() == kind)
    }
}

impl fmt::Display for KindId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resolve a kind name as calicoctl accepts it (`ippool`, `pools`, `bgpp`,
/// `wep`, `IPPool`, ...), case-insensitively.
pub fn kind_from_name(name: &str) -> Option<KindId> {
    let lower = name.trim().to_ascii_lowercase();
    // `ippool.projectcalico.org` is accepted as kubectl does.
    let lower = lower
        .strip_suffix(".projectcalico.org")
        .unwrap_or(&lower)
        .to_string();
    KindId::ALL
        .into_iter()
        .find(|k| k.names().contains(&lower.as_str()))
}

/// Implemented by every resource type, for typed generic code.
pub trait Kind:
    Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The `kind:` string.
    const KIND: &'static str;
    /// Lower-case plural used in datastore keys.
    const PLURAL: &'static str;
    /// Run-time id.
    const ID: KindId;
    /// Whether objects live in a namespace.
    const NAMESPACED: bool = Self::ID.namespaced();

    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    /// Check this object on its own.
    fn validate(&self) -> Result<(), ValidationErrors>;
    fn into_resource(self) -> Resource;
    /// The typed object, or `None` if the resource is of another kind.
    fn from_resource(resource: Resource) -> Option<Self>;

    fn name(&self) -> &str {
        &self.metadata().name
    }
}

/// Any resource: the kind-dispatching envelope manifests decode into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    IPPool(IPPool),
    BGPConfiguration(BGPConfiguration),
    BGPPeer(BGPPeer),
    Node(Node),
    IPAMConfiguration(IPAMConfiguration),
    IPReservation(IPReservation),
    WorkloadEndpoint(WorkloadEndpoint),
    FelixConfiguration(FelixConfiguration),
    BGPFilter(BGPFilter),
}

/// Calls `$body` with `$x` bound to the inner typed value of a `Resource`.
macro_rules! with_resource {
    ($r:expr, $x:ident => $body:expr) => {
        match $r {
            Resource::IPPool($x) => $body,
            Resource::BGPConfiguration($x) => $body,
            Resource::BGPPeer($x) => $body,
            Resource::Node($x) => $body,
            Resource::IPAMConfiguration($x) => $body,
            Resource::IPReservation($x) => $body,
            Resource::WorkloadEndpoint($x) => $body,
            Resource::FelixConfiguration($x) => $body,
            Resource::BGPFilter($x) => $body,
        }
    };
}
pub(crate) use with_resource;

impl Resource {
    pub fn kind(&self) -> KindId {
        match self {
            Resource::IPPool(_) => KindId::IPPool,
            Resource::BGPConfiguration(_) => KindId::BGPConfiguration,
            Resource::BGPPeer(_) => KindId::BGPPeer,
            Resource::Node(_) => KindId::Node,
            Resource::IPAMConfiguration(_) => KindId::IPAMConfiguration,
            Resource::IPReservation(_) => KindId::IPReservation,
            Resource::WorkloadEndpoint(_) => KindId::WorkloadEndpoint,
            Resource::FelixConfiguration(_) => KindId::FelixConfiguration,
            Resource::BGPFilter(_) => KindId::BGPFilter,
        }
    }
    pub fn metadata(&self) -> &ObjectMeta {
        with_resource!(self, x => &x.metadata)
    }
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        with_resource!(self, x => &mut x.metadata)
    }
    pub fn name(&self) -> &str {
        &self.metadata().name
    }
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }
    /// Check this object on its own.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        with_resource!(self, x => Kind::validate(x))
    }
}

impl fmt::Display for Resource {
    /// `ippool pool1` / `workloadendpoint ns/name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace() {
            Some(ns) => write!(f, "{} {}/{}", self.kind().lower(), ns, self.name()),
            None => write!(f, "{} {}", self.kind().lower(), self.name()),
        }
    }
}

macro_rules! impl_kind {
    ($ty:ident) => {
        impl Kind for $ty {
            const KIND: &'static str = KindId::$ty.as_str();
            const PLURAL: &'static str = KindId::$ty.plural();
            const ID: KindId = KindId::$ty;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn validate(&self) -> Result<(), ValidationErrors> {
                let mut errors = match $ty::validate(self) {
                    Ok(()) => Vec::new(),
                    Err(e) => e.0,
                };
                let object = validate::object_name(KindId::$ty.lower(), &self.metadata.name);
                errors.extend(validate::metadata_errors(
                    &object,
                    &self.metadata.labels,
                    &self.metadata.annotations,
                ));
                if !Self::NAMESPACED && self.metadata.namespace.is_some() {
                    errors.push(ValidationError {
                        object,
                        field: "metadata.namespace".to_string(),
                        message: format!("must not be set: {} is not namespaced", Self::KIND),
                    });
                }
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(ValidationErrors(errors))
                }
            }
            fn into_resource(self) -> Resource {
                Resource::$ty(self)
            }
            fn from_resource(resource: Resource) -> Option<Self> {
                match resource {
                    Resource::$ty(x) => Some(x),
                    _ => None,
                }
            }
        }

        impl From<$ty> for Resource {
            fn from(x: $ty) -> Resource {
                Resource::$ty(x)
            }
        }
    };
}

impl_kind!(IPPool);
impl_kind!(BGPConfiguration);
impl_kind!(BGPPeer);
impl_kind!(Node);
impl_kind!(IPAMConfiguration);
impl_kind!(IPReservation);
impl_kind!(WorkloadEndpoint);
impl_kind!(FelixConfiguration);
impl_kind!(BGPFilter);

/// Validate a set of objects together: each on its own, plus no two objects
/// of one kind with one name, and no overlapping pools.
pub fn validate_all(resources: &[Resource]) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut pools: Vec<&IPPool> = Vec::new();
    for r in resources {
        if let Err(e) = r.validate() {
            errors.extend(e.0);
        }
        if !seen.insert((
            r.kind(),
            r.namespace().map(str::to_string),
            r.name().to_string(),
        )) {
            errors.push(ValidationError {
                object: r.to_string(),
                field: "metadata.name".to_string(),
                message: "appears twice in this set: give each object its own name".to_string(),
            });
        }
        if let Resource::IPPool(p) = r {
            pools.push(p);
        }
    }
    // O(N log N): a file of thousands of pools is checked in milliseconds.
    let cidrs: Vec<_> = pools.iter().map(|p| p.spec.cidr).collect();
    for (a, b) in overlapping_networks(&cidrs) {
        // Named on the one later in the file, as the file reads.
        let (earlier, later) = (pools[a.min(b)], pools[a.max(b)]);
        errors.push(pool_overlap_error(later, earlier));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}
