//! When a started instance counts as started: what `start --wait` waits for.
//!
//! For a unit with a `[ready]` check, "started" means the check passed (the instance went
//! from `starting` to `running`). Without one, it means the process was spawned and did
//! not exit within [`START_WINDOW`] (like supervisord's `startsecs`); a task may also
//! have exited with code 0 by then. Anything else that happens first is a failed start:
//! the command could not be spawned, the process exited (even if its restart policy
//! will run it again), the readiness deadline passed, a requirement failed, or the
//! instance was stopped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_config::UnitKind;

use super::machine::{Instance, State};

/// How long a process must run before its start counts as a success.
pub const START_WINDOW: Duration = Duration::from_secs(1);

/// One instance that failed to start, as the `start` waiter reports it.
#[derive(Debug, Clone)]
pub struct StartFailure {
    /// Unit name.
    pub unit: String,
    /// Instance number.
    pub instance: u32,
    /// Why, e.g. `exit 1 within 1s of starting` or the spawn error.
    pub reason: String,
    /// The instance's log file, whose last lines say more.
    pub log: PathBuf,
}

/// Where one instance is on its way to having started.
#[derive(Debug, PartialEq)]
pub(super) enum Progress {
    /// Started (see the module docs).
    Done,
    /// Not yet; look again by this time, if known (else at its next transition).
    Pending(Option<Instant>),
    /// It will not start by itself: why.
    Failed(String),
}

/// Where `inst`, an instance of a unit of `kind` (with a `[ready]` check when
/// `ready_check`), is on its way to having started.
pub(super) fn progress(
    kind: UnitKind,
    ready_check: bool,
    inst: &Instance,
    now: Instant,
) -> Progress {
    let within = if ready_check {
        "before it was ready".to_owned()
    } else {
        format!("within {} of starting", humanize(START_WINDOW))
    };
    if let Some(reason) = &inst.checks.kill_reason {
        // Being stopped because it did not become ready (or failed a check) meanwhile.
        return Progress::Failed(reason.clone());
    }
    let exit = inst
        .last_exit
        .map_or_else(|| "exited".to_owned(), |e| format!("exited ({e})"));
    match inst.state {
        State::Running { .. } if ready_check => Progress::Done,
        State::Running { run } if now.saturating_duration_since(run.since) >= START_WINDOW => {
            Progress::Done
        }
        State::Running { run } => Progress::Pending(Some(run.since + START_WINDOW)),
        State::Waiting | State::Spawning { .. } | State::Starting { .. } => Progress::Pending(None),
        State::Exited if kind == UnitKind::Task && inst.last_exit.is_some_and(|e| e.success()) => {
            Progress::Done
        }
        State::Exited if kind == UnitKind::Task => Progress::Failed(exit),
        State::Exited => Progress::Failed(format!(
            "{exit} {within}; a service is expected to keep running"
        )),
        State::Backoff { .. } => match (&inst.reason, ready_check) {
            (Some(reason), true) => Progress::Failed(format!(
                "{reason}; corrald restarts it by its restart policy"
            )),
            _ => Progress::Failed(format!(
                "{exit} {within}; corrald restarts it by its restart policy"
            )),
        },
        State::Failed => {
            Progress::Failed(inst.reason.clone().unwrap_or_else(|| "failed".to_owned()))
        }
        State::Stopping { .. } | State::Aborting { .. } | State::Stopped | State::Inactive => {
            Progress::Failed("stopped before it had started".to_owned())
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::super::machine::Run;
    use super::*;
    use corral_proto::ExitStatus;

    fn run(since: Instant) -> Run {
        Run {
            pid: 42,
            id: 1,
            since,
        }
    }

    fn running(since: Instant) -> State {
        State::Running { run: run(since) }
    }

    fn instance(state: State, exit: Option<i32>) -> Instance {
        let mut inst = Instance::new(0);
        inst.state = state;
        inst.last_exit = exit.map(|code| ExitStatus {
            code: Some(code),
            signal: None,
        });
        inst
    }

    #[test]
    fn a_running_instance_has_started_once_it_has_run_for_the_window() {
        let now = Instant::now();
        let inst = instance(running(now), None);
        assert_eq!(
            progress(UnitKind::Service, false, &inst, now),
            Progress::Pending(Some(now + START_WINDOW))
        );
        assert_eq!(
            progress(UnitKind::Service, false, &inst, now + START_WINDOW),
            Progress::Done
        );
        assert_eq!(
            progress(UnitKind::Task, false, &inst, now + START_WINDOW),
            Progress::Done
        );
        let starting = instance(State::Waiting, None);
        assert_eq!(
            progress(UnitKind::Service, false, &starting, now),
            Progress::Pending(None)
        );
    }

    #[test]
    fn with_a_ready_check_running_means_started_and_a_failed_check_is_the_reason() {
        let now = Instant::now();
        let inst = instance(running(now), None);
        // Ready (running) counts at once: no start window on top of the check.
        assert_eq!(
            progress(UnitKind::Service, true, &inst, now),
            Progress::Done
        );
        let waiting = instance(State::Starting { run: run(now) }, None);
        assert_eq!(
            progress(UnitKind::Service, true, &waiting, now),
            Progress::Pending(None)
        );
        // Stopped for missing its deadline: the reason, not "stopped before it had started".
        let mut killed = instance(State::Stopping { run: run(now) }, None);
        killed.checks.kill_reason = Some("not ready within 1s (tcp x:1)".into());
        assert_eq!(
            progress(UnitKind::Service, true, &killed, now),
            Progress::Failed("not ready within 1s (tcp x:1)".into())
        );
        let mut looping = instance(State::Backoff { until: now }, Some(1));
        looping.reason = Some("not ready within 1s (tcp x:1)".into());
        let Progress::Failed(why) = progress(UnitKind::Service, true, &looping, now) else {
            panic!("an instance in backoff has not started");
        };
        assert!(why.starts_with("not ready within 1s"), "{why}");
        let exited = instance(State::Exited, Some(0));
        let Progress::Failed(why) = progress(UnitKind::Service, true, &exited, now) else {
            panic!("a service that exits has not started");
        };
        assert!(why.contains("before it was ready"), "{why}");
    }

    #[test]
    fn an_exit_is_a_failed_start_except_a_tasks_exit_0() {
        let now = Instant::now();
        let ok = instance(State::Exited, Some(0));
        assert_eq!(progress(UnitKind::Task, false, &ok, now), Progress::Done);
        let Progress::Failed(why) = progress(UnitKind::Service, false, &ok, now) else {
            panic!("a service that exits has not started");
        };
        assert!(why.contains("exited (exit 0)"), "{why}");
        let bad = instance(State::Exited, Some(3));
        assert_eq!(
            progress(UnitKind::Task, false, &bad, now),
            Progress::Failed("exited (exit 3)".into())
        );
        let looping = instance(State::Backoff { until: now }, Some(1));
        let Progress::Failed(why) = progress(UnitKind::Service, false, &looping, now) else {
            panic!("an instance in backoff has not started");
        };
        assert!(why.contains("exited (exit 1) within 1s"), "{why}");
        let mut failed = instance(State::Failed, None);
        failed.reason = Some("command not found: nope".into());
        assert_eq!(
            progress(UnitKind::Service, false, &failed, now),
            Progress::Failed("command not found: nope".into())
        );
        let stopped = instance(State::Stopped, None);
        assert!(matches!(
            progress(UnitKind::Service, false, &stopped, now),
            Progress::Failed(_)
        ));
    }
}
