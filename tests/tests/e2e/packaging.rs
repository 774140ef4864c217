//! Packaging (packaging/): the systemd units pass `systemd-analyze verify`,
//! `packaging/install.sh` installs a working corral, the man pages render, and the
//! completion scripts are valid. The .deb itself is checked by `scripts/check-deb`
//! (too slow for every test run).
//!
//! A test whose tool (systemd-analyze, man) is missing says so and passes, unless
//! CORRAL_REQUIRE_PACKAGING_TOOLS is set (as .ci/run does after installing them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_tests::{DEADLINE, bin, wait_for};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The directory holding the corrald and corralctl this test runs.
fn bin_dir() -> PathBuf {
    bin("corrald").parent().expect("bin dir").to_path_buf()
}

/// True if `tool` is on the PATH; otherwise says which test is skipped and why (or fails
/// the test when CORRAL_REQUIRE_PACKAGING_TOOLS is set).
fn have(tool: &str, test: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CORRAL_REQUIRE_PACKAGING_TOOLS").is_none(),
            "{test}: `{tool}` is missing (scripts/packaging-tools installs it)"
        );
        eprintln!(
            "SKIPPED {test}: `{tool}` is not installed (scripts/packaging-tools installs it)"
        );
    }
    found
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Runs packaging/install.sh with these variables and the test's binaries.
fn install(vars: &[(&str, &Path)]) {
    let mut cmd = Command::new(repo().join("packaging/install.sh"));
    cmd.arg("--bin-dir").arg(bin_dir());
    for var in [
        "DESTDIR",
        "PREFIX",
        "BINDIR",
        "SYSCONFDIR",
        "MANDIR",
        "DOCDIR",
        "GZIP_MAN",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run install.sh");
    assert!(out.status.success(), "install.sh failed: {}", show(&out));
}

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("corral-packaging-")
        .tempdir()
        .expect("temp dir")
}

/// Every file install.sh puts under DESTDIR with PREFIX=/usr (the .deb's layout, but
/// for its system unit directory, /lib/systemd/system there).
const INSTALLED: &[&str] = &[
    "usr/bin/corrald",
    "usr/bin/corralctl",
    "usr/lib/systemd/system/corrald.service",
    "usr/lib/systemd/user/corrald.service",
    "usr/lib/sysusers.d/corral.conf",
    "usr/lib/tmpfiles.d/corral.conf",
    "etc/corral/corral.toml",
    "etc/corral/units/README",
    "usr/share/man/man8/corrald.8",
    "usr/share/man/man1/corralctl.1",
    "usr/share/man/man5/corral.unit.5",
    "usr/share/bash-completion/completions/corralctl",
    "usr/share/bash-completion/completions/corrald",
    "usr/share/zsh/site-functions/_corralctl",
    "usr/share/zsh/site-functions/_corrald",
    "usr/share/fish/vendor_completions.d/corralctl.fish",
    "usr/share/fish/vendor_completions.d/corrald.fish",
    "usr/share/doc/corral/examples/README.md",
    "usr/share/doc/corral/examples/sample-unit.toml",
    "usr/share/doc/corral/examples/sample-pool.toml",
    "usr/share/doc/corral/examples/sample-task.toml",
    "usr/share/doc/corral/examples/square.py",
    "usr/share/doc/corral/examples/units/hello.toml",
    "usr/share/doc/corral/examples/units/background.toml",
];

