//! One module per group of operations, joined by the single [`dispatch`] match.
//! `ctl/src/commands/` mirrors these modules on the client side.

mod logs;
mod system;
mod units;

use std::sync::Arc;

use corral_proto::{ErrorBody, Op, Request, Response};

use crate::Context;
use crate::server::Replies;

/// Per-connection state (what the connection holds, released when it closes).
pub struct Connection {}

impl Connection {
    /// A fresh connection.
    pub fn new() -> Connection {
        Connection {}
    }

    /// Releases whatever the connection held.
    pub async fn close(&self, _ctx: &Context) {}
}

impl Default for Connection {
    fn default() -> Self {
        Connection::new()
    }
}

/// Answers one request. Quick operations reply before this returns; long ones are
/// spawned and reply later. Returns false if the client has gone away.
pub async fn dispatch(
    ctx: &Arc<Context>,
    _conn: &Connection,
    request: Request,
    replies: &Replies,
) -> bool {
    let id = request.id;
    let reply = match request.op {
        Op::Hello { version, client } => system::hello(version, client),
        Op::Shutdown {} => system::shutdown(ctx),
        Op::Status { unit } => units::status(ctx, unit).await,
        Op::Start { units } => units::start(ctx, units).await,
        Op::Reload {} => units::reload(ctx).await,
        Op::Stop { units } => return spawn(ctx, replies, id, units::stop(ctx.clone(), units)),
        Op::Restart { units } => {
            return spawn(ctx, replies, id, units::restart(ctx.clone(), units));
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
        } => {
            let task = units::run(
                ctx.clone(),
                id,
                name,
                command,
                env,
                working_dir,
                wait,
                replies.clone(),
            );
            tokio::spawn(task);
            return true;
        }
    };
    replies.send(into_response(id, reply)).await
}

/// A reply value: any serializable result, or an error.
pub type Outcome = Result<serde_json::Value, ErrorBody>;

fn into_response(id: u64, outcome: Outcome) -> Response {
    match outcome {
        Ok(value) => Response::ok(id, value),
        Err(error) => Response::err(id, error),
    }
}

/// Serializes a result for [`Outcome`].
pub fn ok(value: impl serde::Serialize) -> Outcome {
    Ok(serde_json::to_value(value).expect("protocol types serialize"))
}

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
            outcome = task => { replies.send(into_response(id, outcome)).await; }
            _ = replies.closed() => {}
        }
    });
    true
}

/// Reloads unit files as the `reload` operation does (used for SIGHUP).
pub async fn reload_now(ctx: &Context) -> Outcome {
    units::reload(ctx).await
}
