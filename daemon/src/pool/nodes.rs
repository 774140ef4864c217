//! Pool jobs shared by the nodes of a PostgreSQL backend (`corrald --backend`).
//!
//! With a backend, `pool_submit` stores an exec-mode job in the database
//! (`backend::pool`) and every node's [`ClusterPool`] runs a claimer task that claims
//! items in index order up to the node's free slots (`pool_slots`), runs each as a
//! process of the process service ([`Owner::Cluster`], with `CORRAL_NODE` set), and
//! records each result fenced by its attempt number. The claimer also puts back the items
//! of nodes whose lease expired. Whoever waits for a job (any node) reads its results from
//! the database in index order, woken by `NOTIFY` and polling every [`POLL`].
//!
//! Not across nodes yet (a clear error): stream mode, open jobs (`pool_append`), named
//! pools.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use corral_proto::{
    ErrorBody, ErrorCode, ExitStatus, JobState, PoolItem, PoolJob, PoolListResult, PoolResults,
};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};
use tokio_util::sync::CancellationToken;

use super::guard::Guard;
use super::{JobSpec, Wait, read_capped, spawn_spec, substitute};
use crate::backend::pool::{self as sql, Claimed, NewJob, Recorded, Removal};
use crate::backend::{BackendSettings, redact};
use crate::clock::now_ms;
use crate::process::{Output, Owner, ProcEvent, ProcessThread, Spawned, kill_group};

/// How often the claimer and waiters look again without a `NOTIFY`.
pub const POLL: Duration = Duration::from_millis(100);

/// Results read per statement by a waiter.
const RESULTS_PAGE: i64 = 1000;

/// Routes the process service's events about [`Owner::Cluster`] processes to the task
/// that started each one. Called on the process thread, in event order: a process's
/// `Spawned` is handled (its exit registered) before its `Exited` arrives.
#[derive(Default)]
pub struct Router {
    inner: Mutex<RouterState>,
}

/// Where a process's spawn outcome and its exit go.
type Expected = (
    oneshot::Sender<Result<Spawned, String>>,
    oneshot::Sender<ExitStatus>,
);

#[derive(Default)]
struct RouterState {
    next: u64,
    spawning: HashMap<u64, Expected>,
    running: HashMap<i32, oneshot::Sender<ExitStatus>>,
}

impl Router {
    /// Hands an event to the task waiting for it; a process nobody waits for is killed.
    pub fn route(&self, event: ProcEvent) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ProcEvent::Spawned { token, result } => match state.spawning.remove(&token) {
                Some((spawned, exited)) => {
                    if let Ok(s) = &result {
                        state.running.insert(s.pid, exited);
                    }
                    let _ = spawned.send(result);
                }
                None => {
                    if let Ok(s) = result {
                        kill_group(s.pid, Signal::SIGKILL);
                    }
                }
            },
            ProcEvent::Exited { pid, status } => {
                if let Some(exited) = state.running.remove(&pid) {
                    let _ = exited.send(status);
                }
            }
        }
    }

    /// A fresh token and the channels its spawn and exit arrive on.
    pub(super) fn expect(
        &self,
    ) -> (
        u64,
        oneshot::Receiver<Result<Spawned, String>>,
        oneshot::Receiver<ExitStatus>,
    ) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        state.next += 1;
        let token = state.next;
        let (spawned_tx, spawned_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        state.spawning.insert(token, (spawned_tx, exited_tx));
        (token, spawned_rx, exited_rx)
    }
}

/// What the claimer needs to run items.
pub struct Executor {
    /// The process service.
    pub procs: ProcessThread,
    /// Where its events about our processes arrive.
    pub router: Arc<Router>,
    /// Item output files (a directory of this life of corrald).
    pub dir: PathBuf,
    /// The control socket (`CORRAL_SOCKET`).
    pub socket: PathBuf,
    /// Items run at once on this node.
    pub slots: usize,
    /// Finished jobs older than this are removed (`pool_keep`).
    pub keep: Duration,
}

