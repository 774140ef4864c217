//! Pool jobs: a parallel map of a command over many inputs, results in input order
//! (Python's `Pool.map`, for any program).
//!
//! One task, the [`PoolManager`], owns every job. Two modes:
//! - **exec**: one process per item, each in its own process group, stdout and stderr
//!   captured into files (capped, truncation marked), at most `workers` at once;
//! - **stream**: `workers` long-lived processes of the command, each fed one input line
//!   on stdin and answering one line on stdout; several items are kept in flight per
//!   worker (see the `stream` module). A worker that dies is replaced and its in-flight items
//!   retried.
//!
//! Jobs and each finished item are written to SQLite as they happen; after a restart of
//! corrald, unfinished jobs resume with their unfinished items. Processes are spawned and
//! reaped by the supervisor's process thread ([`Owner::Pool`] routes their events here).

pub mod guard;
mod items;
pub mod nodes;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_proto::{
    ErrorBody, ErrorCode, ExitStatus, InstanceState, InstanceStatus, JobState, PoolBatch, PoolItem,
    PoolJob, PoolListResult, PoolResults, UnitStatus,
};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use self::items::Items;
use crate::actor::Reply;
use crate::clock::now_ms;
use crate::process::{Output, Owner, Owners, ProcEvent, ProcessThread, SpawnSpec, kill_group};
use crate::store::{Store, StoredJob};

/// Most bytes of stdout (and of stderr) kept per exec item.
const OUTPUT_CAP: usize = 1 << 20;

/// How a job runs: what the client submitted, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Stream mode.
    pub stream: bool,
    /// Most items at once / worker processes.
    pub workers: usize,
    /// Extra attempts per item.
    pub retries: u32,
    /// Per-item time limit.
    pub timeout_ms: Option<u64>,
    /// Working directory.
    pub working_dir: Option<PathBuf>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Signal that stops an item or worker (cancel, shutdown); SIGKILL follows after
    /// `stop_timeout_ms`.
    #[serde(default = "default_stop_signal")]
    pub stop_signal: i32,
    /// Time between the stop signal and SIGKILL.
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
    /// Run the processes as this user (uid), when a non-root client submitted the job.
    #[serde(default)]
    pub user: Option<String>,
    /// Open for more inputs (`pool_append`) until closed; its workers live as long.
    #[serde(default)]
    pub open: bool,
    /// Stream mode: items sent to one worker before it is replaced.
    #[serde(default)]
    pub max_items_per_worker: Option<u64>,
    /// The client process the job dies with (`cancel_on_disconnect`): its pid and start
    /// time. Its connection closing cancels the job; after a restart of corrald, which
    /// closed that connection, the job is cancelled once this process is gone.
    #[serde(default)]
    pub owner: Option<(i32, u64)>,
    /// Open job: its items before this index were read by its client and dropped
    /// (`release_before` of `pool_append`); the stored items start here.
    #[serde(default)]
    pub released: usize,
    /// How many of the released items had failed (the job's counts include them).
    #[serde(default)]
    pub released_failed: usize,
}

fn default_stop_signal() -> i32 {
    Signal::SIGTERM as i32
}

fn default_stop_timeout_ms() -> u64 {
    10_000
}

/// Requests from handlers.
pub enum PoolRequest {
    /// A new job.
    Submit(Option<String>, Box<JobSpec>, Vec<String>, Reply<PoolJob>),
    /// More inputs for an open job, from this uid (None: root); the client has read
    /// every result before the index given (`release_before`).
    Append(
        u64,
        Option<String>,
        Vec<String>,
        Option<usize>,
        Reply<PoolBatch>,
    ),
    /// No more inputs for an open job.
    Close(u64, Reply<PoolJob>),
    /// Wait for the end of a job, or of its items `from..from + count`; with
    /// `Some(events)`, stream those items in order.
    Wait(
        Wait,
        Option<mpsc::UnboundedSender<PoolItem>>,
        Reply<PoolJob>,
    ),
    /// A job's progress.
    Status(u64, Reply<PoolJob>),
    /// Finished items of a job.
    Results(u64, Reply<PoolResults>),
    /// Every job.
    List(Reply<PoolListResult>),
    /// Stop a job.
    Cancel(u64, Reply<PoolJob>),
    /// Remove a finished job and its items (`pool rm`); answers the job as it was.
    Remove(u64, Reply<PoolJob>),
    /// The processes of running jobs, as `status` shows them.
    Processes(Reply<Vec<UnitStatus>>),
}

/// What a `pool_wait` waits for.
pub struct Wait {
    /// Job id.
    pub job: u64,
    /// First item.
    pub from: usize,
    /// Number of items (None: up to the end of the job).
    pub count: Option<usize>,
}

/// Everything the manager reacts to.
pub enum PoolMsg {
    /// From the process thread.
    Proc(ProcEvent),
    /// From a handler.
    Request(PoolRequest),
    /// An exec item's time limit passed.
    ItemTimeout {
        job: u64,
        index: usize,
        attempt: u32,
    },
    /// A stream worker answered these items (index, line), in order.
    Answers {
        job: u64,
        worker: u64,
        answers: Vec<(usize, String)>,
    },
    /// A stream worker's pipes closed.
    WorkerGone { job: u64, worker: u64 },
    /// Shutdown: let jobs run until `deadline`, then stop them (they resume at next start).
    Shutdown(Instant, oneshot::Sender<()>),
    /// Second signal: kill every job's processes now.
    Force,
    /// Re-check deadlines.
    Tick,
    /// A stop timeout passed: SIGKILL this group if it is still one of ours.
    Kill(i32),
}

