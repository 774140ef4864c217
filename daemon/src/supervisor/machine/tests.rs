//! The state machine without processes: each test drives an [`Instance`] through its
//! decisions with a made-up clock and checks the state it reaches and the effects it
//! asks for.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::super::{START_WINDOW, UnitEntry};
use super::*;

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

/// The kinds of the events among `fx`.
fn events(fx: &Effects) -> Vec<&'static str> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Event { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

/// The restart timer among `fx`, if any: its delay and generation.
fn restart_timer(fx: &Effects) -> Option<(Duration, u64)> {
    fx.iter().find_map(|e| match e {
        Effect::Timer {
            delay,
            timer: Timer::Restart { generation },
        } => Some((*delay, *generation)),
        _ => None,
    })
}

/// The outcome of the spawn of `token` at `now`, not shutting down.
fn outcome(
    token: u64,
    result: Result<(i32, u64), String>,
    run_id: i64,
    now: Instant,
) -> SpawnOutcome {
    SpawnOutcome {
        token,
        result,
        run_id,
        shutting_down: false,
        now,
        wall_ms: 0,
    }
}

/// Starts `inst` at `at` through the real decisions (start, spawn, spawn outcome) and
/// returns the pid its process got.
fn run_at(inst: &mut Instance, u: &Unit, at: Instant) -> i32 {
    let mut fx = Effects::new();
    let token = 1000 + u64::from(inst.restarts) * 10 + inst.recent_starts.len() as u64;
    if !matches!(inst.state, State::Backoff { .. }) {
        inst.start(&mut fx);
        inst.recent_starts.clear();
    }
    assert!(inst.spawn(u, at, token, &mut fx), "spawned: {fx:?}");
    let pid = 4000 + token as i32;
    inst.spawned(u, outcome(token, Ok((pid, 7)), 1, at), &mut fx);
    assert!(inst.run().is_some(), "{:?}", inst.state);
    pid
}

