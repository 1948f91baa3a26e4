//! An in-memory [`Datastore`] with the same semantics as the real backends:
//! a store-wide revision counter, a history of writes for watches, and
//! [`MemoryStore::compact`] to drop old history (so tests can exercise
//! [`WatchEvent::Resync`]). For unit tests of everything above the store.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::watch;

use crate::store::{
    Datastore, KeyValue, Listing, Revision, StoreError, WatchEvent, WatchStream, WriteOp,
    check_txn, prefix_matches,
};

/// One write in the history.
#[derive(Debug, Clone)]
struct HistoryEntry {
    revision: Revision,
    event: WatchEvent,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    current: BTreeMap<String, KeyValue>,
    /// Writes in revision order; entries below `compacted` are dropped.
    history: VecDeque<HistoryEntry>,
    /// History up to here is gone: a watch that needs an event at or before
    /// it gets a `Resync`.
    compacted: Revision,
}

impl State {
    fn listing(&self, prefix: &str) -> Listing {
        Listing {
            items: self
                .current
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, kv)| kv.clone())
                .collect(),
            revision: self.revision,
        }
    }

    /// The error `op` would meet now, if any.
    fn precheck(&self, op: &WriteOp) -> Result<(), StoreError> {
        let old = self.current.get(op.key());
        let expected = match (op, old) {
            (WriteOp::Create { key, .. }, Some(_)) => {
                return Err(StoreError::AlreadyExists { key: key.clone() });
            }
            (WriteOp::Create { .. }, None) => return Ok(()),
            (WriteOp::Update { key, .. } | WriteOp::Delete { key, .. }, None) => {
                return Err(StoreError::NotFound { key: key.clone() });
            }
            (WriteOp::Update { expected, .. }, Some(_)) => Some(*expected),
            (WriteOp::Delete { expected, .. }, Some(_)) => *expected,
        };
        match (expected, old) {
            (Some(expected), Some(old)) if old.mod_revision != expected => {
                Err(StoreError::Conflict {
                    key: op.key().into(),
                    expected,
                    found: old.mod_revision,
                })
            }
            _ => Ok(()),
        }
    }

    /// Apply a checked `op` at `revision`.
    fn apply(&mut self, op: WriteOp, revision: Revision) {
        match op {
            WriteOp::Create { key, value } | WriteOp::Update { key, value, .. } => {
                let create_revision = self
                    .current
                    .get(&key)
                    .map_or(revision, |old| old.create_revision);
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision,
                    mod_revision: revision,
                };
                self.current.insert(key, kv.clone());
                self.record(WatchEvent::Put(kv));
            }
            WriteOp::Delete { key, .. } => {
                self.current.remove(&key);
                self.record(WatchEvent::Delete { key, revision });
            }
        }
    }

    fn record(&mut self, event: WatchEvent) -> Revision {
        let revision = event.revision();
        self.history.push_back(HistoryEntry { revision, event });
        revision
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Carries the latest revision; watchers wait on it.
    changed: watch::Sender<Revision>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent state (every
        // mutation is a few infallible steps), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The in-memory store. Cheap to clone: clones share the same data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        let (changed, _) = watch::channel(0);
        MemoryStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed,
            }),
        }
    }

    /// Drop history up to and including `revision`: watches from
    /// `revision` on go on; one that needs an older event gets
    /// [`WatchEvent::Resync`]. Compacting beyond the current revision clamps.
    pub fn compact(&self, revision: Revision) {
        let mut st = self.shared.lock();
        let revision = revision.min(st.revision);
        if revision <= st.compacted {
            return;
        }
        st.compacted = revision;
        while st.history.front().is_some_and(|e| e.revision <= revision) {
            st.history.pop_front();
        }
    }

    /// Check every op, then apply all of them at one new revision.
    fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<Revision>, StoreError> {
        check_txn(&ops)?;
        let mut st = self.shared.lock();
        for op in &ops {
            st.precheck(op)?;
        }
        st.revision += 1;
        let revision = st.revision;
        let n = ops.len();
        for op in ops {
            st.apply(op, revision);
        }
        self.commit(st);
        Ok(vec![revision; n])
    }

    fn commit(&self, st: MutexGuard<'_, State>) -> Revision {
        let rev = st.revision;
        drop(st);
        self.shared.changed.send_replace(rev);
        rev
    }
}

#[async_trait]
impl Datastore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.shared.lock().current.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        Ok(self.shared.lock().listing(prefix))
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let key = key.into();
        self.write(vec![WriteOp::Create { key, value }])
            .map(|r| r[0])
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let key = key.into();
        self.write(vec![WriteOp::Update {
            key,
            value,
            expected,
        }])
        .map(|r| r[0])
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let key = key.into();
        self.write(vec![WriteOp::Delete { key, expected }])
            .map(|r| r[0])
    }

    async fn txn(&self, ops: Vec<WriteOp>) -> Result<Vec<Revision>, StoreError> {
        self.write(ops)
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let cursor = Cursor {
            shared: self.shared.clone(),
            rx: self.shared.changed.subscribe(),
            prefix: prefix.to_string(),
            last: from_revision,
            pending: VecDeque::new(),
        };
        let stream = futures::stream::unfold(cursor, |mut cursor| async move {
            let event = cursor.next().await;
            Some((Ok(event), cursor))
        });
        Ok(Box::pin(stream))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.lock().revision)
    }
}

