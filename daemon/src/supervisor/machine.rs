//! The decisions of the instance state machine, apart from their side effects: what an
//! exit leads to (the restart policy, backoff, the start limit), whether an instance may
//! start yet (dependency gating) and which units a shutdown stops next. They read and
//! change instance state and return what is to be done ([`AfterExit`], the units to
//! stop); the actor (`start.rs`, `shutdown.rs`) carries it out: events, timers, signals.
//! The clock is a parameter, so the tests below run without processes or waiting.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_config::{RestartPolicy, Unit, UnitKind};
use corral_proto::{ExitStatus, InstanceState, InstanceStatus};
use nix::sys::signal::Signal;

use super::{UnitEntry, probe};

/// One running copy of a unit.
#[derive(Debug)]
pub(super) struct Instance {
    pub(super) index: u32,
    pub(super) state: InstanceState,
    pub(super) pid: Option<i32>,
    /// Set while a spawn request is in flight.
    pub(super) spawn_token: Option<u64>,
    pub(super) started: Option<Instant>,
    pub(super) run_id: Option<i64>,
    pub(super) restarts: u32,
    pub(super) consecutive_failures: u32,
    pub(super) recent_starts: VecDeque<Instant>,
    pub(super) last_exit: Option<ExitStatus>,
    pub(super) reason: Option<String>,
    pub(super) generation: u64,
    /// A signal asked for (`kill`) while the spawn was in flight: sent once the pid is known.
    pub(super) pending_signal: Option<Signal>,
    /// Readiness and health of the current run.
    pub(super) checks: probe::InstanceChecks,
}

impl Instance {
    pub(super) fn new(index: u32) -> Instance {
        Instance {
            index,
            state: InstanceState::Inactive,
            pid: None,
            spawn_token: None,
            started: None,
            run_id: None,
            restarts: 0,
            consecutive_failures: 0,
            recent_starts: VecDeque::new(),
            last_exit: None,
            reason: None,
            generation: 0,
            pending_signal: None,
            checks: probe::InstanceChecks::default(),
        }
    }

    pub(super) fn status(&self) -> InstanceStatus {
        InstanceStatus {
            instance: self.index,
            state: self.state,
            pid: self.pid.map(|p| p as u32),
            uptime_ms: self
                .pid
                .and(self.started)
                .map(|t| t.elapsed().as_millis() as u64),
            restarts: self.restarts,
            last_exit: self.last_exit,
            reason: self
                .reason
                .clone()
                .or_else(|| self.checks.restarted_for.clone()),
            ready: self.checks.ready.filter(|_| self.pid.is_some()),
            healthy: self.checks.healthy.filter(|_| self.pid.is_some()),
            health_failures: self.checks.health_failures,
            health_failures_total: self.checks.health_failures_total,
            check_error: self
                .checks
                .last_error
                .clone()
                .filter(|_| self.pid.is_some()),
            cgroup_cpu_usec: None,
            cgroup_memory_bytes: None,
        }
    }
}

/// What follows an instance's exit ([`Instance::exited`]), for the actor to carry out.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AfterExit {
    /// It was being stopped: now `Stopped`.
    Stopped,
    /// Stopped for a failed check and not restarted by policy: now `Failed`; the event's detail.
    Failed(String),
    /// Not restarted by policy: now `Exited`.
    Exited,
    /// The start limit is used up: now `Failed`, for this reason.
    GaveUp(String),
    /// Restarted after `delay`: now `Backoff`; its `Msg::RestartDue` carries `generation`.
    Restart {
        /// The backoff delay.
        delay: Duration,
        /// The generation the timer must carry.
        generation: u64,
    },
}

impl Instance {
    /// Into `to`, bumping the generation so that timers armed before are stale.
    pub(super) fn transition(&mut self, to: InstanceState) {
        self.state = to;
        self.generation += 1;
    }

    /// Into `Backoff` before a restart by policy: the delay (doubled with each
    /// consecutive failure, up to the unit's max) and the generation its
    /// `Msg::RestartDue` must carry.
    pub(super) fn back_off(&mut self, unit: &Unit) -> (Duration, u64) {
        let delay = backoff(
            unit.restart_delay,
            unit.restart_delay_max,
            self.consecutive_failures,
        );
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.transition(InstanceState::Backoff);
        (delay, self.generation)
    }

