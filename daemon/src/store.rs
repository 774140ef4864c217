//! The SQLite store: the only module that speaks SQL.
//!
//! One task owns the one connection. Writes arrive on a channel; the task takes every
//! command waiting at that moment, applies them in one transaction and commits once
//! (group commit), then answers them. So a burst of N writes costs one commit, and
//! every acknowledged write is committed before its acknowledgement leaves.
//!
//! The task also owns the in-memory coordination state ([`Primitives`]: queues,
//! counters, arrays, locks), so that an operation, its durable write and its reply happen
//! in one place and one order: a batch is applied to memory, written, committed, and only
//! then answered.
//!
//! Durability: WAL with `synchronous=NORMAL`. A commit survives a crash of corrald
//! (`kill -9`, panic, OOM kill) because it is in the WAL file in the kernel's page cache;
//! it does not necessarily survive a power loss or kernel crash in the instants after it.

use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use corral_proto::{AnonKind, ErrorBody, ErrorCode, ExitStatus, Op};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;
use crate::primitives::anon;
use crate::primitives::{
    ArrayData, Changes, ConnInfo, Item, ItemChange, Limits, Outbox, Primitives, Queue, ReplyFn,
    SemaphoreState, Snapshot,
};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

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
CREATE TABLE IF NOT EXISTS pool_items (
    job    INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    input  TEXT    NOT NULL,
    result TEXT,                      -- the finished item as JSON; NULL while unfinished
    PRIMARY KEY (job, idx)
) WITHOUT ROWID;
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
    #[error(
        "state database {path}: {source}; check the directory's permissions and free space, or point --state at another directory"
    )]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// A run that has just started.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A run that was still open when corrald last stopped: the record written at its start.
pub type OpenRun = RunStart;

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
    Sync(oneshot::Sender<Result<(), ErrorBody>>),
    OpenRuns(oneshot::Sender<Vec<OpenRun>>),
    MaxRunId(oneshot::Sender<i64>),
    Primitive {
        conn: ConnInfo,
        op: Op,
        reply: ReplyFn,
    },
    Disconnect(u64),
    Holds(u64, oneshot::Sender<bool>),
    PoolJobCreated(StoredJob),
    PoolItemDone {
        job: u64,
        /// Each item's index and result.
        items: Vec<(usize, String)>,
    },
    PoolJobEnded {
        job: u64,
        state: &'static str,
        finished_ms: i64,
    },
    PoolJobUpdated {
        job: u64,
        spec: String,
        first: usize,
        inputs: Vec<String>,
    },
    PoolItemsReleased {
        job: u64,
        spec: String,
        before: usize,
    },
    LoadPoolJobs(oneshot::Sender<Vec<StoredJob>>),
    History(History, oneshot::Sender<HistoryRows>),
}

/// One stored event.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Unix ms.
    pub at_ms: i64,
    /// Unit, if any.
    pub unit: Option<String>,
    /// Instance, if any.
    pub instance: Option<u32>,
    /// Event kind.
    pub kind: String,
    /// Free text.
    pub detail: String,
}

/// One stored run of a unit instance.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Instance number.
    pub instance: u32,
    /// Its pid.
    pub pid: i32,
    /// Started, unix ms.
    pub started_ms: i64,
    /// Ended, unix ms.
    pub ended_ms: Option<i64>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Killing signal.
    pub signal: Option<i32>,
    /// Restarts before this run.
    pub restarts: u32,
}

/// A read of the stored history, for the status page.
#[derive(Debug, Clone)]
pub enum History {
    /// The newest events (of one unit, or all), newest first.
    Events {
        /// Only this unit.
        unit: Option<String>,
        /// At most this many.
        limit: usize,
    },
    /// The newest runs of a unit, newest first.
    Runs {
        /// Unit name.
        unit: String,
        /// At most this many.
        limit: usize,
    },
    /// Number of finished runs by exit code or signal.
    ExitCounts,
}

/// Rows answering a [`History`] read.
#[derive(Debug, Clone, Default)]
pub struct HistoryRows {
    /// Events, newest first.
    pub events: Vec<EventRow>,
    /// Runs, newest first.
    pub runs: Vec<RunRow>,
    /// Exit counts: (exit code, signal, runs).
    pub exits: Vec<(Option<i32>, Option<i32>, u64)>,
}

/// A pool job as stored.
#[derive(Debug, Clone)]
pub struct StoredJob {
    /// Job id.
    pub id: u64,
    /// Its name.
    pub name: Option<String>,
    /// The job's settings, as JSON (owned by the pool module).
    pub spec: String,
    /// `running`, `finished` or `cancelled`.
    pub state: String,
    /// Submitted at, unix ms.
    pub created_ms: i64,
    /// Ended at, unix ms.
    pub finished_ms: Option<i64>,
    /// Inputs with the finished items' results (JSON).
    pub items: Vec<(String, Option<String>)>,
}

