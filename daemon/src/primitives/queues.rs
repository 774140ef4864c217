//! Named FIFO queues (`multiprocessing.Queue`, across programs and restarts).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use corral_proto::{
    DEFAULT_VISIBILITY_MS, ErrorBody, ErrorCode, Lease, MAX_GET_BYTES, Op, QueueAckResult,
    QueueInfo, QueueListResult, QueuePutResult, RemovedResult,
};

use super::{
    Cx, ItemChange, LeaseRecord, Outcome, Primitives, ReplyFn, WaitKind, check_name, ok, timeout_of,
};

/// One stored item of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its position: items are handed out in this order.
    pub seq: i64,
    /// The item, serialized JSON.
    pub value: String,
    /// Deliveries by acknowledged gets so far.
    pub deliveries: u32,
}

/// How an acknowledged get leases what it takes.
#[derive(Debug, Clone, Copy)]
pub(super) struct LeaseSpec {
    /// How long until the item goes back.
    pub visibility: Duration,
    /// Whether the lease outlives the connection.
    pub detach: bool,
}

/// One queue: its items and who waits on it.
#[derive(Debug, Default)]
pub struct Queue {
    /// Items waiting, in position order (oldest first).
    pub items: VecDeque<Item>,
    /// Items handed out by acknowledged gets and not yet acked, by position, with
    /// their lease id. They are still stored.
    pub leased: BTreeMap<i64, (u64, Item)>,
    /// Capacity (waiting plus in-flight items), if bounded.
    pub maxsize: Option<usize>,
    /// Deliveries after which an item returned unacked goes to the dead-letter queue.
    pub max_deliveries: Option<u32>,
    /// The dead-letter queue, if not `NAME.dead`.
    pub dead_letter: Option<String>,
    /// Items ever put.
    pub put_total: u64,
    /// Items ever taken.
    pub got_total: u64,
    /// Position of the next item.
    pub next_seq: i64,
    /// Waiting getters (waiter ids), first come first served.
    pub(super) getters: VecDeque<u64>,
    /// Waiting putters (waiter ids).
    pub(super) putters: VecDeque<u64>,
}

impl Queue {
    /// An empty queue.
    pub fn new(maxsize: Option<usize>) -> Queue {
        Queue {
            maxsize,
            next_seq: 1,
            ..Queue::default()
        }
    }

    fn full(&self) -> bool {
        self.maxsize
            .is_some_and(|m| self.items.len() + self.leased.len() >= m)
    }

    /// Puts an item back among the waiting ones, in position order. Returned items are
    /// older than most waiting ones, so this is usually at or near the head.
    pub(super) fn insert_waiting(&mut self, item: Item) {
        let at = self.items.partition_point(|i| i.seq < item.seq);
        self.items.insert(at, item);
    }

    /// Whether an item delivered this often is poison.
    fn is_poison(&self, item: &Item) -> bool {
        self.max_deliveries.is_some_and(|m| item.deliveries >= m)
    }

    fn dead_letter_name(&self, name: &str) -> String {
        self.dead_letter
            .clone()
            .unwrap_or_else(|| format!("{name}.dead"))
    }

    fn info(
        &self,
        name: &str,
        waiters: &std::collections::HashMap<u64, super::Waiter>,
    ) -> QueueInfo {
        QueueInfo {
            queue: name.to_owned(),
            depth: self.items.len(),
            in_flight: self.leased.len(),
            maxsize: self.maxsize,
            max_deliveries: self.max_deliveries,
            dead_letter: self.max_deliveries.map(|_| self.dead_letter_name(name)),
            put_total: self.put_total,
            got_total: self.got_total,
            waiting_getters: self
                .getters
                .iter()
                .filter(|id| waiters.contains_key(id))
                .count(),
            waiting_putters: self
                .putters
                .iter()
                .filter(|id| waiters.contains_key(id))
                .count(),
        }
    }
}

fn check_maxsize(maxsize: Option<usize>) -> Result<(), ErrorBody> {
    if maxsize == Some(0) {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            "maxsize must be at least 1; leave it out for an unbounded queue",
        ));
    }
    Ok(())
}

