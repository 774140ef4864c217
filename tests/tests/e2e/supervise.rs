//! Supervision: the seed patterns, restarts, stop, reaping, records.

use std::time::{Duration, Instant};

use corral_proto::InstanceState;
use corral_tests::{TestDaemon, alive, all_procs, group_members, wait_for};

#[test]
fn run_wait_prints_the_line_and_exits_with_its_code() {
    let mut d = TestDaemon::new();
    d.start();
    let out = d.ctl_ok(&["run", "--wait", "--", "echo", "Hello from process!"]);
    assert_eq!(out, "Hello from process!\n");

    let failed = d.ctl(&["run", "--wait", "--", "sh", "-c", "echo partial; exit 7"]);
    assert_eq!(failed.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&failed.stdout), "partial\n");
}

#[test]
fn five_instances_each_print_their_number() {
    let mut d = TestDaemon::new();
    d.unit(
        "task",
        r#"
kind = "task"
instances = 5
command = ["/bin/sh", "-c", "echo Task {instance} running as $CORRAL_UNIT.$CORRAL_INSTANCE"]
"#,
    );
    d.start();
    assert_eq!(d.status("task").instances[0].state, InstanceState::Inactive);
    d.ctl_ok(&["start", "task"]);
    let waited = d.ctl_ok(&["wait", "task"]);
    for n in 0..5 {
        assert!(
            waited.contains(&format!("task.{n}: exited (exit 0)")),
            "{waited}"
        );
        assert_eq!(d.log("task", n), format!("Task {n} running as task.{n}\n"));
    }
    let logs = d.ctl_ok(&["logs", "task"]);
    assert!(logs.contains("[3] Task 3 running as task.3"), "{logs}");
}

#[test]
fn a_unit_extending_another_overrides_its_command() {
    let mut d = TestDaemon::new();
    d.unit(
        "base",
        r#"
kind = "task"
command = ["/bin/sh", "-c", "echo base"]
env = { GREETING = "Process running" }
"#,
    )
    .unit(
        "mine",
        r#"
extends = "base"
command = ["/bin/sh", "-c", "echo $GREETING in mine"]
"#,
    );
    d.start();
    d.ctl_ok(&["start", "mine"]);
    d.ctl_ok(&["wait", "mine"]);
    assert_eq!(d.log("mine", 0), "Process running in mine\n");
    assert_eq!(d.status("base").instances[0].state, InstanceState::Inactive);
}

#[test]
fn a_crash_loop_backs_off_then_hits_the_start_limit() {
    let mut d = TestDaemon::new();
    d.unit(
        "crash",
        r#"
command = ["/bin/sh", "-c", "echo attempt; exit 3"]
restart_delay = "20ms"
restart_delay_max = "200ms"
start_limit_burst = 4
start_limit_interval = "1m"
"#,
    );
    d.start();
    let status = d.wait_state("crash", "failed");
    let inst = &status.instances[0];
    assert_eq!(inst.restarts, 3, "{inst:?}");
    assert_eq!(inst.last_exit.unwrap().code, Some(3));
    assert!(
        inst.reason.as_deref().unwrap().contains("start limit"),
        "{inst:?}"
    );
    assert_eq!(d.log("crash", 0).lines().count(), 4);
    // The delay doubles after each consecutive failure (recorded in the event log).
    let db = rusqlite::Connection::open(d.state_dir().join("state.db")).unwrap();
    let details: Vec<String> = db
        .prepare("SELECT detail FROM events WHERE unit = 'crash' AND kind = 'exited' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        details,
        [
            "exit 3; restarting in 20ms",
            "exit 3; restarting in 40ms",
            "exit 3; restarting in 80ms"
        ]
    );

    // Failed stays down until started again; an explicit start gets a fresh budget.
    d.ctl_ok(&["start", "--no-wait", "crash"]);
    d.wait_state("crash", "failed");
    assert_eq!(d.log("crash", 0).lines().count(), 8);
}

