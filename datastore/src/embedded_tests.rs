//! Tests of the embedded store's own behaviour (the backend-independent
//! ones are in `tests/conformance*.rs`).

use futures::StreamExt;

use super::*;

#[tokio::test]
async fn open_names_the_path_when_directory_cannot_be_made() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = EmbeddedStore::open(blocker.join("sub/manx.db"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("file/sub"), "{err}");
    assert!(err.contains("MANX_DB"), "{err}");
}

#[tokio::test]
async fn survives_reopen_with_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let s = EmbeddedStore::open(&path).await.unwrap();
    let r1 = s.create("/k", b"1".to_vec()).await.unwrap();
    let r2 = s.update("/k", b"2".to_vec(), r1).await.unwrap();
    s.delete("/k", Some(r2)).await.unwrap();
    let r4 = s.create("/k", b"3".to_vec()).await.unwrap();
    drop(s);
    let s = EmbeddedStore::open(&path).await.unwrap();
    let kv = s.get("/k").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r4, r4));
    assert_eq!(s.revision().await.unwrap(), 4);
}

#[tokio::test]
async fn compaction_keeps_live_keys_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path().join("m.db")).await.unwrap();
    let a = s.create("/a", b"1".to_vec()).await.unwrap();
    s.update("/a", b"2".to_vec(), a).await.unwrap();
    s.create("/b", b"1".to_vec()).await.unwrap();
    s.delete("/b", None).await.unwrap();
    s.compact(9).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), 4);
    assert_eq!(s.revision().await.unwrap(), 4);
    let l = s.list("").await.unwrap();
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].value, b"2");
    // The revision counter never goes back, even with the last rows gone.
    assert_eq!(s.create("/c", vec![]).await.unwrap(), 5);
    let mut w = s.watch("", 0).await.unwrap();
    assert!(matches!(w.next().await, Some(Ok(WatchEvent::Resync(_)))));
}

#[tokio::test]
async fn log_is_compacted_automatically() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EmbeddedOptions {
        history_kept: 5,
        compact_every: 10,
        durable: false,
    };
    let s = EmbeddedStore::open_with(dir.path().join("m.db"), opts)
        .await
        .unwrap();
    let mut rev = s.create("/k", b"0".to_vec()).await.unwrap();
    let mut w = s.watch("/", 0).await.unwrap();
    for i in 1..25 {
        rev = s
            .update("/k", i.to_string().into_bytes(), rev)
            .await
            .unwrap();
    }
    // Compacted at revision 20 down to 15.
    assert_eq!(s.compacted_revision().await.unwrap(), 15);
    let rows: i64 = s
        .with_reader(|c| c.query_row("SELECT COUNT(*) FROM kv_log", [], |r| r.get(0)))
        .await
        .unwrap();
    // Rows up to 15 were superseded by 16..=20 when it ran.
    assert_eq!(rows, 10, "rows 16..=25 stay");
    // The watcher from 0 was not reading: it resyncs to the present.
    match w.next().await.unwrap().unwrap() {
        WatchEvent::Resync(l) => assert_eq!(l.revision, 25),
        other => panic!("expected resync, got {other:?}"),
    }
    assert!(
        EmbeddedStore::open_with(
            dir.path().join("x.db"),
            EmbeddedOptions {
                compact_every: 0,
                ..opts
            }
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn poller_restarts_for_new_watchers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let a = EmbeddedStore::open(&path).await.unwrap();
    let b = EmbeddedStore::open(&path).await.unwrap();
    for round in 0..3u8 {
        let from = b.revision().await.unwrap();
        let mut w = b.watch("/", from).await.unwrap();
        assert!(b.shared.poller_running.load(Ordering::SeqCst));
        // The watcher is idle, waiting, before the write lands.
        let waiting = tokio::spawn(async move {
            let ev = w.next().await.unwrap().unwrap();
            (ev, w)
        });
        tokio::time::sleep(POLL_INTERVAL * 3).await;
        // Written through another handle: only the poller can tell `b`.
        let rev = a.create(&format!("/k{round}"), vec![round]).await.unwrap();
        let (ev, w) = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("no event from the other handle")
            .unwrap();
        assert_eq!(ev.revision(), rev);
        drop(w);
        // With no watcher left the poller stops.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while b.shared.poller_running.load(Ordering::SeqCst) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "poller never stopped"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

#[tokio::test]
async fn keys_with_high_bytes_stay_in_their_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path().join("m.db")).await.unwrap();
    for k in ["/p\u{7f}", "/p\u{80}x", "/q", "/p/é"] {
        s.create(k, vec![]).await.unwrap();
    }
    let keys: Vec<_> = s
        .list("/p")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["/p/é", "/p\u{7f}", "/p\u{80}x"]);
}

/// A watch poll reads the rows past its revision through the rowid, never
/// the `(key, id)` index over its whole prefix (which made every poll of
/// manx-node's `/manx/` watch walk the whole log and sort it).
#[test]
fn watch_poll_reads_by_revision_not_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open_connection(&dir.path().join("m.db"), false).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    for bounded in [true, false] {
        let sql = format!("EXPLAIN QUERY PLAN {}", poll_sql(bounded));
        let mut stmt = conn.prepare(&sql).unwrap();
        let detail = |r: &rusqlite::Row<'_>| r.get::<_, String>(3);
        let (prefix, end) = (b"/manx/".to_vec(), b"/manx0".to_vec());
        let rows = if bounded {
            stmt.query_map(params![0, prefix, end], detail)
        } else {
            stmt.query_map(params![0, prefix], detail)
        };
        let plan: Vec<String> = rows.unwrap().collect::<rusqlite::Result<_>>().unwrap();
        let plan = plan.join("; ");
        assert!(
            plan.contains("INTEGER PRIMARY KEY (rowid>?)"),
            "bounded {bounded}: {plan}"
        );
        assert!(!plan.contains("kv_log_key_id"), "bounded {bounded}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "bounded {bounded}: {plan}");
    }
}