/// This node's part in pool jobs shared by the nodes of a backend. Shared by `Arc`.
pub struct ClusterPool {
    settings: BackendSettings,
    config: Config,
    /// The connection of handlers' statements (single statements: no transactions on
    /// it, its queries are pipelined); `None` while the database is unreachable.
    shared: RwLock<Option<Arc<Client>>>,
    /// Woken by `NOTIFY corral_pool`.
    wake: Arc<Notify>,
    stop: CancellationToken,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl ClusterPool {
    /// Connects (two connections: one for handlers, one for the claimer, which listens),
    /// puts back this node's claims of a previous life and starts the claimer.
    pub async fn start(
        settings: BackendSettings,
        exec: Executor,
    ) -> Result<Arc<ClusterPool>, crate::backend::pg::StartError> {
        use crate::backend::pg::StartError;
        let mut config = Config::from_str(&settings.url).map_err(|e| StartError::BadUrl {
            url: redact(&settings.url),
            reason: e.to_string(),
        })?;
        config
            .connect_timeout(Duration::from_secs(5))
            .application_name(format!("corrald {} pool", settings.node));
        let unreachable = |e: tokio_postgres::Error| StartError::Unreachable {
            url: redact(&settings.url),
            reason: e.to_string(),
        };
        let wake = Arc::new(Notify::new());
        let (shared, _) = connect(&config, None).await.map_err(unreachable)?;
        let (claimer, _) = connect(&config, Some(wake.clone()))
            .await
            .map_err(unreachable)?;
        let (freed, statements) = async {
            claimer.batch_execute(sql::LISTEN).await?;
            let statements = sql::Statements::prepare(&claimer).await?;
            Ok((sql::release(&claimer, &settings.node).await?, statements))
        }
        .await
        .map_err(|source| StartError::Sql {
            url: redact(&settings.url),
            source,
        })?;
        if freed > 0 {
            tracing::info!(
                items = freed,
                "pool: put back the items this node had claimed before it restarted"
            );
        }
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let pool = Arc::new(ClusterPool {
            settings,
            config,
            shared: RwLock::new(Some(Arc::new(shared))),
            wake,
            stop: CancellationToken::new(),
            stopped: Mutex::new(Some(stopped_rx)),
        });
        let guard = Guard::start(&exec).await.map(Arc::new);
        let claimer_task = Claimer {
            pool: pool.clone(),
            client: claimer,
            statements,
            exec: Arc::new(exec),
            guard,
            live: HashMap::new(),
            unrecorded: Vec::new(),
            last_rescue: None,
            last_expiry: None,
            last_checks: None,
            record_failed: false,
        };
        tokio::spawn(async move {
            claimer_task.run().await;
            let _ = stopped_tx.send(());
        });
        Ok(pool)
    }

    fn node(&self) -> &str {
        &self.settings.node
    }

    fn client(&self) -> Result<Arc<Client>, ErrorBody> {
        let current = self
            .shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match current {
            Some(c) if !c.is_closed() => Ok(c),
            _ => Err(self.unavailable()),
        }
    }

    /// Reconnects the handlers' connection if it closed (called by the claimer).
    async fn keep_shared(&self) {
        if self.client().is_ok() {
            return;
        }
        if let Ok((client, _)) = connect(&self.config, None).await {
            *self.shared.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(client));
        }
    }

    fn unavailable(&self) -> ErrorBody {
        ErrorBody::new(
            ErrorCode::BackendUnavailable,
            format!(
                "the PostgreSQL backend at {} is unreachable; nothing was changed. corrald reconnects by itself: retry later",
                redact(&self.settings.url)
            ),
        )
    }

    fn sql_error(&self, op: &str, e: tokio_postgres::Error) -> ErrorBody {
        if e.is_closed() || e.as_db_error().is_none() {
            return self.unavailable();
        }
        ErrorBody::new(
            ErrorCode::Internal,
            format!("{op}: PostgreSQL refused the statement ({e}); nothing was changed"),
        )
    }

