//! The SQL of pool jobs shared by the nodes of a PostgreSQL backend (tables
//! `corral_pool_jobs` and `corral_pool_items`, schema version 3); `pool::nodes` runs
//! them.
//!
//! An item moves `pending` → `running` (claimed by one node, `attempt + 1`) → `done`
//! (its result), or back to `pending` (a failure with retries left, a node whose lease
//! expired, a node that stopped). Every write of a result names the attempt it answers
//! (`WHERE attempt = $n AND state = 'running' AND node = $me`): an answer from an attempt
//! that was superseded changes nothing, so each item's result is recorded once.

use corral_proto::{JobState, PoolItem, PoolJob, PoolNodeShare};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error, Statement};

/// Channel of the `NOTIFY` sent when there is new work (a job submitted, an item put
/// back) or a job ended; no payload, at most one per statement.
pub const CHANNEL: &str = "corral_pool";

/// Listens on [`CHANNEL`].
pub const LISTEN: &str = "LISTEN corral_pool";

/// An item claimed by this node.
#[derive(Debug)]
pub struct Claimed {
    /// Job id.
    pub job: u64,
    /// Item index.
    pub index: usize,
    /// The input.
    pub input: String,
    /// This claim's attempt number (fences its result).
    pub attempt: u32,
    /// The job's settings (`JobSpec` as JSON).
    pub spec: String,
}

/// A job as submitted.
pub struct NewJob<'a> {
    /// Its name.
    pub name: Option<&'a str>,
    /// `JobSpec` as JSON.
    pub spec: &'a str,
    /// Most items at once across nodes (`-j`).
    pub workers: usize,
    /// Extra attempts of a failed item.
    pub retries: u32,
    /// The inputs.
    pub inputs: &'a [String],
    /// The submitting node.
    pub node: &'a str,
}

/// Stores a job and its items in one statement (all or nothing) and wakes the claimers.
pub async fn submit(client: &Client, job: NewJob<'_>) -> Result<u64, Error> {
    let total = job.inputs.len() as i32;
    let workers = job.workers.min(i32::MAX as usize) as i32;
    let retries = job.retries.min(i32::MAX as u32) as i32;
    let row = client
        .query_one(
            "WITH j AS (
                 INSERT INTO corral_pool_jobs (name, spec, total, workers, retries, submitted_by)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id),
             ins AS (
                 INSERT INTO corral_pool_items (job, idx, input)
                 SELECT j.id, (t.n - 1)::integer, t.input
                 FROM j, unnest($7::text[]) WITH ORDINALITY AS t(input, n))
             SELECT id, pg_notify($8, '') FROM j",
            &[
                &job.name,
                &job.spec,
                &total,
                &workers,
                &retries,
                &job.node,
                &job.inputs,
                &CHANNEL,
            ],
        )
        .await?;
    let id: i64 = row.get(0);
    Ok(id as u64)
}

/// The statements of a node's claimer, prepared once per connection (a claim or a
/// record is then a single round trip, with no parse or plan of its own).
pub struct Statements {
    claim: Statement,
    record: Statement,
    finish: Statement,
}

impl Statements {
    /// Prepares them on `client` (the claimer's connection; again after a reconnect).
    pub async fn prepare(client: &Client) -> Result<Statements, Error> {
        let (claim, record, finish) = futures_util::try_join!(
            client.prepare(CLAIM),
            client.prepare(RECORD),
            client.prepare(FINISH),
        )?;
        Ok(Statements {
            claim,
            record,
            finish,
        })
    }
}

/// Serializes the claims of all nodes (a transaction-scoped advisory lock, so a claim
/// counts the running items of every claim committed before it). The whole transaction
/// is sent at once, but a node frozen between two of its messages would hold the lock:
/// `idle_in_transaction_session_timeout` ends such a session (and its transaction), and
/// `lock_timeout` bounds the others' wait meanwhile.
const CLAIM_BEGIN: &str = "BEGIN; SET LOCAL lock_timeout = '5s';
     SET LOCAL idle_in_transaction_session_timeout = '5s';
     SELECT pg_advisory_xact_lock(7165064483209144428)";

