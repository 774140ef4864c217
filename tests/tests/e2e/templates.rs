//! Templates: `NAME@.toml`, instance units `NAME@ARG`, `[enable]`.

use corral_tests::{TestDaemon, wait_for};

fn web_template(d: &TestDaemon) {
    let dir = d.path("www");
    d.unit(
        "web@",
        &format!(
            r#"command = ["/bin/sh", "-c", "echo \"serving $PORT from $PWD\"; sleep 1000"]
working_dir = "{}/{{arg}}"
env = {{ PORT = "{{arg}}" }}
"#,
            dir.display()
        ),
    );
    for port in ["8080", "8081", "9090"] {
        std::fs::create_dir_all(dir.join(port)).unwrap();
    }
}

#[test]
fn a_template_is_started_with_two_arguments() {
    let mut d = TestDaemon::new();
    web_template(&d);
    d.start();
    // The template itself is not a unit, and cannot be started.
    assert!(!d.ctl_ok(&["status"]).contains("web@"));
    let out = d.ctl(&["start", "web@"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a template"));
    d.ctl_ok(&["start", "web@8080", "web@8081"]);
    let www = d.path("www");
    for port in ["8080", "8081"] {
        let unit = format!("web@{port}");
        d.wait_state(&unit, "running");
        let want = format!("serving {port} from {}", www.join(port).display());
        wait_for("its line", || d.log(&unit, 0).contains(&want).then_some(()));
    }
    let status = d.ctl_ok(&["status"]);
    assert!(
        status.contains("web@8080") && status.contains("web@8081"),
        "{status}"
    );
    // A bad argument is refused with the rules.
    let out = d.ctl(&["start", "web@a b"]);
    assert_ne!(out.status.code(), Some(0));
    d.ctl_ok(&["stop", "web@8080", "web@8081"]);
}

#[test]
fn enabled_instances_start_with_corrald_and_follow_their_template_on_reload() {
    let mut d = TestDaemon::new();
    web_template(&d);
    let config = d.path("corral.toml");
    std::fs::write(&config, "[enable]\n\"web@\" = [\"8080\", \"9090\"]\n").unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    d.start();
    d.wait_state("web@8080", "running");
    d.wait_state("web@9090", "running");
    // A changed template restarts its running instances with the new definition.
    let dir = d.path("www");
    d.unit(
        "web@",
        &format!(
            r#"command = ["/bin/sh", "-c", "echo \"v2 on $PORT\"; sleep 1000"]
working_dir = "{}/{{arg}}"
env = {{ PORT = "{{arg}}" }}
"#,
            dir.display()
        ),
    );
    d.ctl_ok(&["reload"]);
    wait_for("web@9090 to run v2", || {
        d.log("web@9090", 0).contains("v2 on 9090").then_some(())
    });
    // A removed template stops and removes its instances.
    d.remove_unit("web@");
    d.ctl_ok(&["reload"]);
    wait_for("the instances to be gone", || {
        (!d.ctl_ok(&["status"]).contains("web@")).then_some(())
    });
}

#[test]
fn check_reports_an_enabled_template_that_does_not_exist() {
    let d = TestDaemon::new();
    let config = d.path("corral.toml");
    std::fs::write(&config, "[enable]\n\"api@\" = [\"1\"]\n").unwrap();
    let out = d
        .command()
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[enable] names `api@`"), "{err}");
    std::fs::write(&config, "[enable]\n\"api\" = [\"1\"]\n").unwrap();
    let out = d
        .command()
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a template name") && err.contains("corral.toml:1:"),
        "{err}"
    );
}
