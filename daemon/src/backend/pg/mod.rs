//! The PostgreSQL backend: queues, counters, arrays, locks, semaphores and events in
//! tables shared by every corrald node on the same database (see `backend::schema` for the tables and the SQL
//! functions that keep an operation that reads and writes one statement).
//!
//! [`Pg`] owns the connection (one `tokio_postgres::Client`, whose concurrent queries are
//! pipelined on one socket) and a keeper task that reconnects when it drops and renews
//! this node's lease. Each operation runs as its own task and is answered once its
//! statement has committed (every statement is its own transaction):
//! - a `get` is `DELETE … WHERE id IN (SELECT … ORDER BY id FOR UPDATE SKIP LOCKED
//!   LIMIT n) RETURNING`: at most once across nodes, oldest first; an acknowledged get
//!   sets the items' lease instead, and a return (nack, visibility timeout, the holder's
//!   connection or node gone) clears it;
//! - a counter `add` is one `INSERT … ON CONFLICT DO UPDATE SET value = value + delta`,
//!   exact whatever node it reaches (overflow is PostgreSQL's `numeric_value_out_of_range`);
//! - a lock is a row keyed by name with its holder (node, connection) and a fencing token
//!   from the one sequence `corral_fencing`, so tokens grow across the whole cluster.
//!
//! Cross-node wake-ups: every node LISTENs on the channel [`CHANNEL`]; a put (or a
//! return) notifies `q:QUEUE`, a get or ack of a bounded queue `p:QUEUE` (its putters),
//! a queue's delete `d:QUEUE` (its waiters end), a semaphore's release `s:NAME`, an
//! event's set `e:NAME` (its delete `d:e:NAME`) and a lock's release `l:LOCK`, in the
//! same statement (PostgreSQL folds identical notifications of one transaction into
//! one). A blocked request on any node tries again when its object's notification
//! arrives, and every `[backend] poll` (default 500 ms) anyway, so a lost notification
//! (e.g. while the connection was down) only adds latency. A lock's waiters stand in
//! line in `corral_lock_waiters` (FIFO by id, across the nodes): a grant goes to the
//! first of the line, or to a newcomer only when nobody waits; a semaphore's likewise.
//!
//! Leases: the keeper renews this node's row of `corral_nodes` every lease/3 and
//! releases the locks, lock and semaphore waiters and leased items of nodes whose lease
//! has expired, and the leased items whose visibility timeout passed. A node that has not
//! renewed its own lease for a whole lease gives up its locks itself (the watchdog): its
//! clients are told by the answer to their `release`. Operations this backend does
//! not support answer a clear `failed` error naming the operation; while the database is
//! unreachable every operation answers `backend_unavailable` and nothing changes.

mod anon;
mod arrays;
mod counters;
mod locks;
mod queues;
mod syncs;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use corral_proto::{
    CounterValue, ErrorBody, ErrorCode, LockGrant, Op, QueueGetResult, QueuePutResult,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, Statement};
use tokio_util::sync::CancellationToken;

use super::{BackendSettings, redact, schema};
use crate::primitives::{ConnInfo, Outcome, ReplyFn, check_name, ok};

/// The LISTEN/NOTIFY channel; payloads are `q:QUEUE` (a put) and `l:LOCK` (a release).
pub const CHANNEL: &str = "corral";

/// Payload sent to every waiter of this node after a reconnection (notifications sent
/// while the connection was down are lost).
const WAKE_ALL: &str = "*";

/// How long connecting may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL backend of one node. Shared by `Arc`.
pub struct Pg {
    settings: BackendSettings,
    /// The item size limit and the queues `corral.toml` declares.
    limits: crate::primitives::Limits,
    config: Config,
    /// The live connection; `None` while the database is unreachable.
    client: RwLock<Option<Arc<Client>>>,
    /// Per client connection: its waiters' cancellation and how many locks it holds.
    conns: Mutex<HashMap<u64, ConnState>>,
    /// Notifications received on [`CHANNEL`], for this node's waiters.
    wakes: tokio::sync::broadcast::Sender<Arc<str>>,
    /// This node's blocked requests by notification key (`q:QUEUE`, `l:LOCK`).
    waiting: Mutex<HashMap<String, usize>>,
    /// Deletions to retry once the database is back.
    stale: Mutex<Vec<Stale>>,
    /// When this node last renewed its lease.
    renewed: Mutex<Instant>,
    /// The hot operations' statements, prepared once on the live connection (kept with
    /// it: a reconnection starts a new cache), so that each operation is one round trip
    /// (Bind/Execute) instead of two (Parse/Describe, then Bind/Execute) and is not
    /// parsed and planned again every time.
    prepared: Mutex<Option<Prepared>>,
}

