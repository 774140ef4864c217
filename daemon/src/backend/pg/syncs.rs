//! Semaphores and events on PostgreSQL, with the semantics of the SQLite side
//! (`primitives::syncs`): a semaphore's permits are not bound to a connection; its
//! waiters stand in one line across the nodes (`corral_semaphore_waiters`, FIFO by id)
//! and a release hands its permit to the first of them. A blocked acquire or event wait
//! tries again on its notification (`s:NAME`, `e:NAME`) and every `poll`.

use corral_proto::{EventListResult, EventValue, SemaphoreListResult, SemaphoreValue};

use super::*;

fn sem_not_found(name: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotFound,
        format!("no semaphore `{name}`: create it first (semaphore_create with its initial value)"),
    )
}

impl Pg {
    /// Applies a semaphore or event operation.
    pub(super) async fn sync_op(
        &self,
        conn: ConnInfo,
        op: Op,
        gone: &CancellationToken,
    ) -> Outcome {
        let name = op.name();
        let name = name.as_str();
        match op {
            Op::SemaphoreCreate {
                semaphore,
                value,
                bound,
            } => {
                check_name("semaphore", &semaphore)?;
                if let Some(b) = bound {
                    if value > b {
                        return Err(ErrorBody::new(
                            ErrorCode::BadRequest,
                            format!(
                                "semaphore `{semaphore}`: the initial value {value} is past its bound {b}"
                            ),
                        ));
                    }
                }
                let too_large = || {
                    ErrorBody::new(
                        ErrorCode::BadRequest,
                        format!("a semaphore holds at most {} permits", i64::MAX),
                    )
                };
                let v = i64::try_from(value).map_err(|_| too_large())?;
                let b = bound
                    .map(|b| i64::try_from(b).map_err(|_| too_large()))
                    .transpose()?;
                let client = self.client()?;
                client
                    .execute(
                        "INSERT INTO corral_semaphores (name, value, bound) VALUES ($1, $2, $3)
                         ON CONFLICT (name) DO NOTHING",
                        &[&semaphore, &v, &b],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                let found = self.semaphore_value(&semaphore, name).await?;
                if found.bound != bound {
                    let show =
                        |b: Option<u64>| b.map_or("no bound".to_owned(), |b| format!("bound {b}"));
                    return Err(ErrorBody::new(
                        ErrorCode::TypeMismatch,
                        format!(
                            "semaphore `{semaphore}` already exists with {}; delete it first to make it with {}",
                            show(found.bound),
                            show(bound)
                        ),
                    ));
                }
                ok(found)
            }
            Op::SemaphoreAcquire {
                semaphore,
                timeout_ms,
                block,
            } => {
                check_name("semaphore", &semaphore)?;
                let deadline = deadline(block, timeout_ms);
                let granted = match self.try_semaphore(&semaphore, None, gone).await? {
                    Some(()) => true,
                    None => match deadline {
                        None => false,
                        Some(_) => self
                            .semaphore_line(&semaphore, conn, deadline, gone)
                            .await?
                            .is_some(),
                    },
                };
                match granted {
                    true => ok(self.semaphore_value(&semaphore, name).await?),
                    false if deadline.is_none() => Err(ErrorBody::new(
                        ErrorCode::Locked,
                        format!("semaphore `{semaphore}` has no free permit"),
                    )),
                    false => Err(ErrorBody::new(
                        ErrorCode::Timeout,
                        format!("semaphore `{semaphore}` had no free permit before the timeout"),
                    )),
                }
            }
            Op::SemaphoreRelease { semaphore } => {
                check_name("semaphore", &semaphore)?;
                let client = self.client()?;
                let row = client
                    .query_one(
                        "SELECT status, val FROM corral_semaphore_release($1)",
                        &[&semaphore],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                let (status, value): (String, Option<i64>) = (row.get(0), row.get(1));
                match status.as_str() {
                    "missing" => Err(sem_not_found(&semaphore)),
                    "bound" => Err(ErrorBody::new(
                        ErrorCode::Overflow,
                        format!(
                            "semaphore `{semaphore}` released too many times: it has {} free permits, its bound",
                            value.unwrap_or(0)
                        ),
                    )),
                    "full" => Err(ErrorBody::new(
                        ErrorCode::Overflow,
                        format!("semaphore `{semaphore}` cannot hold more permits"),
                    )),
                    _ => ok(self.semaphore_value(&semaphore, name).await?),
                }
            }
            Op::SemaphoreGet { semaphore } => {
                check_name("semaphore", &semaphore)?;
                ok(self.semaphore_value(&semaphore, name).await?)
            }
            Op::SemaphoreList {} => {
                let client = self.client()?;
                let semaphores = client
                    .query(
                        "SELECT s.name, s.value, s.bound,
                                (SELECT count(*) FROM corral_semaphore_waiters w
                                 WHERE w.name = s.name AND NOT w.granted)
                         FROM corral_semaphores s ORDER BY s.name",
                        &[],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .iter()
                    .map(semaphore_row)
                    .collect();
                ok(SemaphoreListResult { semaphores })
            }
            Op::SemaphoreDelete { semaphore } => {
                check_name("semaphore", &semaphore)?;
                let client = self.client()?;
                let removed: i32 = client
                    .query_one("SELECT corral_semaphore_delete($1)", &[&semaphore])
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .get(0);
                ok(corral_proto::RemovedResult {
                    removed: removed.max(0) as usize,
                })
            }
            Op::EventSet { event } => self.event_store(event, true, name).await,
            Op::EventClear { event } => self.event_store(event, false, name).await,
            Op::EventGet { event } => {
                check_name("event", &event)?;
                let set = self.event_is_set(&event, name).await?;
                ok(self.event_value(event, set))
            }
            Op::EventWait { event, timeout_ms } => {
                check_name("event", &event)?;
                let deadline = deadline(true, timeout_ms);
                let set = self
                    .wait(conn.id, &format!("e:{event}"), deadline, gone, || async {
                        Ok(self.event_is_set(&event, name).await?.then_some(()))
                    })
                    .await?
                    .is_some();
                ok(self.event_value(event, set))
            }
            Op::EventList {} => {
                let client = self.client()?;
                let rows = client
                    .query("SELECT name, is_set FROM corral_events ORDER BY name", &[])
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                let mut events: std::collections::BTreeMap<String, bool> = rows
                    .iter()
                    .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
                    .collect();
                // Events never set or cleared but waited for here are listed too.
                let keys: Vec<String> = self
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                for key in keys {
                    if let Some(event) = key.strip_prefix("e:") {
                        events.entry(event.to_string()).or_default();
                    }
                }
                ok(EventListResult {
                    events: events
                        .into_iter()
                        .map(|(event, set)| self.event_value(event, set))
                        .collect(),
                })
            }
            Op::EventDelete { event } => {
                check_name("event", &event)?;
                let client = self.client()?;
                // Its waiters on every node are answered (not set) by `d:e:EVENT`.
                let removed: i64 = client
                    .query_one(
                        "WITH gone AS (DELETE FROM corral_events WHERE name = $1 RETURNING 1)
                         SELECT (SELECT count(*) FROM gone), pg_notify($2, 'd:e:' || $1)::text",
                        &[&event, &CHANNEL],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .get(0);
                ok(corral_proto::RemovedResult {
                    removed: removed as usize,
                })
            }
            _ => Err(unsupported(name)),
        }
    }

    /// A semaphore's value and the waiters of every node (`not_found` if it does not
    /// exist).
    async fn semaphore_value(
        &self,
        semaphore: &str,
        op: &str,
    ) -> Result<SemaphoreValue, ErrorBody> {
        let client = self.client()?;
        let row = client
            .query_opt(
                "SELECT s.name, s.value, s.bound,
                        (SELECT count(*) FROM corral_semaphore_waiters w
                         WHERE w.name = s.name AND NOT w.granted)
                 FROM corral_semaphores s WHERE s.name = $1",
                &[&semaphore],
            )
            .await
            .map_err(|e| self.sql_error(op, e))?
            .ok_or_else(|| sem_not_found(semaphore))?;
        Ok(semaphore_row(&row))
    }

    /// Takes a permit (as a newcomer with `place: None`, or as the waiter at `place`).
    /// A permit taken for a connection that closed meanwhile is released at once.
    async fn try_semaphore(
        &self,
        semaphore: &str,
        place: Option<i64>,
        gone: &CancellationToken,
    ) -> Result<Option<()>, ErrorBody> {
        let client = self.client()?;
        let row = client
            .query_one(
                "SELECT status FROM corral_semaphore_acquire($1, $2)",
                &[&semaphore, &place],
            )
            .await
            .map_err(|e| self.sql_error("semaphore_acquire", e))?;
        let status: String = row.get(0);
        match status.as_str() {
            "missing" if place.is_some() => Err(ErrorBody::new(
                ErrorCode::NotFound,
                format!("semaphore `{semaphore}` was deleted while this client waited"),
            )),
            "missing" => Err(sem_not_found(semaphore)),
            "ok" if gone.is_cancelled() => {
                client
                    .execute("SELECT corral_semaphore_release($1)", &[&semaphore])
                    .await
                    .map_err(|e| self.sql_error("semaphore_acquire", e))?;
                Ok(None)
            }
            "ok" => Ok(Some(())),
            _ => Ok(None),
        }
    }

    /// Takes a place in the semaphore's line (across the nodes) and waits for a permit;
    /// the place is given up however the wait ends (a permit granted to it meanwhile
    /// goes to the next waiter).
    async fn semaphore_line(
        &self,
        semaphore: &str,
        conn: ConnInfo,
        deadline: Option<Instant>,
        gone: &CancellationToken,
    ) -> Result<Option<()>, ErrorBody> {
        let client = self.client()?;
        let place: i64 = client
            .query_one(
                "INSERT INTO corral_semaphore_waiters (name, node, conn) VALUES ($1, $2, $3) RETURNING id",
                &[&semaphore, &self.settings.node, &(conn.id as i64)],
            )
            .await
            .map_err(|e| self.sql_error("semaphore_acquire", e))?
            .get(0);
        let granted = self
            .wait(conn.id, &format!("s:{semaphore}"), deadline, gone, || {
                self.try_semaphore(semaphore, Some(place), gone)
            })
            .await;
        if !matches!(granted, Ok(Some(_))) {
            let stale = Stale::SemaphoreWaiter(place);
            if self.delete_stale(&stale).await.is_err() {
                self.stale_later(stale);
            }
        }
        granted
    }

    /// Sets or clears an event; a set notifies its waiters on every node.
    async fn event_store(&self, event: String, set: bool, op: &str) -> Outcome {
        check_name("event", &event)?;
        let client = self.client()?;
        client
            .execute(
                "WITH e AS (INSERT INTO corral_events (name, is_set) VALUES ($1, $2)
                            ON CONFLICT (name) DO UPDATE SET is_set = EXCLUDED.is_set
                            RETURNING is_set)
                 SELECT CASE WHEN e.is_set THEN pg_notify($3, 'e:' || $1)::text END FROM e",
                &[&event, &set, &CHANNEL],
            )
            .await
            .map_err(|e| self.sql_error(op, e))?;
        ok(self.event_value(event, set))
    }

    async fn event_is_set(&self, event: &str, op: &str) -> Result<bool, ErrorBody> {
        let client = self.client()?;
        Ok(client
            .query_opt(
                "SELECT is_set FROM corral_events WHERE name = $1",
                &[&event],
            )
            .await
            .map_err(|e| self.sql_error(op, e))?
            .is_some_and(|r| r.get(0)))
    }

    /// An event's value with this node's waiters.
    fn event_value(&self, event: String, set: bool) -> EventValue {
        EventValue {
            waiters: self.waiting_on(&format!("e:{event}")),
            event,
            set,
        }
    }
}

fn semaphore_row(r: &tokio_postgres::Row) -> SemaphoreValue {
    SemaphoreValue {
        semaphore: r.get(0),
        value: r.get::<_, i64>(1).max(0) as u64,
        bound: r.get::<_, Option<i64>>(2).map(|b| b.max(0) as u64),
        waiters: r.get::<_, i64>(3) as usize,
    }
}