/// Handle to the manager.
#[derive(Clone)]
pub struct PoolHandle {
    tx: mpsc::UnboundedSender<PoolMsg>,
}

impl PoolHandle {
    /// Sends a request built around a fresh reply channel and awaits the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> PoolRequest) -> Result<T, ErrorBody> {
        crate::actor::ask(&self.tx, |reply| PoolMsg::Request(make(reply))).await
    }

    /// Runs jobs until `timeout` from now, then stops what is left (to resume at next start).
    pub async fn shutdown(&self, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(PoolMsg::Shutdown(Instant::now() + timeout, tx))
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Kills every job's processes now.
    pub fn force(&self) {
        let _ = self.tx.send(PoolMsg::Force);
    }
}

#[derive(Debug)]
enum ItemState {
    Pending,
    /// Exec: a process (pid once spawned). Stream: in flight on a worker.
    Running {
        pid: Option<i32>,
        started_ms: i64,
        timed_out: bool,
    },
    Done(PoolItem),
}

struct Item {
    input: String,
    attempts: u32,
    state: ItemState,
}

struct Watcher {
    next: usize,
    /// One past the last item waited for (None: the whole job).
    end: Option<usize>,
    events: Option<mpsc::UnboundedSender<PoolItem>>,
    reply: Reply<PoolJob>,
}

struct Job {
    id: u64,
    name: Option<String>,
    spec: JobSpec,
    items: Items,
    state: JobState,
    created_ms: i64,
    finished_ms: Option<i64>,
    watchers: Vec<Watcher>,
    workers: HashMap<u64, stream::Worker>,
    /// Worker respawns left (see [`respawn_budget`]).
    respawns: usize,
    /// Indexes of the pending items, in the order they will start: every pending item
    /// is here exactly once, so no per-item work ever scans the whole job.
    queue: std::collections::VecDeque<usize>,
    n_running: usize,
    n_ok: usize,
    n_failed: usize,
    /// The client has read every result before this index (`release_before`): the
    /// finished items before it are dropped.
    release_wanted: usize,
}

impl Job {
    fn new(
        id: u64,
        name: Option<String>,
        spec: JobSpec,
        items: Vec<Item>,
        state: JobState,
        created_ms: i64,
    ) -> Job {
        let respawns = respawn_budget(&spec);
        let items = Items::new(spec.released, items);
        let mut job = Job {
            id,
            name,
            spec,
            items,
            state,
            created_ms,
            finished_ms: None,
            watchers: Vec::new(),
            workers: HashMap::new(),
            respawns,
            queue: Default::default(),
            n_running: 0,
            n_ok: 0,
            n_failed: 0,
            release_wanted: 0,
        };
        job.n_failed = job.spec.released_failed;
        job.n_ok = job.spec.released - job.spec.released_failed;
        for (index, item) in job.items.indexed() {
            match &item.state {
                ItemState::Pending => job.queue.push_back(index),
                ItemState::Done(r) if r.ok => job.n_ok += 1,
                ItemState::Done(_) => job.n_failed += 1,
                ItemState::Running { .. } => job.n_running += 1,
            }
        }
        job
    }

    /// The next pending item, taken off the queue.
    fn next_pending(&mut self) -> Option<usize> {
        self.queue.pop_front()
    }

    /// Pending → running (a new attempt).
    fn start_item(&mut self, index: usize) {
        let item = &mut self.items[index];
        item.attempts += 1;
        item.state = ItemState::Running {
            pid: None,
            started_ms: now_ms(),
            timed_out: false,
        };
        self.n_running += 1;
    }

    /// Running → pending again (a retry, or stopped by shutdown).
    fn requeue(&mut self, index: usize) {
        if matches!(self.items[index].state, ItemState::Running { .. }) {
            self.n_running -= 1;
        }
        self.items[index].state = ItemState::Pending;
        self.queue.push_back(index);
    }

    /// Running → done.
    fn complete(&mut self, index: usize, result: PoolItem) {
        if matches!(self.items[index].state, ItemState::Running { .. }) {
            self.n_running -= 1;
        }
        if result.ok {
            self.n_ok += 1;
        } else {
            self.n_failed += 1;
        }
        self.items[index].state = ItemState::Done(result);
    }

    fn info(&self) -> PoolJob {
        PoolJob {
            job: self.id,
            name: self.name.clone(),
            command: self.spec.command.clone(),
            mode: if self.spec.stream { "stream" } else { "exec" }.into(),
            workers: self.spec.workers,
            state: self.state,
            open: self.spec.open,
            total: self.items.len(),
            succeeded: self.n_ok,
            failed: self.n_failed,
            running: self.n_running,
            pending: self.items.len() - self.n_ok - self.n_failed - self.n_running,
            created_ms: self.created_ms,
            finished_ms: self.finished_ms,
            nodes: Vec::new(),
        }
    }

    fn running(&self) -> usize {
        self.n_running
    }
}

/// Worker deaths allowed without an answer in between, so a command that dies at once
/// cannot loop forever.
fn respawn_budget(spec: &JobSpec) -> usize {
    spec.workers * 4 + 8
}

