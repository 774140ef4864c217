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

mod prims;
mod records;
mod schema;
mod task;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use corral_proto::{ErrorBody, ErrorCode, ExitStatus, Op};
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;
use crate::primitives::anon;
use crate::primitives::{ConnInfo, Limits, Primitives, ReplyFn};

use prims::{StoredSessions, load_sessions, load_snapshot};
pub use schema::SCHEMA_VERSION;
use schema::{next_epoch, open_connection};
use task::serve;

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
    /// Removes finished jobs and their items.
    PoolJobsRemoved(Vec<u64>),
    /// Removes the finished jobs that finished before `before_ms`, but those of `spare`.
    PoolJobsExpired {
        before_ms: i64,
        spare: Vec<u64>,
    },
    LoadPoolJobs(oneshot::Sender<(Vec<StoredJob>, u64)>),
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

    /// Removes finished pool jobs with their items (`pool rm`).
    pub fn pool_jobs_removed(&self, jobs: Vec<u64>) {
        self.send(Command::PoolJobsRemoved(jobs));
    }

    /// Removes the finished pool jobs that finished before `before_ms` (`pool_keep`),
    /// but those of `spare` (their processes are still stopping).
    pub fn pool_jobs_expired(&self, before_ms: i64, spare: Vec<u64>) {
        self.send(Command::PoolJobsExpired { before_ms, spare });
    }

    /// Reads stored history (events, runs, exit counts).
    pub async fn history(&self, query: History) -> HistoryRows {
        let (tx, rx) = oneshot::channel();
        self.send(Command::History(query, tx));
        rx.await.unwrap_or_default()
    }

    /// Unfinished pool jobs and the 50 most recent finished ones, oldest first, and the
    /// highest job id ever given (removed jobs' included: ids are not reused).
    pub async fn load_pool_jobs(&self) -> (Vec<StoredJob>, u64) {
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