    /// Stores a job; every node with free slots takes part.
    pub async fn submit(
        &self,
        name: Option<String>,
        spec: JobSpec,
        inputs: Vec<String>,
    ) -> Result<PoolJob, ErrorBody> {
        if spec.stream || spec.open {
            return Err(not_across_nodes("stream mode (and open jobs)"));
        }
        let client = self.client()?;
        let text = serde_json::to_string(&spec).expect("job specs serialize");
        let job = NewJob {
            name: name.as_deref(),
            spec: &text,
            workers: spec.workers,
            retries: spec.retries,
            inputs: &inputs,
            node: self.node(),
        };
        let id = sql::submit(&client, job)
            .await
            .map_err(|e| self.sql_error("pool_submit", e))?;
        self.status(id).await
    }

    /// A job's progress.
    pub async fn status(&self, id: u64) -> Result<PoolJob, ErrorBody> {
        let client = self.client()?;
        sql::job(&client, id)
            .await
            .map_err(|e| self.sql_error("pool_status", e))?
            .ok_or_else(|| unknown_job(id))
    }

    /// A job's progress with each node's share.
    pub async fn status_by_node(&self, id: u64) -> Result<PoolJob, ErrorBody> {
        let mut job = self.status(id).await?;
        let client = self.client()?;
        job.nodes = sql::shares(&client, id)
            .await
            .map_err(|e| self.sql_error("pool_status", e))?;
        Ok(job)
    }

    /// A job's finished items.
    pub async fn results(&self, id: u64) -> Result<PoolResults, ErrorBody> {
        let job = self.status(id).await?;
        let client = self.client()?;
        let mut items = Vec::new();
        loop {
            let from = items.last().map_or(0, |i: &PoolItem| i.index + 1);
            let page = sql::results(&client, id, from, job.total, RESULTS_PAGE)
                .await
                .map_err(|e| self.sql_error("pool_results", e))?;
            let last = page.len() < RESULTS_PAGE as usize;
            items.extend(page);
            if last {
                break;
            }
        }
        Ok(PoolResults { job, items })
    }

    /// Every job of the database.
    pub async fn list(&self) -> Result<PoolListResult, ErrorBody> {
        let client = self.client()?;
        let jobs = sql::jobs(&client)
            .await
            .map_err(|e| self.sql_error("pool_list", e))?;
        Ok(PoolListResult { jobs })
    }

    /// Removes a finished or cancelled job and its items from the database, once no node
    /// runs any of its items; answers the job as it was.
    pub async fn remove(&self, id: u64) -> Result<PoolJob, ErrorBody> {
        let job = self.status(id).await?;
        let client = self.client()?;
        match sql::remove(&client, id)
            .await
            .map_err(|e| self.sql_error("pool_remove", e))?
        {
            Removal::Removed => Ok(job),
            Removal::Running(n) => Err(super::still_running(id, n)),
            Removal::Unknown => Err(unknown_job(id)),
        }
    }

    /// Cancels a job on every node.
    pub async fn cancel(&self, id: u64) -> Result<PoolJob, ErrorBody> {
        let client = self.client()?;
        sql::cancel(&client, id)
            .await
            .map_err(|e| self.sql_error("pool_cancel", e))?;
        self.status(id).await
    }

