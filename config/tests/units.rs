//! Successful loading: defaults, every key, `extends`, dependencies and the
//! shipped sample unit.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::ok;
use corral_config::{RestartPolicy, Rlimit, Unit, UnitKind, load_units, load_units_dir};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn service_defaults() {
    let units = ok(&[("web", "command = [\"web\"]\n")]);
    let u = &units["web"];
    assert_eq!(u.name, "web");
    assert_eq!(u.source, PathBuf::from("u/web.toml"));
    assert_eq!(u.kind, UnitKind::Service);
    assert_eq!(u.command, ["web"]);
    assert_eq!(u.instances, 1);
    assert_eq!(u.restart, RestartPolicy::OnFailure);
    assert_eq!(u.restart_delay, Duration::from_millis(100));
    assert_eq!(u.restart_delay_max, secs(10));
    assert_eq!(u.start_limit_burst, 5);
    assert_eq!(u.start_limit_interval, secs(10));
    assert_eq!(u.stop_signal, "SIGTERM");
    assert_eq!(u.stop_signal_number, 15);
    assert_eq!(u.stop_timeout, secs(10));
    assert!(!u.daemon);
    assert_eq!(u.working_dir, None);
    assert!(u.env.is_empty());
    assert_eq!(
        (u.user.as_deref(), u.group.as_deref(), u.umask),
        (None, None, None)
    );
    assert_eq!(u.rlimits, Default::default());
    assert!(u.after.is_empty() && u.requires.is_empty());
    assert!(u.autostart);
    assert_eq!(u.extends, None);
    assert_eq!(u.log_max_size, 10 * 1024 * 1024);
    assert_eq!(u.log_keep, 5);
}

#[test]
fn task_defaults_and_overrides() {
    let units = ok(&[
        ("job", "kind = \"task\"\ncommand = [\"job\"]\n"),
        (
            "job2",
            "kind = \"task\"\ncommand = [\"job\"]\nrestart = \"always\"\nautostart = true\n",
        ),
    ]);
    assert_eq!(units["job"].restart, RestartPolicy::No);
    assert!(!units["job"].autostart);
    assert_eq!(units["job2"].restart, RestartPolicy::Always);
    assert!(units["job2"].autostart);
}

#[test]
fn transient_matches_a_minimal_task_file() {
    let units = ok(&[("once", "kind = \"task\"\ncommand = [\"true\"]\n")]);
    let mut from_file = units["once"].clone();
    from_file.source = PathBuf::new();
    assert_eq!(Unit::transient("once", vec!["true".into()]), from_file);
}

#[test]
fn instance_placeholder_is_kept_and_substituted() {
    let units = ok(&[(
        "w",
        "command = [\"worker\", \"--id\", \"{instance}\", \"--port=90{instance}\"]\ninstances = 3\n",
    )]);
    let w = &units["w"];
    assert_eq!(w.command[2], "{instance}");
    assert_eq!(w.argv_for(0), ["worker", "--id", "0", "--port=900"]);
    assert_eq!(w.argv_for(2), ["worker", "--id", "2", "--port=902"]);
}

