//! Readiness (`[ready]`), health (`[health]`) and `max_memory`: the checks corrald runs
//! against an instance, and what their outcomes do to it.
//!
//! - An instance of a unit with `[ready]` stays `starting` after its spawn until its
//!   check passes; then it is `running` (dependents may start, `start --wait` answers).
//!   Past the check's `deadline` it has failed to start.
//! - Once running, a `[health]` check is probed every `interval`; `failures` failed
//!   probes in a row make the instance unhealthy.
//! - Every tick, the resident memory of each instance with `max_memory` (its process
//!   group's, summed from `/proc`) is compared with the limit.
//!
//! A failed start, an unhealthy instance and one over its memory are all handled alike
//! ([`Supervisor::fail_instance`]): the instance is stopped like any other (stop signal,
//! then SIGKILL after `stop_timeout`), and when it has exited its restart policy decides
//! what follows, as after a failure (`on-failure` and `always` restart it, `no` leaves it
//! `failed`). The reason stays in the instance's status and is recorded as an event.
//!
//! Probes never block the supervisor: `exec` probes are processes started and reaped by
//! the [process thread](crate::process) like instances (in a process group of their own,
//! with the instance's user, environment and working directory); `http`, `tcp` and `log`
//! probes run in tasks that report back with a [`ProbeMsg`]. Each message carries the run
//! id of the instance's process, so an outcome about an earlier run is ignored.
//!
//! `notify` readiness uses one datagram socket in the abstract namespace, passed to
//! instances as `NOTIFY_SOCKET`; the kernel attaches the sender's pid to each datagram
//! (`SO_PASSCRED`), and a `READY=1` counts for the instance whose process group the sender
//! is in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_config::{Check, Unit};
use corral_proto::{ExitStatus, InstanceState};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

mod io;
mod memory;

use super::machine::State;
use super::{Msg, Proc, Supervisor, kill_group};
use crate::process::{Output, Spawned};
use io::{http_get, notify_listener, scan_log};

/// Which check a probe belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `[ready]`.
    Ready,
    /// `[health]`.
    Health,
}

/// Messages about checks, to the supervisor.
#[derive(Debug)]
pub enum ProbeMsg {
    /// Time for the next probe of `phase`.
    Due {
        /// Unit name.
        unit: String,
        /// Instance number.
        instance: u32,
        /// The run this probe is for.
        run: i64,
        /// Which check.
        phase: Phase,
    },
    /// A probe run in a task has an outcome.
    Done {
        /// Unit name.
        unit: String,
        /// Instance number.
        instance: u32,
        /// The run the probe was for.
        run: i64,
        /// Which check.
        phase: Phase,
        /// Passed, or why not.
        outcome: Result<(), String>,
        /// For `log` checks: how far the log has been read.
        log_offset: Option<u64>,
    },
    /// The `[ready]` deadline of a run has passed.
    Deadline {
        /// Unit name.
        unit: String,
        /// Instance number.
        instance: u32,
        /// The run.
        run: i64,
    },
    /// An `exec` probe has run for its whole timeout.
    ExecTimeout {
        /// The probe's spawn token.
        token: u64,
    },
    /// A datagram arrived on the notify socket.
    Notify {
        /// The sender, as the kernel says.
        pid: i32,
        /// The sender's process group, if it could be read.
        pgid: Option<i32>,
        /// The datagram (`READY=1\nSTATUS=...`).
        text: String,
    },
    /// Resident memory of process groups: (unit, instance, run, bytes).
    Memory(Vec<(String, u32, i64, u64)>),
}

/// One `exec` probe in flight.
#[derive(Debug)]
struct ExecProbe {
    unit: String,
    instance: u32,
    run: i64,
    phase: Phase,
    pid: Option<i32>,
    stderr: PathBuf,
}

/// The supervisor's check bookkeeping.
pub(super) struct Probes {
    /// `exec` probes by spawn token, until their outcome is given (a timed-out probe's
    /// process is still the supervisor's, as `Proc::Probe`, until its exit).
    exec: HashMap<u64, ExecProbe>,
    /// The `NOTIFY_SOCKET` value given to instances with `notify = true`, if the socket
    /// could be made.
    pub notify_socket: Option<String>,
}

