//! The `[access]` policy: who may read, use and control, decided by the client's uid and
//! groups as the kernel reports them. Run as root, with a user made by `useradd`.

use std::os::unix::fs::PermissionsExt;

use corral_tests::{TestDaemon, TestUser};

/// A daemon whose socket anyone may open, so that [access] alone decides.
fn open_daemon(access: &str) -> TestDaemon {
    let mut d = TestDaemon::new();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = d.path("corral.toml");
    std::fs::write(&config, format!("socket_mode = \"0666\"\n{access}")).unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    d.unit(
        "svc",
        "command = [\"sleep\", \"1000\"]\nautostart = false\n",
    );
    d.start();
    d
}

#[test]
fn access_rules_decide_read_use_and_control() {
    let Some(user) = TestUser::create() else {
        eprintln!("skipped: needs root and useradd");
        return;
    };
    let d = open_daemon(&format!(
        "[access]\nuse = [\"user:{}\"]\n[[access.names]]\nprefix = \"secret:\"\nuse = []\n",
        user.name
    ));
    // Read: anyone.
    let status = user.ctl(&d, &["status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // Use: allowed in general, refused for the protected prefix.
    assert!(
        user.ctl(&d, &["queue", "put", "public", "1"])
            .status
            .success()
    );
    let secret = user.ctl(&d, &["queue", "put", "secret:plans", "1"]);
    assert_eq!(secret.status.code(), Some(1));
    let err = String::from_utf8_lossy(&secret.stderr);
    assert!(
        err.contains("permission denied") && err.contains("queue_put"),
        "{err}"
    );
    // Control: refused, naming the operation; nothing changed.
    let start = user.ctl(&d, &["start", "svc"]);
    assert_eq!(start.status.code(), Some(1));
    let err = String::from_utf8_lossy(&start.stderr);
    assert!(
        err.contains("permission denied") && err.contains("`start`"),
        "{err}"
    );
    assert_eq!(d.status("svc").instances[0].state.as_str(), "inactive");
    assert_eq!(d.ctl_ok(&["queue", "len", "secret:plans"]).trim(), "0");
    // Root may do everything.
    d.ctl_ok(&["queue", "put", "secret:plans", "1"]);
    d.ctl_ok(&["start", "svc"]);
    // Acknowledging is using: a lease id alone does not let the user ack or nack.
    let leased = d.ctl_ok(&["queue", "get", "secret:plans", "--ack"]);
    let id = leased.split('\t').next().unwrap().to_owned();
    for op in ["ack", "nack"] {
        let out = user.ctl(&d, &["queue", op, "secret:plans", &id]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permission denied") && err.contains(&format!("queue_{op}")),
            "{err}"
        );
    }
    d.ctl_ok(&["queue", "ack", "secret:plans", &id]);
}

#[test]
fn a_non_root_client_runs_things_as_itself() {
    let Some(user) = TestUser::create() else {
        eprintln!("skipped: needs root and useradd");
        return;
    };
    let d = open_daemon(&format!("[access]\ncontrol = [\"user:{}\"]\n", user.name));
    let out = user.ctl(&d, &["run", "--wait", "--", "id", "-u"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        user.uid.to_string()
    );
    let pool = user.ctl(&d, &["pool", "map", "--", "sh", "-c", "id -u", ":::", "x"]);
    assert!(
        pool.status.success(),
        "{}",
        String::from_utf8_lossy(&pool.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&pool.stdout).trim(),
        user.uid.to_string()
    );
    // Root's runs stay root's.
    assert_eq!(d.ctl_ok(&["run", "--wait", "--", "id", "-u"]).trim(), "0");
}

#[test]
fn the_socket_is_0660_and_can_belong_to_a_group() {
    use std::os::unix::fs::MetadataExt;
    let mut d = TestDaemon::new();
    d.start();
    let meta = std::fs::metadata(d.socket()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    drop(d);
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    // A configured group owns it (any existing group will do for the check).
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(65534))
        .ok()
        .flatten()
        .or_else(|| nix::unistd::Group::from_name("daemon").ok().flatten());
    let Some(group) = group else { return };
    let mut d = TestDaemon::new();
    let config = d.path("corral.toml");
    std::fs::write(&config, format!("socket_group = \"{}\"\n", group.name)).unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    d.start();
    assert_eq!(
        std::fs::metadata(d.socket()).unwrap().gid(),
        group.gid.as_raw()
    );
}

#[test]
fn semaphores_and_events_follow_the_name_rules() {
    let Some(user) = TestUser::create() else {
        eprintln!("skipped: needs root and useradd");
        return;
    };
    let d = open_daemon(&format!(
        "[access]\nuse = [\"user:{}\"]\n[[access.names]]\nprefix = \"secret:\"\nuse = []\n",
        user.name
    ));
    d.ctl_ok(&["semaphore", "create", "secret:slots", "1"]);
    d.ctl_ok(&["event", "set", "secret:go"]);
    // Reading is allowed; taking, releasing, setting and clearing a protected name is not.
    let get = user.ctl(&d, &["semaphore", "get", "secret:slots"]);
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    let wait = user.ctl(&d, &["event", "wait", "secret:go", "--timeout", "5"]);
    assert!(
        wait.status.success(),
        "{}",
        String::from_utf8_lossy(&wait.stderr)
    );
    for (args, op) in [
        (
            &["semaphore", "acquire", "secret:slots"][..],
            "semaphore_acquire",
        ),
        (
            &["semaphore", "release", "secret:slots"][..],
            "semaphore_release",
        ),
        (&["event", "clear", "secret:go"][..], "event_clear"),
    ] {
        let out = user.ctl(&d, args);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permission denied") && err.contains(op),
            "{err}"
        );
    }
    assert_eq!(d.ctl_ok(&["semaphore", "get", "secret:slots"]).trim(), "1");
    assert_eq!(d.ctl_ok(&["event", "get", "secret:go"]).trim(), "set");
    let out = user.ctl(&d, &["semaphore", "list"]);
    assert!(out.status.success());
}
