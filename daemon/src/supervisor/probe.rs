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
//! the [process thread](super::process) like instances (in a process group of their own,
//! with the instance's user, environment and working directory); `http`, `tcp` and `log`
//! probes run in tasks that report back with a [`ProbeMsg`]. Each message carries the run
//! id of the instance's process, so an outcome about an earlier run is ignored.
//!
//! `notify` readiness uses one datagram socket in the abstract namespace, passed to
//! instances as `NOTIFY_SOCKET`; the kernel attaches the sender's pid to each datagram
//! (`SO_PASSCRED`), and a `READY=1` counts for the instance whose process group the sender
//! is in.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_config::{Check, Unit};
use corral_proto::{ExitStatus, InstanceState};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Msg, Supervisor, kill_group};
use crate::process::{Output, Spawned};
use crate::procstat::ProcStat;

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

/// Check state of one instance.
#[derive(Debug, Default)]
pub(super) struct InstanceChecks {
    /// `None` without `[ready]`; else whether the current run has passed it.
    pub ready: Option<bool>,
    /// `None` without `[health]` or before its first probe.
    pub healthy: Option<bool>,
    /// Failed health probes in a row.
    pub health_failures: u32,
    /// Failed health probes since corrald started.
    pub health_failures_total: u64,
    /// Why the last probe failed.
    pub last_error: Option<String>,
    /// For a `log` check: the log's size when the current run was spawned, then how far
    /// it has been read.
    pub log_offset: u64,
    /// Set when corrald stopped the instance for a failed check: at its exit the restart
    /// policy applies as after a failure.
    pub kill_reason: Option<String>,
    /// Why corrald last restarted the instance for a failed check, until it is started
    /// again by request: its status's reason when it has no other.
    pub restarted_for: Option<String>,
    /// When the current run was spawned.
    pub spawned: Option<Instant>,
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
    /// `exec` probes by spawn token.
    exec: HashMap<u64, ExecProbe>,
    /// `exec` probe processes by pid: their token, or `None` once their outcome was
    /// given (a timed-out probe whose exit is still to come).
    exec_pids: HashMap<i32, Option<u64>>,
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
            exec_pids: HashMap::new(),
            notify_socket,
        }
    }
}

/// Binds `@corral-notify-PID-N` with `SO_PASSCRED` and forwards what arrives.
fn notify_listener(tx: mpsc::UnboundedSender<Msg>) -> std::io::Result<String> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    // The pid and the time: abstract names are shared by everything in the network
    // namespace, also by corralds in other pid namespaces.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("corral-notify-{}-{nanos:x}", std::process::id());
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)?;
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UnixDatagram::from_std(sock)?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            if sock.readable().await.is_err() {
                return;
            }
            let got = sock.try_io(tokio::io::Interest::READABLE, || {
                recv_with_pid(&sock, &mut buf).map_err(std::io::Error::from)
            });
            let (len, pid) = match got {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::warn!("notify socket: {e}");
                    continue;
                }
            };
            let Some(pid) = pid else { continue };
            // Read the group now: a short-lived sender (systemd-notify) is soon gone.
            let pgid = ProcStat::read(pid).map(|s| s.pgrp);
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            if tx
                .send(Msg::Probe(ProbeMsg::Notify { pid, pgid, text }))
                .is_err()
            {
                return;
            }
        }
    });
    Ok(format!("@{name}"))
}

