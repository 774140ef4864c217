//! `anon_hold` for a process: the process, watched through a pidfd, holds the session
//! as a connection of its own that closes when the process exits.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use corral_proto::{ErrorBody, ErrorCode, Op, Response};
use tokio::io::unix::AsyncFd;

use crate::Context;
use crate::primitives::ConnInfo;
use crate::server::Replies;

/// Makes `pid` a holder of `session` until it exits.
pub async fn hold_for(
    ctx: &Arc<Context>,
    asker: ConnInfo,
    id: u64,
    session: String,
    pid: u32,
    replies: &Replies,
) -> bool {
    let pidfd = match open_pidfd(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let error = ErrorBody::new(
                ErrorCode::NotFound,
                format!("cannot watch process {pid} to hold anonymous session `{session}`: {e}"),
            );
            return replies.send(Response::err(id, error)).await;
        }
    };
    // SAFETY: an OwnedFd stays open, on the same description, for as long as it lives,
    // and the AsyncFd owns it.
    let watched = match unsafe { AsyncFd::register(pidfd) } {
        Ok(fd) => fd,
        Err(e) => {
            let error = ErrorBody::new(
                ErrorCode::Internal,
                format!("cannot watch process {pid}: {e}"),
            );
            return replies.send(Response::err(id, error)).await;
        }
    };
    let holder = ConnInfo {
        id: super::next_connection_id(),
        pid: Some(pid),
        uid: asker.uid,
    };
    let store = ctx.store.clone();
    tokio::spawn(async move {
        // A pidfd becomes readable when its process exits (a zombie has exited).
        let _ = watched.readable().await;
        store.disconnect(holder.id);
    });
    let op = Op::AnonHold {
        session,
        pid: Some(pid),
    };
    super::forward(ctx, holder, id, op, replies).await
}

fn open_pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| std::io::Error::from_raw_os_error(nix::libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