/// Claims up to `$2` pending items for node `$1` if its lease is current (a node whose
/// lease expired claims nothing: its claims may already have been taken over): running
/// jobs oldest first, items in index order, each job's running items kept within its
/// `workers`.
const CLAIM: &str = "WITH lease AS (
         SELECT 1 FROM corral_nodes
         WHERE name = $1 AND heartbeat >= now() - lease_ms * interval '1 millisecond'),
     j AS (
         SELECT j.id, j.workers - (SELECT count(*) FROM corral_pool_items r
                                   WHERE r.job = j.id AND r.state = 'running') AS room
         FROM corral_pool_jobs j
         WHERE j.state = 'running' AND EXISTS (SELECT 1 FROM lease)),
     pick AS (
         SELECT p.job, p.idx FROM j, LATERAL (
             SELECT i.job, i.idx FROM corral_pool_items i
             WHERE i.job = j.id AND i.state = 'pending'
             ORDER BY i.idx LIMIT greatest(least(j.room, $2), 0)
             FOR UPDATE SKIP LOCKED) p
         ORDER BY p.job, p.idx LIMIT $2),
     c AS (
         UPDATE corral_pool_items i
         SET state = 'running', node = $1, attempt = i.attempt + 1, claimed_at = now()
         FROM pick WHERE i.job = pick.job AND i.idx = pick.idx
         RETURNING i.job, i.idx, i.input, i.attempt)
     SELECT c.job, c.idx, c.input, c.attempt, j.spec
     FROM c JOIN corral_pool_jobs j ON j.id = c.job
     ORDER BY c.job, c.idx";

/// Claims up to `free` pending items for `node` (the `CLAIM` statement) in one transaction of
/// one statement under the claim lock, its four messages sent at once: one round trip.
pub async fn claim(
    client: &Client,
    st: &Statements,
    node: &str,
    free: usize,
) -> Result<Vec<Claimed>, Error> {
    let free = free.min(i32::MAX as usize) as i64;
    // Sent in this order on the first poll (pipelined); a failed step aborts the
    // transaction and its COMMIT rolls back.
    let params: [&(dyn ToSql + Sync); 2] = [&node, &free];
    let (begin, rows, commit) = futures_util::join!(
        client.batch_execute(CLAIM_BEGIN),
        client.query(&st.claim, &params),
        client.batch_execute("COMMIT"),
    );
    begin?;
    let rows = rows?;
    commit?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            job: r.get::<_, i64>(0) as u64,
            index: r.get::<_, i32>(1) as usize,
            input: r.get(2),
            attempt: r.get::<_, i32>(3) as u32,
            spec: r.get(4),
        })
        .collect())
}

/// What became of a recorded attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The item's result.
    Done,
    /// A failure with retries left: the item is pending again.
    Retry,
    /// The attempt had been superseded (its claim was taken over): nothing changed.
    Stale,
}

/// One attempt's end, to record.
pub struct Ended<'a> {
    /// Job id.
    pub job: u64,
    /// The attempt's result (`attempts` is the attempt number it answers).
    pub result: &'a PoolItem,
    /// A failure that a retry would not cure (the command cannot start, cancelled).
    pub final_failure: bool,
}

/// Records attempts' ends (`$1`..`$7` as arrays, one element per end) of items
/// claimed by node `$8`, each fenced by its attempt; returns the items it changed.
const RECORD: &str = "WITH r AS (
         SELECT * FROM unnest($1::bigint[], $2::integer[], $3::integer[],
                              $4::boolean[], $5::integer[], $6::text[], $7::boolean[])
             AS r(job, idx, attempt, ok, exit_code, result, final)),
     u AS (
         UPDATE corral_pool_items i SET
             failures = i.failures + CASE WHEN r.ok THEN 0 ELSE 1 END,
             state = CASE WHEN r.ok OR r.final OR i.failures + 1 > j.retries
                          THEN 'done' ELSE 'pending' END,
             ok = r.ok, exit_code = r.exit_code,
             result = CASE WHEN r.ok OR r.final OR i.failures + 1 > j.retries
                           THEN r.result END,
             finished_at = now()
         FROM r, corral_pool_jobs j
         WHERE j.id = i.job AND i.job = r.job AND i.idx = r.idx
           AND i.attempt = r.attempt AND i.state = 'running' AND i.node = $8
         RETURNING i.job, i.idx, i.state)
     SELECT job, idx, state FROM u";

