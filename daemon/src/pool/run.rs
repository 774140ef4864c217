//! Running jobs: spawns and exits, item results and retries, time limits, the watchers
//! told, the processes shown by `status`, cancel, and shutdown.

use std::time::{Duration, Instant};

use corral_proto::{
    ErrorBody, ExitStatus, InstanceState, InstanceStatus, JobState, PoolItem, PoolJob, UnitStatus,
};
use nix::sys::signal::Signal;

use super::guard;
use super::job::ItemState;
use super::{PoolManager, PoolMsg, Proc, released, unknown_job};
use crate::clock::now_ms;
use crate::process::kill_group;

impl PoolManager {
    pub(super) fn token(&mut self, what: Proc) -> u64 {
        self.owners.issue(what)
    }

    pub(super) fn on_spawned(
        &mut self,
        token: u64,
        result: Result<crate::process::Spawned, String>,
    ) {
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

    pub(super) fn item_spawned(
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

    pub(super) fn on_exited(&mut self, pid: i32, status: ExitStatus) {
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
    pub(super) fn fail_item(&mut self, id: u64, index: usize, error: String) {
        let (out, err) = (String::new(), String::new());
        self.finish_item(id, index, None, out, err, false, Some(error), false);
    }

    /// Records an attempt's end: retry, or the item's final result.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_item(
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
    pub(super) fn finish_answers(&mut self, id: u64, answers: Vec<(usize, String)>) {
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

    pub(super) fn on_timeout(&mut self, id: u64, index: usize, attempt: u32) {
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
    pub(super) fn notify(&mut self, id: u64) {
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

    pub(super) fn finish_if_done(&mut self, id: u64) {
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
    pub(super) fn processes(&self) -> Vec<UnitStatus> {
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

    pub(super) fn cancel(&mut self, id: u64) -> Result<PoolJob, ErrorBody> {
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
    pub(super) fn stop_job(&mut self, id: u64) {
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
    pub(super) fn check_shutdown(&mut self) {
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

    pub(super) fn after(&self, delay: Duration, msg: PoolMsg) {
        crate::actor::after(&self.tx, delay, msg);
    }
}