/// Puts `inst` into `Running` with a process started at `at`, keeping its counters (as
/// a restart does).
fn running(inst: &mut Instance, at: Instant) -> i32 {
    let pid = 4242;
    inst.state = State::Running {
        run: Run {
            pid,
            id: 1,
            since: at,
        },
    };
    inst.recent_starts.push_back(at);
    pid
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
fn a_start_spawns_and_the_process_is_recorded_routed_and_checked() {
    let u = unit("command = [\"sleep\", \"9\"]");
    let t0 = Instant::now();
    let mut inst = Instance::new(0);
    let mut fx = Effects::new();
    assert!(inst.start(&mut fx));
    assert_eq!(inst.state, State::Waiting);
    assert!(
        !inst.start(&mut fx),
        "a second start of an active instance does nothing"
    );

    let mut fx = Effects::new();
    assert!(inst.spawn(&u, t0, 7, &mut fx));
    assert_eq!(
        inst.state,
        State::Spawning {
            token: 7,
            signal: None
        }
    );
    assert_eq!(fx, [Effect::Changed, Effect::Spawn { token: 7 }]);

    let mut fx = Effects::new();
    inst.spawned(
        &u,
        SpawnOutcome {
            wall_ms: 1234,
            ..outcome(7, Ok((321, 99)), 5, t0 + ms(3))
        },
        &mut fx,
    );
    let run = Run {
        pid: 321,
        id: 5,
        since: t0 + ms(3),
    };
    assert_eq!(inst.state, State::Running { run });
    assert_eq!(inst.pid(), Some(321));
    assert_eq!(
        fx[0],
        Effect::RunStarted(RunStart {
            id: 5,
            unit: "u".into(),
            instance: 0,
            pid: 321,
            start_time: 99,
            started_at: 1234,
            restart_count: 0,
            daemon: false,
        })
    );
    assert_eq!(events(&fx), ["started"]);
    assert_eq!(fx.last(), Some(&Effect::Checks { run: 5 }));
    let status = inst.status(t0 + ms(1003));
    assert_eq!(status.pid, Some(321));
    assert_eq!(status.uptime_ms, Some(1000));
}

#[test]
fn with_a_ready_check_a_spawned_instance_is_starting_until_ready() {
    let u = unit("command = [\"srv\"]\n[ready]\ntcp = \"127.0.0.1:1\"\ndeadline = \"5s\"");
    let t0 = Instant::now();
    let mut inst = Instance::new(0);
    let mut fx = Effects::new();
    inst.start(&mut fx);
    inst.spawn(&u, t0, 1, &mut fx);
    inst.spawned(&u, outcome(1, Ok((10, 1)), 3, t0), &mut fx);
    assert!(
        matches!(inst.state, State::Starting { .. }),
        "{:?}",
        inst.state
    );
    assert_eq!(inst.wire_state(), InstanceState::Starting);
    assert_eq!(inst.checks.ready, Some(false));
    let generation = inst.generation;
    let mut fx = Effects::new();
    assert_eq!(inst.became_ready(t0 + ms(250), &mut fx), Some(3));
    assert!(matches!(inst.state, State::Running { .. }));
    assert!(inst.generation > generation);
    match &fx[..] {
        [
            Effect::Event {
                kind: "ready",
                detail,
            },
        ] => assert!(detail.contains("250ms"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // Ready once: a second pass changes nothing.
    assert_eq!(inst.became_ready(t0 + ms(300), &mut Effects::new()), None);
}

#[test]
fn a_spawn_outcome_for_an_older_token_kills_the_stray_process() {
    let u = unit("command = [\"true\"]");
    let t0 = Instant::now();
    let mut inst = Instance::new(0);
    let mut fx = Effects::new();
    inst.start(&mut fx);
    inst.spawn(&u, t0, 1, &mut fx);
    // Stopped during a forced shutdown while the spawn was in flight.
    inst.force_kill(&mut fx);
    assert_eq!(inst.state, State::Stopped);
    let mut fx = Effects::new();
    inst.spawned(
        &u,
        SpawnOutcome {
            shutting_down: true,
            ..outcome(1, Ok((55, 1)), 1, t0)
        },
        &mut fx,
    );
    assert_eq!(fx, [Effect::KillStray { pid: 55 }]);
    assert_eq!(inst.state, State::Stopped);
}

#[test]
fn a_stop_during_the_spawn_stops_the_process_once_it_is_there() {
    let u = unit("command = [\"srv\"]\nstop_signal = \"SIGINT\"\nstop_timeout = \"4s\"");
    let t0 = Instant::now();
    let mut inst = Instance::new(0);
    let mut fx = Effects::new();
    inst.start(&mut fx);
    inst.spawn(&u, t0, 9, &mut fx);
    inst.kill(Signal::SIGUSR1, &mut fx);
    inst.stop(&u, None, "request", &mut fx);
    assert_eq!(
        inst.state,
        State::Aborting {
            token: 9,
            signal: Some(Signal::SIGUSR1)
        }
    );
    assert_eq!(inst.wire_state(), InstanceState::Stopping);
    let mut fx = Effects::new();
    inst.spawned(&u, outcome(9, Ok((77, 1)), 2, t0), &mut fx);
    assert!(matches!(inst.state, State::Stopping { run } if run.pid == 77));
    let generation = inst.generation;
    assert_eq!(
        fx[1..],
        [
            Effect::Signal {
                pid: 77,
                signal: Signal::SIGUSR1
            },
            Effect::Changed,
            Effect::Signal {
                pid: 77,
                signal: Signal::SIGINT
            },
            Effect::Signal {
                pid: 77,
                signal: Signal::SIGCONT
            },
            Effect::Timer {
                delay: Duration::from_secs(4),
                timer: Timer::StopTimeout { generation }
            },
        ]
    );
    // And its exit leaves it stopped, not restarted.
    let mut fx = Effects::new();
    assert!(inst.exited(&u, 77, OK, false, t0 + ms(5), &mut fx));
    assert_eq!(inst.state, State::Stopped);
    assert_eq!(events(&fx), ["stopped"]);
}

#[test]
fn the_stop_timeout_kills_only_while_it_is_still_due() {
    let u = unit("command = [\"srv\"]");
    let t0 = Instant::now();
    let mut inst = Instance::new(0);
    let pid = run_at(&mut inst, &u, t0);
    let mut fx = Effects::new();
    inst.stop(&u, Some(ms(300)), "request", &mut fx);
    assert_eq!(events(&fx), ["stopping"]);
    let Some(Effect::Timer {
        delay,
        timer: Timer::StopTimeout { generation },
    }) = fx.last().cloned_timer()
    else {
        panic!("no stop timer: {fx:?}");
    };
    assert_eq!(delay, ms(300), "the timeout given wins over the unit's");
    let mut stale = Effects::new();
    inst.stop_timeout(generation - 1, "group", &mut stale);
    assert!(stale.is_empty(), "{stale:?}");
    let mut fx = Effects::new();
    inst.stop_timeout(generation, "group", &mut fx);
    assert_eq!(
        fx[0],
        Effect::Signal {
            pid,
            signal: Signal::SIGKILL
        }
    );
    assert_eq!(events(&fx), ["killed"]);
    // Once it has exited the timer is stale.
    inst.exited(&u, pid, OK, false, t0, &mut Effects::new());
    let mut fx = Effects::new();
    inst.stop_timeout(generation, "group", &mut fx);
    assert!(fx.is_empty(), "{fx:?}");
}

/// `Option<&Effect>` → an owned timer effect, to destructure in a `let … else`.
trait ClonedTimer {
    fn cloned_timer(self) -> Option<Effect>;
}

impl ClonedTimer for Option<&Effect> {
    fn cloned_timer(self) -> Option<Effect> {
        match self {
            Some(Effect::Timer { delay, timer }) => Some(Effect::Timer {
                delay: *delay,
                timer: *timer,
            }),
            _ => None,
        }
    }
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
        let pid = run_at(&mut inst, &u, t0);
        let generation = inst.generation;
        let mut fx = Effects::new();
        assert!(inst.exited(&u, pid, status, false, t0 + ms(10), &mut fx));
        assert_eq!(fx[0], Effect::RunEnded { run: 1, status }, "{policy}");
        assert_eq!(inst.last_exit, Some(status));
        assert!(
            inst.generation > generation,
            "{policy}: the generation moves on"
        );
        if restarts {
            assert!(
                matches!(inst.state, State::Backoff { until } if until == t0 + ms(10) + u.restart_delay),
                "{policy} after {status:?}: {:?}",
                inst.state
            );
            assert_eq!(
                restart_timer(&fx),
                Some((u.restart_delay, inst.generation)),
                "{policy}"
            );
        } else {
            assert_eq!(inst.state, State::Exited, "{policy} after {status:?}");
            assert_eq!(restart_timer(&fx), None, "{policy}");
        }
        assert_eq!(events(&fx), ["exited"], "{policy}");
    }
}

#[test]
fn an_exit_of_another_pid_is_not_this_instances() {
    let u = unit("command = [\"true\"]\nrestart = \"always\"");
    let mut inst = Instance::new(0);
    let pid = run_at(&mut inst, &u, Instant::now());
    let mut fx = Effects::new();
    assert!(!inst.exited(&u, pid + 1, FAIL, false, Instant::now(), &mut fx));
    assert!(fx.is_empty());
    assert_eq!(inst.pid(), Some(pid));
}

#[test]
fn nothing_restarts_during_shutdown_and_a_stopped_instance_stays_down() {
    let t0 = Instant::now();
    let u = unit("command = [\"true\"]\nrestart = \"always\"");
    let mut inst = Instance::new(0);
    let pid = run_at(&mut inst, &u, t0);
    let mut fx = Effects::new();
    inst.exited(&u, pid, FAIL, true, t0, &mut fx);
    assert_eq!(inst.state, State::Exited);
    assert_eq!(restart_timer(&fx), None);

    let mut inst = Instance::new(0);
    let pid = run_at(&mut inst, &u, t0);
    inst.stop(&u, None, "request", &mut Effects::new());
    let mut fx = Effects::new();
    inst.exited(&u, pid, FAIL, false, t0, &mut fx);
    assert_eq!(inst.state, State::Stopped);
    assert_eq!(events(&fx), ["stopped"]);
    // A stop of a stopped instance is nothing; nor is a late restart timer.
    let mut fx = Effects::new();
    inst.stop(&u, None, "request", &mut fx);
    assert!(!inst.restart_due(&u, inst.generation, t0, 5, &mut fx));
    assert!(fx.is_empty(), "{fx:?}");
}

#[test]
fn a_failed_check_counts_as_a_failure() {
    let t0 = Instant::now();
    // Exit code 0, but corrald stopped it for a failed health check: on-failure restarts.
    let u = unit("command = [\"true\"]\nrestart = \"on-failure\"");
    let mut inst = Instance::new(0);
    let pid = run_at(&mut inst, &u, t0);
    inst.checks.kill_reason = Some("health check failed".into());
    inst.stop(&u, None, "unhealthy", &mut Effects::new());
    assert!(
        inst.checks.kill_reason.is_some(),
        "the first stop keeps the reason"
    );
    let mut fx = Effects::new();
    inst.exited(&u, pid, OK, false, t0, &mut fx);
    assert!(
        matches!(inst.state, State::Backoff { .. }),
        "{:?}",
        inst.state
    );
    assert!(restart_timer(&fx).is_some());
    assert_eq!(
        inst.checks.restarted_for.as_deref(),
        Some("health check failed")
    );

    // With restart = "no" it is failed, with the check's reason.
    let u = unit("command = [\"true\"]\nrestart = \"no\"");
    let mut inst = Instance::new(0);
    let pid = run_at(&mut inst, &u, t0);
    inst.checks.kill_reason = Some("not ready in time".into());
    inst.stop(&u, None, "not_ready", &mut Effects::new());
    let mut fx = Effects::new();
    inst.exited(&u, pid, OK, false, t0, &mut fx);
    assert_eq!(inst.state, State::Failed);
    match &fx[1] {
        Effect::Event {
            kind: "failed",
            detail,
        } => assert!(detail.contains("not ready in time"), "{detail}"),
        other => panic!("expected the failed event, got {other:?}"),
    }

    // A stop by request meanwhile means it is to stay down after all.
    let u = unit("command = [\"true\"]\nrestart = \"always\"");
    let mut inst = Instance::new(0);
    let pid = run_at(&mut inst, &u, t0);
    inst.checks.kill_reason = Some("unhealthy".into());
    inst.stop(&u, None, "unhealthy", &mut Effects::new());
    inst.stop(&u, None, "request", &mut Effects::new());
    inst.exited(&u, pid, OK, false, t0, &mut Effects::new());
    assert_eq!(inst.state, State::Stopped);
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
        let pid = running(&mut inst, now);
        now += ms(50); // a quick failure
        let mut fx = Effects::new();
        inst.exited(&u, pid, FAIL, false, now, &mut fx);
        delays.push(restart_timer(&fx).expect("a restart").0);
    }
    assert_eq!(
        delays,
        [ms(100), ms(200), ms(400), ms(800), ms(1600), ms(2000)]
    );
    // A run longer than restart_delay_max counts as healthy: back to the base delay.
    let pid = running(&mut inst, now);
    now += Duration::from_secs(3);
    let mut fx = Effects::new();
    inst.exited(&u, pid, FAIL, false, now, &mut fx);
    assert_eq!(restart_timer(&fx), Some((ms(100), inst.generation)));
}

#[test]
fn a_restart_is_due_only_at_the_generation_its_timer_carries() {
    let u = unit("command = [\"false\"]\nrestart = \"always\"");
    let t0 = Instant::now();
    let mut inst = Instance::new(0);
    let pid = run_at(&mut inst, &u, t0);
    let mut fx = Effects::new();
    inst.exited(&u, pid, FAIL, false, t0, &mut fx);
    let (_, generation) = restart_timer(&fx).expect("a restart");
    let mut fx = Effects::new();
    assert!(!inst.restart_due(&u, generation + 1, t0, 8, &mut fx));
    assert!(fx.is_empty());
    assert!(inst.restart_due(&u, generation, t0 + ms(100), 8, &mut fx));
    assert_eq!(inst.restarts, 1);
    assert_eq!(events(&fx), ["restarting"]);
    assert_eq!(fx.last(), Some(&Effect::Spawn { token: 8 }));
    assert!(matches!(inst.state, State::Spawning { token: 8, .. }));
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
        let pid = running(&mut inst, t0 + ms(k));
        let mut fx = Effects::new();
        inst.exited(&u, pid, FAIL, false, t0 + ms(k), &mut fx);
        assert!(restart_timer(&fx).is_some(), "{k}: {fx:?}");
    }
    let pid = running(&mut inst, t0 + ms(2));
    let mut fx = Effects::new();
    inst.exited(&u, pid, FAIL, false, t0 + ms(3), &mut fx);
    assert_eq!(events(&fx), ["gave_up"]);
    assert_eq!(restart_timer(&fx), None);
    assert_eq!(inst.state, State::Failed);
    assert!(
        inst.reason
            .as_deref()
            .is_some_and(|r| r.contains("start limit"))
    );
    // A spawn now is refused the same way, and its token stays unused.
    let mut fx = Effects::new();
    assert!(!inst.spawn(&u, t0 + ms(4), 3, &mut fx));
    assert_eq!(inst.state, State::Failed);
    // Eleven seconds later the three starts are out of the interval.
    assert_eq!(inst.start_limit_hit(&u, t0 + Duration::from_secs(11)), None);
    assert!(inst.recent_starts.is_empty());
    // And an explicit start forgives at once.
    let mut fx = Effects::new();
    inst.start(&mut fx);
    assert!(inst.spawn(&u, t0 + ms(5), 4, &mut fx));
    assert_eq!(inst.reason, None);
}

#[test]
fn running_out_of_descriptors_retries_without_using_up_the_start_limit() {
    let u = unit("command = [\"srv\"]\nstart_limit_burst = 1\nrestart = \"on-failure\"");
    let t0 = Instant::now();
    let mut inst = Instance::new(0);
    let mut fx = Effects::new();
    inst.start(&mut fx);
    inst.spawn(&u, t0, 1, &mut fx);
    let mut fx = Effects::new();
    let emfile = "spawning srv: Too many open files (os error 24)".to_owned();
    inst.spawned(&u, outcome(1, Err(emfile), 1, t0), &mut fx);
    assert!(matches!(inst.state, State::Backoff { .. }));
    assert_eq!(events(&fx), ["spawn_failed"]);
    assert!(inst.recent_starts.is_empty(), "not counted as a start");
    let (_, generation) = restart_timer(&fx).expect("retried");
    assert!(inst.restart_due(&u, generation, t0, 2, &mut Effects::new()));

    // Any other spawn failure fails the instance.
    let mut inst = Instance::new(0);
    let mut fx = Effects::new();
    inst.start(&mut fx);
    inst.spawn(&u, t0, 1, &mut fx);
    let mut fx = Effects::new();
    inst.spawned(&u, outcome(1, Err("no such file".into()), 1, t0), &mut fx);
    assert_eq!(inst.state, State::Failed);
    assert_eq!(inst.reason.as_deref(), Some("no such file"));
    assert_eq!(restart_timer(&fx), None);
}

#[test]
fn a_forced_shutdown_kills_every_process_at_once() {
    let u = unit("command = [\"srv\"]\nrestart = \"always\"");
    let t0 = Instant::now();
    let mut inst = Instance::new(0);
    let pid = run_at(&mut inst, &u, t0);
    let mut fx = Effects::new();
    inst.force_kill(&mut fx);
    assert_eq!(
        fx[0],
        Effect::Signal {
            pid,
            signal: Signal::SIGKILL
        }
    );
    assert!(matches!(inst.state, State::Stopping { .. }));
    let mut fx = Effects::new();
    inst.exited(&u, pid, FAIL, true, t0, &mut fx);
    assert_eq!(inst.state, State::Stopped);
    // Settled instances stay as they are.
    let mut fx = Effects::new();
    inst.force_kill(&mut fx);
    assert!(fx.is_empty());
}

fn entries(units: BTreeMap<String, Arc<Unit>>) -> BTreeMap<String, UnitEntry> {
    units
        .into_iter()
        .map(|(name, unit)| (name, UnitEntry::new(unit, false)))
        .collect()
}

fn set(units: &mut BTreeMap<String, UnitEntry>, name: &str, state: State) {
    units.get_mut(name).expect("unit").instances[0].state = state;
}

fn a_run() -> Run {
    Run {
        pid: 1,
        id: 1,
        since: Instant::now(),
    }
}

#[test]
fn requires_waits_for_a_running_service_and_fails_with_it() {
    let mut units = entries(units(&[
        ("db", "command = [\"db\"]"),
        ("web", "command = [\"web\"]\nrequires = [\"db\"]"),
    ]));
    set(&mut units, "db", State::Waiting);
    assert_eq!(deps_ready(&units, "web"), Ok(false));
    set(&mut units, "db", State::Starting { run: a_run() });
    assert_eq!(deps_ready(&units, "web"), Ok(false));
    set(&mut units, "db", State::Running { run: a_run() });
    assert_eq!(deps_ready(&units, "web"), Ok(true));
    set(&mut units, "db", State::Failed);
    let err = deps_ready(&units, "web").unwrap_err();
    assert!(err.contains("`db` failed"), "{err}");
    set(&mut units, "db", State::Stopped);
    assert!(deps_ready(&units, "web").is_err());
}

#[test]
fn a_required_task_must_have_succeeded() {
    let mut units = entries(units(&[
        ("migrate", "kind = \"task\"\ncommand = [\"migrate\"]"),
        ("web", "command = [\"web\"]\nrequires = [\"migrate\"]"),
    ]));
    set(&mut units, "migrate", State::Running { run: a_run() });
    assert_eq!(deps_ready(&units, "web"), Ok(false));
    set(&mut units, "migrate", State::Exited);
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
    set(&mut units, "setup", State::Running { run: a_run() });
    assert_eq!(deps_ready(&units, "web"), Ok(false));
    set(
        &mut units,
        "setup",
        State::Backoff {
            until: Instant::now(),
        },
    );
    assert_eq!(deps_ready(&units, "web"), Ok(false));
    set(&mut units, "setup", State::Failed);
    assert_eq!(deps_ready(&units, "web"), Ok(true));
}

#[test]
fn a_reload_replaces_a_changed_unit_restarting_it_only_if_it_was_active() {
    let old = units(&[("web", "command = [\"web\", \"1\"]")]);
    let new = units(&[("web", "command = [\"web\", \"2\"]")]);
    let mut entries = entries(old.clone());
    let web = entries.get_mut("web").expect("web");
    assert_eq!(reload_action(web, &old["web"]), ReloadAction::Unchanged);
    assert_eq!(
        reload_action(web, &new["web"]),
        ReloadAction::Replace { restart: false }
    );
    web.instances[0].state = State::Running { run: a_run() };
    assert_eq!(
        reload_action(web, &new["web"]),
        ReloadAction::Replace { restart: true }
    );
    // Once settled, the replacement keeps what status shows of its past.
    let inst = &mut web.instances[0];
    inst.state = State::Failed;
    inst.reason = Some("exit 3".into());
    inst.last_exit = Some(FAIL);
    inst.restarts = 4;
    inst.generation = 9;
    let fresh = inst.replaced();
    assert_eq!(fresh.state, State::Failed);
    assert_eq!(fresh.reason.as_deref(), Some("exit 3"));
    assert_eq!(fresh.last_exit, Some(FAIL));
    assert_eq!(fresh.restarts, 0, "counters start afresh");
    assert_eq!(fresh.generation, 9, "timers of the old instance stay stale");
    // A transient unit of the same name is always replaced.
    entries.get_mut("web").expect("web").transient = true;
    assert!(matches!(
        reload_action(&entries["web"], &old["web"]),
        ReloadAction::Replace { .. }
    ));
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

/// The answers among `fx`, by waiter.
fn answers(fx: &Effects) -> Vec<(WaiterId, &Answer)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::ReplyTo { waiter, answer } => Some((*waiter, answer)),
            _ => None,
        })
        .collect()
}

