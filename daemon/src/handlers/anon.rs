//! `anon_hold` for a process: the process, watched through a pidfd, holds the session
//! as a connection of its own that closes when the process exits.

use std::sync::Arc;

use corral_proto::{ErrorBody, ErrorCode, Op, Response};

use crate::context::Context;
use crate::primitives::{ConnInfo, next_conn_id};
use crate::replies::Replies;

/// Makes `pid` a holder of `session` until it exits.
pub async fn hold_for(
    ctx: &Arc<Context>,
    asker: ConnInfo,
    id: u64,
    session: String,
    pid: u32,
    replies: &Replies,
) -> bool {
    let holder = ConnInfo {
        id: next_conn_id(),
        pid: Some(pid),
        uid: asker.uid,
    };
    let store = ctx.store.clone();
    let watched = crate::pidwatch::open(pid, None)
        .and_then(|w| w.on_exit(move || store.disconnect(holder.id)));
    if let Err(e) = watched {
        let error = ErrorBody::new(
            ErrorCode::NotFound,
            format!("cannot watch process {pid} to hold anonymous session `{session}`: {e}"),
        );
        return replies.send(Response::err(id, error)).await;
    }
    let op = Op::AnonHold {
        session,
        pid: Some(pid),
    };
    super::forward(ctx, holder, id, op, replies).await
}