/// Handle to the store task. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::UnboundedSender<Command>,
    /// The shared backend, when `--backend` is set: coordination operations go there.
    remote: Option<std::sync::Arc<crate::backend::pg::Pg>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, loads the coordination state,
    /// and starts the store task.
    pub fn open(path: &Path, limits: Limits) -> Result<Store, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = open_connection(path)?;
        let epoch = next_epoch(&conn).map_err(sqlite)?;
        let mut snapshot = load_snapshot(&conn).map_err(sqlite)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Store { tx, remote: None };
        let stored = load_sessions(&conn).map_err(sqlite)?;
        snapshot.anon = store.watch_sessions(stored);
        let prims = Primitives::new(limits, snapshot, epoch);
        tokio::spawn(serve(conn, rx, path.to_owned(), prims));
        Ok(store)
    }

    /// Applies a coordination operation (queue, counter, array, lock) for `conn`;
    /// `reply` is called once, after the change is committed (or the wait ends).
    pub fn primitive(&self, conn: ConnInfo, op: Op, reply: ReplyFn) {
        match &self.remote {
            Some(pg) => pg.apply(conn, op, reply),
            None => self.send(Command::Primitive { conn, op, reply }),
        }
    }

    /// Sends coordination operations to a shared backend from now on (call before the
    /// store is cloned); the supervisor's records stay in SQLite.
    pub fn attach(&mut self, pg: std::sync::Arc<crate::backend::pg::Pg>) {
        self.remote = Some(pg);
    }

    /// The nodes of the shared backend (none without one).
    pub async fn nodes(&self) -> crate::primitives::Outcome {
        match &self.remote {
            Some(pg) => pg.nodes().await,
            None => crate::primitives::ok(corral_proto::NodesResult {
                backend: None,
                node: None,
                nodes: Vec::new(),
            }),
        }
    }

    /// This node's name, with a shared backend.
    pub fn node(&self) -> Option<&str> {
        self.remote.as_deref().map(|pg| pg.node())
    }

    /// The anonymous sessions of corrald's previous life, with their holders that are
    /// still alive watched again; a session with none left ends in the first batch.
    fn watch_sessions(&self, stored: StoredSessions) -> anon::Sessions {
        let mut sessions = anon::Sessions::new();
        for (token, (objects, holders)) in stored {
            let mut session = anon::Session {
                objects,
                ..Default::default()
            };
            for (pid, start_time) in holders {
                let id = crate::primitives::next_conn_id();
                let store = self.clone();
                let watched = crate::pidwatch::open(pid, Some(start_time))
                    .and_then(|w| w.on_exit(move || store.disconnect(id)));
                if watched.is_ok() {
                    session.holders.insert(id, Some((pid, start_time)));
                }
            }
            if session.holders.is_empty() {
                // Ended while corrald was down: a holder that is gone at once.
                let id = crate::primitives::next_conn_id();
                session.holders.insert(id, None);
                self.disconnect(id);
            }
            sessions.insert(token, session);
        }
        sessions
    }

    /// A connection closed: release its locks, drop its waiters.
    pub fn disconnect(&self, conn: u64) {
        if let Some(pg) = &self.remote {
            pg.disconnect(conn);
        }
        self.send(Command::Disconnect(conn));
    }

    /// Whether a connection holds a lock or a lease, or has a request waiting (a
    /// connection that does may be silent for as long as it likes).
    pub async fn holds(&self, conn: u64) -> bool {
        if self.remote.as_ref().is_some_and(|pg| pg.holds(conn)) {
            return true;
        }
        let (tx, rx) = oneshot::channel();
        self.send(Command::Holds(conn, tx));
        rx.await.unwrap_or(false)
    }

    /// Records a new pool job with its inputs.
    pub fn pool_job_created(&self, job: StoredJob) {
        self.send(Command::PoolJobCreated(job));
    }

    /// Records one finished pool item.
    pub fn pool_item_done(&self, job: u64, index: usize, result: String) {
        self.pool_items_done(job, vec![(index, result)]);
    }

    /// Records the results of several items of a job at once (a stream worker's batch).
    pub fn pool_items_done(&self, job: u64, items: Vec<(usize, String)>) {
        self.send(Command::PoolItemDone { job, items });
    }

    /// Records a change of an open pool job: its settings, and inputs appended from
    /// index `first` on.
    pub fn pool_job_updated(&self, job: u64, spec: String, first: usize, inputs: Vec<String>) {
        self.send(Command::PoolJobUpdated {
            job,
            spec,
            first,
            inputs,
        });
    }

    /// Forgets the items of a pool job before index `before` (an open job's client has
    /// read their results), and records its settings, which say where its items now
    /// start, with it.
    pub fn pool_items_released(&self, job: u64, spec: String, before: usize) {
        self.send(Command::PoolItemsReleased { job, spec, before });
    }

    /// Records the end of a pool job.
    pub fn pool_job_ended(&self, job: u64, state: &'static str) {
        self.send(Command::PoolJobEnded {
            job,
            state,
            finished_ms: now_ms(),
        });
    }

    /// Reads stored history (events, runs, exit counts).
    pub async fn history(&self, query: History) -> HistoryRows {
        let (tx, rx) = oneshot::channel();
        self.send(Command::History(query, tx));
        rx.await.unwrap_or_default()
    }

    /// Unfinished pool jobs and the 50 most recent finished ones, oldest first.
    pub async fn load_pool_jobs(&self) -> Vec<StoredJob> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::LoadPoolJobs(tx));
        rx.await.unwrap_or_default()
    }

    fn send(&self, cmd: Command) {
        // The task lives until the process ends; a failed send means it panicked,
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

    /// Resolves once everything sent before it is committed: `Ok` if it is. An error
    /// if a commit failed since the previous sync was answered (what was sent before
    /// may not be on disk), or if the store task has stopped.
    pub async fn sync(&self) -> Result<(), ErrorBody> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Sync(tx));
        rx.await.unwrap_or_else(|_| {
            Err(ErrorBody::new(
                ErrorCode::Internal,
                "the state database task has stopped; nothing more is recorded",
            ))
        })
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

