//! `hello` and `shutdown`.

use std::sync::Arc;

use corral_proto::{
    ErrorBody, ErrorCode, HelloResult, PROTOCOL_VERSION, Response, ShutdownProgress,
};

use super::{Outcome, ok};
use crate::context::Context;
use crate::replies::Replies;
use crate::supervisor::Request;

pub fn hello(version: u32, client: Option<String>) -> Outcome {
    if version != PROTOCOL_VERSION {
        return Err(ErrorBody::new(
            ErrorCode::UnsupportedVersion,
            format!(
                "client speaks protocol {version}, this corrald speaks {PROTOCOL_VERSION}; use a corralctl of the same release"
            ),
        ));
    }
    tracing::debug!(client = client.as_deref().unwrap_or("?"), "hello");
    ok(HelloResult {
        protocol: PROTOCOL_VERSION,
        server: format!("corrald {}", env!("CARGO_PKG_VERSION")),
        pid: std::process::id(),
    })
}

/// What a shutdown would do now; changes nothing.
pub async fn plan(ctx: &Context) -> Outcome {
    ok(ctx.supervisor.ask(Request::Plan).await?)
}

/// Begins shutdown; with `wait`, reports which units are still stopping until none is.
pub async fn shutdown(ctx: Arc<Context>, id: u64, wait: bool, replies: Replies) {
    tracing::info!("shutdown requested over the socket");
    ctx.request_shutdown.cancel();
    if !wait {
        replies.send(Response::ok(id, serde_json::json!({}))).await;
        return;
    }
    let mut last: Option<Vec<String>> = None;
    loop {
        let active = match ctx.supervisor.ask(|r| Request::Status(None, r)).await {
            Ok(status) => status
                .units
                .into_iter()
                .filter(|u| u.instances.iter().any(|i| i.state.is_active()))
                .map(|u| u.name)
                .collect::<Vec<_>>(),
            Err(_) => Vec::new(),
        };
        if !active.is_empty() && last.as_ref() != Some(&active) {
            let event = ShutdownProgress {
                waiting_for: active.clone(),
            };
            if !replies.send(Response::event(id, event)).await {
                return;
            }
            last = Some(active);
        }
        tokio::select! {
            // First: `all_stopped` is cancelled just before connections are closed.
            biased;
            () = ctx.all_stopped.cancelled() => {
                replies
                    .send(Response::ok(id, serde_json::json!({ "stopped": true })))
                    .await;
                return;
            }
            () = replies.closed() => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
    }
}
