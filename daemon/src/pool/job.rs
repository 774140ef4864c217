//! A pool job in memory: what was submitted ([`JobSpec`]), its items and their states,
//! and the clients waiting on it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use corral_proto::{JobState, PoolItem, PoolJob};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::items::Items;
use super::stream;
use crate::actor::Reply;
use crate::clock::now_ms;

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

#[derive(Debug)]
pub(super) enum ItemState {
    Pending,
    /// Exec: a process (pid once spawned). Stream: in flight on a worker.
    Running {
        pid: Option<i32>,
        started_ms: i64,
        timed_out: bool,
    },
    Done(PoolItem),
}

pub(super) struct Item {
    pub(super) input: String,
    pub(super) attempts: u32,
    pub(super) state: ItemState,
}

pub(super) struct Watcher {
    pub(super) next: usize,
    /// One past the last item waited for (None: the whole job).
    pub(super) end: Option<usize>,
    pub(super) events: Option<mpsc::UnboundedSender<PoolItem>>,
    pub(super) reply: Reply<PoolJob>,
}

pub(super) struct Job {
    pub(super) id: u64,
    pub(super) name: Option<String>,
    pub(super) spec: JobSpec,
    pub(super) items: Items,
    pub(super) state: JobState,
    pub(super) created_ms: i64,
    pub(super) finished_ms: Option<i64>,
    pub(super) watchers: Vec<Watcher>,
    pub(super) workers: HashMap<u64, stream::Worker>,
    /// Worker respawns left (see [`respawn_budget`]).
    pub(super) respawns: usize,
    /// Indexes of the pending items, in the order they will start: every pending item
    /// is here exactly once, so no per-item work ever scans the whole job.
    pub(super) queue: std::collections::VecDeque<usize>,
    pub(super) n_running: usize,
    pub(super) n_ok: usize,
    pub(super) n_failed: usize,
    /// The client has read every result before this index (`release_before`): the
    /// finished items before it are dropped.
    pub(super) release_wanted: usize,
}

impl Job {
    pub(super) fn new(
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
    pub(super) fn next_pending(&mut self) -> Option<usize> {
        self.queue.pop_front()
    }

    /// Pending → running (a new attempt).
    pub(super) fn start_item(&mut self, index: usize) {
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
    pub(super) fn requeue(&mut self, index: usize) {
        if matches!(self.items[index].state, ItemState::Running { .. }) {
            self.n_running -= 1;
        }
        self.items[index].state = ItemState::Pending;
        self.queue.push_back(index);
    }

    /// Running → done.
    pub(super) fn complete(&mut self, index: usize, result: PoolItem) {
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

    pub(super) fn info(&self) -> PoolJob {
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

    pub(super) fn running(&self) -> usize {
        self.n_running
    }
}

/// Worker deaths allowed without an answer in between, so a command that dies at once
/// cannot loop forever.
pub(super) fn respawn_budget(spec: &JobSpec) -> usize {
    spec.workers * 4 + 8
}