#[test]
fn on_failure_restarts_until_the_process_succeeds() {
    let mut d = TestDaemon::new();
    let marker = d.path("attempts");
    d.unit(
        "flaky",
        &format!(
            r#"
command = ["/bin/sh", "-c", "echo x >> {m}; [ $(wc -l < {m}) -ge 3 ] && exec sleep 1000; exit 1"]
restart_delay = "10ms"
"#,
            m = marker.display()
        ),
    );
    d.start();
    let status = wait_for("flaky to run after two failures", || {
        let s = d.status("flaky");
        (s.instances[0].state == InstanceState::Running && s.instances[0].restarts == 2)
            .then_some(s)
    });
    assert_eq!(status.instances[0].last_exit.unwrap().code, Some(1));
}

#[test]
fn stop_kills_a_group_that_ignores_sigterm_and_has_grandchildren() {
    let mut d = TestDaemon::new();
    d.unit(
        "stubborn",
        r#"
command = ["/bin/sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000 & echo ready; wait"]
stop_timeout = "1s"
"#,
    );
    d.start();
    let pid = wait_for("the shell and its two sleeps", || {
        let pid = d.status("stubborn").instances[0].pid? as i32;
        (group_members(pid).len() == 3 && d.log("stubborn", 0).contains("ready")).then_some(pid)
    });
    let members = group_members(pid);
    let began = Instant::now();
    d.ctl_ok(&["stop", "stubborn"]);
    let took = began.elapsed();
    for member in &members {
        assert!(
            !alive(*member),
            "process {member} of the group survived stop"
        );
    }
    assert!(group_members(pid).is_empty());
    assert_eq!(
        d.status("stubborn").instances[0].state,
        InstanceState::Stopped
    );
    // SIGKILL came after stop_timeout (1s), not never: a generous bound, not a benchmark.
    assert!(took < Duration::from_secs(20), "stop took {took:?}");
}

#[test]
fn custom_stop_signal_reaches_the_process() {
    let mut d = TestDaemon::new();
    let seen = d.path("seen");
    d.unit(
        "graceful",
        &format!(
            r#"
command = ["/bin/sh", "-c", "trap 'echo got INT > {}; exit 0' INT; echo ready; while :; do sleep 0.05; done"]
stop_signal = "SIGINT"
"#,
            seen.display()
        ),
    );
    d.start();
    wait_for("graceful to be ready", || {
        d.log("graceful", 0).contains("ready").then_some(())
    });
    d.ctl_ok(&["stop", "graceful"]);
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "got INT\n");
    assert_eq!(
        d.status("graceful").instances[0].last_exit.unwrap().code,
        Some(0)
    );
}

#[test]
fn zombies_are_reaped_including_orphaned_grandchildren() {
    let mut d = TestDaemon::new();
    d.unit(
        "short",
        r#"
kind = "task"
instances = 20
command = ["/bin/sh", "-c", "(sleep 0.2; true) & echo started"]
"#,
    );
    d.start();
    for _ in 0..3 {
        d.ctl_ok(&["start", "short"]);
        d.ctl_ok(&["wait", "short"]);
    }
    let corrald = d.pid();
    wait_for("corrald to have no zombie or leftover children", || {
        let children: Vec<_> = all_procs()
            .into_iter()
            .filter(|p| p.ppid == corrald)
            .collect();
        children.is_empty().then_some(())
    });
    assert_eq!(d.log("short", 19), "started\nstarted\nstarted\n");
}

#[test]
fn instances_get_the_corral_environment_and_unit_settings() {
    let mut d = TestDaemon::new();
    let workdir = d.path("work");
    std::fs::create_dir(&workdir).unwrap();
    d.unit(
        "envy",
        &format!(
            r#"
kind = "task"
command = ["/bin/sh", "-c", "echo $CORRAL_SOCKET $CORRAL_UNIT $CORRAL_INSTANCE $FOO; pwd; umask; ulimit -n"]
working_dir = "{}"
env = {{ FOO = "bar" }}
umask = "027"
[rlimits]
nofile = 123
"#,
            workdir.display()
        ),
    );
    d.start();
    d.ctl_ok(&["start", "envy"]);
    d.ctl_ok(&["wait", "envy"]);
    let expected = format!(
        "{} envy 0 bar\n{}\n0027\n123\n",
        d.socket().display(),
        workdir.display()
    );
    assert_eq!(d.log("envy", 0), expected);
}

