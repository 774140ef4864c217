//! The daemon's main config file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_config::{DaemonConfig, HttpConfig, load_daemon_config, parse_daemon_config};

fn packaging_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/corral.toml")
}

fn error(text: &str) -> String {
    match parse_daemon_config(Path::new("corral.toml"), text) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(errors) => errors.to_string(),
    }
}

#[test]
fn packaged_config_parses_as_all_defaults() {
    let config = load_daemon_config(&packaging_config()).unwrap();
    assert_eq!(config, DaemonConfig::default());
}

#[test]
fn packaged_config_uncommented_gives_the_documented_defaults() {
    let text = std::fs::read_to_string(packaging_config()).unwrap();
    // Every setting line is "#key = value"; prose comments have "# ".
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let config = match parse_daemon_config(Path::new("corral.toml"), &uncommented) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}\n{uncommented}"),
    };
    let want = DaemonConfig {
        units_dir: Some("/etc/corral/units".into()),
        state_dir: Some("/var/lib/corral".into()),
        socket: Some("/run/corral/corral.sock".into()),
        log_dir: Some("/var/log/corral".into()),
        shutdown_timeout: Some(Duration::from_secs(30)),
        daemon_grace: Some(Duration::from_secs(1)),
        max_frame_bytes: Some(1 << 20),
        http: HttpConfig {
            enabled: Some(true),
            listen: Some("127.0.0.1:8787".into()),
            allow_remote: Some(false),
            token: Some("change-me".into()),
            max_connections: Some(512),
            header_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(60)),
        },
        socket_mode: Some(0o660),
        socket_group: Some("corral".into()),
        max_connections: Some(1024),
        max_connections_per_user: Some(256),
        idle_timeout: Some(Duration::from_secs(600)),
        max_unread_bytes: Some(16 << 20),
        max_item_bytes: Some(262144),
        queues: [(
            "jobs".to_string(),
            corral_config::QueueConfig {
                maxsize: Some(1000),
                max_deliveries: Some(5),
                dead_letter: Some("jobs.failed".into()),
            },
        )]
        .into(),
        access: None,
        enable: [(
            "web@".to_string(),
            vec!["8080".to_string(), "8081".to_string()],
        )]
        .into(),
        cgroups: Some(true),
        backend: corral_config::BackendConfig {
            url: Some("postgres://corral:PASSWORD@db.example:5432/corral".into()),
            node: Some("web1".into()),
            lease: Some(Duration::from_secs(10)),
            poll: Some(Duration::from_millis(500)),
        },
        pool_slots: Some(8),
        pool_keep: Some(Duration::from_secs(7 * 86_400)),
    };
    assert_eq!(config, want);
}

#[test]
fn empty_config_is_default() {
    assert_eq!(
        parse_daemon_config(Path::new("c.toml"), "").unwrap(),
        DaemonConfig::default()
    );
}

#[test]
fn mode_forms() {
    for (written, want) in [
        ("\"0660\"", 0o660),
        ("\"600\"", 0o600),
        ("0o644", 0o644),
        ("432", 0o660),
    ] {
        let text = format!("socket_mode = {written}\n");
        let config = parse_daemon_config(Path::new("c.toml"), &text).unwrap();
        assert_eq!(config.socket_mode, Some(want), "{written}");
    }
}

#[test]
fn unknown_setting_is_positioned() {
    let err = error("units_dir = \"/u\"\n\nshutdown_timout = \"3s\"\n");
    assert!(
        err.starts_with("corral.toml:3:1: unknown field `shutdown_timout`, expected one of"),
        "{err}"
    );
    let err = error("[http]\nenabled = true\nlisten_addr = \"x\"\n");
    assert!(
        err.starts_with("corral.toml:3:1: unknown field `listen_addr`"),
        "{err}"
    );
}

#[test]
fn wrong_types_are_positioned() {
    let err = error("max_connections = \"many\"\n");
    assert!(
        err.starts_with("corral.toml:1:19: invalid type: string \"many\""),
        "{err}"
    );
    let err = error("[http]\nenabled = \"yes\"\n");
    assert!(
        err.starts_with("corral.toml:2:11: invalid type: string \"yes\", expected a boolean"),
        "{err}"
    );
}

#[test]
fn durations_must_be_strings() {
    assert_eq!(
        error("shutdown_timeout = 30\n"),
        "corral.toml:1:20: expected a duration string like \"10s\" or \"500ms\", found an integer; write \"30s\" for seconds"
    );
    assert_eq!(
        error("daemon_grace = \"1 fortnight\"\n"),
        "corral.toml:1:16: unknown unit `fortnight` in `1 fortnight`; use one of: ns, us, ms, s, m, h, d"
    );
}

#[test]
fn bad_socket_modes() {
    assert_eq!(
        error("socket_mode = \"rw-rw----\"\n"),
        "corral.toml:1:15: invalid mode `rw-rw----`: expected octal digits like \"0660\""
    );
    assert_eq!(
        error("socket_mode = \"1777\"\n"),
        "corral.toml:1:15: file mode must be at most 0777, found 1777 (octal)"
    );
}

#[test]
fn every_syntax_error_is_reported() {
    let errors = parse_daemon_config(Path::new("c.toml"), "a = \nb = \"x\nc = 1\n").unwrap_err();
    assert!(errors.len() >= 2, "{errors}");
    assert!(
        errors.iter().all(|e| e.line >= 1 && e.column >= 1),
        "{errors}"
    );
    assert_eq!(errors.iter().next().unwrap().line, 1, "{errors}");
}

#[test]
fn missing_file() {
    let errors = load_daemon_config(Path::new("/nonexistent/corral.toml")).unwrap_err();
    assert!(
        errors
            .to_string()
            .starts_with("/nonexistent/corral.toml: cannot read config file:"),
        "{errors}"
    );
}
