//! Stream mode: long-lived workers fed one input line each on stdin, answering one line
//! each on stdout, in order. Up to [`DEPTH`] items are in flight per worker, so a worker
//! is never idle waiting for a round trip through corrald.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::{PoolManager, PoolMsg, Spawning};
use crate::supervisor::process::{Output, Spawned};

/// Items in flight per worker.
pub const DEPTH: usize = 64;

/// One worker process of a stream-mode job.
pub struct Worker {
    /// Its pid once spawned.
    pub pid: Option<i32>,
    /// Items sent to it and not answered yet, oldest first.
    in_flight: VecDeque<usize>,
    /// Feeds its stdin; dropping it closes the worker's stdin.
    feed: Option<mpsc::Sender<(usize, String)>>,
}

impl Worker {
    /// Closes the worker's stdin: it should exit once it has answered what it has.
    pub fn close(&mut self) {
        self.feed = None;
    }
}

impl PoolManager {
    pub(super) fn pump_stream(&mut self, id: u64) {
        let job = self.jobs.get_mut(&id).expect("pumped job exists");
        let pending = job.queue.len();
        // Enough workers for the work left, replacing the dead (within a budget).
        while pending > 0
            && job.workers.len() < job.spec.workers.min(pending.max(1))
            && job.respawns > 0
        {
            job.respawns -= 1;
            let worker = self.next_worker;
            self.next_worker += 1;
            job.workers.insert(
                worker,
                Worker {
                    pid: None,
                    in_flight: VecDeque::new(),
                    feed: None,
                },
            );
            let log = self.log_dir.join(format!("pool-{id}.{worker}.log"));
            let spec = super::spawn_spec(
                &self.socket,
                &job.spec,
                job.spec.command.clone(),
                Output::Pipes { stderr: log },
                0,
            );
            let token = self.next_token;
            self.next_token += 1;
            self.tokens
                .insert(token, Spawning::Worker { job: id, worker });
            self.procs.spawn(token, spec);
            if job.workers.len() >= job.spec.workers {
                break;
            }
        }
        if pending > 0 && self.jobs[&id].workers.is_empty() {
            // No worker can be had: fail what is left rather than wait forever.
            self.fail_pending(id, "its workers kept dying; no worker left to run it");
            return;
        }
        self.feed(id);
    }

    /// Hands pending items to workers with room, lowest index first.
    fn feed(&mut self, id: u64) {
        let job = self.jobs.get_mut(&id).expect("fed job exists");
        let worker_ids: Vec<u64> = job.workers.keys().copied().collect();
        let mut sent = Vec::new();
        for w in worker_ids {
            let worker = job.workers.get_mut(&w).expect("listed");
            let Some(feed) = worker.feed.clone() else {
                continue;
            };
            while worker.in_flight.len() < DEPTH {
                let Some(index) = job.queue.pop_front() else {
                    break;
                };
                if feed
                    .try_send((index, job.items[index].input.clone()))
                    .is_err()
                {
                    job.queue.push_front(index);
                    break;
                }
                worker.in_flight.push_back(index);
                sent.push(index);
            }
        }
        for index in sent {
            job.start_item(index);
        }
    }

    /// Fails every pending item with `error` (no worker can run them).
    fn fail_pending(&mut self, id: u64, error: &str) {
        let job = self.jobs.get_mut(&id).expect("job exists");
        let indexes: Vec<usize> = job.queue.drain(..).collect();
        for index in indexes {
            self.jobs
                .get_mut(&id)
                .expect("job exists")
                .start_item(index);
            self.fail_item(id, index, error.to_owned());
        }
    }