/// Checks the dead-letter settings of queue `name`.
pub fn check_dead_letter(
    name: &str,
    max_deliveries: Option<u32>,
    dead_letter: Option<&str>,
) -> Result<(), ErrorBody> {
    if max_deliveries == Some(0) {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            "max_deliveries must be at least 1; leave it out to redeliver forever",
        ));
    }
    if let Some(dead) = dead_letter {
        check_name("dead-letter queue", dead)?;
        if dead == name {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("queue `{name}` cannot be its own dead-letter queue; name another queue"),
            ));
        }
    }
    Ok(())
}

impl Primitives {
    pub(super) fn queue_op(&mut self, op: Op, reply: ReplyFn, cx: &mut Cx<'_>) {
        let outcome = match op {
            Op::QueueDeclare {
                queue,
                maxsize,
                max_deliveries,
                dead_letter,
            } => self.declare(queue, maxsize, max_deliveries, dead_letter, cx),
            Op::QueuePut {
                queue,
                value,
                timeout_ms,
                block,
            } => return self.put(queue, value, timeout_of(timeout_ms, block), reply, cx),
            Op::QueueGet {
                queue,
                count,
                timeout_ms,
                block,
                ack,
                visibility_ms,
                detach,
            } => {
                let lease = match lease_spec(ack, visibility_ms, detach) {
                    Ok(lease) => lease,
                    Err(e) => return cx.out.durable(reply, Err(e)),
                };
                let wait = timeout_of(timeout_ms, block);
                return self.get(queue, count, wait, lease, reply, cx);
            }
            Op::QueueAck { queue, ids } => self.ack(&queue, &ids, cx),
            Op::QueueNack { queue, ids } => self.nack(&queue, &ids, cx),
            Op::QueueLen { queue } => check_name("queue", &queue)
                .map(|()| match self.queues.get(&queue) {
                    Some(q) => q.info(&queue, &self.waiters),
                    None => Queue::new(None).info(&queue, &self.waiters),
                })
                .and_then(ok),
            Op::QueueList {} => ok(QueueListResult {
                queues: self
                    .queues
                    .iter()
                    .map(|(name, q)| q.info(name, &self.waiters))
                    .collect(),
            }),
            Op::QueuePurge { queue } => self.purge(&queue, cx),
            Op::QueueDelete { queue } => self.delete_queue(&queue, cx),
            _ => unreachable!("dispatched by Primitives::apply"),
        };
        cx.out.durable(reply, outcome);
    }

    fn declare(
        &mut self,
        name: String,
        maxsize: Option<usize>,
        max_deliveries: Option<u32>,
        dead_letter: Option<String>,
        cx: &mut Cx<'_>,
    ) -> Outcome {
        check_name("queue", &name)?;
        check_maxsize(maxsize)?;
        check_dead_letter(&name, max_deliveries, dead_letter.as_deref())?;
        let q = self
            .queues
            .entry(name.clone())
            .or_insert_with(|| Queue::new(maxsize));
        q.maxsize = maxsize;
        q.max_deliveries = max_deliveries;
        q.dead_letter = dead_letter;
        cx.changes.queues.insert(name.clone());
        let info = q.info(&name, &self.waiters);
        // A larger capacity may make room for waiting putters.
        self.serve_putters(&name, cx);
        ok(info)
    }

