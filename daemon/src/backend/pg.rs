//! The PostgreSQL backend: queues, counters and locks in tables shared by every corrald
//! node on the same database (see `backend::schema` for the tables).
//!
//! [`Pg`] owns the connection (one `tokio_postgres::Client`, whose concurrent queries are
//! pipelined on one socket) and a keeper task that reconnects when it drops and renews
//! this node's lease. Each operation runs as its own task and is answered once its
//! statement has committed (every statement is its own transaction):
//! - a `get` is `DELETE … WHERE id IN (SELECT … ORDER BY id FOR UPDATE SKIP LOCKED
//!   LIMIT n) RETURNING`: at most once across nodes, oldest first;
//! - a counter `add` is one `INSERT … ON CONFLICT DO UPDATE SET value = value + delta`,
//!   exact whatever node it reaches (overflow is PostgreSQL's `numeric_value_out_of_range`);
//! - a lock is a row keyed by name with its holder (node, connection) and a fencing token
//!   from the one sequence `corral_fencing`, so tokens grow across the whole cluster.
//!
//! Blocking gets and acquires poll every [`POLL`] until their deadline (cross-node
//! wake-ups by LISTEN/NOTIFY are not built yet, so a wait costs up to one poll of
//! latency; lock waiters are not FIFO across nodes yet). Operations this backend does
//! not support answer a clear `failed` error naming the operation; while the database is
//! unreachable every operation answers `backend_unavailable` and nothing changes.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use corral_proto::{
    CounterValue, ErrorBody, ErrorCode, LockGrant, Op, QueueGetResult, QueuePutResult,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};
use tokio_util::sync::CancellationToken;

use super::{BackendSettings, redact, schema};
use crate::primitives::{ConnInfo, Outcome, ReplyFn, check_name, ok};

/// How often a blocked `get` or `acquire` looks again.
pub const POLL: Duration = Duration::from_millis(100);

/// How long connecting may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL backend of one node. Shared by `Arc`.
pub struct Pg {
    settings: BackendSettings,
    config: Config,
    /// The live connection; `None` while the database is unreachable.
    client: RwLock<Option<Arc<Client>>>,
    /// Per client connection: its waiters' cancellation and how many locks it holds.
    conns: Mutex<HashMap<u64, ConnState>>,
}

#[derive(Default)]
struct ConnState {
    cancel: CancellationToken,
    locks: usize,
    waiting: usize,
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The URL does not parse.
    #[error(
        "invalid backend URL {url}: {reason}; write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    BadUrl {
        /// The URL, password hidden.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server answered but refused the user, password or database.
    #[error(
        "PostgreSQL at {url} refused the connection: {reason}; check the user, password and database of the URL (and the server's pg_hba.conf)"
    )]
    Refused {
        /// The URL, password hidden.
        url: String,
        /// The server's message.
        reason: String,
    },
    /// No server answered.
    #[error(
        "cannot reach PostgreSQL at {url}: {reason}; check that the server is running and that the URL's host and port are right"
    )]
    Unreachable {
        /// The URL, password hidden.
        url: String,
        /// The error.
        reason: String,
    },
    /// The schema could not be brought up to date, or is newer than this code.
    #[error("PostgreSQL at {url}: {source}")]
    Schema {
        /// The URL, password hidden.
        url: String,
        /// What went wrong.
        source: schema::MigrateError,
    },
    /// A start-up statement failed.
    #[error("PostgreSQL at {url}: {source}")]
    Sql {
        /// The URL, password hidden.
        url: String,
        /// What went wrong.
        source: tokio_postgres::Error,
    },
}

fn start_error(url: &str, e: tokio_postgres::Error) -> StartError {
    let url = redact(url);
    if let Some(db) = e.as_db_error() {
        let refused = [
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::INSUFFICIENT_PRIVILEGE,
        ];
        if refused.contains(db.code()) {
            return StartError::Refused {
                url,
                reason: db.message().to_string(),
            };
        }
    }
    StartError::Unreachable {
        url,
        reason: error_text(&e),
    }
}

