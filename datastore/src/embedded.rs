//! The embedded backend: one SQLite file holding a revision log, kine-style.
//!
//! Every write appends a row to `kv_log`; the row id (AUTOINCREMENT) is the
//! store-wide revision. The current value of a key is its latest row; a
//! delete appends a tombstone. A compare-and-swap is one `BEGIN IMMEDIATE`
//! transaction that reads the key's latest row, checks its revision and
//! appends. SQLite serialises writers across processes (WAL mode, with a
//! busy timeout), so several processes on one machine can share the file; and
//! since only one writer commits at a time, ids become visible in order: a
//! reader that sees revision N has every revision below N.
//!
//! Watches read the log for rows past their last revision when woken: at
//! once when a write from this process commits, and for other processes'
//! writes when an inotify watch sees the file or its WAL written (one poller
//! task per store handle reads the revision for all of its watchers, then
//! for [`HOT_POLLS`] × [`POLL_INTERVAL`] after the last write, and once a
//! second when idle; see `embedded_notify`). Without inotify it reads the
//! revision every [`POLL_INTERVAL`].
//! [`EmbeddedStore::compact`] drops superseded rows; a watcher that needs one
//! of them gets [`WatchEvent::Resync`].
//!
//! SQLite calls block, so they run on tokio's blocking pool
//! (`spawn_blocking`), never on the async executor.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, params};
use tokio::sync::watch;

use crate::embedded_notify::FileChanges;
use crate::store::{
    Datastore, KeyValue, Listing, Revision, StoreError, WatchEvent, WatchStream, WriteOp,
    check_txn, prefix_end,
};

/// Where the embedded store lives unless `MANX_DB` says otherwise.
pub const DEFAULT_DB_PATH: &str = "/var/lib/manx/manx.db";

/// How often the revision is read while other processes write (and always,
/// without inotify).
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Revision reads at [`POLL_INTERVAL`] after the last write to the file.
const HOT_POLLS: u32 = 5;

/// A watcher with no wake-up for this long polls anyway.
const SAFETY_POLL: Duration = Duration::from_secs(1);

/// How long a write waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Tuning of an [`EmbeddedStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Revisions of history the automatic compaction keeps: a watcher that
    /// falls further behind gets a [`WatchEvent::Resync`].
    pub history_kept: Revision,
    /// The automatic compaction runs after every this many revisions.
    pub compact_every: Revision,
    /// `true` (default): every acknowledged write is on disk (fsync per
    /// commit), surviving power loss. `false`: it survives a crash of the
    /// process only, for labs and tests where speed matters more.
    pub durable: bool,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            history_kept: 10_000,
            compact_every: 1_000,
            durable: true,
        }
    }
}

/// Most rows one watch poll reads; the rest come on the next poll.
const WATCH_BATCH: i64 = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT, -- the revision
    key           BLOB    NOT NULL,
    value         BLOB    NOT NULL,
    created       INTEGER NOT NULL,                  -- create_revision
    deleted       INTEGER NOT NULL DEFAULT 0,        -- 1: tombstone
    prev_revision INTEGER NOT NULL DEFAULT 0         -- the row this one replaces
);
CREATE INDEX IF NOT EXISTS kv_log_key_id ON kv_log (key, id);
CREATE TABLE IF NOT EXISTS kv_meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// The embedded SQLite store. Cheap to clone: clones share connections.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    options: EmbeddedOptions,
    /// All writes of this process go through one connection, so they queue
    /// on this mutex instead of spinning in SQLite's busy handler; only
    /// writers in other processes meet the busy timeout.
    writer: Mutex<Connection>,
    /// Idle read connections (WAL readers do not block each other).
    readers: Mutex<Vec<Connection>>,
    /// Bumped after each local commit: wakes this process's watchers early.
    changed: watch::Sender<u64>,
    /// Whether the revision poller task runs (see [`Shared::ensure_poller`]).
    poller_running: AtomicBool,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.shared.path)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Connections stay usable after a panic elsewhere: any open transaction
    // is rolled back when its `Transaction` is dropped during unwinding.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Map a SQLite error on `path` to a [`StoreError`] that says what to do.
