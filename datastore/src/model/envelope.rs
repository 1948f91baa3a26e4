//! Serde for the `apiVersion/kind/metadata/spec` envelope.
//!
//! Deserialization streams: once `kind` is known, `spec` is decoded straight
//! into its typed struct, so the YAML deserializer keeps exact line/column
//! and field paths in errors. Only if `spec` comes before `kind` is it
//! buffered (errors then carry the path but not the precise line).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::model::meta::{API_VERSION, ObjectMeta};
use crate::model::validate::closest;
use crate::model::{
    BGPConfiguration, BGPConfigurationSpec, BGPFilter, BGPFilterSpec, BGPPeer, BGPPeerSpec,
    FelixConfiguration, FelixConfigurationSpec, IPAMConfiguration, IPAMConfigurationSpec, IPPool,
    IPPoolSpec, IPReservation, IPReservationSpec, KindId, Node, NodeSpec, Resource,
    WorkloadEndpoint, WorkloadEndpointSpec, with_resource,
};

const TOP_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];

/// The typed spec of some kind.
enum AnySpec {
    IPPool(IPPoolSpec),
    BGPConfiguration(BGPConfigurationSpec),
    BGPPeer(BGPPeerSpec),
    Node(NodeSpec),
    IPAMConfiguration(IPAMConfigurationSpec),
    IPReservation(IPReservationSpec),
    WorkloadEndpoint(WorkloadEndpointSpec),
    FelixConfiguration(FelixConfigurationSpec),
    BGPFilter(BGPFilterSpec),
}

struct SpecSeed(KindId);

impl<'de> DeserializeSeed<'de> for SpecSeed {
    type Value = AnySpec;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<AnySpec, D::Error> {
        Ok(match self.0 {
            KindId::IPPool => AnySpec::IPPool(IPPoolSpec::deserialize(d)?),
            KindId::BGPConfiguration => {
                AnySpec::BGPConfiguration(BGPConfigurationSpec::deserialize(d)?)
            }
            KindId::BGPPeer => AnySpec::BGPPeer(BGPPeerSpec::deserialize(d)?),
            KindId::Node => AnySpec::Node(NodeSpec::deserialize(d)?),
            KindId::IPAMConfiguration => {
                AnySpec::IPAMConfiguration(IPAMConfigurationSpec::deserialize(d)?)
            }
            KindId::IPReservation => AnySpec::IPReservation(IPReservationSpec::deserialize(d)?),
            KindId::WorkloadEndpoint => {
                AnySpec::WorkloadEndpoint(WorkloadEndpointSpec::deserialize(d)?)
            }
            KindId::FelixConfiguration => {
                AnySpec::FelixConfiguration(FelixConfigurationSpec::deserialize(d)?)
            }
            KindId::BGPFilter => AnySpec::BGPFilter(BGPFilterSpec::deserialize(d)?),
        })
    }
}

/// Resolve `kind:`, with a hint for near misses (`IpPool`).
fn parse_kind<E: de::Error>(kind: &str) -> Result<KindId, E> {
    if let Some(k) = KindId::from_kind_str(kind) {
        return Ok(k);
    }
    let names: Vec<&str> = KindId::ALL.iter().map(|k| k.as_str()).collect();
    let hint = KindId::ALL
        .iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(kind))
        .map(|k| k.as_str())
        .or_else(|| closest(kind, &names));
    Err(match hint {
        Some(h) => E::custom(format!("unknown kind {kind:?} (did you mean {h}?)")),
        None => E::custom(format!(
            "unknown kind {kind:?}: expected one of {}",
            names.join(", ")
        )),
    })
}

struct ResourceVisitor;