/// Finishes those of jobs `$1` that have no pending or running item left, and notifies.
/// A statement of its own, after [`RECORD`]'s commit: it sees every record committed
/// before it, so of two nodes recording a job's last items at once, the later finishes
/// the job.
const FINISH: &str = "UPDATE corral_pool_jobs j SET state = 'finished', finished_at = now()
     WHERE j.id = ANY($1) AND j.state = 'running'
       AND NOT EXISTS (SELECT 1 FROM corral_pool_items i WHERE i.job = j.id AND i.state = 'pending')
       AND NOT EXISTS (SELECT 1 FROM corral_pool_items i WHERE i.job = j.id AND i.state = 'running')
     RETURNING pg_notify($2, '')";

/// Records the ends of attempts of items claimed by `node`, all in one statement (one
/// commit however many), and finishes the jobs whose last item this was, the two
/// statements sent at once (one round trip); returns what became of each end, in order.
pub async fn record(
    client: &Client,
    st: &Statements,
    node: &str,
    ended: &[Ended<'_>],
) -> Result<Vec<Recorded>, Error> {
    if ended.is_empty() {
        return Ok(Vec::new());
    }
    let jobs: Vec<i64> = ended.iter().map(|e| e.job as i64).collect();
    let idxs: Vec<i32> = ended.iter().map(|e| e.result.index as i32).collect();
    let attempts: Vec<i32> = ended.iter().map(|e| e.result.attempts as i32).collect();
    let oks: Vec<bool> = ended.iter().map(|e| e.result.ok).collect();
    let codes: Vec<Option<i32>> = ended
        .iter()
        .map(|e| e.result.exit.and_then(|x| x.code))
        .collect();
    let texts: Vec<String> = ended
        .iter()
        .map(|e| serde_json::to_string(e.result).expect("items serialize"))
        .collect();
    let finals: Vec<bool> = ended.iter().map(|e| e.final_failure).collect();
    let mut job_ids = jobs.clone();
    job_ids.sort_unstable();
    job_ids.dedup();
    let params: [&(dyn ToSql + Sync); 8] = [
        &jobs, &idxs, &attempts, &oks, &codes, &texts, &finals, &node,
    ];
    let finish: [&(dyn ToSql + Sync); 2] = [&job_ids, &CHANNEL];
    let (rows, finished) = futures_util::join!(
        client.query(&st.record, &params),
        client.execute(&st.finish, &finish),
    );
    let rows = rows?;
    finished?;
    let mut outcome = std::collections::HashMap::new();
    for row in &rows {
        let (job, idx, state): (i64, i32, String) = (row.get(0), row.get(1), row.get(2));
        outcome.insert((job, idx), state);
    }
    Ok(jobs
        .iter()
        .zip(&idxs)
        .map(
            |(job, idx)| match outcome.get(&(*job, *idx)).map(String::as_str) {
                Some("done") => Recorded::Done,
                Some(_) => Recorded::Retry,
                None => Recorded::Stale,
            },
        )
        .collect())
}

/// Finishes every running job with no pending or running item left: one whose last
/// record committed but whose finishing statement was lost with the connection.
/// Returns how many.
pub async fn finish_stragglers(client: &Client) -> Result<u64, Error> {
    client
        .execute(
            "UPDATE corral_pool_jobs j SET state = 'finished', finished_at = now()
             WHERE j.state = 'running'
               AND NOT EXISTS (SELECT 1 FROM corral_pool_items i WHERE i.job = j.id AND i.state = 'pending')
               AND NOT EXISTS (SELECT 1 FROM corral_pool_items i WHERE i.job = j.id AND i.state = 'running')
             RETURNING pg_notify($1, '')",
            &[&CHANNEL],
        )
        .await
}

/// Puts back the items claimed by nodes whose lease has expired (any live node may do
/// it, twice is harmless); returns how many.
pub async fn rescue(client: &Client, node: &str) -> Result<u64, Error> {
    let rows = client
        .query(
            "WITH freed AS (
                 UPDATE corral_pool_items SET state = 'pending', node = NULL
                 WHERE state = 'running' AND node IN (
                     SELECT name FROM corral_nodes
                     WHERE name <> $1 AND heartbeat < now() - lease_ms * interval '1 millisecond')
                 RETURNING job)
             SELECT count(*), pg_notify($2, '') FROM freed HAVING count(*) > 0",
            &[&node, &CHANNEL],
        )
        .await?;
    Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
}

