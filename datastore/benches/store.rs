//! Datastore backends against their raw engines, measured in the same run.
//!
//! * CAS updates/s (one writer, each update conditional on the previous
//!   revision) vs plain writes: SQLite `INSERT`s through rusqlite with the
//!   same pragmas (WAL, synchronous=FULL), and etcd puts straight through
//!   `etcd-client` (no txn).
//! * Watch latency (write start → event delivered), p50/p99, vs the raw
//!   floor: etcd-client's own watch of plain puts; for SQLite, which has no
//!   watch, the plain insert latency (the least any watch could add to).
//!
//! Run: `cargo bench -p manx-datastore --bench store` (about a minute; the
//! etcd part is skipped when /usr/bin/etcd is missing).

use std::time::{Duration, Instant};

use datastore::Datastore;
use datastore::embedded::EmbeddedStore;
use datastore::etcd::EtcdStore;
use datastore::testing::{EtcdServer, etcd_available};
use futures::StreamExt;

const CAS_N: usize = 400;
const WATCH_N: usize = 200;

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
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
    Latency {
        p50: pct(&samples, 0.5),
        p99: pct(&samples, 0.99),
    }
}

fn row_rate(name: &str, ours: f64, base: f64, base_name: &str) {
    println!(
        "{name:<34} {ours:>10.0} /s   {base_name:<28} {base:>10.0} /s   ratio {:.2}",
        ours / base
    );
}

fn row_lat(name: &str, ours: &Latency, base: &Latency, base_name: &str) {
    println!(
        "{name:<34} p50 {:>7.3} ms  p99 {:>7.3} ms   {base_name:<28} p50 {:>7.3} ms  p99 {:>7.3} ms   ratio(p50) {:.2}",
        ms(ours.p50),
        ms(ours.p99),
        ms(base.p50),
        ms(base.p99),
        ours.p50.as_secs_f64() / base.p50.as_secs_f64()
    );
}

/// Rounds the measured pairs alternate in, so load from other processes on
/// the machine falls on both sides alike.
const ROUNDS: usize = 8;

/// `ROUNDS` chunks of sequential CAS updates of one key; returns the time
/// each chunk took.
struct Cas<'a> {
    store: &'a dyn Datastore,
    key: &'static str,
    rev: i64,
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

/// Write then wait for the watcher (on `watcher`) to deliver it.
async fn watch_latency(writer: &dyn Datastore, watcher: &dyn Datastore, prefix: &str) -> Latency {
    let key = format!("{prefix}k");
    let mut rev = writer.create(&key, vec![]).await.unwrap();
    let mut w = watcher.watch(prefix, rev).await.unwrap();
    let mut samples = Vec::with_capacity(WATCH_N);
    for i in 0..WATCH_N {
        let t = Instant::now();
        rev = writer
            .update(&key, i.to_string().into_bytes(), rev)
            .await
            .unwrap();
        loop {
            let ev = w.next().await.unwrap().unwrap();
            if ev.revision() == rev {
                break;
            }
        }
        samples.push(t.elapsed());
    }
    latency(samples)
}

/// Plain SQLite: autocommit INSERTs with the store's pragmas, and for the
/// watch floor, INSERT then SELECT of the new row on a second connection.
struct RawSqlite {
    writer: rusqlite::Connection,
    reader: rusqlite::Connection,
}

impl RawSqlite {
    fn open(path: &std::path::Path) -> Self {
        let writer = rusqlite::Connection::open(path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "synchronous", "FULL").unwrap();
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

    fn visible_latency(&self) -> Latency {
        let mut samples = Vec::with_capacity(WATCH_N);
        for i in 0..WATCH_N {
            let t = Instant::now();
            let id = self.insert(i);
            let v: Vec<u8> = self
                .reader
                .prepare_cached("SELECT v FROM t WHERE id = ?1")
                .unwrap()
                .query_row([id], |r| r.get(0))
                .unwrap();
            assert_eq!(v, i.to_string().into_bytes());
            samples.push(t.elapsed());
        }
        latency(samples)
    }
}

async fn bench_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let raw = RawSqlite::open(&dir.path().join("baseline.db"));
    let store = EmbeddedStore::open(dir.path().join("manx.db"))
        .await
        .unwrap();
    let mut cas = Cas::new(&store, "/bench/cas").await;
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        base += raw.chunk(CAS_N / ROUNDS);
        ours += cas.chunk(CAS_N / ROUNDS).await;
    }
    row_rate(
        "embedded CAS update",
        per_sec(CAS_N, ours),
        per_sec(CAS_N, base),
        "rusqlite INSERT (autocommit)",
    );
    let base_lat = raw.visible_latency();
    let lat = watch_latency(&store, &store, "/bench/w1/").await;
    row_lat(
        "embedded watch (same handle)",
        &lat,
        &base_lat,
        "INSERT + SELECT elsewhere",
    );
    // A second handle has no in-process wake-up: this is what another
    // process sees (polling every POLL_INTERVAL).
    let other = EmbeddedStore::open(store.path()).await.unwrap();
    let lat = watch_latency(&store, &other, "/bench/w2/").await;
    row_lat(
        "embedded watch (other handle)",
        &lat,
        &base_lat,
        "INSERT + SELECT elsewhere",
    );
}

async fn raw_put_chunk(client: &mut etcd_client::Client, n: usize) -> Duration {
    let t = Instant::now();
    for i in 0..n {
        client.put("/raw/put", i.to_string(), None).await.unwrap();
    }
    t.elapsed()
}

async fn raw_watch_latency(client: &mut etcd_client::Client) -> Latency {
    let mut watch = client.watch("/raw/watch", None).await.unwrap();
    // The first message confirms the watch is created.
    watch.message().await.unwrap();
    let mut samples = Vec::with_capacity(WATCH_N);
    for i in 0..WATCH_N {
        let t = Instant::now();
        let rev = client
            .put("/raw/watch", i.to_string(), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        loop {
            let resp = watch.message().await.unwrap().unwrap();
            if resp
                .events()
                .iter()
                .any(|e| e.kv().is_some_and(|kv| kv.mod_revision() == rev))
            {
                break;
            }
        }
        samples.push(t.elapsed());
    }
    latency(samples)
}

async fn bench_etcd() {
    if !etcd_available() {
        println!("etcd: skipped: /usr/bin/etcd not installed (apt-get install etcd-server)");
        return;
    }
    let server = EtcdServer::start().await.unwrap();
    let mut client = etcd_client::Client::connect([server.endpoint()], None)
        .await
        .unwrap();
    let store = EtcdStore::connect(server.config()).await.unwrap();
    let mut cas = Cas::new(&store, "/bench/cas").await;
    let (mut ours, mut base) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..ROUNDS {
        base += raw_put_chunk(&mut client, CAS_N / ROUNDS).await;
        ours += cas.chunk(CAS_N / ROUNDS).await;
    }
    row_rate(
        "etcd CAS update (txn)",
        per_sec(CAS_N, ours),
        per_sec(CAS_N, base),
        "etcd-client put (no txn)",
    );
    let base_lat = raw_watch_latency(&mut client).await;
    let lat = watch_latency(&store, &store, "/bench/w/").await;
    row_lat(
        "etcd watch (EtcdStore)",
        &lat,
        &base_lat,
        "etcd-client raw watch",
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with
    // no such flag: do a quick pass only then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("store bench: run with `cargo bench` to measure");
        return;
    }
    println!(
        "Datastore backends vs raw engines ({CAS_N} sequential writes, {WATCH_N} watch round trips)"
    );
    bench_embedded().await;
    bench_etcd().await;
}
