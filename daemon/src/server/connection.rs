//! One connection: its reader loop, with the idle timeout, the half-close and the end
//! of corrald; each frame parsed and dispatched.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::{ErrorBody, ErrorCode, Request, Response};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::frames::{FdReader, Frame, FrameReader};
use super::parse::{parse_error, request_id};
use super::write::write_replies;
use crate::context::Context;
use crate::handlers;
use crate::replies::Replies;

/// How a connection's reader ended.
#[derive(PartialEq)]
enum Ending {
    /// The client is gone, or is dropped: nothing more is written.
    Gone,
    /// corrald is shutting down: replies still being produced (`shutdown --wait`) are
    /// written as their tasks end.
    Shutdown,
}

pub(super) async fn serve_connection(
    stream: UnixStream,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) {
    let conn = handlers::Connection::new(&stream);
    let (read, write) = stream.into_split();
    let read = FdReader {
        half: read,
        fds: conn.passed_fds(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let dropped = CancellationToken::new();
    let idle_timeout = ctx.settings.idle_timeout;
    let mut writer = tokio::spawn(write_replies(write, rx, idle_timeout, dropped.clone()));
    let replies = Replies::new(
        tx,
        ctx.settings.max_unread_bytes,
        dropped.clone(),
        shutdown.clone(),
    );
    let mut frames = FrameReader::new(read, ctx.settings.max_frame_bytes);
    let mut half_closed = false;
    let mut idle = false;
    let mut ending = Ending::Gone;
    // One timer for the connection's life, not one per request: a request only notes
    // when it came, and the timer, when it fires early, is set again from that.
    let idle_after = idle_timeout.unwrap_or(Duration::from_secs(3600));
    let idle_timer = tokio::time::sleep(idle_after);
    tokio::pin!(idle_timer);
    let mut last_request = tokio::time::Instant::now();
    loop {
        // `FrameReader::next` is cancel-safe: the idle timer may interrupt it.
        let frame = tokio::select! {
            frame = frames.next() => frame,
            () = &mut idle_timer, if idle_timeout.is_some() => {
                let due = last_request + idle_after;
                if due > tokio::time::Instant::now() {
                    idle_timer.as_mut().reset(due);
                    continue;
                }
                if replies.is_idle() && !ctx.store.holds(conn.id()).await {
                    idle = true;
                    break;
                }
                last_request = tokio::time::Instant::now();
                idle_timer.as_mut().reset(last_request + idle_after);
                continue;
            }
            () = dropped.cancelled() => break,
            () = shutdown.cancelled() => {
                ending = Ending::Shutdown;
                break;
            }
        };
        match frame {
            Ok(Some(Frame::Line(bytes))) => {
                if !handle_frame(&bytes, &ctx, &conn, &replies).await {
                    break;
                }
            }
            Ok(Some(Frame::TooLarge)) => {
                let limit = ctx.settings.max_frame_bytes;
                let error = ErrorBody::new(
                    ErrorCode::FrameTooLarge,
                    format!("request exceeds the frame limit of {limit} bytes; it was discarded"),
                );
                if !replies.send(Response::err(0, error)).await {
                    break;
                }
            }
            Ok(None) => {
                half_closed = true;
                break;
            }
            // An I/O error: the client is gone. A half frame is dropped.
            Err(_) => break,
        }
        last_request = tokio::time::Instant::now();
    }
    drop(replies);
    let mut written = false;
    if half_closed {
        // The client ended its requests (or closed entirely): answer what it asked,
        // as long as it may still read the answers.
        tokio::select! {
            _ = &mut writer => written = true,
            () = peer_gone(&frames.get_ref().half) => {}
            () = dropped.cancelled() => {}
            () = shutdown.cancelled() => ending = Ending::Shutdown,
        }
    }
    conn.close(&ctx, shutdown.is_cancelled()).await;
    if written {
        return;
    }
    if ending == Ending::Gone {
        writer.abort();
    }
    let _ = writer.await;
    drop(frames);
    if idle {
        tracing::debug!("closed an idle control connection (idle_timeout)");
    }
}

/// Resolves when the client has closed its side of the connection entirely (not just
/// its write side): nobody would read another reply. Watches a duplicate of the
/// socket's descriptor, so that waiting here leaves the connection's own readiness alone.
async fn peer_gone(read: &tokio::net::unix::OwnedReadHalf) {
    let Ok(fd) = read.as_ref().as_fd().try_clone_to_owned() else {
        return;
    };
    let Ok(watch) = UnixStream::from_std(std::os::unix::net::UnixStream::from(fd)) else {
        return;
    };
    loop {
        let Ok(ready) = watch.ready(Interest::WRITABLE).await else {
            return;
        };
        // EPOLLHUP: both directions are shut.
        if ready.is_write_closed() {
            return;
        }
        // Forget the readiness seen, to wait for the next change.
        let _ = watch.try_io(Interest::WRITABLE, || {
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
    }
}

/// Handles one frame; false if the connection should close.
async fn handle_frame(
    bytes: &[u8],
    ctx: &Arc<Context>,
    conn: &handlers::Connection,
    replies: &Replies,
) -> bool {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    match serde_json::from_slice::<Request>(bytes) {
        Ok(request) => handlers::dispatch(ctx, conn, request, replies).await,
        Err(e) => {
            replies
                .send(Response::err(request_id(bytes), parse_error(bytes, &e)))
                .await
        }
    }
}