/// Puts back the items the database says `node` runs but `node` does not (a claim whose
/// commit succeeded but whose answer was lost with the connection); `running` lists
/// what it does run, as (job, index).
pub async fn release_unknown(
    client: &Client,
    node: &str,
    running: &[(u64, usize)],
) -> Result<u64, Error> {
    let jobs: Vec<i64> = running.iter().map(|(j, _)| *j as i64).collect();
    let idxs: Vec<i32> = running.iter().map(|(_, i)| *i as i32).collect();
    let n = client
        .execute(
            "UPDATE corral_pool_items SET state = 'pending', node = NULL
             WHERE state = 'running' AND node = $1
               AND (job, idx) NOT IN (SELECT * FROM unnest($2::bigint[], $3::integer[]))",
            &[&node, &jobs, &idxs],
        )
        .await?;
    Ok(n)
}

/// Puts back every item `node` holds (it starts, or stops): they run again, here or
/// elsewhere, as a new attempt.
pub async fn release(client: &Client, node: &str) -> Result<u64, Error> {
    let n = client
        .execute(
            "UPDATE corral_pool_items SET state = 'pending', node = NULL
             WHERE state = 'running' AND node = $1",
            &[&node],
        )
        .await?;
    if n > 0 {
        client
            .execute("SELECT pg_notify($1, '')", &[&CHANNEL])
            .await?;
    }
    Ok(n)
}

/// A job's progress, `None` if there is no such job.
pub async fn job(client: &Client, id: u64) -> Result<Option<PoolJob>, Error> {
    let rows = client
        .query(&format!("{JOB_SELECT} WHERE j.id = $1"), &[&(id as i64)])
        .await?;
    Ok(rows.first().map(job_info))
}

/// A job's state alone (what a waiter polls: no count over its items).
pub async fn state(client: &Client, id: u64) -> Result<Option<JobState>, Error> {
    let row = client
        .query_opt(
            "SELECT state FROM corral_pool_jobs WHERE id = $1",
            &[&(id as i64)],
        )
        .await?;
    Ok(row.map(|r| JobState::parse(r.get(0))))
}

/// Every job, oldest first.
pub async fn jobs(client: &Client) -> Result<Vec<PoolJob>, Error> {
    let rows = client
        .query(&format!("{JOB_SELECT} ORDER BY j.id"), &[])
        .await?;
    Ok(rows.iter().map(job_info).collect())
}

const JOB_SELECT: &str = "SELECT j.id, j.name, j.spec, j.total, j.workers, j.state,
         (extract(epoch FROM j.created_at) * 1000)::bigint,
         (extract(epoch FROM j.finished_at) * 1000)::bigint,
         (SELECT count(*) FROM corral_pool_items i WHERE i.job = j.id AND i.state = 'done' AND i.ok),
         (SELECT count(*) FROM corral_pool_items i WHERE i.job = j.id AND i.state = 'done' AND NOT i.ok),
         (SELECT count(*) FROM corral_pool_items i WHERE i.job = j.id AND i.state = 'running')
     FROM corral_pool_jobs j";

fn job_info(row: &tokio_postgres::Row) -> PoolJob {
    let spec: String = row.get(2);
    let command = serde_json::from_str::<serde_json::Value>(&spec)
        .ok()
        .and_then(|v| serde_json::from_value(v["command"].clone()).ok())
        .unwrap_or_default();
    let total = row.get::<_, i32>(3) as usize;
    let succeeded = row.get::<_, i64>(8) as usize;
    let failed = row.get::<_, i64>(9) as usize;
    let running = row.get::<_, i64>(10) as usize;
    PoolJob {
        job: row.get::<_, i64>(0) as u64,
        name: row.get(1),
        command,
        mode: "exec".into(),
        workers: row.get::<_, i32>(4) as usize,
        state: JobState::parse(row.get(5)),
        open: false,
        total,
        succeeded,
        failed,
        running,
        pending: total.saturating_sub(succeeded + failed + running),
        created_ms: row.get(6),
        finished_ms: row.get(7),
        nodes: Vec::new(),
    }
}

