//! `lock_status`: the store's view of locks, with each holder's unit and instance.

use corral_proto::{LockStatusResult, Op};
use tokio::sync::oneshot;

use super::{Outcome, ok};
use crate::context::Context;
use crate::primitives::ConnInfo;
use crate::procstat::ProcStat;
use crate::supervisor::Request;

/// Lock status, naming the supervised instance behind each holder when there is one.
pub async fn status(ctx: &Context, conn: ConnInfo, lock: Option<String>) -> Outcome {
    let (tx, rx) = oneshot::channel();
    let reply = Box::new(move |outcome: Outcome| {
        let _ = tx.send(outcome);
    });
    ctx.store.primitive(conn, Op::LockStatus { lock }, reply);
    let value = rx.await.map_err(|_| gone())??;
    let mut result: LockStatusResult = serde_json::from_str(value.json()).map_err(|e| {
        corral_proto::ErrorBody::new(corral_proto::ErrorCode::Internal, e.to_string())
    })?;
    // A holder belongs to an instance when it is in that instance's process group (on
    // this node: a holder of another node has its pid there).
    let here = ctx.store.node();
    let groups: Vec<i32> = result
        .locks
        .iter()
        .map(|l| {
            l.holder
                .as_ref()
                .filter(|h| h.node.is_none() || h.node.as_deref() == here)
                .and_then(|h| h.pid)
                .and_then(|pid| ProcStat::read(pid as i32))
                .map(|s| s.pgrp)
                .unwrap_or(0)
        })
        .collect();
    let owners = ctx.supervisor.ask(|r| Request::WhoIs(groups, r)).await?;
    for (info, owner) in result.locks.iter_mut().zip(owners) {
        if let (Some(holder), Some((unit, instance))) = (info.holder.as_mut(), owner) {
            holder.unit = Some(unit);
            holder.instance = Some(instance);
        }
    }
    ok(result)
}

fn gone() -> corral_proto::ErrorBody {
    corral_proto::ErrorBody::new(
        corral_proto::ErrorCode::ShuttingDown,
        "corrald is shutting down",
    )
}
