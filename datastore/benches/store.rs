//! Datastore backends against their raw engines, measured in the same run.
//!
//! * CAS updates/s (one writer, each update conditional on the previous
//!   revision) vs plain writes: SQLite autocommit `INSERT`s through rusqlite
//!   with the same pragmas, and etcd puts straight through `etcd-client`
//!   (no txn).
//! * Watch latency (write start → event delivered), p50/p99, vs the raw
//!   floor: etcd-client's own watch of plain puts; for SQLite, which has no
//!   watch, an INSERT then a SELECT of the new row on a second connection.
//!
//! The two sides of each pair alternate (chunk by chunk, sample by sample),
//! so load from other processes falls on both alike; watch probes start at
//! spread-out times (see `jitter`). The embedded store is
//! measured durable (fsync per commit: the numbers are mostly the disk's)
//! and not durable (synchronous=NORMAL: the numbers are mostly our code's).
//!
//! Run: `cargo bench -p manx-datastore --bench store` (about a minute; the
//! etcd part is skipped when /usr/bin/etcd is missing).

use std::time::{Duration, Instant};

use datastore::embedded::{EmbeddedOptions, EmbeddedStore};
use datastore::etcd::EtcdStore;
use datastore::testing::{EtcdServer, etcd_available};
use datastore::{Datastore, Revision};
use futures::StreamExt;
use tokio::sync::mpsc;

const CAS_N: usize = 400;
const WATCH_N: usize = 200;
/// Chunks the CAS pairs alternate in.
const ROUNDS: usize = 8;

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    Latency {
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn row_rate(name: &str, ours: Duration, base: Duration, base_name: &str) {
    let (ours, base) = (per_sec(CAS_N, ours), per_sec(CAS_N, base));
    println!(
        "{name:<34} {ours:>8.0} /s    {base_name:<34} {base:>8.0} /s    ratio {:.2}",
        ours / base
    );
}

fn row_lat(name: &str, ours: Vec<Duration>, base: Vec<Duration>, base_name: &str) {
    let (ours, base) = (latency(ours), latency(base));
    println!(
        "{name:<34} p50 {:>7.3} ms p99 {:>7.3} ms    {base_name:<34} p50 {:>7.3} ms p99 {:>7.3} ms    ratio(p50) {:.2}",
        ms(ours.p50),
        ms(ours.p99),
        ms(base.p50),
        ms(base.p99),
        ours.p50.as_secs_f64() / base.p50.as_secs_f64()
    );
}

/// A pause of 0..POLL_INTERVAL, spread over the samples, before a probe's
/// write: writes back to back would fall in step with the embedded store's
/// poller and always wait a full interval (or never), which no real writer
/// does.
async fn jitter(i: usize) {
    let step = datastore::embedded::POLL_INTERVAL.as_micros() as u64 / 16;
    tokio::time::sleep(Duration::from_micros((i as u64 * 7 % 16) * step)).await;
}

/// Sequential CAS updates of one key.
struct Cas<'a> {
    store: &'a dyn Datastore,
    key: &'static str,
    rev: Revision,
}

impl<'a> Cas<'a> {
    async fn new(store: &'a dyn Datastore, key: &'static str) -> Self {
        let rev = store.create(key, b"0".to_vec()).await.unwrap();
        Cas { store, key, rev }
    }

    async fn chunk(&mut self, n: usize) -> Duration {
        let t = Instant::now();
        for i in 0..n {
            self.rev = self
                .store
                .update(self.key, i.to_string().into_bytes(), self.rev)
                .await
                .unwrap();
        }
        t.elapsed()
    }
}

/// Watch latency: a consumer task waits on the stream all the time (as a
/// real watcher does) and reports when each revision arrives; a write's
/// latency runs from the start of the write to that arrival.
struct WatchProbe<'a> {
    writer: &'a dyn Datastore,
    arrivals: mpsc::UnboundedReceiver<(Revision, Instant)>,
    key: String,
    rev: Revision,
}

impl<'a> WatchProbe<'a> {
    async fn new(writer: &'a dyn Datastore, watcher: &dyn Datastore, prefix: &str) -> Self {
        let key = format!("{prefix}k");
        let rev = writer.create(&key, vec![]).await.unwrap();
        let mut watch = watcher.watch(prefix, rev).await.unwrap();
        let (tx, arrivals) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(ev)) = watch.next().await {
                if tx.send((ev.revision(), Instant::now())).is_err() {
                    break;
                }
            }
        });
        WatchProbe {
            writer,
            arrivals,
            key,
            rev,
        }
    }

    async fn once(&mut self, i: usize) -> Duration {
        let t = Instant::now();
        self.rev = self
            .writer
            .update(&self.key, i.to_string().into_bytes(), self.rev)
            .await
            .unwrap();
        loop {
            let (rev, at) = self.arrivals.recv().await.unwrap();
            if rev == self.rev {
                return at - t;
            }
        }
    }
}

/// Plain SQLite with the store's pragmas.
struct RawSqlite {
    writer: rusqlite::Connection,
    reader: rusqlite::Connection,
}