fn sql_err(path: &Path, e: rusqlite::Error) -> StoreError {
    let p = path.display();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Timeout(BUSY_TIMEOUT)
        }
        Some(ErrorCode::CannotOpen) => StoreError::Unavailable(format!(
            "cannot open embedded datastore {p}: {e}; check the directory exists and is \
             writable, or set MANX_DB to another path"
        )),
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => StoreError::Denied(format!(
            "embedded datastore {p} is not writable: {e}; fix its permissions or set MANX_DB"
        )),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Other(format!(
            "{p} is not a usable Manx datastore: {e}; point MANX_DB at another file"
        )),
        _ => StoreError::Other(format!("embedded datastore {p}: {e}")),
    }
}

/// SQLite's busy handler: another process holds the write lock. SQLite's
/// default sleeps up to 100 ms between tries and is never woken when the
/// lock frees, so short-lived writers (CNI plugins, one write each) queued
/// behind each other waited far longer than the writes took. Retry quickly
/// at first, then back off, for about [`BUSY_TIMEOUT`] in all. The sleeps
/// are jittered (from the clock's nanoseconds) so waiters do not retry in
/// step.
fn wait_for_lock(attempt: i32) -> bool {
    let attempt = attempt.max(0) as u64;
    let (base_us, spread_us) = match attempt {
        0..20 => (100, 400),
        20..200 => (1_000, 1_000),
        _ => (5_000, 1_000),
    };
    // 20 × ~0.3 ms + 180 × ~1.5 ms + n × ~5.5 ms ≈ BUSY_TIMEOUT.
    let waited_ms = match attempt {
        0..20 => attempt * 3 / 10,
        20..200 => 6 + (attempt - 20) * 3 / 2,
        _ => 276 + (attempt - 200) * 11 / 2,
    };
    if waited_ms >= BUSY_TIMEOUT.as_millis() as u64 {
        return false;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    std::thread::sleep(Duration::from_micros(base_us + nanos % spread_us));
    true
}

fn open_connection(path: &Path, durable: bool) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_handler(Some(wait_for_lock))?;
    // WAL: readers never block the writer nor each other. synchronous=FULL:
    // an acknowledged write survives power loss, as etcd's does; NORMAL
    // survives a crash of the process but not of the machine.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "NORMAL" })?;
    Ok(conn)
}

/// The latest row of `key`: (revision, create_revision, deleted, value).
type LatestRow = (Revision, Revision, bool, Vec<u8>);

fn latest(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<LatestRow>> {
    tx.prepare_cached(
        "SELECT id, created, deleted, value FROM kv_log WHERE key = ?1 ORDER BY id DESC LIMIT 1",
    )?
    .query_row(params![key.as_bytes()], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0, r.get(3)?))
    })
    .optional()
}

fn current_revision(conn: &Connection) -> rusqlite::Result<Revision> {
    Ok(conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'kv_log'")?
        .query_row([], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0))
}

fn compacted_revision(conn: &Connection) -> rusqlite::Result<Revision> {
    Ok(conn
        .prepare_cached("SELECT value FROM kv_meta WHERE name = 'compact_revision'")?
        .query_row([], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0))
}

