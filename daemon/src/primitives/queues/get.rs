//! Getting items: a get, and getters waiting for items.

use std::time::Instant;

use corral_proto::{ErrorBody, ErrorCode, Lease, MAX_GET_BYTES};

use super::{LeaseSpec, queue_of};
use crate::primitives::{
    Cx, ItemChange, LeaseRecord, Outcome, Primitives, Reply, ReplyFn, WaitKind, check_name, to_json,
};

impl Primitives {
    pub(super) fn get(
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
        queue_of(&mut self.queues, &name);
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
            cx.changes.queue_stat(name);
            return GetReply {
                items,
                leases: Vec::new(),
            }
            .into_reply();
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
        GetReply { items, leases }.into_reply()
    }

    /// Hands items to waiting getters, oldest waiter first.
    pub(super) fn serve_getters(&mut self, name: &str, cx: &mut Cx<'_>) {
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
}

/// [`corral_proto::QueueGetResult`] written with each item as its stored JSON text, instead of parsing
/// every item into a value and serializing it again.
struct GetReply {
    items: Vec<String>,
    leases: Vec<Lease>,
}

impl GetReply {
    /// The reply. Its leases (numbers only) serialize; were they not to, the items
    /// taken stay leased, so they are delivered again when the lease ends.
    fn into_reply(self) -> Outcome {
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
            json.push_str(&to_json(&self.leases)?);
        }
        json.push('}');
        Ok(Reply::from_json(json))
    }
}

/// A stored item as JSON for a reply. Stored items were serialized from valid JSON
/// values (compact: no newline, which would end the reply's frame); anything else (a
/// damaged row) goes out as a JSON string: a `Value`'s `Display`, which cannot fail for
/// a string, so that no item already taken from its queue is lost to an error.
fn raw_item(text: String) -> String {
    if !text.contains('\n') && serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
        text
    } else {
        serde_json::Value::String(text).to_string()
    }
}