    /// Waits for a job's end, or for its items `from..from + count`; with `events`, sends
    /// each finished item in index order.
    pub async fn wait(
        &self,
        wait: Wait,
        events: Option<mpsc::UnboundedSender<PoolItem>>,
    ) -> Result<PoolJob, ErrorBody> {
        let id = wait.job;
        let job = self.status(id).await?;
        let total = job.total;
        let end = wait.count.map(|n| wait.from.saturating_add(n));
        if wait.from > total || end.is_some_and(|e| e > total) {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "pool job {id} has {total} items: no items {}..{}",
                    wait.from,
                    end.unwrap_or(total)
                ),
            ));
        }
        let end = end.unwrap_or(total);
        let mut next = wait.from;
        loop {
            // Registered before looking, so a NOTIFY during the look is not missed.
            let woken = self.wake.notified();
            let client = self.client()?;
            let state = sql::state(&client, id)
                .await
                .map_err(|e| self.sql_error("pool_wait", e))?
                .ok_or_else(|| unknown_job(id))?;
            while next < end {
                let page = sql::results(&client, id, next, end, RESULTS_PAGE)
                    .await
                    .map_err(|e| self.sql_error("pool_wait", e))?;
                let before = next;
                for item in page {
                    if item.index != next {
                        break;
                    }
                    if let Some(events) = &events {
                        let _ = events.send(item);
                    }
                    next += 1;
                }
                if next - before < RESULTS_PAGE as usize {
                    break;
                }
            }
            // A cancelled job has no more items coming; a finished one's were all read
            // (its state was read before its results).
            if next >= end || state != JobState::Running {
                return self.status(id).await;
            }
            if events.as_ref().is_some_and(|e| e.is_closed()) {
                return Err(ErrorBody::new(ErrorCode::Failed, "the waiter has gone"));
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// Stops claiming, kills this node's running items and puts them back for the other
    /// nodes (or this one's next start).
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let stopped = self
            .stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(stopped) = stopped {
            let _ = stopped.await;
        }
    }
}

fn unknown_job(id: u64) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotFound,
        format!("no pool job {id} in the shared backend (see `corralctl pool list`)"),
    )
}

/// The error of a pool feature not run across nodes yet.
pub fn not_across_nodes(what: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Failed,
        format!(
            "{what} is not supported across nodes yet (corrald --backend): use an exec-mode \
             job (a command per item), or a corrald without --backend"
        ),
    )
}

/// One attempt's end, as the item's task reports it.
struct Finished {
    job: u64,
    item: PoolItem,
    /// A failure no retry would cure (the command cannot start).
    final_failure: bool,
    /// Killed because this node stops: not a result; the claim is put back.
    stopped: bool,
}

struct Claimer {
    pool: Arc<ClusterPool>,
    client: Client,
    /// Its statements, prepared on `client`.
    statements: sql::Statements,
    exec: Arc<Executor>,
    /// Kills the running items' groups if corrald is killed (see `pool::guard`).
    guard: Option<Arc<Guard>>,
    /// Running items: their kill switch.
    live: HashMap<(u64, usize), CancellationToken>,
    /// Ends not recorded yet (the database was away): recorded first when it is back.
    unrecorded: Vec<Finished>,
    last_rescue: Option<Instant>,
    /// When jobs older than `pool_keep` were last looked for.
    last_expiry: Option<Instant>,
    /// When cancelled jobs were last looked at.
    last_checks: Option<Instant>,
    /// Whether the last record failed.
    record_failed: bool,
}

