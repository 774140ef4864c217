//! Tests of the store as a whole.

use std::collections::BTreeMap;

use rusqlite::Connection;

use super::*;

fn test_limits() -> Limits {
    Limits {
        max_item_bytes: 1 << 16,
        declared_queues: BTreeMap::new(),
    }
}

#[tokio::test]
async fn runs_round_trip_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db"), test_limits()).unwrap();
    store.run_started(RunStart {
        id: 1,
        unit: "web".into(),
        instance: 0,
        pid: 42,
        start_time: 7,
        started_at: 1000,
        restart_count: 0,
        daemon: false,
    });
    assert_eq!(store.open_runs().await.len(), 1);
    assert_eq!(store.max_run_id().await, 1);
    store.run_ended(
        1,
        Some(ExitStatus {
            code: Some(0),
            signal: None,
        }),
    );
    store.sync().await.unwrap();
    assert!(store.open_runs().await.is_empty());
}

#[tokio::test]
async fn sync_says_when_a_commit_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path, test_limits()).unwrap();
    store.sync().await.unwrap();
    // Another writer holds the database: the store's commit fails (busy, after
    // rusqlite's default busy timeout).
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    store.event(Event {
        unit: Some("web".into()),
        instance: Some(0),
        kind: "started",
        detail: String::new(),
    });
    let error = store.sync().await.expect_err("the commit failed");
    assert!(error.message.contains("not recorded"), "{}", error.message);
    other.execute_batch("ROLLBACK").unwrap();
    // Reported once: the next commit that works answers its sync with Ok.
    store.sync().await.unwrap();
}

#[test]
fn refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![0x5a; 4096]).unwrap();
    let err = Store::open(&path, test_limits())
        .err()
        .expect("must refuse");
    assert!(
        err.to_string()
            .contains("not a usable corral state database")
    );
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 4096]);
}

#[tokio::test]
async fn a_schema_1_database_is_migrated_with_its_items() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE queues (name TEXT PRIMARY KEY, maxsize INTEGER, put_total INTEGER NOT NULL,
             got_total INTEGER NOT NULL, next_seq INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE queue_items (queue TEXT NOT NULL, seq INTEGER NOT NULL,
             value TEXT NOT NULL, PRIMARY KEY (queue, seq)) WITHOUT ROWID;
         INSERT INTO queues VALUES ('jobs', 5, 2, 0, 3);
         INSERT INTO queue_items VALUES ('jobs', 1, '\"a\"'), ('jobs', 2, '\"b\"');
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path, test_limits()).unwrap();
    let (tx, rx) = oneshot::channel();
    let conn = ConnInfo {
        id: 1,
        pid: None,
        uid: None,
    };
    let op = Op::QueueGet {
        queue: "jobs".into(),
        count: 10,
        timeout_ms: None,
        block: false,
        ack: true,
        visibility_ms: None,
        detach: false,
    };
    store.primitive(
        conn,
        op,
        Box::new(move |outcome| {
            let _ = tx.send(outcome);
        }),
    );
    let got = rx.await.unwrap().expect("leased").to_value();
    assert_eq!(got["items"], serde_json::json!(["a", "b"]));
    assert_eq!(got["leases"][0]["deliveries"], 1);
    store.sync().await.unwrap();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let deliveries: Vec<i64> = conn
        .prepare("SELECT deliveries FROM queue_items ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(deliveries, [1, 1]);
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let err = Store::open(&path, test_limits())
        .err()
        .expect("must refuse");
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
}

#[tokio::test]
async fn a_schema_2_database_keeps_its_pool_items_in_a_rowid_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE pool_jobs (id INTEGER PRIMARY KEY, name TEXT, spec TEXT NOT NULL,
             state TEXT NOT NULL, created_ms INTEGER NOT NULL, finished_ms INTEGER);
         CREATE TABLE pool_items (job INTEGER NOT NULL, idx INTEGER NOT NULL,
             input TEXT NOT NULL, result TEXT, PRIMARY KEY (job, idx)) WITHOUT ROWID;
         INSERT INTO pool_jobs VALUES (7, NULL, '{}', 'running', 1, NULL);
         INSERT INTO pool_items VALUES (7, 1, 'b', NULL), (7, 0, 'a', '{\"ok\":true}');
         PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path, test_limits()).unwrap();
    let (jobs, _) = store.load_pool_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].items,
        vec![
            ("a".to_owned(), Some("{\"ok\":true}".to_owned())),
            ("b".to_owned(), None)
        ]
    );
    drop(store);
    let conn = Connection::open(&path).unwrap();
    let (version, sql): (i64, String) = conn
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), sql FROM sqlite_master
             WHERE name = 'pool_items'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert!(!sql.to_ascii_uppercase().contains("WITHOUT ROWID"), "{sql}");
    let rowid: i64 = conn
        .query_row(
            "SELECT rowid FROM pool_items WHERE job = 7 AND idx = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(rowid > 0);
}
