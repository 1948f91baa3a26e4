//! Writing a whole manifest at once: all of it or none of it.
//!
//! `manxctl apply -f` of thousands of objects used to write them one by one,
//! each write listing every pool to check overlaps (quadratic), so a large
//! file took minutes and an interrupted one left the store half-written.
//! [`Client::write_all`] plans the whole set against one listing per kind
//! (O(N log N): one sort for pool overlaps), then commits it as one store
//! transaction. A store that caps transactions (etcd's `--max-txn-ops`,
//! 128 by default) gets chunks; if a later chunk fails, the earlier ones are
//! undone, and only if the undo itself fails does the error say how many
//! objects stayed written ([`BulkError::Partial`]): never silently.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Client, ClientError, MAX_CAS_RETRIES, decode_resource, encode, new_uid, object_label,
    parse_resource_version, rfc3339_now,
};
use crate::model::{
    IPPool, KindId, Resource, ValidationError, ValidationErrors, overlapping_networks,
    pool_overlap_error, with_resource,
};
use crate::store::{KeyValue, Revision, StoreError, WriteOp};

/// What to do with every object of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkVerb {
    /// Create each; one that exists fails the set unless `skip_exists`.
    Create { skip_exists: bool },
    /// Create or overwrite each.
    Apply,
    /// Overwrite each at its `metadata.resourceVersion`.
    Replace,
    /// Delete each; one that is missing fails the set unless
    /// `skip_not_exists`.
    Delete { skip_not_exists: bool },
}

/// A set written in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BulkOutcome {
    /// Objects written (created, updated or deleted).
    pub written: usize,
    /// Objects skipped (`skip_exists` / `skip_not_exists`).
    pub skipped: usize,
    /// Store transactions the commit took (1 unless the store caps them).
    pub transactions: usize,
}

/// Why a set was not written.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// Refused before anything was written: one error per object.
    #[error("{} object(s) refused, nothing written", .0.len())]
    Refused(Vec<ClientError>),
    /// The commit failed and nothing is written (a single transaction, or
    /// the chunks already committed were undone).
    #[error("nothing written: {0}")]
    Failed(ClientError),
    /// The commit failed half-way and undoing it failed too: `applied` of
    /// `total` writes stayed in the store.
    #[error(
        "{applied} of {total} object(s) written, the rest not ({cause}); undoing the written ones failed too ({undo}): re-run the same command to finish, or check with manxctl get"
    )]
    Partial {
        applied: usize,
        total: usize,
        cause: ClientError,
        undo: ClientError,
    },
}

/// One planned write, with what it replaces (for the undo).
struct Planned {
    op: WriteOp,
    label: String,
    /// The value before, for updates and deletes.
    before: Option<Vec<u8>>,
}

impl Client {
    /// Write every object of `items` (all of them or none), as `verb` says.
    /// Objects are validated, checked against what is stored (existence,
    /// `resourceVersion`, immutable pool fields, pool overlaps with the
    /// stored pools and each other) and committed together. A concurrent
    /// writer that changes an object between the plan and the commit makes
    /// the whole set be planned again (apply, create, delete), or fails it
    /// (replace: the caller's `resourceVersion` is stale).
    pub async fn write_all(
        &self,
        verb: BulkVerb,
        items: &[Resource],
    ) -> Result<BulkOutcome, BulkError> {
        for _ in 0..MAX_CAS_RETRIES {
            let (planned, skipped) = self.plan(verb, items).await?;
            if planned.is_empty() {
                return Ok(BulkOutcome {
                    written: 0,
                    skipped,
                    transactions: 0,
                });
            }
            match self.commit(&planned).await {
                Ok(transactions) => {
                    return Ok(BulkOutcome {
                        written: planned.len(),
                        skipped,
                        transactions,
                    });
                }
                Err(CommitError::Raced(_)) if verb != BulkVerb::Replace => continue,
                Err(CommitError::Raced(e) | CommitError::Failed(e)) => {
                    return Err(BulkError::Failed(e));
                }
                Err(CommitError::Partial {
                    applied,
                    cause,
                    undo,
                }) => {
                    return Err(BulkError::Partial {
                        applied,
                        total: planned.len(),
                        cause,
                        undo,
                    });
                }
            }
        }
        Err(BulkError::Failed(ClientError::TooManyConflicts {
            object: format!("a set of {} object(s)", items.len()),
            attempts: MAX_CAS_RETRIES,
        }))
    }