impl Claimer {
    async fn run(mut self) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        loop {
            let woken = self.pool.wake.notified();
            tokio::select! {
                Some(done) = done_rx.recv() => self.unrecorded.push(done),
                () = woken => {}
                () = tokio::time::sleep(POLL) => {}
                () = self.pool.stop.cancelled() => break,
            }
            while let Ok(done) = done_rx.try_recv() {
                self.unrecorded.push(done);
            }
            let (began, ended) = (Instant::now(), self.unrecorded.len());
            let round = self.round(&done_tx).await;
            tracing::debug!(
                ended,
                running = self.live.len(),
                took_us = began.elapsed().as_micros() as u64,
                "pool: claimer round"
            );
            if let Err(e) = round {
                tracing::warn!("pool: claiming or recording across nodes failed: {e}");
                if self.client.is_closed() {
                    self.reconnect().await;
                }
            }
        }
        // Stopping: kill what runs here and put the claims back.
        for done in &self.unrecorded {
            self.live.remove(&(done.job, done.item.index));
        }
        for kill in self.live.values() {
            kill.cancel();
        }
        while !self.live.is_empty() {
            let Some(done) = done_rx.recv().await else {
                break;
            };
            self.live.remove(&(done.job, done.item.index));
            if !done.stopped {
                self.unrecorded.push(done);
            }
        }
        let _ = self.record_all().await;
        match sql::release(&self.client, &self.pool.settings.node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(items = n, "pool: put back this node's claimed items"),
            Err(e) => tracing::warn!(
                "pool: could not put back this node's claimed items ({e}); other nodes take them over once its lease expires"
            ),
        }
        if let Some(guard) = &self.guard {
            guard.release();
        }
    }

    /// Records what ended, puts back dead nodes' items, stops items of cancelled jobs,
    /// claims what fits. The record and the claim go out together: a round whose
    /// periodic checks are not due is one round trip to the database.
    async fn round(
        &mut self,
        done_tx: &mpsc::UnboundedSender<Finished>,
    ) -> Result<(), tokio_postgres::Error> {
        self.pool.keep_shared().await;
        let node = self.pool.settings.node.clone();
        let lease = self.pool.settings.lease;
        if self.last_rescue.is_none_or(|t| t.elapsed() >= lease / 3) {
            self.last_rescue = Some(Instant::now());
            let freed = sql::rescue(&self.client, &node).await?;
            if freed > 0 {
                tracing::warn!(
                    items = freed,
                    "pool: put back the items of nodes whose lease expired"
                );
            }
            let running: Vec<(u64, usize)> = self.live.keys().copied().collect();
            let unknown = sql::release_unknown(&self.client, &node, &running).await?;
            if unknown > 0 {
                tracing::warn!(
                    items = unknown,
                    "pool: put back items claimed for this node whose claim it never heard of"
                );
            }
            sql::finish_stragglers(&self.client).await?;
        }
        let keep = self.exec.keep;
        if self
            .last_expiry
            .is_none_or(|t| t.elapsed() >= super::expiry_interval(keep))
        {
            self.last_expiry = Some(Instant::now());
            let removed = sql::expire(&self.client, keep).await?;
            if removed > 0 {
                tracing::info!(
                    jobs = removed,
                    "pool: removed finished jobs older than pool_keep"
                );
            }
        }
        // A round runs at each item's end: the checks that need no answer that soon run
        // once per POLL.
        if self.last_checks.is_none_or(|t| t.elapsed() >= POLL) && !self.live.is_empty() {
            self.last_checks = Some(Instant::now());
            let mut jobs: Vec<i64> = self.live.keys().map(|(j, _)| *j as i64).collect();
            jobs.sort_unstable();
            jobs.dedup();
            for ended in sql::ended(&self.client, &jobs).await? {
                for ((job, _), kill) in &self.live {
                    if *job == ended {
                        kill.cancel();
                    }
                }
            }
        }
        // The items that ended are still claimed (in `live`) until recorded, but their
        // slots are free: the record commits before the claim counts running items. Not
        // while records fail, so that what waits to be recorded stays bounded.
        let busy = match self.record_failed {
            false => self.live.len().saturating_sub(self.unrecorded.len()),
            true => self.live.len(),
        };
        let free = self.exec.slots.saturating_sub(busy);
        let ended = ended(&self.unrecorded);
        let (recorded, claimed) = futures_util::join!(
            async {
                match ended.is_empty() {
                    true => Ok(Vec::new()),
                    false => sql::record(&self.client, &self.statements, &node, &ended).await,
                }
            },
            async {
                match free {
                    0 => Ok(Vec::new()),
                    _ => sql::claim(&self.client, &self.statements, &node, free).await,
                }
            },
        );
        drop(ended);
        // Recorded ends leave `live` before the claimed items enter it: an item that
        // failed with retries left may be claimed again in the same round.
        self.record_failed = recorded.is_err();
        let recorded = recorded.map(|outcomes| self.recorded(outcomes));
        // What was claimed is committed: it runs even if the record failed.
        for c in claimed? {
            self.start(c, done_tx.clone());
        }
        recorded
    }

    /// Records what ended (when stopping).
    async fn record_all(&mut self) -> Result<(), tokio_postgres::Error> {
        let node = self.pool.settings.node.clone();
        let ended = ended(&self.unrecorded);
        let outcomes = sql::record(&self.client, &self.statements, &node, &ended).await?;
        drop(ended);
        self.recorded(outcomes);
        Ok(())
    }

    /// Forgets the recorded ends, given what became of each.
    fn recorded(&mut self, outcomes: Vec<Recorded>) {
        if outcomes.is_empty() {
            return;
        }
        for (done, outcome) in self.unrecorded.drain(..).zip(outcomes) {
            if outcome == Recorded::Stale {
                tracing::info!(
                    job = done.job,
                    item = done.item.index,
                    attempt = done.item.attempts,
                    "pool: a superseded attempt ended; its result is discarded"
                );
            }
            self.live.remove(&(done.job, done.item.index));
        }
    }

    fn start(&mut self, claimed: Claimed, done_tx: mpsc::UnboundedSender<Finished>) {
        let kill = CancellationToken::new();
        self.live.insert((claimed.job, claimed.index), kill.clone());
        let exec = self.exec.clone();
        let guard = self.guard.clone();
        let node = self.pool.settings.node.clone();
        let stop = self.pool.stop.clone();
        tokio::spawn(async move {
            let done = run_item(&exec, guard.as_deref(), claimed, &node, kill, stop).await;
            let _ = done_tx.send(done);
        });
    }

    async fn reconnect(&mut self) {
        loop {
            if self.pool.stop.is_cancelled() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Ok((client, _)) = connect(&self.pool.config, Some(self.pool.wake.clone())).await
            else {
                continue;
            };
            if client.batch_execute(sql::LISTEN).await.is_err() {
                continue;
            }
            if let Ok(statements) = sql::Statements::prepare(&client).await {
                self.client = client;
                self.statements = statements;
                tracing::info!("pool: reconnected to the shared backend");
                return;
            }
        }
    }
}