/// The pool manager. See the module docs.
pub struct PoolManager {
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    /// Exec items and stream workers: by spawn token while waiting for their pid, then
    /// by pid.
    owners: Owners<Proc>,
    next_worker: u64,
    /// Output-file slots of running exec items, and the free ones.
    slots: HashMap<(u64, usize), usize>,
    free_slots: Vec<usize>,
    next_slot: usize,
    /// Groups sent their stop signal and waiting for SIGKILL.
    stopping: std::collections::HashSet<i32>,
    /// A second signal: SIGKILL at once.
    forced: bool,
    store: Store,
    procs: ProcessThread,
    tx: mpsc::UnboundedSender<PoolMsg>,
    dir: PathBuf,
    log_dir: PathBuf,
    socket: PathBuf,
    shutdown: Option<(Instant, Vec<oneshot::Sender<()>>)>,
    /// Finished jobs older than this are removed (`pool_keep`).
    keep: Duration,
    /// When they were last looked for.
    last_expiry: Option<Instant>,
    /// Kills the exec items' groups if corrald is killed (see [`guard`]).
    guard: Option<guard::Guard>,
    /// Whether it was started (before the first exec item).
    guard_asked: bool,
}

/// How often finished jobs older than `keep` are looked for: half of it, between a
/// second and a minute.
pub fn expiry_interval(keep: Duration) -> Duration {
    (keep / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// The refusal of `pool rm` for a job that still runs.
pub fn still_running(id: u64, running: usize) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Failed,
        format!(
            "pool job {id} is still running ({running} items running): only a finished or \
             cancelled job can be removed; cancel it first (`corralctl pool cancel {id}`) or \
             wait for it (`corralctl pool wait {id}`)"
        ),
    )
}

/// What a process of the pool (or its spawn in flight) is for.
enum Proc {
    /// An exec job's item.
    Item { job: u64, index: usize },
    /// A stream job's worker.
    Worker { job: u64, worker: u64 },
    /// The guard of the exec items (`guard`).
    Guard,
}

/// Where the manager keeps item output files and worker logs, and how long it keeps
/// finished jobs.
pub struct PoolPaths {
    /// Item output files.
    pub dir: PathBuf,
    /// Stream workers' stderr logs.
    pub log_dir: PathBuf,
    /// The control socket (for `CORRAL_SOCKET`).
    pub socket: PathBuf,
    /// Finished jobs older than this are removed (`pool_keep`).
    pub keep: Duration,
}