/// Each node's share of a job: its running, succeeded and failed items.
pub async fn shares(client: &Client, job: u64) -> Result<Vec<PoolNodeShare>, Error> {
    let rows = client
        .query(
            "SELECT node,
                    count(*) FILTER (WHERE state = 'running'),
                    count(*) FILTER (WHERE state = 'done' AND ok),
                    count(*) FILTER (WHERE state = 'done' AND NOT ok)
             FROM corral_pool_items WHERE job = $1 AND node IS NOT NULL
             GROUP BY node ORDER BY node",
            &[&(job as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PoolNodeShare {
            node: r.get(0),
            running: r.get::<_, i64>(1) as usize,
            succeeded: r.get::<_, i64>(2) as usize,
            failed: r.get::<_, i64>(3) as usize,
        })
        .collect())
}

/// The finished items of `job` from index `from` (below `end`) in index order, up to
/// `limit` of them.
pub async fn results(
    client: &Client,
    job: u64,
    from: usize,
    end: usize,
    limit: i64,
) -> Result<Vec<PoolItem>, Error> {
    let rows = client
        .query(
            "SELECT result FROM corral_pool_items
             WHERE job = $1 AND idx >= $2 AND idx < $3 AND state = 'done'
             ORDER BY idx LIMIT $4",
            &[&(job as i64), &(from as i32), &(end as i32), &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok())
        .collect())
}

/// Cancels a running job: its pending items are not claimed any more. Returns whether
/// it was running.
pub async fn cancel(client: &Client, job: u64) -> Result<bool, Error> {
    let n = client
        .execute(
            "UPDATE corral_pool_jobs SET state = 'cancelled', finished_at = now()
             WHERE id = $1 AND state = 'running'",
            &[&(job as i64)],
        )
        .await?;
    if n > 0 {
        client
            .execute("SELECT pg_notify($1, '')", &[&CHANNEL])
            .await?;
    }
    Ok(n > 0)
}

/// What `pool rm` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// The job and its items are gone.
    Removed,
    /// The job still runs, or items of it still run on some node (`running` of them).
    Running(usize),
    /// No such job.
    Unknown,
}

/// Removes a job that is no longer running and has no running item, with its items
/// (`ON DELETE CASCADE`), in one statement.
pub async fn remove(client: &Client, job: u64) -> Result<Removal, Error> {
    // The two last columns are read in the snapshot before the delete.
    let row = client
        .query_one(
            "WITH d AS (
                 DELETE FROM corral_pool_jobs j
                 WHERE j.id = $1 AND j.state <> 'running'
                   AND NOT EXISTS (SELECT 1 FROM corral_pool_items i
                                   WHERE i.job = j.id AND i.state = 'running')
                 RETURNING j.id)
             SELECT (SELECT count(*) FROM d),
                    (SELECT state FROM corral_pool_jobs WHERE id = $1),
                    (SELECT count(*) FROM corral_pool_items WHERE job = $1 AND state = 'running')",
            &[&(job as i64)],
        )
        .await?;
    let (removed, state, running): (i64, Option<String>, i64) =
        (row.get(0), row.get(1), row.get(2));
    Ok(match (removed, state) {
        (1.., _) => Removal::Removed,
        (_, None) => Removal::Unknown,
        (_, Some(_)) => Removal::Running(running as usize),
    })
}

/// Removes the jobs that ended more than `keep` ago and have no running item, with their
/// items; returns how many. Any node may do it (twice is harmless).
pub async fn expire(client: &Client, keep: std::time::Duration) -> Result<u64, Error> {
    let keep_s = keep.as_secs_f64();
    client
        .execute(
            "DELETE FROM corral_pool_jobs j
             WHERE j.state <> 'running'
               AND j.finished_at < now() - $1::float8 * interval '1 second'
               AND NOT EXISTS (SELECT 1 FROM corral_pool_items i
                               WHERE i.job = j.id AND i.state = 'running')",
            &[&keep_s],
        )
        .await
}

/// Of `jobs`, those no longer running (cancelled): their items here are stopped.
pub async fn ended(client: &Client, jobs: &[i64]) -> Result<Vec<u64>, Error> {
    let rows = client
        .query(
            "SELECT id FROM corral_pool_jobs WHERE id = ANY($1) AND state <> 'running'",
            &[&jobs],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
}
