//! Named FIFO queues (`multiprocessing.Queue`, across programs and restarts).

use std::collections::VecDeque;

use corral_proto::{
    ErrorBody, ErrorCode, MAX_GET_BYTES, Op, QueueGetResult, QueueInfo, QueueListResult,
    QueuePutResult, RemovedResult,
};

use super::{Cx, ItemChange, Outcome, Primitives, ReplyFn, WaitKind, check_name, ok, timeout_of};

/// One queue: its items and who waits on it.
#[derive(Debug, Default)]
pub struct Queue {
    /// Items as serialized JSON, oldest first, with their positions.
    pub items: VecDeque<(i64, String)>,
    /// Capacity, if bounded.
    pub maxsize: Option<usize>,
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
        self.maxsize.is_some_and(|m| self.items.len() >= m)
    }

    fn info(
        &self,
        name: &str,
        waiters: &std::collections::HashMap<u64, super::Waiter>,
    ) -> QueueInfo {
        QueueInfo {
            queue: name.to_owned(),
            depth: self.items.len(),
            maxsize: self.maxsize,
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

impl Primitives {
    pub(super) fn queue_op(&mut self, op: Op, reply: ReplyFn, cx: &mut Cx<'_>) {
        let outcome = match op {
            Op::QueueDeclare { queue, maxsize } => self.declare(queue, maxsize, cx),
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
            } => return self.get(queue, count, timeout_of(timeout_ms, block), reply, cx),
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

    fn declare(&mut self, name: String, maxsize: Option<usize>, cx: &mut Cx<'_>) -> Outcome {
        check_name("queue", &name)?;
        check_maxsize(maxsize)?;
        let q = self
            .queues
            .entry(name.clone())
            .or_insert_with(|| Queue::new(maxsize));
        q.maxsize = maxsize;
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
        q.items.push_back((seq, text));
        q.items.len()
    }

    fn get(
        &mut self,
        name: String,
        count: usize,
        wait: Option<Option<std::time::Duration>>,
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
        let q = self
            .queues
            .entry(name.clone())
            .or_insert_with(|| Queue::new(None));
        let getters_waiting = q.getters.iter().any(|id| self.waiters.contains_key(id));
        if !q.items.is_empty() && !getters_waiting {
            let items = self.take_items(&name, count, cx);
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

    fn take_items(&mut self, name: &str, count: usize, cx: &mut Cx<'_>) -> Outcome {
        let q = self.queues.get_mut(name).expect("queue exists");
        // One reply stays small: a large `count` gets the items that fit in
        // MAX_GET_BYTES (always at least one); the client asks again for the rest.
        let mut bytes = 0;
        let n = q
            .items
            .iter()
            .take(count)
            .take_while(|(_, text)| {
                bytes += text.len();
                bytes == text.len() || bytes <= MAX_GET_BYTES
            })
            .count();
        let mut items = Vec::with_capacity(n);
        let mut last = 0;
        for (seq, text) in q.items.drain(..n) {
            last = seq;
            // Stored items were serialized from valid JSON values.
            items.push(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
        }
        q.got_total += n as u64;
        cx.changes.queue_items.push(ItemChange::Remove {
            queue: name.to_owned(),
            up_to: last,
        });
        cx.changes.queue_stats.insert(name.to_owned());
        ok(QueueGetResult { items })
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
            let WaitKind::Get { count, .. } = waiter.kind else {
                continue;
            };
            let items = self.take_items(name, count, cx);
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
        let removed = q.items.len();
        q.items.clear();
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
