//! `semaphore create`, `acquire`, `release`, `get`, `list`, `delete` and `event set`,
//! `clear`, `get`, `wait`, `list`, `delete`.

use std::process::ExitCode;

use clap::Subcommand;
use corral_client::proto::{EventListResult, RemovedResult, SemaphoreListResult};
use corral_client::{Client, Error, ErrorCode, EventValue, SemaphoreValue};

use super::failed_as;
use crate::args::{Timeout, parse_timeout};
use crate::output::{Output, table};

/// `corralctl semaphore ...`
#[derive(Debug, Subcommand)]
pub enum SemaphoreCommand {
    /// Create a semaphore with VALUE free permits (an existing one with the same bound is
    /// left as it is); print its free permits.
    Create {
        /// Semaphore name.
        name: String,
        /// Free permits at creation.
        value: u64,
        /// Most free permits (a BoundedSemaphore): a release past it is an error.
        #[arg(long)]
        bound: Option<u64>,
    },
    /// Take a permit, waiting for a release (as long as it takes, or up to --timeout;
    /// then exit 1); print the free permits left. The permit stays taken after corralctl
    /// exits: give it back with `semaphore release`.
    Acquire {
        /// Semaphore name.
        name: String,
        /// Wait at most this long (0: fail at once if no permit is free).
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
        timeout: Option<Timeout>,
    },
    /// Give a permit back (to the oldest waiter, if any); print the free permits.
    Release {
        /// Semaphore name.
        name: String,
    },
    /// Print a semaphore's free permits.
    Get {
        /// Semaphore name.
        name: String,
    },
    /// Table of every semaphore: free permits, bound, waiters.
    List,
    /// Forget a semaphore (its waiters fail).
    Delete {
        /// Semaphore name.
        name: String,
    },
}

/// `corralctl event ...`
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Set an event: every waiter returns at once.
    Set {
        /// Event name.
        name: String,
    },
    /// Clear an event.
    Clear {
        /// Event name.
        name: String,
    },
    /// Print `set` or `clear`; exit 0 if set, 1 if clear.
    Get {
        /// Event name.
        name: String,
    },
    /// Wait until an event is set (as long as it takes, or up to --timeout; then exit 1).
    Wait {
        /// Event name.
        name: String,
        /// Wait at most this long.
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout, allow_hyphen_values = true)]
        timeout: Option<Timeout>,
    },
    /// Table of every event: set or clear, waiters.
    List,
    /// Forget an event.
    Delete {
        /// Event name.
        name: String,
    },
}

/// Runs a `semaphore` subcommand.
pub fn semaphore(
    client: &Client,
    out: &Output,
    command: SemaphoreCommand,
) -> Result<ExitCode, Error> {
    match command {
        SemaphoreCommand::Create { name, value, bound } => {
            let state = client.semaphore(&name).create(value, bound)?;
            print_semaphore(out, &state);
        }
        SemaphoreCommand::Acquire { name, timeout } => {
            let sem = client.semaphore(&name);
            let taken = match timeout {
                Some(t) if t.duration().is_zero() => sem.try_acquire()?.then_some(()),
                Some(t) => match sem.acquire(Some(t.duration())) {
                    Ok(_) => Some(()),
                    Err(e) if e.code() == Some(ErrorCode::Timeout) => None,
                    Err(e) => return Err(e),
                },
                None => {
                    sem.acquire(None)?;
                    Some(())
                }
            };
            if taken.is_none() {
                return Ok(failed_as(
                    "timeout",
                    format!("semaphore {name} had no free permit in time"),
                ));
            }
            print_semaphore(out, &sem.get()?);
        }
        SemaphoreCommand::Release { name } => {
            client.semaphore(&name).release()?;
            print_semaphore(out, &client.semaphore(&name).get()?);
        }
        SemaphoreCommand::Get { name } => print_semaphore(out, &client.semaphore(&name).get()?),
        SemaphoreCommand::List => {
            let semaphores = client.semaphores()?;
            if out.json {
                out.print_json(&SemaphoreListResult { semaphores });
            } else {
                let rows: Vec<Vec<String>> = semaphores
                    .iter()
                    .map(|s| {
                        vec![
                            s.semaphore.clone(),
                            s.value.to_string(),
                            s.bound.map_or("-".into(), |b| b.to_string()),
                            s.waiters.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["SEMAPHORE", "FREE", "BOUND", "WAITERS"], &rows)
                );
            }
        }
        SemaphoreCommand::Delete { name } => {
            let existed = client.semaphore(&name).delete()?;
            print_removed(out, "semaphore", &name, existed);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an `event` subcommand.
pub fn event(client: &Client, out: &Output, command: EventCommand) -> Result<ExitCode, Error> {
    match command {
        EventCommand::Set { name } => client.event(&name).set()?,
        EventCommand::Clear { name } => client.event(&name).clear()?,
        EventCommand::Get { name } => {
            let set = client.event(&name).is_set()?;
            return Ok(print_event(out, &name, set));
        }
        EventCommand::Wait { name, timeout } => {
            let set = client.event(&name).wait(timeout.map(|t| t.duration()))?;
            if !set {
                return Ok(failed_as(
                    "timeout",
                    format!("event {name} was not set in time"),
                ));
            }
            return Ok(print_event(out, &name, set));
        }
        EventCommand::List => {
            let events = client.events()?;
            if out.json {
                out.print_json(&EventListResult { events });
            } else {
                let rows: Vec<Vec<String>> = events
                    .iter()
                    .map(|e| {
                        vec![
                            e.event.clone(),
                            if e.set { "set" } else { "clear" }.into(),
                            e.waiters.to_string(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["EVENT", "STATE", "WAITERS"], &rows));
            }
        }
        EventCommand::Delete { name } => {
            let existed = client.event(&name).delete()?;
            print_removed(out, "event", &name, existed);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_semaphore(out: &Output, state: &SemaphoreValue) {
    if out.json {
        out.print_json(state);
    } else {
        println!("{}", state.value);
    }
}

fn print_event(out: &Output, name: &str, set: bool) -> ExitCode {
    if out.json {
        out.print_json(&EventValue {
            event: name.to_owned(),
            set,
            waiters: 0,
        });
    } else {
        println!("{}", if set { "set" } else { "clear" });
    }
    if set {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_removed(out: &Output, what: &str, name: &str, existed: bool) {
    if out.json {
        out.print_json(&RemovedResult {
            removed: usize::from(existed),
        });
    } else if existed {
        println!("deleted {what} {name}");
    } else {
        println!("no {what} {name}: nothing deleted");
    }
}