#[test]
fn every_key_with_alternative_spellings() {
    let text = r#"
kind = "service"
command = ["srv", "-v"]
instances = 10000
restart = "always"
restart_delay = "1.5s"
restart_delay_max = "1m30s"
start_limit_burst = 1
start_limit_interval = "0s"
stop_signal = "hup"
stop_timeout = "0s"
daemon = true
working_dir = "/var/lib/srv"
user = "1000"
group = "0"
umask = 0o022
after = []
requires = []
autostart = false
log_max_size = 1024
log_keep = 0
env = { "A" = "1", EMPTY = "" }
rlimits = { nofile = 1024, core = "unlimited", as = { soft = 1, hard = 2 } }
"#;
    let units = ok(&[("srv", text)]);
    let u = &units["srv"];
    assert_eq!(u.instances, 10000);
    assert_eq!(u.restart, RestartPolicy::Always);
    assert_eq!(u.restart_delay, Duration::from_millis(1500));
    assert_eq!(u.restart_delay_max, secs(90));
    assert_eq!(u.start_limit_burst, 1);
    assert_eq!(u.start_limit_interval, secs(0));
    assert_eq!(
        (u.stop_signal.as_str(), u.stop_signal_number),
        ("SIGHUP", 1)
    );
    assert_eq!(u.stop_timeout, secs(0));
    assert!(u.daemon);
    assert_eq!(u.working_dir.as_deref(), Some(Path::new("/var/lib/srv")));
    assert_eq!(
        (u.user.as_deref(), u.group.as_deref()),
        (Some("1000"), Some("0"))
    );
    assert_eq!(u.umask, Some(0o022));
    assert!(!u.autostart);
    assert_eq!((u.log_max_size, u.log_keep), (1024, 0));
    assert_eq!(
        u.env,
        BTreeMap::from([("A".into(), "1".into()), ("EMPTY".into(), String::new())])
    );
    assert_eq!(
        u.rlimits.nofile,
        Some(Rlimit {
            soft: 1024,
            hard: 1024
        })
    );
    assert_eq!(
        u.rlimits.core,
        Some(Rlimit {
            soft: u64::MAX,
            hard: u64::MAX
        })
    );
    assert_eq!(u.rlimits.r#as, Some(Rlimit { soft: 1, hard: 2 }));
    assert_eq!(u.rlimits.nproc, None);
}

#[test]
fn stop_signal_forms() {
    let cases = [
        ("\"TERM\"", "SIGTERM", 15),
        ("\"SIGKILL\"", "SIGKILL", 9),
        ("\"sigusr2\"", "SIGUSR2", 12),
        ("10", "SIGUSR1", 10),
        ("\"RTMIN+1\"", "SIGRTMIN+1", 35),
        ("64", "SIGRTMIN+30", 64),
    ];
    for (written, name, number) in cases {
        let text = format!("command = [\"x\"]\nstop_signal = {written}\n");
        let units = ok(&[("s", &text)]);
        assert_eq!(units["s"].stop_signal, name, "{written}");
        assert_eq!(units["s"].stop_signal_number, number, "{written}");
    }
}

#[test]
fn umask_and_size_forms() {
    let cases = [
        ("\"022\"", 0o022),
        ("\"0022\"", 0o022),
        ("\"0o777\"", 0o777),
        ("18", 0o022),
        ("0", 0),
    ];
    for (written, want) in cases {
        let text = format!("command = [\"x\"]\numask = {written}\n");
        assert_eq!(ok(&[("s", &text)])["s"].umask, Some(want), "{written}");
    }
    let sizes = [
        ("\"512K\"", 512 << 10),
        ("\"10MiB\"", 10 << 20),
        ("\"500kB\"", 500_000),
        ("4096", 4096),
    ];
    for (written, want) in sizes {
        let text = format!("command = [\"x\"]\nlog_max_size = {written}\n");
        assert_eq!(ok(&[("s", &text)])["s"].log_max_size, want, "{written}");
    }
}

#[test]
fn extends_overrides_and_merges_env_and_rlimits() {
    let units = ok(&[
        (
            "base",
            "command = [\"base\"]\ninstances = 2\nstop_timeout = \"3s\"\n\
             [env]\nA = \"base\"\nB = \"base\"\n[rlimits]\nnofile = 100\ncore = 0\n",
        ),
        (
            "child",
            "extends = \"base\"\ncommand = [\"child\", \"--x\"]\n\
             [env]\nB = \"child\"\nC = \"child\"\n[rlimits]\nnofile = 200\n",
        ),
    ]);
    let child = &units["child"];
    assert_eq!(child.command, ["child", "--x"]);
    assert_eq!(child.instances, 2);
    assert_eq!(child.stop_timeout, secs(3));
    assert_eq!(child.extends.as_deref(), Some("base"));
    assert_eq!(child.source, PathBuf::from("u/child.toml"));
    let env: Vec<(&str, &str)> = child
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "base"), ("B", "child"), ("C", "child")]);
    assert_eq!(
        child.rlimits.nofile,
        Some(Rlimit {
            soft: 200,
            hard: 200
        })
    );
    assert_eq!(child.rlimits.core, Some(Rlimit { soft: 0, hard: 0 }));
    // The base is a unit of its own, untouched by its child.
    assert_eq!(units["base"].command, ["base"]);
    assert_eq!(units["base"].env.len(), 2);
    assert_eq!(units["base"].extends, None);
}

