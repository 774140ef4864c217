//! Lifecycle rules: daemon and non-daemon units on shutdown, on a crash of corrald, and
//! on its next start.

use std::collections::HashMap;

use corral_proto::InstanceState;
use corral_tests::{TestDaemon, alive, group_members, wait_for};
use nix::sys::signal::Signal;

fn events(d: &TestDaemon, kind: &str) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(d.state_dir().join("state.db")).unwrap();
    db.prepare(
        "SELECT coalesce(unit, ''), coalesce(detail, '') FROM events WHERE kind = ?1 ORDER BY id",
    )
    .unwrap()
    .query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn pid_of(d: &TestDaemon, unit: &str) -> i32 {
    d.wait_state(unit, "running").instances[0].pid.unwrap() as i32
}

#[test]
fn sigterm_kills_daemon_units_and_joins_running_tasks() {
    let mut d = TestDaemon::new();
    d.unit(
        "background",
        r#"
daemon = true
command = ["/bin/sh", "-c", "while true; do echo Running...; sleep 0.1; done"]
"#,
    )
    .unit(
        "job",
        r#"
kind = "task"
command = ["/bin/sh", "-c", "for i in $(seq 1 20); do echo line $i; sleep 0.1; done; echo done"]
"#,
    );
    d.start();
    let background = pid_of(&d, "background");
    d.ctl_ok(&["start", "job"]);
    wait_for("the job to have begun", || {
        d.log("job", 0).contains("line 1").then_some(())
    });
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!alive(background), "the daemon unit outlived corrald");
    assert!(group_members(background).is_empty());
    let log = d.log("job", 0);
    assert!(
        log.ends_with("line 20\ndone\n"),
        "the task was not joined: {log}"
    );
}

#[test]
fn services_stop_in_reverse_dependency_order_and_stubborn_ones_are_killed() {
    let mut d = TestDaemon::new();
    d.unit("db", r#"command = ["sleep", "1000"]"#)
        .unit(
            "api",
            r#"
after = ["db"]
command = ["/bin/sh", "-c", "trap '' TERM; sleep 1000 & wait"]
stop_timeout = "500ms"
"#,
        )
        .unit(
            "web",
            r#"
requires = ["api"]
command = ["sleep", "1000"]
"#,
        );
    d.start();
    for unit in ["db", "api", "web"] {
        pid_of(&d, unit);
    }
    // The plan says the same as what follows.
    let plan: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["--json", "shutdown", "--plan"])).unwrap();
    let order: HashMap<String, u64> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["unit"].as_str().unwrap().to_owned(),
                s["order"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        order["web"] < order["api"] && order["api"] < order["db"],
        "{plan}"
    );
    let table = d.ctl_ok(&["shutdown", "--plan"]);
    assert!(
        table.contains("SIGTERM") && table.contains("web"),
        "{table}"
    );
    // --plan changed nothing.
    pid_of(&d, "db");

    d.ctl_ok(&["shutdown"]);
    assert_eq!(d.wait_exit(), Some(0));
    let stopping: Vec<String> = events(&d, "stopping").into_iter().map(|(u, _)| u).collect();
    assert_eq!(stopping, ["web", "api", "db"]);
    let killed: Vec<String> = events(&d, "killed").into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        killed,
        ["api"],
        "api ignores SIGTERM: SIGKILL after stop_timeout"
    );
}

#[test]
fn a_second_sigterm_kills_everything_at_once() {
    let mut d = TestDaemon::new();
    d.unit(
        "stubborn",
        r#"
command = ["/bin/sh", "-c", "trap '' TERM; sleep 1000 & wait"]
stop_timeout = "10m"
"#,
    );
    d.start();
    let pid = pid_of(&d, "stubborn");
    d.signal(Signal::SIGTERM);
    wait_for("stubborn to be stopping", || {
        let s = d.client().status(Some("stubborn")).ok()?;
        (s.units[0].instances[0].state == InstanceState::Stopping).then_some(())
    });
    // While shutting down: no new work, but reads answer.
    let refused = d.ctl(&["run", "--", "true"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("shutting down"));
    d.ctl_ok(&["status"]);
    d.signal(Signal::SIGTERM);
    d.wait_exit();
    assert!(
        group_members(pid).is_empty(),
        "a process of the group survived"
    );
}

#[test]
fn sighup_reloads_unit_files() {
    let mut d = TestDaemon::new();
    d.start();
    d.unit("late", r#"command = ["sleep", "1000"]"#);
    d.signal(Signal::SIGHUP);
    wait_for("the new unit to run", || {
        let s = d.client().status(Some("late")).ok()?;
        (s.units[0].instances[0].state == InstanceState::Running).then_some(())
    });
}

#[test]
fn a_daemon_run_dies_with_corrald_and_a_plain_run_survives_it() {
    let mut d = TestDaemon::new();
    d.start();
    d.ctl_ok(&["run", "--daemon", "--name", "helper", "--", "sleep", "1003"]);
    d.ctl_ok(&["run", "--name", "worker", "--", "sleep", "1003"]);
    let helper = pid_of(&d, "helper");
    let worker = pid_of(&d, "worker");
    d.kill9();
    wait_for("the daemon run to die with corrald", || {
        (!alive(helper)).then_some(())
    });
    assert!(alive(worker), "a plain run died with corrald");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), Signal::SIGKILL);
}

