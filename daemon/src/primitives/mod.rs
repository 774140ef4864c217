//! Queues, counters, arrays and locks: the in-memory state behind the coordination
//! operations.
//!
//! This state is owned by the store task (see [`crate::store`]), which feeds it one
//! batch of operations at a time, then makes the batch durable with one commit, then
//! sends every reply of the batch. So:
//! - memory is always ahead of disk by at most one uncommitted batch, and nothing of that
//!   batch has been told to anyone yet;
//! - if the commit fails, the store reloads this state from disk (the last committed
//!   batch) and the whole batch is answered with an error: nothing changed.
//!
//! Nothing here speaks SQL: changes are recorded in [`Changes`], which the store writes.

pub mod anon;
pub(crate) mod counters;
mod locks;
mod queues;
mod reply;
mod syncs;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corral_proto::{ErrorBody, ErrorCode, Family, Op};

pub use counters::ArrayData;
pub use locks::Locks;
pub use queues::{Item, Queue, check_dead_letter};
pub(crate) use queues::{LeaseSpec, lease_spec};
pub use reply::{Outcome, Reply, ok, to_json};
pub use syncs::SemaphoreState;

/// Where a reply goes. Called exactly once, after the batch is committed.
pub type ReplyFn = Box<dyn FnOnce(Outcome) + Send>;

/// Replies produced by a batch, sent by the store once the batch is committed.
#[derive(Default)]
pub struct Outbox {
    /// Each reply, and whether it reports a change that must be durable first (if the
    /// commit fails, those become errors; the others, like lock grants and timeouts,
    /// stand).
    pub replies: Vec<(ReplyFn, Outcome, bool)>,
}

impl Outbox {
    /// A reply that reports (or depends on) a durable change.
    pub fn durable(&mut self, reply: ReplyFn, outcome: Outcome) {
        self.replies.push((reply, outcome, true));
    }

    /// A reply about in-memory state only.
    pub fn volatile(&mut self, reply: ReplyFn, outcome: Outcome) {
        self.replies.push((reply, outcome, false));
    }
}

/// The client connection an operation came from: locks belong to it, and its waiters
/// and locks go away with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnInfo {
    /// Unique per connection for the life of corrald.
    pub id: u64,
    /// Peer pid from `SO_PEERCRED`.
    pub pid: Option<u32>,
    /// Peer uid from `SO_PEERCRED`.
    pub uid: Option<u32>,
}

/// A fresh connection id: for a client connection, or for a process standing in as one
/// (an anonymous session's holder, see `anon`).
pub fn next_conn_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Limits that apply to operations.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest queue item, as serialized JSON.
    pub max_item_bytes: usize,
    /// Queues declared in `corral.toml`, with their settings.
    pub declared_queues: BTreeMap<String, corral_config::QueueConfig>,
}

/// Durable changes made by a batch, for the store to write.
#[derive(Debug, Default)]
pub struct Changes {
    /// Queue item changes, in order.
    pub queue_items: Vec<ItemChange>,
    /// Queues whose row (capacity, totals) must be rewritten now, or deleted if gone.
    pub queues: HashSet<String>,
    /// Queues whose totals moved (put, get, purge): their row is rewritten lazily, at
    /// most once a second (see the store's `LazyTotals`); the items are not lazy.
    pub queue_stats: HashSet<String>,
    /// Counters to rewrite, or delete if gone.
    pub counters: HashSet<String>,
    /// Arrays to rewrite, or delete if gone.
    pub arrays: HashSet<String>,
    /// Semaphores to rewrite, or delete if gone.
    pub semaphores: HashSet<String>,
    /// Events to rewrite, or delete if gone.
    pub events: HashSet<String>,
    /// Anonymous sessions to rewrite, or delete if ended.
    pub anon: HashSet<String>,
}

