//! Stream mode: long-lived workers fed one input line each on stdin, answering one line
//! each on stdout, in order. Up to [`DEPTH`] items are in flight per worker, so a worker
//! is never idle waiting for a round trip through corrald.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use corral_proto::ExitStatus;

use super::{PoolManager, PoolMsg, Proc};
use crate::process::{Output, Spawned};

/// Items in flight per worker.
pub const DEPTH: usize = 64;

/// One worker process of a stream-mode job.
pub struct Worker {
    /// Its pid once spawned (until it has exited).
    pub pid: Option<i32>,
    /// How it exited, once it has.
    pub exit: Option<ExitStatus>,
    /// Items sent to it and not answered yet, oldest first.
    in_flight: VecDeque<usize>,
    /// Feeds its stdin; dropping it closes the worker's stdin.
    feed: Option<mpsc::Sender<(usize, String)>>,
    /// Items sent to it so far.
    fed: u64,
    /// It was sent its last item (`max_items_per_worker`): it ends once it has answered,
    /// and a fresh worker already takes its place.
    retiring: bool,
}

impl Worker {
    /// Closes the worker's stdin: it should exit once it has answered what it has.
    pub fn close(&mut self) {
        self.feed = None;
    }
}

impl PoolManager {
    pub(super) fn pump_stream(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let pending = job.queue.len();
        // Enough workers for the work left (an open job: always all of them, so they are
        // warm when its next batch comes), replacing the dead (within a budget).
        let wanted = if job.spec.open {
            job.spec.workers
        } else {
            job.spec.workers.min(pending)
        };
        let active = |job: &super::Job| job.workers.values().filter(|w| !w.retiring).count();
        while active(job) < wanted && job.respawns > 0 {
            job.respawns -= 1;
            let worker = self.next_worker;
            self.next_worker += 1;
            job.workers.insert(
                worker,
                Worker {
                    pid: None,
                    exit: None,
                    in_flight: VecDeque::new(),
                    feed: None,
                    fed: 0,
                    retiring: false,
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
            let token = self.owners.issue(Proc::Worker { job: id, worker });
            self.procs.spawn(token, spec);
        }
        if pending > 0 && self.jobs.get(&id).is_some_and(|j| j.workers.is_empty()) {
            // No worker can be had: fail what is left rather than wait forever.
            self.fail_pending(id, "its workers kept dying; no worker left to run it");
            return;
        }
        self.feed(id);
    }

    /// Hands pending items to workers with room, lowest index first.
    fn feed(&mut self, id: u64) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let worker_ids: Vec<u64> = job.workers.keys().copied().collect();
        let mut retired = false;
        let mut sent = Vec::new();
        let most = job.spec.max_items_per_worker.unwrap_or(u64::MAX);
        // An open job's items are coarse (a client's chunks) and may be long: one at a
        // time per worker, so none waits behind a long one while another worker idles.
        let depth = if job.spec.open { 1 } else { DEPTH };
        for w in worker_ids {
            let Some(worker) = job.workers.get_mut(&w) else {
                continue;
            };
            let Some(feed) = worker.feed.clone() else {
                continue;
            };
            while worker.in_flight.len() < depth && worker.fed < most {
                let Some(index) = job.queue.pop_front() else {
                    break;
                };
                let Some(item) = job.items.get(index) else {
                    continue; // not an item of this job: nothing to send
                };
                if feed.try_send((index, item.input.clone())).is_err() {
                    job.queue.push_front(index);
                    break;
                }
                worker.in_flight.push_back(index);
                worker.fed += 1;
                sent.push(index);
            }
            if worker.fed >= most {
                // Its last item: EOF follows it, and the worker exits once it has answered.
                worker.close();
                worker.retiring = true;
                retired = true;
            }
        }
        for index in sent {
            job.start_item(index);
        }
        if retired {
            self.pump_stream(id);
        }
    }

    /// Fails every pending item with `error` (no worker can run them).
    fn fail_pending(&mut self, id: u64, error: &str) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let indexes: Vec<usize> = job.queue.drain(..).collect();
        for index in indexes {
            if let Some(job) = self.jobs.get_mut(&id) {
                job.start_item(index);
            }
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
                self.owners
                    .running(spawned.pid, Proc::Worker { job: id, worker });
                let Some((stdin, stdout)) = spawned.pipes else {
                    return;
                };
                if job.state != corral_proto::JobState::Running {
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

    /// A batch of a worker's answers, in order: each item recorded, then the job's
    /// watchers told, its results stored and the worker refilled once for them all.
    pub(super) fn on_answers(&mut self, id: u64, worker: u64, answers: Vec<(usize, String)>) {
        let Some(w) = self
            .jobs
            .get_mut(&id)
            .and_then(|j| j.workers.get_mut(&worker))
        else {
            return;
        };
        for (index, _) in &answers {
            if w.in_flight.front() == Some(index) {
                w.in_flight.pop_front();
            }
        }
        // Progress: the job's workers may die again that many times before it gives up.
        if let Some(job) = self.jobs.get_mut(&id) {
            job.respawns = super::respawn_budget(&job.spec);
        }
        self.finish_answers(id, answers);
        self.feed_if_running(id);
    }

    fn feed_if_running(&mut self, id: u64) {
        if self
            .jobs
            .get(&id)
            .is_some_and(|j| j.state == corral_proto::JobState::Running)
        {
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
            self.owners.exited(pid);
            super::kill_group(pid, nix::sys::signal::Signal::SIGKILL);
        }
        // Workers answer in order, so the oldest unanswered item is the one the worker was
        // on when it died: that item is charged an attempt. The others were only queued
        // in its stdin; they go back to the queue as if never sent.
        let mut in_flight = w.in_flight.into_iter();
        let culprit = in_flight.next();
        for index in in_flight.rev() {
            let Some(item) = job.items.get_mut(index) else {
                continue;
            };
            item.attempts = item.attempts.saturating_sub(1);
            job.requeue(index);
            // requeue appends; these go first, in their original order.
            if let Some(back) = job.queue.pop_back() {
                job.queue.push_front(back);
            }
        }
        if let Some(index) = culprit {
            let log = self.log_dir.join(format!("pool-{id}.{worker}.log"));
            self.fail_item(id, index, worker_gone_error(w.pid, w.exit, &log));
        }
        self.pump(id);
        self.check_shutdown();
    }
}

/// Lines of a dead worker's stderr quoted in the error of the item it was on.
const STDERR_LINES: usize = 5;
/// At most this much of the end of its stderr log is read, and this much of a line kept.
const STDERR_TAIL_BYTES: u64 = 4096;
const STDERR_LINE_CHARS: usize = 300;

/// The error of the item a worker died on: what its stderr said last, and where it is.
fn worker_gone_error(pid: Option<i32>, exit: Option<ExitStatus>, log: &Path) -> String {
    let gone = match (exit, pid) {
        (Some(exit), _) => format!("its worker exited before answering ({exit})"),
        (None, Some(p)) => format!("its worker exited before answering (pid {p})"),
        (None, None) => "its worker exited before answering".to_owned(),
    };
    match stderr_tail(log) {
        Ok(lines) if lines.is_empty() => {
            format!("{gone}; its stderr ({}) is empty", log.display())
        }
        Ok(lines) => format!(
            "{gone}; the last lines of its stderr ({}):\n    {}",
            log.display(),
            lines.join("\n    ")
        ),
        Err(e) => format!("{gone}; its stderr ({}) cannot be read: {e}", log.display()),
    }
}

/// The last [`STDERR_LINES`] non-empty lines within the last [`STDERR_TAIL_BYTES`] of a
/// file, each cut to [`STDERR_LINE_CHARS`]: bounded whatever the worker wrote.
fn stderr_tail(path: &Path) -> std::io::Result<Vec<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(STDERR_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.take(STDERR_TAIL_BYTES).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && lines.len() > 1 {
        lines.remove(0); // most likely the end of a line cut by the read
    }
    let lines: Vec<String> = lines
        .into_iter()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(|l| match l.char_indices().nth(STDERR_LINE_CHARS) {
            Some((at, _)) => format!("{}...", &l[..at]),
            None => l.to_owned(),
        })
        .collect();
    let skip = lines.len().saturating_sub(STDERR_LINES);
    Ok(lines[skip..].to_vec())
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
    // Writing and reading run side by side: a worker answering a long line blocks
    // until its answers are read, while corrald may still be writing it long inputs.
    // The writer hands each item's index to the reader before writing its input.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<usize>();
    let writer = async move {
        let mut w = BufWriter::new(stdin);
        while let Some((index, input)) = feed.recv().await {
            let _ = sent_tx.send(index);
            let mut ok = write_line(&mut w, &input).await;
            // Batch whatever else is queued into the same write.
            while ok {
                let Ok((index, input)) = feed.try_recv() else {
                    break;
                };
                let _ = sent_tx.send(index);
                ok = write_line(&mut w, &input).await;
            }
            if !ok || w.flush().await.is_err() {
                // The worker stopped reading; its answers may still come.
                return;
            }
        }
        let _ = w.shutdown().await; // EOF on the worker's stdin
    };
    let writer = tokio::spawn(writer);
    // Every answer already in the pipe is read at once and handed over as one batch: the
    // manager records them, stores them in one command and refills the worker once.
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut partial: Vec<u8> = Vec::new();
    let mut in_flight: VecDeque<usize> = VecDeque::new();
    loop {
        let (lines, used, end) = match reader.fill_buf().await {
            // At the end of its stdout, the last line may lack its newline.
            Ok([]) => (split_lines(&mut partial, b"", true), 0, true),
            // A broken pipe: a line cut short is no answer.
            Err(_) => (Vec::new(), 0, true),
            Ok(buf) => (split_lines(&mut partial, buf, false), buf.len(), false),
        };
        reader.consume(used);
        while let Ok(index) = sent_rx.try_recv() {
            in_flight.push_back(index);
        }
        let mut answers = Vec::with_capacity(lines.len());
        let mut broken = false;
        for line in lines {
            // Not UTF-8: the worker is broken (as at the end of its stdout).
            let Some(line) = line else {
                broken = true;
                break;
            };
            if let Some(index) = in_flight.pop_front() {
                answers.push((index, line));
            }
        }
        if !answers.is_empty() {
            let _ = tx.send(PoolMsg::Answers {
                job,
                worker,
                answers,
            });
        }
        if end || broken {
            writer.abort();
            gone(&tx);
            return;
        }
    }
}

/// The complete lines of `partial` followed by `buf`, without their `\n` (or `\r\n`),
/// each `None` if it is not UTF-8; what follows the last newline stays in `partial`
/// (at the `end` of the stream, it is a line of its own too).
fn split_lines(partial: &mut Vec<u8>, buf: &[u8], end: bool) -> Vec<Option<String>> {
    let mut lines = Vec::new();
    let mut take = |bytes: &[u8]| {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        lines.push(String::from_utf8(bytes.to_vec()).ok());
    };
    let mut rest = buf;
    while let Some(i) = rest.iter().position(|&b| b == b'\n') {
        if partial.is_empty() {
            take(&rest[..i]);
        } else {
            partial.extend_from_slice(&rest[..i]);
            take(partial);
            partial.clear();
        }
        rest = &rest[i + 1..];
    }
    partial.extend_from_slice(rest);
    if end && !partial.is_empty() {
        take(partial);
        partial.clear();
    }
    lines
}

async fn write_line(w: &mut BufWriter<pipe::Sender>, input: &str) -> bool {
    w.write_all(input.as_bytes()).await.is_ok() && w.write_all(b"\n").await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_split_across_reads_come_out_whole_and_in_order() {
        let mut partial = Vec::new();
        let some = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert_eq!(
            split_lines(&mut partial, b"1\n4\r\n9", false),
            some(&["1", "4"])
        );
        assert_eq!(partial, b"9");
        assert_eq!(split_lines(&mut partial, b"", false), some(&[]));
        assert_eq!(
            split_lines(&mut partial, b"6\n25\n", false),
            some(&["96", "25"])
        );
        assert!(partial.is_empty());
        // At the end of the stream, a last line without its newline is an answer too.
        assert_eq!(split_lines(&mut partial, b"36", false), some(&[]));
        assert_eq!(split_lines(&mut partial, b"", true), some(&["36"]));
        // A line that is not UTF-8 is reported as such (the worker is broken).
        assert_eq!(
            split_lines(&mut partial, b"\xff\n49\n", false),
            vec![None, Some("49".to_string())]
        );
    }

    #[test]
    fn a_dead_workers_error_quotes_the_end_of_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("pool-1.0.log");
        let error = worker_gone_error(Some(42), None, &log);
        assert!(
            error.contains("exited before answering (pid 42)"),
            "{error}"
        );
        assert!(
            error.contains("is empty") && error.contains("pool-1.0.log"),
            "{error}"
        );

        let mut text = "x".repeat(10_000);
        text.push('\n');
        for n in 0..8 {
            text.push_str(&format!("line {n}\n\n"));
        }
        text.push_str(&"y".repeat(1000));
        std::fs::write(&log, text).unwrap();
        let exit = ExitStatus {
            code: Some(3),
            signal: None,
        };
        let error = worker_gone_error(None, Some(exit), &log);
        assert!(
            error.starts_with("its worker exited before answering (exit 3); the last lines"),
            "{error}"
        );
        assert!(
            !error.contains("line 3") && error.contains("line 4\n"),
            "{error}"
        );
        assert!(error.contains("line 7") && error.contains(&format!("{}...", "y".repeat(300))));
        assert!(error.len() < 2000, "{error}");
    }
}