/// When to copy the WAL back into the database. The store task is the only writer, so a
/// checkpoint it runs between batches always catches up completely, and the next commit
/// starts the WAL again from its beginning: the WAL cannot grow without bound however
/// steady the load. (A checkpoint on another thread never catches up while writes go on:
/// measured here, 1 GB of WAL in 25 s under 8 busy clients.) Checkpointing often keeps
/// each one small: a few pages and an fsync.
///
/// Every [`Checkpoints::EVERY_COMMITS`] commits, every [`Checkpoints::EVERY`], and as soon
/// as the WAL passes [`Checkpoints::MAX_WAL_BYTES`]: a burst of large items would otherwise
/// write hundreds of megabytes within one second (and refill a disk just freed).
struct Checkpoints {
    commits: u32,
    last: Instant,
    wal: PathBuf,
    /// The WAL file's length at the last checkpoint. The file keeps its largest length
    /// when SQLite starts writing it over from the start, so only growth past this says
    /// that the WAL holds more than before (SQLite's own checkpoint at 1,000 pages leaves
    /// it just past `MAX_WAL_BYTES`, and comparing the length alone made every later
    /// commit checkpoint: three fsyncs per counter add).
    wal_len: u64,
}

impl Checkpoints {
    const EVERY_COMMITS: u32 = 1000;
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    /// The WAL size past which the next batch is followed by a checkpoint.
    const MAX_WAL_BYTES: u64 = 4 * 1024 * 1024;

    fn new(db: &Path) -> Checkpoints {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Checkpoints {
            commits: 0,
            last: Instant::now(),
            wal: wal.into(),
            wal_len: 0,
        }
    }

    fn after_batch(&mut self, conn: &Connection, wrote: bool, path: &Path) {
        self.commits += u32::from(wrote);
        if self.commits == 0 {
            return;
        }
        let wal_len = || std::fs::metadata(&self.wal).map_or(0, |m| m.len());
        let due = self.commits >= Self::EVERY_COMMITS
            || self.last.elapsed() >= Self::EVERY
            // One stat per batch that wrote: next to its commit, nothing.
            || (wrote && {
                let len = wal_len();
                len > Self::MAX_WAL_BYTES && len > self.wal_len
            });
        if !due {
            return;
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("checkpoint of {}: {e}", path.display());
        }
        self.commits = 0;
        self.last = Instant::now();
        self.wal_len = wal_len();
    }
}

async fn serve(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Command>,
    path: PathBuf,
    mut prims: Primitives,
) {
    let mut batch = Vec::new();
    let mut checkpoints = Checkpoints::new(&path);
    let mut totals = LazyTotals::default();
    // A failed commit not yet reported to a sync (see `Store::sync`).
    let mut lost = None;
    loop {
        // Sleep until a command arrives, the next waiter times out, or queue totals are due.
        let deadline = [prims.next_deadline(), totals.due()]
            .into_iter()
            .flatten()
            .min();
        let first = match deadline {
            Some(deadline) => tokio::select! {
                cmd = rx.recv() => cmd,
                () = tokio::time::sleep_until(deadline.into()) => None,
            },
            None => rx.recv().await,
        };
        if first.is_none() && rx.is_closed() && rx.is_empty() {
            // corrald is stopping: write the totals still pending, then end.
            totals.flush_now();
            run_batch(
                &mut conn,
                &mut prims,
                &mut batch,
                &path,
                &mut totals,
                &mut lost,
            );
            return;
        }
        batch.extend(first);
        // Group commit: take whatever else is already waiting, up to a bound in commands
        // and in item bytes (so one commit cannot write a disk's worth of WAL).
        let mut bytes = batch.iter().map(item_bytes).sum::<usize>();
        while batch.len() < 1024 && bytes < MAX_BATCH_ITEM_BYTES {
            match rx.try_recv() {
                Ok(cmd) => {
                    bytes += item_bytes(&cmd);
                    batch.push(cmd);
                }
                Err(_) => break,
            }
        }
        // SQLite blocks this thread for the commit (tens of µs): corrald runs on one
        // thread, so there is no other work this could hold up for long, and no
        // cross-thread hand-off on the way to the reply.
        let wrote = run_batch(
            &mut conn,
            &mut prims,
            &mut batch,
            &path,
            &mut totals,
            &mut lost,
        );
        checkpoints.after_batch(&conn, wrote, &path);
    }
}

