//! Several OS processes share one embedded store file: CAS increments from
//! all of them lose no update, and a watcher in the parent sees the
//! children's writes (by polling the log, not by in-process notification).
//!
//! The test binary runs itself as the child: with `MANX_CAS_CHILD_DB` set,
//! the same test function does the child's part and exits.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use datastore::embedded::EmbeddedStore;
use datastore::{Datastore, StoreError, WatchEvent};
use futures::StreamExt;

const CHILD_DB: &str = "MANX_CAS_CHILD_DB";
const PROCESSES: usize = 3;
const INCREMENTS: u64 = 30;
const TEST_NAME: &str = "embedded_processes_share_one_file_without_lost_updates";

/// The child: `INCREMENTS` CAS increments of `/counter`, printing each
/// winning revision as `won <rev> <value>`.
async fn child(path: &str) {
    let store = EmbeddedStore::open(path).await.unwrap();
    for _ in 0..INCREMENTS {
        loop {
            let kv = store.get("/counter").await.unwrap().unwrap();
            let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
            match store
                .update(
                    "/counter",
                    (n + 1).to_string().into_bytes(),
                    kv.mod_revision,
                )
                .await
            {
                Ok(rev) => {
                    println!("won {rev} {}", n + 1);
                    break;
                }
                Err(StoreError::Conflict { .. }) => continue,
                // Another process held the write lock past the busy timeout.
                Err(e) if e.is_transient() => continue,
                Err(e) => panic!("child {}: {e}", std::process::id()),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_processes_share_one_file_without_lost_updates() {
    if let Ok(path) = std::env::var(CHILD_DB) {
        child(&path).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = EmbeddedStore::open(&path).await.unwrap();
    let start = store.create("/counter", b"0".to_vec()).await.unwrap();
    let mut watch = store.watch("/", start).await.unwrap();

    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
                .env(CHILD_DB, &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap();

    let mut won = HashSet::new();
    let mut values = HashSet::new();
    for out in &outputs {
        assert!(
            out.status.success(),
            "child failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        // libtest may print its own "test ... " prefix on the first line.
        let lines: Vec<_> = text
            .lines()
            .filter_map(|l| l.find("won ").map(|i| &l[i..]))
            .collect();
        assert_eq!(lines.len() as u64, INCREMENTS, "child output:\n{text}");
        for line in lines {
            let mut parts = line.split_whitespace().skip(1);
            let rev: i64 = parts.next().unwrap().parse().unwrap();
            let value: u64 = parts.next().unwrap().parse().unwrap();
            assert!(won.insert(rev), "revision {rev} won by two writers");
            assert!(
                values.insert(value),
                "value {value} written twice: a lost update"
            );
        }
    }
    let total = PROCESSES as u64 * INCREMENTS;
    let kv = store.get("/counter").await.unwrap().unwrap();
    assert_eq!(kv.value, total.to_string().into_bytes());
    assert_eq!(values, (1..=total).collect::<HashSet<_>>());

    // The parent's watch saw every child write, in revision order.
    let mut seen = Vec::new();
    while seen.len() < total as usize {
        let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .expect("watch: no event within 30 s")
            .unwrap()
            .unwrap();
        match ev {
            WatchEvent::Put(kv) => seen.push(kv.mod_revision),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut expected: Vec<_> = won.into_iter().collect();
    expected.sort();
    assert_eq!(seen, expected);
}