#[test]
fn extends_chain_and_inherited_kind_defaults() {
    let units = ok(&[
        (
            "a",
            "kind = \"task\"\ncommand = [\"a\"]\n[env]\nLEVEL = \"a\"\nA = \"1\"\n",
        ),
        (
            "b",
            "extends = \"a\"\ninstances = 4\n[env]\nLEVEL = \"b\"\nB = \"1\"\n",
        ),
        ("c", "extends = \"b\"\n[env]\nLEVEL = \"c\"\n"),
    ]);
    let c = &units["c"];
    // kind comes from two levels up and decides the kind-dependent defaults.
    assert_eq!(c.kind, UnitKind::Task);
    assert_eq!(c.restart, RestartPolicy::No);
    assert!(!c.autostart);
    assert_eq!(c.command, ["a"]);
    assert_eq!(c.instances, 4);
    assert_eq!(c.extends.as_deref(), Some("b"));
    assert_eq!(c.env["LEVEL"], "c");
    assert_eq!((c.env["A"].as_str(), c.env["B"].as_str()), ("1", "1"));
}

#[test]
fn dependencies_are_kept() {
    let units = ok(&[
        ("db", "command = [\"db\"]\n"),
        ("cache", "command = [\"cache\"]\n"),
        (
            "web",
            "command = [\"web\"]\nafter = [\"cache\", \"db\"]\nrequires = [\"db\"]\n",
        ),
    ]);
    assert_eq!(units["web"].after, ["cache", "db"]);
    assert_eq!(units["web"].requires, ["db"]);
}

#[test]
fn reload_detects_changes_by_equality() {
    let before = ok(&[("a", "command = [\"a\"]\n"), ("b", "command = [\"b\"]\n")]);
    let after = ok(&[
        ("a", "command = [\"a\"]\n"),
        ("b", "command = [\"b\", \"-v\"]\n"),
    ]);
    assert_eq!(before["a"], after["a"]);
    assert_ne!(before["b"], after["b"]);
}

fn sample_unit_files() -> Vec<(PathBuf, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-unit.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let stub = |name: &str| {
        (
            PathBuf::from(format!("u/{name}.toml")),
            "command = [\"true\"]\n".to_owned(),
        )
    };
    vec![(path, text), stub("web-base"), stub("migrate"), stub("db")]
}

#[test]
fn sample_unit_is_valid_and_sets_every_key() {
    let units = match load_units(&sample_unit_files()) {
        Ok(units) => units,
        Err(errors) => panic!("{errors}"),
    };
    let u = &units["sample-unit"];
    assert_eq!(u.extends.as_deref(), Some("web-base"));
    assert_eq!(
        u.argv_for(1),
        ["/usr/local/bin/web", "--port", "801", "--workers", "4"]
    );
    assert_eq!(u.instances, 2);
    assert_eq!(u.restart_delay, Duration::from_millis(500));
    assert_eq!(u.restart_delay_max, secs(30));
    assert_eq!(
        (u.start_limit_burst, u.start_limit_interval),
        (10, secs(60))
    );
    assert_eq!(
        (u.stop_signal.as_str(), u.stop_signal_number),
        ("SIGINT", 2)
    );
    assert_eq!(u.stop_timeout, secs(15));
    assert_eq!(u.working_dir.as_deref(), Some(Path::new("/srv/web")));
    assert_eq!(
        (u.user.as_deref(), u.group.as_deref()),
        (Some("www-data"), Some("www-data"))
    );
    assert_eq!(u.umask, Some(0o027));
    assert_eq!(
        u.env_files,
        [
            corral_config::EnvFile {
                path: "/etc/web/web.env".into(),
                optional: false
            },
            corral_config::EnvFile {
                path: "/etc/web/local.env".into(),
                optional: true
            }
        ]
    );
    assert_eq!(
        (u.after.as_slice(), u.requires.as_slice()),
        (&["migrate".to_owned()][..], &["db".to_owned()][..])
    );
    assert_eq!((u.log_max_size, u.log_keep), (20 << 20, 3));
    assert_eq!(u.env.len(), 3);
    assert_eq!(u.rlimits.iter().count(), 5);
    assert_eq!(u.max_memory, Some(512 << 20));
    let ready = u.ready.as_ref().expect("[ready]");
    assert_eq!(ready.check.describe(), "http http://127.0.0.1:8080/health");
    assert_eq!(
        (ready.interval, ready.timeout, ready.deadline),
        (Duration::from_millis(500), secs(2), secs(30))
    );
    let health = u.health.as_ref().expect("[health]");
    assert_eq!((health.interval, health.failures), (secs(15), 3));
    assert_eq!(
        u.rlimits.r#as,
        Some(Rlimit {
            soft: 4 << 30,
            hard: u64::MAX
        })
    );
}

