//! Typed CRUD of resources over any [`Datastore`].
//!
//! # Key layout
//!
//! ```text
//! /manx/v3/projectcalico.org/<plural>/<name>                  cluster-scoped kinds
//! /manx/v3/projectcalico.org/workloadendpoints/<ns>/<name>    namespaced kinds
//! /manx/ipam/v2/...                                           IPAM internals (manx-ipam)
//! ```
//!
//! `<plural>` is [`KindId::plural`]: `ippools`, `bgpconfigurations`,
//! `bgppeers`, `nodes`, `ipamconfigurations`, `ipreservations`, `felixconfigurations`, `bgpfilters`,
//! `workloadendpoints`.
//!
//! Values are the resource as compact JSON without `resourceVersion`; on
//! read, `metadata.resourceVersion` is the key's `mod_revision` (the CAS token
//! of [`Client::update`]). One object is always one write: the store is
//! never half-written.
//!
//! Semantics follow calicoctl: `create` fails if the object exists, `update`
//! (calicoctl `replace`) needs the `resourceVersion` you read, `apply`
//! creates or overwrites (retrying CAS conflicts a few times).
//!
//! Every write validates first. IPPools are also checked against the other
//! pools in a listing taken just before the write (overlap), and `cidr` /
//! `blockSize` cannot change on update. That check and the write are two
//! steps, so two *concurrent* creates of overlapping pools can both pass, as
//! in Calico; IPAM never hands out an address twice regardless.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};

use crate::model::{
    IPPool, Kind, KindId, Resource, ValidationErrors, meta::rfc3339_now, with_resource,
};
use crate::store::{Datastore, KeyValue, Revision, StoreError, WatchEvent};

/// Root of all resource keys.
pub const RESOURCE_PREFIX: &str = "/manx/v3/projectcalico.org/";
/// Root of IPAM keys (owned by `manx-ipam`).
pub const IPAM_PREFIX: &str = "/manx/ipam/v2/";
/// How many times `apply`/`delete` retry a CAS conflict before giving up.
pub const MAX_CAS_RETRIES: usize = 10;

/// The key prefix of a kind (`/manx/v3/projectcalico.org/ippools/`).
pub fn kind_prefix(kind: KindId) -> String {
    format!("{RESOURCE_PREFIX}{}/", kind.plural())
}

/// The key of one object.
pub fn resource_key(kind: KindId, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if kind.namespaced() => format!("{}{ns}/{name}", kind_prefix(kind)),
        _ => format!("{}{name}", kind_prefix(kind)),
    }
}

/// Split a resource key back into kind, namespace and name.
pub fn parse_key(key: &str) -> Option<(KindId, Option<String>, String)> {
    let rest = key.strip_prefix(RESOURCE_PREFIX)?;
    let (plural, rest) = rest.split_once('/')?;
    let kind = KindId::ALL.into_iter().find(|k| k.plural() == plural)?;
    if kind.namespaced() {
        let (ns, name) = rest.split_once('/')?;
        Some((kind, Some(ns.to_string()), name.to_string()))
    } else {
        Some((kind, None, rest.to_string()))
    }
}

/// Errors of the client. Each names the object and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("{object} already exists: use apply (or replace) to change it")]
    AlreadyExists { object: String },
    #[error("{object} does not exist: create it first")]
    NotFound { object: String },
    #[error(
        "{object} was modified since it was read (resourceVersion {expected}, now {found}): get it again, re-apply your change and retry"
    )]
    Conflict {
        object: String,
        expected: Revision,
        found: Revision,
    },
    #[error(
        "{object}: metadata.resourceVersion is required to replace an object: get it first (manxctl get -o yaml), edit that, or use apply"
    )]
    MissingResourceVersion { object: String },
    #[error("{object}: metadata.resourceVersion {value:?} is not a revision number")]
    BadResourceVersion { object: String, value: String },
    #[error("{object}: a {kind} needs metadata.namespace")]
    MissingNamespace { object: String, kind: KindId },
    #[error("{kind} name {name:?} is not valid: {why}")]
    BadName {
        kind: KindId,
        name: String,
        why: String,
    },
    #[error(
        "cannot decode {key}: {message}; the stored object is corrupt or from an incompatible version"
    )]
    Decode { key: String, message: String },
    #[error("{object}: gave up after {attempts} conflicting concurrent writes; retry later")]
    TooManyConflicts { object: String, attempts: usize },
}

/// A change seen by [`Client::watch`].
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceEvent<K> {
    /// Created or updated (with `resourceVersion` set).
    Put(K),
    /// Deleted at `revision`.
    Deleted {
        namespace: Option<String>,
        name: String,
        revision: Revision,
    },
    /// The full current set (after compaction): replace what you had.
    Resync { items: Vec<K>, revision: Revision },
}

