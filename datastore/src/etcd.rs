//! The etcd v3 backend (`etcd-client`), with TLS and user/password auth.
//!
//! * `create` is a txn `CreateRevision(key) == 0 → Put`.
//! * `update` is a txn `ModRevision(key) == expected ∧ CreateRevision(key) > 0
//!   → Put`, else `Get` to tell `NotFound` from `Conflict`.
//! * `delete` is the same with `Delete`.
//! * `list` pages through the range at one fixed revision.
//! * `watch` starts at `from + 1` and, when the stream breaks, re-watches from
//!   the last revision delivered (+1) with exponential backoff, so no event is
//!   lost or repeated. A `compact_revision` answer becomes a fresh listing
//!   sent as [`WatchEvent::Resync`].

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KvClient, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};

use crate::store::{
    Datastore, KeyValue, Listing, Revision, StoreError, WatchEvent, WatchStream, WriteOp,
    check_txn, prefix_end,
};

/// Keys fetched per page by `list`.
const LIST_PAGE: i64 = 1000;

/// The largest response we accept. gRPC's default (4 MiB) is less than a
/// page of [`LIST_PAGE`] full IPAM blocks (a /26 block with 64 allocations
/// and their attributes is several KiB), and one etcd value may be up to
/// etcd's `--max-request-bytes` (1.5 MiB by default).
const MAX_RESPONSE: usize = 256 << 20;
/// Longest wait between watch reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How to reach etcd. Build it from flags or a config file, or with
/// [`crate::config::DatastoreConfig::from_env`].
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `https://host:2379` or `http://host:2379` (a bare `host:port` is
    /// http, or https when TLS files are given).
    pub endpoints: Vec<String>,
    /// PEM CA bundle that signed the etcd server certificates.
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate (with `key`) for mutual TLS.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    pub username: Option<String>,
    /// Never logged: `Debug` shows it redacted.
    pub password: Option<String>,
    /// Timeout of connecting to one endpoint.
    pub dial_timeout: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Prepended to every key (e.g. `/manx`), stripped from results.
    pub key_prefix: String,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            ca_cert: None,
            cert: None,
            key: None,
            username: None,
            password: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            key_prefix: String::new(),
        }
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("ca_cert", &self.ca_cert)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dial_timeout", &self.dial_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl EtcdConfig {
    fn read_pem(what: &str, env: &str, path: &PathBuf) -> Result<Vec<u8>, StoreError> {
        std::fs::read(path).map_err(|e| {
            StoreError::Config(format!(
                "cannot read etcd {what} {}: {e}; check {env}",
                path.display()
            ))
        })
    }

    fn connect_options(&self) -> Result<ConnectOptions, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_timeout(self.request_timeout)
            // Dead connections must be noticed, or a watch would hang on a
            // half-open TCP connection forever.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum fails requests instead of
            // serving them stale or hanging, so we move to another member.
            .with_require_leader(true);
        if let (Some(user), Some(password)) = (&self.username, &self.password) {
            opts = opts
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        } else if self.username.is_some() {
            return Err(StoreError::Config(
                "ETCD_USERNAME is set but ETCD_PASSWORD is empty: set both or neither".into(),
            ));
        }
        if self.ca_cert.is_some() || self.cert.is_some() || self.key.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(Self::read_pem(
                    "CA certificate",
                    "ETCD_CA_CERT_FILE",
                    ca,
                )?));
            }
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(
                        Self::read_pem("client certificate", "ETCD_CERT_FILE", cert)?,
                        Self::read_pem("client key", "ETCD_KEY_FILE", key)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(StoreError::Config(
                        "ETCD_CERT_FILE and ETCD_KEY_FILE go together: set both or neither".into(),
                    ));
                }
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }
}

/// The etcd-backed store. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    request_timeout: Duration,
    endpoints: Vec<String>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("key_prefix", &self.prefix)
            .finish()
    }
}

/// Which failures a request may be retried after.
#[derive(Debug, Clone, Copy)]
enum Retry {
    Any,
    NotSent,
}

