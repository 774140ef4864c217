//! `corral_client`: talk to corrald from Rust.
//!
//! A [`Client`] is one connection to corrald's control socket. It is blocking: each call
//! sends one request and reads until that request's reply arrives.
//!
//! ```no_run
//! use corral_client::Client;
//!
//! let mut client = Client::connect()?;              // $CORRAL_SOCKET, else the default path
//! for unit in client.status(None)?.units {
//!     println!("{}: {} instance(s)", unit.name, unit.instances.len());
//! }
//! # Ok::<(), corral_client::Error>(())
//! ```

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use corral_proto::{
    ErrorBody, HelloResult, LogLine, LogsResult, Op, PROTOCOL_VERSION, ReloadResult, Request,
    Response, RunResult, StatusResult, UnitsResult, WaitResult,
};
use serde::de::DeserializeOwned;

pub use corral_proto as proto;

/// Everything that can go wrong talking to corrald.
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
    /// The connection broke.
    #[error("connection to corrald lost: {0}")]
    Io(#[from] std::io::Error),
    /// corrald answered something this client does not understand.
    #[error("unexpected reply from corrald: {0}")]
    Protocol(String),
    /// corrald refused or failed the request.
    #[error("{0}")]
    Server(ErrorBody),
}

impl Error {
    /// The server's error, if this is one.
    pub fn server(&self) -> Option<&ErrorBody> {
        match self {
            Error::Server(e) => Some(e),
            _ => None,
        }
    }
}

/// The socket path a client uses when none is given: `$CORRAL_SOCKET`, else
/// `/run/corral/corral.sock` for root, else `$XDG_RUNTIME_DIR/corral.sock`
/// (`$XDG_STATE_HOME/corral/corral.sock` without a runtime dir).
pub fn default_socket() -> PathBuf {
    if let Some(path) = std::env::var_os("CORRAL_SOCKET") {
        return PathBuf::from(path);
    }
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/run/corral/corral.sock");
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return Path::new(&dir).join("corral.sock");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    state.join("corral").join("corral.sock")
}

/// One connection to corrald.
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    socket: PathBuf,
    next_id: u64,
    line: String,
}

impl Client {
    /// Connects to [`default_socket`] and exchanges `hello`.
    pub fn connect() -> Result<Client, Error> {
        Client::connect_to(default_socket())
    }

    /// Connects to the socket at `path` and exchanges `hello`.
    pub fn connect_to(path: impl Into<PathBuf>) -> Result<Client, Error> {
        let socket = path.into();
        let stream = UnixStream::connect(&socket).map_err(|source| Error::Connect {
            socket: socket.clone(),
            source,
        })?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut client = Client {
            writer: stream,
            reader,
            socket,
            next_id: 1,
            line: String::new(),
        };
        let _: HelloResult = client.call(Op::Hello {
            version: PROTOCOL_VERSION,
            client: Some(format!("corral_client {}", env!("CARGO_PKG_VERSION"))),
        })?;
        Ok(client)
    }

    /// The socket this client is connected to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `op` and returns its result, decoded as `T`.
    pub fn call<T: DeserializeOwned>(&mut self, op: Op) -> Result<T, Error> {
        self.call_streaming(op, |_| {})
    }

    /// Sends `op`, handing each streamed event to `on_event`, and returns the final result.
    pub fn call_streaming<T: DeserializeOwned>(
        &mut self,
        op: Op,
        mut on_event: impl FnMut(serde_json::Value),
    ) -> Result<T, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let frame = corral_proto::to_frame(&Request { id, op });
        self.writer.write_all(&frame)?;
        loop {
            let response = self.read_response()?;
            if response.id != id {
                // A reply to an earlier request abandoned by its caller: skip it.
                continue;
            }
            if let Some(error) = response.error {
                return Err(Error::Server(error));
            }
            if let Some(event) = response.event {
                on_event(event);
                continue;
            }
            let result = response
                .result
                .ok_or_else(|| Error::Protocol("reply without result or error".into()))?;
            return serde_json::from_value(result).map_err(|e| Error::Protocol(e.to_string()));
        }
    }

    fn read_response(&mut self) -> Result<Response, Error> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line)?;
        if n == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "corrald closed the connection",
            )));
        }
        serde_json::from_str(&self.line)
            .map_err(|e| Error::Protocol(format!("{e}: {}", self.line.trim_end())))
    }

    /// Waits until corrald closes this connection (e.g. after `shutdown`).
    pub fn wait_closed(&mut self) -> Result<(), Error> {
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line)? == 0 {
                return Ok(());
            }
        }
    }

    /// Status of every unit, or of one.
    pub fn status(&mut self, unit: Option<&str>) -> Result<StatusResult, Error> {
        self.call(Op::Status {
            unit: unit.map(str::to_owned),
        })
    }

    /// Starts units (and what they require).
    pub fn start(&mut self, units: &[&str]) -> Result<UnitsResult, Error> {
        self.call(Op::Start {
            units: owned(units),
        })
    }

    /// Stops units; returns once they are down.
    pub fn stop(&mut self, units: &[&str]) -> Result<UnitsResult, Error> {
        self.call(Op::Stop {
            units: owned(units),
        })
    }

    /// Restarts units.
    pub fn restart(&mut self, units: &[&str]) -> Result<UnitsResult, Error> {
        self.call(Op::Restart {
            units: owned(units),
        })
    }

    /// Blocks until nothing of `unit` is running or due to run (like `Process.join()`).
    pub fn wait(&mut self, unit: &str, timeout_ms: Option<u64>) -> Result<WaitResult, Error> {
        self.call(Op::Wait {
            unit: unit.to_owned(),
            timeout_ms,
        })
    }

    /// The last `lines` lines of each instance's log.
    pub fn logs(
        &mut self,
        unit: &str,
        instance: Option<u32>,
        lines: usize,
    ) -> Result<Vec<LogLine>, Error> {
        let result: LogsResult = self.call(Op::Logs {
            unit: unit.to_owned(),
            instance,
            lines,
            follow: false,
        })?;
        Ok(result.lines)
    }

    /// Re-reads the unit files.
    pub fn reload(&mut self) -> Result<ReloadResult, Error> {
        self.call(Op::Reload {})
    }

    /// Starts a transient task running `command`; returns its unit name.
    pub fn run(&mut self, name: Option<&str>, command: &[&str]) -> Result<RunResult, Error> {
        self.call(Op::Run {
            name: name.map(str::to_owned),
            command: owned(command),
            env: Default::default(),
            working_dir: None,
            wait: false,
        })
    }

    /// Asks corrald to shut down by its lifecycle rules.
    pub fn shutdown(&mut self) -> Result<(), Error> {
        let _: serde_json::Value = self.call(Op::Shutdown {})?;
        Ok(())
    }
}

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}