/// `systemd-analyze verify` exits 0 even on an unknown key or a bad value, so a unit
/// passes only if nothing it printed names the unit file.
fn verify(unit: &Path, user: bool, tmp: &Path) -> Result<(), String> {
    let mut cmd = Command::new("systemd-analyze");
    if user {
        let runtime = tmp.join("run-user");
        std::fs::create_dir_all(&runtime).unwrap();
        cmd.arg("--user").env("XDG_RUNTIME_DIR", runtime);
    }
    // Documentation=man:... is checked against the installed man pages.
    cmd.arg("verify")
        .arg(unit)
        .env("MANPATH", tmp.join("usr/share/man"))
        .env("SYSTEMD_LOG_COLOR", "0");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run systemd-analyze");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    if !out.status.success() || all.lines().any(|l| l.contains(&name)) {
        return Err(format!("{}: {}", unit.display(), show(&out)));
    }
    Ok(())
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let test = "unit_files_pass_systemd_analyze_verify";
    if !have("systemd-analyze", test) || !have("man", test) {
        return;
    }
    // Installed under a PREFIX (not DESTDIR), so ExecStart names a binary that exists.
    let tmp = temp();
    let prefix = tmp.path().join("usr");
    install(&[("PREFIX", &prefix), ("SYSCONFDIR", &tmp.path().join("etc"))]);
    let system = prefix.join("lib/systemd/system/corrald.service");
    let user = prefix.join("lib/systemd/user/corrald.service");
    let unit = std::fs::read_to_string(&system).unwrap();
    let exec = format!("ExecStart={}/bin/corrald\n", prefix.display());
    assert!(
        unit.contains(&exec),
        "install.sh must point ExecStart at PREFIX:\n{unit}"
    );
    let reload = format!("ExecReload={}/bin/corralctl reload\n", prefix.display());
    for needed in [
        "KillMode=process",
        "TimeoutStopSec=",
        reload.as_str(),
        "Restart=on-failure",
        "OOMPolicy=continue",
        "LockPersonality=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectHostname=yes",
        "ProtectClock=yes",
        "RestrictSUIDSGID=yes",
    ] {
        assert!(unit.contains(needed), "corrald.service lacks {needed}");
    }
    let user_unit = std::fs::read_to_string(&user).unwrap();
    assert!(user_unit.contains(" --user"), "{user_unit}");
    verify(&system, false, tmp.path()).unwrap();
    verify(&user, true, tmp.path()).unwrap();

    // The check is not vacuous: a unit with a bad value fails it.
    let bad = tmp.path().join("corrald.service");
    std::fs::write(&bad, unit.replace("KillMode=process", "KillMode=bogus")).unwrap();
    assert!(verify(&bad, false, tmp.path()).is_err());
}