/// A watcher's position in the history.
struct Cursor {
    shared: Arc<Shared>,
    rx: watch::Receiver<Revision>,
    prefix: String,
    /// Last revision delivered.
    last: Revision,
    pending: VecDeque<WatchEvent>,
}

impl Cursor {
    async fn next(&mut self) -> WatchEvent {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.last = ev.revision();
                return ev;
            }
            // Mark the current value seen before reading, so a write that
            // lands after the read below still wakes us.
            self.rx.borrow_and_update();
            {
                let st = self.shared.lock();
                if self.last < st.compacted {
                    let listing = st.listing(&self.prefix);
                    self.last = listing.revision;
                    return WatchEvent::Resync(listing);
                }
                self.pending.extend(
                    st.history
                        .iter()
                        .filter(|e| e.revision > self.last)
                        .filter(|e| match &e.event {
                            WatchEvent::Put(kv) => prefix_matches(&kv.key, &self.prefix),
                            WatchEvent::Delete { key, .. } => prefix_matches(key, &self.prefix),
                            WatchEvent::Resync(_) => false,
                        })
                        .map(|e| e.event.clone()),
                );
                // Skip revisions that did not match the prefix.
                if self.pending.is_empty() {
                    self.last = self.last.max(st.revision);
                }
            }
            if self.pending.is_empty() && self.rx.changed().await.is_err() {
                // The store is gone (all handles dropped): nothing more comes.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[tokio::test]
    async fn create_update_delete_with_revisions() {
        let s = MemoryStore::new();
        let r1 = s.create("/a/1", v("x")).await.unwrap();
        assert_eq!(r1, 1);
        assert!(matches!(
            s.create("/a/1", v("y")).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        let r2 = s.update("/a/1", v("y"), r1).await.unwrap();
        assert_eq!(r2, 2);
        match s.update("/a/1", v("z"), r1).await {
            Err(StoreError::Conflict {
                expected, found, ..
            }) => assert_eq!((expected, found), (1, 2)),
            other => panic!("expected conflict, got {other:?}"),
        }
        let kv = s.get("/a/1").await.unwrap().unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.value),
            (1, 2, v("y"))
        );
        assert!(matches!(
            s.delete("/a/1", Some(r1)).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(s.delete("/a/1", Some(r2)).await.unwrap(), 3);
        assert!(s.get("/a/1").await.unwrap().is_none());
        assert!(matches!(
            s.delete("/a/1", None).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.update("/a/1", v("q"), 3).await,
            Err(StoreError::NotFound { .. })
        ));
        // Re-created keys start a new lifetime.
        let r4 = s.create("/a/1", v("n")).await.unwrap();
        assert_eq!(s.get("/a/1").await.unwrap().unwrap().create_revision, r4);
        assert_eq!(s.revision().await.unwrap(), 4);
    }

    #[tokio::test]
    async fn list_is_prefix_bounded() {
        let s = MemoryStore::new();
        for k in ["/a/1", "/a/2", "/ab", "/b/1"] {
            s.create(k, v(k)).await.unwrap();
        }
        let l = s.list("/a/").await.unwrap();
        let keys: Vec<_> = l.items.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/a/1", "/a/2"]);
        assert_eq!(l.revision, 4);
    }

    #[tokio::test]
    async fn watch_replays_then_follows() {
        let s = MemoryStore::new();
        s.create("/a/1", v("1")).await.unwrap();
        s.create("/b/1", v("1")).await.unwrap();
        let mut w = s.watch("/a/", 0).await.unwrap();
        let ev = w.next().await.unwrap().unwrap();
        assert!(matches!(&ev, WatchEvent::Put(kv) if kv.key == "/a/1" && kv.mod_revision == 1));
        let s2 = s.clone();
        tokio::spawn(async move {
            s2.create("/a/2", v("2")).await.unwrap();
            s2.delete("/a/1", None).await.unwrap();
        });
        let ev = w.next().await.unwrap().unwrap();
        assert!(matches!(&ev, WatchEvent::Put(kv) if kv.key == "/a/2" && kv.mod_revision == 3));
        let ev = w.next().await.unwrap().unwrap();
        assert_eq!(
            ev,
            WatchEvent::Delete {
                key: "/a/1".into(),
                revision: 4
            }
        );
    }

    #[tokio::test]
    async fn watch_from_compacted_revision_resyncs() {
        let s = MemoryStore::new();
        for i in 0..5 {
            s.create(&format!("/k/{i}"), v("x")).await.unwrap();
        }
        s.compact(4);
        // Needs event 4 onwards, but history starts at 5.
        let mut w = s.watch("/k/", 3).await.unwrap();
        match w.next().await.unwrap().unwrap() {
            WatchEvent::Resync(l) => {
                assert_eq!(l.revision, 5);
                assert_eq!(l.items.len(), 5);
            }
            other => panic!("expected resync, got {other:?}"),
        }
        // Events after 4 are still there: no resync.
        let mut w = s.watch("/k/", 4).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().revision(), 5);
    }
}
