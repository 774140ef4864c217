//! The control socket: accepts connections, frames requests, dispatches them.
//!
//! Each connection has a reader (this task) and a writer task joined by a channel, so
//! long-running operations (`wait`, `logs --follow`, `run --wait`) can run in their
//! own tasks and write their replies whenever they are ready, while quick operations
//! are answered inline, in request order.
//!
//! No client can starve corrald or the other clients through the socket:
//! - **Connections**: at most `max_connections` in all and `max_connections_per_user`
//!   per uid ([`Admission`]); root and corrald's own user may open [`PRIVILEGED_RESERVE`]
//!   more, so an administrator always gets in. A refused client gets a `busy` error
//!   that reaches it even if it wrote first (`refuse`).
//! - **Replies**: one connection has at most `MAX_IN_FLIGHT` (1,024) replies outstanding and
//!   `max_unread_bytes` of them unread ([`crate::replies::Replies`], [`crate::replies::Room`]). Past either, the reader
//!   stops reading that connection's requests. A connection is dropped when its client
//!   has read nothing for `idle_timeout` while replies wait, or when a reply would pass
//!   the byte limit anyway. One reply is at most `MAX_REPLY_BYTES`.
//! - **Idle connections**: one that holds nothing (no lock, no waiting request, no
//!   stream, no unread reply) is closed after `idle_timeout` without a request.
//! - **Half-close**: after the client's end of stream (`shutdown(SHUT_WR)`), what it
//!   asked before is still answered, unless it closes its side too.
//!
//! The files, one concern each: this one binds the socket and accepts; `admission`
//! counts connections and refuses those past a limit; `connection` serves one
//! connection (its reader loop, half-close and idle timeout); `frames` reads bytes and
//! passed descriptors and splits them into frames; `parse` turns a frame that is not a
//! request into an error that says why; `write` writes the replies, batching pipelined ones.

mod admission;
mod connection;
mod frames;
mod parse;
mod write;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::{ErrorBody, ErrorCode, Response};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Context;

pub use admission::{Admission, PRIVILEGED_RESERVE};
use admission::{Verdict, busy_frame, refuse};
use connection::serve_connection;

/// Binds the control socket: refuses to replace a live one, removes a stale one,
/// creates the parent directory, and applies the configured mode.
pub fn bind(path: &Path, mode: u32, group: Option<&str>) -> anyhow::Result<UnixListener> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another corrald is already serving {}; stop it first (`corralctl --socket {} shutdown`) or choose another --socket",
                path.display(),
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind the control socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    if let Some(name) = group {
        match nix::unistd::Group::from_name(name) {
            Ok(Some(g)) => nix::unistd::chown(path, None, Some(g.gid))
                .with_context(|| format!("cannot give {} to group {name}", path.display()))?,
            _ => tracing::warn!(
                "socket_group `{name}` does not exist; {} keeps corrald's group",
                path.display()
            ),
        }
    }
    Ok(listener)
}

/// Accepts connections until `shutdown` is cancelled, then waits for them to finish.
pub async fn run(listener: UnixListener, ctx: Arc<Context>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let admission = Arc::new(Admission::new(&ctx.settings));
    loop {
        let (stream, reserved) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    crate::fds::refill();
                    (stream, None)
                }
                Err(e) if crate::fds::is_exhaustion(&e) => {
                    // Take back what another open held for a moment (a `/proc` read, a
                    // log file): the reserve must not dwindle while clients hold the rest.
                    crate::fds::refill();
                    match accept_from_reserve(&listener) {
                        FromReserve::LetIn(stream, slot) => (stream, Some(slot)),
                        // That one gave its descriptor back: on to the next in the backlog.
                        FromReserve::Refused => continue,
                        FromReserve::Nothing => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    // Out of fds or similar: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        match admission.admit(uid) {
            Verdict::Admit(ticket) => {
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    serve_connection(stream, ctx, shutdown).await;
                    drop(ticket);
                    drop(reserved);
                });
            }
            Verdict::Refuse(reason, ticket) => {
                tracker.spawn(async move {
                    refuse(stream, reason).await;
                    drop(ticket);
                    drop(reserved);
                });
            }
            // Told without waiting: a client that reads first still learns why.
            Verdict::Close(reason) => {
                let _ = stream.try_write(&busy_frame(reason));
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// Whether a connection let in from the descriptor reserve is open.
static RESERVE_CONN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks the connection let in from the reserve as open until dropped, whatever becomes
/// of that connection (served, or refused past a limit).
struct ReserveSlot;

impl Drop for ReserveSlot {
    fn drop(&mut self) {
        RESERVE_CONN.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// What [`accept_from_reserve`] did.
enum FromReserve {
    /// Root's (or corrald's own user's) connection, on a descriptor of the reserve.
    LetIn(UnixStream, ReserveSlot),
    /// Someone else's connection, told and closed: its descriptor is back in the reserve.
    Refused,
    /// Nothing to do now (a reserve connection is open, the reserve is spent, or the
    /// descriptor went to another open first); the reserve is refilled where it can be.
    Nothing,
}

/// Out of descriptors: one reserved descriptor (see `fds`) lets root, or corrald's own
/// user, in to see what is going on; anyone else is told and closed, giving it back.
///
/// Every path gives the released descriptor back to the reserve ([`crate::fds::refill`])
/// unless a connection keeps it: other threads open files too, and a reserve that lost
/// one descriptor per attempt would soon be spent, leaving root outside for good.
fn accept_from_reserve(listener: &UnixListener) -> FromReserve {
    use futures_util::FutureExt as _;
    // One such connection at a time: the rest of the reserve is for restarting instances.
    if RESERVE_CONN.load(std::sync::atomic::Ordering::SeqCst) || !crate::fds::release_one() {
        return FromReserve::Nothing;
    }
    // A connection is waiting (that accept failed), so this does not block. It may still
    // fail: another thread can have opened a file on the released descriptor first.
    let Some(Ok((stream, _))) = listener.accept().now_or_never() else {
        crate::fds::refill();
        return FromReserve::Nothing;
    };
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    if let Some(uid) = uid.filter(|&u| u == 0 || u == nix::unistd::Uid::effective().as_raw()) {
        tracing::warn!(
            "out of file descriptors: a connection of uid {uid} let in from the reserve"
        );
        RESERVE_CONN.store(true, std::sync::atomic::Ordering::SeqCst);
        return FromReserve::LetIn(stream, ReserveSlot);
    }
    let frame = Response::err(
        0,
        ErrorBody::new(
            ErrorCode::Busy,
            "corrald is out of file descriptors; try again later",
        ),
    )
    .to_frame();
    let _ = stream.try_write(&frame);
    drop(stream);
    crate::fds::refill();
    FromReserve::Refused
}

#[cfg(test)]
mod tests;
