//! The store task: group commit of batches of commands, checkpoints, and the replies
//! released after each commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use corral_proto::{ErrorBody, ErrorCode, Op};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::prims::{LazyTotals, load_snapshot, write_changes};
use super::records::{load_pool_jobs, query_open_runs, read_history};
use super::{Command, HistoryRows};
use crate::primitives::{Changes, Outbox, Primitives};

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
///
/// The WAL's size is told by SQLite's WAL hook after each commit (the frames it holds),
/// not by the file: no `stat` per commit.
struct Checkpoints {
    commits: u32,
    last: Instant,
    /// Frames in the WAL after the last commit, set by the WAL hook.
    frames: Arc<AtomicU32>,
    /// Frames the WAL kept after the last checkpoint (0 once it was copied back whole,
    /// as the next commit then starts it over). Only growth past this says that the WAL
    /// holds more than before: a checkpoint that cannot finish (a reader in the way)
    /// must not be retried after every commit (three fsyncs per counter add).
    frames_kept: u32,
    page_size: u64,
}

impl Checkpoints {
    const EVERY_COMMITS: u32 = 1000;
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    /// The WAL size past which the next batch is followed by a checkpoint.
    const MAX_WAL_BYTES: u64 = 4 * 1024 * 1024;

    fn new(conn: &mut Connection) -> Checkpoints {
        let frames = Arc::new(AtomicU32::new(0));
        let seen = frames.clone();
        // Replaces SQLite's own checkpointing hook, which `open_connection` turned off.
        let hooked = conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            seen.store(u32::try_from(pages).unwrap_or(0), Ordering::Relaxed);
            Ok(())
        }));
        if let Err(e) = hooked {
            tracing::warn!("no WAL hook ({e}): the WAL is checkpointed by commits and time only");
        }
        let page_size = conn
            .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
            .map_or(4096, |n| n as u64);
        Checkpoints {
            commits: 0,
            last: Instant::now(),
            frames,
            frames_kept: 0,
            page_size,
        }
    }

    /// Bytes of the WAL's frames (a frame is a page and a 24-byte header).
    fn wal_bytes(&self, frames: u32) -> u64 {
        u64::from(frames) * (self.page_size + 24)
    }

    fn after_batch(&mut self, conn: &Connection, wrote: bool, path: &Path) {
        self.commits += u32::from(wrote);
        if self.commits == 0 {
            return;
        }
        let frames = self.frames.load(Ordering::Relaxed);
        let due = self.commits >= Self::EVERY_COMMITS
            || self.last.elapsed() >= Self::EVERY
            || (wrote && self.wal_bytes(frames) > Self::MAX_WAL_BYTES && frames > self.frames_kept);
        if !due {
            return;
        }
        // (busy, frames in the WAL, frames copied back)
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        self.frames_kept = match done {
            Ok((log, copied)) if log == copied => 0,
            Ok((log, _)) => u32::try_from(log).unwrap_or(u32::MAX),
            Err(e) => {
                tracing::warn!("checkpoint of {}: {e}", path.display());
                frames
            }
        };
        self.commits = 0;
        self.last = Instant::now();
    }
}

pub(super) async fn serve(
    mut conn: Connection,
    mut rx: mpsc::UnboundedReceiver<Command>,
    path: PathBuf,
    mut prims: Primitives,
) {
    let mut batch = Vec::new();
    let mut checkpoints = Checkpoints::new(&mut conn);
    let mut totals = LazyTotals::default();
    // A failed commit not yet reported to a sync (see `Store::sync`).
    let mut lost = None;
    // One for every batch, emptied after each: its lists keep their memory.
    let mut fx = Effects::default();
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
                &mut fx,
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
            &mut fx,
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
        | Command::PoolJobEnded { .. }
        | Command::PoolJobsRemoved(_) => true,
        // What the pool manager removes from memory it announces itself.
        Command::PoolJobsExpired { .. } => false,
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
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
    /// `sync`s, answered after the commit with whether it (and every commit since the
    /// previous sync) happened.
    syncs: Vec<oneshot::Sender<Result<(), ErrorBody>>>,
}

/// Applies and commits one batch; true if it wrote anything. `fx` is empty before and
/// after.
fn run_batch(
    conn: &mut Connection,
    prims: &mut Primitives,
    batch: &mut Vec<Command>,
    path: &Path,
    totals: &mut LazyTotals,
    lost: &mut Option<ErrorBody>,
    fx: &mut Effects,
) -> bool {
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
        apply(conn, prims, batch, fx, totals)
    };
    prims.expire(Instant::now(), &mut fx.outbox);
    match result {
        Ok(()) => {
            for (reply, outcome, _) in fx.outbox.replies.drain(..) {
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
            for (reply, outcome, durable) in fx.outbox.replies.drain(..) {
                reply(if durable { Err(error.clone()) } else { outcome });
            }
            *lost = Some(sync_error(&e));
        }
    }
    fx.changes.clear();
    for f in fx.after_commit.drain(..) {
        f();
    }
    if !fx.syncs.is_empty() {
        let answer = lost.take().map_or(Ok(()), Err);
        for sync in fx.syncs.drain(..) {
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
            let _ = reply.send((Vec::new(), 0));
        })),
        Command::Disconnect(_)
        | Command::RunStarted(_)
        | Command::RunEnded { .. }
        | Command::Event(..)
        | Command::PoolJobCreated(_)
        | Command::PoolItemDone { .. }
        | Command::PoolJobUpdated { .. }
        | Command::PoolItemsReleased { .. }
        | Command::PoolJobEnded { .. }
        | Command::PoolJobsRemoved(_)
        | Command::PoolJobsExpired { .. } => {}
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
        Command::PoolJobsRemoved(jobs) => {
            for job in jobs {
                remove_pool_job(tx, job as i64)?;
            }
        }
        Command::PoolJobsExpired { before_ms, spare } => {
            let expired: Vec<i64> = tx
                .prepare_cached(
                    "SELECT id FROM pool_jobs WHERE state != 'running' AND finished_ms < ?1",
                )?
                .query_map(params![before_ms], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for job in expired {
                if !spare.contains(&(job as u64)) {
                    remove_pool_job(tx, job)?;
                }
            }
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

/// Deletes a pool job and its items, remembering the highest id removed so that ids
/// are not given again after a restart.
fn remove_pool_job(tx: &rusqlite::Transaction<'_>, job: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM pool_items WHERE job = ?1")?
        .execute(params![job])?;
    tx.prepare_cached("DELETE FROM pool_jobs WHERE id = ?1")?
        .execute(params![job])?;
    tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('pool_removed_max', ?1)
         ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
    )?
    .execute(params![job])?;
    Ok(())
}