/// An error with its source (tokio-postgres puts the useful part there).
fn error_text(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

impl Pg {
    /// Connects, migrates the schema, registers this node and starts the keeper task.
    /// Errors name the URL with its password hidden and say what to do.
    pub async fn start(settings: BackendSettings) -> Result<Arc<Pg>, StartError> {
        let mut config = Config::from_str(&settings.url).map_err(|e| StartError::BadUrl {
            url: redact(&settings.url),
            reason: e.to_string(),
        })?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .application_name(format!("corrald {}", settings.node));
        let (mut client, closed) = connect(&config)
            .await
            .map_err(|e| start_error(&settings.url, e))?;
        schema::migrate(&mut client)
            .await
            .map_err(|source| StartError::Schema {
                url: redact(&settings.url),
                source,
            })?;
        let lease_ms = settings.lease.as_millis() as i64;
        // This node's locks of a previous life belong to connections that are gone.
        let registered = async {
            client.batch_execute("BEGIN").await?;
            client
                .execute(
                    "INSERT INTO corral_nodes (name, heartbeat, lease_ms) VALUES ($1, now(), $2)
                     ON CONFLICT (name) DO UPDATE SET heartbeat = now(), lease_ms = $2, started_at = now()",
                    &[&settings.node, &lease_ms],
                )
                .await?;
            client
                .execute("DELETE FROM corral_locks WHERE node = $1", &[&settings.node])
                .await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        registered.map_err(|source| StartError::Sql {
            url: redact(&settings.url),
            source,
        })?;
        tracing::info!(
            url = %redact(&settings.url),
            node = %settings.node,
            "PostgreSQL backend: connected; queues, counters and locks are shared by the nodes of this database"
        );
        let pg = Arc::new(Pg {
            settings,
            config,
            client: RwLock::new(Some(Arc::new(client))),
            conns: Mutex::new(HashMap::new()),
        });
        tokio::spawn(keeper(pg.clone(), closed));
        Ok(pg)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.settings.node
    }

    fn client(&self) -> Result<Arc<Client>, ErrorBody> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| unavailable(&self.settings.url))
    }

    /// Applies a coordination operation for `conn`; `reply` is called once, after its
    /// statement committed (or the wait ended, or it failed).
    pub fn apply(self: &Arc<Self>, conn: ConnInfo, op: Op, reply: ReplyFn) {
        // Taken now, in the order of the connection's requests: a disconnect that
        // follows this request cancels it.
        let gone = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.entry(conn.id).or_default().cancel.clone()
        };
        let pg = self.clone();
        tokio::spawn(async move {
            let outcome = pg.run(conn, op, gone).await;
            reply(outcome);
        });
    }

    /// A client connection closed: release its locks, end its waits.
    pub fn disconnect(self: &Arc<Self>, conn: u64) {
        let Some(state) = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn)
        else {
            return;
        };
        state.cancel.cancel();
        if state.locks == 0 {
            return;
        }
        let pg = self.clone();
        tokio::spawn(async move {
            let Ok(client) = pg.client() else { return };
            let conn = conn as i64;
            if let Err(e) = client
                .execute(
                    "DELETE FROM corral_locks WHERE node = $1 AND conn = $2",
                    &[&pg.settings.node, &conn],
                )
                .await
            {
                tracing::warn!("PostgreSQL backend: releasing a closed connection's locks: {e}");
            }
        });
    }

    /// Whether a connection holds a lock or has a request waiting.
    pub fn holds(&self, conn: u64) -> bool {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conn)
            .is_some_and(|s| s.locks > 0 || s.waiting > 0)
    }

    /// Changes the state of a connection still open (one that closed has none).
    fn with_conn(&self, conn: u64, f: impl FnOnce(&mut ConnState)) {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = conns.get_mut(&conn) {
            f(state);
        }
    }

    async fn run(&self, conn: ConnInfo, op: Op, gone: CancellationToken) -> Outcome {
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
                         SELECT count(*) + 1 FROM corral_queue_items WHERE queue = $1",
                        &[&queue, &text],
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
                    .wait(conn.id, deadline, &gone, || self.take(&queue, count, &gone))
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
                ok(corral_proto::QueueInfo {
                    queue,
                    depth: depth as usize,
                    in_flight: 0,
                    maxsize: None,
                    max_deliveries: None,
                    dead_letter: None,
                    put_total: 0,
                    got_total: 0,
                    waiting_getters: 0,
                    waiting_putters: 0,
                })
            }
            Op::CounterGet { counter } => {
                let client = self.client()?;
                let value: i64 = client
                    .query_opt(
                        "SELECT value FROM corral_counters WHERE name = $1",
                        &[&counter],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?
                    .map_or(0, |r| r.get(0));
                ok(CounterValue { counter, value })
            }
            Op::CounterSet { counter, value } => {
                check_name("counter", &counter)?;
                let client = self.client()?;
                client
                    .execute(
                        "INSERT INTO corral_counters (name, value) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                        &[&counter, &value],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                ok(CounterValue { counter, value })
            }
            Op::CounterAdd { counter, delta } => {
                check_name("counter", &counter)?;
                let client = self.client()?;
                let row = client
                    .query_one(
                        "INSERT INTO corral_counters (name, value) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET value = corral_counters.value + EXCLUDED.value
                         RETURNING value",
                        &[&counter, &delta],
                    )
                    .await;
                match row {
                    Ok(row) => ok(CounterValue {
                        counter,
                        value: row.get(0),
                    }),
                    Err(e) if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) => {
                        Err(ErrorBody::new(
                            ErrorCode::Overflow,
                            format!("counter `{counter}` + {delta} does not fit in 64 bits"),
                        ))
                    }
                    Err(e) => Err(self.sql_error(name, e)),
                }
            }
            Op::LockAcquire {
                lock,
                timeout_ms,
                block,
            } => {
                check_name("lock", &lock)?;
                let deadline = deadline(block, timeout_ms);
                let granted = self
                    .wait(conn.id, deadline, &gone, || {
                        self.try_lock(&lock, conn, &gone)
                    })
                    .await?;
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
                let client = self.client()?;
                let id = conn.id as i64;
                let n = client
                    .execute(
                        "DELETE FROM corral_locks WHERE name = $1 AND node = $2 AND conn = $3",
                        &[&lock, &self.settings.node, &id],
                    )
                    .await
                    .map_err(|e| self.sql_error(name, e))?;
                if n == 0 {
                    return Err(ErrorBody::new(
                        ErrorCode::NotHeld,
                        format!("this connection does not hold lock `{lock}`"),
                    ));
                }
                self.with_conn(conn.id, |s| s.locks = s.locks.saturating_sub(1));
                ok(serde_json::json!({}))
            }
            _ => Err(unsupported(name)),
        }
    }

    /// Polls `attempt` until it finds something, the deadline passes (`None`: one
    /// attempt), or the connection closes.
    async fn wait<T, F, Fut>(
        &self,
        conn: u64,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
        mut attempt: F,
    ) -> Result<Option<T>, ErrorBody>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, ErrorBody>>,
    {
        if let Some(found) = attempt().await? {
            return Ok(Some(found));
        }
        let Some(deadline) = deadline else {
            return Ok(None);
        };
        self.with_conn(conn, |s| s.waiting += 1);
        let result = loop {
            let now = Instant::now();
            if now >= deadline {
                break Ok(None);
            }
            let nap = POLL.min(deadline - now);
            tokio::select! {
                () = cancel.cancelled() => break Ok(None),
                () = tokio::time::sleep(nap) => {}
            }
            match attempt().await {
                Ok(Some(found)) => break Ok(Some(found)),
                Ok(None) => {}
                // While the database is away a waiter keeps waiting, to its deadline.
                Err(e) if e.code == ErrorCode::BackendUnavailable => {}
                Err(e) => break Err(e),
            }
        };
        self.with_conn(conn, |s| s.waiting = s.waiting.saturating_sub(1));
        result
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
            return Ok(None);
        }
        let items = rows
            .into_iter()
            .map(|(_, text)| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
            .collect();
        Ok(Some(items))
    }

    async fn try_lock(
        &self,
        lock: &str,
        conn: ConnInfo,
        gone: &CancellationToken,
    ) -> Result<Option<u64>, ErrorBody> {
        let client = self.client()?;
        let id = conn.id as i64;
        let pid = conn.pid.map(|p| p as i32);
        let uid = conn.uid.map(|u| u as i32);
        let row = client
            .query_opt(
                "INSERT INTO corral_locks (name, node, conn, pid, uid, token)
                 VALUES ($1, $2, $3, $4, $5, nextval('corral_fencing'))
                 ON CONFLICT (name) DO NOTHING RETURNING token",
                &[&lock, &self.settings.node, &id, &pid, &uid],
            )
            .await
            .map_err(|e| self.sql_error("lock_acquire", e))?;
        let Some(row) = row else { return Ok(None) };
        let token: i64 = row.get(0);
        if gone.is_cancelled() {
            // Granted to a connection that closed meanwhile: release at once.
            client
                .execute(
                    "DELETE FROM corral_locks WHERE name = $1 AND node = $2 AND conn = $3",
                    &[&lock, &self.settings.node, &id],
                )
                .await
                .map_err(|e| self.sql_error("lock_acquire", e))?;
            return Ok(None);
        }
        self.with_conn(conn.id, |s| s.locks += 1);
        Ok(Some(token as u64))
    }

    fn sql_error(&self, op: &str, e: tokio_postgres::Error) -> ErrorBody {
        if e.is_closed() || e.as_db_error().is_none() {
            return unavailable(&self.settings.url);
        }
        ErrorBody::new(
            ErrorCode::Internal,
            format!(
                "{op}: PostgreSQL refused the statement ({}); nothing was changed",
                error_text(&e)
            ),
        )
    }
}

