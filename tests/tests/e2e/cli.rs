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
