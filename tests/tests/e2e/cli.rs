//! corralctl's own behaviour: exit codes, messages, --json.

use corral_tests::{TestDaemon, bin};

#[test]
fn without_corrald_it_says_which_socket_and_how_to_start_one() {
    let d = TestDaemon::new();
    let out = d.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&d.socket().display().to_string()), "{err}");
    assert!(err.contains("start it with `corrald"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = std::process::Command::new(bin("corralctl"))
        .args(["start"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_units_fail_with_exit_1() {
    let mut d = TestDaemon::new();
    d.start();
    let out = d.ctl(&["start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no unit named `nope`"));
}

#[test]
fn json_output_is_machine_readable() {
    let mut d = TestDaemon::new();
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start();
    d.wait_state("svc", "running");
    let status: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["--json", "status"])).unwrap();
    assert_eq!(status["units"][0]["name"], "svc");
    assert_eq!(status["units"][0]["instances"][0]["state"], "running");
    let table = d.ctl_ok(&["status"]);
    assert!(table.starts_with("UNIT"), "{table}");
    assert!(
        table.contains("svc") && table.contains("running"),
        "{table}"
    );
    let stopped: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["--json", "stop", "svc"])).unwrap();
    assert_eq!(stopped["units"][0], "svc");
}

#[test]
fn restart_gives_a_new_process() {
    let mut d = TestDaemon::new();
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start();
    let before = d.wait_state("svc", "running").instances[0].pid;
    d.ctl_ok(&["restart", "svc"]);
    let after = d.wait_state("svc", "running").instances[0].pid;
    assert_ne!(before, after);
}

