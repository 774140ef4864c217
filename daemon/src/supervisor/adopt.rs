//! Recovery after a crash of corrald: finding the instances of its previous life.
//!
//! Non-daemon instances outlive a crash of corrald (they are session leaders writing to
//! their own log files). At start, every run that SQLite still shows as open is checked:
//! a process is the same one only if its pid *and* its start time (clock ticks since
//! boot, `/proc/PID/stat`) match the record, so a recycled pid is never adopted and never
//! signalled. Adopted processes are no longer our children (the kernel re-parented them),
//! so their exit is noticed through a pidfd rather than `waitpid`; its status is unknown.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use corral_config::RestartPolicy;
use corral_proto::ExitStatus;
use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::effects::signal_instance;
use super::machine::{Effects, Run, State};
use super::{Msg, Proc, Supervisor};
use crate::process::ProcEvent;
use crate::procstat::ProcStat;
use crate::store::OpenRun;

impl Supervisor {
    /// Adopts the live instances of corrald's previous life, records the dead ones, and
    /// starts again what their restart policy says.
    pub(super) fn recover(&mut self, runs: Vec<OpenRun>) {
        let (mut adopted, mut dead, mut restart, mut stray) = (vec![], vec![], vec![], vec![]);
        for run in runs {
            let label = format!("{}.{} (pid {})", run.unit, run.instance, run.pid);
            let pidfd = open_if_same(run.pid, run.start_time);
            let entry = self.units.get_mut(&run.unit);
            let again = entry.as_ref().is_some_and(|e| {
                matches!(
                    e.unit.restart,
                    RestartPolicy::Always | RestartPolicy::OnFailure
                )
            });
            let slot = entry.and_then(|e| e.instances.get_mut(run.instance as usize));
            let mut fx = Effects::new();
            match (slot, pidfd) {
                (Some(inst), Some(fd)) if inst.run().is_none() => {
                    let age = Duration::from_millis(
                        (crate::clock::now_ms() - run.started_at).max(0) as u64,
                    );
                    let since = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                    let adopted_run = Run {
                        pid: run.pid,
                        id: run.id,
                        since,
                    };
                    inst.adopt(adopted_run, run.restart_count, &mut fx);
                    let (unit, index) = (run.unit.clone(), run.instance);
                    self.owners.running(run.pid, Proc::Instance { unit, index });
                    watch(fd, run.pid, self.tx.clone());
                    adopted.push(label);
                }
                (_, Some(_)) => {
                    // Alive, but its unit (or that instance) is no longer configured.
                    let cgroups = self.config.cgroups.as_deref();
                    signal_instance(cgroups, &run.unit, run.instance, run.pid, Signal::SIGTERM);
                    self.store.run_ended(run.id, None);
                    stray.push(label);
                }
                (slot, None) => {
                    self.store.run_ended(run.id, None);
                    dead.push(label);
                    let Some(inst) = slot else { continue };
                    inst.last_exit = Some(ExitStatus {
                        code: None,
                        signal: None,
                    });
                    inst.restarts = run.restart_count;
                    if again {
                        restart.push(run.unit.clone());
                    } else {
                        inst.transition(State::Exited, None, &mut fx);
                    }
                }
            }
            self.apply(&run.unit, run.instance, fx);
        }
        if adopted.is_empty() && dead.is_empty() && stray.is_empty() {
            return;
        }
        restart.sort();
        restart.dedup();
        self.event_global(
            "recovered",
            format!(
                "adopted: [{}]; found dead: [{}]; restarting: [{}]; stopped, no longer configured: [{}]",
                adopted.join(", "),
                dead.join(", "),
                restart.join(", "),
                stray.join(", ")
            ),
        );
        if let Err(e) = self.start_units(&restart) {
            tracing::error!("recovery: {e}");
        }
    }
}

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
