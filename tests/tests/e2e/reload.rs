//! Reload and validation of unit files.

use corral_tests::{TestDaemon, bin};

#[test]
fn reload_adds_removes_and_restarts_only_changed_units() {
    let mut d = TestDaemon::new();
    d.unit("keep", r#"command = ["sleep", "1000"]"#)
        .unit("change", r#"command = ["sleep", "1000"]"#)
        .unit("drop", r#"command = ["sleep", "1000"]"#);
    d.start();
    let pid = |d: &TestDaemon, u: &str| d.wait_state(u, "running").instances[0].pid.unwrap();
    let keep = pid(&d, "keep");
    let change = pid(&d, "change");
    let dropped = pid(&d, "drop") as i32;

    d.unit("change", r#"command = ["sleep", "2000"]"#)
        .unit("new", r#"command = ["sleep", "1000"]"#);
    d.remove_unit("drop");
    let out = d.ctl_ok(&["reload"]);
    assert!(out.contains("added: new"), "{out}");
    assert!(out.contains("removed: drop"), "{out}");
    assert!(out.contains("changed: change"), "{out}");

    assert_eq!(pid(&d, "keep"), keep);
    corral_tests::wait_for("change to run its new command", || {
        let s = d.status("change");
        (s.instances[0].pid.is_some_and(|p| p != change)).then_some(())
    });
    pid(&d, "new");
    corral_tests::wait_for("drop to be forgotten", || {
        d.client().status(Some("drop")).is_err().then_some(())
    });
    assert!(!corral_tests::alive(dropped));
}

#[test]
fn a_broken_file_rejects_the_whole_reload_with_positions() {
    let mut d = TestDaemon::new();
    d.unit("good", r#"command = ["sleep", "1000"]"#);
    d.start();
    let pid = d.wait_state("good", "running").instances[0].pid;

    d.unit("good", r#"command = ["sleep", "2000"]"#);
    d.unit(
        "broken",
        "kind = \"service\"\ncomand = [\"true\"]\nstop_timeout = 10\n",
    );
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml:2:1"), "{err}");
    assert!(err.contains("did you mean `command`"), "{err}");
    assert!(err.contains("broken.toml:3:16"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    // The running set is untouched: same pid, no new unit.
    assert_eq!(d.status("good").instances[0].pid, pid);
    assert!(d.client().status(Some("broken")).is_err());
}

#[test]
fn check_reports_every_error_and_exits_non_zero() {
    let d = TestDaemon::new();
    d.unit("a", "command = \"sleep 10\"\n")
        .unit("b", "command = [\"true\"]\nrestart = \"sometimes\"\n")
        .unit("ok", "command = [\"true\"]\n");
    let out = std::process::Command::new(bin("corrald"))
        .arg("--check")
        .arg("--units")
        .arg(d.units_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a.toml:1:11"), "{err}");
    assert!(err.contains("/bin/sh"), "{err}");
    assert!(err.contains("b.toml:2:11"), "{err}");

    d.remove_unit("a");
    d.remove_unit("b");
    let ok = std::process::Command::new(bin("corrald"))
        .arg("--check")
        .arg("--units")
        .arg(d.units_dir())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn corrald_refuses_to_start_with_bad_units_and_says_where() {
    let d = TestDaemon::new();
    d.unit("bad", "instances = \"many\"\ncommand = [\"true\"]\n");
    let out = d
        .command()
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:1:13"), "{err}");
}

#[test]
fn an_oversized_unit_file_is_refused_before_parsing_and_the_reload_changes_nothing() {
    let mut d = TestDaemon::new();
    d.unit("good", r#"command = ["sleep", "1000"]"#);
    d.start();
    let pid = d.wait_state("good", "running").instances[0].pid;

    // Just over the cap, all comments (what made the parse allocate many times its size).
    let size = CAP as usize + 1;
    let mut text = "# padding\n".repeat(size / 10 + 1);
    text.truncate(size);
    d.unit("huge", &text);
    d.unit("good", r#"command = ["sleep", "2000"]"#);
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("huge.toml"), "{err}");
    assert!(err.contains(&format!("{size} bytes")), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    // corrald is up and what ran keeps running, unchanged.
    assert_eq!(d.status("good").instances[0].pid, pid);
    assert!(d.client().status(Some("huge")).is_err());

    // corrald refuses to start on it too, and so does --check, naming the file.
    let check = std::process::Command::new(bin("corrald"))
        .arg("--check")
        .arg("--units")
        .arg(d.units_dir())
        .output()
        .unwrap();
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("huge.toml") && err.contains("more than the limit"),
        "{err}"
    );

    // Once the file is gone, the same reload goes through.
    d.remove_unit("huge");
    d.ctl_ok(&["reload"]);
    corral_tests::wait_for("good to run its new command", || {
        (d.status("good").instances[0]
            .pid
            .is_some_and(|p| Some(p) != pid))
        .then_some(())
    });
}

#[test]
fn an_oversized_corral_toml_is_refused_with_its_name_and_size() {
    let d = TestDaemon::new();
    let config = d.path("corral.toml");
    let size = CAP + 10;
    std::fs::File::create(&config)
        .unwrap()
        .set_len(size)
        .unwrap();
    let out = d
        .command()
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corral.toml") && err.contains(&format!("{size} bytes")),
        "{err}"
    );
}

/// `corral_config::MAX_CONFIG_FILE`: the largest unit file or corral.toml read.
const CAP: u64 = 1024 * 1024;
