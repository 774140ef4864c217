//! Reading a connection: bytes and the descriptors passed along them, split into
//! newline-terminated frames of at most `max_frame_bytes`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Interest, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

use crate::fds::{MAX_PASSED_FDS, PassedFds};

/// The read half of a connection, read with `recvmsg` so that descriptors passed along
/// the bytes (`SCM_RIGHTS`) are kept in [`PassedFds`]. They arrive with the first byte
/// of the request that carries them, so they are queued before that request is parsed.
pub(super) struct FdReader {
    pub(super) half: OwnedReadHalf,
    pub(super) fds: PassedFds,
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
pub(super) enum Frame {
    /// A frame without its newline.
    Line(Vec<u8>),
    /// A frame over the limit; it has been skipped up to and including its newline.
    TooLarge,
}

/// Splits a byte stream into frames, never buffering more than `max` bytes of one frame:
/// an oversized frame is discarded as it streams in, and reading resumes after it.
pub(super) struct FrameReader<R> {
    inner: BufReader<R>,
    max: usize,
    /// The frame read so far, kept here so that `next` may be cancelled and resumed.
    line: Vec<u8>,
    too_large: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(super) fn new(inner: R, max: usize) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(64 * 1024, inner),
            max,
            line: Vec::new(),
            too_large: false,
        }
    }

    pub(super) fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }

    /// The next frame. Cancel-safe: the bytes of a frame read before a cancellation
    /// stay in `line`, and only `fill_buf` (cancel-safe itself) is awaited.
    pub(super) async fn next(&mut self) -> std::io::Result<Option<Frame>> {
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
