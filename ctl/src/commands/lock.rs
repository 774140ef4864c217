//! `lock run`, `lock status`.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;

use corral_client::proto::{ExitStatus, LockStatusResult};
use corral_client::{Client, Error, ErrorCode, LockGuard, LockHolder, LockInfo};
use nix::sys::signal::{SigHandler, Signal};

use super::units::exit_code_of;
use super::{failed, failed_as};
use crate::args::Timeout;
use crate::output::{Output, human_duration, table};

pub fn run(
    client: &Client,
    out: &Output,
    name: &str,
    timeout: Option<Timeout>,
    command: &[String],
) -> Result<ExitCode, Error> {
    let Some(guard) = acquire(client, name, timeout)? else {
        return Ok(match timeout {
            Some(t) if t.duration().is_zero() => {
                failed_as("locked", format!("lock {name} is held by another client"))
            }
            Some(t) => failed_as(
                "timeout",
                format!("could not acquire lock {name} within {t}"),
            ),
            None => failed(format!("could not acquire lock {name}")),
        });
    };
    let token = guard.token();
    let status = match spawn_and_wait(command, token) {
        Ok(status) => status,
        Err(code) => return Ok(code),
    };
    if let Err(e) = guard.release() {
        // The command has run; its exit code matters more, but the user should know the
        // lock may have been lost while it ran (e.g. corrald restarted).
        crate::output::print_error("warning", &format!("releasing lock {name}: {e}"), &[]);
    }
    let exit = ExitStatus {
        code: status.code(),
        signal: status.signal(),
    };
    if out.json {
        out.print_json(&serde_json::json!({ "lock": name, "token": token, "exit": exit }));
    }
    Ok(exit_code_of(exit))
}

/// The lock, waiting as `--timeout` says; `None` if it could not be had in time.
fn acquire<'c>(
    client: &'c Client,
    name: &str,
    timeout: Option<Timeout>,
) -> Result<Option<LockGuard<'c>>, Error> {
    let lock = client.lock(name);
    let Some(timeout) = timeout else {
        return lock.acquire(None).map(Some);
    };
    if timeout.duration().is_zero() {
        return lock.try_acquire();
    }
    match lock.acquire(Some(timeout.duration())) {
        Ok(guard) => Ok(Some(guard)),
        Err(e) if matches!(e.code(), Some(ErrorCode::Timeout | ErrorCode::Locked)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs `command` to completion, leaving interrupts to it; on failure, the exit code to
/// leave with (126/127 like the shell when it cannot be started).
fn spawn_and_wait(command: &[String], token: u64) -> Result<std::process::ExitStatus, ExitCode> {
    let (program, args) = command.split_first().expect("clap requires a command");
    let mut child = std::process::Command::new(program)
        .args(args)
        .env("CORRAL_LOCK_TOKEN", token.to_string())
        .spawn()
        .map_err(|e| {
            crate::output::print_error("failed", &format!("cannot run {program}: {e}"), &[]);
            ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        })?;
    // Like system(3): Ctrl-C and Ctrl-\ reach the command through the terminal; corralctl
    // outlives them to release the lock and report the command's status. Ignored only
    // now, so that the command does not inherit the ignored disposition.
    let _ignored = IgnoreInterrupts::new();
    child
        .wait()
        .map_err(|e| failed(format!("waiting for {program}: {e}")))
}

/// SIGINT and SIGQUIT ignored while it lives.
struct IgnoreInterrupts {
    previous: Vec<(Signal, SigHandler)>,
}

impl IgnoreInterrupts {
    fn new() -> IgnoreInterrupts {
        let mut previous = Vec::new();
        for sig in [Signal::SIGINT, Signal::SIGQUIT] {
            // SAFETY: SIG_IGN installs no handler code; corralctl is single-threaded.
            if let Ok(old) = unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) } {
                previous.push((sig, old));
            }
        }
        IgnoreInterrupts { previous }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        for &(sig, old) in &self.previous {
            // SAFETY: restores the disposition that was in place before.
            let _ = unsafe { nix::sys::signal::signal(sig, old) };
        }
    }
}

pub fn status(client: &Client, out: &Output, name: Option<&str>) -> Result<ExitCode, Error> {
    let locks = match name {
        Some(name) => {
            let info = client.lock(name).status()?;
            if out.json {
                out.print_json(&info);
                return Ok(ExitCode::SUCCESS);
            }
            vec![info]
        }
        None => {
            let locks = client.locks()?;
            if out.json {
                out.print_json(&LockStatusResult { locks });
                return Ok(ExitCode::SUCCESS);
            }
            locks
        }
    };
    print!("{}", status_table(&locks));
    Ok(ExitCode::SUCCESS)
}

fn status_table(locks: &[LockInfo]) -> String {
    let rows: Vec<Vec<String>> = locks
        .iter()
        .map(|l| {
            let h = l.holder.as_ref();
            vec![
                l.lock.clone(),
                h.map_or("-".into(), holder),
                h.map_or("-".into(), |h| human_duration(h.held_ms)),
                l.waiters.to_string(),
                h.map_or("-".into(), |h| h.token.to_string()),
            ]
        })
        .collect();
    table(&["LOCK", "HOLDER", "HELD-FOR", "WAITERS", "TOKEN"], &rows)
}

/// `1234 (web.0)`: the pid, and the unit instance it belongs to when known; `1234@web1`
/// for a holder on node `web1` of a shared backend.
fn holder(h: &LockHolder) -> String {
    let mut pid = h.pid.map_or("?".into(), |p| p.to_string());
    if let Some(node) = &h.node {
        pid = format!("{pid}@{node}");
    }
    match (&h.unit, h.instance) {
        (Some(unit), Some(i)) => format!("{pid} ({unit}.{i})"),
        (Some(unit), None) => format!("{pid} ({unit})"),
        (None, _) => pid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder_of(pid: Option<u32>, unit: Option<&str>, instance: Option<u32>) -> LockHolder {
        LockHolder {
            pid,
            uid: Some(1000),
            unit: unit.map(str::to_owned),
            instance,
            since_ms: 0,
            held_ms: 192_000,
            token: 42,
            node: None,
        }
    }

    #[test]
    fn holders_show_pid_and_unit_instance() {
        assert_eq!(
            holder(&holder_of(Some(7), Some("web"), Some(1))),
            "7 (web.1)"
        );
        assert_eq!(holder(&holder_of(Some(7), Some("web"), None)), "7 (web)");
        assert_eq!(holder(&holder_of(Some(7), None, None)), "7");
        assert_eq!(holder(&holder_of(None, None, None)), "?");
    }

    #[test]
    fn status_table_marks_free_locks() {
        let locks = [
            LockInfo {
                lock: "deploy".into(),
                holder: Some(holder_of(Some(7), Some("web"), Some(0))),
                waiters: 2,
            },
            LockInfo {
                lock: "db".into(),
                holder: None,
                waiters: 0,
            },
        ];
        assert_eq!(
            status_table(&locks),
            "LOCK    HOLDER     HELD-FOR  WAITERS  TOKEN\n\
             deploy  7 (web.0)  3m12s     2        42\n\
             db      -          -         0        -\n"
        );
    }
}
