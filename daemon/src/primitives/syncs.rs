//! Named semaphores and events (`multiprocessing.Semaphore`, `BoundedSemaphore`,
//! `Event`, across programs). Their values are durable like counters; their waiters are
//! in memory, woken by the operation that lets them go (no polling).
//!
//! A semaphore's permits are not bound to a connection, unlike a lock: a semaphore
//! counts (free slots, items produced) and is often released by another process than
//! the one that acquired, so a permit taken by a client that dies stays taken, as with
//! `multiprocessing` and POSIX semaphores. Use a lock for mutual exclusion that must
//! survive the death of its holder.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use corral_proto::{
    ErrorBody, ErrorCode, EventListResult, EventValue, Op, RemovedResult, SemaphoreListResult,
    SemaphoreValue,
};

use super::{Cx, Outcome, Primitives, ReplyFn, WaitKind, check_name, ok, timeout_of};

/// The durable state of one semaphore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemaphoreState {
    /// Free permits.
    pub value: u64,
    /// Most free permits, for a bounded semaphore.
    pub bound: Option<u64>,
}

/// Who waits on each semaphore and event (waiter ids; ids of waiters already answered
/// are skipped when met).
#[derive(Default)]
pub(super) struct SyncWaiters {
    semaphores: HashMap<String, VecDeque<u64>>,
    events: HashMap<String, Vec<u64>>,
}

fn sem_not_found(name: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotFound,
        format!("no semaphore `{name}`: create it first (semaphore_create with its initial value)"),
    )
}

impl Primitives {
    pub(super) fn sync_op(&mut self, op: Op, reply: ReplyFn, cx: &mut Cx<'_>) {
        let outcome = match op {
            Op::SemaphoreCreate {
                semaphore,
                value,
                bound,
            } => self.semaphore_create(semaphore, value, bound, cx),
            Op::SemaphoreAcquire {
                semaphore,
                timeout_ms,
                block,
            } => {
                return self.semaphore_acquire(semaphore, timeout_of(timeout_ms, block), reply, cx);
            }
            Op::SemaphoreRelease { semaphore } => self.semaphore_release(&semaphore, cx),
            Op::SemaphoreGet { semaphore } => check_name("semaphore", &semaphore).and_then(|()| {
                match self.semaphores.get(&semaphore) {
                    Some(_) => ok(self.semaphore_value(&semaphore)),
                    None => Err(sem_not_found(&semaphore)),
                }
            }),
            Op::SemaphoreList {} => ok(SemaphoreListResult {
                semaphores: self
                    .semaphores
                    .keys()
                    .map(|name| self.semaphore_value(name))
                    .collect(),
            }),
            Op::SemaphoreDelete { semaphore } => check_name("semaphore", &semaphore)
                .and_then(|()| self.semaphore_delete(&semaphore, cx)),
            Op::EventSet { event } => self.event_store(event, true, cx),
            Op::EventClear { event } => self.event_store(event, false, cx),
            Op::EventGet { event } => {
                check_name("event", &event).and_then(|()| ok(self.event_value(&event)))
            }
            Op::EventWait { event, timeout_ms } => {
                return self.event_wait(event, timeout_of(timeout_ms, true), reply, cx);
            }
            Op::EventList {} => {
                // Events never set or cleared but waited for are listed too.
                let waited = self
                    .sync_waiters
                    .events
                    .iter()
                    .filter(|(_, ids)| ids.iter().any(|id| self.waiters.contains_key(id)));
                let names: std::collections::BTreeSet<&String> =
                    self.events.keys().chain(waited.map(|(n, _)| n)).collect();
                ok(EventListResult {
                    events: names
                        .into_iter()
                        .map(|name| self.event_value(name))
                        .collect(),
                })
            }
            Op::EventDelete { event } => {
                check_name("event", &event).and_then(|()| self.event_delete(&event, cx))
            }
            _ => unreachable!("dispatched by Primitives::apply"),
        };
        cx.out.durable(reply, outcome);
    }

