//! The HTTP status API (axum). Every answer is built from the same status snapshot
//! that `corralctl --json status` prints.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use corral_proto::{ErrorBody, ErrorCode};
use tokio_util::sync::CancellationToken;

use crate::Context;
use crate::supervisor::Request;

/// Binds the HTTP listener (so a bad address fails start-up, not later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for HTTP on {addr}: {e}; choose another --http address or `--http off`"
        )
    })
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/status", get(status))
        .route("/api/units/{name}", get(unit))
        .with_state(ctx);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!("http server: {e}");
    }
}

async fn status(State(ctx): State<Arc<Context>>) -> Response {
    reply(ctx.supervisor.ask(|r| Request::Status(None, r)).await)
}

async fn unit(State(ctx): State<Arc<Context>>, Path(name): Path<String>) -> Response {
    reply(ctx.supervisor.ask(|r| Request::Status(Some(name), r)).await)
}

fn reply<T: serde::Serialize>(result: Result<T, ErrorBody>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => {
            let code = match e.code {
                ErrorCode::NotFound => StatusCode::NOT_FOUND,
                ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, Json(e)).into_response()
        }
    }
}