    /// `Some(reason)` when starting at `now` would exceed the unit's start limit; starts
    /// older than the limit's interval are forgotten.
    pub(super) fn start_limit_hit(&mut self, unit: &Unit, now: Instant) -> Option<String> {
        while self
            .recent_starts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > unit.start_limit_interval)
        {
            self.recent_starts.pop_front();
        }
        (self.recent_starts.len() >= unit.start_limit_burst as usize).then(|| {
            format!(
                "start limit hit: {} starts within {:?}; `corralctl start {}` tries again",
                self.recent_starts.len(),
                unit.start_limit_interval,
                unit.name
            )
        })
    }

    /// The process of this instance ended with `status` at `now` (its pid already
    /// cleared): applies the restart policy, the backoff and the start limit. A check's
    /// `kill_reason` makes the exit count as a failure.
    pub(super) fn exited(
        &mut self,
        unit: &Unit,
        status: ExitStatus,
        shutting_down: bool,
        now: Instant,
    ) -> AfterExit {
        let ran_for = self
            .started
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        // Stopped by corrald for a failed check: restarted as after a failure.
        let failed_check = self.checks.kill_reason.take();
        if self.state == InstanceState::Stopping && failed_check.is_none() {
            self.transition(InstanceState::Stopped);
            return AfterExit::Stopped;
        }
        let restart = !shutting_down
            && match unit.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !status.success() || failed_check.is_some(),
                RestartPolicy::No => false,
            };
        if let (Some(why), false) = (&failed_check, restart) {
            self.transition(InstanceState::Failed);
            return AfterExit::Failed(format!("{status}; {why}"));
        }
        if let Some(why) = failed_check {
            // Shown as the reason while the next runs go well (a spawn clears `reason`).
            self.checks.restarted_for = Some(why);
        }
        if !restart {
            self.transition(InstanceState::Exited);
            return AfterExit::Exited;
        }
        if ran_for >= unit.restart_delay_max.max(Duration::from_secs(1)) {
            self.consecutive_failures = 0; // it ran long enough to count as healthy
        }
        if let Some(reason) = self.start_limit_hit(unit, now) {
            self.transition(InstanceState::Failed);
            self.reason = Some(reason.clone());
            return AfterExit::GaveUp(reason);
        }
        let (delay, generation) = self.back_off(unit);
        AfterExit::Restart { delay, generation }
    }
}

