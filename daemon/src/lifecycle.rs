//! Signals and the wait for shutdown.
//!
//! SIGTERM / SIGINT begin a clean shutdown (the order itself lives in the supervisor);
//! a second one during shutdown forces it (SIGKILL to every group); SIGHUP reloads unit files.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// How `run` is told to stop: `shutdown` starts the clean sequence, `force` (a second
/// signal) skips its waiting and SIGKILLs every group.
#[derive(Clone, Default)]
pub struct Lifecycle {
    /// Begin a clean shutdown.
    pub shutdown: CancellationToken,
    /// Kill everything now.
    pub force: CancellationToken,
    /// Re-read unit files (SIGHUP).
    pub reload: Arc<tokio::sync::Notify>,
}

/// Installs the signal handlers. Must run inside the runtime, before `run`.
pub fn install_signal_handlers(lifecycle: &Lifecycle) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let lc = lifecycle.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => { lc.reload.notify_one(); continue; }
            }
            if lc.shutdown.is_cancelled() {
                lc.force.cancel();
            } else {
                lc.shutdown.cancel();
            }
        }
    });
    Ok(())
}

/// Serves reload requests until shutdown is requested (by a signal or over the socket).
pub async fn serve_until_shutdown(ctx: &Context, lifecycle: &Lifecycle) {
    loop {
        tokio::select! {
            _ = lifecycle.shutdown.cancelled() => return,
            _ = lifecycle.reload.notified() => {
                match crate::handlers::reload_now(ctx).await {
                    Ok(_) => tracing::info!("reloaded unit files (SIGHUP)"),
                    Err(e) => tracing::error!("reload (SIGHUP) rejected: {e}"),
                }
            }
        }
    }
}