fn settled(waiters: &mut Waiters, units: &BTreeMap<String, UnitEntry>) -> Effects {
    let mut fx = Effects::new();
    waiters.settled(units, &mut fx);
    fx
}

#[test]
fn a_stop_is_answered_once_all_its_units_are_down_and_a_restart_then_starts_them() {
    let mut units = entries(units(&[
        ("a", "command = [\"a\"]"),
        ("b", "command = [\"b\"]"),
    ]));
    set(&mut units, "a", State::Running { run: a_run() });
    set(&mut units, "b", State::Stopping { run: a_run() });
    let mut waiters = Waiters::default();
    let stop = waiters.add(Wait::Stopped(vec!["a".into(), "b".into()]));
    let restart = waiters.add(Wait::Restart(vec!["a".into()]));
    assert!(settled(&mut waiters, &units).is_empty());
    set(&mut units, "a", State::Stopped);
    let fx = settled(&mut waiters, &units);
    assert_eq!(
        answers(&fx),
        [(restart, &Answer::StartUnits(vec!["a".into()]))]
    );
    set(&mut units, "b", State::Exited);
    let fx = settled(&mut waiters, &units);
    let both = Answer::Units(vec!["a".into(), "b".into()]);
    assert_eq!(answers(&fx), [(stop, &both)]);
    // Each is answered once.
    assert_eq!(waiters.len(), 0);
    assert!(settled(&mut waiters, &units).is_empty());
}