#[test]
fn kill_9_leaves_non_daemons_running_and_corrald_adopts_them() {
    let mut d = TestDaemon::new();
    d.unit(
        "background",
        r#"
daemon = true
command = ["/bin/sh", "-c", "while true; do echo Running...; sleep 0.1; done"]
"#,
    )
    .unit(
        "writer",
        r#"
command = ["/bin/sh", "-c", "echo started; while true; do echo tick; sleep 0.05; done"]
restart_delay = "10ms"
"#,
    );
    d.start();
    let daemon_pid = pid_of(&d, "background");
    let writer = pid_of(&d, "writer");
    d.kill9();

    wait_for("the daemon unit to die with corrald", || {
        (!alive(daemon_pid)).then_some(())
    });
    assert!(alive(writer), "a non-daemon instance died with corrald");
    let before = d.log("writer", 0).len();
    wait_for("the orphan to keep logging", || {
        (d.log("writer", 0).len() > before).then_some(())
    });

    d.start();
    let status = d.status("writer");
    assert_eq!(status.instances[0].state, InstanceState::Running);
    assert_eq!(
        status.instances[0].pid,
        Some(writer as u32),
        "adopted with its original pid"
    );
    assert_eq!(
        d.log("writer", 0).matches("started").count(),
        1,
        "started twice"
    );
    // The daemon unit is started afresh (it had died with corrald).
    assert_ne!(pid_of(&d, "background"), daemon_pid);
    let recovered = events(&d, "recovered");
    let detail = &recovered.last().unwrap().1;
    assert!(
        detail.contains(&format!("adopted: [writer.0 (pid {writer})")),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("background.0 (pid {daemon_pid})")),
        "{detail}"
    );

    // The adopted process exits: corrald notices and applies the restart policy.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(writer), Signal::SIGKILL).unwrap();
    let restarted = wait_for("writer to be restarted", || {
        let s = d.status("writer");
        let i = &s.instances[0];
        (i.state == InstanceState::Running && i.pid != Some(writer as u32)).then_some(s)
    });
    assert_eq!(restarted.instances[0].restarts, 1);
    assert_eq!(d.log("writer", 0).matches("started").count(), 2);
}

#[test]
fn a_recycled_pid_is_neither_adopted_nor_signalled() {
    let mut d = TestDaemon::new();
    d.unit("victim", r#"command = ["sleep", "1000"]"#);
    d.start();
    let pid = pid_of(&d, "victim");
    d.kill9();
    // Make the record describe another process that happens to have the same pid.
    let db = rusqlite::Connection::open(d.state_dir().join("state.db")).unwrap();
    db.execute(
        "UPDATE runs SET start_time = start_time + 1 WHERE unit = 'victim'",
        [],
    )
    .unwrap();
    drop(db);
    d.start();
    let fresh = pid_of(&d, "victim");
    assert_ne!(
        fresh, pid,
        "a process with a different start time was adopted"
    );
    assert!(alive(pid), "the unrelated process was signalled");
    let recovered = events(&d, "recovered");
    let detail = &recovered.last().unwrap().1;
    assert!(
        detail.contains(&format!("found dead: [victim.0 (pid {pid})]")),
        "{detail}"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
}

#[test]
fn shutdown_joins_pool_jobs_then_stops_them_to_resume_at_the_next_start() {
    let mut d = TestDaemon::new();
    let config = d.path("corral.toml");
    std::fs::write(&config, "shutdown_timeout = \"1s\"\n").unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    d.start();
    let go = d.path("go");
    let script = format!(
        "while [ {{}} -ge 1 ] && [ ! -e {go} ]; do sleep 0.05; done; echo out{{}}",
        go = go.display()
    );
    let job = d
        .ctl_ok(&[
            "pool", "map", "--detach", "-j", "2", "--", "sh", "-c", &script, ":::", "0", "1", "2",
        ])
        .trim()
        .to_owned();
    wait_for("item 0 done, items 1-2 running", || {
        let s: serde_json::Value =
            serde_json::from_str(&d.ctl_ok(&["--json", "pool", "status", &job])).unwrap();
        (s["succeeded"] == 1 && s["running"] == 2).then_some(())
    });
    d.ctl_ok(&["shutdown"]);
    assert_eq!(d.wait_exit(), Some(0));
    std::fs::write(&go, "").unwrap();
    d.start();
    let waited = d.ctl_ok(&["pool", "wait", &job]);
    assert!(
        waited.contains("finished (3 ok, 0 failed of 3)"),
        "{waited}"
    );
    assert_eq!(d.ctl_ok(&["pool", "results", &job]), "out0\nout1\nout2\n");
}
