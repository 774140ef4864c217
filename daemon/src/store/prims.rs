//! The coordination primitives' persistence: queue items and rows, counters, arrays,
//! semaphores, events and anonymous sessions, written per batch and loaded at start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use corral_proto::AnonKind;
use rusqlite::{Connection, params};

use crate::primitives::anon;
use crate::primitives::{
    ArrayData, Changes, Item, ItemChange, Primitives, Queue, SemaphoreState, Snapshot,
};

/// Queue totals (put, got, next position) written lazily. A put or get must write its
/// item at once, but rewriting the queue's row as well doubled the pages each commit
/// writes. The totals are statistics; positions are rebuilt from the items at load. So a
/// queue's row is written when it is created, configured or deleted, and otherwise at
/// most once per [`LazyTotals::EVERY`], when idle, and when corrald stops: after a
/// `kill -9` the totals may lag by that much, never the items.
#[derive(Default)]
pub(super) struct LazyTotals {
    /// Queues whose row is on disk (written by this corrald).
    on_disk: HashSet<String>,
    /// Queues whose totals moved since their row was written.
    pending: HashSet<String>,
    /// When pending totals were last written.
    last: Option<Instant>,
    /// Write everything pending in the next batch.
    now: bool,
}

impl LazyTotals {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    pub(super) fn due(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        Some(self.last.map_or_else(Instant::now, |t| t + Self::EVERY))
    }

    pub(super) fn is_due(&self) -> bool {
        self.now || self.due().is_some_and(|d| d <= Instant::now())
    }

    pub(super) fn flush_now(&mut self) {
        self.now = true;
    }

    /// After a failed commit nothing this batch wrote is on disk.
    pub(super) fn rolled_back(&mut self) {
        self.on_disk.clear();
    }
}

/// Writes what a batch changed in the coordination state. Counters, arrays and queue
/// rows are written once per batch with their final value, however often they changed.
pub(super) fn write_changes(
    tx: &Connection,
    prims: &Primitives,
    changes: &Changes,
    totals: &mut LazyTotals,
) -> rusqlite::Result<()> {
    for change in &changes.queue_items {
        match change {
            ItemChange::Insert { queue, seq, value } => {
                tx.prepare_cached(
                    "INSERT INTO queue_items (queue, seq, value) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![queue, seq, value])?;
            }
            ItemChange::Remove { queue, up_to } => {
                tx.prepare_cached("DELETE FROM queue_items WHERE queue = ?1 AND seq <= ?2")?
                    .execute(params![queue, up_to])?;
            }
            ItemChange::Delete { queue, seq } => {
                tx.prepare_cached("DELETE FROM queue_items WHERE queue = ?1 AND seq = ?2")?
                    .execute(params![queue, seq])?;
            }
            ItemChange::Delivered {
                queue,
                seq,
                deliveries,
            } => {
                tx.prepare_cached(
                    "UPDATE queue_items SET deliveries = ?3 WHERE queue = ?1 AND seq = ?2",
                )?
                .execute(params![queue, seq, deliveries])?;
            }
            ItemChange::Clear { queue } => {
                tx.prepare_cached("DELETE FROM queue_items WHERE queue = ?1")?
                    .execute(params![queue])?;
            }
        }
    }
    let mut rows: Vec<&String> = changes.queues.iter().collect();
    for name in &changes.queue_stats {
        if !totals.on_disk.contains(name) {
            rows.push(name);
        } else if !totals.pending.contains(name) {
            totals.pending.insert(name.clone());
        }
    }
    let flush = totals.is_due();
    // Taken only when written: the set keeps its memory between batches otherwise.
    let pending = if flush {
        totals.last = Some(Instant::now());
        totals.now = false;
        std::mem::take(&mut totals.pending)
    } else {
        HashSet::new()
    };
    rows.extend(pending.iter().filter(|n| !changes.queues.contains(*n)));
    for name in rows {
        totals.pending.remove(name);
        match prims.queue(name) {
            Some(q) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO queues
                     (name, maxsize, put_total, got_total, next_seq, max_deliveries, dead_letter)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    name,
                    q.maxsize.map(|m| m as i64),
                    q.put_total as i64,
                    q.got_total as i64,
                    q.next_seq,
                    q.max_deliveries,
                    q.dead_letter
                ])?;
                totals.on_disk.insert(name.clone());
            }
            None => {
                tx.prepare_cached("DELETE FROM queues WHERE name = ?1")?
                    .execute(params![name])?;
                totals.on_disk.remove(name);
            }
        }
    }
    for name in &changes.counters {
        match prims.counter(name) {
            Some(v) => {
                tx.prepare_cached("INSERT OR REPLACE INTO counters (name, value) VALUES (?1, ?2)")?
                    .execute(params![name, v])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM counters WHERE name = ?1")?
                    .execute(params![name])?;
            }
        }
    }
    for name in &changes.arrays {
        match prims.array(name) {
            Some(a) => {
                tx.prepare_cached("INSERT OR REPLACE INTO arrays (name, value) VALUES (?1, ?2)")?
                    .execute(params![name, a.to_json()])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM arrays WHERE name = ?1")?
                    .execute(params![name])?;
            }
        }
    }
    write_syncs(tx, prims, changes)
}