/// A typed watch stream.
pub type ResourceWatch<K> =
    Pin<Box<dyn Stream<Item = Result<ResourceEvent<K>, ClientError>> + Send>>;

/// Typed access to resources in a [`Datastore`].
#[derive(Debug, Clone)]
pub struct Client {
    store: Arc<dyn Datastore>,
}

fn object_label(kind: KindId, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", kind.lower()),
        None => format!("{} {name}", kind.lower()),
    }
}

fn label_of<K: Kind>(obj: &K) -> String {
    object_label(K::ID, obj.metadata().namespace.as_deref(), obj.name())
}

/// A fresh unique id, UUID-v4 shaped. Entropy: std's per-process random
/// SipHash keys, the clock and a counter.
fn new_uid() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut words = [0u64; 2];
    for (i, w) in words.iter_mut().enumerate() {
        let mut h = state.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_usize(i);
        h.write_u32(std::process::id());
        *w = h.finish();
    }
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&words[0].to_be_bytes());
    b[8..].copy_from_slice(&words[1].to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Decode a stored value, setting `resourceVersion` from the key.
fn decode<K: Kind>(kv: &KeyValue) -> Result<K, ClientError> {
    let mut obj: K = serde_json::from_slice(&kv.value).map_err(|e| ClientError::Decode {
        key: kv.key.clone(),
        message: e.to_string(),
    })?;
    obj.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(obj)
}

/// Encode for storage (without `resourceVersion`).
fn encode<K: Kind>(obj: &K) -> Vec<u8> {
    let mut copy = obj.clone();
    copy.metadata_mut().resource_version = None;
    serde_json::to_vec(&copy).expect("resources always serialize to JSON")
}

fn check_name(kind: KindId, name: &str) -> Result<(), ClientError> {
    if name.is_empty() || name.contains('/') {
        return Err(ClientError::BadName {
            kind,
            name: name.to_string(),
            why: "names are non-empty and contain no '/'".to_string(),
        });
    }
    Ok(())
}

/// The key of a typed object (namespace checked for namespaced kinds).
fn key_of<K: Kind>(obj: &K) -> Result<String, ClientError> {
    let ns = obj
        .metadata()
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty());
    check_name(K::ID, obj.name())?;
    if K::NAMESPACED {
        let ns = ns.ok_or_else(|| ClientError::MissingNamespace {
            object: label_of(obj),
            kind: K::ID,
        })?;
        check_name(K::ID, ns)?;
        Ok(resource_key(K::ID, Some(ns), obj.name()))
    } else {
        Ok(resource_key(K::ID, None, obj.name()))
    }
}

fn parse_resource_version(object: &str, rv: &str) -> Result<Revision, ClientError> {
    rv.trim()
        .parse::<Revision>()
        .map_err(|_| ClientError::BadResourceVersion {
            object: object.to_string(),
            value: rv.to_string(),
        })
}

impl Client {
    pub fn new(store: Arc<dyn Datastore>) -> Self {
        Client { store }
    }

    /// The underlying store (IPAM keeps its own keys in it).
    pub fn store(&self) -> &Arc<dyn Datastore> {
        &self.store
    }

    async fn get_key<K: Kind>(&self, key: &str) -> Result<Option<(K, KeyValue)>, ClientError> {
        match self.store.get(key).await? {
            Some(kv) => Ok(Some((decode::<K>(&kv)?, kv))),
            None => Ok(None),
        }
    }

    /// Get a cluster-scoped object by name.
    pub async fn get<K: Kind>(&self, name: &str) -> Result<Option<K>, ClientError> {
        check_name(K::ID, name)?;
        let key = resource_key(K::ID, None, name);
        Ok(self.get_key::<K>(&key).await?.map(|(k, _)| k))
    }

    /// Get a namespaced object.
    pub async fn get_namespaced<K: Kind>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, ClientError> {
        check_name(K::ID, namespace)?;
        check_name(K::ID, name)?;
        let key = resource_key(K::ID, Some(namespace), name);
        Ok(self.get_key::<K>(&key).await?.map(|(k, _)| k))
    }

    async fn list_prefix<K: Kind>(&self, prefix: &str) -> Result<(Vec<K>, Revision), ClientError> {
        let listing = self.store.list(prefix).await?;
        let items = listing
            .items
            .iter()
            .map(decode::<K>)
            .collect::<Result<Vec<K>, _>>()?;
        Ok((items, listing.revision))
    }

