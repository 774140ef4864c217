//! Pool jobs: Pool.map for any program, in exec and stream mode.

use std::collections::BTreeMap;

use corral_tests::{TestDaemon, alive, all_procs, wait_for};
use serde_json::Value;

fn pool_status(d: &TestDaemon, job: &str) -> Value {
    serde_json::from_str(&d.ctl_ok(&["--json", "pool", "status", job])).unwrap()
}

#[test]
fn pool_map_squares_in_input_order() {
    let mut d = TestDaemon::new();
    d.start();
    let out = d.ctl_ok(&[
        "pool",
        "map",
        "-j",
        "4",
        "--",
        "sh",
        "-c",
        "echo $(({} * {}))",
        ":::",
        "1",
        "2",
        "3",
        "4",
        "5",
    ]);
    assert_eq!(out, "1\n4\n9\n16\n25\n");
}

#[test]
fn stream_mode_feeds_long_lived_workers() {
    let mut d = TestDaemon::new();
    d.start();
    let worker = d.path("square.py");
    std::fs::write(
        &worker,
        "import sys\nfor line in sys.stdin:\n    n = int(line)\n    print(n * n, flush=True)\n",
    )
    .unwrap();
    let w = worker.display().to_string();
    let out = d.ctl_ok(&[
        "pool", "map", "-j", "4", "--stream", "--", "python3", &w, ":::", "1", "2", "3", "4", "5",
    ]);
    assert_eq!(out, "1\n4\n9\n16\n25\n");
    // Many small items: every answer comes back, in order.
    let inputs: Vec<String> = (1..=5000).map(|n| n.to_string()).collect();
    let mut args = vec![
        "--json", "pool", "map", "-j", "3", "--stream", "--", "python3", &w, ":::",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let records: Vec<Value> = d
        .ctl_ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5000);
    for (i, r) in records.iter().enumerate() {
        let n = (i + 1) as u64;
        assert_eq!(r["index"], i);
        assert_eq!(r["stdout"], (n * n).to_string());
    }
}

#[test]
fn order_is_kept_when_early_items_are_slowest_and_at_most_n_run_at_once() {
    let mut d = TestDaemon::new();
    d.start();
    let marks = d.path("marks");
    std::fs::create_dir(&marks).unwrap();
    let script = format!(
        "echo start $(date +%s%N) > {m}/{{}}; sleep 0.$(( 5 - {{}} % 5 )); echo end $(date +%s%N) >> {m}/{{}}; echo item {{}}",
        m = marks.display()
    );
    let inputs: Vec<String> = (0..8).map(|n| n.to_string()).collect();
    let mut args = vec!["pool", "map", "-j", "3", "--", "sh", "-c", &script, ":::"];
    args.extend(inputs.iter().map(String::as_str));
    let out = d.ctl_ok(&args);
    let expected: String = (0..8).map(|n| format!("item {n}\n")).collect();
    assert_eq!(out, expected);
    let mut edges: Vec<(u128, i32)> = Vec::new();
    for n in 0..8 {
        let text = std::fs::read_to_string(marks.join(n.to_string())).unwrap();
        for line in text.lines() {
            let (kind, t) = line.split_once(' ').unwrap();
            edges.push((t.parse().unwrap(), if kind == "start" { 1 } else { -1 }));
        }
    }
    edges.sort();
    let mut running = 0;
    let mut most = 0;
    for (_, delta) in edges {
        running += delta;
        most = most.max(running);
    }
    assert!(most <= 3, "{most} items ran at once with -j 3");
}