fn decode_key(raw: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(raw).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// Every live key under `prefix`, and the revision they reflect, from one
/// read snapshot.
fn list_in(conn: &mut Connection, prefix: &str) -> rusqlite::Result<Listing> {
    let tx = conn.transaction()?;
    let revision = current_revision(&tx)?;
    let end = prefix_end(prefix.as_bytes());
    let sql = format!(
        "SELECT l.id, l.key, l.value, l.created FROM kv_log l
         JOIN (SELECT MAX(id) AS id FROM kv_log WHERE key >= ?1 {} GROUP BY key) m
           ON l.id = m.id
         WHERE l.deleted = 0 ORDER BY l.key",
        if end.is_some() { "AND key < ?2" } else { "" }
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let map = |r: &rusqlite::Row<'_>| {
        Ok(KeyValue {
            mod_revision: r.get(0)?,
            key: decode_key(r.get(1)?)?,
            value: r.get(2)?,
            create_revision: r.get(3)?,
        })
    };
    let items = match &end {
        Some(end) => stmt.query_map(params![prefix.as_bytes(), end], map)?,
        None => stmt.query_map(params![prefix.as_bytes()], map)?,
    }
    .collect::<rusqlite::Result<Vec<_>>>()?;
    drop(stmt);
    tx.commit()?;
    Ok(Listing { items, revision })
}

/// What a watch poll found.
enum Poll {
    Events {
        events: Vec<WatchEvent>,
        /// The revision the watcher has now seen everything up to.
        up_to: Revision,
    },
    Compacted(Listing),
}

/// A watch poll's query: the rows past the watcher's revision, by revision.
///
/// The prefix terms carry a unary `+`, which keeps SQLite from using the
/// `(key, id)` index for them: with it, SQLite walked every row under the
/// prefix (for manx-node's `/manx/` watch, the whole log, history included)
/// and sorted them, on every poll of every watcher. The rowid range reads
/// only the rows written since the last poll, whatever the store's size.
fn poll_sql(bounded: bool) -> String {
    format!(
        "SELECT id, key, value, created, deleted FROM kv_log
         WHERE id > ?1 AND +key >= ?2 {} ORDER BY id LIMIT {WATCH_BATCH}",
        if bounded { "AND +key < ?3" } else { "" }
    )
}

fn poll_in(conn: &mut Connection, prefix: &str, after: Revision) -> rusqlite::Result<Poll> {
    let tx = conn.transaction()?;
    if after < compacted_revision(&tx)? {
        drop(tx);
        return Ok(Poll::Compacted(list_in(conn, prefix)?));
    }
    let revision = current_revision(&tx)?;
    let end = prefix_end(prefix.as_bytes());
    let mut stmt = tx.prepare_cached(&poll_sql(end.is_some()))?;
    let map = |r: &rusqlite::Row<'_>| {
        let id: i64 = r.get(0)?;
        let key = decode_key(r.get(1)?)?;
        Ok(if r.get::<_, i64>(4)? != 0 {
            WatchEvent::Delete { key, revision: id }
        } else {
            WatchEvent::Put(KeyValue {
                key,
                value: r.get(2)?,
                create_revision: r.get(3)?,
                mod_revision: id,
            })
        })
    };
    let events = match &end {
        Some(end) => stmt.query_map(params![after, prefix.as_bytes(), end], map)?,
        None => stmt.query_map(params![after, prefix.as_bytes()], map)?,
    }
    .collect::<rusqlite::Result<Vec<_>>>()?;
    drop(stmt);
    tx.commit()?;
    // A full batch may have more behind it; otherwise the watcher has seen
    // everything up to the snapshot's revision, matching or not.
    let up_to = match events.last() {
        Some(last) if events.len() as i64 == WATCH_BATCH => last.revision(),
        _ => revision.max(after),
    };
    Ok(Poll::Events { events, up_to })
}

/// Drop history up to `revision` (see [`EmbeddedStore::compact`]).
fn compact_in(conn: &mut Connection, revision: Revision) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let revision = revision.min(current_revision(&tx)?);
    if revision <= compacted_revision(&tx)? {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM kv_log WHERE id <= ?1
           AND id NOT IN (SELECT MAX(id) FROM kv_log GROUP BY key)",
        params![revision],
    )?;
    tx.execute(
        "DELETE FROM kv_log WHERE id <= ?1 AND deleted = 1",
        params![revision],
    )?;
    tx.execute(
        "INSERT INTO kv_meta (name, value) VALUES ('compact_revision', ?1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![revision],
    )?;
    tx.commit()
}

