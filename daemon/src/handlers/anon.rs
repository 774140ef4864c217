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

/// The hold `run` with `anon_session` makes for the process it starts: taken before the
/// spawn by a stand-in holder (so the session's objects cannot end while the process
/// starts, even if its client dies meanwhile), then carried by the process itself, as
/// `anon_hold` with its pid would (watched through a pidfd, durable as pid and start
/// time).
pub struct ChildHold {
    holder: ConnInfo,
    session: String,
}

impl ChildHold {
    /// Holds `session` for a process not spawned yet.
    pub async fn take(
        ctx: &Context,
        asker: ConnInfo,
        session: String,
    ) -> Result<ChildHold, ErrorBody> {
        let holder = ConnInfo {
            id: next_conn_id(),
            pid: None,
            uid: asker.uid,
        };
        let op = Op::AnonHold {
            session: session.clone(),
            pid: None,
        };
        apply(ctx, holder, op).await?;
        Ok(ChildHold { holder, session })
    }

    /// The process runs as `pid` (None: it did not start): from now on it holds the
    /// session until it exits.
    pub async fn spawned(self, ctx: &Context, pid: Option<u32>) {
        let ChildHold { holder, session } = self;
        let Some(pid) = pid else {
            ctx.store.disconnect(holder.id);
            return;
        };
        let store = ctx.store.clone();
        let watched = crate::pidwatch::open(pid, None)
            .and_then(|w| w.on_exit(move || store.disconnect(holder.id)));
        if let Err(e) = watched {
            // Most likely it has exited already: it holds nothing any more.
            tracing::debug!("process {pid} of anonymous session {session}: {e}");
            ctx.store.disconnect(holder.id);
            return;
        }
        let holder = ConnInfo {
            pid: Some(pid),
            ..holder
        };
        let op = Op::AnonHold {
            session,
            pid: Some(pid),
        };
        if let Err(e) = apply(ctx, holder, op).await {
            tracing::warn!("recording process {pid} as an anonymous session's holder: {e}");
        }
    }
}

/// Applies a coordination operation for `conn` and waits for its outcome.
async fn apply(ctx: &Context, conn: ConnInfo, op: Op) -> Result<(), ErrorBody> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    ctx.store.primitive(
        conn,
        op,
        Box::new(move |outcome| {
            let _ = tx.send(outcome.map(|_| ()));
        }),
    );
    rx.await
        .map_err(|_| ErrorBody::new(ErrorCode::Internal, "the store has stopped"))?
}