impl Probes {
    /// Binds the notify socket and starts the task that reads it.
    pub fn new(tx: mpsc::UnboundedSender<Msg>) -> Probes {
        let notify_socket = match notify_listener(tx) {
            Ok(name) => Some(name),
            Err(e) => {
                tracing::error!(
                    "cannot create the notify socket: units with notify readiness will fail to start: {e}"
                );
                None
            }
        };
        Probes {
            exec: HashMap::new(),
            notify_socket,
        }
    }
}

impl Supervisor {
    /// Right before an instance is spawned: where a `log` check starts reading.
    pub(super) fn checks_before_spawn(&mut self, name: &str, index: u32) {
        let log = super::logs::log_path(&self.config.log_dir, name, index);
        let Some(entry) = self.units.get_mut(name) else {
            return;
        };
        let is_log = matches!(
            entry.unit.ready.as_ref().map(|r| &r.check),
            Some(Check::Log(_))
        );
        if let Some(inst) = entry.instances.get_mut(index as usize) {
            inst.checks.log_offset = if is_log {
                std::fs::metadata(&log).map_or(0, |m| m.len())
            } else {
                0
            };
        }
    }

    /// The environment an instance of `unit` gets for its checks (`NOTIFY_SOCKET`).
    pub(super) fn check_env(
        &self,
        unit: &Unit,
        env: &mut std::collections::BTreeMap<String, String>,
    ) {
        if matches!(unit.ready.as_ref().map(|r| &r.check), Some(Check::Notify)) {
            if let Some(socket) = &self.probes.notify_socket {
                env.insert("NOTIFY_SOCKET".into(), socket.clone());
            }
        }
    }

    /// An instance's process `run` was spawned (and not stopped meanwhile): its health
    /// checks begin or, with `[ready]`, its readiness checks.
    pub(super) fn checks_after_spawn(&mut self, name: &str, index: u32, run: i64) {
        let Some(unit) = self.units.get(name).map(|e| e.unit.clone()) else {
            return;
        };
        let Some(ready) = &unit.ready else {
            self.arm_health(name, index, run, false);
            return;
        };
        if ready.check == Check::Notify && self.probes.notify_socket.is_none() {
            self.fail_instance(
                name,
                index,
                "not_ready",
                "corrald has no notify socket (see its log), so READY=1 cannot arrive".into(),
            );
            return;
        }
        self.after(
            ready.deadline,
            Msg::Probe(ProbeMsg::Deadline {
                unit: name.to_owned(),
                instance: index,
                run,
            }),
        );
        if ready.check != Check::Notify {
            self.probe_now(name, index, run, Phase::Ready);
        }
    }

    /// Instances adopted after a restart of corrald are ready; their health checks resume.
    pub(super) fn checks_after_recovery(&mut self) {
        let adopted: Vec<(String, u32, i64)> = self
            .units
            .values_mut()
            .flat_map(|e| {
                let has_ready = e.unit.ready.is_some();
                let name = e.unit.name.clone();
                e.instances.iter_mut().filter_map(move |i| {
                    let run = i
                        .run_id()
                        .filter(|_| i.wire_state() == InstanceState::Running)?;
                    i.checks.ready = has_ready.then_some(true);
                    Some((name.clone(), i.index, run))
                })
            })
            .collect();
        for (name, index, run) in adopted {
            self.arm_health(&name, index, run, false);
        }
    }

    pub(super) fn on_probe(&mut self, msg: ProbeMsg) {
        match msg {
            ProbeMsg::Due {
                unit,
                instance,
                run,
                phase,
            } => {
                if self.probe_wanted(&unit, instance, run, phase) {
                    self.probe_now(&unit, instance, run, phase);
                }
            }
            ProbeMsg::Done {
                unit,
                instance,
                run,
                phase,
                outcome,
                log_offset,
            } => {
                if let (Some(offset), Some(inst)) = (log_offset, self.instance_mut(&unit, instance))
                {
                    if inst.run_id() == Some(run) {
                        inst.checks.log_offset = offset;
                    }
                }
                self.probe_outcome(&unit, instance, run, phase, outcome);
            }
            ProbeMsg::Deadline {
                unit,
                instance,
                run,
            } => self.on_ready_deadline(&unit, instance, run),
            ProbeMsg::ExecTimeout { token } => {
                let Some(probe) = self.probes.exec.remove(&token) else {
                    return;
                };
                let timeout = self.probe_timeout(&probe.unit, probe.phase);
                if let Some(pid) = probe.pid {
                    kill_group(pid, Signal::SIGKILL);
                }
                self.probe_outcome(
                    &probe.unit,
                    probe.instance,
                    probe.run,
                    probe.phase,
                    Err(format!(
                        "timed out after {}",
                        corral_config::format_duration(timeout)
                    )),
                );
            }
            ProbeMsg::Notify { pid, pgid, text } => self.on_notify(pid, pgid, &text),
            ProbeMsg::Memory(groups) => self.on_memory(groups),
        }
    }

