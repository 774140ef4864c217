//! The database file: opening it, refusing what is not ours, the schema and its migrations.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY,
    unit          TEXT    NOT NULL,
    instance      INTEGER NOT NULL,
    pid           INTEGER NOT NULL,
    start_time    INTEGER NOT NULL,   -- clock ticks since boot, from /proc/PID/stat
    started_at    INTEGER NOT NULL,   -- unix ms
    ended_at      INTEGER,
    exit_code     INTEGER,
    signal        INTEGER,
    restart_count INTEGER NOT NULL,
    daemon        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_unit ON runs(unit, instance, id);
CREATE INDEX IF NOT EXISTS runs_open ON runs(ended_at) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,        -- unix ms
    unit     TEXT,
    instance INTEGER,
    kind     TEXT NOT NULL,
    detail   TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queues (
    name      TEXT PRIMARY KEY,
    maxsize   INTEGER,
    put_total INTEGER NOT NULL,
    got_total INTEGER NOT NULL,
    next_seq  INTEGER NOT NULL,
    max_deliveries INTEGER,           -- schema 2
    dead_letter    TEXT               -- schema 2
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_items (
    queue TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    value TEXT    NOT NULL,           -- the item, serialized JSON
    deliveries INTEGER NOT NULL DEFAULT 0,  -- by acknowledged gets (schema 2)
    PRIMARY KEY (queue, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pool_jobs (
    id          INTEGER PRIMARY KEY,
    name        TEXT,
    spec        TEXT    NOT NULL,     -- command, mode, workers, ... as JSON
    state       TEXT    NOT NULL,     -- running | finished | cancelled
    created_ms  INTEGER NOT NULL,
    finished_ms INTEGER
);
-- A rowid table (schema 3): its rows are large (a chunk of inputs, its results), and a
-- WITHOUT ROWID table compares keys by reading whole rows, overflow pages included.
CREATE TABLE IF NOT EXISTS pool_items (
    job    INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    input  TEXT    NOT NULL,
    result TEXT,                      -- the finished item as JSON; NULL while unfinished
    PRIMARY KEY (job, idx)
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS arrays (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL               -- kind and values, as JSON
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS semaphores (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL,           -- free permits
    bound INTEGER                     -- NULL: unbounded
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_flags (
    name   TEXT PRIMARY KEY,
    is_set INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anon_objects (
    session TEXT NOT NULL,
    kind    TEXT NOT NULL,            -- queue | counter | array | semaphore | event
    name    TEXT NOT NULL,
    PRIMARY KEY (session, kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anon_holders (
    session    TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    start_time INTEGER NOT NULL,      -- clock ticks since boot, from /proc/PID/stat
    PRIMARY KEY (session, pid, start_time)
) WITHOUT ROWID;
";

pub(super) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let not_db = |source| StoreError::NotADatabase {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(sqlite)?;
    // The first real read tells a database from a random file, before anything is written.
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(not_db)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(not_db)?;
    // A damaged database (truncated, half-overwritten) must be refused before anything
    // writes to it. quick_check reads every page once: a fraction of a second for a
    // typical state file.
    if tables > 0 {
        let verdict: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(not_db)?;
        if verdict != "ok" {
            return Err(not_db(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(verdict),
            )));
        }
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
        });
    }
    if version == 0 && tables > 0 {
        return Err(not_db(rusqlite::Error::InvalidQuery));
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(not_db)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(sqlite)?;
    // SQLite's own page cache (default 2 MiB). The hot pages of the primitives are few,
    // and the OS page cache is behind it for the rest: a small cache keeps corrald small.
    conn.pragma_update(None, "cache_size", -512)
        .map_err(sqlite)?;
    conn.execute_batch(SCHEMA).map_err(sqlite)?;
    if version == 1 {
        // Schema 2: acknowledged gets (delivery counts, dead-letter settings).
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE queues ADD COLUMN max_deliveries INTEGER;
             ALTER TABLE queues ADD COLUMN dead_letter TEXT;
             ALTER TABLE queue_items ADD COLUMN deliveries INTEGER NOT NULL DEFAULT 0;
             PRAGMA user_version = 2;
             COMMIT;",
        )
        .map_err(sqlite)?;
    }
    if version < 3 {
        rebuild_pool_items(&conn).map_err(sqlite)?;
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    // Checkpoints are run by the store task itself (see `Checkpoints`), not by SQLite
    // inside an arbitrary commit.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(sqlite)?;
    // After a checkpoint has reset the WAL, keep its file at most this big.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(sqlite)?;
    Ok(conn)
}

/// Schema 3: `pool_items` becomes a rowid table, its rows kept. Seeking in a WITHOUT
/// ROWID table reads every large row it compares against in full (a pool job's inputs
/// and results are tens of kilobytes a row): most of the store's time for a busy pool.
fn rebuild_pool_items(conn: &Connection) -> rusqlite::Result<()> {
    let sql: Option<String> = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'pool_items'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if !sql.is_some_and(|s| s.to_ascii_uppercase().contains("WITHOUT ROWID")) {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN;
         CREATE TABLE pool_items_3 (
             job    INTEGER NOT NULL,
             idx    INTEGER NOT NULL,
             input  TEXT    NOT NULL,
             result TEXT,
             PRIMARY KEY (job, idx)
         );
         INSERT INTO pool_items_3 (job, idx, input, result)
             SELECT job, idx, input, result FROM pool_items;
         DROP TABLE pool_items;
         ALTER TABLE pool_items_3 RENAME TO pool_items;
         PRAGMA user_version = 3;
         COMMIT;",
    )
}

/// Bumps and returns the start counter that makes lock fencing tokens grow across restarts.
pub(super) fn next_epoch(conn: &Connection) -> rusqlite::Result<u64> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('epoch', 1)
         ON CONFLICT(key) DO UPDATE SET value = value + 1",
        [],
    )?;
    let epoch: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
        r.get(0)
    })?;
    Ok(epoch as u64)
}