#[test]
fn kill_signals_every_instance_group() {
    let mut d = TestDaemon::new();
    let seen = d.path("seen");
    d.unit(
        "trapper",
        &format!(
            "command = [\"/bin/sh\", \"-c\", \"trap 'echo got USR1 >> {}' USR1; touch {}.ready; while :; do sleep 0.05; done\"]\nrestart = \"no\"\n",
            seen.display(),
            seen.display()
        ),
    );
    d.start();
    let ready = d.path("seen.ready");
    corral_tests::wait_for("the trap", || ready.exists().then_some(()));
    d.ctl_ok(&["kill", "-s", "USR1", "trapper"]);
    corral_tests::wait_for("USR1 to arrive", || {
        std::fs::read_to_string(&seen)
            .ok()
            .filter(|s| s.contains("got USR1"))
            .map(|_| ())
    });
    assert_eq!(d.status("trapper").instances[0].state.as_str(), "running");
    d.ctl_ok(&["kill", "trapper"]);
    let stopped = d.wait_state("trapper", "exited");
    assert_eq!(stopped.instances[0].last_exit.unwrap().signal, Some(9));
    let bad = d.ctl(&["kill", "-s", "SIGNOPE", "trapper"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn corral_log_takes_levels_per_module_and_a_bad_value_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let check = |spec: &str| {
        let out = std::process::Command::new(bin("corrald"))
            .args(["--check", "--units"])
            .arg(dir.path())
            .env("CORRAL_LOG", spec)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(!check("warn,corral_daemon::store=debug").contains("ignoring CORRAL_LOG"));
    let stderr = check("corral_daemon=loud");
    assert!(
        stderr.contains("ignoring CORRAL_LOG=\"corral_daemon=loud\"") && stderr.contains("info"),
        "{stderr}"
    );
}

#[test]
fn start_waits_until_a_service_runs() {
    let mut d = TestDaemon::new();
    d.unit(
        "svc",
        "command = [\"sleep\", \"1000\"]\nautostart = false\n",
    );
    d.start();
    let out = d.ctl(&["start", "svc"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started: svc\n");
    // Answered after the start window, not at the spawn: it is running now.
    let status = d.status("svc");
    assert_eq!(status.instances[0].state.as_str(), "running");
    assert!(status.instances[0].uptime_ms.unwrap() >= 1000, "{status:?}");
    // Restart waits the same way: a new process that has run for the window.
    let before = status.instances[0].pid;
    d.ctl_ok(&["restart", "svc"]);
    let after = d.status("svc");
    assert_eq!(after.instances[0].state.as_str(), "running");
    assert_ne!(after.instances[0].pid, before);
    assert!(after.instances[0].uptime_ms.unwrap() >= 1000, "{after:?}");
}

#[test]
fn start_of_a_unit_that_fails_at_once_exits_1_with_the_reason() {
    let mut d = TestDaemon::new();
    d.unit(
        "missing",
        "command = [\"/nonexistent/corral-test-prog\"]\nautostart = false\n",
    );
    d.unit(
        "crash",
        "command = [\"/bin/sh\", \"-c\", \"echo 'fatal: no config file' >&2; exit 1\"]\nautostart = false\nrestart_delay = \"5s\"\nrestart_delay_max = \"5s\"\n",
    );
    d.unit(
        "badtask",
        "kind = \"task\"\ncommand = [\"/bin/sh\", \"-c\", \"echo 'task says why' >&2; exit 3\"]\n",
    );
    d.unit("oktask", "kind = \"task\"\ncommand = [\"true\"]\n");
    d.start();

    let out = d.ctl(&["start", "missing"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.0 did not start") && err.contains("/nonexistent/corral-test-prog"),
        "{err}"
    );

    let out = d.ctl(&["start", "crash"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("crash.0 did not start: exited (exit 1)"),
        "{err}"
    );
    assert!(
        err.contains("fatal: no config file"),
        "the log's last lines: {err}"
    );
    assert!(err.contains("crash.0.log"), "the log's path: {err}");

    let out = d.ctl(&["--json", "start", "badtask"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(err["code"], "failed");
    assert!(
        err["message"].as_str().unwrap().contains("exited (exit 3)"),
        "{err}"
    );
    assert!(
        err["details"].to_string().contains("task says why"),
        "{err}"
    );

    // A task that exits 0 at once has started; --no-wait keeps the old answer.
    d.ctl_ok(&["start", "oktask"]);
    let out = d.ctl(&["start", "--no-wait", "badtask"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn start_gives_up_after_its_timeout() {
    let mut d = TestDaemon::new();
    d.unit(
        "slow",
        "command = [\"sleep\", \"1000\"]\nautostart = false\nafter = [\"prep\"]\n",
    );
    d.unit("prep", "kind = \"task\"\ncommand = [\"sleep\", \"1000\"]\n");
    d.start();
    d.ctl_ok(&["start", "--no-wait", "prep"]);
    // `slow` waits for `prep` to finish, which it does not.
    let out = d.ctl(&["start", "--timeout", "300ms", "slow"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("slow not started after 300 ms"), "{err}");
    assert_eq!(d.status("slow").instances[0].state.as_str(), "starting");
    d.ctl_ok(&["stop", "slow", "prep"]);
}

/// stderr of a corralctl run with --json: one JSON error object.
fn json_error(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stderr);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no error printed: {out:?}"));
    assert_eq!(lines.next(), None, "one line: {text}");
    serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn with_json_every_error_is_json_with_the_same_exit_code() {
    let mut d = TestDaemon::new();
    // Cannot reach corrald: exit 3.
    let out = d.ctl(&["--json", "status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = json_error(&out);
    assert_eq!(err["code"], "unreachable", "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains(&d.socket().display().to_string()), "{err}");
    assert!(
        err["details"][0]
            .as_str()
            .unwrap()
            .contains("start it with `corrald"),
        "{err}"
    );

    // Bad arguments, found by clap or by corralctl before connecting: exit 2.
    for args in [
        &["--json", "start"][..],
        &["--json", "queue", "get", "q", "--timeout", "NaN"],
        &["queue", "get", "q", "--json", "--timeout", "-1"],
        &[
            "--json", "array", "create", "a", "--type", "i64", "--len", "2", "1",
        ],
        &["--json", "pool", "map", "-j", "0", "--", "true", ":::", "a"],
        &["--json", "queue"],
    ] {
        let out = d.ctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = json_error(&out);
        assert_eq!(err["code"], "usage", "{args:?}: {err}");
        assert!(!err["message"].as_str().unwrap().is_empty(), "{err}");
    }
    let out = d.ctl(&["--json", "queue"]);
    let err = json_error(&out);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("subcommand is missing"),
        "{err}"
    );
    let out = d.ctl(&["--json", "queue", "get", "q", "--timeout", "NaN"]);
    assert!(
        json_error(&out)["message"]
            .as_str()
            .unwrap()
            .contains("NaN")
    );

    d.start();
    // corrald's errors carry its code: exit 1.
    let out = d.ctl(&["--json", "start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = json_error(&out);
    assert_eq!(err["code"], "not_found", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("no unit named `nope`"),
        "{err}"
    );
    // corralctl's own failures too.
    let out = d.ctl(&["--json", "queue", "get", "q", "--no-wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_error(&out)["code"], "empty");
    let out = d.ctl(&["--json", "queue", "get", "q", "--timeout", "100ms"]);
    assert_eq!(out.status.code(), Some(1));
    let err = json_error(&out);
    assert_eq!(err["code"], "timeout", "{err}");
    assert_eq!(err["message"], "queue q: no item within 100ms", "{err}");
    // Without --json, the same errors are text.
    let out = d.ctl(&["start", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("corralctl: no unit named"));
}

#[test]
fn timeouts_take_durations_or_seconds_and_refuse_nan_negative_and_infinite() {
    let mut d = TestDaemon::new();
    d.unit("t", "kind = \"task\"\ncommand = [\"sleep\", \"1000\"]\n");
    d.start();
    for (timeout, shown) in [("300ms", "300ms"), ("0.3", "300ms"), ("0s", "0s")] {
        let out = d.ctl(&["queue", "get", "q", "--timeout", timeout]);
        assert_eq!(out.status.code(), Some(1), "{timeout}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("corralctl: queue q: no item within {shown}\n")
        );
    }
    d.ctl_ok(&["queue", "put", "q", "x"]);
    assert_eq!(d.ctl_ok(&["queue", "get", "q", "--timeout", "1m"]), "x\n");
    d.ctl_ok(&["start", "--no-wait", "t"]);
    let out = d.ctl(&["wait", "t", "--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("still running"));
    for (bad, why) in [
        ("NaN", "such as 5s"),
        ("-1", "cannot be negative"),
        ("-2s", "cannot be negative"),
        ("inf", "must be finite"),
        ("5 fortnights", "unknown unit"),
    ] {
        for args in [
            &["queue", "get", "q", "--timeout", bad][..],
            &["wait", "t", "--timeout", bad],
            &["start", "t", "--timeout", bad],
            &["pool", "wait", "1", "--timeout", bad],
        ] {
            let out = d.ctl(args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(why), "{args:?}: {err}");
        }
    }
    d.ctl_ok(&["stop", "t"]);
}

#[test]
fn start_names_the_instance_that_failed_even_if_it_was_restarted_meanwhile() {
    let mut d = TestDaemon::new();
    // Instance 0 exits at once and is restarted quickly (and fails again); instance 1 runs.
    d.unit(
        "half",
        "instances = 2\ncommand = [\"/bin/sh\", \"-c\", \"[ {instance} = 0 ] && { echo 'zero refuses' >&2; exit 1; }; exec sleep 1000\"]\nautostart = false\nrestart_delay = \"10ms\"\nrestart_delay_max = \"20ms\"\nstart_limit_burst = 1000\n",
    );
    d.start();
    let out = d.ctl(&["start", "half"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("half.0 did not start: exited (exit 1)"),
        "{err}"
    );
    assert!(!err.contains("half.1"), "{err}");
    assert!(err.contains("zero refuses"), "{err}");
    d.ctl_ok(&["stop", "half"]);
}
