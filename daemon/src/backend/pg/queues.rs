//! Queues on PostgreSQL: put (a bounded queue's putter waits for room), get (at most
//! once across nodes; acknowledged gets lease their items), ack, nack, len, list, declare,
//! purge and delete. The SQL functions they call are schema 5's (`backend::schema`).

use corral_proto::{Lease, MAX_GET_BYTES};

use super::*;
use crate::primitives::{LeaseSpec, lease_spec};

/// Adds the other nodes' waiting getters and putters to a queue's info.
fn add_others(info: &mut corral_proto::QueueInfo, others: &HashMap<String, usize>) {
    let count = |prefix: &str| {
        others
            .get(&format!("{prefix}:{}", info.queue))
            .copied()
            .unwrap_or(0)
    };
    let (getters, putters) = (count("q"), count("p"));
    info.waiting_getters += getters;
    info.waiting_putters += putters;
}

impl Pg {
    /// Applies a queue operation.
    pub(super) async fn queue_op(
        &self,
        conn: ConnInfo,
        op: Op,
        gone: &CancellationToken,
    ) -> Outcome {
        let name = op.name();
        let name = name.as_str();
        match op {
            Op::QueuePut {
                queue,
                value,
                timeout_ms,
                block,
            } => {
                check_name("queue", &queue)?;
                let text = value.to_string();
                let max = self.limits.max_item_bytes;
                if text.len() > max {
                    return Err(ErrorBody::new(
                        ErrorCode::TooLarge,
                        format!(
                            "item is {} bytes; queue items are limited to {max} bytes (max_item_bytes)",
                            text.len()
                        ),
                    ));
                }
                let deadline = deadline(block, timeout_ms);
                // A bounded queue's putter waits for room (a `p:QUEUE` notification).
                let put = self
                    .wait(conn.id, &format!("p:{queue}"), deadline, gone, || {
                        self.try_put(&queue, &text)
                    })
                    .await?;
                match put {
                    Some(depth) => ok(QueuePutResult { depth }),
                    None if deadline.is_none() => Err(ErrorBody::new(
                        ErrorCode::Full,
                        format!("queue `{queue}` is full"),
                    )),
                    None => Err(ErrorBody::new(
                        ErrorCode::Full,
                        format!("queue `{queue}` stayed full until the timeout"),
                    )),
                }
            }
            Op::QueueGet {
                queue,
                count,
                timeout_ms,
                block,
                ack,
                visibility_ms,
                detach,
            } => {
                check_name("queue", &queue)?;
                let lease = lease_spec(ack, visibility_ms, detach)?;
                if count == 0 {
                    return Err(ErrorBody::new(
                        ErrorCode::BadRequest,
                        "count must be at least 1",
                    ));
                }
                let deadline = deadline(block, timeout_ms);
                let found = self
                    .wait(conn.id, &format!("q:{queue}"), deadline, gone, || {
                        self.take(&queue, count, lease, conn, gone)
                    })
                    .await?;
                match found {
                    Some((items, leases)) => ok(QueueGetResult { items, leases }),
                    None if deadline.is_none() => Err(ErrorBody::new(
                        ErrorCode::Empty,
                        format!("queue `{queue}` is empty"),
                    )),
                    None => Err(ErrorBody::new(
                        ErrorCode::Empty,
                        format!("no item arrived in queue `{queue}` before the timeout"),
                    )),
                }
            }
            Op::QueueLen { queue } => {
                check_name("queue", &queue)?;
                let client = self.client()?;
                let row = client
                    .query_one(
                        "SELECT $1::text,
                                (SELECT count(*) FROM corral_queue_items WHERE queue = $1 AND lease IS NULL),
                                (SELECT count(*) FROM corral_queue_items WHERE queue = $1 AND lease IS NOT NULL),
                                q.maxsize, q.max_deliveries, q.dead_letter
                         FROM (SELECT $1::text AS name) n LEFT JOIN corral_queues q ON q.name = n.name",
                        &[&queue],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                let mut info = self.queue_info(&row);
                let keys = vec![format!("q:{queue}"), format!("p:{queue}")];
                add_others(&mut info, &self.others_waiting(Some(keys)).await?);
                ok(info)
            }
            Op::QueueList {} => {
                let client = self.client()?;
                let rows = client
                    .query(
                        "SELECT coalesce(c.queue, q.name), coalesce(c.waiting, 0), coalesce(c.leased, 0),
                                q.maxsize, q.max_deliveries, q.dead_letter
                         FROM (SELECT queue,
                                      count(*) FILTER (WHERE lease IS NULL) AS waiting,
                                      count(*) FILTER (WHERE lease IS NOT NULL) AS leased
                               FROM corral_queue_items GROUP BY queue) c
                         FULL JOIN corral_queues q ON q.name = c.queue
                         ORDER BY 1",
                        &[],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                let mut queues: std::collections::BTreeMap<String, corral_proto::QueueInfo> = rows
                    .iter()
                    .map(|r| {
                        let info = self.queue_info(r);
                        (info.queue.clone(), info)
                    })
                    .collect();
                // Empty queues with getters or putters waiting on any node are listed too.
                let others = self.others_waiting(None).await?;
                let mut keys: Vec<String> = self
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                keys.extend(others.keys().cloned());
                for key in keys {
                    if let Some(queue) = key.strip_prefix("q:").or(key.strip_prefix("p:")) {
                        if !queues.contains_key(queue) {
                            let info = self.empty_queue_info(queue.to_string());
                            queues.insert(queue.to_string(), info);
                        }
                    }
                }
                for info in queues.values_mut() {
                    add_others(info, &others);
                }
                ok(corral_proto::QueueListResult {
                    queues: queues.into_values().collect(),
                })
            }
            Op::QueueDeclare {
                queue,
                maxsize,
                max_deliveries,
                dead_letter,
            } => {
                check_name("queue", &queue)?;
                if maxsize == Some(0) {
                    return Err(ErrorBody::new(
                        ErrorCode::BadRequest,
                        "maxsize must be at least 1; leave it out for an unbounded queue",
                    ));
                }
                crate::primitives::check_dead_letter(
                    &queue,
                    max_deliveries,
                    dead_letter.as_deref(),
                )?;
                let too_large = |what: &str| {
                    ErrorBody::new(
                        ErrorCode::BadRequest,
                        format!("{what} must be at most {}", i32::MAX),
                    )
                };
                let maxsize = maxsize
                    .map(|m| i32::try_from(m).map_err(|_| too_large("maxsize")))
                    .transpose()?;
                let max_deliveries = max_deliveries
                    .map(|m| i32::try_from(m).map_err(|_| too_large("max_deliveries")))
                    .transpose()?;
                let client = self.client()?;
                // A larger capacity may make room for waiting putters.
                let row = client
                    .query_one(
                        "WITH d AS (
                             INSERT INTO corral_queues (name, maxsize, max_deliveries, dead_letter)
                             VALUES ($1, $2, $3, $4)
                             ON CONFLICT (name) DO UPDATE SET maxsize = EXCLUDED.maxsize,
                                 max_deliveries = EXCLUDED.max_deliveries,
                                 dead_letter = EXCLUDED.dead_letter
                             RETURNING maxsize, max_deliveries, dead_letter)
                         SELECT $1::text,
                                (SELECT count(*) FROM corral_queue_items WHERE queue = $1 AND lease IS NULL),
                                (SELECT count(*) FROM corral_queue_items WHERE queue = $1 AND lease IS NOT NULL),
                                d.maxsize, d.max_deliveries, d.dead_letter,
                                pg_notify($5, 'p:' || $1)::text
                         FROM d",
                        &[&queue, &maxsize, &max_deliveries, &dead_letter, &CHANNEL],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                ok(self.queue_info(&row))
            }
            Op::QueueAck { queue, ids } => self.ack(&queue, &ids, false, name).await,
            Op::QueueNack { queue, ids } => self.ack(&queue, &ids, true, name).await,
            Op::QueuePurge { queue } => {
                check_name("queue", &queue)?;
                let client = self.client()?;
                let removed: i64 = client
                    .query_one(
                        "WITH gone AS (DELETE FROM corral_queue_items WHERE queue = $1 RETURNING 1)
                         SELECT (SELECT count(*) FROM gone), pg_notify($2, 'p:' || $1)::text",
                        &[&queue, &CHANNEL],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .get(0);
                ok(corral_proto::RemovedResult {
                    removed: removed as usize,
                })
            }
            Op::QueueDelete { queue } => {
                check_name("queue", &queue)?;
                let client = self.client()?;
                // Its waiters on every node are told by the `d:QUEUE` notification.
                let found: i64 = client
                    .query_one(
                        "WITH items AS (DELETE FROM corral_queue_items WHERE queue = $1 RETURNING 1),
                              declared AS (DELETE FROM corral_queues WHERE name = $1 RETURNING 1)
                         SELECT (SELECT count(*) FROM items) + (SELECT count(*) FROM declared),
                                pg_notify($2, 'd:' || $1)::text",
                        &[&queue, &CHANNEL],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .get(0);
                let waited = self.waiting_on(&format!("q:{queue}"))
                    + self.waiting_on(&format!("p:{queue}"))
                    > 0;
                ok(corral_proto::RemovedResult {
                    removed: usize::from(found > 0 || waited),
                })
            }
            _ => Err(unsupported(name)),
        }
    }

    /// What `queue info` says of a queue on PostgreSQL, from a row of (name, waiting,
    /// in flight, maxsize, max_deliveries, dead_letter), with this node's waiting getters and
    /// putters, and no put/got totals (they are not kept there).
    fn queue_info(&self, row: &tokio_postgres::Row) -> corral_proto::QueueInfo {
        let queue: String = row.get(0);
        let max_deliveries = row.get::<_, Option<i32>>(4).map(|m| m as u32);
        let dead_letter = max_deliveries.map(|_| {
            row.get::<_, Option<String>>(5)
                .unwrap_or_else(|| format!("{queue}.dead"))
        });
        corral_proto::QueueInfo {
            depth: row.get::<_, i64>(1) as usize,
            in_flight: row.get::<_, i64>(2) as usize,
            maxsize: row.get::<_, Option<i32>>(3).map(|m| m as usize),
            max_deliveries,
            dead_letter,
            ..self.empty_queue_info(queue)
        }
    }

    /// A queue with nothing stored, with this node's waiters.
    fn empty_queue_info(&self, queue: String) -> corral_proto::QueueInfo {
        corral_proto::QueueInfo {
            waiting_getters: self.waiting_on(&format!("q:{queue}")),
            waiting_putters: self.waiting_on(&format!("p:{queue}")),
            queue,
            depth: 0,
            in_flight: 0,
            maxsize: None,
            max_deliveries: None,
            dead_letter: None,
            put_total: 0,
            got_total: 0,
        }
    }

    /// Puts `text` on `queue` unless it is bounded and full (`None`).
    async fn try_put(&self, queue: &str, text: &str) -> Result<Option<usize>, ErrorBody> {
        let client = self.client()?;
        let put = self
            .prepared(&client, "SELECT corral_queue_put($1, $2)")
            .await
            .map_err(|e| self.sql_error("queue_put", e))?;
        let depth: i64 = client
            .query_one(&put, &[&queue, &text])
            .await
            .map_err(|e| self.sql_error("queue_put", e))?
            .get(0);
        Ok((depth >= 0).then_some(depth as usize))
    }

    /// Acks (or nacks) every lease of `ids` on `queue`, or none of them.
    async fn ack(&self, queue: &str, ids: &[u64], nack: bool, op: &str) -> Outcome {
        check_name("queue", queue)?;
        if ids.is_empty() {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                "give at least one lease id (from an acknowledged get)",
            ));
        }
        let leases: Vec<i64> = ids
            .iter()
            .map(|&id| id.min(i64::MAX as u64) as i64)
            .collect();
        let client = self.client()?;
        let stale: Vec<i64> = client
            .query_one(
                "SELECT corral_queue_ack($1, $2, $3)",
                &[&queue, &leases, &nack],
            )
            .await
            .map_err(|e| self.sql_error(op, e))?
            .get(0);
        if !stale.is_empty() {
            let stale: Vec<String> = stale.iter().map(i64::to_string).collect();
            return Err(ErrorBody::new(
                ErrorCode::NotHeld,
                format!(
                    "lease {} of queue `{queue}` is not held: it was acked or nacked already, its visibility timeout passed or its connection closed (the item was returned for another delivery); nothing was changed",
                    stale.join(", ")
                ),
            ));
        }
        // Ended: no connection of this node holds them any more.
        {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            for state in conns.values_mut() {
                for id in ids {
                    state.lease_until.remove(id);
                }
            }
        }
        let count = leases
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        ok(corral_proto::QueueAckResult { count })
    }

    /// Takes up to `count` items, oldest first (with `lease`, leased to `conn` instead of
    /// removed); `None` if none is waiting. Items taken for a connection that closed
    /// meanwhile are given back at their place.
    async fn take(
        &self,
        queue: &str,
        count: usize,
        lease: Option<LeaseSpec>,
        conn: ConnInfo,
        gone: &CancellationToken,
    ) -> Result<Option<(Vec<serde_json::Value>, Vec<Lease>)>, ErrorBody> {
        let Some(spec) = lease else {
            return Ok(self
                .take_plain(queue, count, gone)
                .await?
                .map(|items| (items, Vec::new())));
        };
        let client = self.client()?;
        let limit = count.min(1000) as i32;
        let holder = (!spec.detach).then_some(conn.id as i64);
        if holder.is_some() {
            // Marked before the statement: a disconnect from now on returns its leases.
            self.with_conn(conn.id, |s| s.leases = true);
        }
        let rows = client
            .query(
                "SELECT item, val, lease_id, delivered FROM corral_queue_lease($1, $2, $3, $4, $5, $6)",
                &[
                    &queue,
                    &limit,
                    &self.settings.node,
                    &holder,
                    &(spec.visibility.as_millis() as i64),
                    &(MAX_GET_BYTES as i64),
                ],
            )
            .await
            .map_err(|e| self.sql_error("queue_get", e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut rows: Vec<(i64, String, i64, i32)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        rows.sort_by_key(|(id, ..)| *id);
        if gone.is_cancelled() {
            let leases: Vec<i64> = rows.iter().map(|r| r.2).collect();
            client
                .execute("SELECT corral_queue_return($1)", &[&leases])
                .await
                .map_err(|e| self.sql_error("queue_get", e))?;
            return Ok(None);
        }
        let leases: Vec<Lease> = rows
            .iter()
            .map(|r| Lease {
                id: r.2 as u64,
                deliveries: r.3.max(0) as u32,
            })
            .collect();
        if holder.is_some() {
            let until = Instant::now() + spec.visibility;
            self.with_conn(conn.id, |s| {
                s.lease_until.extend(leases.iter().map(|l| (l.id, until)));
                // Ended leases of a long visibility do not pile up.
                let now = Instant::now();
                if s.lease_until.len() > 1024 {
                    s.lease_until.retain(|_, until| *until > now);
                }
            });
        }
        let items = rows
            .into_iter()
            .map(|(_, text, ..)| {
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            })
            .collect();
        Ok(Some((items, leases)))
    }

    /// Takes up to `count` items, oldest first; `None` if the queue is empty. Items taken
    /// for a connection that closed meanwhile are put back with their ids (their place).
    async fn take_plain(
        &self,
        queue: &str,
        count: usize,
        gone: &CancellationToken,
    ) -> Result<Option<Vec<serde_json::Value>>, ErrorBody> {
        let client = self.client()?;
        let limit = count.min(1000) as i32;
        let take = self
            .prepared(
                &client,
                "SELECT item, val FROM corral_queue_take($1, $2, $3)",
            )
            .await
            .map_err(|e| self.sql_error("queue_get", e))?;
        let rows = client
            .query(&take, &[&queue, &limit, &(MAX_GET_BYTES as i64)])
            .await
            .map_err(|e| self.sql_error("queue_get", e))?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut rows: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        rows.sort_by_key(|(id, _)| *id);
        if gone.is_cancelled() {
            for (id, text) in &rows {
                client
                    .execute(
                        "INSERT INTO corral_queue_items (id, queue, value) VALUES ($1, $2, $3)",
                        &[id, &queue, text],
                    )
                    .await
                    .map_err(|e| self.sql_error("queue_get", e))?;
            }
            // Another waiter may take them now.
            let _ = client
                .execute(
                    "SELECT pg_notify($1, 'q:' || $2::text)",
                    &[&CHANNEL, &queue],
                )
                .await;
            return Ok(None);
        }
        let items = rows
            .into_iter()
            .map(|(_, text)| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
            .collect();
        Ok(Some(items))
    }
}