    pub(super) fn worker_spawned(&mut self, id: u64, worker: u64, result: Result<Spawned, String>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            if let Ok(s) = result {
                super::kill_group(s.pid, nix::sys::signal::Signal::SIGKILL);
            }
            return;
        };
        match result {
            Ok(spawned) => {
                let Some(slot) = job.workers.get_mut(&worker) else {
                    super::kill_group(spawned.pid, nix::sys::signal::Signal::SIGKILL);
                    return;
                };
                slot.pid = Some(spawned.pid);
                self.worker_pids.insert(spawned.pid, (id, worker));
                let Some((stdin, stdout)) = spawned.pipes else {
                    return;
                };
                if job.state != "running" {
                    super::kill_group(spawned.pid, nix::sys::signal::Signal::SIGKILL);
                    return;
                }
                let (feed, rx) = mpsc::channel(DEPTH);
                slot.feed = Some(feed);
                tokio::spawn(run_worker(id, worker, stdin, stdout, rx, self.tx.clone()));
                self.feed(id);
            }
            Err(error) => {
                job.workers.remove(&worker);
                job.respawns = 0; // the command cannot start: do not try again
                if job.workers.is_empty() {
                    self.fail_pending(id, &error);
                }
            }
        }
    }

    pub(super) fn on_answer(&mut self, id: u64, worker: u64, index: usize, line: String) {
        let Some(w) = self
            .jobs
            .get_mut(&id)
            .and_then(|j| j.workers.get_mut(&worker))
        else {
            return;
        };
        if w.in_flight.front() == Some(&index) {
            w.in_flight.pop_front();
        }
        self.finish_item(id, index, None, line, String::new(), false, None, true);
        self.feed_if_running(id);
    }

    fn feed_if_running(&mut self, id: u64) {
        if self.jobs.get(&id).is_some_and(|j| j.state == "running") {
            self.feed(id);
        }
    }

    pub(super) fn on_worker_gone(&mut self, id: u64, worker: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some(w) = job.workers.remove(&worker) else {
            return;
        };
        if let Some(pid) = w.pid {
            self.worker_pids.remove(&pid);
            super::kill_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
        // Workers answer in order, so the oldest unanswered item is the one the worker was
        // on when it died: that item is charged an attempt. The others were only queued
        // in its stdin; they go back to the queue as if never sent.
        let mut in_flight = w.in_flight.into_iter();
        let culprit = in_flight.next();
        let job = self.jobs.get_mut(&id).expect("looked up");
        for index in in_flight.rev() {
            job.items[index].attempts = job.items[index].attempts.saturating_sub(1);
            job.requeue(index);
            // requeue appends; these go first, in their original order.
            let back = job.queue.pop_back().expect("just queued");
            job.queue.push_front(back);
        }
        if let Some(index) = culprit {
            self.fail_item(id, index, "its worker exited before answering".into());
        }
        self.pump(id);
        self.check_shutdown();
    }
}

async fn run_worker(
    job: u64,
    worker: u64,
    stdin: OwnedFd,
    stdout: OwnedFd,
    mut feed: mpsc::Receiver<(usize, String)>,
    tx: mpsc::UnboundedSender<PoolMsg>,
) {
    let gone = |tx: &mpsc::UnboundedSender<PoolMsg>| {
        let _ = tx.send(PoolMsg::WorkerGone { job, worker });
    };
    let (Ok(stdin), Ok(stdout)) = (
        pipe::Sender::from_owned_fd(stdin),
        pipe::Receiver::from_owned_fd(stdout),
    ) else {
        gone(&tx);
        return;
    };
    let mut writer = Some(BufWriter::new(stdin));
    let mut lines = BufReader::new(stdout).lines();
    let mut in_flight: VecDeque<usize> = VecDeque::new();
    loop {
        tokio::select! {
            next = feed.recv(), if writer.is_some() => match next {
                Some((index, input)) => {
                    let w = writer.as_mut().expect("guarded");
                    let mut ok = write_line(w, &input).await;
                    in_flight.push_back(index);
                    // Batch whatever else is queued into the same write.
                    while let (true, Ok((index, input))) = (ok, feed.try_recv()) {
                        ok = write_line(w, &input).await;
                        in_flight.push_back(index);
                    }
                    if !ok || w.flush().await.is_err() {
                        writer = None; // the worker stopped reading; its answers may still come
                    }
                }
                None => {
                    if let Some(mut w) = writer.take() {
                        let _ = w.shutdown().await; // EOF on the worker's stdin
                    }
                }
            },
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    let Some(index) = in_flight.pop_front() else { continue };
                    let _ = tx.send(PoolMsg::Answer { job, worker, index, line });
                }
                Ok(None) | Err(_) => {
                    gone(&tx);
                    return;
                }
            },
        }
    }
}

async fn write_line(w: &mut BufWriter<pipe::Sender>, input: &str) -> bool {
    w.write_all(input.as_bytes()).await.is_ok() && w.write_all(b"\n").await.is_ok()
}
