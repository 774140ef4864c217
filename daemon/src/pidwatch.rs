//! Watching a process that is not corrald's child for its exit, through a pidfd: the
//! holders of anonymous sessions (see `primitives::anon`).

use std::os::fd::{FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

use crate::procstat::ProcStat;

/// A live process, pinned by a pidfd (a recycled pid can no longer be mistaken for it).
pub struct Watched {
    fd: OwnedFd,
    /// Its pid.
    pub pid: u32,
    /// Its start time (clock ticks since boot, `/proc/PID/stat`): with the pid, who it
    /// is across a restart of corrald.
    pub start_time: u64,
}

/// Pins `pid`; if `start_time` is given, only if the process there started then (the
/// same process, not a later one given a recycled pid). A zombie has exited: refused.
pub fn open(pid: u32, start_time: Option<u64>) -> std::io::Result<Watched> {
    let gone = || std::io::Error::from_raw_os_error(nix::libc::ESRCH);
    let raw = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(gone)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, raw, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall just returned this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Read after opening: if the pid was recycled in between, the start time differs.
    match ProcStat::read(raw) {
        Some(s) if s.state != 'Z' && start_time.is_none_or(|t| t == s.start_time) => Ok(Watched {
            fd,
            pid,
            start_time: s.start_time,
        }),
        _ => Err(gone()),
    }
}

impl Watched {
    /// Calls `then` once the process has exited (in a task of its own).
    pub fn on_exit(self, then: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        // SAFETY: an OwnedFd stays open, on the same description, for as long as it
        // lives, and the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(self.fd) }?;
        tokio::spawn(async move {
            // A pidfd becomes readable when its process exits.
            let _ = fd.readable().await;
            then();
        });
        Ok(())
    }
}
