//! What the daemon's actors (the supervisor, the pool manager) share: the reply channel of
//! a request, asking an actor and awaiting its answer, and timers that come back as
//! messages. Imports none of the other modules.

use std::time::Duration;

use corral_proto::{ErrorBody, ErrorCode};
use tokio::sync::{mpsc, oneshot};

/// The reply channel of a request to an actor: errors go to clients as they are.
pub type Reply<T> = oneshot::Sender<Result<T, ErrorBody>>;

/// The error when an actor is gone (its task ended at shutdown).
pub fn gone() -> ErrorBody {
    ErrorBody::new(ErrorCode::ShuttingDown, "corrald is shutting down")
}

/// Sends the message `make` builds around a fresh reply channel and awaits the answer;
/// [`gone`] when the actor has ended.
pub async fn ask<M, T>(
    tx: &mpsc::UnboundedSender<M>,
    make: impl FnOnce(Reply<T>) -> M,
) -> Result<T, ErrorBody> {
    let (reply, answer) = oneshot::channel();
    tx.send(make(reply)).map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

/// Sends `msg` back to the actor after `delay` (a timer; stale ones are recognised by
/// what they carry, e.g. an instance's generation).
pub fn after<M: Send + 'static>(tx: &mpsc::UnboundedSender<M>, delay: Duration, msg: M) {
    let tx = tx.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tx.send(msg);
    });
}
