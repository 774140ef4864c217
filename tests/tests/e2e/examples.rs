//! Every example in `examples/` validates and prints what `examples/README.md` says.

use std::ops::Deref;
use std::path::PathBuf;
use std::process::Child;

use corral_tests::{DEADLINE, TestDaemon, alive, bin, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn repo_examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn examples_dir() -> PathBuf {
    repo_examples().join("units")
}

/// A daemon directory holding a copy of every example unit, not started yet.
fn example_units() -> TestDaemon {
    let d = TestDaemon::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, d.units_dir().join(path.file_name().unwrap())).unwrap();
    }
    d
}

/// corrald running on the example units, with the built `corralctl` on corrald's own PATH
/// (the example units run `corralctl` by name, as they do under `scripts/demo`).
///
/// `TestDaemon::start` gives corrald the test's environment as it is, so this starts
/// corrald itself from `TestDaemon::command()`, and stops it on drop the same way.
struct Examples {
    d: TestDaemon,
    child: Option<Child>,
}

impl Deref for Examples {
    type Target = TestDaemon;
    fn deref(&self) -> &TestDaemon {
        &self.d
    }
}

impl Examples {
    fn start(d: TestDaemon) -> Examples {
        let ctl_dir = bin("corralctl").parent().unwrap().to_path_buf();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(std::iter::once(ctl_dir).chain(std::env::split_paths(&path)))
                .unwrap();
        let child = d
            .command()
            .env("PATH", path)
            .spawn()
            .expect("spawn corrald");
        let mut e = Examples {
            d,
            child: Some(child),
        };
        wait_for("corrald to answer hello", || {
            if let Some(status) = e.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "corrald exited during start-up ({status}): {}",
                    e.d.stderr()
                );
            }
            corral_client::Client::connect_to(e.d.socket()).ok()
        });
        e
    }

    /// Waits for corrald to exit; its exit code (None if a signal killed it).
    fn wait_exit(&mut self) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("corrald to exit", || child.try_wait().expect("try_wait"));
        self.child = None;
        status.code()
    }
}