#[test]
fn a_wait_reports_how_the_instances_ended_or_that_the_unit_was_removed() {
    let mut units = entries(units(&[("u", "command = [\"u\"]\ninstances = 2")]));
    for inst in &mut units.get_mut("u").unwrap().instances {
        inst.state = State::Backoff {
            until: Instant::now(),
        };
    }
    let mut waiters = Waiters::default();
    let first = waiters.add(Wait::Settled("u".into()));
    // Backoff is not settled: the restart policy will run it again.
    assert!(settled(&mut waiters, &units).is_empty());
    let entry = units.get_mut("u").unwrap();
    entry.instances[0].state = State::Exited;
    entry.instances[0].last_exit = Some(OK);
    entry.instances[1].state = State::Failed;
    entry.instances[1].last_exit = Some(FAIL);
    entry.instances[1].reason = Some("start limit hit".into());
    let fx = settled(&mut waiters, &units);
    let [(waiter, Answer::Exits(Ok(result)))] = answers(&fx)[..] else {
        panic!("one wait answered: {fx:?}");
    };
    assert_eq!(waiter, first);
    let ended: Vec<_> = result
        .instances
        .iter()
        .map(|i| (i.instance, i.state, i.exit, i.reason.as_deref()))
        .collect();
    assert_eq!(
        ended,
        [
            (0, InstanceState::Exited, Some(OK), None),
            (
                1,
                InstanceState::Failed,
                Some(FAIL),
                Some("start limit hit")
            ),
        ]
    );
    // A unit removed by a reload while waited for: answered, with why.
    let second = waiters.add(Wait::Settled("u".into()));
    units.remove("u");
    let fx = settled(&mut waiters, &units);
    let [(waiter, Answer::Exits(Err(e)))] = answers(&fx)[..] else {
        panic!("one wait answered: {fx:?}");
    };
    assert_eq!(waiter, second);
    assert!(e.message.contains("removed"), "{}", e.message);
}

