//! Recovery after a crash of corrald: finding the instances of its previous life.
//!
//! Non-daemon instances outlive a crash of corrald (they are session leaders writing to
//! their own log files). At start, every run that SQLite still shows as open is checked:
//! a process is the same one only if its pid *and* its start time (clock ticks since
//! boot, `/proc/PID/stat`) match the record, so a recycled pid is never adopted and never
//! signalled. Adopted processes are no longer our children (the kernel re-parented them),
//! so their exit is noticed through a pidfd rather than `waitpid`; its status is unknown.

use std::os::fd::{FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::Msg;
use crate::process::ProcEvent;
use crate::procstat::ProcStat;

/// A pidfd for `pid`, if that pid is still the process that started at `start_time`.
pub fn open_if_same(pid: i32, start_time: u64) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall just returned this fd and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Checked after opening: if the pid was recycled in between, the start time differs.
    // A zombie is dead already (its new parent has not reaped it yet).
    match ProcStat::read(pid) {
        Some(s) if s.start_time == start_time && s.state != 'Z' => Some(fd),
        _ => None,
    }
}

/// Reports the exit of an adopted process as a [`ProcEvent::Exited`] with unknown status.
pub fn watch(pidfd: OwnedFd, pid: i32, tx: mpsc::UnboundedSender<Msg>) {
    tokio::spawn(async move {
        // SAFETY: an OwnedFd stays open, on the same description, for as long as it lives,
        // and the AsyncFd owns it.
        match unsafe { AsyncFd::register(pidfd) } {
            Ok(fd) => {
                // A pidfd becomes readable when the process exits.
                let _ = fd.readable().await;
            }
            Err(e) => {
                tracing::error!("cannot watch adopted pid {pid}: {e}; polling instead");
                while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
        let _ = tx.send(Msg::Proc(ProcEvent::Exited {
            pid,
            status: corral_proto::ExitStatus {
                code: None,
                signal: None,
            },
        }));
    });
}