/// Statements prepared on one connection, by their SQL.
type Prepared = (Arc<Client>, HashMap<&'static str, Statement>);

#[derive(Default)]
struct ConnState {
    cancel: CancellationToken,
    /// The locks it holds.
    locks: std::collections::BTreeSet<String>,
    /// Locks it held when this node's lease expired: released, and said so to it.
    lost: std::collections::BTreeSet<String>,
    waiting: usize,
    /// It was given leases (acknowledged gets not detached): they go back when it closes.
    leases: bool,
    /// Those leases by id, with their deadlines, until acked or nacked through this node:
    /// while one lasts the connection holds something (it is not closed as idle).
    lease_until: std::collections::BTreeMap<u64, Instant>,
    /// It holds anonymous sessions: its holds end when it closes.
    anon: bool,
}

/// Rows of this node that a statement failed to delete (the database was away): deleted
/// at the next heartbeat that reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stale {
    /// Every lock of a closed connection.
    Locks(u64),
    /// One lock of a connection.
    Lock(u64, String),
    /// A lock waiter's place.
    Waiter(i64),
    /// The leases of a closed connection (their items go back).
    Leases(u64),
    /// A semaphore waiter's place.
    SemaphoreWaiter(i64),
    /// The anonymous-session holds of a closed connection (or exited process).
    Anon(u64),
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
    // The source is not in the message: `{:#}` prints the chain once.
    #[error("PostgreSQL at {url}")]
    Schema {
        /// The URL, password hidden.
        url: String,
        /// What went wrong.
        source: schema::MigrateError,
    },
    /// A start-up statement failed.
    #[error("PostgreSQL at {url}")]
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
    /// Connects, migrates the schema, registers this node, declares the queues of
    /// `limits` (what `corral.toml` says wins over what is stored, as on SQLite) and
    /// starts the keeper task. Errors name the URL with its password hidden and say what
    /// to do.
    pub async fn start(
        settings: BackendSettings,
        limits: crate::primitives::Limits,
    ) -> Result<Arc<Pg>, StartError> {
        let mut config = Config::from_str(&settings.url).map_err(|e| StartError::BadUrl {
            url: redact(&settings.url),
            reason: e.to_string(),
        })?;
        // A link that stops carrying packets (a partition, not a closed socket) fails the
        // connection within a lease instead of TCP's minutes of retransmissions: its
        // statements answer `backend_unavailable` and the keeper reconnects.
        let probe = (settings.lease / 3).max(Duration::from_secs(1));
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(settings.lease)
            .keepalives(true)
            .keepalives_idle(probe)
            .keepalives_interval(probe)
            .keepalives_retries(3)
            .application_name(format!("corrald {}", settings.node));
        let (wakes, _) = tokio::sync::broadcast::channel(1024);
        let (mut client, closed) = connect(&config, &wakes)
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
                .execute(
                    "WITH gone AS (DELETE FROM corral_locks WHERE node = $1 RETURNING name)
                     SELECT pg_notify($2, 'l:' || name) FROM gone",
                    &[&settings.node, &CHANNEL],
                )
                .await?;
            client
                .execute(
                    "DELETE FROM corral_lock_waiters WHERE node = $1",
                    &[&settings.node],
                )
                .await?;
            client
                .execute(
                    "DELETE FROM corral_waiting WHERE node = $1",
                    &[&settings.node],
                )
                .await?;
            // Its semaphore waiters of a previous life (a permit granted to one goes on).
            client
                .execute(
                    "SELECT corral_semaphore_leave(ARRAY(
                         SELECT id FROM corral_semaphore_waiters WHERE node = $1))",
                    &[&settings.node],
                )
                .await?;
            // Leases of its connections of a previous life (detached ones last their
            // visibility).
            client
                .execute(
                    "SELECT corral_queue_return(ARRAY(
                         SELECT lease FROM corral_queue_items
                         WHERE lease IS NOT NULL AND lease_node = $1 AND lease_conn IS NOT NULL))",
                    &[&settings.node],
                )
                .await?;
            for (queue, conf) in &limits.declared_queues {
                let maxsize = conf.maxsize.map(|m| m.min(i32::MAX as usize) as i32);
                let max_deliveries = conf.max_deliveries.map(|m| m.min(i32::MAX as u32) as i32);
                client
                    .execute(
                        "INSERT INTO corral_queues (name, maxsize, max_deliveries, dead_letter)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (name) DO UPDATE SET maxsize = EXCLUDED.maxsize,
                             max_deliveries = EXCLUDED.max_deliveries,
                             dead_letter = EXCLUDED.dead_letter",
                        &[queue, &maxsize, &max_deliveries, &conf.dead_letter],
                    )
                    .await?;
            }
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
            limits,
            config,
            client: RwLock::new(Some(Arc::new(client))),
            conns: Mutex::new(HashMap::new()),
            wakes,
            waiting: Mutex::new(HashMap::new()),
            stale: Mutex::new(Vec::new()),
            renewed: Mutex::new(Instant::now()),
            prepared: Mutex::new(None),
        });
        pg.rewatch_anon().await.map_err(|source| StartError::Sql {
            url: redact(&pg.settings.url),
            source,
        })?;
        tokio::spawn(keeper(pg.clone(), closed));
        tokio::spawn(watchdog(pg.clone()));
        Ok(pg)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.settings.node
    }

    /// Every node of the database with its heartbeat and what it holds.
    pub async fn nodes(&self) -> Outcome {
        let client = self.client()?;
        let rows = client
            .query(
                "SELECT n.name,
                        (extract(epoch FROM n.started_at) * 1000)::bigint,
                        (extract(epoch FROM n.heartbeat) * 1000)::bigint,
                        (extract(epoch FROM now() - n.heartbeat) * 1000)::bigint,
                        n.lease_ms,
                        ARRAY(SELECT l.name FROM corral_locks l WHERE l.node = n.name ORDER BY l.name),
                        (SELECT count(*) FROM corral_lock_waiters w WHERE w.node = n.name)
                 FROM corral_nodes n ORDER BY n.name",
                &[],
            )
            .await
            .map_err(|e| self.sql_error("nodes", e))?;
        let nodes = rows
            .iter()
            .map(|r| {
                let age = r.get::<_, i64>(3).max(0) as u64;
                let lease = r.get::<_, i64>(4).max(0) as u64;
                corral_proto::NodeInfo {
                    node: r.get(0),
                    started_ms: r.get(1),
                    heartbeat_ms: r.get(2),
                    heartbeat_age_ms: age,
                    lease_ms: lease,
                    alive: age < lease,
                    locks: r.get(5),
                    lock_waiters: r.get::<_, i64>(6) as usize,
                }
            })
            .collect();
        ok(corral_proto::NodesResult {
            backend: Some(redact(&self.settings.url)),
            node: Some(self.settings.node.clone()),
            nodes,
        })
    }

    fn client(&self) -> Result<Arc<Client>, ErrorBody> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| unavailable(&self.settings.url))
    }

    /// `sql` prepared on `client` (the live connection), once per connection.
    async fn prepared(
        &self,
        client: &Arc<Client>,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        {
            let cache = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((on, map)) = &*cache
                && Arc::ptr_eq(on, client)
                && let Some(s) = map.get(sql)
            {
                return Ok(s.clone());
            }
        }
        let statement = client.prepare(sql).await?;
        let mut cache = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *cache {
            Some((on, map)) if Arc::ptr_eq(on, client) => {
                map.insert(sql, statement.clone());
            }
            // The first statement on this connection (the Arc kept here cannot be
            // freed and its address reused while the cache names it).
            _ => *cache = Some((client.clone(), HashMap::from([(sql, statement.clone())]))),
        }
        Ok(statement)
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
        let mut rows = Vec::new();
        if !state.locks.is_empty() {
            rows.push(Stale::Locks(conn));
        }
        if state.leases {
            rows.push(Stale::Leases(conn));
        }
        if state.anon {
            rows.push(Stale::Anon(conn));
        }
        if rows.is_empty() {
            return;
        }
        let pg = self.clone();
        tokio::spawn(async move {
            for row in rows {
                if let Err(e) = pg.delete_stale(&row).await {
                    tracing::warn!(
                        "PostgreSQL backend: releasing a closed connection's locks or leases: {e}"
                    );
                    pg.stale_later(row);
                }
            }
        });
    }

    /// Deletes a row of this node (and notifies the lock's waiters).
    async fn delete_stale(&self, stale: &Stale) -> Result<u64, ErrorBody> {
        let client = self.client()?;
        let node = &self.settings.node;
        let done = match stale {
            Stale::Locks(conn) => {
                client
                    .execute(
                        "WITH gone AS (DELETE FROM corral_locks WHERE node = $1 AND conn = $2 RETURNING name)
                         SELECT pg_notify($3, 'l:' || name) FROM gone",
                        &[node, &(*conn as i64), &CHANNEL],
                    )
                    .await
            }
            Stale::Lock(conn, lock) => {
                let release = self
                    .prepared(
                        &client,
                        "WITH gone AS (DELETE FROM corral_locks WHERE name = $1 AND node = $2 AND conn = $3 RETURNING name)
                         SELECT pg_notify($4, 'l:' || name) FROM gone",
                    )
                    .await;
                match release {
                    Ok(release) => {
                        client
                            .execute(&release, &[lock, node, &(*conn as i64), &CHANNEL])
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            Stale::Leases(conn) => {
                client
                    .execute(
                        "SELECT corral_queue_return(ARRAY(
                             SELECT lease FROM corral_queue_items
                             WHERE lease IS NOT NULL AND lease_node = $1 AND lease_conn = $2))",
                        &[node, &(*conn as i64)],
                    )
                    .await
            }
            Stale::Anon(conn) => {
                client
                    .execute(
                        "SELECT corral_anon_release($1, $2)",
                        &[node, &(*conn as i64)],
                    )
                    .await
            }
            Stale::SemaphoreWaiter(id) => {
                client
                    .execute("SELECT corral_semaphore_leave(ARRAY[$1::bigint])", &[id])
                    .await
            }
            // The waiters behind it may be first now.
            Stale::Waiter(id) => {
                client
                    .execute(
                        "WITH gone AS (DELETE FROM corral_lock_waiters WHERE id = $1 RETURNING name)
                         SELECT pg_notify($2, 'l:' || name) FROM gone",
                        &[id, &CHANNEL],
                    )
                    .await
            }
        };
        done.map_err(|e| self.sql_error("release", e))
    }

    fn stale_later(&self, stale: Stale) {
        self.stale
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stale);
    }

    /// Whether a connection holds a lock or has a request waiting.
    pub fn holds(&self, conn: u64) -> bool {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conn)
            .is_some_and(|s| {
                let now = Instant::now();
                !s.locks.is_empty()
                    || s.waiting > 0
                    || s.anon
                    || s.lease_until.values().any(|&until| until > now)
            })
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
            Op::QueuePut { .. }
            | Op::QueueGet { .. }
            | Op::QueueLen { .. }
            | Op::QueueList {}
            | Op::QueueDeclare { .. }
            | Op::QueueAck { .. }
            | Op::QueueNack { .. }
            | Op::QueuePurge { .. }
            | Op::QueueDelete { .. } => self.queue_op(conn, op, &gone).await,
            Op::CounterList {}
            | Op::CounterGet { .. }
            | Op::CounterSet { .. }
            | Op::CounterAdd { .. }
            | Op::CounterCas { .. }
            | Op::CounterDelete { .. } => self.counter_op(op).await,
            Op::ArrayCreate { .. }
            | Op::ArrayGet { .. }
            | Op::ArraySet { .. }
            | Op::ArrayAdd { .. }
            | Op::ArrayList {}
            | Op::ArrayDelete { .. } => self.array_op(op).await,
            Op::LockAcquire { .. } | Op::LockRelease { .. } | Op::LockStatus { .. } => {
                self.lock_op(conn, op, &gone).await
            }
            Op::SemaphoreCreate { .. }
            | Op::SemaphoreAcquire { .. }
            | Op::SemaphoreRelease { .. }
            | Op::SemaphoreGet { .. }
            | Op::SemaphoreList {}
            | Op::SemaphoreDelete { .. }
            | Op::EventSet { .. }
            | Op::EventClear { .. }
            | Op::EventGet { .. }
            | Op::EventWait { .. }
            | Op::EventList {}
            | Op::EventDelete { .. } => self.sync_op(conn, op, &gone).await,
            Op::AnonHold { .. } | Op::AnonAdd { .. } => self.anon_op(conn, op).await,
            _ => Err(unsupported(name)),
        }
    }

    /// Tries `attempt` until it finds something, the deadline passes (`None`: one
    /// attempt), or the connection closes: again whenever a notification `key` (or
    /// [`WAKE_ALL`]) arrives, and every `poll` of the settings in any case.
    async fn wait<T, F, Fut>(
        &self,
        conn: u64,
        key: &str,
        deadline: Option<Instant>,
        cancel: &CancellationToken,
        mut attempt: F,
    ) -> Result<Option<T>, ErrorBody>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, ErrorBody>>,
    {
        // Subscribed before the first attempt: a put committed after it is not missed.
        let mut wakes = self.wakes.subscribe();
        // A queue's getters and putters end when it is deleted (`d:QUEUE`: `not_found`),
        // an event's waiters when it is (`d:e:EVENT`: not set, as at the timeout).
        let queue = key.strip_prefix("q:").or_else(|| key.strip_prefix("p:"));
        let deleted = match queue {
            Some(q) => Some(format!("d:{q}")),
            None => key.starts_with("e:").then(|| format!("d:{key}")),
        };
        if let Some(found) = attempt().await? {
            return Ok(Some(found));
        }
        let Some(deadline) = deadline else {
            return Ok(None);
        };
        self.with_conn(conn, |s| s.waiting += 1);
        *self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default() += 1;
        self.publish_waiting(key).await;
        let result = loop {
            let now = Instant::now();
            if now >= deadline {
                break Ok(None);
            }
            let nap = self.settings.poll.min(deadline - now);
            let woken = async {
                loop {
                    match wakes.recv().await {
                        Ok(got) if deleted.as_deref() == Some(&*got) => return true,
                        Ok(got) if &*got == key || &*got == WAKE_ALL => return false,
                        Ok(_) => {}
                        // Missed some: one of them may have been ours.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return false,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            tokio::select! {
                () = cancel.cancelled() => break Ok(None),
                () = tokio::time::sleep(nap) => {}
                deleted = woken => if deleted {
                    break match queue {
                        Some(queue) => Err(ErrorBody::new(
                            ErrorCode::NotFound,
                            format!("queue `{queue}` was deleted"),
                        )),
                        None => Ok(None),
                    };
                }
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
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = waiting.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    waiting.remove(key);
                }
            }
        }
        self.publish_waiting(key).await;
        result
    }

    /// Writes this node's count of requests waiting on `key` for the other nodes
    /// (best effort: the heartbeat writes every count again).
    async fn publish_waiting(&self, key: &str) {
        if !published(key) {
            return;
        }
        let Ok(client) = self.client() else { return };
        let n = self.waiting_on(key) as i32;
        let node = &self.settings.node;
        let done = if n == 0 {
            client
                .execute(
                    "DELETE FROM corral_waiting WHERE node = $1 AND key = $2",
                    &[node, &key],
                )
                .await
        } else {
            client
                .execute(
                    "INSERT INTO corral_waiting (node, key, n) VALUES ($1, $2, $3)
                     ON CONFLICT (node, key) DO UPDATE SET n = EXCLUDED.n",
                    &[node, &key, &n],
                )
                .await
        };
        if let Err(e) = done {
            tracing::debug!("PostgreSQL backend: cannot publish this node's waiters: {e}");
        }
    }

    /// How many requests of the other live nodes wait on each of `keys` (`None`: on
    /// every key), as their last counts written say.
    async fn others_waiting(
        &self,
        keys: Option<Vec<String>>,
    ) -> Result<HashMap<String, usize>, ErrorBody> {
        let client = self.client()?;
        let rows = client
            .query(
                "SELECT w.key, sum(w.n)::bigint FROM corral_waiting w
                 JOIN corral_nodes nd ON nd.name = w.node
                 WHERE w.node <> $1
                   AND nd.heartbeat >= now() - nd.lease_ms * interval '1 millisecond'
                   AND ($2::text[] IS NULL OR w.key = ANY($2))
                 GROUP BY w.key",
                &[&self.settings.node, &keys],
            )
            .await
            .map_err(|e| self.sql_error("waiters", e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as usize))
            .collect())
    }

    /// How many requests of this node wait on `key`.
    fn waiting_on(&self, key: &str) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn sql_error(&self, op: &str, e: tokio_postgres::Error) -> ErrorBody {
        // Connection exceptions (08…) and operator intervention (57…: the server shutting
        // down or starting up) mean the database is away, not that it refused this.
        let away = e
            .code()
            .is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57"));
        if e.is_closed() || e.as_db_error().is_none() || away {
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

/// Whether the other nodes see this node's count of waiters on `key`: a queue's getters
/// and putters, an event's waiters (lock and semaphore waiters have their lines).
fn published(key: &str) -> bool {
    ["q:", "p:", "e:"].iter().any(|p| key.starts_with(p))
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
            "{op} is not supported by the PostgreSQL backend (corrald --backend); \
             queues, counters, arrays, locks, semaphores, events and anonymous sessions are"
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

/// Connects and LISTENs on [`CHANNEL`]; the connection's task forwards notifications to
/// `wakes` and fires the returned receiver when the connection ends.
async fn connect(
    config: &Config,
    wakes: &tokio::sync::broadcast::Sender<Arc<str>>,
) -> Result<(Client, tokio::sync::oneshot::Receiver<()>), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let wakes = wakes.clone();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if n.channel() == CHANNEL {
                        let _ = wakes.send(Arc::from(n.payload()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!("PostgreSQL backend: connection lost: {e}");
                    break;
                }
                None => break,
            }
        }
        let _ = tx.send(());
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
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
                    if let Ok((client, rx)) = connect(&pg.config, &pg.wakes).await {
                        closed = rx;
                        *pg.client.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(client));
                        tracing::info!("PostgreSQL backend: reconnected");
                        // Notifications sent while we were away are lost: everyone looks.
                        let _ = pg.wakes.send(Arc::from(WAKE_ALL));
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
    // First the rows that should be gone (locks lost with the lease, releases that
    // failed): once the lease is renewed, no other node would delete them.
    let stale = std::mem::take(&mut *pg.stale.lock().unwrap_or_else(|e| e.into_inner()));
    for (i, row) in stale.iter().enumerate() {
        if let Err(e) = pg.delete_stale(row).await {
            tracing::warn!(
                "PostgreSQL backend: cannot delete this node's stale rows: {}",
                e.message
            );
            let mut later = pg.stale.lock().unwrap_or_else(|e| e.into_inner());
            later.extend(stale[i..].iter().cloned());
            return;
        }
    }
    // Taken before the statement: the database's heartbeat is no earlier than this.
    let started = Instant::now();
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
    *pg.renewed.lock().unwrap_or_else(|e| e.into_inner()) = started;
    // This node's waiter counts, all written again (a count whose write failed or
    // arrived out of order is right again now); the expired nodes' go.
    let (keys, counts): (Vec<String>, Vec<i32>) = pg
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(k, _)| published(k))
        .map(|(k, n)| (k.clone(), *n as i32))
        .unzip();
    if let Err(e) = client
        .execute(
            "WITH stale AS (DELETE FROM corral_waiting WHERE node = $1 AND NOT (key = ANY($2)))
             INSERT INTO corral_waiting (node, key, n)
             SELECT $1, k, c FROM unnest($2::text[], $3::integer[]) AS u(k, c)
             ON CONFLICT (node, key) DO UPDATE SET n = EXCLUDED.n",
            &[node, &keys, &counts],
        )
        .await
    {
        tracing::warn!("PostgreSQL backend: cannot write this node's waiter counts: {e}");
    }
    if let Err(e) = client
        .execute(
            "DELETE FROM corral_waiting w USING corral_nodes n
             WHERE w.node = n.name AND n.name <> $1
               AND n.heartbeat < now() - n.lease_ms * interval '1 millisecond'",
            &[node],
        )
        .await
    {
        tracing::warn!("PostgreSQL backend: dropping expired nodes' waiter counts: {e}");
    }
    if let Err(e) = client
        .execute(
            "WITH gone AS (
                 DELETE FROM corral_lock_waiters w USING corral_nodes n
                 WHERE w.node = n.name AND n.name <> $1
                   AND n.heartbeat < now() - n.lease_ms * interval '1 millisecond'
                 RETURNING w.name)
             SELECT pg_notify($2, 'l:' || name) FROM gone",
            &[node, &CHANNEL],
        )
        .await
    {
        tracing::warn!("PostgreSQL backend: dropping expired nodes' lock waiters: {e}");
    }
    match client
        .query(
            "WITH gone AS (
                 DELETE FROM corral_locks l USING corral_nodes n
                 WHERE l.node = n.name AND n.name <> $1
                   AND n.heartbeat < now() - n.lease_ms * interval '1 millisecond'
                 RETURNING l.name, l.node)
             SELECT name, node, pg_notify($2, 'l:' || name)::text FROM gone",
            &[node, &CHANNEL],
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
    if let Err(e) = client
        .execute(
            "SELECT corral_semaphore_leave(ARRAY(
                 SELECT w.id FROM corral_semaphore_waiters w JOIN corral_nodes n ON n.name = w.node
                 WHERE n.name <> $1
                   AND n.heartbeat < now() - n.lease_ms * interval '1 millisecond'))",
            &[node],
        )
        .await
    {
        tracing::warn!("PostgreSQL backend: dropping expired nodes' semaphore waiters: {e}");
    }
    if let Err(e) = client
        .execute(
            "SELECT corral_anon_release(n.name, NULL) FROM corral_nodes n
             WHERE n.name <> $1
               AND n.heartbeat < now() - n.lease_ms * interval '1 millisecond'
               AND EXISTS (SELECT 1 FROM corral_anon_holders h WHERE h.node = n.name)",
            &[node],
        )
        .await
    {
        tracing::warn!("PostgreSQL backend: ending expired nodes' anonymous holds: {e}");
    }
    // Leases past their visibility timeout, and those of expired nodes' connections.
    if let Err(e) = client
        .execute(
            "SELECT corral_queue_return(ARRAY(
                 SELECT i.lease FROM corral_queue_items i
                 WHERE i.lease IS NOT NULL AND (i.lease_until < now() OR (
                     i.lease_conn IS NOT NULL AND i.lease_node <> $1 AND i.lease_node IN (
                         SELECT n.name FROM corral_nodes n
                         WHERE n.heartbeat < now() - n.lease_ms * interval '1 millisecond')))))",
            &[node],
        )
        .await
    {
        tracing::warn!("PostgreSQL backend: returning expired leases: {e}");
    }
}

/// Once this node has gone a lease without renewing it, the other nodes may release its
/// locks at any moment: its clients lose them now (a later `release` says so), and the
/// rows are deleted when the database is back. Checked every lease/6.
async fn watchdog(pg: Arc<Pg>) {
    let lease = pg.settings.lease;
    loop {
        tokio::time::sleep(lease / 6).await;
        let renewed = *pg.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if renewed.elapsed() < lease {
            continue;
        }
        let mut lost = Vec::new();
        {
            let mut conns = pg.conns.lock().unwrap_or_else(|e| e.into_inner());
            for (id, state) in conns.iter_mut() {
                for lock in std::mem::take(&mut state.locks) {
                    lost.push(Stale::Lock(*id, lock.clone()));
                    state.lost.insert(lock);
                }
            }
        }
        for row in &lost {
            if let Stale::Lock(conn, lock) = row {
                tracing::warn!(
                    lock = %lock,
                    conn,
                    node = %pg.settings.node,
                    "PostgreSQL backend: lock lost: this node could not renew its lease in time"
                );
            }
        }
        pg.stale
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(lost);
    }
}
