//! Anonymous sessions: the lifetime of the objects a program makes without a name
//! (`multiprocessing.Queue()`, `Value('i')`, ...).
//!
//! A session is a token the program chooses. Its holders are connections or, through
//! the socket handler, processes watched with a pidfd (each stands in as a connection
//! of its own that "closes" when the process exits). When the last holder goes, the
//! objects tied to the session are deleted, in the same batch, as by their delete
//! operations. A program killed with `kill -9` is seen like any other exit.
//!
//! Sessions are durable: their objects, and their process holders as (pid, start
//! time). At a start of corrald, the holders still alive are watched again and a
//! session none of whose holders is left is ended, so a program that died while corrald
//! was down leaves nothing behind. Connection holders do not outlive corrald.

use std::collections::BTreeMap;

use corral_proto::{AnonKind, AnonSession, ErrorBody, ErrorCode, Op};

use super::{Cx, Outcome, Primitives, check_name, counters, ok};

/// One session: who holds it and what dies with it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Session {
    /// Holders by connection id, each a process (pid, start time) or a connection (None).
    pub holders: BTreeMap<u64, Option<(u32, u64)>>,
    /// The objects tied to it.
    pub objects: Vec<(AnonKind, String)>,
}

/// Every held session, by token.
pub type Sessions = BTreeMap<String, Session>;

impl Primitives {
    pub(super) fn anon_op(&mut self, op: Op, cx: &mut Cx<'_>) -> Outcome {
        match op {
            Op::AnonHold { session, pid } => {
                check_name("session", &session)?;
                // A process holder (its pid and start time, for after a restart), or
                // this connection.
                let process = pid.zip(cx.conn.pid).and_then(|(pid, _)| {
                    let stat = crate::procstat::ProcStat::read(pid as i32)?;
                    Some((pid, stat.start_time))
                });
                let s = self.anon.entry(session.clone()).or_default();
                s.holders.insert(cx.conn.id, process);
                if process.is_some() {
                    cx.changes.anon.insert(session.clone());
                }
                ok(summary(&session, s))
            }
            Op::AnonAdd {
                session,
                kind,
                name,
            } => {
                check_name("session", &session)?;
                check_name("object", &name)?;
                let Some(s) = self.anon.get_mut(&session) else {
                    return Err(ErrorBody::new(
                        ErrorCode::NotFound,
                        format!(
                            "nobody holds anonymous session `{session}`: hold it first (anon_hold)"
                        ),
                    ));
                };
                if !s.objects.iter().any(|(k, n)| *k == kind && *n == name) {
                    s.objects.push((kind, name));
                    cx.changes.anon.insert(session.clone());
                }
                ok(summary(&session, s))
            }
            _ => unreachable!("dispatched by Primitives::apply"),
        }
    }

    /// Whether `conn` holds an anonymous session.
    pub(super) fn holds_session(&self, conn: u64) -> bool {
        self.anon.values().any(|s| s.holders.contains_key(&conn))
    }

    /// Ends `conn`'s holds; deletes the objects of each session it was the last holder of.
    pub(super) fn release_sessions(&mut self, conn: u64, cx: &mut Cx<'_>) {
        let mut ended = Vec::new();
        for (token, s) in &mut self.anon {
            if let Some(holder) = s.holders.remove(&conn) {
                if s.holders.is_empty() {
                    ended.push(token.clone());
                } else if holder.is_some() {
                    cx.changes.anon.insert(token.clone());
                }
            }
        }
        for token in ended {
            let Some(session) = self.anon.remove(&token) else {
                continue;
            };
            cx.changes.anon.insert(token.clone());
            tracing::debug!(
                "anonymous session {token} ended: deleting its {} objects",
                session.objects.len()
            );
            for (kind, name) in session.objects {
                self.delete_object(kind, name, cx);
            }
        }
    }

    fn delete_object(&mut self, kind: AnonKind, name: String, cx: &mut Cx<'_>) {
        let outcome = match kind {
            AnonKind::Queue => {
                return self.queue_op(Op::QueueDelete { queue: name }, Box::new(|_| {}), cx);
            }
            AnonKind::Counter => counters::counter_op(
                &mut self.counters,
                Op::CounterDelete { counter: name },
                cx.changes,
            ),
            AnonKind::Array => counters::array_op(
                &mut self.arrays,
                Op::ArrayDelete { array: name },
                cx.changes,
            ),
            AnonKind::Semaphore => self.semaphore_delete(&name, cx),
            AnonKind::Event => self.event_delete(&name, cx),
        };
        if let Err(e) = outcome {
            tracing::warn!("deleting an anonymous object: {e}");
        }
    }
}

impl Primitives {
    /// A session as it is now, for the store (None once it has ended).
    pub fn anon_session(&self, token: &str) -> Option<&Session> {
        self.anon.get(token)
    }
}

/// The name of a kind in the store.
pub fn kind_name(kind: AnonKind) -> &'static str {
    match kind {
        AnonKind::Queue => "queue",
        AnonKind::Counter => "counter",
        AnonKind::Array => "array",
        AnonKind::Semaphore => "semaphore",
        AnonKind::Event => "event",
    }
}

/// The kind named `name` in the store.
pub fn kind_of(name: &str) -> Option<AnonKind> {
    [
        AnonKind::Queue,
        AnonKind::Counter,
        AnonKind::Array,
        AnonKind::Semaphore,
        AnonKind::Event,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
}

fn summary(token: &str, s: &Session) -> AnonSession {
    AnonSession {
        session: token.to_owned(),
        holders: s.holders.len(),
        objects: s.objects.len(),
    }
}
