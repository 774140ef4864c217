//! A reserve of file descriptors that supervision can always use.
//!
//! Every client connection costs corrald a descriptor; when clients hold all of them
//! (`EMFILE`), corrald must still be able to open an instance's log file to restart it, and
//! to accept one control connection from root to see what is going on. So corrald keeps
//! [`RESERVE`] descriptors open on `/dev/null` from the start: code that supervision needs
//! calls [`with_reserve`], which on `EMFILE`/`ENFILE` closes one of them and tries again.
//! [`refill`] takes the reserve back up when descriptors are free again.
//!
//! The reserve is shared by the runtime thread (socket accepts) and the process thread
//! (log files), hence the mutex; it is touched only when descriptors run out, and by a
//! length check per refill.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

/// How many descriptors are held back.
pub const RESERVE: usize = 8;

static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Whether an error means that descriptors ran out (for corrald, or for the whole system).
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE) | Some(nix::libc::ENFILE)
    )
}

/// Whether an error message (as spawn failures are reported) names descriptor exhaustion.
pub fn names_exhaustion(message: &str) -> bool {
    // The OS's own wording of EMFILE ("Too many open files") and ENFILE ("... in system").
    message.contains("Too many open files")
}

/// Opens descriptors onto `/dev/null` until [`RESERVE`] are held (stops at the first
/// failure: descriptors are short, and the next refill tries again).
pub fn refill() {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    while held.len() < RESERVE {
        match File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(_) => break,
        }
    }
}

/// How many descriptors are held back now.
pub fn held() -> usize {
    HELD.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Closes one reserved descriptor, so the next open can have it; false if none is left.
pub fn release_one() -> bool {
    let released = HELD.lock().unwrap_or_else(|e| e.into_inner()).pop();
    released.is_some()
}

/// Runs `open`; if it fails for lack of descriptors, releases reserved ones one at a
/// time and runs it again, until it succeeds or the reserve is spent.
pub fn with_reserve<T>(mut open: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut result = open();
    while let Err(e) = &result {
        if !is_exhaustion(e) || !release_one() {
            break;
        }
        tracing::warn!(
            "out of file descriptors: using the reserve ({} left)",
            held()
        );
        result = open();
    }
    result
}

/// Most descriptors a connection may have received and not yet used: more are closed
/// as they arrive, so a client cannot make corrald hold descriptors without bound.
pub const MAX_PASSED_FDS: usize = 16;

/// Descriptors a client sent with `SCM_RIGHTS`, oldest first, waiting for the request
/// that uses them (`run` with `stdio_fds`).
pub type PassedFds = Arc<Mutex<VecDeque<OwnedFd>>>;

/// The open-file limit corrald was started with, before it raised its own soft limit:
/// instances get this one unless their unit sets `rlimits.nofile` (many programs expect
/// the customary soft 1024).
pub static INHERITED_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