    fn put(
        &mut self,
        name: String,
        value: serde_json::Value,
        wait: Option<Option<std::time::Duration>>,
        reply: ReplyFn,
        cx: &mut Cx<'_>,
    ) {
        if let Err(e) = check_name("queue", &name) {
            return cx.out.durable(reply, Err(e));
        }
        let text = value.to_string();
        if text.len() > self.limits.max_item_bytes {
            let error = ErrorBody::new(
                ErrorCode::TooLarge,
                format!(
                    "item is {} bytes; queue items are limited to {} bytes (max_item_bytes)",
                    text.len(),
                    self.limits.max_item_bytes
                ),
            );
            return cx.out.durable(reply, Err(error));
        }
        let q = self
            .queues
            .entry(name.clone())
            .or_insert_with(|| Queue::new(None));
        // FIFO fairness: a putter does not overtake putters already waiting for room.
        let must_wait = q.full() || q.putters.iter().any(|id| self.waiters.contains_key(id));
        if !must_wait {
            let depth = self.push_item(&name, text, cx);
            cx.out.durable(reply, ok(QueuePutResult { depth }));
            self.serve_getters(&name, cx);
            return;
        }
        match wait {
            None => {
                let error = ErrorBody::new(
                    ErrorCode::Full,
                    format!("queue `{name}` is full ({} items)", q.items.len()),
                );
                cx.out.durable(reply, Err(error));
            }
            Some(timeout) => {
                let id = self.add_waiter(
                    cx.conn,
                    WaitKind::Put {
                        queue: name.clone(),
                        value: text,
                    },
                    reply,
                    timeout,
                );
                self.queues
                    .get_mut(&name)
                    .expect("created above")
                    .putters
                    .push_back(id);
            }
        }
    }

    fn push_item(&mut self, name: &str, text: String, cx: &mut Cx<'_>) -> usize {
        let q = self.queues.get_mut(name).expect("queue exists");
        let seq = q.next_seq;
        q.next_seq += 1;
        q.put_total += 1;
        cx.changes.queue_items.push(ItemChange::Insert {
            queue: name.to_owned(),
            seq,
            value: text.clone(),
        });
        cx.changes.queue_stats.insert(name.to_owned());
        q.items.push_back(Item {
            seq,
            value: text,
            deliveries: 0,
        });
        q.items.len()
    }

    fn get(
        &mut self,
        name: String,
        count: usize,
        wait: Option<Option<std::time::Duration>>,
        lease: Option<LeaseSpec>,
        reply: ReplyFn,
        cx: &mut Cx<'_>,
    ) {
        if let Err(e) = check_name("queue", &name) {
            return cx.out.durable(reply, Err(e));
        }
        if count == 0 {
            let error = ErrorBody::new(ErrorCode::BadRequest, "count must be at least 1");
            return cx.out.durable(reply, Err(error));
        }
        self.queues
            .entry(name.clone())
            .or_insert_with(|| Queue::new(None));
        if lease.is_some() {
            self.sweep_poison(&name, cx);
            self.serve_putters(&name, cx);
        }
        let q = &self.queues[&name];
        let getters_waiting = q.getters.iter().any(|id| self.waiters.contains_key(id));
        if !q.items.is_empty() && !getters_waiting {
            let conn = cx.conn.id;
            let items = self.take_items(&name, count, lease, conn, cx);
            cx.out.durable(reply, items);
            self.serve_putters(&name, cx);
            return;
        }
        match wait {
            None => {
                let error = ErrorBody::new(ErrorCode::Empty, format!("queue `{name}` is empty"));
                cx.out.durable(reply, Err(error));
            }
            Some(timeout) => {
                let id = self.add_waiter(
                    cx.conn,
                    WaitKind::Get {
                        queue: name.clone(),
                        count,
                        lease,
                    },
                    reply,
                    timeout,
                );
                self.queues
                    .get_mut(&name)
                    .expect("created above")
                    .getters
                    .push_back(id);
            }
        }
    }

