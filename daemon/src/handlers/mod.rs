//! One module per group of operations, joined by the single [`dispatch`] match.
//! Which operation goes where is `Op::spec` (in `proto`): coordination operations
//! (queues, counters, arrays, locks) are `forward`ed to the store, which applies them in
//! `primitives/`; `locks` here only adds holders' units to `lock_status`.
//!
//! On the client side, `units`, `logs`, `system` and `pool` have a namesake in
//! `ctl/src/commands/`; its `queue`, `counter`, `array` and `lock` are the client side of
//! `primitives/`, and `top` has no handler of its own (it calls `status`, `queue_list`
//! and `pool_list`).

mod anon;
mod locks;
mod logs;
mod pool;
mod system;
mod units;

pub(crate) use units::status as units_status;

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_proto::{Op, Request, Response};

use crate::context::Context;
use crate::fds::PassedFds;
use crate::primitives::ConnInfo;
use crate::replies::Replies;

/// Per-connection identity: what locks and waiters belong to, and who the peer is.
pub struct Connection {
    info: ConnInfo,
    peer: crate::access::Peer,
    /// Descriptors received with `SCM_RIGHTS`, for the request that uses them.
    fds: PassedFds,
    /// Transient units stopped when the connection closes (`run` with
    /// `stop_on_disconnect`).
    bound: BoundUnits,
}

/// The units a connection owns (`run` with `stop_on_disconnect`), shared with the
/// tasks that start them: a unit started after the connection closed is stopped at once.
#[derive(Clone, Default)]
pub struct BoundUnits(Arc<Mutex<BoundState>>);

#[derive(Default)]
struct BoundState {
    closed: bool,
    units: Vec<String>,
    /// Pool jobs submitted with `cancel_on_disconnect`.
    jobs: Vec<u64>,
}

impl BoundUnits {
    /// Records `unit` as owned; false if the connection has closed already (the caller
    /// stops it).
    pub fn add(&self, unit: &str) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return false;
        }
        // Finished transient units are pruned by corrald: keep the list short too.
        if state.units.len() >= 4096 {
            state.units.remove(0);
        }
        state.units.push(unit.to_owned());
        true
    }

    /// Records a pool job to cancel when the connection closes.
    fn add_job(&self, job: u64) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.jobs.len() >= 4096 {
            state.jobs.remove(0);
        }
        state.jobs.push(job);
    }

    fn close(&self) -> (Vec<String>, Vec<u64>) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.closed = true;
        (
            std::mem::take(&mut state.units),
            std::mem::take(&mut state.jobs),
        )
    }
}

/// Stops the units of a closed connection, in the background.
pub fn stop_bound(ctx: &Arc<Context>, units: Vec<String>) {
    if units.is_empty() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        // Each on its own: one already pruned must not keep the others running.
        for unit in units {
            let _ = units::stop(ctx.clone(), vec![unit]).await;
        }
    });
}

impl Connection {
    /// A fresh connection; the peer's pid and uid come from the kernel (`SO_PEERCRED`).
    pub fn new(stream: &tokio::net::UnixStream) -> Connection {
        let cred = stream.peer_cred().ok();
        Connection {
            peer: crate::access::Peer::of(cred),
            info: ConnInfo {
                id: crate::primitives::next_conn_id(),
                pid: cred.and_then(|c| c.pid()).map(|p| p as u32),
                uid: cred.map(|c| c.uid()),
            },
            fds: PassedFds::default(),
            bound: BoundUnits::default(),
        }
    }

    /// The connection's id, unique for the life of corrald.
    pub fn id(&self) -> u64 {
        self.info.id
    }

    /// Where the connection's reader puts the descriptors it receives.
    pub fn passed_fds(&self) -> PassedFds {
        self.fds.clone()
    }

    /// The two oldest received descriptors, as a child's stdout and stderr.
    fn take_stdio(&self) -> Option<[OwnedFd; 2]> {
        let mut fds = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        if fds.len() < 2 {
            return None;
        }
        let out = fds.pop_front()?;
        let err = fds.pop_front()?;
        Some([out, err])
    }

    /// Releases whatever the connection held (its locks go to the next waiters), stops
    /// the units it owns and, unless corrald is stopping (`shutting_down`: the jobs
    /// resume after a restart), cancels its pool jobs.
    pub async fn close(&self, ctx: &Arc<Context>, shutting_down: bool) {
        ctx.store.disconnect(self.info.id);
        let (units, jobs) = self.bound.close();
        stop_bound(ctx, units);
        if !shutting_down && !jobs.is_empty() {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                for job in jobs {
                    let _ = pool::cancel(&ctx, job).await;
                }
            });
        }
        self.fds.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Answers one request. Quick operations reply before this returns; long ones are