    /// List every object of a kind (all namespaces), with the revision the
    /// listing reflects (start a [`Client::watch`] from it).
    pub async fn list<K: Kind>(&self) -> Result<(Vec<K>, Revision), ClientError> {
        self.list_prefix(&kind_prefix(K::ID)).await
    }

    /// List the objects of a namespaced kind in one namespace.
    pub async fn list_namespaced<K: Kind>(
        &self,
        namespace: &str,
    ) -> Result<(Vec<K>, Revision), ClientError> {
        check_name(K::ID, namespace)?;
        self.list_prefix(&format!("{}{namespace}/", kind_prefix(K::ID)))
            .await
    }

    /// Validation done before every write, including checks against other
    /// objects (pool overlap).
    async fn validate_for_write<K: Kind>(
        &self,
        obj: &K,
        previous: Option<&K>,
    ) -> Result<(), ClientError> {
        obj.validate().map_err(ClientError::Invalid)?;
        if let Some(pool) = (obj as &dyn std::any::Any).downcast_ref::<IPPool>() {
            let previous =
                previous.and_then(|p| (p as &dyn std::any::Any).downcast_ref::<IPPool>());
            let mut errors = Vec::new();
            if let Some(old) = previous {
                errors.extend(old.immutable_field_errors(pool));
            }
            let (existing, _) = self.list::<IPPool>().await?;
            if let Err(e) = pool.validate_pool_against(&existing) {
                errors.extend(e.0);
            }
            if !errors.is_empty() {
                return Err(ClientError::Invalid(ValidationErrors(errors)));
            }
        }
        Ok(())
    }