/// Apply `ops` in one `BEGIN IMMEDIATE` transaction: each op checks its
/// precondition against the key's latest row and appends its own row, so
/// the ops get consecutive revisions; any failed check rolls all back.
fn txn_in(conn: &mut Connection, ops: Vec<WriteOp>) -> Result<Vec<Revision>, WriteError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut revisions = Vec::with_capacity(ops.len());
    for op in ops {
        let key = op.key().to_string();
        let old = latest(&tx, &key)?.filter(|(_, _, deleted, _)| !deleted);
        let expected = match &op {
            WriteOp::Update { expected, .. } => Some(*expected),
            WriteOp::Delete { expected, .. } => *expected,
            WriteOp::Create { .. } => None,
        };
        let (created, prev) = match (&op, &old) {
            (WriteOp::Create { .. }, Some(_)) => {
                return Err(StoreError::AlreadyExists { key }.into());
            }
            (WriteOp::Create { .. }, None) => (None, 0),
            (_, None) => return Err(StoreError::NotFound { key }.into()),
            (_, Some((rev, created, ..))) => match expected {
                Some(expected) if expected != *rev => {
                    return Err(StoreError::Conflict {
                        key,
                        expected,
                        found: *rev,
                    }
                    .into());
                }
                _ => (Some(*created), *rev),
            },
        };
        let (value, deleted) = match op {
            WriteOp::Create { value, .. } | WriteOp::Update { value, .. } => (value, false),
            WriteOp::Delete { .. } => (Vec::new(), true),
        };
        tx.prepare_cached(
            "INSERT INTO kv_log (key, value, created, deleted, prev_revision)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            key.as_bytes(),
            value,
            created.unwrap_or(0),
            deleted,
            prev
        ])?;
        let revision = tx.last_insert_rowid();
        if created.is_none() {
            tx.prepare_cached("UPDATE kv_log SET created = id WHERE id = ?1")?
                .execute(params![revision])?;
        }
        revisions.push(revision);
    }
    tx.commit()?;
    Ok(revisions)
}

/// A write's failure: a store verdict, or SQLite trouble (mapped later with
/// the path).
enum WriteError {
    Store(StoreError),
    Sql(rusqlite::Error),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Store(e)
    }
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        WriteError::Sql(e)
    }
}