/// `base * 2^failures`, capped at `max`.
pub(super) fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// Whether unit `name` may start: Ok(true) now, Ok(false) not yet (what it requires or
/// comes after is still on its way), Err when a requirement failed.
pub(super) fn deps_ready(units: &BTreeMap<String, UnitEntry>, name: &str) -> Result<bool, String> {
    let unit = &units[name].unit;
    for dep in &unit.requires {
        let Some(d) = units.get(dep) else {
            return Err(format!("required unit `{dep}` does not exist"));
        };
        for i in &d.instances {
            match (d.unit.kind, i.state) {
                (_, InstanceState::Failed) => {
                    let why = i.reason.as_ref().map(|r| format!(": {r}"));
                    return Err(format!(
                        "required unit `{dep}` failed{}",
                        why.unwrap_or_default()
                    ));
                }
                (UnitKind::Service, InstanceState::Running) => {}
                (UnitKind::Task, InstanceState::Exited)
                    if i.last_exit.is_some_and(|e| e.success()) => {}
                (UnitKind::Task, InstanceState::Exited) => {
                    return Err(format!("required task `{dep}` exited unsuccessfully"));
                }
                (_, s) if s.is_active() => return Ok(false),
                (_, s) => {
                    return Err(format!("required unit `{dep}` is {}", s.as_str()));
                }
            }
        }
    }
    for dep in unit.after.iter().filter(|d| !unit.requires.contains(d)) {
        let Some(d) = units.get(dep) else {
            continue;
        };
        let busy = d.instances.iter().any(|i| match i.state {
            InstanceState::Starting | InstanceState::Backoff => true,
            // "after a task" means after it has finished.
            InstanceState::Running | InstanceState::Stopping => d.unit.kind == UnitKind::Task,
            _ => false,
        });
        if busy {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One step of the shutdown order over the units still `active`: which to stop now, each
/// with its stop timeout (`None`: the unit's own). Daemon units at once (with `grace`),
/// tasks once they finish or `tasks_expired`; then services, each once nothing that
/// depends on it is still active (reverse dependency order).
pub(super) fn shutdown_step(
    active: &[Arc<Unit>],
    tasks_expired: bool,
    grace: Duration,
) -> Vec<(Arc<Unit>, Option<Duration>)> {
    // Services go last: tasks may still need them, and daemon units die first.
    let first_phase_busy = active.iter().any(|u| u.daemon || u.kind == UnitKind::Task);
    let mut stop = Vec::new();
    for unit in active {
        let go = if unit.daemon {
            Some(Some(grace.min(unit.stop_timeout)))
        } else if unit.kind == UnitKind::Task {
            tasks_expired.then_some(None)
        } else {
            let has_active_dependent = active.iter().any(|other| {
                other.name != unit.name
                    && (other.after.contains(&unit.name) || other.requires.contains(&unit.name))
            });
            (!first_phase_busy && !has_active_dependent).then_some(None)
        };
        if let Some(timeout) = go {
            stop.push((unit.clone(), timeout));
        }
    }
    stop
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const OK: ExitStatus = ExitStatus {
        code: Some(0),
        signal: None,
    };
    const FAIL: ExitStatus = ExitStatus {
        code: Some(1),
        signal: None,
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Units from `(name, unit file text)` pairs, as corrald loads them.
    fn units(files: &[(&str, &str)]) -> BTreeMap<String, Arc<Unit>> {
        let files: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(name, text)| (PathBuf::from(format!("{name}.toml")), text.to_string()))
            .collect();
        corral_config::load_units(&files)
            .expect("valid test units")
            .into_iter()
            .map(|(name, unit)| (name, Arc::new(unit)))
            .collect()
    }

    fn unit(text: &str) -> Arc<Unit> {
        units(&[("u", text)]).remove("u").expect("unit u")
    }

    /// An instance whose process was started at `at` and has just ended.
    fn ran(inst: &mut Instance, at: Instant) {
        inst.state = InstanceState::Running;
        inst.started = Some(at);
        inst.recent_starts.push_back(at);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(ms(100), ms(1000), 0), ms(100));
        assert_eq!(backoff(ms(100), ms(1000), 1), ms(200));
        assert_eq!(backoff(ms(100), ms(1000), 3), ms(800));
        assert_eq!(backoff(ms(100), ms(1000), 4), ms(1000));
        assert_eq!(backoff(ms(100), ms(1000), 200), ms(1000));
    }

    #[test]
    fn the_restart_policy_decides_what_an_exit_leads_to() {
        let t0 = Instant::now();
        let cases = [
            ("always", OK, true),
            ("always", FAIL, true),
            ("on-failure", OK, false),
            ("on-failure", FAIL, true),
            ("no", OK, false),
            ("no", FAIL, false),
        ];
        for (policy, status, restarts) in cases {
            let u = unit(&format!("command = [\"true\"]\nrestart = \"{policy}\""));
            let mut inst = Instance::new(0);
            ran(&mut inst, t0);
            let generation = inst.generation;
            let after = inst.exited(&u, status, false, t0 + ms(10));
            if restarts {
                assert!(
                    matches!(after, AfterExit::Restart { generation: g, .. } if g == inst.generation),
                    "{policy} after {status:?}: {after:?}"
                );
                assert_eq!(inst.state, InstanceState::Backoff, "{policy}");
            } else {
                assert_eq!(after, AfterExit::Exited, "{policy} after {status:?}");
                assert_eq!(inst.state, InstanceState::Exited, "{policy}");
            }
            assert!(
                inst.generation > generation,
                "{policy}: the generation moves on"
            );
        }
    }

    #[test]
    fn nothing_restarts_during_shutdown_and_a_stopped_instance_stays_down() {
        let t0 = Instant::now();
        let u = unit("command = [\"true\"]\nrestart = \"always\"");
        let mut inst = Instance::new(0);
        ran(&mut inst, t0);
        assert_eq!(inst.exited(&u, FAIL, true, t0), AfterExit::Exited);

        let mut inst = Instance::new(0);
        ran(&mut inst, t0);
        inst.state = InstanceState::Stopping;
        assert_eq!(inst.exited(&u, FAIL, false, t0), AfterExit::Stopped);
        assert_eq!(inst.state, InstanceState::Stopped);
    }

    #[test]
    fn a_failed_check_counts_as_a_failure() {
        let t0 = Instant::now();
        // Exit code 0, but corrald stopped it for a failed health check: on-failure restarts.
        let u = unit("command = [\"true\"]\nrestart = \"on-failure\"");
        let mut inst = Instance::new(0);
        ran(&mut inst, t0);
        inst.state = InstanceState::Stopping;
        inst.checks.kill_reason = Some("health check failed".into());
        let after = inst.exited(&u, OK, false, t0);
        assert!(matches!(after, AfterExit::Restart { .. }), "{after:?}");
        assert_eq!(
            inst.checks.restarted_for.as_deref(),
            Some("health check failed")
        );

        // With restart = "no" it is failed, with the check's reason.
        let u = unit("command = [\"true\"]\nrestart = \"no\"");
        let mut inst = Instance::new(0);
        ran(&mut inst, t0);
        inst.state = InstanceState::Stopping;
        inst.checks.kill_reason = Some("not ready in time".into());
        match inst.exited(&u, OK, false, t0) {
            AfterExit::Failed(detail) => assert!(detail.contains("not ready in time"), "{detail}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert_eq!(inst.state, InstanceState::Failed);
    }

    #[test]
    fn backoff_grows_with_each_quick_failure_and_resets_after_a_long_run() {
        let u = unit(
            "command = [\"false\"]\nrestart = \"always\"\nrestart_delay = \"100ms\"\n\
             restart_delay_max = \"2s\"\nstart_limit_burst = 100",
        );
        let mut inst = Instance::new(0);
        let mut now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..6 {
            ran(&mut inst, now);
            now += ms(50); // a quick failure
            match inst.exited(&u, FAIL, false, now) {
                AfterExit::Restart { delay, .. } => delays.push(delay),
                other => panic!("expected a restart, got {other:?}"),
            }
        }
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(2000)]
        );
        // A run longer than restart_delay_max counts as healthy: back to the base delay.
        ran(&mut inst, now);
        now += Duration::from_secs(3);
        assert_eq!(
            inst.exited(&u, FAIL, false, now),
            AfterExit::Restart {
                delay: ms(100),
                generation: inst.generation
            }
        );
    }

    #[test]
    fn the_start_limit_gives_up_within_its_interval_and_forgets_older_starts() {
        let u = unit(
            "command = [\"false\"]\nrestart = \"always\"\nstart_limit_burst = 3\n\
             start_limit_interval = \"10s\"",
        );
        let mut inst = Instance::new(0);
        let t0 = Instant::now();
        for k in 0..2 {
            ran(&mut inst, t0 + ms(k));
            let after = inst.exited(&u, FAIL, false, t0 + ms(k));
            assert!(matches!(after, AfterExit::Restart { .. }), "{k}: {after:?}");
        }
        ran(&mut inst, t0 + ms(2));
        match inst.exited(&u, FAIL, false, t0 + ms(3)) {
            AfterExit::GaveUp(reason) => assert!(reason.contains("start limit"), "{reason}"),
            other => panic!("expected GaveUp, got {other:?}"),
        }
        assert_eq!(inst.state, InstanceState::Failed);
        assert!(inst.reason.is_some());
        // Eleven seconds later the three starts are out of the interval.
        assert_eq!(inst.start_limit_hit(&u, t0 + Duration::from_secs(11)), None);
        assert!(inst.recent_starts.is_empty());
    }

    fn entries(units: BTreeMap<String, Arc<Unit>>) -> BTreeMap<String, UnitEntry> {
        units
            .into_iter()
            .map(|(name, unit)| (name, UnitEntry::new(unit, false)))
            .collect()
    }

    fn set(units: &mut BTreeMap<String, UnitEntry>, name: &str, state: InstanceState) {
        units.get_mut(name).expect("unit").instances[0].state = state;
    }

    #[test]
    fn requires_waits_for_a_running_service_and_fails_with_it() {
        let mut units = entries(units(&[
            ("db", "command = [\"db\"]"),
            ("web", "command = [\"web\"]\nrequires = [\"db\"]"),
        ]));
        set(&mut units, "db", InstanceState::Starting);
        assert_eq!(deps_ready(&units, "web"), Ok(false));
        set(&mut units, "db", InstanceState::Running);
        assert_eq!(deps_ready(&units, "web"), Ok(true));
        set(&mut units, "db", InstanceState::Failed);
        let err = deps_ready(&units, "web").unwrap_err();
        assert!(err.contains("`db` failed"), "{err}");
        set(&mut units, "db", InstanceState::Stopped);
        assert!(deps_ready(&units, "web").is_err());
    }

    #[test]
    fn a_required_task_must_have_succeeded() {
        let mut units = entries(units(&[
            ("migrate", "kind = \"task\"\ncommand = [\"migrate\"]"),
            ("web", "command = [\"web\"]\nrequires = [\"migrate\"]"),
        ]));
        set(&mut units, "migrate", InstanceState::Running);
        assert_eq!(deps_ready(&units, "web"), Ok(false));
        set(&mut units, "migrate", InstanceState::Exited);
        units.get_mut("migrate").unwrap().instances[0].last_exit = Some(FAIL);
        assert!(deps_ready(&units, "web").is_err());
        units.get_mut("migrate").unwrap().instances[0].last_exit = Some(OK);
        assert_eq!(deps_ready(&units, "web"), Ok(true));
    }

    #[test]
    fn after_only_orders_and_never_fails() {
        let mut units = entries(units(&[
            ("setup", "kind = \"task\"\ncommand = [\"setup\"]"),
            ("web", "command = [\"web\"]\nafter = [\"setup\"]"),
        ]));
        // After a task means after it has finished.
        set(&mut units, "setup", InstanceState::Running);
        assert_eq!(deps_ready(&units, "web"), Ok(false));
        set(&mut units, "setup", InstanceState::Backoff);
        assert_eq!(deps_ready(&units, "web"), Ok(false));
        set(&mut units, "setup", InstanceState::Failed);
        assert_eq!(deps_ready(&units, "web"), Ok(true));
    }

    #[test]
    fn shutdown_stops_daemons_first_then_waits_for_tasks_then_services_dependents_first() {
        let all = units(&[
            (
                "agent",
                "command = [\"agent\"]\ndaemon = true\nstop_timeout = \"30s\"",
            ),
            ("batch", "kind = \"task\"\ncommand = [\"batch\"]"),
            ("db", "command = [\"db\"]"),
            ("web", "command = [\"web\"]\nrequires = [\"db\"]"),
        ]);
        let grace = Duration::from_secs(2);
        let names = |step: &[(Arc<Unit>, Option<Duration>)]| {
            step.iter().map(|(u, _)| u.name.clone()).collect::<Vec<_>>()
        };
        let active = |names: &[&str]| names.iter().map(|n| all[*n].clone()).collect::<Vec<_>>();

        let step = shutdown_step(&active(&["agent", "batch", "db", "web"]), false, grace);
        assert_eq!(names(&step), ["agent"]);
        assert_eq!(
            step[0].1,
            Some(grace),
            "a daemon unit gets the daemon grace"
        );
        // The task runs on until it finishes or the deadline passes.
        let step = shutdown_step(&active(&["batch", "db", "web"]), false, grace);
        assert!(step.is_empty(), "{:?}", names(&step));
        let step = shutdown_step(&active(&["batch", "db", "web"]), true, grace);
        assert_eq!(names(&step), ["batch"]);
        // Services in reverse dependency order.
        assert_eq!(
            names(&shutdown_step(&active(&["db", "web"]), true, grace)),
            ["web"]
        );
        assert_eq!(names(&shutdown_step(&active(&["db"]), true, grace)), ["db"]);
    }
}