    fn probe_timeout(&self, unit: &str, phase: Phase) -> Duration {
        let unit = self.units.get(unit).map(|e| e.unit.clone());
        let timeout = match phase {
            Phase::Ready => unit.and_then(|u| u.ready.as_ref().map(|r| r.timeout)),
            Phase::Health => unit.and_then(|u| u.health.as_ref().map(|h| h.timeout)),
        };
        timeout.unwrap_or(corral_config::PROBE_TIMEOUT)
    }

    /// Whether a probe of `phase` still makes sense for this run.
    fn probe_wanted(&self, name: &str, index: u32, run: i64, phase: Phase) -> bool {
        let Some(inst) = self
            .units
            .get(name)
            .and_then(|e| e.instances.get(index as usize))
        else {
            return false;
        };
        inst.run_id() == Some(run)
            && inst.checks.kill_reason.is_none()
            && match phase {
                Phase::Ready => {
                    inst.wire_state() == InstanceState::Starting && inst.checks.ready == Some(false)
                }
                Phase::Health => inst.wire_state() == InstanceState::Running,
            }
    }

    /// Arms the next health probe (at once when `soon`).
    fn arm_health(&self, name: &str, index: u32, run: i64, soon: bool) {
        let Some(health) = self.units.get(name).and_then(|e| e.unit.health.clone()) else {
            return;
        };
        self.after(
            if soon {
                Duration::ZERO
            } else {
                health.interval
            },
            Msg::Probe(ProbeMsg::Due {
                unit: name.to_owned(),
                instance: index,
                run,
                phase: Phase::Health,
            }),
        );
    }