impl Changes {
    /// Empties every list, keeping the memory: the store reuses one `Changes` for
    /// every batch.
    pub fn clear(&mut self) {
        self.queue_items.clear();
        self.queues.clear();
        self.queue_stats.clear();
        self.counters.clear();
        self.arrays.clear();
        self.semaphores.clear();
        self.events.clear();
        self.anon.clear();
    }

    /// Notes that the totals of queue `name` moved (allocates its name once per batch).
    pub fn queue_stat(&mut self, name: &str) {
        if !self.queue_stats.contains(name) {
            self.queue_stats.insert(name.to_owned());
        }
    }

    /// Whether anything needs writing.
    pub fn is_empty(&self) -> bool {
        self.queue_items.is_empty()
            && self.queues.is_empty()
            && self.queue_stats.is_empty()
            && self.counters.is_empty()
            && self.arrays.is_empty()
            && self.semaphores.is_empty()
            && self.events.is_empty()
            && self.anon.is_empty()
    }
}

/// One change to the stored items of a queue.
#[derive(Debug)]
pub enum ItemChange {
    /// A new item.
    Insert {
        /// Queue name.
        queue: String,
        /// Its position.
        seq: i64,
        /// The item, serialized JSON.
        value: String,
    },
    /// Items handed out: every item of `queue` with `seq <= up_to`.
    Remove {
        /// Queue name.
        queue: String,
        /// Last removed position.
        up_to: i64,
    },
    /// One item removed (acked, moved to the dead-letter queue, or taken while items
    /// before it are in flight).
    Delete {
        /// Queue name.
        queue: String,
        /// Its position.
        seq: i64,
    },
    /// An item handed out by an acknowledged get: its delivery count.
    Delivered {
        /// Queue name.
        queue: String,
        /// Its position.
        seq: i64,
        /// Deliveries so far, this one included.
        deliveries: u32,
    },
    /// Every item of the queue (purge or delete).
    Clear {
        /// Queue name.
        queue: String,
    },
}

/// A client blocked in `get`, `put` or `acquire`.
struct Waiter {
    conn: ConnInfo,
    kind: WaitKind,
    reply: ReplyFn,
}

enum WaitKind {
    Get {
        queue: String,
        count: usize,
        lease: Option<queues::LeaseSpec>,
    },
    Put {
        queue: String,
        value: String,
    },
    Lock {
        lock: String,
    },
    Semaphore {
        semaphore: String,
    },
    Event {
        event: String,
    },
}

/// A lease on an item in flight (handed out by an acknowledged get). Leases live in
/// memory only: after a restart of corrald every leased item is waiting again, with the
/// delivery count it had.
struct LeaseRecord {
    queue: String,
    seq: i64,
    /// The item's delivery count when leased (tells a lease granted in a rolled-back
    /// batch, see [`Primitives::restore`]).
    deliveries: u32,
    /// The connection whose closing returns the item; `None` for a detached lease.
    conn: Option<u64>,
    /// When the visibility timeout passes (none if past what `Instant` holds).
    deadline: Option<Instant>,
}

/// All coordination state. See the module docs.
pub struct Primitives {
    limits: Limits,
    queues: BTreeMap<String, Queue>,
    counters: BTreeMap<String, i64>,
    arrays: BTreeMap<String, ArrayData>,
    locks: Locks,
    semaphores: BTreeMap<String, SemaphoreState>,
    events: BTreeMap<String, bool>,
    sync_waiters: syncs::SyncWaiters,
    anon: anon::Sessions,
    waiters: HashMap<u64, Waiter>,
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    next_waiter: u64,
    leases: HashMap<u64, LeaseRecord>,
    /// When leases pass their visibility timeout (entries of ended leases are skipped).
    lease_deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// `epoch << 32 | n`, like fencing tokens: a lease id is never reused, not even by
    /// the next life of corrald.
    next_lease: u64,
}

