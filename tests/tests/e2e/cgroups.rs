//! cgroups: each instance in a cgroup of its own where the kernel lets corrald have one
//! (a writable cgroup v2 hierarchy, unified or the `unified` mount of a hybrid system);
//! limits through v2 controllers or, on a hybrid system, the v1 ones; process groups
//! alone otherwise, said in `status`.
//!
//! Tests that need cgroups say why they are skipped where the machine has none (not
//! root, no writable v2 hierarchy, no such controller).

use corral_proto::InstanceState;
use corral_tests::{TestDaemon, alive, wait_for};

/// How corrald says it supervises (`status --json`'s `supervision`).
fn supervision(d: &TestDaemon) -> String {
    let out = d.ctl_ok(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("status --json");
    v["supervision"].as_str().unwrap_or_default().to_owned()
}

/// The escapee's pid, written by the unit below once it has called `setsid`.
fn escapee(d: &TestDaemon) -> i32 {
    let file = d.path("escapee.pid");
    wait_for("the escapee to write its pid", || {
        std::fs::read_to_string(&file).ok()?.trim().parse().ok()
    })
}

fn escaping_unit(d: &TestDaemon) -> String {
    let file = d.path("escapee.pid");
    format!(
        r#"
command = ["sh", "-c", "setsid sh -c 'echo $$ > {}; exec sleep 1000' & exec sleep 1000"]
"#,
        file.display()
    )
}

fn skip(why: &str) {
    eprintln!("skipped: {why}");
}

/// Starts corrald with the escaping unit running and returns the escapee's pid, or
/// `None` (having said why) where corrald has no cgroups for instances.
fn started_escapee(d: &mut TestDaemon) -> Option<i32> {
    d.unit("esc", &escaping_unit(d));
    d.start();
    let how = supervision(d);
    if !how.starts_with("cgroups") {
        skip(&format!("no cgroups for instances here: {how}"));
        return None;
    }
    d.ctl_ok(&["start", "esc"]);
    Some(escapee(d))
}

#[test]
fn a_process_that_called_setsid_dies_with_its_instance_stop() {
    let mut d = TestDaemon::new();
    let Some(pid) = started_escapee(&mut d) else {
        return;
    };
    // It left the instance's process group: killpg alone would miss it.
    let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).expect("getpgid");
    assert_ne!(
        pgid.as_raw(),
        d.status("esc").instances[0].pid.unwrap() as i32
    );
    let running = d.status("esc");
    assert!(
        running.instances[0].cgroup_cpu_usec.is_some(),
        "status shows the cgroup's CPU: {running:?}"
    );
    d.ctl_ok(&["stop", "esc"]);
    wait_for("the escapee to be gone after stop", || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn the_escapee_dies_with_its_main_process_too() {
    let mut d = TestDaemon::new();
    let Some(pid) = started_escapee(&mut d) else {
        return;
    };
    let main = d.status("esc").instances[0].pid.unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(main), nix::sys::signal::SIGKILL)
        .expect("kill main");
    wait_for("the escapee to be gone once its main process died", || {
        (!alive(pid)).then_some(())
    });
}

#[test]
fn without_cgroups_corrald_says_so_and_uses_process_groups() {
    let mut d = TestDaemon::new();
    let config = d.path("corral.toml");
    std::fs::write(&config, "cgroups = false\n").unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    d.unit("esc", &escaping_unit(&d));
    d.start();
    let how = supervision(&d);
    assert!(how.starts_with("process groups"), "{how}");
    d.ctl_ok(&["start", "esc"]);
    let pid = escapee(&d);
    d.ctl_ok(&["stop", "esc"]);
    // As documented: by process group alone, a setsid escapee survives its stop.
    assert!(alive(pid), "the escapee outlived the stop");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    wait_for("our escapee to be gone", || (!alive(pid)).then_some(()));
}

#[test]
fn a_memory_hog_is_stopped_at_memory_max() {
    let mut d = TestDaemon::new();
    d.unit(
        "hog",
        r#"
kind = "task"
memory_max = "32M"
command = ["python3", "-c", "b = []\nfor i in range(64):\n    b.append(bytearray(8 << 20))\n    print(i, flush=True)\nprint('survived', flush=True)"]
"#,
    );
    d.start();
    let how = supervision(&d);
    if !how.starts_with("cgroups") || !how.contains("memory (") {
        return skip(&format!("no memory controller for instances here: {how}"));
    }
    d.ctl_ok(&["start", "--no-wait", "hog"]);
    let status = d.wait_state("hog", "exited");
    let exit = status.instances[0].last_exit.expect("an exit");
    assert_eq!(exit.signal, Some(9), "killed by the OOM killer: {status:?}");
    let log = d.log("hog", 0);
    assert!(!log.contains("survived"), "{log}");
    // 8 MiB each, 32 MiB limit: it never got to 64 MiB.
    let last: u32 = log
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .unwrap_or(0);
    assert!(
        last < 8,
        "allocated {} MiB under a 32 MiB limit",
        (last + 1) * 8
    );
}

#[test]
fn tasks_max_caps_the_processes_of_an_instance() {
    let mut d = TestDaemon::new();
    d.unit(
        "forky",
        r#"
kind = "task"
tasks_max = 4
command = ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; wait"]
"#,
    );
    d.start();
    let how = supervision(&d);
    if !how.starts_with("cgroups") || !how.contains("pids (") {
        return skip(&format!("no pids controller for instances here: {how}"));
    }
    d.ctl_ok(&["start", "--no-wait", "forky"]);
    wait_for("a fork to be refused", || {
        let log = d.log("forky", 0);
        log.contains("fork").then_some(())
    });
    d.ctl_ok(&["stop", "forky"]);
    assert_ne!(d.status("forky").instances[0].state, InstanceState::Running);
}

#[test]
fn cgroups_are_removed_when_instances_stop_and_at_shutdown() {
    let mut d = TestDaemon::new();
    d.unit(
        "svc",
        "command = [\"sleep\", \"1000\"]\ncpu_max = \"50%\"\n",
    );
    d.start();
    let how = supervision(&d);
    if !how.starts_with("cgroups") {
        return skip(&format!("no cgroups for instances here: {how}"));
    }
    let listing = std::fs::read_to_string(d.state_dir().join("cgroups")).expect("cgroups file");
    let base = std::path::PathBuf::from(listing.lines().next().expect("a base"));
    d.ctl_ok(&["start", "svc"]);
    let leaf = base.join("svc.0");
    assert!(leaf.is_dir(), "{} made", leaf.display());
    if how.contains("cpu (v1)") {
        let v1 = listing
            .lines()
            .find(|l| l.contains("/cpu/") || l.contains("/cpu,"))
            .expect("the v1 cpu hierarchy listed");
        let quota =
            std::fs::read_to_string(std::path::Path::new(v1).join("svc.0/cpu.cfs_quota_us"))
                .expect("quota");
        assert_eq!(quota.trim(), "50000", "50% of a 100 ms period");
    }
    d.ctl_ok(&["stop", "svc"]);
    wait_for("the instance's cgroup to be removed", || {
        (!leaf.exists()).then_some(())
    });
    d.ctl_ok(&["start", "svc"]);
    assert!(leaf.is_dir());
    d.ctl_ok(&["shutdown"]);
    d.wait_exit();
    for dir in listing.lines() {
        assert!(
            !std::path::Path::new(dir).exists(),
            "{dir} removed at shutdown"
        );
    }
}