    fn take_items(
        &mut self,
        name: &str,
        count: usize,
        lease: Option<LeaseSpec>,
        conn: u64,
        cx: &mut Cx<'_>,
    ) -> Outcome {
        let q = self.queues.get_mut(name).expect("queue exists");
        // One reply stays small: a large `count` gets the items that fit in
        // MAX_GET_BYTES (always at least one); the client asks again for the rest.
        let mut bytes = 0;
        let n = q
            .items
            .iter()
            .take(count)
            .take_while(|item| {
                bytes += item.value.len();
                bytes == item.value.len() || bytes <= MAX_GET_BYTES
            })
            .count();
        let mut items = Vec::with_capacity(n);
        let Some(spec) = lease else {
            let mut last = 0;
            // A range delete is one statement; with items in flight among them, each
            // taken item is deleted by its position instead.
            let ranged = q.leased.is_empty();
            for item in q.items.drain(..n) {
                last = item.seq;
                if !ranged {
                    cx.changes.queue_items.push(ItemChange::Delete {
                        queue: name.to_owned(),
                        seq: item.seq,
                    });
                }
                items.push(raw_item(item.value));
            }
            q.got_total += n as u64;
            if ranged {
                cx.changes.queue_items.push(ItemChange::Remove {
                    queue: name.to_owned(),
                    up_to: last,
                });
            }
            cx.changes.queue_stats.insert(name.to_owned());
            return Ok(GetReply {
                items,
                leases: Vec::new(),
            }
            .into_reply());
        };
        let deadline = Instant::now().checked_add(spec.visibility);
        let mut leases = Vec::with_capacity(n);
        for mut item in q.items.drain(..n) {
            item.deliveries = item.deliveries.saturating_add(1);
            let id = self.next_lease;
            self.next_lease += 1;
            cx.changes.queue_items.push(ItemChange::Delivered {
                queue: name.to_owned(),
                seq: item.seq,
                deliveries: item.deliveries,
            });
            leases.push(Lease {
                id,
                deliveries: item.deliveries,
            });
            items.push(raw_item(item.value.clone()));
            self.leases.insert(
                id,
                LeaseRecord {
                    queue: name.to_owned(),
                    seq: item.seq,
                    deliveries: item.deliveries,
                    conn: (!spec.detach).then_some(conn),
                    deadline,
                },
            );
            if let Some(deadline) = deadline {
                self.lease_deadlines.push(std::cmp::Reverse((deadline, id)));
            }
            q.leased.insert(item.seq, (id, item));
        }
        self.compact_lease_deadlines();
        Ok(GetReply { items, leases }.into_reply())
    }

    /// Moves poison items at the head of the queue (delivered `max_deliveries` times, e.g.
    /// before a restart of corrald) to the dead-letter queue, before an acknowledged get.
    fn sweep_poison(&mut self, name: &str, cx: &mut Cx<'_>) {
        loop {
            let Some(q) = self.queues.get_mut(name) else {
                return;
            };
            let Some(head) = q.items.front() else {
                return;
            };
            if !q.is_poison(head) {
                return;
            }
            let item = q.items.pop_front().expect("checked above");
            self.dead_letter(name, item, cx);
        }
    }

    /// Moves one item (taken out of `name` by the caller) to `name`'s dead-letter queue.
    fn dead_letter(&mut self, name: &str, item: Item, cx: &mut Cx<'_>) {
        let dead = self.queues[name].dead_letter_name(name);
        tracing::warn!(
            "queue `{name}`: item {} was delivered {} times without an ack; moved to `{dead}`",
            item.seq,
            item.deliveries
        );
        cx.changes.queue_items.push(ItemChange::Delete {
            queue: name.to_owned(),
            seq: item.seq,
        });
        if !self.queues.contains_key(&dead) {
            self.queues.insert(dead.clone(), Queue::new(None));
            cx.changes.queues.insert(dead.clone());
        }
        // The dead-letter queue takes the item even when full: poison is never dropped.
        self.push_item(&dead, item.value, cx);
        self.serve_getters(&dead, cx);
    }

    /// Ends a lease without an ack: its item goes back among the waiting items (or to
    /// the dead-letter queue), and waiting getters are served.
    pub(super) fn return_lease(&mut self, id: u64, cx: &mut Cx<'_>) {
        let Some(record) = self.leases.remove(&id) else {
            return;
        };
        let Some(q) = self.queues.get_mut(&record.queue) else {
            return;
        };
        let Some((_, item)) = q.leased.remove(&record.seq) else {
            return;
        };
        if q.is_poison(&item) {
            self.dead_letter(&record.queue, item, cx);
            // It no longer counts toward the capacity.
            self.serve_putters(&record.queue, cx);
        } else {
            q.insert_waiting(item);
        }
        self.serve_getters(&record.queue, cx);
    }

