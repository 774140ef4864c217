//! The control socket: accepts connections, frames requests, dispatches them.
//!
//! Each connection has a reader (this task) and a writer task joined by a channel, so
//! long-running operations (`wait`, `logs --follow`, `run --wait`) can run in their
//! own tasks and write their replies whenever they are ready, while quick operations
//! are answered inline, in request order.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, ready};

use corral_proto::{ErrorBody, ErrorCode, Request, Response};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, BufWriter, Interest, ReadBuf,
};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Context;
use crate::handlers;

/// Most replies a connection may have outstanding (queued or not yet produced). Past
/// it, corrald stops reading the connection's requests until the client reads replies,
/// so a client that pipelines without reading cannot grow corrald's memory.
const MAX_IN_FLIGHT: usize = 1024;

/// A reply on its way to the writer, holding its in-flight permit until written.
struct Outgoing {
    response: Response,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Where a handler sends its replies; cheap to clone into spawned tasks and into the
/// store thread (sending never blocks).
#[derive(Clone)]
pub struct Replies {
    tx: mpsc::UnboundedSender<Outgoing>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl Replies {
    /// Queues a reply, waiting first if the connection has too many outstanding.
    /// Returns false once the client is gone.
    pub async fn send(&self, response: Response) -> bool {
        let permit = self.permit().await;
        self.send_with(response, permit)
    }

    /// Reserves room for one reply (at most `MAX_IN_FLIGHT` per connection).
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().acquire_owned().await.ok()
    }

    /// Queues a reply for which room was reserved. Never blocks.
    pub fn send_with(&self, response: Response, permit: Option<OwnedSemaphorePermit>) -> bool {
        self.tx
            .send(Outgoing {
                response,
                _permit: permit,
            })
            .is_ok()
    }

    /// Resolves when nobody will read further replies: the client disconnected (the
    /// writer task ended) or corrald is closing connections at the end of shutdown.
    pub async fn closed(&self) {
        tokio::select! {
            () = self.tx.closed() => {}
            () = self.shutdown.cancelled() => {}
        }
    }
}

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
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    // Out of fds or similar: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let count = open.fetch_add(1, Ordering::SeqCst) + 1;
        let ctx = ctx.clone();
        let open = open.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if count > ctx.settings.max_connections {
                refuse(stream, count - 1).await;
            } else {
                serve_connection(stream, ctx, shutdown).await;
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn refuse(mut stream: UnixStream, open: usize) {
    let frame = Response::err(
        0,
        ErrorBody::new(
            ErrorCode::Busy,
            format!("corrald already serves {open} connections (max_connections); try again later"),
        ),
    )
    .to_frame();
    let _ = stream.write_all(&frame).await;
}

async fn serve_connection(stream: UnixStream, ctx: Arc<Context>, shutdown: CancellationToken) {
    let conn = handlers::Connection::new(&stream);
    let (read, write) = stream.into_split();
    let read = FdReader {
        half: read,
        fds: conn.passed_fds(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_replies(write, rx));
    let replies = Replies {
        tx,
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        shutdown: shutdown.clone(),
    };
    let mut frames = FrameReader::new(read, ctx.settings.max_frame_bytes);
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            _ = shutdown.cancelled() => break,
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
            // End of stream or an I/O error: the client is gone. A half frame is dropped.
            Ok(None) | Err(_) => break,
        }
    }
    conn.close(&ctx, shutdown.is_cancelled()).await;
    drop(replies);
    let _ = writer.await;
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

/// The id of a request that failed to parse, if it has one, so the client can match the error.
fn request_id(bytes: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_u64()))
        .unwrap_or(0)
}

fn parse_error(bytes: &[u8], e: &serde_json::Error) -> ErrorBody {
    let value = serde_json::from_slice::<serde_json::Value>(bytes).ok();
    let op = value
        .as_ref()
        .and_then(|v| v.get("op"))
        .and_then(|op| op.as_str());
    match (value.is_some(), op) {
        (false, _) if std::str::from_utf8(bytes).is_err() => {
            ErrorBody::new(ErrorCode::BadRequest, "request is not valid UTF-8")
        }
        (false, _) => ErrorBody::new(
            ErrorCode::BadRequest,
            format!("request is not valid JSON: {e}"),
        ),
        (true, Some(op)) if e.to_string().contains("unknown variant") => ErrorBody::new(
            ErrorCode::UnknownOp,
            format!(
                "unknown op `{op}`; this corrald speaks protocol {}",
                corral_proto::PROTOCOL_VERSION
            ),
        ),
        (true, _) => ErrorBody::new(ErrorCode::BadRequest, format!("malformed request: {e}")),
    }
}