/// Runs one claimed item as a process and reports its end.
async fn run_item(
    exec: &Executor,
    guard: Option<&Guard>,
    claimed: Claimed,
    node: &str,
    kill: CancellationToken,
    stop: CancellationToken,
) -> Finished {
    let started_ms = now_ms();
    let job = claimed.job;
    let mut item = PoolItem {
        index: claimed.index,
        input: claimed.input.clone(),
        ok: false,
        exit: None,
        stdout: String::new(),
        stderr: String::new(),
        error: None,
        truncated: false,
        attempts: claimed.attempt,
        started_ms,
        ended_ms: started_ms,
        node: Some(node.to_string()),
    };
    let fail = |mut item: PoolItem, error: String| {
        item.error = Some(error);
        item.ended_ms = now_ms();
        Finished {
            job,
            item,
            final_failure: true,
            stopped: false,
        }
    };
    let Ok(spec) = serde_json::from_str::<JobSpec>(&claimed.spec) else {
        return fail(
            item,
            "the job's settings are unreadable by this node".into(),
        );
    };
    let name = format!("{job}.{}.{}", claimed.index, claimed.attempt);
    let (out, err) = (
        exec.dir.join(format!("{name}.out")),
        exec.dir.join(format!("{name}.err")),
    );
    let argv = substitute(&spec.command, &claimed.input);
    let output = Output::Files {
        stdout: out.clone(),
        stderr: err.clone(),
    };
    let mut process = spawn_spec(&exec.socket, &spec, argv, output, claimed.index);
    process.owner = Owner::Cluster;
    process.env.insert("CORRAL_NODE".into(), node.to_string());
    let (token, spawned, exited) = exec.router.expect();
    exec.procs.spawn(token, process);
    let pid = match spawned.await {
        Ok(Ok(spawned)) => spawned.pid,
        Ok(Err(error)) => return fail(item, error),
        Err(_) => return fail(item, "corrald's process service has stopped".into()),
    };
    if let Some(guard) = guard {
        guard.watch(pid);
    }
    let deadline = spec
        .timeout_ms
        .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let (mut timed_out, mut killed) = (false, false);
    // Stopped (cancel, shutdown) like an instance: the job's stop signal, SIGKILL after
    // its stop timeout.
    let mut kill_at = None;
    tokio::pin!(exited);
    let status = loop {
        tokio::select! {
            status = &mut exited => break status.ok(),
            () = sleep_until(deadline), if !timed_out && deadline.is_some() => {
                timed_out = true;
                kill_group(pid, Signal::SIGKILL);
            }
            () = kill.cancelled(), if !killed => {
                killed = true;
                kill_group(pid, Signal::try_from(spec.stop_signal).unwrap_or(Signal::SIGTERM));
                kill_group(pid, Signal::SIGCONT);
                kill_at = Some(
                    tokio::time::Instant::now() + Duration::from_millis(spec.stop_timeout_ms),
                );
            }
            () = sleep_until(kill_at), if kill_at.is_some() => {
                kill_at = None;
                kill_group(pid, Signal::SIGKILL);
            }
        }
    };
    kill_group(pid, Signal::SIGKILL); // what is left of the item's group
    if let Some(guard) = guard {
        guard.unwatch(pid);
    }
    let (stdout, cut_out) = read_capped(&out);
    let (stderr, cut_err) = read_capped(&err);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    item.exit = status;
    item.stdout = stdout;
    item.stderr = stderr;
    item.truncated = cut_out || cut_err;
    item.ended_ms = now_ms();
    item.ok = !killed && !timed_out && status.is_some_and(|s| s.success());
    if timed_out {
        let ms = spec.timeout_ms.unwrap_or(0);
        item.error = Some(format!(
            "timed out after {}",
            corral_config::format_duration(Duration::from_millis(ms))
        ));
    }
    let stopped = killed && stop.is_cancelled();
    if killed && !stopped {
        item.error = Some("the job was cancelled".into());
    }
    Finished {
        job,
        item,
        final_failure: killed,
        stopped,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Connects; with `wake`, each `NOTIFY` wakes it. The receiver fires when the
/// connection ends.
async fn connect(
    config: &Config,
    wake: Option<Arc<Notify>>,
) -> Result<(Client, oneshot::Receiver<()>), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(wake) = &wake {
                        wake.notify_waiters();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("pool: connection to the shared backend lost: {e}");
                    break;
                }
            }
        }
        let _ = tx.send(());
    });
    Ok((client, rx))
}