#[test]
fn failures_timeouts_and_missing_commands_are_per_item_errors() {
    let mut d = TestDaemon::new();
    d.start();
    let failing = d.ctl(&[
        "pool",
        "map",
        "--",
        "sh",
        "-c",
        "echo out {}; exit {}",
        ":::",
        "0",
        "3",
        "0",
    ]);
    assert_eq!(failing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&failing.stdout),
        "out 0\nout 3\nout 0\n"
    );
    let err = String::from_utf8_lossy(&failing.stderr);
    assert!(
        err.contains("1 of 3 items failed") && err.contains("item 1 (input \"3\"): exit 3"),
        "{err}"
    );

    let slow = d.ctl(&[
        "pool",
        "map",
        "--timeout",
        "0.5",
        "--",
        "sleep",
        ":::",
        "0",
        "30",
    ]);
    assert_eq!(slow.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&slow.stderr).contains("timed out after 500ms"));

    let missing = d.ctl(&["pool", "map", "--", "/nonexistent/program", ":::", "a", "b"]);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("2 of 2 items failed") && err.contains("command not found"),
        "{err}"
    );

    let missing_worker = d.ctl(&[
        "pool",
        "map",
        "--stream",
        "--",
        "/nonexistent/worker",
        ":::",
        "a",
    ]);
    assert_eq!(missing_worker.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing_worker.stderr).contains("command not found"));

    let retried = d.ctl(&[
        "pool",
        "map",
        "--retries",
        "2",
        "--",
        "sh",
        "-c",
        &format!(
            "echo x >> {}; [ $(wc -l < {}) -ge 3 ]",
            d.path("tries").display(),
            d.path("tries").display()
        ),
        ":::",
        "only",
    ]);
    assert!(retried.status.success(), "the third attempt succeeds");
}

