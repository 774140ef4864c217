//! Acknowledged gets' leases: ack, nack, items returned and poison moved to a dead-letter queue.

use std::time::Duration;

use corral_proto::{DEFAULT_VISIBILITY_MS, ErrorBody, ErrorCode, QueueAckResult};

use super::{Item, LeaseSpec, Queue};
use crate::primitives::{Cx, ItemChange, Outcome, Primitives, check_name, ok};

impl Primitives {
    /// Moves poison items at the head of the queue (delivered `max_deliveries` times, e.g.
    /// before a restart of corrald) to the dead-letter queue, before an acknowledged get.
    pub(super) fn sweep_poison(&mut self, name: &str, cx: &mut Cx<'_>) {
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
    pub(in crate::primitives) fn return_lease(&mut self, id: u64, cx: &mut Cx<'_>) {
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

    pub(super) fn ack(&mut self, name: &str, ids: &[u64], cx: &mut Cx<'_>) -> Outcome {
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
        cx.changes.queue_stat(name);
        self.serve_putters(name, cx);
        ok(QueueAckResult { count })
    }

    pub(super) fn nack(&mut self, name: &str, ids: &[u64], cx: &mut Cx<'_>) -> Outcome {
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
}

/// The longest lease: an item is never held away from other consumers for longer.
const MAX_VISIBILITY_MS: u64 = 24 * 3600 * 1000;

/// The lease an acknowledged get asks for (`ack`, `visibility_ms`, `detach`), checked:
/// on both backends.
pub(crate) fn lease_spec(
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
