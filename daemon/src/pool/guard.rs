//! The guard of a node's pool items (with `--backend`): a small process (corrald itself,
//! run as `corrald __pool-guard`) that outlives a corrald killed with `kill -9` just long
//! enough to kill the process groups of the items it was running. Their claims are
//! taken over by other nodes once the node's lease expires; without the guard the old
//! attempts would run on to their end, twice with the new ones.
//!
//! corrald writes one line per change on the guard's stdin, a pipe: `+PGID` when an
//! item's process group starts, `-PGID` once it has ended, `bye` when corrald stops
//! cleanly (it has stopped its items itself). At end of file without `bye` (corrald is
//! gone, whatever killed it), the guard sends SIGKILL to every group it was told of and
//! exits. The pipe's writes are non-blocking: a guard that stops reading costs corrald
//! its protection (said once in the log), never a stall.

use std::collections::HashSet;
use std::io::{BufRead, ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Mutex;

use nix::libc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::nodes::{Executor, Router};
use crate::process::{Output, Owner, SpawnSpec};

/// corrald's first argument that runs the guard instead of the daemon.
pub const ARG: &str = "__pool-guard";

/// Runs the guard on stdin (see the module docs); the process's exit code.
pub fn run() -> ExitCode {
    let mut groups = HashSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line == "bye" {
            return ExitCode::SUCCESS;
        }
        let (sign, number) = line.split_at(line.len().min(1));
        let Ok(pgid) = number.parse::<i32>() else {
            continue;
        };
        match sign {
            "+" if pgid > 1 => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    let mut killed = 0;
    for pgid in &groups {
        if killpg(Pid::from_raw(*pgid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    if !groups.is_empty() {
        eprintln!(
            "corrald's pool guard: corrald is gone without stopping its pool items; killed {killed} of their {} process groups",
            groups.len()
        );
    }
    ExitCode::SUCCESS
}

/// corrald's end of a running guard.
pub struct Guard {
    /// Its stdin; `None` once a write failed.
    pipe: Mutex<Option<std::fs::File>>,
}

impl Guard {
    /// Starts the guard through the process service; `None` (and a warning) if it
    /// cannot start: the items then run unguarded.
    pub async fn start(exec: &Executor) -> Option<Guard> {
        match Self::spawn(exec, &exec.router).await {
            Ok(guard) => Some(guard),
            Err(e) => {
                tracing::warn!(
                    "pool: cannot start the guard of this node's items ({e}); if corrald is killed, its running items are not stopped"
                );
                None
            }
        }
    }

    async fn spawn(exec: &Executor, router: &Router) -> Result<Guard, String> {
        let program = std::env::current_exe().map_err(|e| e.to_string())?;
        let spec = SpawnSpec {
            argv: vec![program.display().to_string(), ARG.into()],
            env: Default::default(),
            working_dir: None,
            output: Output::Pipes {
                stderr: exec.dir.join("guard.log"),
            },
            owner: Owner::Cluster,
            umask: None,
            rlimits: Default::default(),
            user: None,
            group: None,
            die_with_parent: false,
            cgroups: Vec::new(),
        };
        let (token, spawned, exited) = router.expect();
        exec.procs.spawn(token, spec);
        let spawned = spawned
            .await
            .map_err(|_| "corrald's process service has stopped".to_string())??;
        let Some((stdin, _stdout)) = spawned.pipes else {
            return Err("it has no stdin".into());
        };
        let pid = spawned.pid;
        tokio::spawn(async move {
            if let Ok(status) = exited.await {
                tracing::warn!(
                    pid,
                    ?status,
                    "pool: the guard of this node's items has exited; if corrald is killed, its running items are not stopped"
                );
            }
        });
        Ok(Guard {
            pipe: Mutex::new(Some(non_blocking(stdin)?)),
        })
    }

    /// An item's process group has started.
    pub fn watch(&self, pgid: i32) {
        self.send(&format!("+{pgid}\n"));
    }

    /// An item's process group has ended (and been killed what was left of it).
    pub fn unwatch(&self, pgid: i32) {
        self.send(&format!("-{pgid}\n"));
    }

    /// corrald stops cleanly: the guard exits without killing anything.
    pub fn release(&self) {
        self.send("bye\n");
        self.pipe.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn send(&self, line: &str) {
        let mut pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = pipe.as_mut() else { return };
        // A line is shorter than PIPE_BUF: written whole or not at all.
        if let Err(e) = file.write_all(line.as_bytes()) {
            let why = match e.kind() {
                ErrorKind::WouldBlock => "it stopped reading".to_string(),
                _ => e.to_string(),
            };
            tracing::warn!(
                "pool: the guard of this node's items is no longer told of them ({why}); if corrald is killed, its running items are not stopped"
            );
            *pipe = None;
        }
    }
}

fn non_blocking(fd: OwnedFd) -> Result<std::fs::File, String> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let ok = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(std::fs::File::from(fd))
}
