//! Reload and validation of unit files.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

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
fn corrald_starts_the_valid_units_and_shows_each_bad_one_as_not_loaded() {
    let mut d = TestDaemon::new();
    d.unit("good", r#"command = ["sleep", "1000"]"#)
        .unit(
            "bad",
            "instances = \"many\"\ncommand = [\"sleep\", \"1000\"]\n",
        )
        .unit(
            "needs-bad",
            "command = [\"sleep\", \"1000\"]\nrequires = [\"bad\"]\n",
        );
    let notify_path = d.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    d.start_with(|c| {
        c.env("NOTIFY_SOCKET", &notify_path);
    });
    let good = d.wait_state("good", "running").instances[0].pid;

    // Each bad unit is shown, not loaded, with its errors at their positions.
    let bad = d.status("bad");
    assert!(!bad.loaded);
    assert!(bad.instances.is_empty());
    assert!(
        bad.errors.iter().any(|e| e.contains("bad.toml:1:13")),
        "{:?}",
        bad.errors
    );
    let needs = d.status("needs-bad");
    assert!(!needs.loaded);
    assert!(
        needs
            .errors
            .iter()
            .any(|e| e.contains("needs-bad.toml:2:13") && e.contains("`bad`, which is not loaded")),
        "{:?}",
        needs.errors
    );
    assert!(d.status("good").loaded);
    let table = d.ctl_ok(&["status"]);
    assert!(table.contains("not-loaded"), "{table}");
    assert!(table.contains("bad.toml:1:13"), "{table}");
    assert!(table.contains("corralctl reload"), "{table}");
    // Logged, and in systemd's STATUS=.
    assert!(d.stderr().contains("bad.toml:1:13"), "{}", d.stderr());
    let mut buf = [0u8; 4096];
    let n = notify.recv(&mut buf).expect("READY=1 within 30 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(
        ready.contains("1 unit(s); 2 unit file(s) NOT LOADED"),
        "{ready}"
    );
    // A unit not loaded cannot be started, and says why.
    let out = d.ctl(&["start", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`bad` is not loaded"), "{err}");
    assert!(err.contains("bad.toml:1:13"), "{err}");

    // --check still fails on the same directory.
    let check = std::process::Command::new(bin("corrald"))
        .arg("--check")
        .arg("--units")
        .arg(d.units_dir())
        .output()
        .unwrap();
    assert!(!check.status.success());

    // A reload of a set that is still bad is rejected whole; what runs runs on.
    d.unit("good", r#"command = ["sleep", "2000"]"#);
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was changed"));
    assert_eq!(d.status("good").instances[0].pid, good);
    assert!(!d.status("bad").loaded);

    // Corrected, the reload loads both and STATUS= no longer mentions them.
    d.unit("bad", "instances = 2\ncommand = [\"sleep\", \"1000\"]\n");
    let out = d.ctl_ok(&["reload"]);
    assert!(out.contains("added: bad needs-bad"), "{out}");
    let bad = d.wait_state("bad", "running");
    assert!(bad.loaded && bad.errors.is_empty());
    assert_eq!(bad.instances.len(), 2);
    d.wait_state("needs-bad", "running");
    let n = notify.recv(&mut buf).expect("STATUS= after the reload");
    let status = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(status.contains("with 3 unit(s)"), "{status}");
    assert!(!status.contains("NOT LOADED"), "{status}");
}

#[test]
fn corrald_refuses_to_start_when_the_units_directory_is_unreadable() {
    let d = TestDaemon::new();
    std::fs::remove_dir(d.units_dir()).unwrap();
    let out = d
        .command()
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read units directory"), "{err}");
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