/// One datagram into `buf`: its length and the sender's pid.
fn recv_with_pid(
    sock: &tokio::net::UnixDatagram,
    buf: &mut [u8],
) -> nix::Result<(usize, Option<i32>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
    use std::os::fd::AsRawFd;
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
    )?;
    let pid = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
        _ => None,
    });
    Ok((msg.bytes.min(iov[0].len()), pid))
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

    /// An instance's process was spawned (and not stopped meanwhile): it is running, or,
    /// with `[ready]`, starting until its check passes.
    pub(super) fn spawn_succeeded(&mut self, name: &str, index: u32, pid: i32) {
        let Some(entry) = self.units.get_mut(name) else {
            return;
        };
        let unit = entry.unit.clone();
        let inst = &mut entry.instances[index as usize];
        let Some(run) = inst.run_id else { return };
        let checks = &mut inst.checks;
        checks.ready = unit.ready.as_ref().map(|_| false);
        checks.healthy = None;
        checks.health_failures = 0;
        checks.last_error = None;
        checks.kill_reason = None;
        checks.spawned = Some(Instant::now());
        let Some(ready) = &unit.ready else {
            inst.state = InstanceState::Running;
            self.event(name, Some(index), "started", format!("pid {pid}"));
            self.arm_health(name, index, run, false);
            return;
        };
        inst.state = InstanceState::Starting;
        self.event(
            name,
            Some(index),
            "started",
            format!(
                "pid {pid}; starting until ready ({})",
                ready.check.describe()
            ),
        );
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
                    let run = i.run_id.filter(|_| i.state == InstanceState::Running)?;
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
                    if inst.run_id == Some(run) {
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
                    self.probes.exec_pids.insert(pid, None);
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
        inst.run_id == Some(run)
            && inst.checks.kill_reason.is_none()
            && match phase {
                Phase::Ready => {
                    inst.state == InstanceState::Starting && inst.checks.ready == Some(false)
                }
                Phase::Health => inst.state == InstanceState::Running,
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
                let offset = entry.instances[index as usize].checks.log_offset;
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
        let token = self.tokens.fresh();
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
                self.probe_outcome(&unit.name, index, run, phase, Err(reason));
            }
        }
    }

    /// A spawn result for an `exec` probe: handled (true), or not a probe's (false).
    pub(super) fn probe_spawned(&mut self, token: u64, result: &Result<Spawned, String>) -> bool {
        let Some(probe) = self.probes.exec.get_mut(&token) else {
            return false;
        };
        match result {
            Ok(spawned) => {
                probe.pid = Some(spawned.pid);
                self.probes.exec_pids.insert(spawned.pid, Some(token));
            }
            Err(reason) => {
                let probe = self.probes.exec.remove(&token).expect("looked up");
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
        true
    }

    /// An exit of an `exec` probe: handled (true), or not a probe's (false).
    pub(super) fn probe_exited(&mut self, pid: i32, status: ExitStatus) -> bool {
        let Some(token) = self.probes.exec_pids.remove(&pid) else {
            return false;
        };
        // Whatever the probe left behind in its group goes with it.
        kill_group(pid, Signal::SIGKILL);
        let Some(probe) = token.and_then(|t| self.probes.exec.remove(&t)) else {
            return true; // timed out: its outcome was given then
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
        true
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
        let unit = self.units[name].unit.clone();
        let inst = self
            .instance_mut(name, index)
            .expect("checked by probe_wanted");
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
        let Some(inst) = self.instance_mut(name, index) else {
            return;
        };
        inst.state = InstanceState::Running;
        inst.checks.ready = Some(true);
        inst.checks.last_error = None;
        let after = inst
            .checks
            .spawned
            .map(|t| format!(" {}ms after the spawn", t.elapsed().as_millis()))
            .unwrap_or_default();
        let run = inst.run_id;
        self.event(name, Some(index), "ready", format!("ready{after}"));
        if let Some(run) = run {
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
        let inst = &entry.instances[index as usize];
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
            .by_pid
            .get(&pid)
            .or_else(|| pgid.and_then(|g| self.by_pid.get(&g)))
            .cloned();
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
        let Some(run) = entry.instances.get(index as usize).and_then(|i| i.run_id) else {
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
        let inst = &mut entry.instances[index as usize];
        if inst.pid.is_none() {
            return;
        }
        inst.checks.kill_reason = Some(reason.clone());
        inst.reason = Some(reason.clone());
        self.event(name, Some(index), kind, reason);
        self.stop_instance(&unit, index, None, kind);
    }

    /// Every tick: measures the memory of instances with `max_memory`, off the
    /// supervisor's thread; the result comes back as [`ProbeMsg::Memory`].
    pub(super) fn check_memory(&self) {
        let groups: Vec<(String, u32, i64, i32)> = self
            .units
            .values()
            .filter(|e| e.unit.max_memory.is_some())
            .flat_map(|e| {
                e.instances.iter().filter_map(|i| {
                    let run = i.run_id?;
                    let pid = i.pid?;
                    Some((e.unit.name.clone(), i.index, run, pid))
                })
            })
            .collect();
        if groups.is_empty() {
            return;
        }
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let rss = group_rss(groups.iter().map(|g| g.3));
            let measured = groups
                .into_iter()
                .map(|(unit, index, run, pgid)| {
                    (unit, index, run, rss.get(&pgid).copied().unwrap_or(0))
                })
                .collect();
            let _ = tx.send(Msg::Probe(ProbeMsg::Memory(measured)));
        });
    }

    fn on_memory(&mut self, groups: Vec<(String, u32, i64, u64)>) {
        for (name, index, run, bytes) in groups {
            let Some(entry) = self.units.get(&name) else {
                continue;
            };
            let Some(limit) = entry.unit.max_memory else {
                continue;
            };
            let Some(inst) = entry.instances.get(index as usize) else {
                continue;
            };
            let live = matches!(inst.state, InstanceState::Running | InstanceState::Starting);
            if inst.run_id != Some(run) || !live || inst.checks.kill_reason.is_some() {
                continue;
            }
            if bytes > limit {
                let reason = format!(
                    "memory: its process group's resident memory {} passed max_memory {}",
                    mib(bytes),
                    mib(limit)
                );
                self.fail_instance(&name, index, "memory_limit", reason);
            }
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "timed out after {}",
        corral_config::format_duration(timeout)
    )
}

/// Resident memory by process group, for the groups asked about, from one pass over
/// `/proc`.
fn group_rss(pgids: impl Iterator<Item = i32>) -> HashMap<i32, u64> {
    let mut sums: HashMap<i32, u64> = pgids.map(|g| (g, 0)).collect();
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return sums;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(stat) = ProcStat::read(pid) {
            if let Some(sum) = sums.get_mut(&stat.pgrp) {
                *sum += stat.rss_pages * page;
            }
        }
    }
    sums
}

/// The longest piece of a log read per probe.
const LOG_CHUNK: u64 = 1 << 20;

/// Looks for a line matching `pattern` in `path` from `offset`: the outcome, and the
/// offset to go on from (the start of an unfinished last line).
fn scan_log(path: &Path, offset: u64, pattern: &str) -> (Result<(), String>, u64) {
    let regex = match regex::Regex::new(pattern) {
        Ok(r) => r,
        Err(e) => return (Err(format!("bad pattern: {e}")), offset),
    };
    let Ok(mut file) = std::fs::File::open(path) else {
        return (Err("no log yet".into()), offset);
    };
    let len = file.metadata().map_or(0, |m| m.len());
    // Rotated (copied, then truncated) since the last look: read from the start.
    let offset = if len < offset { 0 } else { offset };
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err()
        || file.take(LOG_CHUNK).read_to_end(&mut buf).is_err()
    {
        return (Err("cannot read the log".into()), offset);
    }
    let complete = match buf.iter().rposition(|b| *b == b'\n') {
        Some(end) => end + 1,
        // One very long line without its end: take it as it is.
        None if buf.len() as u64 >= LOG_CHUNK => buf.len(),
        None => 0,
    };
    let text = String::from_utf8_lossy(&buf[..complete]);
    let next = offset + complete as u64;
    match text.lines().any(|l| regex.is_match(l)) {
        true => (Ok(()), next),
        false => (Err("no line of its output matched yet".into()), next),
    }
}

/// A GET of `target` over HTTP/1.1: Ok for a 2xx status.
async fn http_get(target: &corral_config::HttpTarget) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
    let host = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: corrald\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    // The status line is all that matters; it must come within the first 4 KiB.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let status = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(format!("{} answered {code}", target.url)),
        None => Err(format!(
            "{} did not answer HTTP: {:?}",
            target.url,
            line.chars().take(80).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scanning_goes_on_from_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.0.log");
        std::fs::write(&path, "old: listening on 1\n").unwrap();
        let start = std::fs::metadata(&path).unwrap().len();
        // What was there before the spawn does not count.
        let (outcome, offset) = scan_log(&path, start, r"listening on \d+");
        assert!(outcome.is_err());
        assert_eq!(offset, start);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("booting\nlistening on 8");
        std::fs::write(&path, &text).unwrap();
        let (outcome, offset) = scan_log(&path, start, r"listening on \d+");
        assert!(outcome.is_err(), "an unfinished line is not looked at yet");
        assert_eq!(offset, start + "booting\n".len() as u64);
        text.push_str("080\n");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(scan_log(&path, offset, r"listening on \d+").0, Ok(()));
        // Truncated by rotation: from the start again.
        std::fs::write(&path, "listening on 9\n").unwrap();
        assert_eq!(scan_log(&path, offset, r"listening on 9").0, Ok(()));
    }
}