/// Item bytes one batch takes at most (past the first command): with the WAL's size
/// checkpoint, what bounds the WAL however large the burst.
const MAX_BATCH_ITEM_BYTES: usize = 4 * 1024 * 1024;

/// About how many bytes a command's queue item adds to the WAL (its JSON's length).
fn item_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::Primitive {
            op: Op::QueuePut { value, .. },
            ..
        } => json_len(value),
        _ => 0,
    }
}

/// About the length of `value` as JSON, without serializing it.
fn json_len(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|v| json_len(v) + 1).sum::<usize>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, v)| k.len() + 4 + json_len(v))
                .sum::<usize>()
        }
    }
}

/// Whether a command may change what the status page shows (reads do not).
fn changes_visible_state(cmd: &Command) -> bool {
    match cmd {
        Command::Primitive { op, .. } => op.spec().need != corral_proto::Need::Read,
        Command::Disconnect(_)
        | Command::RunStarted(_)
        | Command::RunEnded { .. }
        | Command::Event(..)
        | Command::PoolJobCreated(_)
        | Command::PoolItemDone { .. }
        | Command::PoolJobUpdated { .. }
        | Command::PoolItemsReleased { .. }
        | Command::PoolJobEnded { .. } => true,
        Command::Sync(_)
        | Command::Holds(..)
        | Command::OpenRuns(_)
        | Command::MaxRunId(_)
        | Command::History(..)
        | Command::LoadPoolJobs(_) => false,
    }
}

/// What a batch produced, to be released after its commit.
#[derive(Default)]
struct Effects {
    changes: Changes,
    outbox: Outbox,
    /// Supervisor records and replies to queries, run after the commit.
    after_commit: Vec<Box<dyn FnOnce()>>,
    /// `sync`s, answered after the commit with whether it (and every commit since the
    /// previous sync) happened.
    syncs: Vec<oneshot::Sender<Result<(), ErrorBody>>>,
}

/// Applies and commits one batch; true if it wrote anything.
fn run_batch(
    conn: &mut Connection,
    prims: &mut Primitives,
    batch: &mut Vec<Command>,
    path: &Path,
    totals: &mut LazyTotals,
    lost: &mut Option<ErrorBody>,
) -> bool {
    let mut fx = Effects::default();
    let wrote = batch.iter().any(changes_visible_state);
    if wrote || prims.leases_due(Instant::now()) {
        crate::version::state_changed();
    }
    // `sync` promises that everything is on disk, the queue totals too.
    if batch.iter().any(|c| matches!(c, Command::Sync(_))) {
        totals.flush_now();
    }
    // A wake-up for a waiter's deadline alone has nothing to commit (one for a lease's
    // may: a returned item can go straight to a waiting getter).
    let result = if batch.is_empty() && !totals.is_due() && !prims.leases_due(Instant::now()) {
        Ok(())
    } else {
        apply(conn, prims, batch, &mut fx, totals)
    };
    prims.expire(Instant::now(), &mut fx.outbox);
    match result {
        Ok(()) => {
            for (reply, outcome, _) in fx.outbox.replies {
                reply(outcome);
            }
        }
        Err(e) => {
            tracing::error!(
                "state database {}: {e}; the batch was rolled back",
                path.display()
            );
            totals.rolled_back();
            // Memory ran ahead of the disk: go back to what is committed.
            match load_snapshot(conn) {
                Ok(snapshot) => prims.restore(snapshot),
                Err(e) => tracing::error!("cannot reload state after a failed write: {e}"),
            }
            let error = storage_error(&e);
            for (reply, outcome, durable) in fx.outbox.replies {
                reply(if durable { Err(error.clone()) } else { outcome });
            }
            *lost = Some(sync_error(&e));
        }
    }
    for f in fx.after_commit {
        f();
    }
    if !fx.syncs.is_empty() {
        let answer = lost.take().map_or(Ok(()), Err);
        for sync in fx.syncs {
            let _ = sync.send(answer.clone());
        }
    }
    wrote
}

fn storage_error(e: &rusqlite::Error) -> ErrorBody {
    let full = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull) | Some(rusqlite::ErrorCode::CannotOpen)
    );
    if full {
        ErrorBody::new(
            ErrorCode::StorageFull,
            "storage full: corrald could not write its state database; nothing was changed. Free disk space and retry",
        )
    } else {
        ErrorBody::new(
            ErrorCode::Internal,
            format!("the state database refused the write ({e}); nothing was changed"),
        )
    }
}