    /// Runs one probe of `phase` now; its outcome arrives as a message.
    fn probe_now(&mut self, name: &str, index: u32, run: i64, phase: Phase) {
        let Some(entry) = self.units.get(name) else {
            return;
        };
        let unit = entry.unit.clone();
        let (check, timeout) = match phase {
            Phase::Ready => match &unit.ready {
                Some(r) => (r.check.clone(), r.timeout),
                None => return,
            },
            Phase::Health => match &unit.health {
                Some(h) => (h.check.clone(), h.timeout),
                None => return,
            },
        };
        let check = match check.substitute(corral_config::INSTANCE_PLACEHOLDER, &index.to_string())
        {
            Ok(check) => check,
            Err(e) => return self.probe_outcome(name, index, run, phase, Err(e)),
        };
        let tx = self.tx.clone();
        let (unit_name, instance) = (name.to_owned(), index);
        let report = move |outcome: Result<(), String>, log_offset: Option<u64>| {
            let _ = tx.send(Msg::Probe(ProbeMsg::Done {
                unit: unit_name,
                instance,
                run,
                phase,
                outcome,
                log_offset,
            }));
        };
        match check {
            Check::Exec(argv) => self.exec_probe(&unit, index, run, phase, argv, timeout),
            Check::Http(target) => {
                tokio::spawn(async move {
                    let outcome = match tokio::time::timeout(timeout, http_get(&target)).await {
                        Ok(r) => r,
                        Err(_) => Err(timed_out(timeout)),
                    };
                    report(outcome, None);
                });
            }
            Check::Tcp(addr) => {
                tokio::spawn(async move {
                    let outcome =
                        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr))
                            .await
                        {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e}")),
                            Err(_) => Err(timed_out(timeout)),
                        };
                    report(outcome, None);
                });
            }
            Check::Log(pattern) => {
                let path = super::logs::log_path(&self.config.log_dir, name, index);
                let offset = entry
                    .instances
                    .get(index as usize)
                    .map_or(0, |i| i.checks.log_offset);
                tokio::task::spawn_blocking(move || {
                    let (outcome, offset) = scan_log(&path, offset, &pattern);
                    report(outcome, Some(offset));
                });
            }
            Check::Notify => {}
        }
    }

    fn exec_probe(
        &mut self,
        unit: &Unit,
        index: u32,
        run: i64,
        phase: Phase,
        argv: Vec<String>,
        timeout: Duration,
    ) {
        let token = self.owners.issue_with(|token| Proc::Probe { token });
        let stderr =
            super::logs::log_path(&self.config.log_dir, &unit.name, index).with_extension("check");
        self.probes.exec.insert(
            token,
            ExecProbe {
                unit: unit.name.clone(),
                instance: index,
                run,
                phase,
                pid: None,
                stderr: stderr.clone(),
            },
        );
        match self.spawn_spec(unit, index) {
            Ok(mut spec) => {
                spec.argv = argv;
                spec.output = Output::Files {
                    stdout: PathBuf::from("/dev/null"),
                    stderr,
                };
                spec.die_with_parent = true;
                spec.env.remove("NOTIFY_SOCKET");
                self.procs.spawn(token, spec);
                self.after(timeout, Msg::Probe(ProbeMsg::ExecTimeout { token }));
            }
            Err(reason) => {
                self.probes.exec.remove(&token);
                self.owners.spawned(token);
                self.probe_outcome(&unit.name, index, run, phase, Err(reason));
            }
        }
    }

    /// The spawn outcome of the `exec` probe of `token`.
    pub(super) fn probe_spawned(&mut self, token: u64, result: Result<Spawned, String>) {
        if let Ok(spawned) = &result {
            // Known until its exit, even if its outcome was given meanwhile.
            self.owners.running(spawned.pid, Proc::Probe { token });
        }
        let Some(probe) = self.probes.exec.get_mut(&token) else {
            // Timed out before its process was there: it goes as a timed-out probe does.
            if let Ok(spawned) = result {
                kill_group(spawned.pid, Signal::SIGKILL);
            }
            return;
        };
        match result {
            Ok(spawned) => probe.pid = Some(spawned.pid),
            Err(reason) => {
                let Some(probe) = self.probes.exec.remove(&token) else {
                    return;
                };
                let reason = format!("cannot run the check: {reason}");
                self.probe_outcome(
                    &probe.unit,
                    probe.instance,
                    probe.run,
                    probe.phase,
                    Err(reason),
                );
            }
        }
    }

    /// The exit of process `pid`, the `exec` probe of `token`.
    pub(super) fn probe_exited(&mut self, token: u64, pid: i32, status: ExitStatus) {
        // Whatever the probe left behind in its group goes with it.
        kill_group(pid, Signal::SIGKILL);
        let Some(probe) = self.probes.exec.remove(&token) else {
            return; // timed out: its outcome was given then
        };
        let outcome = if status.success() {
            Ok(())
        } else {
            let said = super::logs::tail_lines(&probe.stderr, 1)
                .ok()
                .and_then(|lines| lines.into_iter().last())
                .map(|l| format!(": {}", l.trim_end()))
                .unwrap_or_default();
            Err(format!("the check {status}{said}"))
        };
        self.probe_outcome(&probe.unit, probe.instance, probe.run, probe.phase, outcome);
    }

    fn probe_outcome(
        &mut self,
        name: &str,
        index: u32,
        run: i64,
        phase: Phase,
        outcome: Result<(), String>,
    ) {
        if !self.probe_wanted(name, index, run, phase) {
            return;
        }
        let Some(entry) = self.units.get_mut(name) else {
            return;
        };
        let unit = entry.unit.clone();
        let Some(inst) = entry.instances.get_mut(index as usize) else {
            return;
        };
        match (phase, outcome) {
            (Phase::Ready, Ok(())) => self.became_ready(name, index),
            (Phase::Ready, Err(e)) => {
                inst.checks.last_error = Some(e);
                let interval = unit.ready.as_ref().map_or(Duration::ZERO, |r| r.interval);
                self.after(
                    interval,
                    Msg::Probe(ProbeMsg::Due {
                        unit: name.to_owned(),
                        instance: index,
                        run,
                        phase,
                    }),
                );
            }
            (Phase::Health, Ok(())) => {
                let was = inst.checks.healthy.replace(true);
                inst.checks.health_failures = 0;
                inst.checks.last_error = None;
                if was == Some(false) {
                    crate::version::state_changed();
                }
                self.arm_health(name, index, run, false);
            }
            (Phase::Health, Err(e)) => {
                let limit = unit.health.as_ref().map_or(1, |h| h.failures);
                let checks = &mut inst.checks;
                checks.healthy = Some(false);
                checks.health_failures += 1;
                checks.health_failures_total += 1;
                checks.last_error = Some(e.clone());
                let n = checks.health_failures;
                self.event(
                    name,
                    Some(index),
                    "health_failed",
                    format!("{n} of {limit} in a row: {e}"),
                );
                if n >= limit {
                    let check = unit.health.as_ref().map(|h| h.check.describe());
                    let reason = format!(
                        "unhealthy: {n} failed health checks in a row ({}): {e}",
                        check.unwrap_or_default()
                    );
                    self.fail_instance(name, index, "unhealthy", reason);
                } else {
                    self.arm_health(name, index, run, false);
                }
            }
        }
    }

    /// The current run passed its `[ready]` check.
    fn became_ready(&mut self, name: &str, index: u32) {
        let now = Instant::now();
        let run = self.decide(name, index, |inst, _, fx| inst.became_ready(now, fx));
        if let Some(Some(run)) = run {
            self.arm_health(name, index, run, false);
        }
    }

    fn on_ready_deadline(&mut self, name: &str, index: u32, run: i64) {
        if !self.probe_wanted(name, index, run, Phase::Ready) {
            return;
        }
        let Some(entry) = self.units.get(name) else {
            return;
        };
        let Some(ready) = entry.unit.ready.clone() else {
            return;
        };
        let Some(inst) = entry.instances.get(index as usize) else {
            return;
        };
        let last = inst
            .checks
            .last_error
            .as_ref()
            .map(|e| format!("; last probe: {e}"))
            .unwrap_or_else(|| match ready.check {
                Check::Notify => "; no READY=1 arrived on $NOTIFY_SOCKET".to_owned(),
                Check::Log(_) => "; no line of its output matched".to_owned(),
                _ => String::new(),
            });
        let reason = format!(
            "not ready within {} ({}){last}",
            corral_config::format_duration(ready.deadline),
            ready.check.describe()
        );
        self.fail_instance(name, index, "not_ready", reason);
    }

    fn on_notify(&mut self, pid: i32, pgid: Option<i32>, text: &str) {
        let owner = self
            .instance_of(pid)
            .or_else(|| pgid.and_then(|g| self.instance_of(g)));
        let Some((name, index)) = owner else {
            tracing::debug!("notify datagram from pid {pid}, not in any instance: ignored");
            return;
        };
        if !text.lines().any(|l| l.trim_end() == "READY=1") {
            return;
        }
        let Some(entry) = self.units.get(&name) else {
            return;
        };
        let wants = matches!(
            entry.unit.ready.as_ref().map(|r| &r.check),
            Some(Check::Notify)
        );
        let Some(run) = entry.instances.get(index as usize).and_then(|i| i.run_id()) else {
            return;
        };
        if wants && self.probe_wanted(&name, index, run, Phase::Ready) {
            self.became_ready(&name, index);
        }
    }

    /// Stops an instance that failed a check; its restart policy applies at its exit.
    pub(super) fn fail_instance(
        &mut self,
        name: &str,
        index: u32,
        kind: &'static str,
        reason: String,
    ) {
        let Some(entry) = self.units.get_mut(name) else {
            return;
        };
        let unit = entry.unit.clone();
        let Some(inst) = entry.instances.get_mut(index as usize) else {
            return;
        };
        if inst.run().is_none() {
            return;
        }
        inst.checks.kill_reason = Some(reason.clone());
        inst.reason = Some(reason.clone());
        self.event(name, Some(index), kind, reason);
        self.stop_instance(&unit, index, None, kind);
    }
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "timed out after {}",
        corral_config::format_duration(timeout)
    )
}