    /// Checks that every id is a lease held on queue `name`.
    fn check_leases(&self, name: &str, ids: &[u64]) -> Result<(), ErrorBody> {
        check_name("queue", name)?;
        if ids.is_empty() {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                "give at least one lease id (from an acknowledged get)",
            ));
        }
        let stale: Vec<String> = ids
            .iter()
            .filter(|id| self.leases.get(id).is_none_or(|l| l.queue != name))
            .map(u64::to_string)
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        Err(ErrorBody::new(
            ErrorCode::NotHeld,
            format!(
                "lease {} of queue `{name}` is not held: it was acked or nacked already, its visibility timeout passed or its connection closed (the item was returned for another delivery), or it is from before corrald restarted; nothing was changed",
                stale.join(", ")
            ),
        ))
    }

    fn ack(&mut self, name: &str, ids: &[u64], cx: &mut Cx<'_>) -> Outcome {
        self.check_leases(name, ids)?;
        let q = self.queues.get_mut(name).expect("checked by check_leases");
        let mut count = 0;
        for id in ids {
            let Some(record) = self.leases.remove(id) else {
                continue; // the same id twice
            };
            q.leased.remove(&record.seq);
            q.got_total += 1;
            count += 1;
            cx.changes.queue_items.push(ItemChange::Delete {
                queue: name.to_owned(),
                seq: record.seq,
            });
        }
        cx.changes.queue_stats.insert(name.to_owned());
        self.serve_putters(name, cx);
        ok(QueueAckResult { count })
    }

    fn nack(&mut self, name: &str, ids: &[u64], cx: &mut Cx<'_>) -> Outcome {
        self.check_leases(name, ids)?;
        let mut count = 0;
        for id in ids {
            if self.leases.contains_key(id) {
                self.return_lease(*id, cx);
                count += 1;
            }
        }
        ok(QueueAckResult { count })
    }

    /// Hands items to waiting getters, oldest waiter first.
    fn serve_getters(&mut self, name: &str, cx: &mut Cx<'_>) {
        loop {
            let Some(q) = self.queues.get_mut(name) else {
                return;
            };
            if q.items.is_empty() {
                return;
            }
            let Some(id) = q.getters.pop_front() else {
                return;
            };
            let Some(waiter) = self.waiters.remove(&id) else {
                continue;
            };
            let WaitKind::Get { count, lease, .. } = waiter.kind else {
                continue;
            };
            if lease.is_some() {
                self.sweep_poison(name, cx);
                let q = self.queues.get_mut(name).expect("swept, not removed");
                if q.items.is_empty() {
                    // Only poison was waiting: this getter goes on waiting, first in line.
                    q.getters.push_front(id);
                    self.waiters.insert(id, waiter);
                    return;
                }
            }
            let items = self.take_items(name, count, lease, waiter.conn.id, cx);
            cx.out.durable(waiter.reply, items);
            self.serve_putters(name, cx);
        }
    }

    /// Lets waiting putters in while there is room, oldest waiter first.
    fn serve_putters(&mut self, name: &str, cx: &mut Cx<'_>) {
        loop {
            let Some(q) = self.queues.get_mut(name) else {
                return;
            };
            if q.full() {
                return;
            }
            let Some(id) = q.putters.pop_front() else {
                return;
            };
            let Some(waiter) = self.waiters.remove(&id) else {
                continue;
            };
            let WaitKind::Put { value, .. } = waiter.kind else {
                continue;
            };
            let depth = self.push_item(name, value, cx);
            cx.out.durable(waiter.reply, ok(QueuePutResult { depth }));
            self.serve_getters(name, cx);
        }
    }

    fn purge(&mut self, name: &str, cx: &mut Cx<'_>) -> Outcome {
        check_name("queue", name)?;
        let Some(q) = self.queues.get_mut(name) else {
            return ok(RemovedResult { removed: 0 });
        };
        let removed = q.items.len() + q.leased.len();
        q.items.clear();
        for (id, _) in std::mem::take(&mut q.leased).into_values() {
            self.leases.remove(&id);
        }
        cx.changes.queue_items.push(ItemChange::Clear {
            queue: name.to_owned(),
        });
        cx.changes.queue_stats.insert(name.to_owned());
        self.serve_putters(name, cx);
        ok(RemovedResult { removed })
    }

    fn delete_queue(&mut self, name: &str, cx: &mut Cx<'_>) -> Outcome {
        check_name("queue", name)?;
        let Some(q) = self.queues.remove(name) else {
            return ok(RemovedResult { removed: 0 });
        };
        for (id, _) in q.leased.values() {
            self.leases.remove(id);
        }
        for id in q.getters.iter().chain(&q.putters) {
            if let Some(waiter) = self.waiters.remove(id) {
                let error =
                    ErrorBody::new(ErrorCode::NotFound, format!("queue `{name}` was deleted"));
                cx.out.durable(waiter.reply, Err(error));
            }
        }
        cx.changes.queue_items.push(ItemChange::Clear {
            queue: name.to_owned(),
        });
        cx.changes.queues.insert(name.to_owned());
        ok(RemovedResult { removed: 1 })
    }
}

