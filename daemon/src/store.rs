//! The SQLite store: the only module that speaks SQL.
//!
//! One thread owns the one connection. Writes arrive on a channel; the thread takes
//! every command waiting at that moment, applies them in one transaction and commits
//! once (group commit), then answers them. So a burst of N writes costs one commit, and
//! every acknowledged write is committed before its acknowledgement leaves.
//!
//! Durability: WAL with `synchronous=NORMAL`. A commit survives a crash of corrald
//! (`kill -9`, panic, OOM kill) because it is in the WAL file in the kernel's page cache;
//! it does not necessarily survive a power loss or kernel crash in the instants after it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use corral_proto::ExitStatus;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

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
";

/// Errors opening the state database. Each says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not a corral database (or not SQLite at all).
    #[error(
        "{path} is not a usable corral state database ({source}); move it aside or point --state at another directory"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer corral.
    #[error(
        "{path} has schema version {found}, newer than this corrald understands ({SCHEMA_VERSION}); run a newer corrald or move the file aside"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// Any other SQLite failure.
    #[error("state database {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// A run that has just started.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// Run id, assigned by the supervisor.
    pub id: i64,
    /// Unit name.
    pub unit: String,
    /// Instance number.
    pub instance: u32,
    /// Process id.
    pub pid: i32,
    /// Process start time (ticks since boot).
    pub start_time: u64,
    /// Wall clock, unix ms.
    pub started_at: i64,
    /// Restarts before this run.
    pub restart_count: u32,
    /// Whether the unit has `daemon = true`.
    pub daemon: bool,
}

/// A run that was still open when corrald last stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRun {
    /// Run id.
    pub id: i64,
    /// Unit name.
    pub unit: String,
    /// Instance number.
    pub instance: u32,
    /// Process id.
    pub pid: i32,
    /// Process start time (ticks since boot).
    pub start_time: u64,
    /// Wall clock, unix ms.
    pub started_at: i64,
    /// Restarts before this run.
    pub restart_count: u32,
    /// Whether the unit had `daemon = true`.
    pub daemon: bool,
}

/// One row of the event log.
#[derive(Debug, Clone)]
pub struct Event {
    /// Unit, if the event concerns one.
    pub unit: Option<String>,
    /// Instance, if the event concerns one.
    pub instance: Option<u32>,
    /// `started`, `exited`, `restarting`, `gave_up`, `stopped`, `spawn_failed`, ...
    pub kind: &'static str,
    /// Free text.
    pub detail: String,
}

enum Command {
    RunStarted(RunStart),
    RunEnded {
        id: i64,
        ended_at: i64,
        exit: Option<ExitStatus>,
    },
    Event(Event, i64),
    Sync(oneshot::Sender<()>),
    OpenRuns(oneshot::Sender<Vec<OpenRun>>),
    MaxRunId(oneshot::Sender<i64>),
}

/// Handle to the store thread. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and starts the store thread.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = open_connection(path)?;
        let (tx, rx) = mpsc::channel();
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("corral-store".into())
            .spawn(move || serve(conn, rx, &path))
            .map_err(|e| StoreError::Sqlite {
                path: PathBuf::new(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Store { tx })
    }

    fn send(&self, cmd: Command) {
        // The thread lives until the process ends; a failed send means it panicked,
        // which has already been logged.
        let _ = self.tx.send(cmd);
    }

    /// Records the start of a run.
    pub fn run_started(&self, run: RunStart) {
        self.send(Command::RunStarted(run));
    }

    /// Records the end of a run (`exit` unknown when the process vanished unobserved).
    pub fn run_ended(&self, id: i64, exit: Option<ExitStatus>) {
        self.send(Command::RunEnded {
            id,
            ended_at: now_ms(),
            exit,
        });
    }

    /// Appends to the event log.
    pub fn event(&self, event: Event) {
        self.send(Command::Event(event, now_ms()));
    }

    /// Resolves once everything sent before it is committed.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Sync(tx));
        let _ = rx.await;
    }

    /// Runs that have no end recorded: the instances of corrald's previous life.
    pub async fn open_runs(&self) -> Vec<OpenRun> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::OpenRuns(tx));
        rx.await.unwrap_or_default()
    }

    /// The largest run id so far (0 if none), so that new ids never collide.
    pub async fn max_run_id(&self) -> i64 {
        let (tx, rx) = oneshot::channel();
        self.send(Command::MaxRunId(tx));
        rx.await.unwrap_or(0)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
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
    conn.execute_batch(SCHEMA).map_err(sqlite)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    Ok(conn)
}

fn serve(mut conn: Connection, rx: mpsc::Receiver<Command>, path: &Path) {
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        // Group commit: take whatever else is already waiting, up to a bound.
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        if let Err(e) = apply(&mut conn, &mut batch) {
            tracing::error!("state database {}: {e}", path.display());
        }
        batch.clear();
    }
}

fn apply(conn: &mut Connection, batch: &mut Vec<Command>) -> rusqlite::Result<()> {
    let mut replies: Vec<Box<dyn FnOnce()>> = Vec::new();
    let tx = conn.transaction()?;
    for cmd in batch.drain(..) {
        match cmd {
            Command::RunStarted(r) => {
                tx.prepare_cached(
                    "INSERT INTO runs (id, unit, instance, pid, start_time, started_at, restart_count, daemon)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    r.id,
                    r.unit,
                    r.instance,
                    r.pid,
                    r.start_time as i64,
                    r.started_at,
                    r.restart_count,
                    r.daemon
                ])?;
            }
            Command::RunEnded { id, ended_at, exit } => {
                tx.prepare_cached(
                    "UPDATE runs SET ended_at = ?2, exit_code = ?3, signal = ?4 WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    ended_at,
                    exit.and_then(|e| e.code),
                    exit.and_then(|e| e.signal)
                ])?;
            }
            Command::Event(e, at) => {
                tx.prepare_cached(
                    "INSERT INTO events (at, unit, instance, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![at, e.unit, e.instance, e.kind, e.detail])?;
            }
            Command::Sync(reply) => replies.push(Box::new(move || {
                let _ = reply.send(());
            })),
            Command::OpenRuns(reply) => {
                let runs = query_open_runs(&tx)?;
                replies.push(Box::new(move || {
                    let _ = reply.send(runs);
                }));
            }
            Command::MaxRunId(reply) => {
                let max: Option<i64> = tx
                    .query_row("SELECT max(id) FROM runs", [], |r| r.get(0))
                    .optional()?
                    .flatten();
                replies.push(Box::new(move || {
                    let _ = reply.send(max.unwrap_or(0));
                }));
            }
        }
    }
    tx.commit()?;
    // Answer only after the commit: an acknowledged write is a durable write.
    for reply in replies {
        reply();
    }
    Ok(())
}

fn query_open_runs(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Vec<OpenRun>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, unit, instance, pid, start_time, started_at, restart_count, daemon
         FROM runs WHERE ended_at IS NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(OpenRun {
            id: r.get(0)?,
            unit: r.get(1)?,
            instance: r.get(2)?,
            pid: r.get(3)?,
            start_time: r.get::<_, i64>(4)? as u64,
            started_at: r.get(5)?,
            restart_count: r.get(6)?,
            daemon: r.get(7)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_round_trip_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
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
        store.sync().await;
        assert!(store.open_runs().await.is_empty());
    }

    #[test]
    fn refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, vec![0x5a; 4096]).unwrap();
        let err = Store::open(&path).err().expect("must refuse");
        assert!(
            err.to_string()
                .contains("not a usable corral state database")
        );
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 4096]);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Store::open(&path).err().expect("must refuse");
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    }
}