    /// Create an object; fails if it exists. Sets `uid` and
    /// `creationTimestamp`; ignores any `resourceVersion` given. Returns the
    /// stored object with its `resourceVersion`.
    pub async fn create<K: Kind>(&self, obj: &K) -> Result<K, ClientError> {
        let key = key_of(obj)?;
        self.validate_for_write(obj, None).await?;
        let mut new = obj.clone();
        let meta = new.metadata_mut();
        meta.uid = Some(new_uid());
        meta.creation_timestamp = Some(rfc3339_now());
        meta.resource_version = None;
        match self.store.create(&key, encode(&new)).await {
            Ok(rev) => {
                new.metadata_mut().resource_version = Some(rev.to_string());
                tracing::debug!(key, rev, "created");
                Ok(new)
            }
            Err(StoreError::AlreadyExists { .. }) => Err(ClientError::AlreadyExists {
                object: label_of(obj),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Replace an object, compare-and-swap on its `metadata.resourceVersion`
    /// (calicoctl `replace`). `uid` and `creationTimestamp` are kept from the
    /// stored object.
    pub async fn update<K: Kind>(&self, obj: &K) -> Result<K, ClientError> {
        let key = key_of(obj)?;
        let label = label_of(obj);
        let expected = match obj.metadata().resource_version.as_deref() {
            Some(rv) if !rv.trim().is_empty() => parse_resource_version(&label, rv)?,
            _ => return Err(ClientError::MissingResourceVersion { object: label }),
        };
        let Some((current, kv)) = self.get_key::<K>(&key).await? else {
            return Err(ClientError::NotFound { object: label });
        };
        if kv.mod_revision != expected {
            return Err(ClientError::Conflict {
                object: label,
                expected,
                found: kv.mod_revision,
            });
        }
        self.write_update(&key, obj, &current, expected).await
    }

    async fn write_update<K: Kind>(
        &self,
        key: &str,
        obj: &K,
        current: &K,
        expected: Revision,
    ) -> Result<K, ClientError> {
        self.validate_for_write(obj, Some(current)).await?;
        let mut new = obj.clone();
        let meta = new.metadata_mut();
        meta.uid = current.metadata().uid.clone();
        meta.creation_timestamp = current.metadata().creation_timestamp.clone();
        match self.store.update(key, encode(&new), expected).await {
            Ok(rev) => {
                new.metadata_mut().resource_version = Some(rev.to_string());
                tracing::debug!(key, rev, "updated");
                Ok(new)
            }
            Err(StoreError::Conflict {
                expected, found, ..
            }) => Err(ClientError::Conflict {
                object: label_of(obj),
                expected,
                found,
            }),
            Err(StoreError::NotFound { .. }) => Err(ClientError::NotFound {
                object: label_of(obj),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Create the object, or overwrite it if it exists (any given
    /// `resourceVersion` is ignored). Concurrent writers are retried up to
    /// [`MAX_CAS_RETRIES`] times.
    pub async fn apply<K: Kind>(&self, obj: &K) -> Result<K, ClientError> {
        let key = key_of(obj)?;
        for _ in 0..MAX_CAS_RETRIES {
            match self.get_key::<K>(&key).await? {
                None => match self.create(obj).await {
                    Err(ClientError::AlreadyExists { .. }) => continue,
                    other => return other,
                },
                Some((current, kv)) => {
                    match self
                        .write_update(&key, obj, &current, kv.mod_revision)
                        .await
                    {
                        Err(ClientError::Conflict { .. } | ClientError::NotFound { .. }) => {
                            continue;
                        }
                        other => return other,
                    }
                }
            }
        }
        Err(ClientError::TooManyConflicts {
            object: label_of(obj),
            attempts: MAX_CAS_RETRIES,
        })
    }

    async fn delete_key<K: Kind>(
        &self,
        key: &str,
        label: String,
        revision: Option<Revision>,
    ) -> Result<K, ClientError> {
        for _ in 0..MAX_CAS_RETRIES {
            let Some((current, kv)) = self.get_key::<K>(key).await? else {
                return Err(ClientError::NotFound { object: label });
            };
            if let Some(expected) = revision
                && expected != kv.mod_revision
            {
                return Err(ClientError::Conflict {
                    object: label,
                    expected,
                    found: kv.mod_revision,
                });
            }
            // Delete exactly what we read, so we return what was deleted.
            match self.store.delete(key, Some(kv.mod_revision)).await {
                Ok(rev) => {
                    tracing::debug!(key, rev, "deleted");
                    return Ok(current);
                }
                Err(StoreError::Conflict {
                    expected, found, ..
                }) if revision.is_some() => {
                    return Err(ClientError::Conflict {
                        object: label,
                        expected,
                        found,
                    });
                }
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClientError::TooManyConflicts {
            object: label,
            attempts: MAX_CAS_RETRIES,
        })
    }

    /// Delete a cluster-scoped object, only at `revision` if given. Returns
    /// the deleted object.
    pub async fn delete<K: Kind>(
        &self,
        name: &str,
        revision: Option<Revision>,
    ) -> Result<K, ClientError> {
        check_name(K::ID, name)?;
        let key = resource_key(K::ID, None, name);
        self.delete_key::<K>(&key, object_label(K::ID, None, name), revision)
            .await
    }

    /// Delete a namespaced object.
    pub async fn delete_namespaced<K: Kind>(
        &self,
        namespace: &str,
        name: &str,
        revision: Option<Revision>,
    ) -> Result<K, ClientError> {
        check_name(K::ID, namespace)?;
        check_name(K::ID, name)?;
        let key = resource_key(K::ID, Some(namespace), name);
        self.delete_key::<K>(&key, object_label(K::ID, Some(namespace), name), revision)
            .await
    }

    /// Watch every change to objects of a kind after `from_revision`
    /// (exclusive); typically the revision a [`Client::list`] returned.
    pub async fn watch<K: Kind>(
        &self,
        from_revision: Revision,
    ) -> Result<ResourceWatch<K>, ClientError> {
        let raw = self.store.watch(&kind_prefix(K::ID), from_revision).await?;
        Ok(Box::pin(raw.map(|item| {
            let event = item?;
            Ok(match event {
                WatchEvent::Put(kv) => ResourceEvent::Put(decode::<K>(&kv)?),
                WatchEvent::Delete { key, revision } => {
                    let (_, namespace, name) =
                        parse_key(&key).ok_or_else(|| ClientError::Decode {
                            key: key.clone(),
                            message: "not a resource key".to_string(),
                        })?;
                    ResourceEvent::Deleted {
                        namespace,
                        name,
                        revision,
                    }
                }
                WatchEvent::Resync(listing) => ResourceEvent::Resync {
                    items: listing
                        .items
                        .iter()
                        .map(decode::<K>)
                        .collect::<Result<Vec<K>, _>>()?,
                    revision: listing.revision,
                },
            })
        })))
    }

    // ---- untyped, for the CLI ---------------------------------------------

    /// [`Client::create`] for a [`Resource`].
    pub async fn create_resource(&self, r: &Resource) -> Result<Resource, ClientError> {
        with_resource!(r, x => self.create(x).await.map(Kind::into_resource))
    }

    /// [`Client::update`] for a [`Resource`].
    pub async fn update_resource(&self, r: &Resource) -> Result<Resource, ClientError> {
        with_resource!(r, x => self.update(x).await.map(Kind::into_resource))
    }

    /// [`Client::apply`] for a [`Resource`].
    pub async fn apply_resource(&self, r: &Resource) -> Result<Resource, ClientError> {
        with_resource!(r, x => self.apply(x).await.map(Kind::into_resource))
    }

    /// Get any object by kind, namespace (namespaced kinds) and name.
    pub async fn get_resource(
        &self,
        kind: KindId,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Resource>, ClientError> {
        check_name(kind, name)?;
        if kind.namespaced() && namespace.is_none() {
            return Err(ClientError::MissingNamespace {
                object: object_label(kind, None, name),
                kind,
            });
        }
        let key = resource_key(kind, namespace, name);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        decode_resource(kind, &kv).map(Some)
    }

    /// List any kind (namespaced kinds: one namespace, or all with `None`).
    pub async fn list_resources(
        &self,
        kind: KindId,
        namespace: Option<&str>,
    ) -> Result<(Vec<Resource>, Revision), ClientError> {
        let prefix = match namespace {
            Some(ns) if kind.namespaced() => {
                check_name(kind, ns)?;
                format!("{}{ns}/", kind_prefix(kind))
            }
            _ => kind_prefix(kind),
        };
        let listing = self.store.list(&prefix).await?;
        let items = listing
            .items
            .iter()
            .map(|kv| decode_resource(kind, kv))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((items, listing.revision))
    }

    /// Delete any object; returns it.
    pub async fn delete_resource(
        &self,
        kind: KindId,
        namespace: Option<&str>,
        name: &str,
        revision: Option<Revision>,
    ) -> Result<Resource, ClientError> {
        check_name(kind, name)?;
        if kind.namespaced() && namespace.is_none() {
            return Err(ClientError::MissingNamespace {
                object: object_label(kind, None, name),
                kind,
            });
        }
        let key = resource_key(kind, namespace, name);
        let label = object_label(kind, namespace.filter(|_| kind.namespaced()), name);
        // The typed path needs K; Resource decodes any kind and we check it.
        let r: Resource = self.delete_key_resource(&key, label, revision).await?;
        Ok(r)
    }

    async fn delete_key_resource(
        &self,
        key: &str,
        label: String,
        revision: Option<Revision>,
    ) -> Result<Resource, ClientError> {
        let (kind, _, _) = parse_key(key).ok_or_else(|| ClientError::Decode {
            key: key.to_string(),
            message: "not a resource key".to_string(),
        })?;
        macro_rules! go {
            ($ty:ty) => {
                self.delete_key::<$ty>(key, label, revision)
                    .await
                    .map(Kind::into_resource)
            };
        }
        use crate::model::*;
        match kind {
            KindId::IPPool => go!(IPPool),
            KindId::BGPConfiguration => go!(BGPConfiguration),
            KindId::BGPPeer => go!(BGPPeer),
            KindId::Node => go!(Node),
            KindId::IPAMConfiguration => go!(IPAMConfiguration),
            KindId::IPReservation => go!(IPReservation),
            KindId::WorkloadEndpoint => go!(WorkloadEndpoint),
            KindId::FelixConfiguration => go!(FelixConfiguration),
            KindId::BGPFilter => go!(BGPFilter),
        }
    }
}

/// Decode a stored value of a known kind into a [`Resource`].
fn decode_resource(kind: KindId, kv: &KeyValue) -> Result<Resource, ClientError> {
    let mut r: Resource = serde_json::from_slice(&kv.value).map_err(|e| ClientError::Decode {
        key: kv.key.clone(),
        message: e.to_string(),
    })?;
    if r.kind() != kind {
        return Err(ClientError::Decode {
            key: kv.key.clone(),
            message: format!("holds a {} under the {} prefix", r.kind(), kind.plural()),
        });
    }
    r.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(r)
}

mod bulk;
pub use bulk::{BulkError, BulkOutcome, BulkVerb};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = resource_key(KindId::IPPool, None, "pool1");
        assert_eq!(k, "/manx/v3/projectcalico.org/ippools/pool1");
        assert_eq!(parse_key(&k), Some((KindId::IPPool, None, "pool1".into())));
        let k = resource_key(KindId::WorkloadEndpoint, Some("default"), "n1-k8s-p-eth0");
        assert_eq!(
            k,
            "/manx/v3/projectcalico.org/workloadendpoints/default/n1-k8s-p-eth0"
        );
        assert_eq!(
            parse_key(&k),
            Some((
                KindId::WorkloadEndpoint,
                Some("default".into()),
                "n1-k8s-p-eth0".into()
            ))
        );
        assert_eq!(parse_key("/manx/ipam/v2/x"), None);
    }

    #[test]
    fn uids_are_unique_and_v4_shaped() {
        let a = new_uid();
        let b = new_uid();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