    /// Every write `items` needs, checked against one listing per kind.
    async fn plan(
        &self,
        verb: BulkVerb,
        items: &[Resource],
    ) -> Result<(Vec<Planned>, usize), BulkError> {
        let mut errors = Vec::new();
        let mut stored: BTreeMap<String, (Resource, KeyValue)> = BTreeMap::new();
        // Only the kinds the set writes: stored pools matter only to a set
        // that writes pools (overlaps are reported on a written one).
        let kinds: BTreeSet<KindId> = items.iter().map(Resource::kind).collect();
        for kind in kinds {
            let listing = self
                .store
                .list(&super::kind_prefix(kind))
                .await
                .map_err(|e| BulkError::Failed(e.into()))?;
            for kv in listing.items {
                let r = decode_resource(kind, &kv).map_err(BulkError::Failed)?;
                stored.insert(kv.key.clone(), (r, kv));
            }
        }

        let mut planned = Vec::with_capacity(items.len());
        let mut skipped = 0;
        let mut seen = BTreeSet::new();
        // Pools as they will be after the commit: stored ones by key,
        // replaced or removed by the set's.
        let mut final_pools: BTreeMap<String, (IPPool, bool)> = stored
            .iter()
            .filter_map(|(k, (r, _))| match r {
                Resource::IPPool(p) => Some((k.clone(), (p.clone(), false))),
                _ => None,
            })
            .collect();
        for item in items {
            let kind = item.kind();
            let ns = item
                .namespace()
                .filter(|n| !n.is_empty() && kind.namespaced());
            let label = object_label(kind, ns, item.name());
            let key = match resource_key_checked(item) {
                Ok(k) => k,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if !seen.insert(key.clone()) {
                errors.push(ClientError::Invalid(ValidationErrors(vec![
                    ValidationError {
                        object: label,
                        field: "metadata.name".into(),
                        message: "appears twice in this set: give each object its own name".into(),
                    },
                ])));
                continue;
            }
            let current = stored.get(&key);
            if !matches!(verb, BulkVerb::Delete { .. })
                && let Err(e) = item.validate()
            {
                errors.push(ClientError::Invalid(e));
                continue;
            }
            let write = match (verb, current) {
                (BulkVerb::Create { skip_exists: true }, Some(_)) => None,
                (BulkVerb::Create { .. }, Some(_)) => {
                    errors.push(ClientError::AlreadyExists { object: label });
                    continue;
                }
                (BulkVerb::Create { .. } | BulkVerb::Apply, None) => {
                    let mut new = item.clone();
                    let meta = new.metadata_mut();
                    meta.uid = Some(new_uid());
                    meta.creation_timestamp = Some(rfc3339_now());
                    Some((
                        WriteOp::Create {
                            key: key.clone(),
                            value: encode_resource(&new),
                        },
                        None,
                        Some(new),
                    ))
                }
                (BulkVerb::Replace, None) => {
                    errors.push(ClientError::NotFound { object: label });
                    continue;
                }
                (BulkVerb::Apply | BulkVerb::Replace, Some((old, kv))) => {
                    if verb == BulkVerb::Replace {
                        let expected = match item.metadata().resource_version.as_deref() {
                            Some(rv) if !rv.trim().is_empty() => {
                                match parse_resource_version(&label, rv) {
                                    Ok(r) => r,
                                    Err(e) => {
                                        errors.push(e);
                                        continue;
                                    }
                                }
                            }
                            _ => {
                                errors.push(ClientError::MissingResourceVersion { object: label });
                                continue;
                            }
                        };
                        if expected != kv.mod_revision {
                            errors.push(ClientError::Conflict {
                                object: label,
                                expected,
                                found: kv.mod_revision,
                            });
                            continue;
                        }
                    }
                    if let (Resource::IPPool(o), Resource::IPPool(n)) = (old, item) {
                        let changed = o.immutable_field_errors(n);
                        if !changed.is_empty() {
                            errors.push(ClientError::Invalid(ValidationErrors(changed)));
                            continue;
                        }
                    }
                    let mut new = item.clone();
                    let meta = new.metadata_mut();
                    meta.uid = old.metadata().uid.clone();
                    meta.creation_timestamp = old.metadata().creation_timestamp.clone();
                    Some((
                        WriteOp::Update {
                            key: key.clone(),
                            value: encode_resource(&new),
                            expected: kv.mod_revision,
                        },
                        Some(kv.value.clone()),
                        Some(new),
                    ))
                }
                (BulkVerb::Delete { skip_not_exists }, None) => {
                    if skip_not_exists {
                        None
                    } else {
                        errors.push(ClientError::NotFound { object: label });
                        continue;
                    }
                }
                (BulkVerb::Delete { .. }, Some((_, kv))) => Some((
                    WriteOp::Delete {
                        key: key.clone(),
                        expected: Some(kv.mod_revision),
                    },
                    Some(kv.value.clone()),
                    None,
                )),
            };
            let Some((op, before, after)) = write else {
                skipped += 1;
                continue;
            };
            if kind == KindId::IPPool {
                match &after {
                    Some(Resource::IPPool(p)) => {
                        final_pools.insert(key.clone(), (p.clone(), true));
                    }
                    _ => {
                        final_pools.remove(&key);
                    }
                }
            }
            planned.push(Planned { op, label, before });
        }

        // Overlaps among the pools as they will be, reported on a pool this
        // set writes (a stored overlap the set does not touch is not its
        // fault).
        let pools: Vec<&(IPPool, bool)> = final_pools.values().collect();
        let cidrs: Vec<_> = pools.iter().map(|(p, _)| p.spec.cidr).collect();
        for (a, b) in overlapping_networks(&cidrs) {
            let ((pa, wa), (pb, wb)) = (pools[a], pools[b]);
            let (mine, other) = match (wa, wb) {
                (true, _) => (pa, pb),
                (false, true) => (pb, pa),
                (false, false) => continue,
            };
            errors.push(ClientError::Invalid(ValidationErrors(vec![
                pool_overlap_error(mine, other),
            ])));
        }

        if errors.is_empty() {
            Ok((planned, skipped))
        } else {
            Err(BulkError::Refused(errors))
        }
    }

    /// Commit `planned` in as few transactions as the store allows; a
    /// failure after the first chunk undoes the chunks before it.
    async fn commit(&self, planned: &[Planned]) -> Result<usize, CommitError> {
        let chunk = self.store.max_txn_ops().max(1);
        let mut undo: Vec<WriteOp> = Vec::new();
        let mut applied = 0;
        let mut transactions = 0;
        for part in planned.chunks(chunk) {
            let ops: Vec<WriteOp> = part.iter().map(|p| p.op.clone()).collect();
            match self.store.txn(ops).await {
                Ok(revs) => {
                    transactions += 1;
                    applied += part.len();
                    for (p, rev) in part.iter().zip(revs) {
                        undo.push(undo_op(p, rev));
                    }
                }
                Err(e) => {
                    let cause = txn_error(part, e);
                    let raced = matches!(
                        cause,
                        ClientError::Conflict { .. }
                            | ClientError::AlreadyExists { .. }
                            | ClientError::NotFound { .. }
                    );
                    if applied > 0
                        && let Err(undo_err) = self.undo(undo, chunk).await
                    {
                        return Err(CommitError::Partial {
                            applied,
                            cause,
                            undo: undo_err,
                        });
                    }
                    return Err(if raced {
                        CommitError::Raced(cause)
                    } else {
                        CommitError::Failed(cause)
                    });
                }
            }
        }
        Ok(transactions)
    }

    /// Undo committed writes, last first.
    async fn undo(&self, mut undo: Vec<WriteOp>, chunk: usize) -> Result<(), ClientError> {
        undo.reverse();
        for part in undo.chunks(chunk) {
            self.store.txn(part.to_vec()).await?;
        }
        Ok(())
    }
}

enum CommitError {
    /// A precondition failed: another writer changed an object.
    Raced(ClientError),
    Failed(ClientError),
    Partial {
        applied: usize,
        cause: ClientError,
        undo: ClientError,
    },
}

/// The write that puts back what `p` replaced, conditional on nobody having
/// written the key since (its revision is `rev`).
fn undo_op(p: &Planned, rev: Revision) -> WriteOp {
    let key = p.op.key().to_string();
    match (&p.op, &p.before) {
        (WriteOp::Create { .. }, _) => WriteOp::Delete {
            key,
            expected: Some(rev),
        },
        (WriteOp::Update { .. }, Some(before)) => WriteOp::Update {
            key,
            value: before.clone(),
            expected: rev,
        },
        (WriteOp::Delete { .. }, Some(before)) => WriteOp::Create {
            key,
            value: before.clone(),
        },
        (_, None) => unreachable!("updates and deletes keep the value they replace"),
    }
}

/// A store error from a chunk, named after the object whose key it is about.
fn txn_error(part: &[Planned], e: StoreError) -> ClientError {
    let label_of_key = |key: &str| {
        part.iter()
            .find(|p| p.op.key() == key)
            .map(|p| p.label.clone())
            .unwrap_or_else(|| key.to_string())
    };
    match e {
        StoreError::Conflict {
            key,
            expected,
            found,
        } => ClientError::Conflict {
            object: label_of_key(&key),
            expected,
            found,
        },
        StoreError::AlreadyExists { key } => ClientError::AlreadyExists {
            object: label_of_key(&key),
        },
        StoreError::NotFound { key } => ClientError::NotFound {
            object: label_of_key(&key),
        },
        other => ClientError::Store(other),
    }
}

fn resource_key_checked(r: &Resource) -> Result<String, ClientError> {
    with_resource!(r, x => super::key_of(x))
}

fn encode_resource(r: &Resource) -> Vec<u8> {
    with_resource!(r, x => encode(x))
}
