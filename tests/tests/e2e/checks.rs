//! Readiness (`[ready]`), health (`[health]`) and `max_memory`, against real processes.

use corral_tests::{TestDaemon, free_port, wait_for};

/// Nanoseconds since the epoch as written by the processes themselves (`date +%s%N`).
fn stamp(d: &TestDaemon, name: &str) -> u128 {
    let path = d.path(name);
    let text = wait_for(&format!("{name} to be written"), || {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|t| t.ends_with('\n'))
    });
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}: {text:?}"))
}

/// A TCP listener on `port` in Python that first writes the time into `mark`, after a
/// second, so that a check which passed at the spawn would be seen passing too early.
fn late_listener(mark: &std::path::Path, port: u16) -> String {
    format!(
        r#"command = ["/bin/sh", "-c", "sleep 1; date +%s%N > {mark}; exec python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", {port})); s.listen(); time.sleep(1000)'"]
[ready]
tcp = "127.0.0.1:{port}"
interval = "100ms"
"#,
        mark = mark.display()
    )
}

#[test]
fn a_dependent_starts_after_the_check_passed_not_after_the_spawn() {
    let mut d = TestDaemon::new();
    let port = free_port();
    d.unit("db", &late_listener(&d.path("db-ready"), port));
    d.unit(
        "app",
        &format!(
            r#"command = ["/bin/sh", "-c", "date +%s%N > {}; exec sleep 1000"]
after = ["db"]
"#,
            d.path("app-started").display()
        ),
    );
    d.start();
    let app = d.wait_state("app", "running");
    let db = d.status("db");
    assert_eq!(db.instances[0].ready, Some(true), "{db:?}");
    assert_eq!(app.instances[0].ready, None, "app has no [ready]");
    // db wrote its mark before it listened, so before it was ready: app came after.
    let (ready, started) = (stamp(&d, "db-ready"), stamp(&d, "app-started"));
    assert!(
        started > ready,
        "app started at {started}, db was ready after {ready}"
    );
    let status = d.ctl_ok(&["status", "db"]);
    assert!(status.contains("running"), "{status}");
}

#[test]
fn start_waits_for_exec_log_and_notify_readiness() {
    let mut d = TestDaemon::new();
    let mark = |name: &str| d.path(name).display().to_string();
    d.unit(
        "by-exec",
        &format!(
            r#"command = ["/bin/sh", "-c", "sleep 1; touch {m}; exec sleep 1000"]
autostart = false
[ready]
exec = ["test", "-e", "{m}"]
interval = "100ms"
"#,
            m = mark("exec-mark")
        ),
    );
    d.unit(
        "by-log",
        &format!(
            r#"command = ["/bin/sh", "-c", "echo booting; sleep 1; touch {m}; echo 'listening on port 8080'; exec sleep 1000"]
autostart = false
[ready]
log = 'listening on port \d+'
interval = "100ms"
"#,
            m = mark("log-mark")
        ),
    );
    let notify = r#"import os, socket, time
time.sleep(1)
open(os.environ['MARK'], 'w').close()
addr = os.environ['NOTIFY_SOCKET']
addr = '\0' + addr[1:] if addr.startswith('@') else addr
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'STATUS=up\nREADY=1', addr)
time.sleep(1000)
"#;
    std::fs::write(d.path("notify.py"), notify).unwrap();
    d.unit(
        "by-notify",
        &format!(
            r#"command = ["python3", "{}"]
autostart = false
env = {{ MARK = "{}", NOTIFY_SOCKET = "/ignored/when/notify/is/on" }}
[ready]
notify = true
"#,
            mark("notify.py"),
            mark("notify-mark")
        ),
    );
    // Without notify readiness, the unit's own NOTIFY_SOCKET is what the instance gets.
    d.unit(
        "own-socket",
        r#"command = ["/bin/sh", "-c", "echo \"socket=$NOTIFY_SOCKET\"; exec sleep 1000"]
autostart = false
env = { NOTIFY_SOCKET = "/run/custom.sock" }
"#,
    );
    d.start();
    d.ctl_ok(&["start", "by-exec", "by-log", "by-notify", "own-socket"]);
    // Each instance made its mark before it could pass its check, and start waited.
    for m in ["exec-mark", "log-mark", "notify-mark"] {
        assert!(d.path(m).exists(), "start returned before {m} was made");
    }
    for unit in ["by-exec", "by-log", "by-notify"] {
        let s = d.status(unit);
        assert_eq!(s.instances[0].state.as_str(), "running", "{s:?}");
        assert_eq!(s.instances[0].ready, Some(true), "{s:?}");
    }
    wait_for("own-socket's line", || {
        d.log("own-socket", 0)
            .contains("socket=/run/custom.sock")
            .then_some(())
    });
    // The json status says so too.
    let json = d.ctl_ok(&["status", "--json", "by-log"]);
    assert!(json.contains("\"ready\": true"), "{json}");
}