/// The durable part of the state, as loaded from disk.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Queues with their items.
    pub queues: BTreeMap<String, Queue>,
    /// Counter values.
    pub counters: BTreeMap<String, i64>,
    /// Arrays.
    pub arrays: BTreeMap<String, ArrayData>,
    /// Semaphores.
    pub semaphores: BTreeMap<String, SemaphoreState>,
    /// Events, and whether each is set.
    pub events: BTreeMap<String, bool>,
    /// Anonymous sessions, each holder given a connection id by the store (only
    /// [`Primitives::new`] reads them: a failed commit leaves the sessions in memory).
    pub anon: anon::Sessions,
}

impl Primitives {
    /// State loaded from disk; `epoch` makes fencing tokens grow across restarts.
    pub fn new(limits: Limits, snapshot: Snapshot, epoch: u64) -> Primitives {
        let mut p = Primitives {
            limits,
            queues: BTreeMap::new(),
            counters: BTreeMap::new(),
            arrays: BTreeMap::new(),
            locks: Locks::new(epoch),
            semaphores: BTreeMap::new(),
            events: BTreeMap::new(),
            sync_waiters: syncs::SyncWaiters::default(),
            anon: anon::Sessions::new(),
            waiters: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_waiter: 1,
            leases: HashMap::new(),
            lease_deadlines: BinaryHeap::new(),
            next_lease: (epoch << 32) | 1,
        };
        let mut snapshot = snapshot;
        p.anon = std::mem::take(&mut snapshot.anon);
        p.restore(snapshot);
        p
    }

