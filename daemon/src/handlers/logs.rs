//! `logs`: the tail of instance logs, and following them.

use std::sync::Arc;
use std::time::Duration;

use corral_proto::{ErrorBody, ErrorCode, LogLine, LogsResult, Response};

use super::{Outcome, ok};
use crate::context::Context;
use crate::replies::Replies;
use crate::supervisor::Request;
use crate::supervisor::logs::{Follower, tail_lines};

const MAX_LINES: usize = 100_000;

pub async fn tail(ctx: &Context, unit: String, instance: Option<u32>, lines: usize) -> Outcome {
    ok(LogsResult {
        lines: read_tails(ctx, unit, instance, lines).await?,
    })
}

async fn read_tails(
    ctx: &Context,
    unit: String,
    instance: Option<u32>,
    lines: usize,
) -> Result<Vec<LogLine>, ErrorBody> {
    if lines > MAX_LINES {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("at most {MAX_LINES} lines per request"),
        ));
    }
    let paths = ctx
        .supervisor
        .ask(|r| Request::LogPaths(unit, instance, r))
        .await?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (instance, path) in paths {
            let tail = tail_lines(&path, lines).map_err(|e| {
                ErrorBody::new(
                    ErrorCode::Failed,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            out.extend(tail.into_iter().map(|line| LogLine { instance, line }));
        }
        Ok(out)
    })
    .await
    .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?
}

/// Sends the last `lines` lines, then every new line as an event, until the client leaves.
pub async fn follow(
    ctx: Arc<Context>,
    id: u64,
    unit: String,
    instance: Option<u32>,
    lines: usize,
    replies: Replies,
) {
    let paths = match ctx
        .supervisor
        .ask(|r| Request::LogPaths(unit.clone(), instance, r))
        .await
    {
        Ok(paths) => paths,
        Err(e) => {
            replies.send(Response::err(id, e)).await;
            return;
        }
    };
    let mut followers: Vec<(u32, Follower)> = paths
        .into_iter()
        .map(|(i, path)| (i, Follower::from_end(path)))
        .collect();
    match read_tails(&ctx, unit, instance, lines).await {
        Ok(tail) => {
            for line in tail {
                if !replies.send(Response::event(id, line)).await {
                    return;
                }
            }
        }
        Err(e) => {
            replies.send(Response::err(id, e)).await;
            return;
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = replies.closed() => return,
        }
        for (instance, follower) in &mut followers {
            let Ok(new) = follower.poll(false) else {
                continue;
            };
            for line in new {
                let event = LogLine {
                    instance: *instance,
                    line,
                };
                if !replies.send(Response::event(id, event)).await {
                    return;
                }
            }
        }
    }
}
