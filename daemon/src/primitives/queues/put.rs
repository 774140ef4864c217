//! Putting items: a put, and putters waiting for room.

use corral_proto::{ErrorBody, ErrorCode, QueuePutResult};

use super::{Item, queue_of};
use crate::primitives::{Cx, ItemChange, Primitives, ReplyFn, WaitKind, check_name, ok};

impl Primitives {
    pub(super) fn put(
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
        let q = queue_of(&mut self.queues, &name);
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

    pub(super) fn push_item(&mut self, name: &str, text: String, cx: &mut Cx<'_>) -> usize {
        let q = self.queues.get_mut(name).expect("queue exists");
        let seq = q.next_seq;
        q.next_seq += 1;
        q.put_total += 1;
        cx.changes.queue_items.push(ItemChange::Insert {
            queue: name.to_owned(),
            seq,
            value: text.clone(),
        });
        cx.changes.queue_stat(name);
        q.items.push_back(Item {
            seq,
            value: text,
            deliveries: 0,
        });
        q.items.len()
    }

    /// Lets waiting putters in while there is room, oldest waiter first.
    pub(super) fn serve_putters(&mut self, name: &str, cx: &mut Cx<'_>) {
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
}