/// What ended and waits to be recorded, as the record statement takes it.
fn ended(unrecorded: &[Finished]) -> Vec<sql::Ended<'_>> {
    unrecorded
        .iter()
        .map(|done| sql::Ended {
            job: done.job,
            result: &done.item,
            final_failure: done.final_failure,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_router_hands_a_spawn_and_then_its_exit_to_the_task_that_asked() {
        let router = Router::default();
        let (token, spawned, exited) = router.expect();
        let (other, other_spawned, _other_exited) = router.expect();
        assert_ne!(token, other, "tokens are not reused");
        router.route(ProcEvent::Spawned {
            token,
            result: Ok(Spawned {
                pid: 4242,
                start_time: 0,
                pipes: None,
            }),
        });
        let status = ExitStatus {
            code: Some(3),
            signal: None,
        };
        router.route(ProcEvent::Exited { pid: 4242, status });
        assert_eq!(spawned.await.unwrap().map(|s| s.pid), Ok(4242));
        assert_eq!(exited.await.unwrap(), status);
        // A process that could not start: its error, and no exit is ever waited for.
        router.route(ProcEvent::Spawned {
            token: other,
            result: Err("command not found".into()),
        });
        assert_eq!(
            other_spawned.await.unwrap().map(|s| s.pid),
            Err("command not found".to_string())
        );
        let state = router.inner.lock().unwrap();
        assert!(state.spawning.is_empty() && state.running.is_empty());
    }
}