/// What a `sync` answers after a failed commit: unlike the replies of the batch, what
/// it covers (a start, a stop, a record of the supervisor or the pool) has happened;
/// only its record is missing.
fn sync_error(e: &rusqlite::Error) -> ErrorBody {
    let full = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull) | Some(rusqlite::ErrorCode::CannotOpen)
    );
    let (code, fix) = if full {
        (ErrorCode::StorageFull, "free disk space")
    } else {
        (ErrorCode::Internal, "see corrald's log")
    };
    ErrorBody::new(
        code,
        format!(
            "done, but not recorded: the state database refused the write ({e}), so corrald would not know of it after a crash; {fix}"
        ),
    )
}

fn apply(
    conn: &mut Connection,
    prims: &mut Primitives,
    batch: &mut Vec<Command>,
    fx: &mut Effects,
    totals: &mut LazyTotals,
) -> rusqlite::Result<()> {
    // A batch of coordination operations alone is applied in memory first: one that
    // changed nothing durable (reads, locks) needs no transaction at all.
    if batch.iter().all(|c| matches!(c, Command::Primitive { .. })) {
        for cmd in batch.drain(..) {
            if let Command::Primitive { conn, op, reply } = cmd {
                prims.apply(conn, op, reply, &mut fx.changes, &mut fx.outbox);
            }
        }
        prims.expire_leases(Instant::now(), &mut fx.changes, &mut fx.outbox);
        if fx.changes.is_empty() && !totals.is_due() {
            return Ok(());
        }
        // BEGIN and COMMIT as cached statements: parsing them again for every batch
        // cost more than the row writes. On an error the caller restores memory from
        // the database.
        conn.prepare_cached("BEGIN")?.execute([])?;
        let written = write_changes(conn, prims, &fx.changes, totals)
            .and_then(|()| conn.prepare_cached("COMMIT")?.execute([]).map(drop));
        if written.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        return written;
    }
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            for cmd in batch.drain(..) {
                abandon(cmd, fx);
            }
            return Err(e);
        }
    };
    let mut failure = None;
    for cmd in batch.drain(..) {
        if failure.is_some() {
            abandon(cmd, fx);
        } else if let Err(e) = apply_one(&tx, prims, cmd, fx) {
            failure = Some(e);
        }
    }
    if let Some(e) = failure {
        return Err(e); // dropping `tx` rolls back
    }
    prims.expire_leases(Instant::now(), &mut fx.changes, &mut fx.outbox);
    write_changes(&tx, prims, &fx.changes, totals)?;
    tx.commit()
}

/// Answers a command of a batch that failed before reaching it.
fn abandon(cmd: Command, fx: &mut Effects) {
    match cmd {
        Command::Primitive { reply, .. } => {
            fx.outbox.durable(
                reply,
                Err(ErrorBody::new(ErrorCode::Internal, "not applied")),
            );
        }
        Command::Sync(reply) => fx.syncs.push(reply),
        Command::OpenRuns(reply) => fx.after_commit.push(Box::new(move || {
            let _ = reply.send(Vec::new());
        })),
        Command::Holds(_, reply) => fx.after_commit.push(Box::new(move || {
            let _ = reply.send(true);
        })),
        Command::MaxRunId(reply) => fx.after_commit.push(Box::new(move || {
            let _ = reply.send(0);
        })),
        Command::History(_, reply) => fx.after_commit.push(Box::new(move || {
            let _ = reply.send(HistoryRows::default());
        })),
        Command::LoadPoolJobs(reply) => fx.after_commit.push(Box::new(move || {
            let _ = reply.send(Vec::new());
        })),
        Command::Disconnect(_)
        | Command::RunStarted(_)
        | Command::RunEnded { .. }
        | Command::Event(..)
        | Command::PoolJobCreated(_)
        | Command::PoolItemDone { .. }
        | Command::PoolJobUpdated { .. }
        | Command::PoolItemsReleased { .. }
        | Command::PoolJobEnded { .. } => {}
    }
}

fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    prims: &mut Primitives,
    cmd: Command,
    fx: &mut Effects,
) -> rusqlite::Result<()> {
    match cmd {
        Command::Primitive { conn, op, reply } => {
            prims.apply(conn, op, reply, &mut fx.changes, &mut fx.outbox);
        }
        Command::Disconnect(id) => prims.disconnect(id, &mut fx.changes, &mut fx.outbox),
        Command::Holds(id, reply) => {
            let holds = prims.holds(id);
            fx.after_commit.push(Box::new(move || {
                let _ = reply.send(holds);
            }));
        }
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
        Command::Sync(reply) => fx.syncs.push(reply),
        Command::OpenRuns(reply) => {
            let runs = query_open_runs(tx)?;
            fx.after_commit.push(Box::new(move || {
                let _ = reply.send(runs);
            }));
        }
        Command::PoolJobCreated(job) => {
            tx.prepare_cached(
                "INSERT INTO pool_jobs (id, name, spec, state, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![job.id as i64, job.name, job.spec, job.state, job.created_ms])?;
            let mut insert =
                tx.prepare_cached("INSERT INTO pool_items (job, idx, input) VALUES (?1, ?2, ?3)")?;
            for (index, (input, _)) in job.items.iter().enumerate() {
                insert.execute(params![job.id as i64, index as i64, input])?;
            }
        }
        Command::PoolItemDone { job, items } => {
            let mut stmt =
                tx.prepare_cached("UPDATE pool_items SET result = ?3 WHERE job = ?1 AND idx = ?2")?;
            for (index, result) in items {
                stmt.execute(params![job as i64, index as i64, result])?;
            }
        }
        Command::PoolJobUpdated {
            job,
            spec,
            first,
            inputs,
        } => {
            tx.prepare_cached("UPDATE pool_jobs SET spec = ?2 WHERE id = ?1")?
                .execute(params![job as i64, spec])?;
            let mut insert =
                tx.prepare_cached("INSERT INTO pool_items (job, idx, input) VALUES (?1, ?2, ?3)")?;
            for (n, input) in inputs.iter().enumerate() {
                insert.execute(params![job as i64, (first + n) as i64, input])?;
            }
        }
        Command::PoolItemsReleased { job, spec, before } => {
            // With the settings that say where the items now start, in one transaction.
            tx.prepare_cached("UPDATE pool_jobs SET spec = ?2 WHERE id = ?1")?
                .execute(params![job as i64, spec])?;
            tx.prepare_cached("DELETE FROM pool_items WHERE job = ?1 AND idx < ?2")?
                .execute(params![job as i64, before as i64])?;
        }
        Command::PoolJobEnded {
            job,
            state,
            finished_ms,
        } => {
            tx.prepare_cached("UPDATE pool_jobs SET state = ?2, finished_ms = ?3 WHERE id = ?1")?
                .execute(params![job as i64, state, finished_ms])?;
        }
        Command::History(query, reply) => {
            let rows = read_history(tx, &query)?;
            fx.after_commit.push(Box::new(move || {
                let _ = reply.send(rows);
            }));
        }
        Command::LoadPoolJobs(reply) => {
            let jobs = load_pool_jobs(tx)?;
            fx.after_commit.push(Box::new(move || {
                let _ = reply.send(jobs);
            }));
        }
        Command::MaxRunId(reply) => {
            let max: Option<i64> = tx
                .query_row("SELECT max(id) FROM runs", [], |r| r.get(0))
                .optional()?
                .flatten();
            fx.after_commit.push(Box::new(move || {
                let _ = reply.send(max.unwrap_or(0));
            }));
        }
    }
    Ok(())
}

/// Queue totals (put, got, next position) written lazily. A put or get must write its
/// item at once, but rewriting the queue's row as well doubled the pages each commit
/// writes. The totals are statistics; positions are rebuilt from the items at load. So a
/// queue's row is written when it is created, configured or deleted, and otherwise at
/// most once per [`LazyTotals::EVERY`], when idle, and when corrald stops: after a
/// `kill -9` the totals may lag by that much, never the items.
#[derive(Default)]
struct LazyTotals {
    /// Queues whose row is on disk (written by this corrald).
    on_disk: HashSet<String>,
    /// Queues whose totals moved since their row was written.
    pending: HashSet<String>,
    /// When pending totals were last written.
    last: Option<Instant>,
    /// Write everything pending in the next batch.
    now: bool,
}

impl LazyTotals {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    fn due(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        Some(self.last.map_or_else(Instant::now, |t| t + Self::EVERY))
    }

    fn is_due(&self) -> bool {
        self.now || self.due().is_some_and(|d| d <= Instant::now())
    }

    fn flush_now(&mut self) {
        self.now = true;
    }

    /// After a failed commit nothing this batch wrote is on disk.
    fn rolled_back(&mut self) {
        self.on_disk.clear();
    }
}

/// Writes what a batch changed in the coordination state. Counters, arrays and queue
/// rows are written once per batch with their final value, however often they changed.
fn write_changes(
    tx: &Connection,
    prims: &Primitives,
    changes: &Changes,
    totals: &mut LazyTotals,
) -> rusqlite::Result<()> {
    for change in &changes.queue_items {
        match change {
            ItemChange::Insert { queue, seq, value } => {
                tx.prepare_cached(
                    "INSERT INTO queue_items (queue, seq, value) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![queue, seq, value])?;
            }
            ItemChange::Remove { queue, up_to } => {
                tx.prepare_cached("DELETE FROM queue_items WHERE queue = ?1 AND seq <= ?2")?
                    .execute(params![queue, up_to])?;
            }
            ItemChange::Delete { queue, seq } => {
                tx.prepare_cached("DELETE FROM queue_items WHERE queue = ?1 AND seq = ?2")?
                    .execute(params![queue, seq])?;
            }
            ItemChange::Delivered {
                queue,
                seq,
                deliveries,
            } => {
                tx.prepare_cached(
                    "UPDATE queue_items SET deliveries = ?3 WHERE queue = ?1 AND seq = ?2",
                )?
                .execute(params![queue, seq, deliveries])?;
            }
            ItemChange::Clear { queue } => {
                tx.prepare_cached("DELETE FROM queue_items WHERE queue = ?1")?
                    .execute(params![queue])?;
            }
        }
    }
    let mut rows: Vec<&String> = changes.queues.iter().collect();
    for name in &changes.queue_stats {
        if totals.on_disk.contains(name) {
            totals.pending.insert(name.clone());
        } else {
            rows.push(name);
        }
    }
    let flush = totals.is_due();
    let pending = std::mem::take(&mut totals.pending);
    if flush {
        rows.extend(pending.iter().filter(|n| !changes.queues.contains(*n)));
        totals.last = Some(Instant::now());
        totals.now = false;
    }
    for name in rows {
        totals.pending.remove(name);
        match prims.queue(name) {
            Some(q) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO queues
                     (name, maxsize, put_total, got_total, next_seq, max_deliveries, dead_letter)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    name,
                    q.maxsize.map(|m| m as i64),
                    q.put_total as i64,
                    q.got_total as i64,
                    q.next_seq,
                    q.max_deliveries,
                    q.dead_letter
                ])?;
                totals.on_disk.insert(name.clone());
            }
            None => {
                tx.prepare_cached("DELETE FROM queues WHERE name = ?1")?
                    .execute(params![name])?;
                totals.on_disk.remove(name);
            }
        }
    }
    if !flush {
        totals.pending.extend(pending);
    }
    for name in &changes.counters {
        match prims.counter(name) {
            Some(v) => {
                tx.prepare_cached("INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)")?
                    .execute(params![name, v])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM counters WHERE name = ?1")?
                    .execute(params![name])?;
            }
        }
    }
    for name in &changes.arrays {
        match prims.array(name) {
            Some(a) => {
                tx.prepare_cached("INSERT OR REPLACE INTO arrays (name, value) VALUES (?1, ?2)")?
                    .execute(params![name, a.to_json()])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM arrays WHERE name = ?1")?
                    .execute(params![name])?;
            }
        }
    }
    write_syncs(tx, prims, changes)
}

