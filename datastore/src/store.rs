//! The `Datastore` trait: a revisioned key-value store with compare-and-swap
//! and resumable watches. Both backends (etcd, embedded SQLite) implement it,
//! and one conformance suite (`tests/conformance.rs`) runs against both.
//!
//! # Semantics
//!
//! * Every successful write gets a new, strictly increasing store-wide
//!   revision (etcd's `mod_revision`; the embedded store's log id).
//! * `create` fails with [`StoreError::AlreadyExists`] if the key exists.
//! * `update` is a compare-and-swap on the key's current `mod_revision`; a
//!   mismatch (or a missing key) is [`StoreError::Conflict`] /
//!   [`StoreError::NotFound`]. Callers retry, bounded.
//! * `delete` with `Some(rev)` deletes only if the key is at `rev`.
//! * `list` returns every key under a prefix as of one revision.
//! * `watch` streams every change under a prefix after `from_revision`
//!   (exclusive) in revision order, reconnecting by itself after a
//!   disconnect. If the store compacted the history it needs, it sends
//!   [`WatchEvent::Resync`] with a fresh full listing, then carries on.
//! * Compaction at revision `C` drops the history of writes up to and
//!   including `C`: a watch from `C` or later goes on; one from before `C`
//!   gets a `Resync`. The latest value of every live key always stays.

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

/// A store-wide revision. Revisions of successive writes strictly increase.
pub type Revision = i64;

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created this key (in its current lifetime).
    pub create_revision: Revision,
    /// Revision of the last write to this key: the CAS token.
    pub mod_revision: Revision,
}

/// A consistent listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<KeyValue>,
    /// The store revision the listing reflects.
    pub revision: Revision,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or updated.
    Put(KeyValue),
    /// A key was deleted at `revision`.
    Delete { key: String, revision: Revision },
    /// History was compacted (or the watch fell too far behind): this is the
    /// whole state under the prefix; forget what you had and start again.
    Resync(Listing),
}

impl WatchEvent {
    /// The revision this event brings the watcher up to.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
            WatchEvent::Resync(listing) => listing.revision,
        }
    }
}

/// A watch: an endless stream of events (it ends only when dropped or when the
/// store is shut down). Transient errors are retried inside; an `Err` item is
/// one the watcher should see (e.g. access denied), after which it goes on.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// Errors of the store. The messages name the key and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key}: already exists")]
    AlreadyExists { key: String },
    #[error("{key}: not found")]
    NotFound { key: String },
    #[error("{key}: revision conflict (expected {expected}, found {found}): re-read and retry")]
    Conflict {
        key: String,
        expected: Revision,
        found: Revision,
    },
    #[error("datastore unavailable: {0}")]
    Unavailable(String),
    #[error("datastore request timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("datastore access denied: {0}")]
    Denied(String),
    #[error("datastore configuration: {0}")]
    Config(String),
    #[error("datastore: {0}")]
    Other(String),
}

impl StoreError {
    /// Worth retrying as is (not a logic error).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

/// One write of a [`Datastore::txn`], with its precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Create `key`; it must not exist (else `AlreadyExists`).
    Create { key: String, value: Vec<u8> },
    /// Replace `key`'s value; it must exist (else `NotFound`) at `expected`
    /// (else `Conflict`).
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    /// Delete `key`; it must exist and, with `Some(rev)`, be at `rev`.
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

impl WriteOp {
    /// The key this op writes.
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }
}

/// Refuse a transaction the backends cannot apply atomically: none, or
/// the same key twice (etcd rejects duplicate keys in one txn).
pub fn check_txn(ops: &[WriteOp]) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Err(StoreError::Other("txn: no operations given".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(StoreError::Other(format!(
                "txn: key {} is written twice in one transaction; merge the writes into one",
                op.key()
            )));
        }
    }
    Ok(())
}

/// The revisioned key-value store under Manx.
#[async_trait]
pub trait Datastore: Send + Sync + std::fmt::Debug {
    /// Get one key, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// List every key under `prefix` at one revision.
    async fn list(&self, prefix: &str) -> Result<Listing, StoreError>;
    /// Create `key`; fails with `AlreadyExists`. Returns the new revision.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError>;
    /// Compare-and-swap: write `value` only if `key` is at `expected`.
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError>;
    /// Delete `key`; with `Some(rev)` only if it is at `rev`. Returns the
    /// revision of the delete. Deleting a missing key is `NotFound`.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError>;
    /// Apply `ops` atomically: every one, or none when any precondition
    /// fails; the error is then the one the first failing op (in order)
    /// would get alone. Keys must be distinct ([`check_txn`]). Returns the
    /// revision of each op's write: one shared revision on etcd and the
    /// memory store, consecutive ones on the embedded store; always above
    /// every earlier write's. A watcher may see the ops' events in more than
    /// one batch, but a reader never sees some without the others.
    async fn txn(&self, ops: Vec<WriteOp>) -> Result<Vec<Revision>, StoreError>;
    /// The most ops one [`Datastore::txn`] may carry (etcd refuses more
    /// than its `--max-txn-ops` compares or writes). Unlimited by default.
    fn max_txn_ops(&self) -> usize {
        usize::MAX
    }
    /// Watch every change under `prefix` after `from_revision` (exclusive).
    async fn watch(&self, prefix: &str, from_revision: Revision)
    -> Result<WatchStream, StoreError>;
    /// The store's current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
}

/// Whether `key` is under `prefix` (an empty prefix matches every key).
pub fn prefix_matches(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
}

/// The smallest key greater than every key starting with `prefix`, for range
/// queries (etcd's `range_end`); `None` when no such key exists (an empty
/// prefix, or one made only of 0xff bytes): the range is then unbounded.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
