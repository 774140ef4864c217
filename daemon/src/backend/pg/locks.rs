//! Locks on PostgreSQL: FIFO across nodes, fencing tokens from one sequence.

use super::*;

impl Pg {
    /// Applies a lock operation.
    pub(super) async fn lock_op(
        &self,
        conn: ConnInfo,
        op: Op,
        gone: &CancellationToken,
    ) -> Outcome {
        let name = op.name();
        let name = name.as_str();
        match op {
            Op::LockAcquire {
                lock,
                timeout_ms,
                block,
            } => {
                check_name("lock", &lock)?;
                let deadline = deadline(block, timeout_ms);
                let granted = match self.try_lock(&lock, conn, gone, None).await? {
                    Some(token) => Some(token),
                    None => {
                        self.not_mine(&lock, conn).await?;
                        match deadline {
                            None => None,
                            Some(_) => self.wait_in_line(&lock, conn, deadline, gone).await?,
                        }
                    }
                };
                match granted {
                    Some(token) => ok(LockGrant { lock, token }),
                    None if deadline.is_none() => Err(ErrorBody::new(
                        ErrorCode::Locked,
                        format!("lock `{lock}` is held by another client"),
                    )),
                    None => Err(ErrorBody::new(
                        ErrorCode::Timeout,
                        format!("lock `{lock}` was not released before the timeout"),
                    )),
                }
            }
            Op::LockRelease { lock } => {
                let mut lost = false;
                let mut held = false;
                self.with_conn(conn.id, |s| {
                    lost = s.lost.remove(&lock);
                    held = s.locks.remove(&lock);
                });
                if lost {
                    return Err(ErrorBody::new(
                        ErrorCode::NotHeld,
                        format!(
                            "lock `{lock}` was lost: node `{}` could not renew its lease in PostgreSQL within {:?}, so the lock was released for the other nodes",
                            self.settings.node, self.settings.lease
                        ),
                    ));
                }
                if !held {
                    return Err(ErrorBody::new(
                        ErrorCode::NotHeld,
                        format!("this connection does not hold lock `{lock}`"),
                    ));
                }
                let stale = Stale::Lock(conn.id, lock);
                match self.delete_stale(&stale).await {
                    Ok(_) => ok(serde_json::json!({})),
                    // Not held any more for this connection; the row goes when the
                    // database is back (or with this node's lease).
                    Err(e) => {
                        self.stale_later(stale);
                        Err(e)
                    }
                }
            }
            Op::LockStatus { lock } => self.lock_status(lock.as_deref()).await,
            _ => Err(unsupported(name)),
        }
    }