/// spawned and reply later. Returns false if the client has gone away.
pub async fn dispatch(
    ctx: &Arc<Context>,
    conn: &Connection,
    request: Request,
    replies: &Replies,
) -> bool {
    let id = request.id;
    if let Err(denied) = ctx.policy.check(&conn.peer, &request.op) {
        return replies.send(Response::err(id, denied)).await;
    }
    let reply = match request.op {
        Op::LockStatus { lock } => locks::status(ctx, conn.info, lock).await,
        Op::PoolSubmit {
            name,
            pool,
            command,
            inputs,
            workers,
            retries,
            timeout_ms,
            stream,
            working_dir,
            env,
            cancel_on_disconnect,
            open,
            max_items_per_worker,
        } => {
            let owner = if cancel_on_disconnect {
                conn.info.pid.and_then(|pid| {
                    let pid = pid as i32;
                    crate::procstat::process_start_time(pid).map(|t| (pid, t))
                })
            } else {
                None
            };
            let submit = pool::Submit {
                run_as: conn.peer.run_as(),
                stop: None,
                name,
                pool,
                command,
                inputs,
                workers,
                retries,
                timeout_ms,
                stream,
                working_dir,
                env,
                open,
                max_items_per_worker,
                owner,
            };
            let outcome = pool::submit(ctx, submit).await;
            if cancel_on_disconnect {
                if let Some(job) = outcome
                    .as_ref()
                    .ok()
                    .and_then(|v| v.to_value().get("job").and_then(|j| j.as_u64()))
                {
                    conn.bound.add_job(job);
                }
            }
            outcome
        }
        Op::PoolAppend {
            job,
            inputs,
            cancel_on_disconnect,
            release_before,
        } => {
            let outcome = pool::append(ctx, job, conn.peer.run_as(), inputs, release_before).await;
            if cancel_on_disconnect && outcome.is_ok() {
                conn.bound.add_job(job);
            }
            outcome
        }
        Op::PoolClose { job } => pool::close(ctx, job).await,
        Op::PoolWait {
            job,
            results,
            timeout_ms,
            from,
            count,
        } => {
            let timeout = timeout_ms.map(Duration::from_millis);
            let target = pool::Wait {
                job,
                from: from.unwrap_or(0),
                count,
            };
            tokio::spawn(pool::wait(
                ctx.clone(),
                id,
                target,
                results,
                timeout,
                replies.clone(),
            ));
            return true;
        }
        Op::PoolStatus { job } => pool::status(ctx, job).await,
        Op::PoolResults { job } => pool::results(ctx, job).await,
        Op::PoolList {} => pool::list(ctx).await,
        Op::PoolCancel { job } => pool::cancel(ctx, job).await,
        Op::PoolRemove { job } => pool::remove(ctx, job).await,
        Op::Hello { version, client } => system::hello(version, client),
        Op::Nodes {} => ctx.store.nodes().await,
        Op::Shutdown { plan: true, .. } => system::plan(ctx).await,
        Op::Shutdown { wait, .. } => {
            tokio::spawn(system::shutdown(ctx.clone(), id, wait, replies.clone()));
            return true;
        }
        Op::Status { unit } => units::status(ctx, unit).await.and_then(ok),
        Op::Timers {} => units::timers(ctx).await,
        Op::Start {
            units, wait: false, ..
        } => units::start(ctx, units).await,
        Op::Start {
            units,
            wait: true,
            timeout_ms,
        } => {
            let op = units::start_and_wait(ctx.clone(), units, timeout_ms);
            return spawn(ctx, replies, id, op);
        }
        Op::Reload {} => units::reload(ctx).await,
        Op::Kill { units, signal } => units::kill(ctx, units, &signal).await,
        Op::Stop { units } => return spawn(ctx, replies, id, units::stop(ctx.clone(), units)),
        Op::Restart {
            units,
            wait,
            timeout_ms,
        } => {
            let op = units::restart(ctx.clone(), units, wait, timeout_ms);
            return spawn(ctx, replies, id, op);
        }
        Op::Wait { unit, timeout_ms } => {
            return spawn(ctx, replies, id, units::wait(ctx.clone(), unit, timeout_ms));
        }
        Op::Logs {
            unit,
            instance,
            lines,
            follow,
        } => {
            if follow {
                let task = logs::follow(ctx.clone(), id, unit, instance, lines, replies.clone());
                tokio::spawn(task);
                return true;
            }
            logs::tail(ctx, unit, instance, lines).await
        }
        Op::Run {
            name,
            command,
            env,
            working_dir,
            wait,
            daemon,
            stdio_fds,
            stop_on_disconnect,
            parent,
            anon_session,
        } => {
            if let Some(session) = &anon_session {
                // The hold `run` makes for the process is the one `anon_hold` would.
                let hold = Op::AnonHold {
                    session: session.clone(),
                    pid: None,
                };
                if let Err(denied) = ctx.policy.check(&conn.peer, &hold) {
                    return replies.send(Response::err(id, denied)).await;
                }
            }
            let stdio = if stdio_fds {
                match conn.take_stdio() {
                    Some(fds) => Some(fds),
                    None => {
                        let error = corral_proto::ErrorBody::new(
                            corral_proto::ErrorCode::BadRequest,
                            "run with stdio_fds needs two descriptors (stdout, stderr) sent \
                             with the request's first byte as SCM_RIGHTS ancillary data",
                        );
                        return replies.send(Response::err(id, error)).await;
                    }
                }
            } else {
                None
            };
            let spec = units::RunSpec {
                run_as: conn.peer.run_as(),
                name,
                command,
                env,
                working_dir,
                daemon,
                stdio,
                owner: stop_on_disconnect.then(|| conn.bound.clone()),
                parent: parent.map(|p| corral_proto::RunParent {
                    pid: p.pid.or(conn.info.pid),
                    label: p.label,
                }),
                anon_session,
                asker: conn.info,
            };
            let task = units::run(ctx.clone(), id, spec, wait, replies.clone());
            tokio::spawn(task);
            return true;
        }
        Op::AnonHold {
            session,
            pid: Some(pid),
        } => return anon::hold_for(ctx, conn.info, id, session, pid, replies).await,
        // Everything else is a queue, counter, array or lock operation.
        op => {
            debug_assert!(op.is_coordination());
            return forward(ctx, conn.info, id, op, replies).await;
        }
    };
    replies.send_frame(id, into_frame(id, reply)).await
}

