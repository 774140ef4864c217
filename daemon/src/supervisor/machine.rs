//! The instance state machine, apart from its side effects.
//!
//! An [`Instance`]'s [`State`] carries the data valid in it: a spawn in flight has its
//! token, a process its pid, run id and start time ([`Run`]), a backoff its end. Every
//! change of state goes through [`Instance::transition`], which bumps the generation
//! (so timers armed before are recognised as stale), and records the event or marks the
//! state changed. The decisions (start, spawn outcome, exit and the restart policy,
//! backoff, the start limit (`machine/restart.rs`), stop, kill; dependency gating and
//! the shutdown order for units (`machine/units.rs`)) change instance state and return
//! [`Effect`]s: what is to be spawned, signalled, timed, recorded and logged. Which
//! waiting requests (`stop`, `restart`, `wait`, `start --wait`, `run`'s first pid) a
//! state satisfies is decided too
//! (`machine/waiters.rs`), and answering them is an effect as well
//! ([`Effect::ReplyTo`]). The actor carries effects out in one place
//! (`Supervisor::apply`, in `effects.rs`). The clock is a parameter, so the tests
//! (`machine/tests.rs`) run without processes or waiting.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use corral_config::{RestartPolicy, Unit};
use corral_proto::{ExitStatus, InstanceState, InstanceStatus};
use nix::sys::signal::Signal;

use crate::store::RunStart;

mod restart;
mod units;
mod waiters;
#[cfg(test)]
use restart::backoff;
pub(super) use units::{ReloadAction, deps_ready, reload_action, shutdown_step};
pub(super) use waiters::{Answer, Wait, WaiterId, Waiters};

/// One process of an instance: what identifies it and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    /// Its pid, also its process group.
    pub(super) pid: i32,
    /// Its run id in the store.
    pub(super) id: i64,
    /// When it was spawned (or, adopted, when it started in corrald's previous life).
    pub(super) since: Instant,
}

/// Where an instance is, with the data valid there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Never started.
    Inactive,
    /// Asked to start; waits for what it requires or comes after.
    Waiting,
    /// A spawn request is in flight; `signal` asked for (`kill`) meanwhile is sent once
    /// the process is there.
    Spawning { token: u64, signal: Option<Signal> },
    /// Its process runs but has not passed its `[ready]` check yet.
    Starting { run: Run },
    /// Its process runs (and is ready).
    Running { run: Run },
    /// Its process was sent the stop signal; SIGKILL follows at the stop timeout.
    Stopping { run: Run },
    /// Asked to stop while its spawn was in flight: the process is stopped once there.
    Aborting { token: u64, signal: Option<Signal> },
    /// Waiting to be restarted by its restart policy.
    Backoff { until: Instant },
    /// Stopped by request (or shutdown, or reload).
    Stopped,
    /// Ended by itself and not restarted.
    Exited,
    /// Given up: a failed spawn, requirement or check, or the start limit.
    Failed,
}

impl State {
    /// The state as clients see it.
    pub(super) fn wire(self) -> InstanceState {
        match self {
            State::Inactive => InstanceState::Inactive,
            State::Waiting | State::Spawning { .. } | State::Starting { .. } => {
                InstanceState::Starting
            }
            State::Running { .. } => InstanceState::Running,
            State::Stopping { .. } | State::Aborting { .. } => InstanceState::Stopping,
            State::Backoff { .. } => InstanceState::Backoff,
            State::Stopped => InstanceState::Stopped,
            State::Exited => InstanceState::Exited,
            State::Failed => InstanceState::Failed,
        }
    }

    /// The process, in the states that have one.
    pub(super) fn run(self) -> Option<Run> {
        match self {
            State::Starting { run } | State::Running { run } | State::Stopping { run } => Some(run),
            _ => None,
        }
    }
}