/// Whether the request surely never reached etcd (the connection to the
/// chosen member could not be made).
fn not_sent(e: &etcd_client::Error) -> bool {
    let msg = match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
        etcd_client::Error::TransportError(t) => t.to_string(),
        _ => return false,
    };
    msg.contains("connect")
}

/// Turn an etcd client error into a [`StoreError`] naming what failed.
fn map_err(what: &str, timeout: Duration, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    use tonic::Code;
    match e {
        E::GRpcStatus(s) => match s.code() {
            Code::Unauthenticated | Code::PermissionDenied => StoreError::Denied(format!(
                "{what}: {}; check ETCD_USERNAME/ETCD_PASSWORD and the user's roles",
                s.message()
            )),
            Code::DeadlineExceeded => StoreError::Timeout(timeout),
            // tonic reports a broken connection (a member killed under an
            // in-flight request) as `Unknown: transport error`.
            Code::Unavailable | Code::Cancelled | Code::Aborted | Code::Unknown => {
                let hint = if s.message().contains("certificate") {
                    "; check ETCD_CA_CERT_FILE, ETCD_CERT_FILE and ETCD_KEY_FILE"
                } else {
                    ""
                };
                StoreError::Unavailable(format!("{what}: {}{hint}", s.message()))
            }
            Code::InvalidArgument | Code::FailedPrecondition
                if s.message().contains("user name") || s.message().contains("auth") =>
            {
                StoreError::Denied(format!("{what}: {}", s.message()))
            }
            _ => StoreError::Other(format!("{what}: {}", s.message())),
        },
        E::TransportError(t) => StoreError::Unavailable(format!(
            "{what}: {t}; check ETCD_ENDPOINTS and that etcd is running"
        )),
        E::IoError(io) => StoreError::Unavailable(format!("{what}: {io}")),
        E::InvalidUri(u) => StoreError::Config(format!(
            "bad etcd endpoint: {u}; use ETCD_ENDPOINTS=https://host:2379"
        )),
        E::InvalidArgs(a) => StoreError::Config(format!("{what}: {a}")),
        other => StoreError::Other(format!("{what}: {other}")),
    }
}

