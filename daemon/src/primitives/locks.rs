//! Named locks (`multiprocessing.Lock`, across programs): leases bound to a connection,
//! granted first come first served, each grant carrying a fencing token.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use corral_proto::{ErrorBody, ErrorCode, LockGrant, LockHolder, LockInfo, LockStatusResult, Op};

use super::{
    ConnInfo, Cx, Outbox, Outcome, Primitives, ReplyFn, WaitKind, check_name, ok, timeout_of,
};

#[derive(Debug)]
struct Holder {
    conn: ConnInfo,
    token: u64,
    since: Instant,
    since_ms: i64,
}

#[derive(Debug, Default)]
struct LockState {
    holder: Option<Holder>,
    waiters: VecDeque<u64>,
}

/// Every lock that is held or waited for.
#[derive(Debug)]
pub struct Locks {
    locks: BTreeMap<String, LockState>,
    /// Tokens are `epoch << 32 | n`: the epoch grows at every start of corrald (it is
    /// stored), so tokens grow across restarts without a write per grant.
    epoch: u64,
    granted: u64,
}

impl Locks {
    /// No locks; `epoch` from the store.
    pub fn new(epoch: u64) -> Locks {
        Locks {
            locks: BTreeMap::new(),
            epoch,
            granted: 0,
        }
    }

    fn next_token(&mut self) -> u64 {
        self.granted += 1;
        (self.epoch << 32) | self.granted
    }

    /// Names of the locks `conn` holds.
    pub fn held_by(&self, conn: u64) -> Vec<String> {
        self.locks
            .iter()
            .filter(|(_, l)| l.holder.as_ref().is_some_and(|h| h.conn.id == conn))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Drops `conn`'s hold on `lock` (no-op if it does not hold it).
    pub fn release(&mut self, lock: &str, conn: u64) -> bool {
        match self.locks.get_mut(lock) {
            Some(l) if l.holder.as_ref().is_some_and(|h| h.conn.id == conn) => {
                l.holder = None;
                true
            }
            _ => false,
        }
    }

    fn grant(&mut self, lock: &str, conn: ConnInfo) -> LockGrant {
        let token = self.next_token();
        let state = self.locks.entry(lock.to_owned()).or_default();
        state.holder = Some(Holder {
            conn,
            token,
            since: Instant::now(),
            since_ms: crate::clock::now_ms(),
        });
        LockGrant {
            lock: lock.to_owned(),
            token,
        }
    }
}

impl Primitives {
    pub(super) fn lock_op(&mut self, op: Op, reply: ReplyFn, cx: &mut Cx<'_>) {
        let outcome = match op {
            Op::LockAcquire {
                lock,
                timeout_ms,
                block,
            } => return self.acquire(lock, timeout_of(timeout_ms, block), reply, cx),
            Op::LockRelease { lock } => self.release_op(&lock, cx),
            Op::LockStatus { lock } => self.lock_status(lock.as_deref()),
            _ => unreachable!("dispatched by Primitives::apply"),
        };
        cx.out.volatile(reply, outcome);
    }

    fn acquire(
        &mut self,
        lock: String,
        wait: Option<Option<std::time::Duration>>,
        reply: ReplyFn,
        cx: &mut Cx<'_>,
    ) {
        if let Err(e) = check_name("lock", &lock) {
            return cx.out.volatile(reply, Err(e));
        }
        let state = self.locks.locks.entry(lock.clone()).or_default();
        if let Some(holder) = &state.holder {
            if holder.conn.id == cx.conn.id {
                let error = ErrorBody::new(
                    ErrorCode::Failed,
                    format!(
                        "this connection already holds lock `{lock}` (locks are not re-entrant)"
                    ),
                );
                return cx.out.volatile(reply, Err(error));
            }
        }
        let queue_ahead = state.waiters.iter().any(|id| self.waiters.contains_key(id));
        if state.holder.is_none() && !queue_ahead {
            let grant = self.locks.grant(&lock, cx.conn);
            return cx.out.volatile(reply, ok(grant));
        }
        match wait {
            None => {
                let error = ErrorBody::new(
                    ErrorCode::Locked,
                    format!("lock `{lock}` is held by another client"),
                );
                cx.out.volatile(reply, Err(error));
            }
            Some(timeout) => {
                let id = self.add_waiter(
                    cx.conn,
                    WaitKind::Lock { lock: lock.clone() },
                    reply,
                    timeout,
                );
                self.locks
                    .locks
                    .get_mut(&lock)
                    .expect("created above")
                    .waiters
                    .push_back(id);
            }
        }
    }

    fn release_op(&mut self, lock: &str, cx: &mut Cx<'_>) -> Outcome {
        check_name("lock", lock)?;
        if !self.locks.release(lock, cx.conn.id) {
            return Err(ErrorBody::new(
                ErrorCode::NotHeld,
                format!("this connection does not hold lock `{lock}`"),
            ));
        }
        self.grant_next(lock, cx.out);
        ok(serde_json::json!({}))
    }

    /// Gives a free lock to its oldest live waiter, or forgets it if nobody waits.
    pub(super) fn grant_next(&mut self, lock: &str, out: &mut Outbox) {
        loop {
            let Some(state) = self.locks.locks.get_mut(lock) else {
                return;
            };
            if state.holder.is_some() {
                return;
            }
            let Some(id) = state.waiters.pop_front() else {
                self.locks.locks.remove(lock);
                return;
            };
            let Some(waiter) = self.waiters.remove(&id) else {
                continue;
            };
            let grant = self.locks.grant(lock, waiter.conn);
            out.volatile(waiter.reply, ok(grant));
        }
    }

    fn lock_status(&self, only: Option<&str>) -> Outcome {
        if let Some(name) = only {
            check_name("lock", name)?;
        }
        let info = |name: &String, state: &LockState| LockInfo {
            lock: name.clone(),
            holder: state.holder.as_ref().map(|h| LockHolder {
                pid: h.conn.pid,
                uid: h.conn.uid,
                unit: None,
                instance: None,
                since_ms: h.since_ms,
                held_ms: h.since.elapsed().as_millis() as u64,
                token: h.token,
                node: None,
            }),
            waiters: state
                .waiters
                .iter()
                .filter(|id| self.waiters.contains_key(id))
                .count(),
        };
        let locks = match only {
            Some(name) => vec![match self.locks.locks.get(name) {
                Some(state) => info(&name.to_owned(), state),
                None => info(&name.to_owned(), &LockState::default()),
            }],
            None => self.locks.locks.iter().map(|(n, s)| info(n, s)).collect(),
        };
        ok(LockStatusResult { locks })
    }
}
