//! The supervisor's and the pool's records read back: history (events, runs, exit
//! counts), pool jobs, and the runs still open.

use rusqlite::{OptionalExtension, params};

use super::{EventRow, History, HistoryRows, OpenRun, RunRow, StoredJob};

pub(super) fn read_history(
    tx: &rusqlite::Transaction<'_>,
    query: &History,
) -> rusqlite::Result<HistoryRows> {
    let mut rows = HistoryRows::default();
    match query {
        History::Events { unit, limit } => {
            let mut stmt = tx.prepare_cached(
                "SELECT at, unit, instance, kind, coalesce(detail, '') FROM events
                 WHERE ?1 IS NULL OR unit = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            rows.events = stmt
                .query_map(params![unit, *limit as i64], |r| {
                    Ok(EventRow {
                        at_ms: r.get(0)?,
                        unit: r.get(1)?,
                        instance: r.get(2)?,
                        kind: r.get(3)?,
                        detail: r.get(4)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        History::Runs { unit, limit } => {
            let mut stmt = tx.prepare_cached(
                "SELECT instance, pid, started_at, ended_at, exit_code, signal, restart_count FROM runs
                 WHERE unit = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            rows.runs = stmt
                .query_map(params![unit, *limit as i64], |r| {
                    Ok(RunRow {
                        instance: r.get(0)?,
                        pid: r.get(1)?,
                        started_ms: r.get(2)?,
                        ended_ms: r.get(3)?,
                        exit_code: r.get(4)?,
                        signal: r.get(5)?,
                        restarts: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        History::ExitCounts => {
            let mut stmt = tx.prepare_cached(
                "SELECT exit_code, signal, count(*) FROM runs WHERE ended_at IS NOT NULL
                 GROUP BY exit_code, signal ORDER BY exit_code, signal",
            )?;
            rows.exits = stmt
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
    }
    Ok(rows)
}

pub(super) fn load_pool_jobs(
    tx: &rusqlite::Transaction<'_>,
) -> rusqlite::Result<(Vec<StoredJob>, u64)> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, name, spec, state, created_ms, finished_ms FROM pool_jobs
         WHERE state = 'running' OR id IN (SELECT id FROM pool_jobs WHERE state != 'running' ORDER BY id DESC LIMIT 50)
         ORDER BY id",
    )?;
    let mut jobs: Vec<StoredJob> = stmt
        .query_map([], |r| {
            Ok(StoredJob {
                id: r.get::<_, i64>(0)? as u64,
                name: r.get(1)?,
                spec: r.get(2)?,
                state: r.get(3)?,
                created_ms: r.get(4)?,
                finished_ms: r.get(5)?,
                items: Vec::new(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut items =
        tx.prepare_cached("SELECT input, result FROM pool_items WHERE job = ?1 ORDER BY idx")?;
    for job in &mut jobs {
        job.items = items
            .query_map([job.id as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
    }
    let removed: Option<i64> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'pool_removed_max'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let max_id = jobs
        .last()
        .map_or(0, |j| j.id)
        .max(removed.unwrap_or(0) as u64);
    Ok((jobs, max_id))
}

pub(super) fn query_open_runs(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Vec<OpenRun>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, unit, instance, pid, start_time, started_at, restart_count, daemon
         FROM runs WHERE ended_at IS NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(OpenRun {
            id: r.get(0)?,
            unit: r.get(1)?,
            instance: r.get(2)?,
            pid: r.get(3)?,
            start_time: r.get::<_, i64>(4)? as u64,
            started_at: r.get(5)?,
            restart_count: r.get(6)?,
            daemon: r.get(7)?,
        })
    })?;
    rows.collect()
}