impl RawSqlite {
    fn open(path: &std::path::Path, durable: bool) -> Self {
        let sync = if durable { "FULL" } else { "NORMAL" };
        let writer = rusqlite::Connection::open(path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "synchronous", sync).unwrap();
        writer
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, k BLOB, v BLOB)")
            .unwrap();
        let reader = rusqlite::Connection::open(path).unwrap();
        RawSqlite { writer, reader }
    }

    fn insert(&self, i: usize) -> i64 {
        self.writer
            .prepare_cached("INSERT INTO t (k, v) VALUES (?1, ?2)")
            .unwrap()
            .execute(rusqlite::params![
                b"/bench/k".as_slice(),
                i.to_string().as_bytes()
            ])
            .unwrap();
        self.writer.last_insert_rowid()
    }

    fn chunk(&self, n: usize) -> Duration {
        let t = Instant::now();
        for i in 0..n {
            self.insert(i);
        }
        t.elapsed()
    }

    /// INSERT, then read the row back on the other connection.
    fn visible_once(&self, i: usize) -> Duration {
        let t = Instant::now();
        let id = self.insert(i);
        let v: Vec<u8> = self
            .reader
            .prepare_cached("SELECT v FROM t WHERE id = ?1")
            .unwrap()
            .query_row([id], |r| r.get(0))
            .unwrap();
        assert_eq!(v, i.to_string().into_bytes());
        t.elapsed()
    }
}

async fn bench_embedded(durable: bool) {
    let tag = if durable { "durable" } else { "sync=NORMAL" };
    let dir = tempfile::tempdir().unwrap();
    let raw = RawSqlite::open(&dir.path().join("baseline.db"), durable);
    let opts = EmbeddedOptions {
        durable,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path().join("manx.db"), opts)
        .await
        .unwrap();
    let mut cas = Cas::new(&store, "/bench/cas").await;
    // Steady state: a WAL still growing pays a metadata journal commit per
    // fsync; past its first checkpoint (1000 pages) it is rewritten in
    // place. Warm both files past that point (a CAS writes ~4 pages, an
    // insert ~1) so both are measured in the same regime.
    raw.chunk(1_200);
    cas.chunk(400).await;
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        base += raw.chunk(CAS_N / ROUNDS);
        ours += cas.chunk(CAS_N / ROUNDS).await;
    }
    row_rate(
        &format!("embedded CAS update ({tag})"),
        ours,
        base,
        "rusqlite INSERT",
    );

    // Same handle: woken by the in-process notification. Other handle: as
    // another process sees it, by polling every POLL_INTERVAL.
    let other = EmbeddedStore::open_with(store.path(), opts).await.unwrap();
    let mut same = WatchProbe::new(&store, &store, "/bench/w1/").await;
    let mut far = WatchProbe::new(&store, &other, "/bench/w2/").await;
    let (mut s_same, mut s_far, mut s_base) = (vec![], vec![], vec![]);
    for i in 0..WATCH_N {
        s_base.push(raw.visible_once(i));
        jitter(i).await;
        s_same.push(same.once(i).await);
        jitter(i + 1).await;
        s_far.push(far.once(i).await);
    }
    let base_name = "INSERT + SELECT on 2nd conn";
    row_lat(
        &format!("embedded watch, same handle ({tag})"),
        s_same,
        s_base.clone(),
        base_name,
    );
    row_lat(
        &format!("embedded watch, other handle ({tag})"),
        s_far,
        s_base,
        base_name,
    );
}

/// Raw etcd-client: plain puts, and its own watch read by a task that
/// waits on it all the time.
struct RawEtcd {
    client: etcd_client::Client,
    arrivals: mpsc::UnboundedReceiver<(Revision, Instant)>,
}

impl RawEtcd {
    async fn connect(endpoint: &str) -> Self {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        let mut watch = client.watch("/raw/watch", None).await.unwrap();
        // The first message confirms the watch is created.
        watch.message().await.unwrap();
        let (tx, arrivals) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(resp)) = watch.message().await {
                let at = Instant::now();
                for ev in resp.events() {
                    if let Some(kv) = ev.kv() {
                        let _ = tx.send((kv.mod_revision(), at));
                    }
                }
            }
        });
        RawEtcd { client, arrivals }
    }

    async fn chunk(&mut self, n: usize) -> Duration {
        let t = Instant::now();
        for i in 0..n {
            self.client
                .put("/raw/put", i.to_string(), None)
                .await
                .unwrap();
        }
        t.elapsed()
    }

    async fn watch_once(&mut self, i: usize) -> Duration {
        let t = Instant::now();
        let rev = self
            .client
            .put("/raw/watch", i.to_string(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        loop {
            let (seen, at) = self.arrivals.recv().await.unwrap();
            if seen == rev {
                return at - t;
            }
        }
    }
}

async fn bench_etcd() {
    if !etcd_available() {
        println!("etcd: skipped: /usr/bin/etcd not installed (apt-get install etcd-server)");
        return;
    }
    let server = EtcdServer::start().await.unwrap();
    let mut raw = RawEtcd::connect(&server.endpoint()).await;
    let store = EtcdStore::connect(server.config()).await.unwrap();
    let mut cas = Cas::new(&store, "/bench/cas").await;
    raw.chunk(100).await;
    cas.chunk(100).await;
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        base += raw.chunk(CAS_N / ROUNDS).await;
        ours += cas.chunk(CAS_N / ROUNDS).await;
    }
    row_rate(
        "etcd CAS update (txn)",
        ours,
        base,
        "etcd-client put (no txn)",
    );
    let mut probe = WatchProbe::new(&store, &store, "/bench/w/").await;
    let (mut s_ours, mut s_base) = (vec![], vec![]);
    for i in 0..WATCH_N {
        jitter(i).await;
        s_base.push(raw.watch_once(i).await);
        jitter(i + 1).await;
        s_ours.push(probe.once(i).await);
    }
    row_lat(
        "etcd watch (EtcdStore)",
        s_ours,
        s_base,
        "etcd-client raw watch",
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: do
    // nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("store bench: run with `cargo bench` to measure");
        return;
    }
    println!(
        "Datastore backends vs raw engines ({CAS_N} sequential writes, {WATCH_N} watch round trips)"
    );
    bench_embedded(true).await;
    bench_embedded(false).await;
    bench_etcd().await;
}