impl PoolManager {
    /// Loads stored jobs, resumes the unfinished ones, and spawns the manager task.
    pub async fn start(
        paths: PoolPaths,
        store: Store,
        procs: ProcessThread,
        (tx, mut rx): (
            mpsc::UnboundedSender<PoolMsg>,
            mpsc::UnboundedReceiver<PoolMsg>,
        ),
    ) -> std::io::Result<PoolHandle> {
        // Item output goes to a directory of this life of corrald: an item still running
        // from before a crash (it is run again) cannot write into the new run's files.
        if let Ok(old) = std::fs::read_dir(&paths.dir) {
            for entry in old.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = paths.dir.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir)?;
        let (stored, max_id) = store.load_pool_jobs().await;
        let mut mgr = PoolManager {
            jobs: BTreeMap::new(),
            next_job: max_id + 1,
            owners: Owners::default(),
            next_worker: 1,
            slots: HashMap::new(),
            free_slots: Vec::new(),
            next_slot: 0,
            stopping: Default::default(),
            forced: false,
            store,
            procs,
            tx: tx.clone(),
            dir,
            log_dir: paths.log_dir,
            socket: paths.socket,
            shutdown: None,
            keep: paths.keep,
            last_expiry: None,
            guard: None,
            guard_asked: false,
        };
        for job in stored {
            mgr.restore(job);
        }
        let ticker = tx.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                if ticker.send(PoolMsg::Tick).is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let ids: Vec<u64> = mgr.jobs.keys().copied().collect();
            for id in ids {
                mgr.pump(id);
            }
            while let Some(msg) = rx.recv().await {
                mgr.handle(msg);
            }
        });
        Ok(PoolHandle { tx })
    }

    fn restore(&mut self, stored: StoredJob) {
        let Ok(spec) = serde_json::from_str::<JobSpec>(&stored.spec) else {
            tracing::error!("pool job {}: unreadable settings; skipped", stored.id);
            return;
        };
        let items = stored
            .items
            .into_iter()
            .map(|(input, result)| {
                let done = result
                    .and_then(|r| serde_json::from_str::<PoolItem>(&r).ok())
                    .map(|mut done| {
                        // Stored without its input, which is in the row already.
                        if done.input.is_empty() {
                            done.input.clone_from(&input);
                        }
                        done
                    });
                Item {
                    input,
                    attempts: done.as_ref().map_or(0, |d| d.attempts),
                    state: done.map_or(ItemState::Pending, ItemState::Done),
                }
            })
            .collect();
        let state = JobState::parse(&stored.state);
        if state == JobState::Running {
            tracing::info!("pool job {} resumes", stored.id);
        }
        let mut job = Job::new(
            stored.id,
            stored.name,
            spec,
            items,
            state,
            stored.created_ms,
        );
        job.finished_ms = stored.finished_ms;
        self.jobs.insert(stored.id, job);
    }

    fn handle(&mut self, msg: PoolMsg) {
        let read_only = matches!(
            msg,
            PoolMsg::Tick
                | PoolMsg::Request(
                    PoolRequest::Status(..)
                        | PoolRequest::Results(..)
                        | PoolRequest::List(..)
                        | PoolRequest::Processes(..)
                        | PoolRequest::Wait(..)
                )
        );
        if !read_only {
            crate::version::state_changed();
        }
        match msg {
            PoolMsg::Request(req) => self.on_request(req),
            PoolMsg::Proc(ProcEvent::Spawned { token, result }) => self.on_spawned(token, result),
            PoolMsg::Proc(ProcEvent::Exited { pid, status }) => self.on_exited(pid, status),
            PoolMsg::ItemTimeout {
                job,
                index,
                attempt,
            } => self.on_timeout(job, index, attempt),
            PoolMsg::Answers {
                job,
                worker,
                answers,
            } => self.on_answers(job, worker, answers),
            PoolMsg::WorkerGone { job, worker } => self.on_worker_gone(job, worker),
            PoolMsg::Shutdown(deadline, done) => {
                match &mut self.shutdown {
                    Some((_, waiting)) => waiting.push(done),
                    None => self.shutdown = Some((deadline, vec![done])),
                }
                self.check_shutdown();
            }
            PoolMsg::Force => {
                self.forced = true;
                let deadline = Instant::now();
                match &mut self.shutdown {
                    Some((d, _)) => *d = deadline,
                    None => self.shutdown = Some((deadline, Vec::new())),
                }
                self.check_shutdown();
            }
            PoolMsg::Tick => {
                self.cancel_orphans();
                self.check_shutdown();
                self.expire();
            }
            PoolMsg::Kill(pid) => {
                self.stopping.remove(&pid);
                // Until it is reaped (and forgotten) the pid cannot belong to anyone else.
                if self.owners.pid(pid).is_some() {
                    kill_group(pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn on_request(&mut self, req: PoolRequest) {
        match req {
            PoolRequest::Submit(name, spec, inputs, reply) => {
                let _ = reply.send(self.submit(name, *spec, inputs));
            }
            PoolRequest::Wait(wait, events, reply) => {
                let id = wait.job;
                let Some(job) = self.jobs.get_mut(&id) else {
                    let _ = reply.send(Err(unknown_job(id)));
                    return;
                };
                let total = job.items.len();
                let end = wait.count.map(|n| wait.from.saturating_add(n));
                if events.is_some() && wait.from < job.items.base() {
                    let _ = reply.send(Err(released(id, wait.from, job.items.base())));
                    return;
                }
                if wait.from > total || end.is_some_and(|e| e > total) {
                    let _ = reply.send(Err(ErrorBody::new(
                        ErrorCode::BadRequest,
                        format!(
                            "pool job {id} has {total} items: no items {}..{}",
                            wait.from,
                            end.unwrap_or(total)
                        ),
                    )));
                    return;
                }
                job.watchers.push(Watcher {
                    next: wait.from,
                    end,
                    events,
                    reply,
                });
                self.notify(id);
            }
            PoolRequest::Append(id, user, inputs, release_before, reply) => {
                let _ = reply.send(self.append(id, user, inputs, release_before));
            }
            PoolRequest::Close(id, reply) => {
                let _ = reply.send(self.close(id));
            }
            PoolRequest::Status(id, reply) => {
                let _ = reply.send(
                    self.jobs
                        .get(&id)
                        .map(Job::info)
                        .ok_or_else(|| unknown_job(id)),
                );
            }
            PoolRequest::Results(id, reply) => {
                let _ = reply.send(
                    self.jobs
                        .get(&id)
                        .map(results)
                        .ok_or_else(|| unknown_job(id)),
                );
            }
            PoolRequest::List(reply) => {
                let jobs = self.jobs.values().map(Job::info).collect();
                let _ = reply.send(Ok(PoolListResult { jobs }));
            }
            PoolRequest::Cancel(id, reply) => {
                let _ = reply.send(self.cancel(id));
            }
            PoolRequest::Remove(id, reply) => {
                let _ = reply.send(self.remove(id));
            }
            PoolRequest::Processes(reply) => {
                let _ = reply.send(Ok(self.processes()));
            }
        }
    }

    fn submit(
        &mut self,
        name: Option<String>,
        spec: JobSpec,
        inputs: Vec<String>,
    ) -> Result<PoolJob, ErrorBody> {
        if self.shutdown.is_some() {
            return Err(ErrorBody::new(
                ErrorCode::ShuttingDown,
                "corrald is shutting down and takes no new pool jobs",
            ));
        }
        let id = self.next_job;
        self.next_job += 1;
        let created_ms = now_ms();
        self.store.pool_job_created(StoredJob {
            id,
            name: name.clone(),
            spec: serde_json::to_string(&spec).expect("job specs serialize"),
            state: JobState::Running.as_str().into(),
            created_ms,
            finished_ms: None,
            items: inputs.iter().map(|i| (i.clone(), None)).collect(),
        });
        let items = inputs
            .into_iter()
            .map(|input| Item {
                input,
                attempts: 0,
                state: ItemState::Pending,
            })
            .collect();
        let job = Job::new(id, name, spec, items, JobState::Running, created_ms);
        let info = job.info();
        self.jobs.insert(id, job);
        self.pump(id);
        Ok(info)
    }

    /// Appends a batch of inputs to an open job.
    fn append(
        &mut self,
        id: u64,
        user: Option<String>,
        inputs: Vec<String>,
        release_before: Option<usize>,
    ) -> Result<PoolBatch, ErrorBody> {
        let job = self.jobs.get_mut(&id).ok_or_else(|| unknown_job(id))?;
        if job.spec.user != user {
            return Err(ErrorBody::new(
                ErrorCode::PermissionDenied,
                format!("pool job {id} belongs to another user: only its submitter may add to it"),
            ));
        }
        if job.state != JobState::Running || !job.spec.open {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "pool job {id} is {} and takes no more inputs (only an open job does, \
                     until it is closed)",
                    if job.state == JobState::Running {
                        "closed"
                    } else {
                        job.state.as_str()
                    }
                ),
            ));
        }
        let first = job.items.len();
        let count = inputs.len();
        // Never past what was there before this batch: its own items are unread.
        job.release_wanted = job
            .release_wanted
            .max(release_before.unwrap_or(0).min(first));
        self.store.pool_job_updated(
            id,
            serde_json::to_string(&job.spec).expect("job specs serialize"),
            first,
            inputs.clone(),
        );
        for input in inputs {
            job.queue.push_back(job.items.len());
            job.items.push(Item {
                input,
                attempts: 0,
                state: ItemState::Pending,
            });
        }
        self.pump(id);
        self.release(id);
        Ok(PoolBatch {
            job: id,
            first,
            count,
        })
    }

    /// Drops the finished items of a job that its client has read (`release_before`),
    /// from memory and from the store.
    fn release(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let (dropped, failed) = job.items.release(job.release_wanted);
        if dropped == 0 {
            return;
        }
        job.spec.released = job.items.base();
        job.spec.released_failed += failed;
        let spec = serde_json::to_string(&job.spec).expect("job specs serialize");
        self.store.pool_items_released(id, spec, job.items.base());
    }

    /// Closes an open job: it ends once its items are done.
    fn close(&mut self, id: u64) -> Result<PoolJob, ErrorBody> {
        let job = self.jobs.get_mut(&id).ok_or_else(|| unknown_job(id))?;
        if job.spec.open {
            job.spec.open = false;
            let spec = serde_json::to_string(&job.spec).expect("job specs serialize");
            self.store
                .pool_job_updated(id, spec, job.items.len(), Vec::new());
            self.pump(id);
            self.notify(id);
        }
        Ok(self.jobs[&id].info())
    }

    /// Starts the guard before the first exec item: its spawn is answered before the
    /// item's (the process thread answers in order). A corrald that runs no pool job has
    /// no guard.
    fn start_guard(&mut self) {
        if std::mem::replace(&mut self.guard_asked, true) {
            return;
        }
        match guard::Guard::spec(Owner::Pool, &self.dir) {
            Ok(spec) => {
                let token = self.token(Proc::Guard);
                self.procs.spawn(token, spec);
            }
            Err(e) => tracing::warn!(
                "pool: cannot start the guard of the pool's items ({e}); if corrald is killed, its running items are not stopped"
            ),
        }
    }

    /// Removes a finished or cancelled job whose processes have all ended, with its
    /// items.
    fn remove(&mut self, id: u64) -> Result<PoolJob, ErrorBody> {
        let job = self.jobs.get(&id).ok_or_else(|| unknown_job(id))?;
        if job.state == JobState::Running || job.running() > 0 || !job.workers.is_empty() {
            return Err(still_running(id, job.running()));
        }
        let info = job.info();
        self.jobs.remove(&id);
        self.store.pool_jobs_removed(vec![id]);
        Ok(info)
    }

    /// Removes the finished jobs older than `keep`, every [`expiry_interval`] (those in
    /// memory, and those of the database no longer loaded).
    fn expire(&mut self) {
        if self
            .last_expiry
            .is_some_and(|t| t.elapsed() < expiry_interval(self.keep))
        {
            return;
        }
        self.last_expiry = Some(Instant::now());
        let before_ms = now_ms() - self.keep.as_millis().min(i64::MAX as u128) as i64;
        let mut spare = Vec::new();
        let mut expired = Vec::new();
        for job in self.jobs.values() {
            if job.state == JobState::Running || job.finished_ms.is_none_or(|t| t >= before_ms) {
                continue;
            }
            if job.running() > 0 || !job.workers.is_empty() {
                spare.push(job.id);
            } else {
                expired.push(job.id);
            }
        }
        for id in &expired {
            self.jobs.remove(id);
        }
        if !expired.is_empty() {
            tracing::info!(
                jobs = expired.len(),
                "pool: removed finished jobs older than pool_keep"
            );
            crate::version::state_changed();
        }
        self.store.pool_jobs_expired(before_ms, spare);
    }

    /// Cancels the running jobs whose owner process is gone (see [`JobSpec::owner`]).
    fn cancel_orphans(&mut self) {
        let orphans: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .filter(|j| {
                j.spec.owner.is_some_and(|(pid, start)| {
                    crate::procstat::process_start_time(pid) != Some(start)
                })
            })
            .map(|j| j.id)
            .collect();
        for id in orphans {
            tracing::info!("pool job {id}: its owner process is gone; cancelled");
            crate::version::state_changed();
            let _ = self.cancel(id);
        }
    }

    /// Starts what may start: exec items up to `workers`, or stream workers and their feed.
    fn pump(&mut self, id: u64) {
        let stopping = self
            .shutdown
            .as_ref()
            .is_some_and(|(d, _)| Instant::now() >= *d);
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.state != JobState::Running || stopping {
            return;
        }
        if job.spec.stream {
            self.pump_stream(id);
        } else {
            self.pump_exec(id);
        }
        self.finish_if_done(id);
    }

    fn pump_exec(&mut self, id: u64) {
        loop {
            let job = self.jobs.get_mut(&id).expect("pumped job exists");
            if job.running() >= job.spec.workers {
                return;
            }
            let Some(index) = job.next_pending() else {
                return;
            };
            job.start_item(index);
            let item = &job.items[index];
            let attempt = item.attempts;
            let argv = substitute(&job.spec.command, &item.input);
            // Output files are reused slot by slot: a fresh pair per item would cost an
            // inode allocation and an unlink each.
            let slot = self.free_slots.pop().unwrap_or_else(|| {
                self.next_slot += 1;
                self.next_slot
            });
            self.slots.insert((id, index), slot);
            let (out, err) = slot_files(&self.dir, slot);
            let spec = spawn_spec(
                &self.socket,
                &job.spec,
                argv,
                Output::Files {
                    stdout: out,
                    stderr: err,
                },
                index,
            );
            let timeout = job.spec.timeout_ms;
            self.start_guard();
            let token = self.token(Proc::Item { job: id, index });
            self.procs.spawn(token, spec);
            if let Some(ms) = timeout {
                self.after(
                    Duration::from_millis(ms),
                    PoolMsg::ItemTimeout {
                        job: id,
                        index,
                        attempt,
                    },
                );
            }
        }
    }

    /// Reads (and frees) the output files of an exec item.
    fn take_output(&mut self, job: u64, index: usize) -> (String, String, bool) {
        let Some(slot) = self.slots.remove(&(job, index)) else {
            return (String::new(), String::new(), false);
        };
        let (out, err) = slot_files(&self.dir, slot);
        let (stdout, cut_out) = read_capped(&out);
        let (stderr, cut_err) = read_capped(&err);
        self.free_slots.push(slot);
        (stdout, stderr, cut_out || cut_err)
    }
}

/// How to start one item (exec) or worker (stream) of a job.
pub(crate) fn spawn_spec(
    socket: &std::path::Path,
    spec: &JobSpec,
    argv: Vec<String>,
    output: Output,
    index: usize,
) -> SpawnSpec {
    let mut env = spec.env.clone();
    env.insert("CORRAL_SOCKET".into(), socket.display().to_string());
    env.insert("CORRAL_POOL_ITEM".into(), index.to_string());
    SpawnSpec {
        argv,
        env,
        working_dir: spec.working_dir.clone(),
        output,
        owner: Owner::Pool,
        umask: None,
        rlimits: Default::default(),
        user: spec.user.clone(),
        group: None,
        die_with_parent: false,
        cgroups: Vec::new(),
    }
}

impl PoolManager {
    fn token(&mut self, what: Proc) -> u64 {
        self.owners.issue(what)
    }

    fn on_spawned(&mut self, token: u64, result: Result<crate::process::Spawned, String>) {
        match self.owners.spawned(token) {
            Some(Proc::Item { job, index }) => self.item_spawned(job, index, result),
            Some(Proc::Worker { job, worker }) => self.worker_spawned(job, worker, result),
            Some(Proc::Guard) => match result.and_then(guard::Guard::from_spawned) {
                Ok(guard) => self.guard = Some(guard),
                Err(e) => tracing::warn!(
                    "pool: cannot start the guard of the pool's items ({e}); if corrald is killed, its running items are not stopped"
                ),
            },
            None => {
                if let Ok(s) = result {
                    kill_group(s.pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn item_spawned(
        &mut self,
        id: u64,
        index: usize,
        result: Result<crate::process::Spawned, String>,
    ) {
        let Some(item) = self.jobs.get_mut(&id).and_then(|j| j.items.get_mut(index)) else {
            if let Ok(s) = result {
                kill_group(s.pid, Signal::SIGKILL);
            }
            return;
        };
        match result {
            Ok(spawned) => {
                if let ItemState::Running { pid, .. } = &mut item.state {
                    *pid = Some(spawned.pid);
                    self.owners
                        .running(spawned.pid, Proc::Item { job: id, index });
                    if let Some(guard) = &self.guard {
                        guard.watch(spawned.pid);
                    }
                } else {
                    kill_group(spawned.pid, Signal::SIGKILL); // cancelled meanwhile
                }
            }
            Err(error) => {
                self.take_output(id, index);
                // A command that cannot start will not start on a retry either.
                self.fail_item(id, index, error);
            }
        }
    }

    fn on_exited(&mut self, pid: i32, status: ExitStatus) {
        let (id, index) = match self.owners.exited(pid) {
            Some(Proc::Item { job, index }) => (job, index),
            Some(Proc::Worker { job, worker }) => {
                // Its answers may still sit in the pipe: the worker's task reports it gone
                // (WorkerGone) at end of stream, after forwarding them. Killing the group
                // makes sure that end comes.
                kill_group(pid, Signal::SIGKILL);
                if let Some(w) = self
                    .jobs
                    .get_mut(&job)
                    .and_then(|j| j.workers.get_mut(&worker))
                {
                    w.pid = None;
                    w.exit = Some(status);
                }
                self.check_shutdown();
                return;
            }
            Some(Proc::Guard) | None => return,
        };
        kill_group(pid, Signal::SIGKILL); // what is left of the item's group
        if let Some(guard) = &self.guard {
            guard.unwatch(pid);
        }
        let (stdout, stderr, truncated) = self.take_output(id, index);
        let timed_out = matches!(
            self.jobs
                .get(&id)
                .and_then(|j| j.items.get(index))
                .map(|i| &i.state),
            Some(ItemState::Running {
                timed_out: true,
                ..
            })
        );
        let error = timed_out.then(|| {
            let ms = self.jobs[&id].spec.timeout_ms.unwrap_or(0);
            format!(
                "timed out after {}",
                corral_config::format_duration(Duration::from_millis(ms))
            )
        });
        let ok = status.success() && !timed_out;
        self.finish_item(
            id,
            index,
            Some(status),
            stdout,
            stderr,
            truncated,
            error,
            ok,
        );
    }

    /// Records an attempt that failed before producing an exit status or output (the
    /// command could not start, its worker died, the job has no workers).
    fn fail_item(&mut self, id: u64, index: usize, error: String) {
        let (out, err) = (String::new(), String::new());
        self.finish_item(id, index, None, out, err, false, Some(error), false);
    }

    /// Records an attempt's end: retry, or the item's final result.
    #[allow(clippy::too_many_arguments)]
    fn finish_item(
        &mut self,
        id: u64,
        index: usize,
        exit: Option<ExitStatus>,
        stdout: String,
        stderr: String,
        truncated: bool,
        error: Option<String>,
        ok: bool,
    ) {
        let stopping = self
            .shutdown
            .as_ref()
            .is_some_and(|(d, _)| Instant::now() >= *d);
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let retries = job.spec.retries;
        let cancelled = job.state == JobState::Cancelled;
        let item = &mut job.items[index];
        let (started_ms, no_retry) = match &item.state {
            ItemState::Running { started_ms, .. } => (*started_ms, false),
            _ => (now_ms(), true),
        };
        if stopping && !ok && !cancelled {
            // Stopped by shutdown: not a failure; it runs again after the next start.
            item.attempts = item.attempts.saturating_sub(1);
            job.requeue(index);
            self.check_shutdown();
            return;
        }
        let spawn_error = exit.is_none() && error.is_some() && !job.spec.stream;
        if !ok && !cancelled && !no_retry && !spawn_error && item.attempts <= retries {
            job.requeue(index);
            self.pump(id);
            return;
        }
        let mut result = PoolItem {
            index,
            input: String::new(),
            ok,
            exit,
            stdout,
            stderr,
            error,
            truncated,
            attempts: item.attempts,
            started_ms,
            ended_ms: now_ms(),
            node: None,
        };
        // Stored without the input (its row has it; `restore` puts it back).
        self.store.pool_item_done(
            id,
            index,
            serde_json::to_string(&result).expect("items serialize"),
        );
        result.input.clone_from(&item.input);
        job.complete(index, result);
        self.notify(id);
        self.pump(id);
        self.check_shutdown();
    }

    /// [`PoolManager::finish_item`] for a batch of a stream worker's answers (each a
    /// success): every item recorded, then one store command for them all, and the
    /// watchers told, the job pumped and shutdown checked once.
    fn finish_answers(&mut self, id: u64, answers: Vec<(usize, String)>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let ended_ms = now_ms();
        let mut stored = Vec::with_capacity(answers.len());
        for (index, stdout) in answers {
            let item = &job.items[index];
            let started_ms = match &item.state {
                ItemState::Running { started_ms, .. } => *started_ms,
                _ => ended_ms,
            };
            let mut result = PoolItem {
                index,
                input: String::new(),
                ok: true,
                exit: None,
                stdout,
                stderr: String::new(),
                error: None,
                truncated: false,
                attempts: item.attempts,
                node: None,
                started_ms,
                ended_ms,
            };
            // Stored without the input, as in `finish_item`.
            stored.push((
                index,
                serde_json::to_string(&result).expect("items serialize"),
            ));
            result.input.clone_from(&item.input);
            job.complete(index, result);
        }
        self.store.pool_items_done(id, stored);
        self.notify(id);
        self.pump(id);
        self.check_shutdown();
    }

    fn on_timeout(&mut self, id: u64, index: usize, attempt: u32) {
        let Some(item) = self.jobs.get_mut(&id).and_then(|j| j.items.get_mut(index)) else {
            return;
        };
        if item.attempts != attempt {
            return;
        }
        if let ItemState::Running { pid, timed_out, .. } = &mut item.state {
            *timed_out = true;
            if let Some(pid) = pid {
                kill_group(*pid, Signal::SIGKILL);
            }
        }
    }

    /// Sends watchers every newly finished item in order, and the job when it ended.
    fn notify(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let ended = job.state != JobState::Running;
        // Made only when a watcher is answered: most calls answer none.
        let mut info = None;
        let mut still = Vec::new();
        for mut w in std::mem::take(&mut job.watchers) {
            if w.next < job.items.base() {
                if w.events.is_some() {
                    // Read by the job's client meanwhile, and dropped.
                    let _ = w.reply.send(Err(released(id, w.next, job.items.base())));
                    continue;
                }
                w.next = job.items.base();
            }
            let end = w.end.unwrap_or(job.items.len());
            while w.next < end {
                let Some(ItemState::Done(result)) = job.items.get(w.next).map(|i| &i.state) else {
                    break;
                };
                if let Some(events) = &w.events {
                    let _ = events.send(result.clone());
                }
                w.next += 1;
            }
            let batch_done = w.end.is_some_and(|e| w.next >= e);
            if batch_done
                || ended
                    && (w.events.is_none()
                        || w.next >= job.items.len()
                        || job.state == JobState::Cancelled)
            {
                let info = info.get_or_insert_with(|| job.info());
                let _ = w.reply.send(Ok(info.clone()));
            } else {
                still.push(w);
            }
        }
        job.watchers = still;
        if job.release_wanted > job.items.base() {
            self.release(id);
        }
    }

    fn finish_if_done(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if job.state != JobState::Running
            || job.spec.open
            || job.n_ok + job.n_failed < job.items.len()
        {
            return;
        }
        job.state = JobState::Finished;
        job.finished_ms = Some(now_ms());
        for worker in job.workers.values_mut() {
            worker.close();
        }
        self.store.pool_job_ended(id, JobState::Finished.as_str());
        self.notify(id);
    }

    /// Running jobs as pseudo-units `pool-ID`: one "instance" per running item (exec,
    /// numbered by item) or worker (stream, numbered by worker).
    fn processes(&self) -> Vec<UnitStatus> {
        let now = now_ms();
        let running = |pid: i32, started_ms: i64, n: u32| InstanceStatus {
            instance: n,
            state: InstanceState::Running,
            pid: Some(pid as u32),
            uptime_ms: Some((now - started_ms).max(0) as u64),
            restarts: 0,
            last_exit: None,
            reason: None,
            ready: None,
            healthy: None,
            health_failures: 0,
            health_failures_total: 0,
            check_error: None,
            cgroup_cpu_usec: None,
            cgroup_memory_bytes: None,
        };
        self.jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .map(|j| {
                let instances = if j.spec.stream {
                    j.workers
                        .iter()
                        .filter_map(|(w, worker)| {
                            worker.pid.map(|p| running(p, j.created_ms, *w as u32))
                        })
                        .collect()
                } else {
                    j.items
                        .indexed()
                        .filter_map(|(n, i)| match i.state {
                            ItemState::Running {
                                pid: Some(pid),
                                started_ms,
                                ..
                            } => Some(running(pid, started_ms, n as u32)),
                            _ => None,
                        })
                        .collect()
                };
                UnitStatus {
                    name: format!("pool-{}", j.id),
                    kind: "pool-job".into(),
                    daemon: false,
                    transient: true,
                    loaded: true,
                    errors: Vec::new(),
                    parent: None,
                    instances,
                }
            })
            .collect()
    }

    fn cancel(&mut self, id: u64) -> Result<PoolJob, ErrorBody> {
        let job = self.jobs.get_mut(&id).ok_or_else(|| unknown_job(id))?;
        if job.state == JobState::Running {
            job.state = JobState::Cancelled;
            job.finished_ms = Some(now_ms());
            self.stop_job(id);
            self.store.pool_job_ended(id, JobState::Cancelled.as_str());
            self.notify(id);
        }
        Ok(self.jobs[&id].info())
    }

    /// Stops a job's processes like instances: its stop signal to each process group,
    /// SIGKILL after its stop timeout (at once after a second shutdown signal).
    fn stop_job(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let mut pids: Vec<i32> = job
            .items
            .iter()
            .filter_map(|i| match i.state {
                ItemState::Running { pid, .. } => pid,
                _ => None,
            })
            .collect();
        for worker in job.workers.values_mut() {
            worker.close();
            pids.extend(worker.pid);
        }
        let signal = Signal::try_from(job.spec.stop_signal).unwrap_or(Signal::SIGTERM);
        let timeout = Duration::from_millis(job.spec.stop_timeout_ms);
        for pid in pids {
            if self.forced {
                kill_group(pid, Signal::SIGKILL);
            } else if self.stopping.insert(pid) {
                kill_group(pid, signal);
                kill_group(pid, Signal::SIGCONT);
                self.after(timeout, PoolMsg::Kill(pid));
            }
        }
    }

    /// Once the shutdown deadline passes, stops every running job's processes (their
    /// items stay unfinished and resume after the next start); answers once nothing of
    /// any job runs.
    fn check_shutdown(&mut self) {
        let Some((deadline, _)) = &self.shutdown else {
            return;
        };
        if Instant::now() >= *deadline {
            let busy: Vec<u64> = self
                .jobs
                .values()
                .filter(|j| j.n_running > 0 || j.workers.values().any(|w| w.pid.is_some()))
                .map(|j| j.id)
                .collect();
            for id in busy {
                self.stop_job(id);
            }
        }
        let busy = self
            .jobs
            .values()
            .any(|j| j.running() > 0 || j.workers.values().any(|w| w.pid.is_some()))
            || self.owners.spawning();
        if !busy {
            if let Some((_, waiting)) = &mut self.shutdown {
                if let Some(guard) = self.guard.take() {
                    guard.release();
                }
                for done in waiting.drain(..) {
                    let _ = done.send(());
                }
            }
        }
    }

    fn after(&self, delay: Duration, msg: PoolMsg) {
        crate::actor::after(&self.tx, delay, msg);
    }
}

fn released(id: u64, from: usize, base: usize) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::BadRequest,
        format!(
            "pool job {id} is open and its client has read the results before item {base}: \
             they were dropped, so no results from item {from} (wait from {base} on)"
        ),
    )
}

fn unknown_job(id: u64) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotFound,
        format!("no pool job {id} (see `corralctl pool list`)"),
    )
}

fn results(job: &Job) -> PoolResults {
    PoolResults {
        job: job.info(),
        items: job
            .items
            .iter()
            .filter_map(|i| match &i.state {
                ItemState::Done(r) => Some(r.clone()),
                _ => None,
            })
            .collect(),
    }
}

/// The command for one input: `{}` replaced by it, or it appended if no `{}` appears.
pub fn substitute(command: &[String], input: &str) -> Vec<String> {
    if command.iter().any(|a| a.contains("{}")) {
        command.iter().map(|a| a.replace("{}", input)).collect()
    } else {
        let mut argv = command.to_vec();
        argv.push(input.to_owned());
        argv
    }
}

fn slot_files(dir: &std::path::Path, slot: usize) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{slot}.out")),
        dir.join(format!("{slot}.err")),
    )
}

/// A file's text, cut at [`OUTPUT_CAP`] with the cut marked.
pub(crate) fn read_capped(path: &std::path::Path) -> (String, bool) {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return (String::new(), false);
    };
    let total = file.metadata().map_or(0, |m| m.len());
    let mut buf = Vec::new();
    let _ = file.take(OUTPUT_CAP as u64).read_to_end(&mut buf);
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    let cut = total > OUTPUT_CAP as u64;
    if cut {
        text.push_str(&format!(
            "\n[corral: output truncated, {} more bytes]\n",
            total - OUTPUT_CAP as u64
        ));
    }
    (text, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_or_the_input_appended() {
        let cmd = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            substitute(&cmd(&["sh", "-c", "echo $(({} * {}))"]), "3"),
            cmd(&["sh", "-c", "echo $((3 * 3))"])
        );
        assert_eq!(substitute(&cmd(&["echo"]), "x y"), cmd(&["echo", "x y"]));
    }
}