/// A corrald started from an installed tree; SIGKILLed if the test fails before it has
/// shut it down.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn install_sh_installs_a_corral_that_runs_from_its_default_config() {
    let tmp = temp();
    let root = tmp.path();
    install(&[("DESTDIR", root), ("PREFIX", Path::new("/usr"))]);
    let missing: Vec<_> = INSTALLED
        .iter()
        .filter(|p| !root.join(p).is_file())
        .collect();
    assert!(missing.is_empty(), "install.sh did not install {missing:?}");
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/corrald.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/corrald\n"), "{unit}");
    let readme = std::fs::read_to_string(root.join("etc/corral/units/README")).unwrap();
    assert!(
        readme.contains("/usr/share/doc/corral/examples/"),
        "{readme}"
    );

    // The installed default config, with its paths moved into the temp dir.
    let config_path = root.join("etc/corral/corral.toml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    assert!(config.contains("\nsocket_group = \"corral\"\n"), "{config}");
    let socket = root.join("run/corral/corral.sock");
    let state = root.join("var/lib/corral");
    let logs = root.join("var/log/corral");
    let units = root.join("etc/corral/units");
    for (line, new) in [
        (
            "#units_dir = \"/etc/corral/units\"",
            format!("units_dir = \"{}\"", units.display()),
        ),
        (
            "#state_dir = \"/var/lib/corral\"",
            format!("state_dir = \"{}\"", state.display()),
        ),
        (
            "#socket = \"/run/corral/corral.sock\"",
            format!("socket = \"{}\"", socket.display()),
        ),
        (
            "#log_dir = \"/var/log/corral\"",
            format!("log_dir = \"{}\"", logs.display()),
        ),
        ("#enabled = true", "enabled = false".to_string()),
    ] {
        assert!(config.contains(line), "the default config has no `{line}`");
        config = config.replace(line, &new);
    }
    std::fs::write(&config_path, config).unwrap();
    // An installed example in the units directory, beside its README.
    std::fs::copy(
        root.join("usr/share/doc/corral/examples/units/hello.toml"),
        units.join("hello.toml"),
    )
    .unwrap();

    let corrald = root.join("usr/bin/corrald");
    let corralctl = root.join("usr/bin/corralctl");
    // Every installed example passes --check.
    let check = Command::new(&corrald)
        .arg("--config")
        .arg(&config_path)
        .arg("--units")
        .arg(root.join("usr/share/doc/corral/examples/units"))
        .arg("--check")
        .env_remove("CORRAL_SOCKET")
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", show(&check));

    let child = Command::new(&corrald)
        .arg("--config")
        .arg(&config_path)
        .env_remove("CORRAL_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the installed corrald");
    let mut running = Running(child);
    let ctl = |args: &[&str]| {
        Command::new(&corralctl)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env_remove("CORRAL_SOCKET")
            .stdin(Stdio::null())
            .output()
            .expect("run the installed corralctl")
    };
    let status = wait_for("the installed corralctl status to answer", || {
        if let Ok(Some(exit)) = running.0.try_wait() {
            let mut err = String::new();
            use std::io::Read as _;
            let _ = running.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the installed corrald exited ({exit}):\n{err}");
        }
        let out = ctl(&["status"]);
        out.status.success().then(|| text(&out.stdout))
    });
    assert!(status.contains("hello"), "{status}");
    assert!(
        state.join("state.db").exists(),
        "no state.db in {}",
        state.display()
    );

    let out = ctl(&["start", "hello"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = ctl(&["wait", "hello"]);
    assert!(out.status.success(), "{}", show(&out));
    let log = std::fs::read_to_string(logs.join("hello.0.log")).unwrap();
    assert!(log.contains("Hello from process!"), "{log}");

    let out = ctl(&["shutdown"]);
    assert!(out.status.success(), "{}", show(&out));
    let start = Instant::now();
    let exit = loop {
        if let Some(exit) = running.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "corrald did not exit after shutdown"
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    assert!(exit.success(), "corrald exited with {exit}");
}

#[test]
fn installed_man_pages_render() {
    let test = "installed_man_pages_render";
    if !have("man", test) {
        return;
    }
    let tmp = temp();
    install(&[("DESTDIR", tmp.path()), ("PREFIX", Path::new("/usr"))]);
    for (page, wanted) in [
        (
            "man8/corrald.8",
            &["SYNOPSIS", "--units", "FILES", "SIGNALS", "SIGHUP"][..],
        ),
        (
            "man1/corralctl.1",
            &[
                "COMMANDS",
                "corralctl queue put",
                "--timeout",
                "EXIT STATUS",
            ][..],
        ),
        (
            "man5/corral.unit.5",
            &["KEYS", "stop_timeout", "restart_delay_max", "POOLS"][..],
        ),
    ] {
        let path = tmp.path().join("usr/share/man").join(page);
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "100")
            .env_remove("MAN_KEEP_FORMATTING")
            .env_remove("MANPAGER")
            .env_remove("PAGER")
            .stdin(Stdio::null())
            .output()
            .expect("run man");
        assert!(out.status.success(), "{page}: {}", show(&out));
        assert!(
            out.stderr.is_empty(),
            "{page} has roff warnings: {}",
            show(&out)
        );
        let rendered = text(&out.stdout);
        for w in wanted {
            assert!(rendered.contains(w), "{page} lacks `{w}`:\n{rendered}");
        }
    }
}

#[test]
fn completions_print_a_script_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _corralctl"),
        ("zsh", "#compdef corralctl"),
        ("fish", "complete -c corralctl"),
    ] {
        // No corrald is needed: a socket that does not exist does not matter.
        let out = Command::new(bin("corralctl"))
            .args(["--socket", "/nonexistent/corral.sock", "completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {}", show(&out));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell} script lacks `{marker}`");
        // Subcommands and their options are completed.
        assert!(
            script.contains("shutdown") && script.contains("no-wait"),
            "{shell}"
        );
        // The script parses, where the shell is here (bash always is).
        let checker = if shell == "fish" {
            "--no-execute"
        } else {
            "-n"
        };
        let have_shell = Command::new("sh")
            .args(["-c", &format!("command -v {shell}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if have_shell {
            let tmp = temp();
            let file = tmp.path().join("script");
            std::fs::write(&file, &script).unwrap();
            let check = Command::new(shell)
                .arg(checker)
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "{shell} {checker}: {}",
                show(&check)
            );
        } else {
            assert_ne!(shell, "bash", "bash is missing");
            eprintln!("completions: {shell} is not installed; its script's syntax is not checked");
        }

        let out = Command::new(bin("corrald"))
            .args(["--completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "corrald {shell}: {}", show(&out));
        assert!(text(&out.stdout).contains("corrald"), "corrald {shell}");
    }
    let out = Command::new(bin("corralctl"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
}

#[test]
fn maintainer_scripts_are_sh_and_spare_systems_without_systemd() {
    let dir = repo().join("packaging/debian");
    for script in ["postinst", "prerm", "postrm"] {
        let path = dir.join(script);
        let out = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(out.status.success(), "{script}: {}", show(&out));
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(body.starts_with("#!/bin/sh\n"), "{script}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        // Every call that needs a running systemd is guarded.
        for line in body.lines().map(str::trim) {
            for call in [
                "systemctl start",
                "systemctl stop",
                "systemctl daemon-reload",
            ] {
                if line.starts_with(call) {
                    assert!(
                        body.contains("if [ -d /run/systemd/system ]"),
                        "{script}: `{line}` is not guarded"
                    );
                }
            }
        }
    }
}

/// The commands README.md gives for reading the man pages and loading the completions
/// from a checkout, as they are written there (with this test's binaries).
fn readme_checkout_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let (_, after) = readme
        .split_once("From a checkout, without installing")
        .expect("README says how to read the man pages from a checkout");
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("a sh block");
    let bins = format!("{}/", bin_dir().display());
    block
        .lines()
        .map(|l| {
            l.split_once("    #")
                .map_or(l, |(command, _)| command)
                .trim()
        })
        .filter(|l| !l.is_empty())
        .map(|l| l.replace("target/debug/", &bins))
        .collect()
}

#[test]
fn man_pages_and_completions_read_from_a_checkout_as_the_readme_says() {
    let test = "man_pages_and_completions_read_from_a_checkout_as_the_readme_says";
    let commands = readme_checkout_commands();
    let pages: Vec<&String> = commands
        .iter()
        .filter(|c| c.starts_with("man -l"))
        .collect();
    assert_eq!(pages.len(), 3, "{commands:?}");
    let completion = commands
        .iter()
        .find(|c| c.starts_with("source <("))
        .expect("a completion command");
    // bash runs the lines as a user pastes them.
    let run = |script: &str| {
        Command::new("bash")
            .args(["-c", script])
            .current_dir(repo())
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run(&format!("{completion}\ncomplete -p corralctl"));
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("-F _corralctl corralctl"),
        "{}",
        show(&out)
    );
    if !have("man", test) {
        return;
    }
    for (page, name) in pages.iter().zip(["corralctl", "corrald", "corral.unit"]) {
        let out = run(page);
        assert!(out.status.success(), "{page}: {}", show(&out));
        let shown = text(&out.stdout);
        assert!(
            shown.contains("NAME") && shown.contains(name),
            "{page}: {shown}"
        );
        assert!(
            !text(&out.stderr).to_lowercase().contains("warning"),
            "{page}: {}",
            show(&out)
        );
    }
}
