//! Every example in `examples/` validates and prints what `examples/README.md` says.

use std::path::PathBuf;

use corral_tests::{TestDaemon, alive, bin};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/units")
}

fn daemon_with_examples() -> TestDaemon {
    let mut d = TestDaemon::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, d.units_dir().join(path.file_name().unwrap())).unwrap();
    }
    d.start();
    d
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