#[test]
fn sample_unit_documents_every_key() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The pool keys live in the pool sample, which must load as a pool.
    let pool = std::fs::read_to_string(dir.join("sample-pool.toml")).unwrap();
    let units = load_units(&[(PathBuf::from("u/sample-pool.toml"), pool.clone())]).unwrap();
    assert_eq!(units["sample-pool"].kind, corral_config::UnitKind::Pool);
    assert_eq!(units["sample-pool"].workers, Some(4));
    // The schedule keys live in the task sample, which must load as a scheduled task.
    let task = std::fs::read_to_string(dir.join("sample-task.toml")).unwrap();
    let units = load_units(&[(PathBuf::from("u/sample-task.toml"), task.clone())]).unwrap();
    assert!(units["sample-task"].schedule.is_some());
    assert!(!units["sample-task"].autostart);
    let text = std::fs::read_to_string(dir.join("sample-unit.toml")).unwrap() + &pool + &task;
    for key in corral_config::UNIT_KEYS {
        // `every` is the alternative to `schedule`: shown commented out beside it.
        let alternative = *key == "every";
        let written = text.lines().any(|l| {
            l.starts_with(&format!("{key} ="))
                || l == format!("[{key}]")
                || (alternative && l.starts_with(&format!("# {key} =")))
        });
        assert!(written, "sample-unit.toml does not set `{key}`");
    }
}

#[test]
fn load_units_dir_reads_toml_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("a.toml", "command = [\"a\"]\n");
    write("b.toml", "command = [\"b\"]\nafter = [\"a\"]\n");
    write("README.md", "not a unit");
    write("c.toml.bak", "garbage = ");
    write(".#a.toml", "garbage = ");
    std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
    std::fs::write(dir.path().join("sub.toml/x.toml"), "garbage = ").unwrap();
    let units = load_units_dir(dir.path()).unwrap();
    assert_eq!(units.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(units["a"].source, dir.path().join("a.toml"));
}

#[test]
fn load_units_dir_empty_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load_units_dir(dir.path()).unwrap().is_empty());
    let missing = dir.path().join("nope");
    let errors = load_units_dir(&missing).unwrap_err();
    assert_eq!(errors.len(), 1);
    let text = errors.to_string();
    assert!(
        text.starts_with(&format!(
            "{}: cannot read units directory:",
            missing.display()
        )),
        "{text}"
    );
}

#[test]
fn templates_are_instantiated_with_their_argument() {
    let files = vec![
        (
            PathBuf::from("u/web@.toml"),
            "command = [\"web\", \"--port\", \"{arg}\"]\nworking_dir = \"/srv/{arg}\"\nenv = { PORT = \"{arg}\" }\nenv_file = \"-/etc/web/{arg}.env\"\nrequires = [\"db@{arg}\"]\n".to_owned(),
        ),
        (PathBuf::from("u/db@.toml"), "command = [\"db\", \"{arg}\"]\n".to_owned()),
        (PathBuf::from("u/app.toml"), "command = [\"app\"]\nafter = [\"web@8080\"]\n".to_owned()),
    ];
    let units = load_units(&files).unwrap();
    let web = &units["web@"];
    assert!(web.is_template() && !units["app"].is_template());
    let inst = web.instantiate("8080").unwrap();
    assert_eq!(inst.name, "web@8080");
    assert_eq!(inst.argv_for(0), ["web", "--port", "8080"]);
    assert_eq!(inst.working_dir.as_deref(), Some(Path::new("/srv/8080")));
    assert_eq!(inst.env["PORT"], "8080");
    assert_eq!(inst.env_files[0].path, Path::new("/etc/web/8080.env"));
    assert_eq!(inst.requires, ["db@8080"]);
    assert!(web.instantiate("a@b").is_err());
    assert!(web.instantiate("a/b").is_err());
    assert_eq!(
        corral_config::template_of("web@8080"),
        Some(("web@", "8080"))
    );
    assert_eq!(corral_config::template_of("web@"), None);
    // A dependency on a template itself, or on an instance of no template, is an error.
    let files = vec![
        (
            PathBuf::from("u/web@.toml"),
            "command = [\"web\"]\n".to_owned(),
        ),
        (
            PathBuf::from("u/a.toml"),
            "command = [\"a\"]\nafter = [\"web@\", \"api@1\"]\n".to_owned(),
        ),
    ];
    let errors = load_units(&files).unwrap_err().to_string();
    assert!(
        errors.contains("u/a.toml:2:10: `web@` is a template"),
        "{errors}"
    );
    assert!(
        errors.contains("u/a.toml:2:18: unknown unit `api@1`"),
        "{errors}"
    );
}