/// What a decision leaves for the actor to do, in order.
#[derive(Debug, PartialEq)]
pub(super) enum Effect {
    /// Record and log an event of the instance (and mark the state changed).
    Event { kind: &'static str, detail: String },
    /// The state changed without an event of its own (for the dashboard's version).
    Changed,
    /// Spawn the instance's process; its outcome comes back with `token`.
    Spawn { token: u64 },
    /// Send `signal` to the instance's process group (and its cgroup).
    Signal { pid: i32, signal: Signal },
    /// A process nobody wants any more (its spawn was abandoned): SIGKILL its group.
    KillStray { pid: i32 },
    /// Arm a timer.
    Timer { delay: Duration, timer: Timer },
    /// Record the start of a run (and route the pid's exit to this instance).
    RunStarted(RunStart),
    /// Record the end of a run (and check its log's size a last time).
    RunEnded { run: i64, status: ExitStatus },
    /// The process is there and stays: its readiness and health checks begin.
    Checks { run: i64 },
    /// Answer a waiting request (see [`Waiters`]).
    ReplyTo { waiter: WaiterId, answer: Answer },
}

/// What the spawn of `token` reported, with what taking it in needs.
#[derive(Debug, Clone)]
pub(super) struct SpawnOutcome {
    /// The token the spawn was asked for with.
    pub(super) token: u64,
    /// The process's pid and start time (`/proc/PID/stat` ticks), or why there is none.
    pub(super) result: Result<(i32, u64), String>,
    /// The id its run gets.
    pub(super) run_id: i64,
    /// Whether corrald is shutting down (a spawn that failed is not retried then).
    pub(super) shutting_down: bool,
    /// The clock, when the outcome arrived.
    pub(super) now: Instant,
    /// The wall clock then, in milliseconds since the epoch (for the run's record).
    pub(super) wall_ms: i64,
}

/// The timers of an instance, each stale once the generation has moved on, and the
/// waiters' wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The backoff is over: spawn again.
    Restart { generation: u64 },
    /// The stop timeout has passed: SIGKILL.
    StopTimeout { generation: u64 },
    /// A start window of a `start --wait` ends `at`: look at the waiters again (of the
    /// supervisor as a whole, not of one instance).
    Wake { at: Instant },
}

/// The effects of one decision.
pub(super) type Effects = Vec<Effect>;

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

/// One running copy of a unit.
#[derive(Debug)]
pub(super) struct Instance {
    pub(super) index: u32,
    pub(super) state: State,
    pub(super) restarts: u32,
    pub(super) consecutive_failures: u32,
    pub(super) recent_starts: VecDeque<Instant>,
    pub(super) last_exit: Option<ExitStatus>,
    pub(super) reason: Option<String>,
    /// Bumped by every [`transition`](Instance::transition): timers carry it.
    pub(super) generation: u64,
    /// Readiness and health of the current run.
    pub(super) checks: InstanceChecks,
}

impl Instance {
    pub(super) fn new(index: u32) -> Instance {
        Instance {
            index,
            state: State::Inactive,
            restarts: 0,
            consecutive_failures: 0,
            recent_starts: VecDeque::new(),
            last_exit: None,
            reason: None,
            generation: 0,
            checks: InstanceChecks::default(),
        }
    }

    /// The state as clients see it.
    pub(super) fn wire_state(&self) -> InstanceState {
        self.state.wire()
    }

    /// Whether it is running or due to run (the opposite of settled).
    pub(super) fn is_active(&self) -> bool {
        self.state.wire().is_active()
    }

    /// Its process, if it has one.
    pub(super) fn run(&self) -> Option<Run> {
        self.state.run()
    }

    /// Its process's pid, if it has one.
    pub(super) fn pid(&self) -> Option<i32> {
        self.run().map(|r| r.pid)
    }

    /// The run id of its process, if it has one.
    pub(super) fn run_id(&self) -> Option<i64> {
        self.run().map(|r| r.id)
    }

    /// Whether it has a process or one is on its way.
    pub(super) fn has_process(&self) -> bool {
        matches!(self.state, State::Spawning { .. } | State::Aborting { .. })
            || self.run().is_some()
    }

    pub(super) fn status(&self, now: Instant) -> InstanceStatus {
        let run = self.run();
        let live = run.is_some();
        InstanceStatus {
            instance: self.index,
            state: self.wire_state(),
            pid: run.map(|r| r.pid as u32),
            uptime_ms: run.map(|r| now.saturating_duration_since(r.since).as_millis() as u64),
            restarts: self.restarts,
            last_exit: self.last_exit,
            reason: self
                .reason
                .clone()
                .or_else(|| self.checks.restarted_for.clone()),
            ready: self.checks.ready.filter(|_| live),
            healthy: self.checks.healthy.filter(|_| live),
            health_failures: self.checks.health_failures,
            health_failures_total: self.checks.health_failures_total,
            check_error: self.checks.last_error.clone().filter(|_| live),
            cgroup_cpu_usec: None,
            cgroup_memory_bytes: None,
        }
    }