impl Drop for Examples {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let start = std::time::Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Every instance of the unit has run and exited with code 0.
fn succeeded(status: &corral_proto::UnitStatus) -> bool {
    status
        .instances
        .iter()
        .all(|i| i.last_exit.is_some_and(|e| e.success()))
}

fn daemon_with_examples() -> Examples {
    Examples::start(example_units())
}

#[test]
fn every_example_unit_passes_check() {
    let out = std::process::Command::new(bin("corrald"))
        .arg("--check")
        .arg("--units")
        .arg(examples_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn process_patterns_print_what_the_readme_says() {
    let d = daemon_with_examples();
    assert_eq!(
        d.ctl_ok(&["run", "--wait", "--", "echo", "Hello from process!"]),
        "Hello from process!\n"
    );
    d.ctl_ok(&["start", "hello"]);
    d.ctl_ok(&["wait", "hello"]);
    assert_eq!(d.ctl_ok(&["logs", "hello"]), "Hello from process!\n");

    d.ctl_ok(&["start", "task"]);
    d.ctl_ok(&["wait", "task"]);
    let expected: String = (0..5)
        .map(|n| format!("[{n}] Task {n} running\n"))
        .collect();
    assert_eq!(d.ctl_ok(&["logs", "task"]), expected);

    d.ctl_ok(&["start", "my-process"]);
    d.ctl_ok(&["wait", "my-process"]);
    assert_eq!(d.ctl_ok(&["logs", "my-process"]), "Process running\n");
}

#[test]
fn the_daemon_example_runs_until_corrald_stops() {
    let mut d = daemon_with_examples();
    let pid = d.wait_state("background", "running").instances[0]
        .pid
        .unwrap() as i32;
    corral_tests::wait_for("Running...", || {
        d.log("background", 0).contains("Running...").then_some(())
    });
    d.ctl_ok(&["shutdown"]);
    assert_eq!(d.wait_exit(), Some(0));
    assert!(!alive(pid));
}

#[test]
fn the_queue_example_passes_data_from_a_process() {
    let d = daemon_with_examples();
    d.ctl_ok(&["start", "producer"]);
    d.ctl_ok(&["wait", "producer"]);
    assert_eq!(
        d.ctl_ok(&["queue", "get", "results", "--timeout", "30"]),
        "Data from process\n"
    );

    // The consumer is started first and waits for the producer's item.
    d.ctl_ok(&["start", "consumer"]);
    d.ctl_ok(&["start", "producer"]);
    d.ctl_ok(&["wait", "consumer"]);
    let consumer = d.status("consumer");
    assert!(succeeded(&consumer), "{consumer:?}");
    assert_eq!(d.ctl_ok(&["logs", "consumer"]), "got: Data from process\n");
    assert_eq!(d.ctl_ok(&["queue", "len", "results"]).trim(), "0");
}

#[test]
fn the_pool_example_squares_in_input_order() {
    let d = daemon_with_examples();
    let inputs = [":::", "1", "2", "3", "4", "5"];
    let mut exec = vec![
        "pool",
        "map",
        "-j",
        "4",
        "--",
        "sh",
        "-c",
        "echo $(({} * {}))",
    ];
    exec.extend(inputs);
    assert_eq!(d.ctl_ok(&exec), "1\n4\n9\n16\n25\n");

    let square = repo_examples().join("square.py");
    let square = square.to_str().unwrap();
    let mut stream = vec![
        "pool", "map", "-j", "4", "--stream", "--", "python3", square,
    ];
    stream.extend(inputs);
    assert_eq!(d.ctl_ok(&stream), "1\n4\n9\n16\n25\n");
}

#[test]
fn the_value_example_increments_a_shared_counter() {
    let d = daemon_with_examples();
    assert_eq!(d.ctl_ok(&["counter", "get", "num"]), "0\n");
    d.ctl_ok(&["start", "increment"]);
    d.ctl_ok(&["wait", "increment"]);
    assert_eq!(d.ctl_ok(&["counter", "get", "num"]), "1\n");
    assert_eq!(d.log("increment", 0), "1\n");
}

#[test]
fn the_lock_example_prints_one_task_at_a_time() {
    let d = example_units();
    // A traced copy of the example: each instance also records, while it holds the lock,
    // when it enters and leaves, so the test can see that no two ever overlap.
    let trace = d.path("trace");
    let text = std::fs::read_to_string(examples_dir().join("locked-print.toml")).unwrap();
    let traced = text.replace(
        "sleep 0.2",
        &format!(
            "echo enter {{instance}} >> {t}; sleep 0.2; echo leave {{instance}} >> {t}",
            t = trace.display()
        ),
    );
    assert_ne!(traced, text, "locked-print.toml no longer runs `sleep 0.2`");
    d.unit("locked-print-traced", &traced);
    let d = Examples::start(d);

    for unit in ["locked-print", "locked-print-traced"] {
        d.ctl_ok(&["start", unit]);
        d.ctl_ok(&["wait", unit]);
        let status = d.status(unit);
        assert!(succeeded(&status), "{status:?}");
        for n in 0..3 {
            assert_eq!(
                d.log(unit, n),
                format!("Task {n} executing\n"),
                "{unit}.{n}"
            );
        }
    }
    let expected: String = (0..3)
        .map(|n| format!("[{n}] Task {n} executing\n"))
        .collect();
    assert_eq!(d.ctl_ok(&["logs", "locked-print"]), expected);

    let trace = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    assert_eq!(lines.len(), 6, "{trace}");
    let mut seen = Vec::new();
    for pair in lines.chunks(2) {
        let n = pair[0].strip_prefix("enter ").expect(&trace);
        assert_eq!(
            pair[1],
            format!("leave {n}"),
            "overlapping holders:\n{trace}"
        );
        seen.push(n);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"], "{trace}");
}

/// The commands `scripts/demo` tells a new user to paste, as it prints them.
fn demo_banner_commands() -> (String, Vec<String>) {
    let script = repo_examples().join("../scripts/demo");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--print-banner")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let banner = String::from_utf8(out.stdout).unwrap();
    let commands = banner
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| l.starts_with("corralctl "))
        .map(str::to_owned)
        .collect();
    (banner, commands)
}

#[test]
fn the_demo_banner_commands_work() {
    let (banner, commands) = demo_banner_commands();
    assert!(
        banner.contains("export CORRAL_SOCKET=") && banner.contains("/target/debug:$PATH"),
        "{banner}"
    );
    assert!(commands.len() >= 4, "{banner}");
    let d = daemon_with_examples();
    let ctl_dir = bin("corralctl").parent().unwrap().to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(ctl_dir).chain(std::env::split_paths(&path))).unwrap();
    let mut outputs = Vec::new();
    for command in &commands {
        // As a user pastes it: one line for bash, with the banner's `export` done.
        let out = std::process::Command::new("bash")
            .args(["-c", command])
            .env("CORRAL_SOCKET", d.socket())
            .env("PATH", &path)
            .current_dir(d.path(""))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`{command}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8(out.stdout).unwrap());
    }
    let find = |prefix: &str| {
        let at = commands
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in the banner:\n{banner}"));
        outputs[at].clone()
    };
    assert_eq!(
        find("corralctl run --wait -- echo"),
        "Hello from process!\n"
    );
    assert_eq!(find("corralctl pool map"), "1\n4\n9\n16\n25\n");
    let logs = find("corralctl start task");
    for n in 0..5 {
        assert!(logs.contains(&format!("Task {n} running")), "{logs}");
    }
}
