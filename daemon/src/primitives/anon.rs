//! Anonymous sessions: the lifetime of the objects a program makes without a name
//! (`multiprocessing.Queue()`, `Value('i')`, ...).
//!
//! A session is a token the program chooses. Its holders are connections or, through
//! the socket handler, processes watched with a pidfd (each stands in as a connection
//! of its own that "closes" when the process exits). When the last holder goes, the
//! objects tied to the session are deleted, in the same batch, as by their delete
//! operations. A program killed with `kill -9` is seen like any other exit.

use std::collections::{BTreeMap, BTreeSet};

use corral_proto::{AnonKind, AnonSession, ErrorBody, ErrorCode, Op};

use super::{Cx, Outcome, Primitives, check_name, counters, ok};

/// One session: who holds it and what dies with it.
#[derive(Debug, Default)]
pub(super) struct Session {
    holders: BTreeSet<u64>,
    objects: Vec<(AnonKind, String)>,
}

/// Every held session, by token.
pub(super) type Sessions = BTreeMap<String, Session>;

impl Primitives {
    pub(super) fn anon_op(&mut self, op: Op, cx: &mut Cx<'_>) -> Outcome {
        match op {
            Op::AnonHold { session, .. } => {
                check_name("session", &session)?;
                let s = self.anon.entry(session.clone()).or_default();
                s.holders.insert(cx.conn.id);
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
                }
                ok(summary(&session, s))
            }
            _ => unreachable!("dispatched by Primitives::apply"),
        }
    }

    /// Whether `conn` holds an anonymous session.
    pub(super) fn holds_session(&self, conn: u64) -> bool {
        self.anon.values().any(|s| s.holders.contains(&conn))
    }

    /// Ends `conn`'s holds; deletes the objects of each session it was the last holder of.
    pub(super) fn release_sessions(&mut self, conn: u64, cx: &mut Cx<'_>) {
        let mut ended = Vec::new();
        for (token, s) in &mut self.anon {
            if s.holders.remove(&conn) && s.holders.is_empty() {
                ended.push(token.clone());
            }
        }
        for token in ended {
            let Some(session) = self.anon.remove(&token) else {
                continue;
            };
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

fn summary(token: &str, s: &Session) -> AnonSession {
    AnonSession {
        session: token.to_owned(),
        holders: s.holders.len(),
        objects: s.objects.len(),
    }
}