/// The longest lease: an item is never held away from other consumers for longer.
const MAX_VISIBILITY_MS: u64 = 24 * 3600 * 1000;

/// [`corral_proto::QueueGetResult`] written with each item as its stored JSON text, instead of parsing
/// every item into a value and serializing it again.
struct GetReply {
    items: Vec<String>,
    leases: Vec<Lease>,
}

impl GetReply {
    fn into_reply(self) -> super::Reply {
        let mut json =
            String::with_capacity(self.items.iter().map(|i| i.len() + 1).sum::<usize>() + 16);
        json.push_str("{\"items\":[");
        for (n, item) in self.items.iter().enumerate() {
            if n > 0 {
                json.push(',');
            }
            json.push_str(item);
        }
        json.push(']');
        if !self.leases.is_empty() {
            json.push_str(",\"leases\":");
            json.push_str(&serde_json::to_string(&self.leases).expect("leases serialize"));
        }
        json.push('}');
        super::Reply::from_json(json)
    }
}

/// A stored item as JSON for a reply. Stored items were serialized from valid JSON
/// values (compact: no newline, which would end the reply's frame); anything else (a
/// damaged row) goes out as a JSON string.
fn raw_item(text: String) -> String {
    if !text.contains('\n') && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
        text
    } else {
        serde_json::to_string(&text).expect("a string serializes")
    }
}

