//! Who may open a connection: the connection limits, their counts, and the `busy`
//! answer of a connection refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_proto::{ErrorBody, ErrorCode, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::settings::Settings;

/// Connections root and corrald's own user may open past `max_connections`.
pub const PRIVILEGED_RESERVE: usize = 8;

/// Refused connections being answered at once; past it, more are closed unanswered
/// (each holds a descriptor until its client has read the refusal).
const MAX_REFUSING: usize = 64;

/// How long a refused connection is kept open for its client to read the refusal.
const REFUSAL_DRAIN: Duration = Duration::from_secs(1);
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
pub(super) enum Verdict {
    /// Serve it; the ticket counts it until dropped.
    Admit(Ticket),
    /// Answer `busy` with this reason, then close.
    Refuse(String, Ticket),
    /// Write `busy` with this reason if the socket takes it at once, and close (too
    /// many refusals in progress already to wait for each client).
    Close(String),
}

/// Counts one connection (served or being refused) until dropped.
pub(super) struct Ticket {
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
    pub(super) fn new(settings: &Settings) -> Admission {
        Admission {
            max: settings.max_connections,
            per_user: settings.max_connections_per_user,
            own_uid: nix::unistd::geteuid().as_raw(),
            counts: Mutex::new(Counts::default()),
        }
    }

    pub(super) fn admit(self: &Arc<Self>, uid: Option<u32>) -> Verdict {
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
pub(super) async fn refuse(mut stream: UnixStream, reason: String) {
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

pub(super) fn busy_frame(reason: String) -> Vec<u8> {
    Response::err(0, ErrorBody::new(ErrorCode::Busy, reason)).to_frame()
}