pub use crate::primitives::Outcome;

/// Hands a coordination operation to the store task, which replies straight into the
/// connection once the change is committed (or the wait ends). The reader does not wait
/// for it: the next request is read at once, so pipelined operations share commits.
async fn forward(ctx: &Context, conn: ConnInfo, id: u64, op: Op, replies: &Replies) -> bool {
    let Some(room) = replies
        .room(reply_estimate(&op, ctx.settings.max_item_bytes))
        .await
    else {
        return false;
    };
    let replies = replies.clone();
    let reply = Box::new(move |outcome: Outcome| {
        replies.send_with(id, into_frame(id, outcome), room);
    });
    ctx.store.primitive(conn, op, reply);
    true
}

/// The most bytes the reply to a coordination operation may take, reserved before the
/// operation is handed to the store: what a connection has asked for, and not yet
/// read, stays within its `max_unread_bytes` even for replies produced all at once.
fn reply_estimate(op: &Op, max_item_bytes: usize) -> usize {
    use crate::replies::SMALL_REPLY;
    use corral_proto::{MAX_ARRAY_SLICE, MAX_GET_BYTES};
    // The longest i64 or f64 in JSON, with its comma.
    const PER_ELEMENT: usize = 26;
    match op {
        Op::ArrayGet {
            index: None,
            length,
            ..
        } => length.unwrap_or(MAX_ARRAY_SLICE).min(MAX_ARRAY_SLICE) * PER_ELEMENT + SMALL_REPLY,
        Op::ArrayCreate { length, .. } => {
            (*length).min(MAX_ARRAY_SLICE) * PER_ELEMENT + SMALL_REPLY
        }
        Op::QueueGet { count: 1, .. } => max_item_bytes + SMALL_REPLY,
        Op::QueueGet { .. } => MAX_GET_BYTES + max_item_bytes + SMALL_REPLY,
        _ => SMALL_REPLY,
    }
}

/// The reply frame of an outcome, serialized once (its result is JSON already).
fn into_frame(id: u64, outcome: Outcome) -> Vec<u8> {
    match outcome {
        Ok(value) => value.frame(id),
        Err(error) => corral_proto::err_frame(id, &error),
    }
}

pub use crate::primitives::ok;

/// Runs a long operation in its own task; its reply is written when it completes.
fn spawn(
    _ctx: &Arc<Context>,
    replies: &Replies,
    id: u64,
    task: impl Future<Output = Outcome> + Send + 'static,
) -> bool {
    let replies = replies.clone();
    tokio::spawn(async move {
        tokio::select! {
            outcome = task => { replies.send_frame(id, into_frame(id, outcome)).await; }
            _ = replies.closed() => {}
        }
    });
    true
}

/// Reloads unit files as the `reload` operation does (used for SIGHUP).
pub async fn reload_now(ctx: &Context) -> Outcome {
    units::reload(ctx).await
}
