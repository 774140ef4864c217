//! Named FIFO queues (`multiprocessing.Queue`, across programs and restarts).
//!
//! This file keeps the queue's types, its checks, the dispatch of queue ops, declare,
//! purge and delete; `put.rs` puts and waiting putters, `get.rs` gets and waiting getters,
//! `leases.rs` acknowledged gets' leases (ack, nack, returns, dead letters).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use corral_proto::{ErrorBody, ErrorCode, Op, QueueInfo, QueueListResult, RemovedResult};

mod get;
mod leases;
mod put;
#[cfg(test)]
mod tests;

use super::{Cx, ItemChange, Outcome, Primitives, ReplyFn, check_name, ok, timeout_of};
pub(crate) use leases::lease_spec;

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
pub(crate) struct LeaseSpec {
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

/// Queue `name`, created empty and unbounded if it does not exist (its name is copied
/// only then).
pub(super) fn queue_of<'a>(queues: &'a mut BTreeMap<String, Queue>, name: &str) -> &'a mut Queue {
    if !queues.contains_key(name) {
        queues.insert(name.to_owned(), Queue::new(None));
    }
    queues.get_mut(name).expect("inserted above")
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
        cx.changes.queue_stat(name);
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
