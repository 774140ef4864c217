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
mod job;
mod lifecycle;
pub mod nodes;
mod run;
mod stream;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_proto::{
    ErrorBody, ErrorCode, JobState, PoolBatch, PoolItem, PoolJob, PoolListResult, PoolResults,
    UnitStatus,
};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

pub use self::job::JobSpec;
use self::job::{Item, ItemState, Job, Watcher, respawn_budget};
use crate::actor::Reply;
use crate::process::{Output, Owner, Owners, ProcEvent, ProcessThread, SpawnSpec, kill_group};
use crate::store::{Store, StoredJob};

/// Most bytes of stdout (and of stderr) kept per exec item.
const OUTPUT_CAP: usize = 1 << 20;

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
