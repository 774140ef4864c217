//! Jobs coming and going: submit, append, release, close, remove, expiry, and the
//! cancelling of jobs whose owner process is gone.

use std::time::Instant;

use corral_proto::{ErrorBody, ErrorCode, JobState, PoolBatch, PoolJob};

use super::guard;
use super::job::{Item, ItemState, Job, JobSpec};
use super::{PoolManager, Proc, expiry_interval, still_running, unknown_job};
use crate::clock::now_ms;
use crate::process::Owner;
use crate::store::StoredJob;

impl PoolManager {
    pub(super) fn submit(
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
    pub(super) fn append(
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
    pub(super) fn release(&mut self, id: u64) {
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
    pub(super) fn close(&mut self, id: u64) -> Result<PoolJob, ErrorBody> {
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
    pub(super) fn start_guard(&mut self) {
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
    pub(super) fn remove(&mut self, id: u64) -> Result<PoolJob, ErrorBody> {
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
    pub(super) fn expire(&mut self) {
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
    pub(super) fn cancel_orphans(&mut self) {
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
}