/// Writes the semaphores and events a batch changed.
fn write_syncs(tx: &Connection, prims: &Primitives, changes: &Changes) -> rusqlite::Result<()> {
    for name in &changes.semaphores {
        match prims.semaphore(name) {
            Some(s) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO semaphores (name, value, bound) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    name,
                    s.value as i64,
                    s.bound.map(|b| b as i64)
                ])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM semaphores WHERE name = ?1")?
                    .execute(params![name])?;
            }
        }
    }
    for token in &changes.anon {
        write_session(tx, token, prims.anon_session(token))?;
    }
    for name in &changes.events {
        match prims.event(name) {
            Some(set) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO event_flags (name, is_set) VALUES (?1, ?2)",
                )?
                .execute(params![name, set])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM event_flags WHERE name = ?1")?
                    .execute(params![name])?;
            }
        }
    }
    Ok(())
}

/// Rewrites one anonymous session's rows (none once it has ended).
fn write_session(
    tx: &Connection,
    token: &str,
    session: Option<&anon::Session>,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM anon_objects WHERE session = ?1")?
        .execute(params![token])?;
    tx.prepare_cached("DELETE FROM anon_holders WHERE session = ?1")?
        .execute(params![token])?;
    let Some(session) = session else {
        return Ok(());
    };
    for (kind, name) in &session.objects {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO anon_objects (session, kind, name) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![token, anon::kind_name(*kind), name])?;
    }
    for (pid, start_time) in session.holders.values().flatten() {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO anon_holders (session, pid, start_time) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![token, pid, *start_time as i64])?;
    }
    Ok(())
}

/// Anonymous sessions as stored: by token, the objects and the process holders (pid,
/// start time).
type StoredSessions = BTreeMap<String, (Vec<(AnonKind, String)>, Vec<(u32, u64)>)>;

/// Stored anonymous sessions: their objects and process holders.
fn load_sessions(conn: &Connection) -> rusqlite::Result<StoredSessions> {
    let mut sessions = StoredSessions::new();
    let mut stmt = conn.prepare_cached("SELECT session, kind, name FROM anon_objects")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (token, kind, name) = row?;
        match anon::kind_of(&kind) {
            Some(kind) => sessions.entry(token).or_default().0.push((kind, name)),
            None => tracing::error!("anonymous object `{name}` has unknown kind `{kind}`; skipped"),
        }
    }
    let mut stmt = conn.prepare_cached("SELECT session, pid, start_time FROM anon_holders")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (token, pid, start_time) = row?;
        sessions
            .entry(token)
            .or_default()
            .1
            .push((pid as u32, start_time as u64));
    }
    Ok(sessions)
}

