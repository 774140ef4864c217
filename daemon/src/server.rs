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
//!   `max_unread_bytes` of them unread ([`Replies`], [`crate::replies::Room`]). Past either, the reader
//!   stops reading that connection's requests. A connection is dropped when its client
//!   has read nothing for `idle_timeout` while replies wait, or when a reply would pass
//!   the byte limit anyway. One reply is at most `MAX_REPLY_BYTES`.
//! - **Idle connections**: one that holds nothing (no lock, no waiting request, no
//!   stream, no unread reply) is closed after `idle_timeout` without a request.
//! - **Half-close**: after the client's end of stream (`shutdown(SHUT_WR)`), what it
//!   asked before is still answered, unless it closes its side too.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use corral_proto::{ErrorBody, ErrorCode, Request, Response};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter, Interest,
    ReadBuf,
};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::context::Context;
use crate::fds::{MAX_PASSED_FDS, PassedFds};
use crate::handlers;
use crate::replies::{Outgoing, Replies};
use crate::settings::Settings;

/// Connections root and corrald's own user may open past `max_connections`.
pub const PRIVILEGED_RESERVE: usize = 8;

/// Refused connections being answered at once; past it, more are closed unanswered
/// (each holds a descriptor until its client has read the refusal).
const MAX_REFUSING: usize = 64;

