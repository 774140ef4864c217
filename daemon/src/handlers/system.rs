//! `hello` and `shutdown`.

use corral_proto::{ErrorBody, ErrorCode, HelloResult, PROTOCOL_VERSION};

use super::{Outcome, ok};
use crate::Context;

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

pub fn shutdown(ctx: &Context) -> Outcome {
    tracing::info!("shutdown requested over the socket");
    ctx.request_shutdown.cancel();
    ok(serde_json::json!({}))
}