/// Bumps and returns the start counter that makes lock fencing tokens grow across restarts.
fn next_epoch(conn: &Connection) -> rusqlite::Result<u64> {
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

/// The committed coordination state.
fn load_snapshot(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    let mut stmt = conn.prepare_cached(
        "SELECT name, maxsize, put_total, got_total, next_seq, max_deliveries, dead_letter FROM queues",
    )?;
    let rows = stmt.query_map([], |r| {
        let mut q = Queue::new(r.get::<_, Option<i64>>(1)?.map(|m| m as usize));
        q.put_total = r.get::<_, i64>(2)? as u64;
        q.got_total = r.get::<_, i64>(3)? as u64;
        q.next_seq = r.get(4)?;
        q.max_deliveries = r.get(5)?;
        q.dead_letter = r.get(6)?;
        Ok((r.get::<_, String>(0)?, q))
    })?;
    snapshot.queues = rows.collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
    // The rows' totals lag (see `LazyTotals`); the items do not. Every put takes the next
    // position, so the puts missing from a row are the positions past its `next_seq`.
    let row_next: HashMap<String, i64> = snapshot
        .queues
        .iter()
        .map(|(name, q)| (name.clone(), q.next_seq))
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT queue, seq, value, deliveries FROM queue_items ORDER BY queue, seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let q = snapshot
            .queues
            .entry(name)
            .or_insert_with(|| Queue::new(None));
        let seq: i64 = row.get(1)?;
        q.next_seq = q.next_seq.max(seq + 1);
        // Items in flight when corrald last stopped are waiting again: their consumers'
        // leases ended with it.
        q.items.push_back(Item {
            seq,
            value: row.get(2)?,
            deliveries: row.get(3)?,
        });
    }
    for (name, q) in &mut snapshot.queues {
        let stored_next = row_next.get(name).copied().unwrap_or(1);
        q.put_total += u64::try_from(q.next_seq - stored_next).unwrap_or(0);
    }
    let mut stmt = conn.prepare_cached("SELECT name, value FROM counters")?;
    snapshot.counters = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached("SELECT name, value FROM arrays")?;
    let arrays: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, text) in arrays {
        match ArrayData::from_json(&text) {
            Some(a) => {
                snapshot.arrays.insert(name, a);
            }
            None => tracing::error!("array `{name}` in the state database is unreadable; skipped"),
        }
    }
    let mut stmt = conn.prepare_cached("SELECT name, value, bound FROM semaphores")?;
    snapshot.semaphores = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                SemaphoreState {
                    value: r.get::<_, i64>(1)?.max(0) as u64,
                    bound: r.get::<_, Option<i64>>(2)?.map(|b| b.max(0) as u64),
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached("SELECT name, is_set FROM event_flags")?;
    snapshot.events = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(snapshot)
}

fn read_history(tx: &rusqlite::Transaction<'_>, query: &History) -> rusqlite::Result<HistoryRows> {
    let mut rows = HistoryRows::default();
    match query {
        History::Events { unit, limit } => {
            let mut stmt = tx.prepare_cached(
                "SELECT at, unit, instance, kind, coalesce(detail, '') FROM events
                 WHERE ?1 IS NULL OR unit = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            rows.events = stmt
                .query_map(params![unit, *limit as i64], |r| {
                    Ok(EventRow {
                        at_ms: r.get(0)?,
                        unit: r.get(1)?,
                        instance: r.get(2)?,
                        kind: r.get(3)?,
                        detail: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        History::Runs { unit, limit } => {
            let mut stmt = tx.prepare_cached(
                "SELECT instance, pid, started_at, ended_at, exit_code, signal, restart_count FROM runs
                 WHERE unit = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            rows.runs = stmt
                .query_map(params![unit, *limit as i64], |r| {
                    Ok(RunRow {
                        instance: r.get(0)?,
                        pid: r.get(1)?,
                        started_ms: r.get(2)?,
                        ended_ms: r.get(3)?,
                        exit_code: r.get(4)?,
                        signal: r.get(5)?,
                        restarts: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        History::ExitCounts => {
            let mut stmt = tx.prepare_cached(
                "SELECT exit_code, signal, count(*) FROM runs WHERE ended_at IS NOT NULL
                 GROUP BY exit_code, signal ORDER BY exit_code, signal",
            )?;
            rows.exits = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
    }
    Ok(rows)
}

fn load_pool_jobs(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Vec<StoredJob>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, name, spec, state, created_ms, finished_ms FROM pool_jobs
         WHERE state = 'running' OR id IN (SELECT id FROM pool_jobs WHERE state != 'running' ORDER BY id DESC LIMIT 50)
         ORDER BY id",
    )?;
    let mut jobs: Vec<StoredJob> = stmt
        .query_map([], |r| {
            Ok(StoredJob {
                id: r.get::<_, i64>(0)? as u64,
                name: r.get(1)?,
                spec: r.get(2)?,
                state: r.get(3)?,
                created_ms: r.get(4)?,
                finished_ms: r.get(5)?,
                items: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut items =
        tx.prepare_cached("SELECT input, result FROM pool_items WHERE job = ?1 ORDER BY idx")?;
    for job in &mut jobs {
        job.items = items
            .query_map([job.id as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(jobs)
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
}