impl<'de> Visitor<'de> for ResourceVisitor {
    type Value = Resource;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a resource with apiVersion, kind, metadata and spec")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Resource, A::Error> {
        let mut api_version: Option<String> = None;
        let mut kind: Option<KindId> = None;
        let mut metadata: Option<ObjectMeta> = None;
        let mut spec: Option<AnySpec> = None;
        let mut spec_buffered: Option<serde_json::Value> = None;
        let mut status: Option<serde_json::Value> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "apiVersion" => {
                    let v: String = map.next_value()?;
                    if v != API_VERSION {
                        return Err(de::Error::custom(format!(
                            "apiVersion {v:?} is not supported: use {API_VERSION}"
                        )));
                    }
                    api_version = Some(v);
                }
                "kind" => {
                    let v: String = map.next_value()?;
                    kind = Some(parse_kind(&v)?);
                }
                "metadata" => metadata = Some(map.next_value()?),
                "spec" => match kind {
                    Some(k) => spec = Some(map.next_value_seed(SpecSeed(k))?),
                    None => spec_buffered = Some(map.next_value()?),
                },
                "status" => status = Some(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, TOP_FIELDS)),
            }
        }
        if api_version.is_none() {
            return Err(de::Error::custom(format!(
                "missing field `apiVersion`: add apiVersion: {API_VERSION}"
            )));
        }
        let Some(kind) = kind else {
            return Err(de::Error::custom(
                "missing field `kind`: say which resource this is (IPPool, BGPPeer, ...)",
            ));
        };
        let metadata = metadata.ok_or_else(|| {
            de::Error::custom("missing field `metadata`: every resource needs metadata.name")
        })?;
        if status.is_some() && kind != KindId::Node {
            return Err(de::Error::unknown_field("status", TOP_FIELDS));
        }
        let spec = match spec {
            Some(s) => s,
            None => {
                // A missing spec is an empty one (defaults apply; required
                // fields are reported by the typed decoder).
                let value = spec_buffered.unwrap_or_else(|| serde_json::json!({}));
                SpecSeed(kind)
                    .deserialize(value)
                    .map_err(|e| de::Error::custom(format!("spec: {e}")))?
            }
        };
        Ok(match spec {
            AnySpec::IPPool(spec) => Resource::IPPool(IPPool { metadata, spec }),
            AnySpec::BGPConfiguration(spec) => {
                Resource::BGPConfiguration(BGPConfiguration { metadata, spec })
            }
            AnySpec::BGPPeer(spec) => Resource::BGPPeer(BGPPeer { metadata, spec }),
            AnySpec::Node(spec) => Resource::Node(Node {
                metadata,
                spec,
                status,
            }),
            AnySpec::IPAMConfiguration(spec) => {
                Resource::IPAMConfiguration(IPAMConfiguration { metadata, spec })
            }
            AnySpec::IPReservation(spec) => {
                Resource::IPReservation(IPReservation { metadata, spec })
            }
            AnySpec::WorkloadEndpoint(spec) => {
                Resource::WorkloadEndpoint(WorkloadEndpoint { metadata, spec })
            }
            AnySpec::FelixConfiguration(spec) => {
                Resource::FelixConfiguration(FelixConfiguration { metadata, spec })
            }
            AnySpec::BGPFilter(spec) => Resource::BGPFilter(BGPFilter { metadata, spec }),
        })
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Resource, D::Error> {
        d.deserialize_map(ResourceVisitor)
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        with_resource!(self, x => x.serialize(s))
    }
}

fn serialize_envelope<S: Serializer, T: Serialize>(
    s: S,
    kind: KindId,
    metadata: &ObjectMeta,
    spec: &T,
    status: Option<&serde_json::Value>,
) -> Result<S::Ok, S::Error> {
    let mut st = s.serialize_struct(kind.as_str(), 4 + usize::from(status.is_some()))?;
    st.serialize_field("apiVersion", API_VERSION)?;
    st.serialize_field("kind", kind.as_str())?;
    st.serialize_field("metadata", metadata)?;
    st.serialize_field("spec", spec)?;
    if let Some(status) = status {
        st.serialize_field("status", status)?;
    }
    st.end()
}

macro_rules! envelope_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_envelope(s, KindId::$ty, &self.metadata, &self.spec, None)
            }
        }
        envelope_serde!(@de $ty);
    };
    (@de $ty:ident) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                match Resource::deserialize(d)? {
                    Resource::$ty(x) => Ok(x),
                    other => Err(de::Error::custom(format!(
                        "expected kind {}, found {}",
                        KindId::$ty,
                        other.kind()
                    ))),
                }
            }
        }
    };
}

envelope_serde!(IPPool);
envelope_serde!(BGPConfiguration);
envelope_serde!(BGPPeer);
envelope_serde!(IPAMConfiguration);
envelope_serde!(IPReservation);
envelope_serde!(WorkloadEndpoint);
envelope_serde!(FelixConfiguration);
envelope_serde!(BGPFilter);
envelope_serde!(@de Node);

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_envelope(
            s,
            KindId::Node,
            &self.metadata,
            &self.spec,
            self.status.as_ref(),
        )
    }
}