#[test]
fn a_stream_worker_that_dies_is_replaced_and_its_items_retried() {
    let mut d = TestDaemon::new();
    d.start();
    // The worker dies on input 3, taking whatever it had in flight with it.
    let script = "while read n; do [ \"$n\" = 3 ] && exit 1; echo \"r$n\"; done";
    let inputs: Vec<String> = (0..10).map(|n| n.to_string()).collect();
    let mut args = vec![
        "pool",
        "map",
        "-j",
        "1",
        "--stream",
        "--retries",
        "1",
        "--",
        "sh",
        "-c",
        script,
        ":::",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let out = d.ctl(&args);
    assert_eq!(out.status.code(), Some(1));
    let expected: String = (0..10)
        .filter(|n| *n != 3)
        .map(|n| format!("r{n}\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 of 10 items failed") && err.contains("worker exited before answering"),
        "{err}"
    );
}

#[test]
fn a_dead_stream_workers_item_error_quotes_its_stderr() {
    let mut d = TestDaemon::new();
    d.start();
    let script = "read n; echo \"worker: cannot parse input $n\" >&2; exit 1";
    let out = d.ctl(&[
        "pool", "map", "--stream", "--name", "dying", "--", "sh", "-c", script, ":::", "xyz",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // Its pid if its exit status had not been collected yet when its pipe closed, else
    // the status: which one comes first is up to the scheduler.
    assert!(
        err.contains("its worker exited before answering (pid ")
            || err.contains("its worker exited before answering (exit 1)"),
        "{err}"
    );
    assert!(err.contains("worker: cannot parse input xyz"), "{err}");
    assert!(
        err.contains(&d.log_dir().display().to_string()),
        "the log's path: {err}"
    );

    // The same error is the item's in `pool results`.
    let jobs: Value = serde_json::from_str(&d.ctl_ok(&["--json", "pool", "list"])).unwrap();
    let job = jobs["jobs"][0]["job"].to_string();
    let results: Value =
        serde_json::from_str(&d.ctl_ok(&["--json", "pool", "results", &job])).unwrap();
    let error = results["items"][0]["error"].as_str().unwrap();
    assert!(error.contains("worker: cannot parse input xyz"), "{error}");
    let log = error
        .split_once("stderr (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(path, _)| path)
        .unwrap_or_else(|| panic!("no path in {error}"));
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("worker: cannot parse input xyz"), "{text}");
}

#[test]
fn cancel_leaves_no_process_of_the_job_alive() {
    let mut d = TestDaemon::new();
    d.start();
    let job = d
        .ctl_ok(&[
            "pool", "map", "--detach", "-j", "2", "--", "sleep", ":::", "1001", "1001", "1001",
        ])
        .trim()
        .to_owned();
    let corrald = d.pid();
    let sleeps = || -> Vec<i32> {
        all_procs()
            .into_iter()
            .filter(|p| p.ppid == corrald)
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{}/cmdline", p.pid))
                    .is_ok_and(|c| c.contains("1001"))
            })
            .map(|p| p.pid)
            .collect()
    };
    let pids = wait_for("two items to run", || {
        let p = sleeps();
        (p.len() == 2 && pool_status(&d, &job)["running"] == 2).then_some(p)
    });
    // Pool processes are listed in `status` like instances.
    let listed = d.client().status(Some(&format!("pool-{job}"))).unwrap();
    let mut listed_pids: Vec<i32> = listed.units[0]
        .instances
        .iter()
        .map(|i| i.pid.unwrap() as i32)
        .collect();
    listed_pids.sort();
    let mut expected = pids.clone();
    expected.sort();
    assert_eq!(listed_pids, expected);
    assert!(d.ctl_ok(&["status"]).contains(&format!("pool-{job}")));
    d.ctl_ok(&["pool", "cancel", &job]);
    wait_for("the items to be gone", || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    let status = pool_status(&d, &job);
    assert_eq!(status["state"], "cancelled");
    assert_eq!(status["pending"], 1, "the third item was skipped");
    let waited = d.ctl(&["pool", "wait", &job]);
    assert_eq!(waited.status.code(), Some(1));
}

#[test]
fn a_job_survives_kill_9_and_resumes_without_rerunning_finished_items() {
    let mut d = TestDaemon::new();
    d.start();
    let log = d.path("ran");
    let go = d.path("go");
    let script = format!(
        "echo {{}} >> {log}; while [ {{}} -ge 3 ] && [ ! -e {go} ]; do sleep 0.05; done; echo out{{}}",
        log = log.display(),
        go = go.display()
    );
    let job = d
        .ctl_ok(&[
            "pool", "map", "--detach", "-j", "2", "--", "sh", "-c", &script, ":::", "0", "1", "2",
            "3", "4", "5",
        ])
        .trim()
        .to_owned();
    wait_for("items 0-2 done and 3-4 running", || {
        let s = pool_status(&d, &job);
        (s["succeeded"] == 3 && s["running"] == 2).then_some(())
    });
    d.kill9();
    d.start();
    std::fs::write(&go, "").unwrap();
    let out = d.ctl_ok(&["pool", "results", &job]);
    let waited = d.ctl_ok(&["pool", "wait", &job]);
    assert!(
        waited.contains("finished (6 ok, 0 failed of 6)"),
        "{waited} / {out}"
    );
    let results = d.ctl_ok(&["pool", "results", &job]);
    assert_eq!(results, "out0\nout1\nout2\nout3\nout4\nout5\n");
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        *runs.entry(line.to_owned()).or_default() += 1;
    }
    for finished in ["0", "1", "2"] {
        assert_eq!(runs[finished], 1, "item {finished} ran again: {runs:?}");
    }
}

#[test]
fn bad_pool_input_is_refused_clearly() {
    let mut d = TestDaemon::new();
    d.start();
    let zero = d.ctl(&["pool", "map", "-j", "0", "--", "true", ":::", "a"]);
    assert_eq!(zero.status.code(), Some(2));
    let none = d.ctl(&["pool", "map", "--", "true", ":::"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no inputs"));
    let unknown = d.ctl(&["pool", "status", "999"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no pool job 999"));
}

#[test]
fn named_pools_are_declared_in_unit_files() {
    let mut d = TestDaemon::new();
    d.unit(
        "squares",
        r#"
kind = "pool"
command = ["/bin/sh", "-c", "echo $(({} * {}))"]
workers = 2
"#,
    )
    .unit(
        "doubler",
        r#"
kind = "pool"
mode = "stream"
command = ["/bin/sh", "-c", "while read n; do echo $((n * 2)); done"]
"#,
    );
    d.start();
    assert_eq!(
        d.ctl_ok(&[
            "pool", "map", "--pool", "squares", "--", ":::", "1", "2", "3"
        ]),
        "1\n4\n9\n"
    );
    assert_eq!(
        d.ctl_ok(&["pool", "map", "--pool", "doubler", "--", ":::", "4", "5"]),
        "8\n10\n"
    );
    let start = d.ctl(&["start", "squares"]);
    assert_eq!(start.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&start.stderr).contains("is a pool"));
    let jobs: Value = serde_json::from_str(&d.ctl_ok(&["--json", "pool", "list"])).unwrap();
    assert_eq!(jobs["jobs"][0]["name"], "squares");
    assert_eq!(jobs["jobs"][0]["workers"], 2);
    assert_eq!(jobs["jobs"][1]["mode"], "stream");
}

#[test]
fn cancel_sends_the_stop_signal_before_sigkill() {
    let mut d = TestDaemon::new();
    d.start();
    let seen = d.path("seen");
    let ready = d.path("ready");
    let script = format!(
        "trap 'echo got TERM > {}; exit 0' TERM; touch {}; while :; do sleep 0.05; done",
        seen.display(),
        ready.display()
    );
    let job = d
        .ctl_ok(&[
            "pool", "map", "--detach", "--", "sh", "-c", &script, ":::", "only",
        ])
        .trim()
        .to_owned();
    wait_for("the item to have installed its trap", || {
        ready.exists().then_some(())
    });
    d.ctl_ok(&["pool", "cancel", &job]);
    wait_for("the trap to run", || {
        std::fs::read_to_string(&seen)
            .ok()
            .filter(|s| s == "got TERM\n")
            .map(|_| ())
    });
}

#[test]
fn pool_wait_gives_up_after_its_timeout_and_the_job_runs_on() {
    let mut d = TestDaemon::new();
    d.start();
    let job = d
        .ctl_ok(&["pool", "map", "--detach", "--", "sleep", ":::", "1002"])
        .trim()
        .to_owned();
    let out = d.ctl(&["pool", "wait", &job, "--timeout", "0.2"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("pool job {job} is still running after")),
        "{stderr}"
    );
    assert_eq!(pool_status(&d, &job)["state"], "running");
    d.ctl_ok(&["pool", "cancel", &job]);
    // A job that has ended answers at once, whatever the timeout.
    let out = d.ctl(&["pool", "wait", &job, "--timeout", "30"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cancelled"),
        "{out:?}"
    );
}

/// What a terminal shows, line by line: `text` with ANSI escape sequences removed, cut at
/// carriage returns and newlines (each piece is what one redraw or one line printed).
fn screen_pieces(text: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte (a letter)
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
        .split(['\r', '\n'])
        .filter(|p| !p.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn pool_map_output_is_clean_when_stderr_is_not_a_terminal() {
    let mut d = TestDaemon::new();
    d.start();
    let inputs: Vec<String> = (1..=30).map(|n| n.to_string()).collect();
    let mut args = vec![
        "pool",
        "map",
        "-j",
        "4",
        "--",
        "sh",
        "-c",
        "echo out-{}; echo err-{} >&2",
        ":::",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let out = d.ctl(&args);
    assert!(out.status.success(), "{out:?}");
    let expected: String = (1..=30).map(|n| format!("out-{n}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    // No progress line, no terminal control: only the items' stderr, in order.
    let expected: String = (1..=30).map(|n| format!("err-{n}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
}

#[test]
fn pool_map_progress_fits_a_narrow_terminal_and_never_shares_a_line_with_output() {
    let mut d = TestDaemon::new();
    d.start();
    // Under script(1): a pseudo-terminal 40 columns wide for both stdout and stderr.
    let ctl = corral_tests::bin("corralctl");
    let inputs: String = (1..=12).map(|n| format!(" {n}")).collect();
    let command = format!(
        "stty cols 40 rows 20; {} --socket {} pool map -j 2 -- sh -c 'sleep 0.3; echo item-{{}}-of-twelve' :::{inputs}",
        ctl.display(),
        d.socket().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let pieces = screen_pieces(&text);
    let bars: Vec<&String> = pieces.iter().filter(|p| p.contains("/12")).collect();
    assert!(!bars.is_empty(), "a progress line was drawn: {text:?}");
    for piece in &pieces {
        assert!(
            piece.chars().count() <= 40,
            "wider than the terminal: {piece:?}"
        );
        assert!(
            !(piece.contains("item-") && piece.contains("/12")),
            "item output and the progress line on one line: {piece:?}"
        );
    }
    let items: Vec<&String> = pieces.iter().filter(|p| p.starts_with("item-")).collect();
    let expected: Vec<String> = (1..=12).map(|n| format!("item-{n}-of-twelve")).collect();
    assert_eq!(items, expected.iter().collect::<Vec<_>>(), "{text:?}");
}

/// Ids of `pool list --json`.
fn listed(d: &TestDaemon) -> Vec<u64> {
    let list: Value = serde_json::from_str(&d.ctl_ok(&["--json", "pool", "list"])).unwrap();
    list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_u64().unwrap())
        .collect()
}

#[test]
fn pool_rm_removes_a_finished_job_for_good_and_refuses_a_running_one() {
    let mut d = TestDaemon::new();
    d.start();
    let go = d.path("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo {{}}",
        go.display()
    );
    let job = d
        .ctl_ok(&[
            "pool", "map", "--detach", "--", "sh", "-c", &script, ":::", "a", "b",
        ])
        .trim()
        .to_owned();
    assert_eq!(job, "1");
    let refused = d.ctl(&["pool", "rm", "1"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("pool job 1 is still running") && stderr.contains("pool cancel 1"),
        "{stderr}"
    );
    std::fs::write(&go, "").unwrap();
    d.ctl_ok(&["pool", "wait", "1"]);
    let second = d.ctl_ok(&["pool", "map", "--", "echo", ":::", "x"]);
    assert_eq!(second, "x\n");
    assert_eq!(listed(&d), [1, 2]);
    let removed = d.ctl_ok(&["pool", "rm", "1"]);
    assert!(
        removed.contains("pool job 1 removed (finished: 2 ok, 0 failed of 2)"),
        "{removed}"
    );
    assert_eq!(listed(&d), [2]);
    let gone = d.ctl(&["pool", "results", "1"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no pool job 1"));
    let again = d.ctl(&["pool", "rm", "1"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("no pool job 1"));
    // Removed from the state database: not back after a restart. The highest id is
    // removed too, and is not given again.
    d.ctl_ok(&["pool", "rm", "2"]);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit();
    d.start();
    assert_eq!(listed(&d), Vec::<u64>::new());
    let next = d
        .ctl_ok(&["pool", "map", "--detach", "--", "true", ":::", "y"])
        .trim()
        .to_owned();
    assert_eq!(next, "3", "job ids are not reused");
}

#[test]
fn pool_keep_removes_finished_jobs_older_than_it_but_not_running_ones() {
    let mut d = TestDaemon::new();
    let config = d.path("corral.toml");
    std::fs::write(&config, "pool_keep = \"1s\"\n").unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    d.start();
    let go = d.path("go");
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done", go.display());
    d.ctl_ok(&[
        "pool", "map", "--detach", "--", "sh", "-c", &script, ":::", "a",
    ]);
    d.ctl_ok(&["pool", "map", "--", "true", ":::", "b"]);
    wait_for("the finished job removed", || {
        (listed(&d) == [1]).then_some(())
    });
    assert_eq!(pool_status(&d, "1")["state"], "running");
    std::fs::write(&go, "").unwrap();
    d.ctl_ok(&["pool", "wait", "1"]);
    wait_for("the other one removed once finished", || {
        listed(&d).is_empty().then_some(())
    });
    // Gone from the state database too.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit();
    d.start();
    assert!(listed(&d).is_empty());
}