/// When a wait ends: `None` for a non-blocking call, far away for "forever".
fn deadline(block: bool, timeout_ms: Option<u64>) -> Option<Instant> {
    if !block {
        return None;
    }
    let wait = timeout_ms.map_or(
        Duration::from_secs(100 * 365 * 86_400),
        Duration::from_millis,
    );
    Some(Instant::now() + wait)
}

fn unsupported(op: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Failed,
        format!(
            "{op} is not supported by the PostgreSQL backend yet (corrald --backend); \
             queue put/get/len, counter get/set/add and lock acquire/release are"
        ),
    )
}

fn unavailable(url: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::BackendUnavailable,
        format!(
            "the PostgreSQL backend at {} is unreachable; nothing was changed. corrald reconnects by itself: retry later",
            redact(url)
        ),
    )
}

async fn connect(
    config: &Config,
) -> Result<(Client, tokio::sync::oneshot::Receiver<()>), tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL backend: connection lost: {e}");
        }
        let _ = tx.send(());
    });
    Ok((client, rx))
}

/// Renews this node's lease every lease/3 and reconnects when the connection drops.
async fn keeper(pg: Arc<Pg>, mut closed: tokio::sync::oneshot::Receiver<()>) {
    let beat = pg.settings.lease / 3;
    loop {
        tokio::select! {
            _ = &mut closed => {
                *pg.client.write().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::warn!(url = %redact(&pg.settings.url), "PostgreSQL backend: unreachable; reconnecting");
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Ok((client, rx)) = connect(&pg.config).await {
                        closed = rx;
                        *pg.client.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(client));
                        tracing::info!("PostgreSQL backend: reconnected");
                        break;
                    }
                }
            }
            () = tokio::time::sleep(beat) => {
                if let Ok(client) = pg.client() {
                    renew_and_reap(&pg, &client).await;
                }
            }
        }
    }
}

/// Renews this node's lease, then releases the locks of every node whose lease has
/// expired (whichever live node notices first does it; the statement is idempotent).
async fn renew_and_reap(pg: &Pg, client: &Client) {
    let node = &pg.settings.node;
    if let Err(e) = client
        .execute(
            "UPDATE corral_nodes SET heartbeat = now() WHERE name = $1",
            &[node],
        )
        .await
    {
        tracing::warn!("PostgreSQL backend: cannot renew this node's lease: {e}");
        return;
    }
    match client
        .query(
            "DELETE FROM corral_locks l USING corral_nodes n
             WHERE l.node = n.name AND n.name <> $1
               AND n.heartbeat < now() - n.lease_ms * interval '1 millisecond'
             RETURNING l.name, l.node",
            &[node],
        )
        .await
    {
        Ok(rows) => {
            for row in rows {
                let (lock, holder): (String, String) = (row.get(0), row.get(1));
                tracing::warn!(
                    lock = %lock,
                    node = %holder,
                    "PostgreSQL backend: released a lock of a node whose lease expired"
                );
            }
        }
        Err(e) => tracing::warn!("PostgreSQL backend: releasing expired nodes' locks: {e}"),
    }
}
