//! The HTTP accept loop: hyper's HTTP/1 connections under three bounds, so that no number
//! of idle or half-sent requests can hold every descriptor of corrald.
//!
//! - A cap on simultaneous connections (`http.max_connections`, and never more than half
//!   of corrald's descriptor limit): past it, a new connection is answered
//!   `503 Service Unavailable` and closed at once.
//! - A header-read timeout (`http.header_timeout`): a client gets that long to send a
//!   request's headers, from the connection's start or from the end of the previous
//!   response (hyper's `header_read_timeout`, which also bounds an idle keep-alive).
//! - An idle timeout (`http.idle_timeout`): a connection that moves no bytes either way
//!   that long (a slow body, a client that stopped reading a response) is dropped.
//!
//! When `accept` fails for lack of descriptors the loop backs off instead of spinning,
//! leaving what is left to supervision (see [`crate::fds`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::settings::HttpLimits;

/// How long connections still open at shutdown get to finish (an event stream never does).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Sent to a connection past the cap (then closed).
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 26\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many HTTP connections\n";

/// The connection cap in force: the configured one, but never more than half of the
/// descriptor limit, so HTTP clients alone cannot exhaust it.
pub(super) fn effective_cap(configured: usize) -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(soft, _)| soft);
    let half = usize::try_from(soft / 2).unwrap_or(usize::MAX).max(1);
    configured.min(half)
}

/// Serves `app` on `listener` until `shutdown` is cancelled, within `limits`.
pub(super) async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let cap = effective_cap(limits.max_connections);
    if cap < limits.max_connections {
        tracing::info!(
            configured = limits.max_connections,
            cap,
            "http: connection cap lowered to half the descriptor limit"
        );
    }
    let slots = Arc::new(Semaphore::new(cap));
    let tracker = TaskTracker::new();
    let mut refused: u64 = 0;
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // EMFILE/ENFILE and friends: the backlog keeps the connections; try later
                // rather than spin on a loop that cannot succeed.
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!("http: cannot accept a connection: {e}");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(
                    cap,
                    refused,
                    "http: connection cap reached; refusing new connections with 503"
                );
                last_warning = Some(Instant::now());
            }
            refuse(stream);
            continue;
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            serve_one(stream, app, limits, shutdown).await;
            drop(permit);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, tracker.wait()).await;
}

/// Answers 503 without waiting for anything: what the client already sent is read first
/// (closing over unread bytes would reset the connection and lose the answer).
fn refuse(stream: TcpStream) {
    let mut scratch = [0u8; 4096];
    for _ in 0..4 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = stream.try_write(REFUSAL);
    if let Ok(std) = stream.into_std() {
        let _ = std.shutdown(std::net::Shutdown::Write);
    }
}

async fn serve_one(
    stream: TcpStream,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let mut closing_since: Option<Instant> = None;
    loop {
        let idle_deadline = activity.last() + limits.idle_timeout;
        let grace_deadline = closing_since.map(|at| at + SHUTDOWN_GRACE);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!("http connection: {e}");
                }
                return;
            }
            () = shutdown.cancelled(), if closing_since.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    tracing::debug!("http connection idle for {:?}: closed", limits.idle_timeout);
                    return;
                }
            }
            () = sleep_until_opt(grace_deadline) => return,
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// When a connection last moved bytes, either way.
#[derive(Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
