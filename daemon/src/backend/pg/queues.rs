//! Queues on PostgreSQL: put, get (at most once across nodes), len and list.

use super::*;

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
            Op::QueuePut { queue, value, .. } => {
                check_name("queue", &queue)?;
                let text = value.to_string();
                let client = self.client()?;
                let row = client
                    .query_one(
                        "WITH put AS (INSERT INTO corral_queue_items (queue, value) VALUES ($1, $2) RETURNING id)
                         SELECT (SELECT count(*) + 1 FROM corral_queue_items WHERE queue = $1),
                                pg_notify($3, 'q:' || $1)::text
                         FROM put",
                        &[&queue, &text, &CHANNEL],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                let depth: i64 = row.get(0);
                ok(QueuePutResult {
                    depth: depth as usize,
                })
            }
            Op::QueueGet {
                queue,
                count,
                timeout_ms,
                block,
                ack,
                ..
            } => {
                if ack {
                    return Err(unsupported("queue_get with ack"));
                }
                check_name("queue", &queue)?;
                if count == 0 {
                    return Err(ErrorBody::new(
                        ErrorCode::BadRequest,
                        "count must be at least 1",
                    ));
                }
                let deadline = deadline(block, timeout_ms);
                let found = self
                    .wait(conn.id, &format!("q:{queue}"), deadline, gone, || {
                        self.take(&queue, count, gone)
                    })
                    .await?;
                match found {
                    Some(items) => ok(QueueGetResult {
                        items,
                        leases: Vec::new(),
                    }),
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
                let client = self.client()?;
                let depth: i64 = client
                    .query_one(
                        "SELECT count(*) FROM corral_queue_items WHERE queue = $1",
                        &[&queue],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .get(0);
                ok(self.queue_info(queue, depth as usize))
            }
            Op::QueueList {} => {
                let client = self.client()?;
                let rows = client
                    .query(
                        "SELECT queue, count(*) FROM corral_queue_items GROUP BY queue ORDER BY queue",
                        &[],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                let mut depths: std::collections::BTreeMap<String, usize> = rows
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as usize))
                    .collect();
                // Empty queues with getters waiting here are listed too.
                for key in self
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                {
                    if let Some(queue) = key.strip_prefix("q:") {
                        depths.entry(queue.to_string()).or_default();
                    }
                }
                let queues = depths
                    .into_iter()
                    .map(|(queue, depth)| self.queue_info(queue, depth))
                    .collect();
                ok(corral_proto::QueueListResult { queues })
            }
            _ => Err(unsupported(name)),
        }
    }

    /// What `queue info` says of a queue on PostgreSQL: its depth and this node's waiting
    /// getters (no in-flight items, limits or totals are kept there yet).
    fn queue_info(&self, queue: String, depth: usize) -> corral_proto::QueueInfo {
        let waiting_getters = self.waiting_on(&format!("q:{queue}"));
        corral_proto::QueueInfo {
            queue,
            depth,
            in_flight: 0,
            maxsize: None,
            max_deliveries: None,
            dead_letter: None,
            put_total: 0,
            got_total: 0,
            waiting_getters,
            waiting_putters: 0,
        }
    }

    /// Takes up to `count` items, oldest first; `None` if the queue is empty. Items taken
    /// for a connection that closed meanwhile are put back with their ids (their place).
    async fn take(
        &self,
        queue: &str,
        count: usize,
        gone: &CancellationToken,
    ) -> Result<Option<Vec<serde_json::Value>>, ErrorBody> {
        let client = self.client()?;
        let limit = count.min(1000) as i64;
        let rows = client
            .query(
                "DELETE FROM corral_queue_items WHERE id IN (
                     SELECT id FROM corral_queue_items WHERE queue = $1
                     ORDER BY id FOR UPDATE SKIP LOCKED LIMIT $2)
                 RETURNING id, value",
                &[&queue, &limit],
            )
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