/// How long a refused connection is kept open for its client to read the refusal.
const REFUSAL_DRAIN: Duration = Duration::from_secs(1);

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
                    (stream, false)
                }
                Err(e) if crate::fds::is_exhaustion(&e) => match accept_from_reserve(&listener) {
                    Some(stream) => (stream, true),
                    None => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
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
                    if reserved {
                        RESERVE_CONN.store(false, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
            Verdict::Refuse(reason, ticket) => {
                tracker.spawn(async move {
                    refuse(stream, reason).await;
                    drop(ticket);
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

/// Out of descriptors: one reserved descriptor (see `fds`) lets root, or corrald's own
/// user, in to see what is going on; anyone else is told and closed, giving it back.
fn accept_from_reserve(listener: &UnixListener) -> Option<UnixStream> {
    use futures_util::FutureExt as _;
    // One such connection at a time: the rest of the reserve is for restarting instances.
    if RESERVE_CONN.load(std::sync::atomic::Ordering::SeqCst) || !crate::fds::release_one() {
        return None;
    }
    // A connection is waiting (that accept failed), so this does not block.
    let (stream, _) = listener.accept().now_or_never()?.ok()?;
    let uid = stream.peer_cred().ok()?.uid();
    if uid == 0 || uid == nix::unistd::Uid::effective().as_raw() {
        tracing::warn!(
            "out of file descriptors: a connection of uid {uid} let in from the reserve"
        );
        RESERVE_CONN.store(true, std::sync::atomic::Ordering::SeqCst);
        return Some(stream);
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
    None
}

/// Who may open another connection: the connection limits, and the counts they apply to.
pub struct Admission {
    max: usize,
    per_user: usize,
    own_uid: u32,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    open: usize,
    by_uid: HashMap<u32, usize>,
    refusing: usize,
}

/// What to do with a new connection.
enum Verdict {
    /// Serve it; the ticket counts it until dropped.
    Admit(Ticket),
    /// Answer `busy` with this reason, then close.
    Refuse(String, Ticket),
    /// Write `busy` with this reason if the socket takes it at once, and close (too
    /// many refusals in progress already to wait for each client).
    Close(String),
}

/// Counts one connection (served or being refused) until dropped.
struct Ticket {
    admission: Arc<Admission>,
    counted: Counted,
}

enum Counted {
    Served(Option<u32>),
    Refused,
}

/// A uid for connections whose peer credentials could not be read.
const UNKNOWN_UID: u32 = u32::MAX;

impl Admission {
    fn new(settings: &Settings) -> Admission {
        Admission {
            max: settings.max_connections,
            per_user: settings.max_connections_per_user,
            own_uid: nix::unistd::geteuid().as_raw(),
            counts: Mutex::new(Counts::default()),
        }
    }

    fn admit(self: &Arc<Self>, uid: Option<u32>) -> Verdict {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let privileged = uid.is_some_and(|u| u == 0 || u == self.own_uid);
        let key = uid.unwrap_or(UNKNOWN_UID);
        let mine = counts.by_uid.get(&key).copied().unwrap_or(0);
        let refusal = if privileged {
            (counts.open >= self.max + PRIVILEGED_RESERVE).then(|| {
                format!(
                    "corrald already serves {} connections (max_connections = {}, and {PRIVILEGED_RESERVE} more for root); try again later",
                    counts.open, self.max
                )
            })
        } else if counts.open >= self.max {
            Some(format!(
                "corrald already serves {} connections (max_connections = {}); try again later",
                counts.open, self.max
            ))
        } else if mine >= self.per_user {
            Some(format!(
                "uid {key} already has {mine} connections open (max_connections_per_user = {}); close some, or raise the limit in corral.toml",
                self.per_user
            ))
        } else {
            None
        };
        let Some(reason) = refusal else {
            counts.open += 1;
            *counts.by_uid.entry(key).or_default() += 1;
            return Verdict::Admit(self.ticket(Counted::Served(Some(key))));
        };
        if counts.refusing >= MAX_REFUSING {
            return Verdict::Close(reason);
        }
        counts.refusing += 1;
        Verdict::Refuse(reason, self.ticket(Counted::Refused))
    }

    fn ticket(self: &Arc<Self>, counted: Counted) -> Ticket {
        Ticket {
            admission: self.clone(),
            counted,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match self.counted {
            Counted::Served(uid) => {
                counts.open -= 1;
                let key = uid.unwrap_or(UNKNOWN_UID);
                if let Some(n) = counts.by_uid.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        counts.by_uid.remove(&key);
                    }
                }
            }
            Counted::Refused => counts.refusing -= 1,
        }
    }
}

/// Answers a connection past a limit with `busy`, so that the client reads the reason.
/// Closing a Unix socket with unread data in it resets the connection, and a client
/// that wrote first (`hello`, as every client does) would see ECONNRESET or EPIPE
/// instead of the refusal. So: write the refusal, end the write side, read (and
/// discard) what the client sends until it closes or [`REFUSAL_DRAIN`] passes, and
/// only then close.
async fn refuse(mut stream: UnixStream, reason: String) {
    let frame = busy_frame(reason);
    let answer = async {
        stream.write_all(&frame).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_DRAIN, answer).await;
}

fn busy_frame(reason: String) -> Vec<u8> {
    Response::err(0, ErrorBody::new(ErrorCode::Busy, reason)).to_frame()
}

/// How a connection's reader ended.
#[derive(PartialEq)]
enum Ending {
    /// The client is gone, or is dropped: nothing more is written.
    Gone,
    /// corrald is shutting down: replies still being produced (`shutdown --wait`) are
    /// written as their tasks end.
    Shutdown,
}

async fn serve_connection(stream: UnixStream, ctx: Arc<Context>, shutdown: CancellationToken) {
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

/// The id of a request that failed to parse, if it has one, so the client can match the error.
fn request_id(bytes: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_u64()))
        .unwrap_or(0)
}

fn parse_error(bytes: &[u8], e: &serde_json::Error) -> ErrorBody {
    let value = serde_json::from_slice::<serde_json::Value>(bytes).ok();
    let Some(value) = value else {
        if std::str::from_utf8(bytes).is_err() {
            return ErrorBody::new(ErrorCode::BadRequest, "request is not valid UTF-8");
        }
        return ErrorBody::new(
            ErrorCode::BadRequest,
            format!("request is not valid JSON: {e}"),
        );
    };
    let Some(object) = value.as_object() else {
        return ErrorBody::new(
            ErrorCode::BadRequest,
            "a request is a JSON object like {\"id\":1,\"op\":\"status\"}",
        );
    };
    let op = match object.get("op") {
        None => {
            return ErrorBody::new(
                ErrorCode::BadRequest,
                "request has no `op`: name the operation, e.g. \"op\":\"status\"",
            );
        }
        Some(serde_json::Value::String(op)) => op,
        Some(other) => {
            return ErrorBody::new(
                ErrorCode::BadRequest,
                format!("`op` must be a string naming the operation, got {other}"),
            );
        }
    };
    if !is_known_op(op) {
        return ErrorBody::new(
            ErrorCode::UnknownOp,
            format!(
                "unknown op `{op}`; this corrald speaks protocol {}",
                corral_proto::PROTOCOL_VERSION
            ),
        );
    }
    ErrorBody::new(ErrorCode::BadRequest, bad_argument(op, object, e))
}

/// Whether `op` names an operation (whatever its arguments): an unknown one fails on the
/// tag itself, before any field is looked at.
fn is_known_op(op: &str) -> bool {
    match serde_json::from_value::<corral_proto::Op>(serde_json::json!({ "op": op })) {
        Ok(_) => true,
        Err(e) => !e
            .to_string()
            .starts_with(&format!("unknown variant `{op}`")),
    }
}

/// Describes a request whose op is known but whose arguments are not, naming the field
/// when serde's message allows it to be found (serde does not report the path of a field
/// inside a tagged enum, so an invalid enum value is matched back to its key).
fn bad_argument(
    op: &str,
    object: &serde_json::Map<String, serde_json::Value>,
    e: &serde_json::Error,
) -> String {
    let message = e.to_string();
    let rejected = message
        .strip_prefix("unknown variant `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(value, _)| value);
    let field = rejected.and_then(|value| {
        object
            .iter()
            .find(|(key, v)| *key != "op" && v.as_str() == Some(value))
            .map(|(key, _)| key)
    });
    match (field, rejected) {
        (Some(field), Some(value)) => {
            let accepted = message
                .split_once(", expected ")
                .map_or("", |(_, rest)| rest);
            let accepted = accepted.split(" at line ").next().unwrap_or(accepted);
            format!(
                "bad argument `{field}` of `{op}`: `{value}` is not accepted; expected {accepted}"
            )
        }
        _ => format!("bad arguments for `{op}`: {message}"),
    }
}

/// Writes replies as they come. A client that takes no byte of them for `stall` is not
/// reading: the connection is dropped. Ends, cancelling `dropped`, when the connection
/// is gone or every sender is.
async fn write_replies(
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
    /// The frame read so far, kept here so that `next` may be cancelled and resumed.
    line: Vec<u8>,
    too_large: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(inner: R, max: usize) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max,
            line: Vec::new(),
            too_large: false,
        }
    }

    fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    /// The next frame. Cancel-safe: the bytes of a frame read before a cancellation
    /// stay in `line`, and only `fill_buf` (cancel-safe itself) is awaited.
    async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (chunk, complete) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], true),
                None => (buf, false),
            };
            if !self.too_large && self.line.len() + chunk.len() > self.max {
                self.too_large = true;
                self.line = Vec::new();
            }
            if !self.too_large {
                self.line.extend_from_slice(chunk);
            }
            let used = chunk.len() + usize::from(complete);
            self.inner.consume(used);
            if complete {
                let line = std::mem::take(&mut self.line);
                let too_large = std::mem::replace(&mut self.too_large, false);
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