#[test]
fn instances_start_with_no_blocked_signals_and_sigpipe_at_its_default() {
    // corrald blocks every signal around the start of a process, and the Rust runtime
    // ignores SIGPIPE: neither may leak into an instance. Signals ignored by whoever
    // started corrald stay ignored, as across any exec.
    let mut d = TestDaemon::new();
    d.unit(
        "sigs",
        r#"
kind = "task"
command = ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]
"#,
    );
    d.start();
    d.ctl_ok(&["start", "sigs"]);
    d.ctl_ok(&["wait", "sigs"]);
    let mask = |status: &str, field: &str| {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let own = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let log = d.log("sigs", 0);
    let sigpipe = 1 << (nix::libc::SIGPIPE - 1);
    assert_ne!(mask(&own, "SigIgn") & sigpipe, 0, "corrald ignores SIGPIPE");
    assert_eq!(mask(&log, "SigBlk"), 0, "{log}");
    assert_eq!(
        mask(&log, "SigIgn"),
        mask(&own, "SigIgn") & !sigpipe,
        "{log}"
    );
}

#[test]
fn a_missing_command_fails_the_instance_with_the_reason_and_others_run_on() {
    let mut d = TestDaemon::new();
    d.unit("ghost", r#"command = ["/nonexistent/program"]"#)
        .unit("fine", r#"command = ["sleep", "1000"]"#);
    d.start();
    let ghost = d.wait_state("ghost", "failed");
    let reason = ghost.instances[0].reason.clone().unwrap();
    assert!(
        reason.contains("command not found: /nonexistent/program"),
        "{reason}"
    );
    d.wait_state("fine", "running");
    let status = String::from_utf8(d.ctl(&["status"]).stdout).unwrap();
    assert!(status.contains("command not found"), "{status}");
}

#[test]
fn requires_pulls_in_and_after_orders_the_start() {
    let mut d = TestDaemon::new();
    let marker = d.path("prepared");
    d.unit(
        "prepare",
        &format!(
            r#"
kind = "task"
command = ["/bin/sh", "-c", "sleep 0.3; touch {}"]
"#,
            marker.display()
        ),
    )
    .unit(
        "app",
        &format!(
            r#"
kind = "task"
requires = ["prepare"]
after = ["prepare"]
command = ["/bin/sh", "-c", "test -e {} && echo prepared-first"]
"#,
            marker.display()
        ),
    );
    d.start();
    let started = d.ctl_ok(&["start", "app"]);
    assert!(started.contains("prepare"), "{started}");
    d.ctl_ok(&["wait", "app"]);
    assert_eq!(d.log("app", 0), "prepared-first\n");
}

#[test]
fn runs_and_events_are_recorded_in_sqlite() {
    let mut d = TestDaemon::new();
    d.start();
    d.ctl(&["run", "--name", "rec", "--wait", "--", "sh", "-c", "exit 4"]);
    let db = rusqlite::Connection::open(d.state_dir().join("state.db")).unwrap();
    let (pid, start_time, code): (i64, i64, Option<i64>) = db
        .query_row(
            "SELECT pid, start_time, exit_code FROM runs WHERE unit = 'rec'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(pid > 0 && start_time > 0);
    assert_eq!(code, Some(4));
    let kinds: Vec<String> = db
        .prepare("SELECT kind FROM events WHERE unit = 'rec' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kinds, ["started", "exited"]);
}

#[test]
fn logs_rotate_by_size() {
    let mut d = TestDaemon::new();
    d.unit(
        "chatty",
        r#"
command = ["/bin/sh", "-c", "while :; do echo 0123456789012345678901234567890123456789; done"]
log_max_size = "4K"
log_keep = 2
"#,
    );
    d.start();
    let rss = |pid: i32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let log = d.log_dir().join("chatty.0.log");
    let rotated = |n: u32| d.log_dir().join(format!("chatty.0.log.{n}"));
    wait_for("the first rotation", || rotated(1).exists().then_some(()));
    let rss_early = rss(d.pid());
    wait_for("two rotations", || rotated(2).exists().then_some(()));
    assert!(!rotated(3).exists());
    // corrald never reads the output (the instance writes its own file): no growth.
    let rss_late = rss(d.pid());
    assert!(
        rss_late < rss_early + 8 * 1024,
        "RSS went from {rss_early} kB to {rss_late} kB"
    );
    // Rotated files hold at most log_max_size each, even while the writer runs.
    for n in [1, 2] {
        let len = std::fs::metadata(rotated(n)).unwrap().len();
        assert!(len <= 4096, "{} is {len} bytes", rotated(n).display());
    }
    d.ctl_ok(&["stop", "chatty"]);
    // Once the instance has stopped, its last check brings every file within the bound
    // as written: log_max_size × (log_keep + 1) in all, log_max_size each.
    wait_for("the stopped instance's log to be rotated", || {
        (std::fs::metadata(&log).unwrap().len() <= 4096).then_some(())
    });
    let mut total = 0;
    for path in [&log, &rotated(1), &rotated(2)] {
        let len = std::fs::metadata(path).unwrap().len();
        assert!(len <= 4096, "{} is {len} bytes", path.display());
        total += len;
    }
    assert!(total <= 4096 * 3, "{total} bytes in all");
    assert!(!rotated(3).exists());
}

#[test]
fn shutdown_stops_services_and_exits_zero() {
    let mut d = TestDaemon::new();
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start();
    let pid = d.wait_state("svc", "running").instances[0].pid.unwrap() as i32;
    let out = d.ctl_ok(&["shutdown"]);
    assert!(out.contains("corrald stopped"));
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!alive(pid));
    assert!(!d.socket().exists());
}

#[test]
fn user_and_group_drop_privileges_before_exec() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: dropping privileges needs corrald to run as root");
        return;
    }
    let mut d = TestDaemon::new();
    d.unit(
        "unprivileged",
        r#"
kind = "task"
user = "nobody"
command = ["/bin/sh", "-c", "id -u; id -g; id -G"]
"#,
    );
    d.start();
    d.ctl_ok(&["start", "unprivileged"]);
    d.ctl_ok(&["wait", "unprivileged"]);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let log = d.log("unprivileged", 0);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], nobody.uid.to_string());
    assert_eq!(lines[1], nobody.gid.to_string());
    assert!(
        !lines[2].split(' ').any(|g| g == "0"),
        "root's groups were kept: {log}"
    );
}

