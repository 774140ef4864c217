//! Scheduled tasks: `every` and `schedule`, `overlap`, `catch_up`, `corralctl timers`.

use corral_tests::{TestDaemon, wait_for};

/// A task that writes `start` and `end` lines around a run of `secs` seconds.
fn timed_task(d: &TestDaemon, name: &str, secs: &str, extra: &str) -> std::path::PathBuf {
    let out = d.path(&format!("{name}.out"));
    d.unit(
        name,
        &format!(
            r#"kind = "task"
command = ["/bin/sh", "-c", "echo start >> {out}; sleep {secs}; echo end >> {out}"]
{extra}
"#,
            out = out.display()
        ),
    );
    out
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn event_kinds(d: &TestDaemon, unit: &str) -> Vec<String> {
    let db = rusqlite::Connection::open(d.state_dir().join("state.db")).unwrap();
    db.prepare("SELECT kind FROM events WHERE unit = ?1 ORDER BY id")
        .unwrap()
        .query_map([unit], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Runs never overlap: the lines alternate start, end, start, end...
fn assert_no_overlap(lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        let want = if i % 2 == 0 { "start" } else { "end" };
        assert_eq!(line, want, "runs overlapped: {lines:?}");
    }
}

#[test]
fn an_interval_task_runs_by_itself_and_skips_a_run_while_the_last_still_runs() {
    let mut d = TestDaemon::new();
    let out = timed_task(&d, "tick", "1.6", "every = \"1s\"");
    d.start();
    wait_for("two finished runs", || {
        (lines(&out).iter().filter(|l| *l == "end").count() >= 2).then_some(())
    });
    assert_no_overlap(&lines(&out));
    wait_for("a skipped run in the events", || {
        event_kinds(&d, "tick")
            .iter()
            .any(|k| k == "schedule_skipped")
            .then_some(())
    });
    let timers = d.ctl_ok(&["timers"]);
    assert!(
        timers.contains("tick") && timers.contains("every 1s") && timers.contains("skip"),
        "{timers}"
    );
    let json: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["--json", "timers"])).unwrap();
    let timer = &json["timers"][0];
    assert_eq!(timer["unit"], "tick");
    assert!(timer["last_run_ms"].as_u64().is_some(), "{timer}");
    assert!(
        timer["next_run_ms"].as_u64() > timer["last_run_ms"].as_u64(),
        "{timer}"
    );
}

#[test]
fn overlap_queue_runs_once_more_right_after_the_last_run() {
    let mut d = TestDaemon::new();
    let out = timed_task(&d, "q", "1.6", "every = \"1s\"\noverlap = \"queue\"");
    d.start();
    wait_for("three finished runs", || {
        (lines(&out).iter().filter(|l| *l == "end").count() >= 3).then_some(())
    });
    assert_no_overlap(&lines(&out));
    assert!(event_kinds(&d, "q").iter().any(|k| k == "schedule_queued"));
}

#[test]
fn overlap_allow_starts_a_second_run_beside_the_first() {
    let mut d = TestDaemon::new();
    let out = timed_task(&d, "par", "2.5", "every = \"1s\"\noverlap = \"allow\"");
    d.start();
    // Two starts before the first end: the runs overlapped.
    wait_for("two runs at once", || {
        let l = lines(&out);
        let first_end = l.iter().position(|x| x == "end").unwrap_or(l.len());
        (l[..first_end].iter().filter(|x| *x == "start").count() >= 2).then_some(())
    });
    let status = d.client().status(None).unwrap();
    assert!(
        status
            .units
            .iter()
            .any(|u| u.name == "par.run-1" && u.transient),
        "{status:?}"
    );
}

#[test]
fn catch_up_runs_once_a_run_missed_while_corrald_was_down() {
    let mut d = TestDaemon::new();
    let late = timed_task(&d, "late", "0", "every = \"1h\"\ncatch_up = true");
    let lazy = timed_task(&d, "lazy", "0", "every = \"1h\"");
    d.start();
    // One run each, by hand; then corrald is down for "two hours".
    for unit in ["late", "lazy"] {
        d.ctl_ok(&["start", unit]);
        d.ctl_ok(&["wait", unit]);
    }
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit();
    let db = rusqlite::Connection::open(d.state_dir().join("state.db")).unwrap();
    let two_hours_ms = 2 * 3600 * 1000;
    db.execute(
        "UPDATE runs SET started_at = started_at - ?1, ended_at = ended_at - ?1",
        [two_hours_ms],
    )
    .unwrap();
    drop(db);
    d.start();
    wait_for("the missed run of `late`", || {
        (lines(&late).iter().filter(|l| *l == "end").count() == 2).then_some(())
    });
    assert!(
        event_kinds(&d, "late")
            .iter()
            .any(|k| k == "schedule_catch_up")
    );
    // Without catch_up nothing runs until the next interval (an hour away); corrald has
    // answered `late`'s catch-up run, so it has looked at `lazy` already.
    assert_eq!(lines(&lazy), ["start", "end"]);
    let json: serde_json::Value = serde_json::from_str(&d.ctl_ok(&["--json", "timers"])).unwrap();
    let lazy = json["timers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["unit"] == "lazy")
        .unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let next = lazy["next_run_ms"].as_u64().unwrap();
    assert!(
        next > now_ms + 30 * 60 * 1000,
        "the next run is about an hour away: {lazy}"
    );
}

#[test]
fn reload_changes_a_schedule_and_keeps_its_last_run() {
    let mut d = TestDaemon::new();
    let out = timed_task(&d, "r", "0", "every = \"1s\"");
    d.start();
    wait_for("a run", || {
        lines(&out).contains(&"end".to_string()).then_some(())
    });
    timed_task(&d, "r", "0", "schedule = \"0 3 * * *\"");
    d.ctl_ok(&["reload"]);
    // A run in progress delays the new definition until it has finished.
    let timer = wait_for("the new schedule", || {
        let json: serde_json::Value =
            serde_json::from_str(&d.ctl_ok(&["--json", "timers"])).unwrap();
        let timer = json["timers"][0].clone();
        (timer["schedule"] == "0 3 * * *").then_some(timer)
    });
    assert!(timer["last_run_ms"].as_u64().is_some(), "{timer}");
}