impl EtcdStore {
    /// Connect and check that etcd answers (a first request within
    /// `dial_timeout + request_timeout`).
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        if config.endpoints.iter().all(|e| e.trim().is_empty()) {
            return Err(StoreError::Config(
                "no etcd endpoints: set ETCD_ENDPOINTS=https://host:2379".into(),
            ));
        }
        let opts = config.connect_options()?;
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        let what = format!("connect to etcd {}", endpoints.join(","));
        let client = tokio::time::timeout(
            config.dial_timeout + config.request_timeout,
            Client::connect(&endpoints, Some(opts)),
        )
        .await
        .map_err(|_| StoreError::Timeout(config.dial_timeout + config.request_timeout))?
        .map_err(|e| map_err(&what, config.request_timeout, e))?;
        let store = EtcdStore {
            client,
            prefix: config.key_prefix.clone(),
            request_timeout: config.request_timeout,
            endpoints,
        };
        store.revision().await.map_err(|e| match e {
            StoreError::Unavailable(m) => StoreError::Unavailable(format!(
                "{what}: {m}; check ETCD_ENDPOINTS and that etcd is running"
            )),
            other => other,
        })?;
        tracing::debug!(endpoints = ?store.endpoints, "connected to etcd");
        Ok(store)
    }

    /// The underlying client, for operations outside the trait (compaction,
    /// cluster status).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Compact etcd's history up to `revision` (watchers that need events at
    /// or before it get [`WatchEvent::Resync`]).
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call("compact", Retry::Any, |mut kv| async move {
            kv.compact(revision, None).await
        })
        .await?;
        Ok(())
    }

    fn full(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    /// Start key of the range under `prefix`: etcd refuses an empty key,
    /// and `\0` is the smallest non-empty one.
    fn range_start(&self, prefix: &str) -> Vec<u8> {
        let start = self.full(prefix);
        if start.is_empty() { vec![0] } else { start }
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        let key = std::str::from_utf8(kv.key())
            .map_err(|_| StoreError::Other(format!("etcd key {:?} is not UTF-8", kv.key())))?;
        Ok(KeyValue {
            key: key.strip_prefix(&self.prefix).unwrap_or(key).to_string(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// Run one request with the request timeout. Transient failures are
    /// retried until that timeout: any of them for `Retry::Any` (reads, and
    /// writes whose replay is harmless), only connection failures — where
    /// the request never left — for `Retry::NotSent` (a replayed CAS whose
    /// first attempt landed would report a false conflict).
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        retry: Retry,
        mut attempt: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let err = match tokio::time::timeout(
                left,
                attempt(
                    self.client
                        .kv_client()
                        .max_decoding_message_size(MAX_RESPONSE),
                ),
            )
            .await
            {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => return Err(StoreError::Timeout(self.request_timeout)),
            };
            let again = match retry {
                Retry::Any => true,
                Retry::NotSent => not_sent(&err),
            };
            let err = map_err(what, self.request_timeout, err);
            if !again || !err.is_transient() || tokio::time::Instant::now() + pause >= deadline {
                return Err(err);
            }
            tracing::debug!(error = %err, "etcd request failed, retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Run guarded writes in one etcd txn: `every guard → every write`,
    /// else read each key back to say which op failed and why.
    async fn guarded(&self, what: &str, ops: Vec<WriteOp>) -> Result<Vec<Revision>, StoreError> {
        check_txn(&ops)?;
        let (mut guard, mut writes, mut reads) = (Vec::new(), Vec::new(), Vec::new());
        for op in &ops {
            let full = self.full(op.key());
            let exists = Compare::create_revision(full.clone(), CompareOp::Greater, 0);
            match op {
                WriteOp::Create { value, .. } => {
                    guard.push(Compare::create_revision(full.clone(), CompareOp::Equal, 0));
                    writes.push(TxnOp::put(full.clone(), value.clone(), None));
                }
                WriteOp::Update {
                    value, expected, ..
                } => {
                    guard.push(Compare::mod_revision(
                        full.clone(),
                        CompareOp::Equal,
                        *expected,
                    ));
                    guard.push(exists);
                    writes.push(TxnOp::put(full.clone(), value.clone(), None));
                }
                WriteOp::Delete { expected, .. } => {
                    guard.push(exists);
                    if let Some(expected) = expected {
                        guard.push(Compare::mod_revision(
                            full.clone(),
                            CompareOp::Equal,
                            *expected,
                        ));
                    }
                    writes.push(TxnOp::delete(full.clone(), None));
                }
            }
            reads.push(TxnOp::get(full, None));
        }
        let txn = Txn::new().when(guard).and_then(writes).or_else(reads);
        let label = match ops.as_slice() {
            [op] => format!("{what} {}", op.key()),
            [op, ..] => format!("{what} {} (+{} more keys)", op.key(), ops.len() - 1),
            [] => what.to_string(),
        };
        let resp = self
            .call(&label, Retry::NotSent, |mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        if resp.succeeded() {
            return Ok(vec![revision; ops.len()]);
        }
        let found = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        for (op, found) in ops.iter().zip(found) {
            let key = op.key().to_string();
            match (op, found) {
                (WriteOp::Create { .. }, Some(_)) => return Err(StoreError::AlreadyExists { key }),
                (WriteOp::Create { .. }, None) => {}
                (_, None) => return Err(StoreError::NotFound { key }),
                (WriteOp::Update { expected, .. }, Some(found))
                | (
                    WriteOp::Delete {
                        expected: Some(expected),
                        ..
                    },
                    Some(found),
                ) if *expected != found => {
                    return Err(StoreError::Conflict {
                        key,
                        expected: *expected,
                        found,
                    });
                }
                _ => {}
            }
        }
        Err(StoreError::Other(format!(
            "{label}: etcd refused the transaction but every key read back matches; retry"
        )))
    }

    fn range_end(&self, prefix: &str) -> Vec<u8> {
        // `[0]` as range end means "every key from the start key on".
        prefix_end(&self.full(prefix)).unwrap_or_else(|| vec![0])
    }
}

/// etcd's default `--max-txn-ops`.
const ETCD_DEFAULT_MAX_TXN_OPS: usize = 128;

#[async_trait]
impl Datastore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let full = self.full(key);
        let resp = self
            .call(&format!("get {key}"), Retry::Any, |mut kv| {
                let full = full.clone();
                async move { kv.get(full, None).await }
            })
            .await?;
        resp.kvs().first().map(|kv| self.to_kv(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let end = self.range_end(prefix);
        let mut items = Vec::new();
        let mut start = self.range_start(prefix);
        let mut revision = 0;
        loop {
            let mut opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_PAGE);
            if revision > 0 {
                // Later pages read the same snapshot as the first.
                opts = opts.with_revision(revision);
            }
            let resp = self
                .call(&format!("list {prefix}"), Retry::Any, |mut kv| {
                    let (start, opts) = (start.clone(), opts.clone());
                    async move { kv.get(start, Some(opts)).await }
                })
                .await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            for kv in resp.kvs() {
                items.push(self.to_kv(kv)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing { items, revision })
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let key = key.into();
        self.guarded("create", vec![WriteOp::Create { key, value }])
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
        let op = WriteOp::Update {
            key,
            value,
            expected,
        };
        self.guarded("update", vec![op]).await.map(|r| r[0])
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let key = key.into();
        self.guarded("delete", vec![WriteOp::Delete { key, expected }])
            .await
            .map(|r| r[0])
    }

    async fn txn(&self, ops: Vec<WriteOp>) -> Result<Vec<Revision>, StoreError> {
        self.guarded("txn", ops).await
    }

    fn max_txn_ops(&self) -> usize {
        // etcd's default --max-txn-ops is 128 and counts compares too; a
        // guarded op carries up to two compares (exists + mod revision).
        ETCD_DEFAULT_MAX_TXN_OPS / 2
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let cursor = WatchCursor {
            store: self.clone(),
            prefix: prefix.to_string(),
            last: from_revision,
            stream: None,
            pending: VecDeque::new(),
            backoff: Duration::from_millis(50),
        };
        let stream = futures::stream::unfold(cursor, |mut cursor| async move {
            let item = cursor.next().await;
            Some((item, cursor))
        });
        Ok(Box::pin(stream))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        // A linearizable read of one key: its header carries the store
        // revision. The key under our prefix is one a user limited to that
        // prefix may read.
        let probe = self.range_start("");
        let read = self
            .call("read revision", Retry::Any, |mut kv| {
                let probe = probe.clone();
                async move {
                    kv.get(probe, Some(GetOptions::new().with_count_only()))
                        .await
                }
            })
            .await;
        match read {
            Ok(resp) => Ok(resp.header().map(|h| h.revision()).unwrap_or(0)),
            // A user with rights on sub-prefixes only: ask the member's
            // status instead (no key rights needed; may trail the leader by
            // a few revisions, which only makes a watch replay a little).
            Err(StoreError::Denied(_)) => {
                let mut m = self.client.maintenance_client();
                let status = tokio::time::timeout(self.request_timeout, m.status())
                    .await
                    .map_err(|_| StoreError::Timeout(self.request_timeout))?
                    .map_err(|e| map_err("read revision", self.request_timeout, e))?;
                Ok(status.header().map(|h| h.revision()).unwrap_or(0))
            }
            Err(e) => Err(e),
        }
    }
}

/// A watcher's position; owns the etcd watch stream while it is up.
struct WatchCursor {
    store: EtcdStore,
    prefix: String,
    /// Last revision delivered (or confirmed by a progress notification).
    last: Revision,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<WatchEvent>,
    backoff: Duration,
}

impl WatchCursor {
    async fn wait_backoff(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    async fn next(&mut self) -> Result<WatchEvent, StoreError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.last = ev.revision();
                return Ok(ev);
            }
            let Some(stream) = self.stream.as_mut() else {
                let opts = WatchOptions::new()
                    .with_range(self.store.range_end(&self.prefix))
                    .with_start_revision(self.last + 1)
                    .with_progress_notify();
                let mut client = self
                    .store
                    .client
                    .watch_client()
                    .max_decoding_message_size(MAX_RESPONSE);
                let what = format!("watch {}", self.prefix);
                let start = self.store.range_start(&self.prefix);
                let created = tokio::time::timeout(
                    self.store.request_timeout,
                    client.watch(start, Some(opts)),
                )
                .await
                .map_err(|_| StoreError::Timeout(self.store.request_timeout))
                .and_then(|r| r.map_err(|e| map_err(&what, self.store.request_timeout, e)));
                match created {
                    Ok(s) => self.stream = Some(s),
                    Err(e) if e.is_transient() => {
                        tracing::debug!(prefix = %self.prefix, error = %e, "watch: reconnecting");
                        self.wait_backoff().await;
                    }
                    Err(e) => {
                        self.wait_backoff().await;
                        return Err(e);
                    }
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        // Our start revision is gone: relist and go on from
                        // the listing's revision.
                        self.stream = None;
                        tracing::info!(
                            prefix = %self.prefix,
                            from = self.last,
                            compacted = resp.compact_revision(),
                            "watch history compacted: resyncing"
                        );
                        match self.store.list(&self.prefix).await {
                            Ok(listing) => {
                                self.last = listing.revision;
                                return Ok(WatchEvent::Resync(listing));
                            }
                            Err(e) => {
                                self.wait_backoff().await;
                                if !e.is_transient() {
                                    return Err(e);
                                }
                                continue;
                            }
                        }
                    }
                    if resp.canceled() && resp.cancel_reason().contains("permission denied") {
                        self.stream = None;
                        let reason = resp.cancel_reason().to_string();
                        self.wait_backoff().await;
                        return Err(StoreError::Denied(format!(
                            "watch {}: {reason}; check the etcd user's roles",
                            self.prefix
                        )));
                    }
                    if resp.canceled() {
                        tracing::debug!(
                            prefix = %self.prefix,
                            reason = resp.cancel_reason(),
                            "watch canceled by etcd: rewatching"
                        );
                        self.stream = None;
                        self.wait_backoff().await;
                        continue;
                    }
                    self.backoff = Duration::from_millis(50);
                    if !resp.created() && resp.events().is_empty() {
                        // Progress notification: everything up to the
                        // header's revision has been sent.
                        if let Some(h) = resp.header() {
                            self.last = self.last.max(h.revision());
                        }
                        continue;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        // Guard against replays after a reconnect.
                        if kv.mod_revision() <= self.last {
                            continue;
                        }
                        let kv = match self.store.to_kv(kv) {
                            Ok(kv) => kv,
                            Err(e) => {
                                tracing::warn!(error = %e, "watch: skipping event");
                                continue;
                            }
                        };
                        self.pending.push_back(match ev.event_type() {
                            EventType::Put => WatchEvent::Put(kv),
                            EventType::Delete => WatchEvent::Delete {
                                key: kv.key,
                                revision: kv.mod_revision,
                            },
                        });
                    }
                }
                Ok(None) => {
                    tracing::debug!(prefix = %self.prefix, "watch stream closed: rewatching");
                    self.stream = None;
                    self.wait_backoff().await;
                }
                Err(e) => {
                    let e = map_err("watch", self.store.request_timeout, e);
                    tracing::debug!(prefix = %self.prefix, error = %e, "watch stream broke: rewatching");
                    self.stream = None;
                    self.wait_backoff().await;
                    if matches!(e, StoreError::Denied(_)) {
                        return Err(e);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_password() {
        let cfg = EtcdConfig {
            username: Some("root".into()),
            password: Some("hunter2".into()),
            ..EtcdConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn half_tls_config_is_refused() {
        let cfg = EtcdConfig {
            cert: Some("/nonexistent/cert.pem".into()),
            ..EtcdConfig::default()
        };
        let err = cfg.connect_options().unwrap_err().to_string();
        assert!(err.contains("ETCD_CERT_FILE"), "{err}");
    }

    #[test]
    fn unreadable_ca_names_file_and_variable() {
        let cfg = EtcdConfig {
            ca_cert: Some("/nonexistent/ca.pem".into()),
            ..EtcdConfig::default()
        };
        let err = cfg.connect_options().unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("ETCD_CA_CERT_FILE"),
            "{err}"
        );
    }
}