async fn write_replies(
    write: tokio::net::unix::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut out = BufWriter::new(write);
    while let Some(first) = rx.recv().await {
        if out.write_all(&first.response.to_frame()).await.is_err() {
            return;
        }
        // Flush only when no other reply is queued: pipelined replies share a write.
        while let Ok(more) = rx.try_recv() {
            if out.write_all(&more.response.to_frame()).await.is_err() {
                return;
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}

/// Most descriptors a connection may have received and not yet used: more are closed
/// as they arrive, so a client cannot make corrald hold descriptors without bound.
pub const MAX_PASSED_FDS: usize = 16;

/// Descriptors a client sent with `SCM_RIGHTS`, oldest first, waiting for the request
/// that uses them (`run` with `stdio_fds`).
pub type PassedFds = Arc<Mutex<VecDeque<OwnedFd>>>;

/// The read half of a connection, read with `recvmsg` so that descriptors passed along
/// the bytes (`SCM_RIGHTS`) are kept in [`PassedFds`]. They arrive with the first byte
/// of the request that carries them, so they are queued before that request is parsed.
struct FdReader {
    half: OwnedReadHalf,
    fds: PassedFds,
}

impl AsyncRead for FdReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let stream: &UnixStream = this.half.as_ref();
        loop {
            ready!(stream.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let received = stream.try_io(Interest::READABLE, || {
                recv_with_fds(stream.as_raw_fd(), unfilled, &this.fds)
            });
            match received {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// One `recvmsg`: the bytes into `buf`, every descriptor received into `fds` (closed at
/// once past [`MAX_PASSED_FDS`], or if it is not a descriptor message at all).
fn recv_with_fds(fd: i32, buf: &mut [u8], fds: &PassedFds) -> std::io::Result<usize> {
    use nix::libc;
    // Room for MAX_PASSED_FDS descriptors in one message; the kernel closes any more.
    const SPACE: usize = 256;
    let mut control = [0u64; SPACE / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer in it refers to a live local buffer.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = SPACE as _;
    // SAFETY: fd is the connection's socket, msg describes buffers valid for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the CMSG_* walk stays within msg_controllen bytes of `control`, which the
    // kernel filled; each SCM_RIGHTS payload is an array of descriptors now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<i32>();
                let len = header.cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = len / std::mem::size_of::<i32>();
                let mut queue = fds.lock().unwrap_or_else(|e| e.into_inner());
                for i in 0..count {
                    let owned = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
                    if queue.len() < MAX_PASSED_FDS {
                        queue.push_back(owned);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(n as usize)
}

/// One newline-terminated frame, or the news that one was too large.
enum Frame {
    /// A frame without its newline.
    Line(Vec<u8>),
    /// A frame over the limit; it has been skipped up to and including its newline.
    TooLarge,
}

/// Splits a byte stream into frames, never buffering more than `max` bytes of one frame:
/// an oversized frame is discarded as it streams in, and reading resumes after it.
struct FrameReader<R> {
    inner: BufReader<R>,
    max: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(inner: R, max: usize) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max,
        }
    }

    async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        let mut line = Vec::new();
        let mut too_large = false;
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], true),
                None => (buf, false),
            };
            if !too_large && line.len() + chunk.len() > self.max {
                too_large = true;
                line = Vec::new();
            }
            if !too_large {
                line.extend_from_slice(chunk);
            }
            let used = chunk.len() + usize::from(complete);
            self.inner.consume(used);
            if complete {
                return Ok(Some(if too_large {
                    Frame::TooLarge
                } else {
                    Frame::Line(line)
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of(input: Vec<u8>, chunks: Vec<usize>, max: usize) -> Vec<Option<Vec<u8>>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (mut tx, rx) = tokio::io::duplex(64);
            let writer = tokio::spawn(async move {
                let mut rest = &input[..];
                for n in chunks.into_iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let n = n.clamp(1, rest.len());
                    if tx.write_all(&rest[..n]).await.is_err() {
                        return;
                    }
                    rest = &rest[n..];
                }
            });
            let mut reader = FrameReader::new(rx, max);
            let mut out = Vec::new();
            while let Ok(Some(frame)) = reader.next().await {
                out.push(match frame {
                    Frame::Line(bytes) => Some(bytes),
                    Frame::TooLarge => None,
                });
            }
            writer.await.unwrap();
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// However the bytes are split into reads, every complete frame comes out whole,
        /// each oversized one as `TooLarge`, and a trailing half frame not at all.
        #[test]
        fn frames_survive_any_chunking(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..80), 0..20),
            tail in prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..10),
            chunks in prop::collection::vec(1usize..50, 1..10),
        ) {
            let max = 40;
            let mut input = Vec::new();
            for f in &frames {
                input.extend_from_slice(f);
                input.push(b'\n');
            }
            input.extend_from_slice(&tail);
            let expected: Vec<Option<Vec<u8>>> = frames
                .iter()
                .map(|f| (f.len() <= max).then(|| f.clone()))
                .collect();
            prop_assert_eq!(frames_of(input, chunks, max), expected);
        }

        /// Any bytes at all: the request parser answers Ok or Err, never panics.
        #[test]
        fn arbitrary_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = serde_json::from_slice::<Request>(&bytes);
            let _ = parse_error(&bytes, &serde_json::from_slice::<Request>(b"{").unwrap_err());
            let _ = request_id(&bytes);
        }
    }
}