/// Writes the semaphores and events a batch changed.
fn write_syncs(tx: &Connection, prims: &Primitives, changes: &Changes) -> rusqlite::Result<()> {
    for name in &changes.semaphores {
        match prims.semaphore(name) {
            Some(s) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO semaphores (name, value, bound) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    name,
                    s.value as i64,
                    s.bound.map(|b| b as i64)
                ])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM semaphores WHERE name = ?1")?
                    .execute(params![name])?;
            }
        }
    }
    for token in &changes.anon {
        write_session(tx, token, prims.anon_session(token))?;
    }
    for name in &changes.events {
        match prims.event(name) {
            Some(set) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO event_flags (name, is_set) VALUES (?1, ?2)",
                )?
                .execute(params![name, set])?;
            }
            None => {
                tx.prepare_cached("DELETE FROM event_flags WHERE name = ?1")?
                    .execute(params![name])?;
            }
        }
    }
    Ok(())
}

/// Rewrites one anonymous session's rows (none once it has ended).
fn write_session(
    tx: &Connection,
    token: &str,
    session: Option<&anon::Session>,
) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM anon_objects WHERE session = ?1")?
        .execute(params![token])?;
    tx.prepare_cached("DELETE FROM anon_holders WHERE session = ?1")?
        .execute(params![token])?;
    let Some(session) = session else {
        return Ok(());
    };
    for (kind, name) in &session.objects {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO anon_objects (session, kind, name) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![token, anon::kind_name(*kind), name])?;
    }
    for (pid, start_time) in session.holders.values().flatten() {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO anon_holders (session, pid, start_time) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![token, pid, *start_time as i64])?;
    }
    Ok(())
}

/// Anonymous sessions as stored: by token, the objects and the process holders (pid,
/// start time).
pub(super) type StoredSessions = BTreeMap<String, (Vec<(AnonKind, String)>, Vec<(u32, u64)>)>;

/// Stored anonymous sessions: their objects and process holders.
pub(super) fn load_sessions(conn: &Connection) -> rusqlite::Result<StoredSessions> {
    let mut sessions = StoredSessions::new();
    let mut stmt = conn.prepare_cached("SELECT session, kind, name FROM anon_objects")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (token, kind, name) = row?;
        match anon::kind_of(&kind) {
            Some(kind) => sessions.entry(token).or_default().0.push((kind, name)),
            None => tracing::error!("anonymous object `{name}` has unknown kind `{kind}`; skipped"),
        }
    }
    let mut stmt = conn.prepare_cached("SELECT session, pid, start_time FROM anon_holders")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (token, pid, start_time) = row?;
        sessions
            .entry(token)
            .or_default()
            .1
            .push((pid as u32, start_time as u64));
    }
    Ok(sessions)
}

/// The committed coordination state.
pub(super) fn load_snapshot(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    let mut stmt = conn.prepare_cached(
        "SELECT name, maxsize, put_total, got_total, next_seq, max_deliveries, dead_letter FROM queues",
    )?;
    let rows = stmt.query_map([], |r| {
        let mut q = Queue::new(r.get::<_, Option<i64>>(1)?.map(|m| m as usize));
        q.put_total = r.get::<_, i64>(2)? as u64;
        q.got_total = r.get::<_, i64>(3)? as u64;
        q.next_seq = r.get(4)?;
        q.max_deliveries = r.get(5)?;
        q.dead_letter = r.get(6)?;
        Ok((r.get::<_, String>(0)?, q))
    })?;
    snapshot.queues = rows.collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
    // The rows' totals lag (see `LazyTotals`); the items do not. Every put takes the next
    // position, so the puts missing from a row are the positions past its `next_seq`.
    let row_next: HashMap<String, i64> = snapshot
        .queues
        .iter()
        .map(|(name, q)| (name.clone(), q.next_seq))
        .collect();
    let mut stmt = conn.prepare_cached(
        "SELECT queue, seq, value, deliveries FROM queue_items ORDER BY queue, seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let q = snapshot
            .queues
            .entry(name)
            .or_insert_with(|| Queue::new(None));
        let seq: i64 = row.get(1)?;
        q.next_seq = q.next_seq.max(seq + 1);
        // Items in flight when corrald last stopped are waiting again: their consumers'
        // leases ended with it.
        q.items.push_back(Item {
            seq,
            value: row.get(2)?,
            deliveries: row.get(3)?,
        });
    }
    for (name, q) in &mut snapshot.queues {
        let stored_next = row_next.get(name).copied().unwrap_or(1);
        q.put_total += u64::try_from(q.next_seq - stored_next).unwrap_or(0);
    }
    let mut stmt = conn.prepare_cached("SELECT name, value FROM counters")?;
    snapshot.counters = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached("SELECT name, value FROM arrays")?;
    let arrays: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, text) in arrays {
        match ArrayData::from_json(&text) {
            Some(a) => {
                snapshot.arrays.insert(name, a);
            }
            None => tracing::error!("array `{name}` in the state database is unreadable; skipped"),
        }
    }
    let mut stmt = conn.prepare_cached("SELECT name, value, bound FROM semaphores")?;
    snapshot.semaphores = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                SemaphoreState {
                    value: r.get::<_, i64>(1)?.max(0) as u64,
                    bound: r.get::<_, Option<i64>>(2)?.map(|b| b.max(0) as u64),
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached("SELECT name, is_set FROM event_flags")?;
    snapshot.events = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(snapshot)
}