#[test]
fn an_instance_that_never_becomes_ready_fails_its_start() {
    let mut d = TestDaemon::new();
    let port = free_port();
    d.unit(
        "never",
        r#"command = ["sleep", "1000"]
autostart = false
restart = "no"
[ready]
exec = ["/bin/sh", "-c", "echo 'still warming up' >&2; exit 1"]
interval = "100ms"
deadline = "1s"
"#,
    );
    d.unit(
        "after-never",
        r#"command = ["sleep", "1000"]
autostart = false
requires = ["never"]
"#,
    );
    d.unit(
        "retried",
        &format!(
            r#"command = ["sleep", "1000"]
autostart = false
restart_delay = "100ms"
[ready]
tcp = "127.0.0.1:{port}"
interval = "100ms"
deadline = "500ms"
"#
        ),
    );
    d.start();
    let out = d.ctl(&["start", "after-never"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not ready within 1s"), "{err}");
    assert!(err.contains("still warming up"), "{err}");
    let s = d.wait_state("never", "failed");
    let reason = s.instances[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("not ready within 1s (exec /bin/sh -c"),
        "{reason}"
    );
    // What required it never started.
    let dependent = d.wait_state("after-never", "failed");
    assert_eq!(dependent.instances[0].pid, None);
    let status = d.ctl_ok(&["status", "never"]);
    assert!(status.contains("not ready within 1s"), "{status}");
    assert!(d.stderr().contains("not_ready"), "the event is logged");
    // With a restart policy, a start that missed its deadline is tried again.
    let out = d.ctl(&["start", "retried"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect to 127.0.0.1"), "{err}");
    wait_for("a restart", || {
        let s = d.status("retried");
        (s.instances[0].restarts >= 1).then_some(())
    });
    d.ctl_ok(&["stop", "retried"]);
}

#[test]
fn an_unhealthy_instance_is_restarted_with_the_reason_shown() {
    let mut d = TestDaemon::new();
    let port = free_port();
    let www = d.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("ok"), "fine\n").unwrap();
    d.unit(
        "web",
        &format!(
            r#"command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", "{}"]
[ready]
http = "http://127.0.0.1:{port}/ok"
interval = "100ms"
[health]
http = "http://127.0.0.1:{port}/ok"
interval = "200ms"
failures = 2
"#,
            www.display()
        ),
    );
    d.start();
    let s = d.wait_state("web", "running");
    let first_pid = s.instances[0].pid.expect("pid");
    wait_for("a passed health probe", || {
        (d.status("web").instances[0].healthy == Some(true)).then_some(())
    });
    // Now the check fails: 404 twice in a row, and the instance is restarted.
    std::fs::remove_file(www.join("ok")).unwrap();
    let s = wait_for("the restart", || {
        let s = d.status("web");
        (s.instances[0].restarts >= 1).then_some(s)
    });
    let reason = s.instances[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("unhealthy: 2 failed health checks in a row")
            && reason.contains("answered 404"),
        "{reason}"
    );
    assert!(s.instances[0].health_failures_total >= 2, "{s:?}");
    std::fs::write(www.join("ok"), "fine again\n").unwrap();
    let s = wait_for("the new run to be ready", || {
        let s = d.status("web");
        let i = &s.instances[0];
        (i.state.as_str() == "running" && i.pid.is_some_and(|p| p != first_pid)).then_some(s)
    });
    assert_eq!(s.instances[0].ready, Some(true));
    let status = d.ctl_ok(&["status", "web"]);
    assert!(
        status.contains("unhealthy: 2 failed health checks"),
        "{status}"
    );
    let log = d.stderr();
    assert!(
        log.contains("health_failed") && log.contains("unhealthy"),
        "{log}"
    );
}

#[test]
fn a_memory_hog_is_restarted_at_max_memory() {
    let mut d = TestDaemon::new();
    // The child holds the memory; the limit is on the whole process group.
    d.unit(
        "hog",
        r#"command = ["/bin/sh", "-c", "python3 -c 'import time; b = b\"x\" * (96 << 20); time.sleep(1000)'; exit 0"]
max_memory = "48M"
restart = "always"
restart_delay = "100ms"
"#,
    );
    d.unit(
        "small",
        r#"command = ["sleep", "1000"]
max_memory = "48M"
"#,
    );
    d.start();
    let s = wait_for("the hog's restart", || {
        let s = d.status("hog");
        let i = &s.instances[0];
        (i.restarts >= 1 && i.reason.as_ref().is_some_and(|r| r.contains("max_memory")))
            .then_some(s)
    });
    let reason = s.instances[0].reason.clone().unwrap();
    assert!(reason.contains("passed max_memory 48.0 MiB"), "{reason}");
    assert!(d.stderr().contains("memory_limit"));
    let small = d.status("small");
    assert_eq!(small.instances[0].restarts, 0, "{small:?}");
    assert_eq!(small.instances[0].state.as_str(), "running");
}

#[test]
fn ready_from_systemd_notify_in_a_child_of_the_instance() {
    let mut d = TestDaemon::new();
    if std::process::Command::new("systemd-notify")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("skipped: systemd-notify is not installed");
        return;
    }
    d.unit(
        "notified",
        r#"command = ["/bin/sh", "-c", "sleep 0.5; systemd-notify --ready --status=up; exec sleep 1000"]
autostart = false
[ready]
notify = true
deadline = "30s"
"#,
    );
    d.start();
    d.ctl_ok(&["start", "notified"]);
    let s = d.status("notified");
    assert_eq!(s.instances[0].ready, Some(true), "{s:?}");
}

#[test]
fn an_unhealthy_instance_without_a_restart_policy_stays_failed() {
    let mut d = TestDaemon::new();
    d.unit(
        "sick",
        r#"command = ["sleep", "1000"]
restart = "no"
[health]
exec = ["/bin/sh", "-c", "echo 'disk full' >&2; exit 2"]
interval = "100ms"
failures = 1
"#,
    );
    d.start();
    let s = d.wait_state("sick", "failed");
    let i = &s.instances[0];
    let reason = i.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("unhealthy: 1 failed health checks in a row (exec /bin/sh -c")
            && reason.contains("exit 2: disk full"),
        "{reason}"
    );
    assert_eq!((i.restarts, i.pid), (0, None));
}