    /// Into `to`: bumps the generation, so that timers armed before are stale, and
    /// records `event` (or marks the state changed).
    pub(super) fn transition(
        &mut self,
        to: State,
        event: Option<(&'static str, String)>,
        fx: &mut Effects,
    ) {
        self.state = to;
        self.generation += 1;
        fx.push(match event {
            Some((kind, detail)) => Effect::Event { kind, detail },
            None => Effect::Changed,
        });
    }

    /// An explicit start (`start`, a dependent's start, a schedule): forgives the past
    /// (counters and the start limit reset) and waits for its dependencies. Nothing for
    /// an instance already active; whether it was started.
    pub(super) fn start(&mut self, fx: &mut Effects) -> bool {
        if self.is_active() {
            return false;
        }
        self.reason = None;
        self.checks.restarted_for = None;
        self.restarts = 0;
        self.consecutive_failures = 0;
        self.recent_starts.clear();
        self.transition(State::Waiting, None, fx);
        true
    }

    /// Waiting, it cannot start: a requirement failed.
    pub(super) fn dependency_failed(&mut self, reason: String, fx: &mut Effects) {
        self.reason = Some(reason.clone());
        self.transition(State::Failed, Some(("dependency_failed", reason)), fx);
    }

    /// Spawns now with `token`, unless the start limit is used up (then `Failed`).
    /// Whether the token is in use.
    pub(super) fn spawn(
        &mut self,
        unit: &Unit,
        now: Instant,
        token: u64,
        fx: &mut Effects,
    ) -> bool {
        if let Some(reason) = self.start_limit_hit(unit, now) {
            self.reason = Some(reason.clone());
            self.transition(State::Failed, Some(("gave_up", reason)), fx);
            return false;
        }
        self.recent_starts.push_back(now);
        let signal = None;
        self.transition(State::Spawning { token, signal }, None, fx);
        fx.push(Effect::Spawn { token });
        true
    }

    /// The outcome of a spawn (see [`SpawnOutcome`]).
    pub(super) fn spawned(&mut self, unit: &Unit, outcome: SpawnOutcome, fx: &mut Effects) {
        let SpawnOutcome {
            token,
            result,
            run_id,
            shutting_down,
            now,
            wall_ms,
        } = outcome;
        let (aborting, signal) = match self.state {
            State::Spawning { token: t, signal } if t == token => (false, signal),
            State::Aborting { token: t, signal } if t == token => (true, signal),
            _ => {
                // Stopped or forgotten meanwhile: nobody wants this process.
                if let Ok((pid, _)) = result {
                    fx.push(Effect::KillStray { pid });
                }
                return;
            }
        };
        let (pid, start_time) = match result {
            Ok(spawned) => spawned,
            Err(reason)
                if !aborting
                    && !shutting_down
                    && unit.restart != RestartPolicy::No
                    && crate::fds::names_exhaustion(&reason) =>
            {
                // Not the unit's fault: retried with backoff for as long as descriptors
                // are short, and not counted against its start limit.
                self.recent_starts.pop_back();
                let delay = self.next_delay(unit);
                let reason = format!("out of file descriptors: {reason}; retrying in {delay:?}");
                self.reason = Some(reason.clone());
                self.back_off(delay, now, ("spawn_failed", reason), fx);
                return;
            }
            Err(reason) => {
                self.reason = Some(reason.clone());
                let to = if aborting {
                    State::Stopped
                } else {
                    State::Failed
                };
                self.transition(to, Some(("spawn_failed", reason)), fx);
                return;
            }
        };
        let run = Run {
            pid,
            id: run_id,
            since: now,
        };
        self.reason = None; // a start that failed for lack of descriptors, say
        fx.push(Effect::RunStarted(RunStart {
            id: run_id,
            unit: unit.name.clone(),
            instance: self.index,
            pid,
            start_time,
            started_at: wall_ms,
            restart_count: self.restarts,
            daemon: unit.daemon,
        }));
        if let Some(signal) = signal {
            fx.push(Effect::Signal { pid, signal });
        }
        if aborting {
            // A stop arrived while the spawn was in flight.
            self.transition(State::Stopping { run }, None, fx);
            self.signal_stop(unit, pid, None, fx);
            return;
        }
        let checks = &mut self.checks;
        checks.ready = unit.ready.as_ref().map(|_| false);
        checks.healthy = None;
        checks.health_failures = 0;
        checks.last_error = None;
        checks.kill_reason = None;
        checks.spawned = Some(now);
        match &unit.ready {
            None => self.transition(
                State::Running { run },
                Some(("started", format!("pid {pid}"))),
                fx,
            ),
            Some(ready) => self.transition(
                State::Starting { run },
                Some((
                    "started",
                    format!(
                        "pid {pid}; starting until ready ({})",
                        ready.check.describe()
                    ),
                )),
                fx,
            ),
        }
        fx.push(Effect::Checks { run: run_id });
    }

    /// Its process passed its `[ready]` check at `now`: the run id, if it was starting.
    pub(super) fn became_ready(&mut self, now: Instant, fx: &mut Effects) -> Option<i64> {
        let State::Starting { run } = self.state else {
            return None;
        };
        self.checks.ready = Some(true);
        self.checks.last_error = None;
        let after = self
            .checks
            .spawned
            .map(|t| {
                let ms = now.saturating_duration_since(t).as_millis();
                format!(" {ms}ms after the spawn")
            })
            .unwrap_or_default();
        self.transition(
            State::Running { run },
            Some(("ready", format!("ready{after}"))),
            fx,
        );
        Some(run.id)
    }

    /// A process of corrald's previous life, found alive at start: running again.
    pub(super) fn adopt(&mut self, run: Run, restarts: u32, fx: &mut Effects) {
        self.restarts = restarts;
        self.transition(State::Running { run }, None, fx);
    }

    /// Stops the instance (`by` whom, for the event): its process gets the stop signal
    /// and SIGKILL after `timeout` (default the unit's `stop_timeout`).
    pub(super) fn stop(
        &mut self,
        unit: &Unit,
        timeout: Option<Duration>,
        by: &str,
        fx: &mut Effects,
    ) {
        match self.state {
            State::Starting { run } | State::Running { run } => {
                let event = ("stopping", format!("by {by}"));
                self.transition(State::Stopping { run }, Some(event), fx);
                self.signal_stop(unit, run.pid, timeout, fx);
            }
            State::Spawning { token, signal } => {
                // Its stop signal goes out as soon as the pid is known.
                self.transition(State::Aborting { token, signal }, None, fx);
            }
            State::Waiting | State::Backoff { .. } => {
                self.transition(State::Stopped, Some(("stopped", format!("by {by}"))), fx);
            }
            // Being stopped for a failed check: now it is meant to stay down.
            State::Stopping { .. } => self.checks.kill_reason = None,
            State::Aborting { .. }
            | State::Inactive
            | State::Stopped
            | State::Exited
            | State::Failed => {}
        }
    }

    /// The unit's stop signal (and SIGCONT: a SIGSTOPped process would never see it),
    /// and the SIGKILL timer.
    fn signal_stop(&self, unit: &Unit, pid: i32, timeout: Option<Duration>, fx: &mut Effects) {
        let signal = Signal::try_from(unit.stop_signal_number).unwrap_or(Signal::SIGTERM);
        fx.push(Effect::Signal { pid, signal });
        fx.push(Effect::Signal {
            pid,
            signal: Signal::SIGCONT,
        });
        fx.push(Effect::Timer {
            delay: timeout.unwrap_or(unit.stop_timeout),
            timer: Timer::StopTimeout {
                generation: self.generation,
            },
        });
    }

    /// The stop timeout armed at `generation` passed: SIGKILL if it is still stopping.
    /// `whom` names what SIGKILL reaches (the process group or the cgroup).
    pub(super) fn stop_timeout(&mut self, generation: u64, whom: &str, fx: &mut Effects) {
        if self.generation != generation {
            return;
        }
        if let State::Stopping { run } = self.state {
            fx.push(Effect::Signal {
                pid: run.pid,
                signal: Signal::SIGKILL,
            });
            fx.push(Effect::Event {
                kind: "killed",
                detail: format!("stop timeout passed: SIGKILL to the {whom}"),
            });
        }
    }

    /// `kill`: `signal` to its process now, or once its spawn in flight has one.
    pub(super) fn kill(&mut self, signal: Signal, fx: &mut Effects) {
        match &mut self.state {
            State::Spawning {
                signal: pending, ..
            }
            | State::Aborting {
                signal: pending, ..
            } => {
                *pending = Some(signal);
            }
            state => {
                if let Some(run) = state.run() {
                    fx.push(Effect::Signal {
                        pid: run.pid,
                        signal,
                    });
                }
            }
        }
    }

    /// A second SIGTERM at shutdown: SIGKILL now, no waiting.
    pub(super) fn force_kill(&mut self, fx: &mut Effects) {
        if let Some(run) = self.run() {
            fx.push(Effect::Signal {
                pid: run.pid,
                signal: Signal::SIGKILL,
            });
            self.transition(State::Stopping { run }, None, fx);
        } else if self.is_active() {
            self.transition(State::Stopped, None, fx);
        }
    }

    /// The instance that replaces this one when a reload changes its unit: a fresh
    /// instance that keeps what `status` shows of this one's past (it has settled), and
    /// its generation, so that timers armed for this one stay stale.
    pub(super) fn replaced(&self) -> Instance {
        let mut new = Instance::new(self.index);
        new.state = self.state;
        new.last_exit = self.last_exit;
        new.reason = self.reason.clone();
        new.generation = self.generation;
        new
    }
}

#[cfg(test)]
mod tests;