fn lease_spec(
    ack: bool,
    visibility_ms: Option<u64>,
    detach: bool,
) -> Result<Option<LeaseSpec>, ErrorBody> {
    if !ack {
        if visibility_ms.is_some() || detach {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                "visibility_ms and detach apply to acknowledged gets only: add \"ack\": true",
            ));
        }
        return Ok(None);
    }
    let ms = visibility_ms.unwrap_or(DEFAULT_VISIBILITY_MS);
    if ms == 0 || ms > MAX_VISIBILITY_MS {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!(
                "visibility_ms must be from 1 to {MAX_VISIBILITY_MS} (a day): how long a consumer has to ack before the item is delivered again"
            ),
        ));
    }
    Ok(Some(LeaseSpec {
        visibility: Duration::from_millis(ms),
        detach,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::primitives::{Changes, ConnInfo, Limits, Outbox, Snapshot};

    const CONN: ConnInfo = ConnInfo {
        id: 1,
        pid: None,
        uid: None,
    };

    fn snapshot(deliveries: &[u32]) -> Snapshot {
        let mut q = Queue::new(None);
        for (i, &d) in deliveries.iter().enumerate() {
            q.items.push_back(Item {
                seq: i as i64 + 1,
                value: format!("{i}"),
                deliveries: d,
            });
        }
        q.next_seq = deliveries.len() as i64 + 1;
        let mut s = Snapshot::default();
        s.queues.insert("q".into(), q);
        s
    }

    fn prims(deliveries: &[u32]) -> Primitives {
        let limits = Limits {
            max_item_bytes: 1 << 16,
            declared_queues: BTreeMap::new(),
        };
        Primitives::new(limits, snapshot(deliveries), 1)
    }

    /// Applies `op`; returns its reply (every reply of the batch is sent, as after a commit).
    fn run(p: &mut Primitives, op: Op) -> Outcome {
        let slot = Arc::new(Mutex::new(None));
        let s = slot.clone();
        let mut changes = Changes::default();
        let mut out = Outbox::default();
        p.apply(
            CONN,
            op,
            Box::new(move |o| *s.lock().unwrap() = Some(o)),
            &mut changes,
            &mut out,
        );
        for (reply, outcome, _) in out.replies {
            reply(outcome);
        }
        slot.lock().unwrap().take().expect("answered")
    }

    fn get_ack(p: &mut Primitives) -> Outcome {
        run(
            p,
            Op::QueueGet {
                queue: "q".into(),
                count: 1,
                timeout_ms: None,
                block: false,
                ack: true,
                visibility_ms: None,
                detach: false,
            },
        )
    }

    #[test]
    fn a_failed_commit_keeps_earlier_leases_and_forgets_its_own() {
        let mut p = prims(&[0, 0]);
        let first = get_ack(&mut p).unwrap().to_value();
        let first_id = first["leases"][0]["id"].as_u64().unwrap();
        // The first lease was committed (deliveries 1 on disk); the second get's batch fails.
        let _second = get_ack(&mut p).unwrap();
        p.restore(snapshot(&[1, 0]));
        let q = &p.queues["q"];
        assert_eq!(q.leased.len(), 1, "the committed lease is kept");
        assert_eq!(q.items.len(), 1, "the rolled-back one is waiting again");
        assert_eq!(q.items[0].seq, 2);
        let acked = run(
            &mut p,
            Op::QueueAck {
                queue: "q".into(),
                ids: vec![first_id],
            },
        );
        assert_eq!(acked.unwrap().to_value()["count"], 1);
    }

    #[test]
    fn deadlines_of_acked_leases_do_not_pile_up() {
        let mut p = prims(&[]);
        for i in 0..5000 {
            run(
                &mut p,
                Op::QueuePut {
                    queue: "q".into(),
                    value: i.into(),
                    timeout_ms: None,
                    block: true,
                },
            )
            .unwrap();
            let id = get_ack(&mut p).unwrap().to_value()["leases"][0]["id"]
                .as_u64()
                .unwrap();
            run(
                &mut p,
                Op::QueueAck {
                    queue: "q".into(),
                    ids: vec![id],
                },
            )
            .unwrap();
        }
        assert!(p.leases.is_empty());
        assert!(
            p.lease_deadlines.len() <= 1025,
            "{} deadlines kept for no lease",
            p.lease_deadlines.len()
        );
    }

    #[test]
    fn returned_items_go_back_in_position_order_and_poison_is_swept() {
        let mut p = prims(&[0, 0, 5]);
        p.queues.get_mut("q").unwrap().max_deliveries = Some(5);
        let a = get_ack(&mut p).unwrap().to_value()["leases"][0]["id"]
            .as_u64()
            .unwrap();
        let b = get_ack(&mut p).unwrap().to_value()["leases"][0]["id"]
            .as_u64()
            .unwrap();
        for id in [b, a] {
            run(
                &mut p,
                Op::QueueNack {
                    queue: "q".into(),
                    ids: vec![id],
                },
            )
            .unwrap();
        }
        let seqs: Vec<i64> = p.queues["q"].items.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        get_ack(&mut p).unwrap();
        get_ack(&mut p).unwrap();
        // Item 3 was delivered 5 times before (a restart): it goes to q.dead, not out.
        let empty = get_ack(&mut p).unwrap_err();
        assert_eq!(empty.code, ErrorCode::Empty);
        assert_eq!(p.queues["q.dead"].items.len(), 1);
    }
}