#[test]
fn a_first_pid_is_answered_once_there_is_a_process_or_none_will_come() {
    let mut units = entries(units(&[("u", "command = [\"u\"]")]));
    let mut waiters = Waiters::default();
    let first_pids = |waiters: &mut Waiters, units: &BTreeMap<String, UnitEntry>| {
        let mut fx = Effects::new();
        waiters.first_pids(units, &mut fx);
        fx
    };
    set(&mut units, "u", State::Waiting);
    let running = waiters.add(Wait::FirstPid("u".into()));
    assert!(first_pids(&mut waiters, &units).is_empty());
    set(&mut units, "u", State::Starting { run: a_run() });
    let fx = first_pids(&mut waiters, &units);
    assert_eq!(answers(&fx), [(running, &Answer::Pid(Some(1)))]);
    // One that failed to spawn is answered without a pid.
    set(
        &mut units,
        "u",
        State::Spawning {
            token: 1,
            signal: None,
        },
    );
    let failed = waiters.add(Wait::FirstPid("u".into()));
    assert!(first_pids(&mut waiters, &units).is_empty());
    set(&mut units, "u", State::Failed);
    let fx = first_pids(&mut waiters, &units);
    assert_eq!(answers(&fx), [(failed, &Answer::Pid(None))]);
    // The other kinds of waiter are not this decision's.
    waiters.add(Wait::Settled("u".into()));
    assert!(first_pids(&mut waiters, &units).is_empty());
    assert_eq!(waiters.len(), 1);
}