impl EmbeddedStore {
    /// Open (creating if needed) the store at `path`, creating its directory.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, EmbeddedOptions::default()).await
    }

    /// [`Self::open`] with non-default tuning.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        if options.history_kept < 0 || options.compact_every < 1 {
            return Err(StoreError::Config(format!(
                "embedded datastore: bad options {options:?}: history_kept must be >= 0 and \
                 compact_every >= 1"
            )));
        }
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options))
            .await
            .map_err(|e| StoreError::Other(format!("embedded datastore open task: {e}")))?
    }

    /// Open the store at `MANX_DB`, or [`DEFAULT_DB_PATH`].
    pub async fn open_default() -> Result<Self, StoreError> {
        let path = std::env::var_os("MANX_DB")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DB_PATH));
        Self::open(path).await
    }

    fn open_blocking(path: PathBuf, options: EmbeddedOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Config(format!(
                    "cannot create directory {} for the embedded datastore {}: {e}; \
                     set MANX_DB to a writable path",
                    dir.display(),
                    path.display()
                ))
            })?;
        }
        let mut writer = open_connection(&path, options.durable).map_err(|e| sql_err(&path, e))?;
        let has_schema = writer
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('kv_log', 'kv_meta')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| sql_err(&path, e))?
            == 2;
        if !has_schema {
            // Several processes may open a fresh file at once: create the
            // schema under the write lock (a plain read first, so that the
            // common open of an existing store takes no write lock).
            let tx = writer
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| sql_err(&path, e))?;
            tx.execute_batch(SCHEMA).map_err(|e| sql_err(&path, e))?;
            tx.commit().map_err(|e| sql_err(&path, e))?;
        }
        tracing::debug!(path = %path.display(), "opened embedded datastore");
        let (changed, _) = watch::channel(0);
        Ok(EmbeddedStore {
            shared: Arc::new(Shared {
                path,
                options,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                changed,
                poller_running: AtomicBool::new(false),
            }),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Drop history up to and including `revision`: superseded rows and
    /// tombstones at or below it go (the latest row of each live key stays).
    /// Watchers from `revision` on go on; one that needs a dropped event gets
    /// [`WatchEvent::Resync`]. Clamped to the current revision.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.with_writer(move |conn| Ok(compact_in(conn, revision)?))
            .await
            .map_err(|e| match e {
                WriteError::Store(e) => e,
                WriteError::Sql(e) => sql_err(&self.shared.path, e),
            })
    }

    /// The revision history was compacted up to (0: never compacted).
    pub async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.with_reader(|conn| compacted_revision(conn)).await
    }

    async fn with_writer<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, WriteError> + Send + 'static,
    ) -> Result<R, WriteError> {
        let shared = self.shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut conn = lock(&shared.writer);
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Other(format!("embedded datastore write task: {e}")))?;
        if result.is_ok() {
            self.shared.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
        result
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<Vec<Revision>, StoreError> {
        check_txn(&ops)?;
        let path = self.shared.path.clone();
        let opts = self.shared.options;
        self.with_writer(move |conn| {
            let revisions = txn_in(conn, ops)?;
            // Keep the log bounded, as kine does: each time the revision
            // passes a multiple of `compact_every`, drop history older than
            // `history_kept` revisions.
            let (first, last) = (revisions[0], revisions[revisions.len() - 1]);
            if last / opts.compact_every != (first - 1) / opts.compact_every
                && last > opts.history_kept
                && let Err(e) = compact_in(conn, last - opts.history_kept)
            {
                tracing::warn!(path = %path.display(), error = %e, "auto-compaction failed");
            }
            Ok(revisions)
        })
        .await
        .map_err(|e| match e {
            WriteError::Store(e) => e,
            WriteError::Sql(e) => sql_err(&self.shared.path, e),
        })
    }

    async fn with_reader<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        Shared::with_reader(self.shared.clone(), f).await
    }
}

impl Shared {
    /// Start the task that notices other processes' writes, unless it runs.
    ///
    /// One task per store handle, not one per watch: when the file changes
    /// (inotify), and once a [`SAFETY_POLL`] anyway, it reads the current
    /// revision (one row) and, when it moved, wakes every watcher through
    /// `changed`. Idle watchers cost nothing more. It
    /// stops when no watcher is left (or the store is gone) and the next
    /// watch starts it again.
    fn ensure_poller(shared: &Arc<Shared>) {
        if shared.poller_running.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Shared> = Arc::downgrade(shared);
        let path = shared.path.clone();
        tokio::spawn(async move {
            let changes = match FileChanges::new(&path) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::info!(
                        db = %path.display(),
                        error = %e,
                        "no inotify watch on the embedded datastore: polling it every {POLL_INTERVAL:?} for other processes' writes"
                    );
                    None
                }
            };
            let mut seen: Option<Revision> = None;
            // Reads left after the last file event: a commit's WAL writes
            // come just before it is visible.
            let mut hot = 0u32;
            loop {
                match &changes {
                    Some(c) => {
                        let wait = if hot == 0 { SAFETY_POLL } else { POLL_INTERVAL };
                        if c.wait(wait).await {
                            hot = HOT_POLLS;
                        } else {
                            hot = hot.saturating_sub(1);
                        }
                    }
                    None => tokio::time::sleep(POLL_INTERVAL).await,
                }
                let Some(shared) = weak.upgrade() else { return };
                if shared.changed.receiver_count() == 0 {
                    shared.poller_running.store(false, Ordering::SeqCst);
                    // A watch that subscribed just now saw `true` and left
                    // the polling to us: take it back if so, else stop.
                    if shared.changed.receiver_count() == 0
                        || shared.poller_running.swap(true, Ordering::SeqCst)
                    {
                        return;
                    }
                }
                match shared.clone().with_reader(|c| current_revision(c)).await {
                    Ok(rev) if seen != Some(rev) => {
                        seen = Some(rev);
                        shared.changed.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "embedded datastore revision poll failed");
                    }
                }
            }
        });
    }

    async fn with_reader<R: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        tokio::task::spawn_blocking(move || {
            let pooled = lock(&self.readers).pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => open_connection(&self.path, self.options.durable)
                    .map_err(|e| sql_err(&self.path, e))?,
            };
            let result = f(&mut conn).map_err(|e| sql_err(&self.path, e));
            if conn.is_autocommit() {
                lock(&self.readers).push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Other(format!("embedded datastore read task: {e}")))?
    }
}

