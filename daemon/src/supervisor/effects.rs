//! The runner: carries out the [`Effect`]s the state machine ([`machine`]) decides, the
//! only place where an instance's decisions spawn, signal, arm timers and write to the
//! store, and where waiting requests are answered.

use super::machine::{Answer, Effect, Effects, Timer, WaiterId};
use nix::unistd::Pid;

use super::*;

impl Supervisor {
    /// Runs one decision of the state machine on instance `index` of unit `name` (given
    /// the instance and its unit), then carries out its effects. `None` when there is no
    /// such instance.
    pub(super) fn decide<T>(
        &mut self,
        name: &str,
        index: u32,
        decide: impl FnOnce(&mut Instance, &Unit, &mut Effects) -> T,
    ) -> Option<T> {
        let entry = self.units.get_mut(name)?;
        let unit = entry.unit.clone();
        let inst = entry.instances.get_mut(index as usize)?;
        let mut fx = Effects::new();
        let out = decide(inst, &unit, &mut fx);
        self.apply(name, index, fx);
        Some(out)
    }

    /// Carries out `fx`, in order, for instance `index` of unit `name`.
    pub(super) fn apply(&mut self, name: &str, index: u32, fx: Effects) {
        for effect in fx {
            match effect {
                Effect::Event { kind, detail } => self.event(name, Some(index), kind, detail),
                Effect::Changed => crate::version::state_changed(),
                Effect::Spawn { token } => self.spawn_process(name, index, token),
                Effect::Signal { pid, signal } => {
                    signal_instance(self.config.cgroups.as_deref(), name, index, pid, signal);
                }
                Effect::KillStray { pid } => kill_group(pid, Signal::SIGKILL),
                Effect::Timer { delay, timer } => {
                    let (unit, instance) = (name.to_owned(), index);
                    let msg = match timer {
                        Timer::Restart { generation } => Msg::RestartDue {
                            unit,
                            instance,
                            generation,
                        },
                        Timer::StopTimeout { generation } => Msg::StopTimeout {
                            unit,
                            instance,
                            generation,
                        },
                        Timer::Wake { at } => {
                            self.wake(at, delay);
                            continue;
                        }
                    };
                    self.after(delay, msg);
                }
                Effect::RunStarted(start) => {
                    self.next_run_id = self.next_run_id.max(start.id + 1);
                    let unit = name.to_owned();
                    self.owners
                        .running(start.pid, Proc::Instance { unit, index });
                    self.store.run_started(start);
                }
                Effect::RunEnded { run, status } => {
                    self.store.run_ended(run, Some(status));
                    // The tick checks only logs of instances with a process: check this
                    // one a last time, so that a stopped instance's log is within its
                    // bound too.
                    if let Some(entry) = self.units.get(name) {
                        let rotation = logs::Rotation {
                            path: logs::log_path(&self.config.log_dir, name, index),
                            max_size: entry.unit.log_max_size,
                            keep: entry.unit.log_keep,
                        };
                        tokio::task::spawn_blocking(move || {
                            logs::rotate_all(std::slice::from_ref(&rotation));
                        });
                    }
                }
                Effect::Checks { run } => self.checks_after_spawn(name, index, run),
                Effect::ReplyTo { waiter, answer } => self.reply_to(waiter, answer),
            }
        }
    }

    /// Carries out `fx` of a decision about the waiters, which concerns no one instance:
    /// answers and the wake-up of `start --wait`.
    pub(super) fn apply_to_waiters(&mut self, fx: Effects) {
        for effect in fx {
            match effect {
                Effect::ReplyTo { waiter, answer } => self.reply_to(waiter, answer),
                Effect::Timer {
                    delay,
                    timer: Timer::Wake { at },
                } => self.wake(at, delay),
                Effect::Changed => crate::version::state_changed(),
                other => {
                    tracing::error!("not carried out, it needs an instance: {other:?}");
                }
            }
        }
    }

    /// Arms a [`Msg::Wake`] `delay` from now (`at`), unless one is due by then.
    fn wake(&mut self, at: Instant, delay: Duration) {
        if self.wake_at.is_none_or(|w| w > at) {
            self.wake_at = Some(at);
            self.after(delay, Msg::Wake);
        }
    }

    /// Sends `answer` on the reply channel of `waiter`.
    fn reply_to(&mut self, waiter: WaiterId, answer: Answer) {
        let Some(reply) = self.replies.remove(&waiter) else {
            tracing::error!("waiter {waiter} has no reply channel; not sent: {answer:?}");
            return;
        };
        match (reply, answer) {
            (WaiterReply::Units(reply), Answer::Units(units)) => {
                let _ = reply.send(Ok(UnitsResult { units }));
            }
            (WaiterReply::Units(reply), Answer::StartUnits(units)) => {
                let _ = reply.send(
                    self.refuse_if_shutting_down()
                        .and_then(|()| self.start_units(&units))
                        .map(|units| UnitsResult { units }),
                );
            }
            (WaiterReply::Exits(reply), Answer::Exits(result)) => {
                let _ = reply.send(result);
            }
            (WaiterReply::Pid(reply), Answer::Pid(pid)) => {
                let _ = reply.send(Ok(pid));
            }
            (WaiterReply::Started(reply), Answer::Started(failed)) => {
                let log_dir = &self.config.log_dir;
                let failures = failed
                    .into_iter()
                    .map(|(unit, instance, reason)| StartFailure {
                        log: logs::log_path(log_dir, &unit, instance),
                        unit,
                        instance,
                        reason,
                    })
                    .collect();
                let _ = reply.send(Ok(failures));
            }
            (_, answer) => {
                // Its channel is dropped: the client hears that the request was lost.
                tracing::error!("waiter {waiter}: {answer:?} does not answer its request");
            }
        }
    }

    /// Asks the process thread to spawn the instance's process; a spec that cannot be
    /// made (a missing environment file, say) fails like a spawn that failed.
    fn spawn_process(&mut self, name: &str, index: u32, token: u64) {
        let Some(entry) = self.units.get_mut(name) else {
            return;
        };
        let unit = entry.unit.clone();
        // Passed descriptors serve one start: corrald keeps no copy of a client's pipe
        // open once the process has it (a restart writes to the unit's log instead).
        let stdio = entry.stdio.take();
        self.checks_before_spawn(name, index);
        match self.spawn_spec(&unit, index) {
            Ok(mut spec) => {
                if let Some(fds) = stdio {
                    spec.output = Output::Passed(fds);
                }
                self.procs.spawn(token, spec);
            }
            Err(reason) => self.on_spawned(token, Err(reason)),
        }
    }
}

/// Sends `signal` to an instance's process group and, in cgroup mode, to every process
/// of its cgroup (those that left the group with `setsid` too); SIGKILL there is
/// `cgroup.kill`, which no process can escape by forking.
pub(super) fn signal_instance(
    cgroups: Option<&cgroup::Cgroups>,
    unit: &str,
    index: u32,
    pid: i32,
    signal: Signal,
) {
    kill_group(pid, signal);
    let Some(cg) = cgroups else { return };
    if signal == Signal::SIGKILL {
        cg.kill(unit, index);
        return;
    }
    for member in cg.pids(unit, index) {
        match nix::sys::signal::kill(Pid::from_raw(member), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => tracing::warn!("kill({member}, {signal}): {e}"),
        }
    }
}