    fn live_waiters(&self, ids: Option<impl IntoIterator<Item = u64>>) -> usize {
        ids.map_or(0, |ids| {
            ids.into_iter()
                .filter(|id| self.waiters.contains_key(id))
                .count()
        })
    }

    fn semaphore_value(&self, name: &str) -> SemaphoreValue {
        let state = self
            .semaphores
            .get(name)
            .copied()
            .unwrap_or(SemaphoreState {
                value: 0,
                bound: None,
            });
        SemaphoreValue {
            semaphore: name.to_owned(),
            value: state.value,
            bound: state.bound,
            waiters: self.live_waiters(
                self.sync_waiters
                    .semaphores
                    .get(name)
                    .map(|w| w.iter().copied()),
            ),
        }
    }

    fn event_value(&self, name: &str) -> EventValue {
        EventValue {
            event: name.to_owned(),
            set: self.events.get(name).copied().unwrap_or(false),
            waiters: self.live_waiters(
                self.sync_waiters
                    .events
                    .get(name)
                    .map(|w| w.iter().copied()),
            ),
        }
    }

    fn semaphore_create(
        &mut self,
        name: String,
        value: u64,
        bound: Option<u64>,
        cx: &mut Cx<'_>,
    ) -> Outcome {
        check_name("semaphore", &name)?;
        if let Some(b) = bound {
            if value > b {
                return Err(ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!("semaphore `{name}`: the initial value {value} is past its bound {b}"),
                ));
            }
        }
        if let Some(existing) = self.semaphores.get(&name) {
            if existing.bound != bound {
                let show =
                    |b: Option<u64>| b.map_or("no bound".to_owned(), |b| format!("bound {b}"));
                return Err(ErrorBody::new(
                    ErrorCode::TypeMismatch,
                    format!(
                        "semaphore `{name}` already exists with {}; delete it first to make it with {}",
                        show(existing.bound),
                        show(bound)
                    ),
                ));
            }
            return ok(self.semaphore_value(&name));
        }
        self.semaphores
            .insert(name.clone(), SemaphoreState { value, bound });
        cx.changes.semaphores.insert(name.clone());
        ok(self.semaphore_value(&name))
    }

    fn semaphore_acquire(
        &mut self,
        name: String,
        wait: Option<Option<Duration>>,
        reply: ReplyFn,
        cx: &mut Cx<'_>,
    ) {
        if let Err(e) = check_name("semaphore", &name) {
            return cx.out.volatile(reply, Err(e));
        }
        let queue_ahead = self.live_waiters(
            self.sync_waiters
                .semaphores
                .get(&name)
                .map(|w| w.iter().copied()),
        ) > 0;
        let Some(state) = self.semaphores.get_mut(&name) else {
            return cx.out.volatile(reply, Err(sem_not_found(&name)));
        };
        if state.value > 0 && !queue_ahead {
            state.value -= 1;
            cx.changes.semaphores.insert(name.clone());
            let outcome = ok(self.semaphore_value(&name));
            return cx.out.durable(reply, outcome);
        }
        match wait {
            None => cx.out.volatile(
                reply,
                Err(ErrorBody::new(
                    ErrorCode::Locked,
                    format!("semaphore `{name}` has no free permit"),
                )),
            ),
            Some(timeout) => {
                let id = self.add_waiter(
                    cx.conn,
                    WaitKind::Semaphore {
                        semaphore: name.clone(),
                    },
                    reply,
                    timeout,
                );
                let list = self.sync_waiters.semaphores.entry(name).or_default();
                list.push_back(id);
                // Ids of waiters already answered are skipped when met; a list waited
                // on with timeouts for ever is kept small here.
                if list.len() > 64 {
                    list.retain(|id| self.waiters.contains_key(id));
                }
            }
        }
    }

    fn semaphore_release(&mut self, name: &str, cx: &mut Cx<'_>) -> Outcome {
        check_name("semaphore", name)?;
        let Some(state) = self.semaphores.get(name).copied() else {
            return Err(sem_not_found(name));
        };
        // The oldest live waiter takes the permit at once: the free count stays.
        while let Some(id) = self
            .sync_waiters
            .semaphores
            .get_mut(name)
            .and_then(VecDeque::pop_front)
        {
            if let Some(waiter) = self.waiters.remove(&id) {
                let granted = ok(self.semaphore_value(name));
                cx.out.durable(waiter.reply, granted);
                // Recorded so the release is part of the batch's commit.
                cx.changes.semaphores.insert(name.to_owned());
                return ok(self.semaphore_value(name));
            }
        }
        self.sync_waiters.semaphores.remove(name);
        if state.bound.is_some_and(|b| state.value >= b) {
            return Err(ErrorBody::new(
                ErrorCode::Overflow,
                format!(
                    "semaphore `{name}` released too many times: it has {} free permits, its bound",
                    state.value
                ),
            ));
        }
        let Some(value) = state.value.checked_add(1) else {
            return Err(ErrorBody::new(
                ErrorCode::Overflow,
                format!("semaphore `{name}` cannot hold more permits"),
            ));
        };
        self.semaphores.insert(
            name.to_owned(),
            SemaphoreState {
                value,
                bound: state.bound,
            },
        );
        cx.changes.semaphores.insert(name.to_owned());
        ok(self.semaphore_value(name))
    }

    pub(super) fn semaphore_delete(&mut self, name: &str, cx: &mut Cx<'_>) -> Outcome {
        let removed = usize::from(self.semaphores.remove(name).is_some());
        cx.changes.semaphores.insert(name.to_owned());
        for id in self
            .sync_waiters
            .semaphores
            .remove(name)
            .unwrap_or_default()
        {
            if let Some(waiter) = self.waiters.remove(&id) {
                cx.out.volatile(
                    waiter.reply,
                    Err(ErrorBody::new(
                        ErrorCode::NotFound,
                        format!("semaphore `{name}` was deleted while this client waited"),
                    )),
                );
            }
        }
        ok(RemovedResult { removed })
    }

    fn event_store(&mut self, name: String, set: bool, cx: &mut Cx<'_>) -> Outcome {
        check_name("event", &name)?;
        self.events.insert(name.clone(), set);
        cx.changes.events.insert(name.clone());
        if set {
            for id in self.sync_waiters.events.remove(&name).unwrap_or_default() {
                if let Some(waiter) = self.waiters.remove(&id) {
                    let value = ok(self.event_value(&name));
                    cx.out.durable(waiter.reply, value);
                }
            }
        }
        ok(self.event_value(&name))
    }

    fn event_wait(
        &mut self,
        name: String,
        wait: Option<Option<Duration>>,
        reply: ReplyFn,
        cx: &mut Cx<'_>,
    ) {
        if let Err(e) = check_name("event", &name) {
            return cx.out.volatile(reply, Err(e));
        }
        if self.events.get(&name).copied().unwrap_or(false) {
            let value = ok(self.event_value(&name));
            return cx.out.volatile(reply, value);
        }
        match wait {
            None => {
                let value = ok(self.event_value(&name));
                cx.out.volatile(reply, value);
            }
            Some(timeout) => {
                let id = self.add_waiter(
                    cx.conn,
                    WaitKind::Event {
                        event: name.clone(),
                    },
                    reply,
                    timeout,
                );
                let list = self.sync_waiters.events.entry(name).or_default();
                list.push(id);
                if list.len() > 64 {
                    list.retain(|id| self.waiters.contains_key(id));
                }
            }
        }
    }

    pub(super) fn event_delete(&mut self, name: &str, cx: &mut Cx<'_>) -> Outcome {
        let removed = usize::from(self.events.remove(name).is_some());
        cx.changes.events.insert(name.to_owned());
        for id in self.sync_waiters.events.remove(name).unwrap_or_default() {
            if let Some(waiter) = self.waiters.remove(&id) {
                let value = ok(self.event_value(name));
                cx.out.volatile(waiter.reply, value);
            }
        }
        ok(RemovedResult { removed })
    }
}
