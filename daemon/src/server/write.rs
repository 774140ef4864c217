//! Writing a connection's replies: pipelined ones share a write, and a client that
//! reads nothing for `idle_timeout` is dropped.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::replies::Outgoing;

/// Writes replies as they come. A client that takes no byte of them for `stall` is not
/// reading: the connection is dropped. Ends, cancelling `dropped`, when the connection
/// is gone or every sender is.
pub(super) async fn write_replies(
    write: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    stall: Option<Duration>,
    dropped: CancellationToken,
) {
    let mut out = BufWriter::new(write);
    let result: std::io::Result<()> = async {
        while let Some(first) = rx.recv().await {
            within(stall, out.write_all(&first.frame)).await?;
            drop(first);
            // Flush only when no other reply is queued: pipelined replies share a write.
            while let Ok(more) = rx.try_recv() {
                within(stall, out.write_all(&more.frame)).await?;
            }
            within(stall, out.flush()).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::TimedOut {
            tracing::warn!(
                "dropping a control connection: its client read nothing for {:?} while replies waited (idle_timeout)",
                stall.unwrap_or_default()
            );
        }
    }
    dropped.cancel();
}

/// Runs one write, failing with `TimedOut` if it makes no headway for `stall`.
async fn within(
    stall: Option<Duration>,
    step: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    let Some(t) = stall else {
        return step.await;
    };
    // Most writes complete at once (a copy into the buffer, or a socket with room): no
    // timer for those.
    let mut step = std::pin::pin!(step);
    if let Some(done) = futures_util::FutureExt::now_or_never(step.as_mut()) {
        return done;
    }
    tokio::time::timeout(t, step)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}