#[test]
fn ready_and_health_checks() {
    let load = |text: &str| load_units(&[(PathBuf::from("u/w.toml"), text.to_owned())]);
    let u = &load(
        "command = [\"w\"]\nmax_memory = 1048576\n[ready]\nlog = 'listening on \\d+'\n[health]\ntcp = \"[::1]:80\"\n",
    )
    .unwrap()["w"];
    assert_eq!(
        u.ready.as_ref().map(|r| &r.check),
        Some(&corral_config::Check::Log("listening on \\d+".into()))
    );
    assert_eq!(
        u.ready.as_ref().unwrap().deadline,
        corral_config::READY_DEADLINE
    );
    assert_eq!(
        u.health.as_ref().map(|h| (&h.check, h.failures)),
        Some((&corral_config::Check::Tcp("[::1]:80".into()), 3))
    );
    assert_eq!(u.max_memory, Some(1 << 20));
    let errors = load(concat!(
        "command = [\"w\"]\n",
        "max_memory = \"10x\"\n",
        "[ready]\n",
        "tcp = \"nope\"\n",
        "exec = [\"true\"]\n",
        "deadline = 5\n",
        "[health]\n",
        "log = \"x\"\n",
        "failures = 0\n",
    ))
    .unwrap_err()
    .to_string();
    let expected = [
        "u/w.toml:2:14: invalid size for `max_memory`: unknown size suffix",
        "u/w.toml:4:1: `[ready]` takes exactly one check (exec, http, tcp, notify, log); remove `tcp`",
        "u/w.toml:6:12: expected a duration string like \"10s\" or \"500ms\" for `ready.deadline`",
        "u/w.toml:7:2: `[health]` needs one check: one of exec, http, tcp",
        "u/w.toml:8:1: unknown key `log` in `[health]` (`notify` and `log` are readiness checks only)",
        "u/w.toml:9:12: `health.failures` must be between 1 and 1000, found 0",
    ];
    for line in expected {
        assert!(errors.contains(line), "missing {line:?} in:\n{errors}");
    }
    let errors = load("command = [\"w\"]\n[ready]\nhttp = \"https://x/\"\n[health]\nexec = []\n")
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("u/w.toml:3:8: invalid URL for `ready.http`: https is not supported"),
        "{errors}"
    );
    assert!(
        errors.contains("u/w.toml:5:8: `health.exec` needs at least the program to run"),
        "{errors}"
    );
    let errors = load("command = [\"w\"]\nhealth = { tcp = \"nope\" }\n")
        .unwrap_err()
        .to_string();
    assert!(
        errors
            .contains("u/w.toml:2:18: invalid address `nope` for `health.tcp`: expected HOST:PORT"),
        "{errors}"
    );
    let errors = load("command = [\"w\"]\nready = { log = \"(\" }\n")
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("u/w.toml:2:17: invalid regular expression for `ready.log`"),
        "{errors}"
    );
}

#[test]
fn checks_take_the_template_argument_and_the_instance_number() {
    let units = load_units(&[(
        PathBuf::from("u/web@.toml"),
        concat!(
            "command = [\"web\", \"{arg}\"]\n",
            "[ready]\nhttp = \"http://127.0.0.1:{arg}/health\"\n",
            "[health]\ntcp = \"127.0.0.1:9{instance}\"\n",
        )
        .to_owned(),
    )])
    .unwrap();
    let web = units["web@"].instantiate("8080").unwrap();
    let Some(corral_config::Check::Http(t)) = web.ready.map(|r| r.check) else {
        panic!("an http check");
    };
    assert_eq!(
        (t.port, t.url.as_str()),
        (8080, "http://127.0.0.1:8080/health")
    );
    let health = web.health.unwrap().check;
    assert_eq!(
        health.substitute(corral_config::INSTANCE_PLACEHOLDER, "3"),
        Ok(corral_config::Check::Tcp("127.0.0.1:93".into()))
    );
    // An argument that makes no port is refused when the instance is made.
    assert!(units["web@"].instantiate("x").is_err());
}