#[async_trait]
impl Datastore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.with_reader(move |conn| {
            let tx = conn.transaction()?;
            let row = latest(&tx, &key)?;
            tx.commit()?;
            Ok(row
                .filter(|(_, _, deleted, _)| !deleted)
                .map(|(rev, created, _, value)| KeyValue {
                    key,
                    value,
                    create_revision: created,
                    mod_revision: rev,
                }))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let prefix = prefix.to_string();
        self.with_reader(move |conn| list_in(conn, &prefix)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let key = key.into();
        self.write(vec![WriteOp::Create { key, value }])
            .await
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
        .await
        .map(|r| r[0])
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let key = key.into();
        self.write(vec![WriteOp::Delete { key, expected }])
            .await
            .map(|r| r[0])
    }

    async fn txn(&self, ops: Vec<WriteOp>) -> Result<Vec<Revision>, StoreError> {
        self.write(ops).await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let rx = self.shared.changed.subscribe();
        Shared::ensure_poller(&self.shared);
        let cursor = Cursor {
            shared: self.shared.clone(),
            rx,
            prefix: prefix.to_string(),
            last: from_revision,
            pending: VecDeque::new(),
        };
        let stream = futures::stream::unfold(cursor, |mut cursor| async move {
            let event = cursor.next().await;
            Some((event, cursor))
        });
        Ok(Box::pin(stream))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.with_reader(|conn| current_revision(conn)).await
    }
}

/// A watcher's position in the log.
struct Cursor {
    shared: Arc<Shared>,
    rx: watch::Receiver<u64>,
    prefix: String,
    /// Last revision delivered (or skipped as not matching the prefix).
    last: Revision,
    pending: VecDeque<WatchEvent>,
}

impl Cursor {
    async fn next(&mut self) -> Result<WatchEvent, StoreError> {
        let mut backoff = POLL_INTERVAL;
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.last = ev.revision();
                return Ok(ev);
            }
            // Mark local commits seen before polling, so one landing after
            // the poll still wakes us at once.
            self.rx.borrow_and_update();
            let prefix = self.prefix.clone();
            let after = self.last;
            match self
                .shared
                .clone()
                .with_reader(move |conn| poll_in(conn, &prefix, after))
                .await
            {
                Ok(Poll::Compacted(listing)) => {
                    tracing::info!(
                        prefix = %self.prefix,
                        from = self.last,
                        "watch history compacted: resyncing"
                    );
                    self.last = listing.revision;
                    return Ok(WatchEvent::Resync(listing));
                }
                Ok(Poll::Events { events, up_to }) => {
                    backoff = POLL_INTERVAL;
                    self.pending.extend(events);
                    if self.pending.is_empty() {
                        self.last = up_to;
                        // Woken by a local commit or by the poller; the
                        // timeout is only a safety net.
                        tokio::select! {
                            _ = self.rx.changed() => {}
                            _ = tokio::time::sleep(SAFETY_POLL) => {}
                        }
                    }
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(prefix = %self.prefix, error = %e, "watch poll failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    // Shown to the watcher; the next poll tries again.
                    tokio::time::sleep(backoff).await;
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "embedded_tests.rs"]
mod tests;