#[test]
fn run_wait_of_a_missing_command_fails_with_the_reason() {
    let mut d = TestDaemon::new();
    d.start();
    let out = d.ctl(&["run", "--wait", "--", "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("command not found: /nonexistent/program")
    );
}

#[test]
fn env_files_are_read_at_each_start_and_a_bad_line_fails_the_start_with_its_position() {
    let mut d = TestDaemon::new();
    let main = d.path("app.env");
    let local = d.path("app.local.env");
    std::fs::write(
        &main,
        "# app settings\nGREETING='hello world'\nLEVEL=info\n",
    )
    .unwrap();
    d.unit(
        "app",
        &format!(
            r#"command = ["/bin/sh", "-c", "echo \"$GREETING/$LEVEL/$FROM_ENV\"; sleep 1000"]
env = {{ FROM_ENV = "table", LEVEL = "overridden by the file" }}
env_file = ["{}", "-{}"]
restart = "no"
"#,
            main.display(),
            local.display()
        ),
    );
    d.start();
    wait_for("the first start's line", || {
        d.log("app", 0)
            .contains("hello world/info/table")
            .then_some(())
    });
    // Read at each start: a new optional file and a changed one apply at the restart.
    std::fs::write(&local, "LEVEL=\"debug\"\n").unwrap();
    d.ctl_ok(&["restart", "app"]);
    wait_for("the restart's line", || {
        d.log("app", 0)
            .contains("hello world/debug/table")
            .then_some(())
    });
    // A malformed line: the start fails, naming the file and line.
    std::fs::write(&local, "LEVEL=debug\nthis is not an assignment\n").unwrap();
    let _ = d.ctl(&["restart", "app"]);
    let status = d.wait_state("app", "failed");
    let reason = status.instances[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!("{}:2:", local.display())) && reason.contains("NAME=VALUE"),
        "{reason}"
    );
}
