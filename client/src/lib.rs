//! `corral_client`: talk to corrald from Rust.
//!
//! A [`Client`] is one connection to corrald's control socket. It is blocking: each call
//! sends one request and reads until that request's reply arrives. Every method takes
//! `&self`, so one client can hand out several typed handles at once:
//!
//! - [`Client::queue`] → [`Queue`]: a durable FIFO of JSON items (`multiprocessing.Queue`);
//! - [`Client::counter`] → [`Counter`]: a shared `i64` (`multiprocessing.Value`);
//! - [`Client::array`] → [`Array`]: a fixed-length `i64` or `f64` array (`multiprocessing.Array`);
//! - [`Client::lock`] → [`Lock`]: a named lock with fencing tokens (`multiprocessing.Lock`).
//!
//! ```no_run
//! use corral_client::Client;
//!
//! let client = Client::connect()?;              // $CORRAL_SOCKET, else the default path
//! for unit in client.status(None)?.units {
//!     println!("{}: {} instance(s)", unit.name, unit.instances.len());
//! }
//!
//! let jobs = client.queue("jobs");
//! jobs.put("Data from process")?;
//! let job: String = jobs.get(None)?;            // waits for an item
//! let done = client.counter("done").add(1)?;
//! println!("{job} ({done} done)");
//! # Ok::<(), corral_client::Error>(())
//! ```
//!
//! A `Client` is `Send` but not `Sync`: use one client per thread (connecting is cheap).

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

pub use corral_proto as proto;
pub use corral_proto::{
    AnonKind, AnonSession, ArrayInfo, ArrayKind, ArrayValue, CasResult, CounterValue, ErrorBody,
    ErrorCode, EventValue, Lease, LockHolder, LockInfo, QueueInfo, SemaphoreValue,
};

mod array;
mod client;
mod counter;
mod lock;
mod queue;
mod semaphore;

pub use array::Array;
pub use client::Client;
pub use counter::Counter;
pub use lock::{Lock, LockGuard};
pub use queue::{Delivery, Queue};
pub use semaphore::{Event, Semaphore};

/// Everything that can go wrong talking to corrald.
///
/// ```no_run
/// use corral_client::{Client, Error};
///
/// match Client::connect() {
///     Ok(_) => println!("connected"),
///     Err(e @ Error::Connect { .. }) => eprintln!("is corrald running? {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be reached: corrald is probably not running.
    #[error(
        "cannot reach corrald at {}: {source}\n  start it with `corrald --socket {}` (add --units DIR --state DIR as needed), or point CORRAL_SOCKET / --socket at a running one",
        socket.display(), socket.display()
    )]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The connection broke. The client is unusable afterwards: connect again.
    #[error("connection to corrald lost: {0}")]
    Io(#[from] std::io::Error),
    /// corrald answered something this client does not understand.
    #[error("unexpected reply from corrald: {0}")]
    Protocol(String),
    /// corrald refused or failed the request. [`Error::code`] tells which way.
    #[error("{0}")]
    Server(ErrorBody),
    /// A value could not be turned into JSON (e.g. a map with non-string keys, or a
    /// non-finite float); nothing was sent.
    #[error("cannot encode the value as JSON: {0}")]
    Encode(serde_json::Error),
    /// Items taken from a queue did not decode into the requested type. They are no
    /// longer in the queue: `value` holds them (the item for [`Queue::get`], an array of
    /// every item taken for [`Queue::get_many`]) so that nothing is lost.
    #[error("cannot decode the item(s) {value}: {source}")]
    Decode {
        /// What was taken, as JSON.
        value: serde_json::Value,
        /// Why it did not decode.
        source: serde_json::Error,
    },
}

impl Error {
    /// The server's error, if this is one.
    ///
    /// ```no_run
    /// # let client = corral_client::Client::connect()?;
    /// if let Err(e) = client.start(&["web"]) {
    ///     if let Some(body) = e.server() {
    ///         for line in &body.details {
    ///             eprintln!("  {line}");
    ///         }
    ///     }
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn server(&self) -> Option<&ErrorBody> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }

    /// The server's error code, if this is a server error: branch on it.
    ///
    /// ```no_run
    /// use corral_client::{Client, ErrorCode};
    ///
    /// let client = Client::connect()?;
    /// match client.queue("jobs").try_get::<String>() {
    ///     Ok(job) => println!("got {job}"),
    ///     Err(e) if e.code() == Some(ErrorCode::Empty) => println!("nothing to do"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), corral_client::Error>(())
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        self.server().map(|e| e.code)
    }
}

/// The system corrald's socket (`corrald.service`).
pub const SYSTEM_SOCKET: &str = "/run/corral/corral.sock";

/// The socket path a client uses when none is given: `$CORRAL_SOCKET`, else
/// `/run/corral/corral.sock` for root, else the user's own corrald's
/// (`$XDG_RUNTIME_DIR/corral.sock`, or `$XDG_STATE_HOME/corral/corral.sock` without a
/// runtime dir) — unless the user runs no corrald of their own and the system one's
/// socket exists, as for a member of the `corral` group: then the system socket.
///
/// ```no_run
/// println!("corrald listens on {}", corral_client::default_socket().display());
/// ```
pub fn default_socket() -> PathBuf {
    if let Some(path) = std::env::var_os("CORRAL_SOCKET") {
        return PathBuf::from(path);
    }
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from(SYSTEM_SOCKET);
    }
    let own = user_socket();
    if !own.exists() && Path::new(SYSTEM_SOCKET).exists() {
        return PathBuf::from(SYSTEM_SOCKET);
    }
    own
}

/// Where a user's own corrald listens by default.
fn user_socket() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Path::new(&dir).join("corral.sock");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state.join("corral").join("corral.sock")
}