    /// Takes `lock` if it is free and no waiter of any node is ahead: with no place in
    /// line (`waiter: None`), none at all; with one, none with a smaller id. A grant
    /// gives up the place in the same statement.
    async fn try_lock(
        &self,
        lock: &str,
        conn: ConnInfo,
        gone: &CancellationToken,
        waiter: Option<i64>,
    ) -> Result<Option<u64>, ErrorBody> {
        let client = self.client()?;
        let id = conn.id as i64;
        let pid = conn.pid.map(|p| p as i32);
        let uid = conn.uid.map(|u| u as i32);
        let acquire = self
            .prepared(
                &client,
                "WITH granted AS (
                     INSERT INTO corral_locks (name, node, conn, pid, uid, token)
                     SELECT $1, $2, $3, $4, $5, nextval('corral_fencing')
                     WHERE NOT EXISTS (SELECT 1 FROM corral_lock_waiters w
                                       WHERE w.name = $1 AND ($6::bigint IS NULL OR w.id < $6))
                     ON CONFLICT (name) DO NOTHING RETURNING token),
                 done AS (DELETE FROM corral_lock_waiters
                          WHERE id = $6 AND EXISTS (SELECT 1 FROM granted))
                 SELECT token FROM granted",
            )
            .await
            .map_err(|e| self.sql_error("lock_acquire", e))?;
        let row = client
            .query_opt(
                &acquire,
                &[&lock, &self.settings.node, &id, &pid, &uid, &waiter],
            )
            .await
            .map_err(|e| self.sql_error("lock_acquire", e))?;
        let Some(row) = row else { return Ok(None) };
        let token: i64 = row.get(0);
        if gone.is_cancelled() {
            // Granted to a connection that closed meanwhile: release at once.
            client
                .execute(
                    "WITH gone AS (DELETE FROM corral_locks WHERE name = $1 AND node = $2 AND conn = $3 RETURNING name)
                     SELECT pg_notify($4, 'l:' || name) FROM gone",
                    &[&lock, &self.settings.node, &id, &CHANNEL],
                )
                .await
                .map_err(|e| self.sql_error("lock_acquire", e))?;
            return Ok(None);
        }
        self.with_conn(conn.id, |s| {
            s.locks.insert(lock.to_string());
        });
        Ok(Some(token as u64))
    }

    /// Refuses a second acquire of a lock this connection holds (locks are not
    /// re-entrant; waiting would wait for itself).
    async fn not_mine(&self, lock: &str, conn: ConnInfo) -> Result<(), ErrorBody> {
        let mut mine = false;
        self.with_conn(conn.id, |s| mine = s.locks.contains(lock));
        if mine {
            return Err(ErrorBody::new(
                ErrorCode::Failed,
                format!("this connection already holds lock `{lock}` (locks are not re-entrant)"),
            ));
        }
        Ok(())
    }

    /// Takes a place in `lock`'s line (a row of `corral_lock_waiters`: FIFO across the
    /// nodes) and waits for its turn; the place is given up however the wait ends.
    async fn wait_in_line(
        &self,
        lock: &str,
        conn: ConnInfo,
        deadline: Option<Instant>,
        gone: &CancellationToken,
    ) -> Result<Option<u64>, ErrorBody> {
        let client = self.client()?;
        let place: i64 = client
            .query_one(
                "INSERT INTO corral_lock_waiters (name, node, conn) VALUES ($1, $2, $3) RETURNING id",
                &[&lock, &self.settings.node, &(conn.id as i64)],
            )
            .await
            .map_err(|e| self.sql_error("lock_acquire", e))?
            .get(0);
        let granted = self
            .wait(conn.id, &format!("l:{lock}"), deadline, gone, || {
                self.try_lock(lock, conn, gone, Some(place))
            })
            .await;
        if !matches!(granted, Ok(Some(_))) {
            let stale = Stale::Waiter(place);
            if self.delete_stale(&stale).await.is_err() {
                self.stale_later(stale);
            }
        }
        granted
    }

    /// Holders and waiters (of every node) of one lock or of all.
    async fn lock_status(&self, lock: Option<&str>) -> Outcome {
        let client = self.client()?;
        let rows = client
            .query(
                "SELECT n.name, l.pid, l.uid, l.token, l.node,
                        (SELECT count(*) FROM corral_lock_waiters w WHERE w.name = n.name),
                        (extract(epoch FROM l.acquired_at) * 1000)::bigint,
                        (extract(epoch FROM now() - l.acquired_at) * 1000)::bigint
                 FROM (SELECT name FROM corral_locks UNION SELECT name FROM corral_lock_waiters) n
                 LEFT JOIN corral_locks l ON l.name = n.name
                 WHERE $1::text IS NULL OR n.name = $1
                 ORDER BY n.name",
                &[&lock],
            )
            .await
            .map_err(|e| self.sql_error("lock_status", e))?;
        let mut locks: Vec<corral_proto::LockInfo> = rows
            .iter()
            .map(|r| {
                let token: Option<i64> = r.get(3);
                corral_proto::LockInfo {
                    lock: r.get(0),
                    holder: token.map(|token| corral_proto::LockHolder {
                        pid: r.get::<_, Option<i32>>(1).map(|p| p as u32),
                        uid: r.get::<_, Option<i32>>(2).map(|u| u as u32),
                        unit: None,
                        instance: None,
                        token: token as u64,
                        node: r.get(4),
                        since_ms: r.get::<_, Option<i64>>(6).unwrap_or(0),
                        held_ms: r.get::<_, Option<i64>>(7).unwrap_or(0).max(0) as u64,
                    }),
                    waiters: r.get::<_, i64>(5) as usize,
                }
            })
            .collect();
        if let (Some(lock), true) = (lock, locks.is_empty()) {
            locks.push(corral_proto::LockInfo {
                lock: lock.to_string(),
                holder: None,
                waiters: 0,
            });
        }
        ok(corral_proto::LockStatusResult { locks })
    }
}