#[test]
fn start_wait_keeps_a_failure_and_wakes_at_the_end_of_the_start_window() {
    let mut units = entries(units(&[("u", "command = [\"u\"]\ninstances = 2")]));
    let t0 = Instant::now();
    let mut waiters = Waiters::default();
    let waiter = waiters.add(Wait::Started {
        units: vec!["u".into(), "gone".into()],
        failed: BTreeMap::new(),
    });
    let started = |waiters: &mut Waiters, units: &BTreeMap<String, UnitEntry>, now| {
        let mut fx = Effects::new();
        waiters.started(units, now, &mut fx);
        fx
    };
    let run = Run {
        pid: 10,
        id: 1,
        since: t0,
    };
    let entry = units.get_mut("u").unwrap();
    entry.instances[0].state = State::Running { run };
    entry.instances[1].state = State::Backoff { until: t0 };
    entry.instances[1].last_exit = Some(FAIL);
    // Instance 0 is within its start window: a wake-up at its end, no answer yet.
    let fx = started(&mut waiters, &units, t0 + ms(200));
    let wake = Effect::Timer {
        delay: START_WINDOW - ms(200),
        timer: Timer::Wake {
            at: t0 + START_WINDOW,
        },
    };
    assert_eq!(fx, [wake]);
    // Instance 1 runs again by its restart policy: its failure stands.
    units.get_mut("u").unwrap().instances[1].state = State::Running { run };
    let fx = started(&mut waiters, &units, t0 + START_WINDOW);
    let [(id, Answer::Started(failed))] = answers(&fx)[..] else {
        panic!("answered: {fx:?}");
    };
    assert_eq!(id, waiter);
    let failed: Vec<_> = failed.iter().map(|(u, i, _)| (u.as_str(), *i)).collect();
    assert_eq!(failed, [("gone", 0), ("u", 1)]);
    assert_eq!(waiters.len(), 0);
}