    /// Replaces the durable part with `snapshot` (after a failed commit), keeping locks.
    /// Waiters keep waiting; their queues' contents are as last committed. Leases
    /// granted before the failed batch are kept; those it granted are forgotten (their
    /// gets are answered with the error), so their items are waiting again.
    pub fn restore(&mut self, snapshot: Snapshot) {
        self.queues = snapshot.queues;
        self.counters = snapshot.counters;
        self.arrays = snapshot.arrays;
        self.semaphores = snapshot.semaphores;
        self.events = snapshot.events;
        for (name, conf) in &self.limits.declared_queues {
            let q = self
                .queues
                .entry(name.clone())
                .or_insert_with(|| Queue::new(conf.maxsize));
            // What corral.toml says wins over what was stored.
            q.maxsize = conf.maxsize;
            q.max_deliveries = conf.max_deliveries;
            q.dead_letter.clone_from(&conf.dead_letter);
        }
        let queues = &mut self.queues;
        self.leases.retain(|&id, lease| {
            let Some(q) = queues.get_mut(&lease.queue) else {
                return false;
            };
            let Some(at) = q.items.iter().position(|i| i.seq == lease.seq) else {
                return false;
            };
            if q.items[at].deliveries != lease.deliveries {
                return false;
            }
            let item = q.items.remove(at).expect("found above");
            q.leased.insert(item.seq, (id, item));
            true
        });
        // Waiter lists point into queues: rebuild them from the waiters themselves.
        let mut ids: Vec<u64> = self.waiters.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            match &self.waiters[&id].kind {
                WaitKind::Get { queue, .. } => {
                    let q = self
                        .queues
                        .entry(queue.clone())
                        .or_insert_with(|| Queue::new(None));
                    q.getters.push_back(id);
                }
                WaitKind::Put { queue, .. } => {
                    let q = self
                        .queues
                        .entry(queue.clone())
                        .or_insert_with(|| Queue::new(None));
                    q.putters.push_back(id);
                }
                WaitKind::Lock { .. } | WaitKind::Semaphore { .. } | WaitKind::Event { .. } => {}
            }
        }
    }

    /// Applies one operation. Its reply goes to `replies` now, or later when a waiter is
    /// served (by a later operation) or times out (in [`Primitives::expire`]).
    pub fn apply(
        &mut self,
        conn: ConnInfo,
        op: Op,
        reply: ReplyFn,
        changes: &mut Changes,
        out: &mut Outbox,
    ) {
        let mut cx = Cx { changes, out, conn };
        match op.spec().family {
            Family::Queue => self.queue_op(op, reply, &mut cx),
            Family::Counter => {
                let outcome = counters::counter_op(&mut self.counters, op, cx.changes);
                cx.out.durable(reply, outcome);
            }
            Family::Array => {
                let outcome = counters::array_op(&mut self.arrays, op, cx.changes);
                cx.out.durable(reply, outcome);
            }
            Family::Lock => self.lock_op(op, reply, &mut cx),
            Family::Semaphore | Family::Event => self.sync_op(op, reply, &mut cx),
            Family::Anon => {
                let outcome = self.anon_op(op, &mut cx);
                cx.out.volatile(reply, outcome);
            }
            Family::Daemon | Family::Units | Family::Logs | Family::Pool => cx.out.volatile(
                reply,
                Err(ErrorBody::new(
                    ErrorCode::Internal,
                    format!("`{}` is not a coordination operation", op.name()),
                )),
            ),
        }
    }

    /// Forgets a closed connection: releases its locks (granting them to the next
    /// waiters), drops its waiters, and returns the items it leased (unless detached).
    pub fn disconnect(&mut self, conn: u64, changes: &mut Changes, out: &mut Outbox) {
        self.waiters.retain(|_, w| w.conn.id != conn);
        for lock in self.locks.held_by(conn) {
            self.locks.release(&lock, conn);
            self.grant_next(&lock, out);
        }
        let mut leased: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.conn == Some(conn))
            .map(|(id, _)| *id)
            .collect();
        leased.sort_unstable();
        let mut cx = Cx {
            changes,
            out,
            conn: ConnInfo {
                id: conn,
                pid: None,
                uid: None,
            },
        };
        for id in leased {
            self.return_lease(id, &mut cx);
        }
        self.release_sessions(conn, &mut cx);
    }

    /// Whether a lease has passed its visibility timeout (there is work for a batch).
    pub fn leases_due(&self, now: Instant) -> bool {
        self.lease_deadlines
            .peek()
            .is_some_and(|Reverse((d, _))| *d <= now)
    }

    /// Returns the items whose lease passed its visibility timeout; part of a batch,
    /// since serving the getters waiting for them changes what is stored.
    pub fn expire_leases(&mut self, now: Instant, changes: &mut Changes, out: &mut Outbox) {
        let mut cx = Cx {
            changes,
            out,
            conn: ConnInfo {
                id: 0,
                pid: None,
                uid: None,
            },
        };
        while let Some(Reverse((deadline, id))) = self.lease_deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.lease_deadlines.pop();
            if self.leases.contains_key(&id) {
                tracing::debug!("lease {id} passed its visibility timeout; item returned");
                self.return_lease(id, &mut cx);
            }
        }
    }

    /// Whether `conn` holds a lock or a lease, or has a waiting request.
    pub fn holds(&self, conn: u64) -> bool {
        self.waiters.values().any(|w| w.conn.id == conn)
            || !self.locks.held_by(conn).is_empty()
            || self.leases.values().any(|l| l.conn == Some(conn))
            || self.holds_session(conn)
    }

    /// Answers every waiter whose deadline has passed with its timeout error.
    pub fn expire(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if let Some(waiter) = self.waiters.remove(&id) {
                let error = match waiter.kind {
                    WaitKind::Get { queue, .. } => ErrorBody::new(
                        ErrorCode::Empty,
                        format!("no item arrived in queue `{queue}` before the timeout"),
                    ),
                    WaitKind::Put { queue, .. } => ErrorBody::new(
                        ErrorCode::Full,
                        format!("queue `{queue}` stayed full until the timeout"),
                    ),
                    WaitKind::Lock { lock } => ErrorBody::new(
                        ErrorCode::Timeout,
                        format!("lock `{lock}` was not released before the timeout"),
                    ),
                    WaitKind::Semaphore { semaphore } => ErrorBody::new(
                        ErrorCode::Timeout,
                        format!("semaphore `{semaphore}` had no free permit before the timeout"),
                    ),
                    // An event wait that times out is an answer, not a failure.
                    WaitKind::Event { event } => {
                        let value = ok(corral_proto::EventValue {
                            set: self.events.get(&event).copied().unwrap_or(false),
                            event,
                            waiters: 0,
                        });
                        out.volatile(waiter.reply, value);
                        continue;
                    }
                };
                out.volatile(waiter.reply, Err(error));
            }
        }
    }

    /// Drops the deadlines of ended leases once they outnumber the live ones, so that
    /// acked leases of a long visibility cost no memory until their deadline.
    fn compact_lease_deadlines(&mut self) {
        if self.lease_deadlines.len() <= 2 * self.leases.len() + 1024 {
            return;
        }
        self.lease_deadlines = self
            .leases
            .iter()
            .filter_map(|(id, l)| l.deadline.map(|d| Reverse((d, *id))))
            .collect();
    }

    /// When the next waiter times out or lease passes its visibility timeout.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Drop entries of waiters already served and leases already ended, so an old
        // deadline does not cause needless wake-ups.
        while let Some(Reverse((_, id))) = self.deadlines.peek() {
            if self.waiters.contains_key(id) {
                break;
            }
            self.deadlines.pop();
        }
        while let Some(Reverse((_, id))) = self.lease_deadlines.peek() {
            if self.leases.contains_key(id) {
                break;
            }
            self.lease_deadlines.pop();
        }
        let waiter = self.deadlines.peek().map(|Reverse((d, _))| *d);
        let lease = self.lease_deadlines.peek().map(|Reverse((d, _))| *d);
        waiter.into_iter().chain(lease).min()
    }

    /// Current value of a queue's durable row, for the store (None if the queue is gone).
    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.get(name)
    }

    /// Current value of a counter, for the store.
    pub fn counter(&self, name: &str) -> Option<i64> {
        self.counters.get(name).copied()
    }

    /// Current state of a semaphore, for the store.
    pub fn semaphore(&self, name: &str) -> Option<SemaphoreState> {
        self.semaphores.get(name).copied()
    }

    /// Whether an event is set, for the store (None if it is gone).
    pub fn event(&self, name: &str) -> Option<bool> {
        self.events.get(name).copied()
    }

    /// Current value of an array, for the store.
    pub fn array(&self, name: &str) -> Option<&ArrayData> {
        self.arrays.get(name)
    }

    fn add_waiter(
        &mut self,
        conn: ConnInfo,
        kind: WaitKind,
        reply: ReplyFn,
        timeout: Option<Duration>,
    ) -> u64 {
        let id = self.next_waiter;
        self.next_waiter += 1;
        // A deadline past what Instant can hold is no deadline at all.
        if let Some(deadline) = timeout.and_then(|t| Instant::now().checked_add(t)) {
            self.deadlines.push(Reverse((deadline, id)));
        }
        self.waiters.insert(id, Waiter { conn, kind, reply });
        id
    }
}

/// What an operation may touch besides the state.
struct Cx<'a> {
    changes: &'a mut Changes,
    out: &'a mut Outbox,
    conn: ConnInfo,
}

/// Names of queues, counters, arrays and locks: 1 to 200 characters of letters, digits
/// and `_ - . @ : /`, not starting with `.` or `/`, with no `..` segment.
pub fn check_name(what: &str, name: &str) -> Result<(), ErrorBody> {
    let valid = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with(['.', '/'])
        && !name.split('/').any(|seg| seg == ".." || seg == ".")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.@:/".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!(
                "invalid {what} name `{}`: use 1 to 200 letters, digits and `_ - . @ : /`, not starting with `.` or `/`",
                name.escape_debug()
            ),
        ))
    }
}

fn timeout_of(timeout_ms: Option<u64>, block: bool) -> Option<Option<Duration>> {
    // None: do not wait. Some(None): wait forever. Some(Some(t)): wait up to t.
    match (block, timeout_ms) {
        (false, _) | (true, Some(0)) => None,
        (true, None) => Some(None),
        (true, Some(ms)) => Some(Some(Duration::from_millis(ms))),
    }
}
