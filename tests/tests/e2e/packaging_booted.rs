//! The .deb under a real systemd. A minimal Debian of this machine's release
//! (`scripts/systemd-root`, cached in /var/cache/corral-tests) is copied to a temp dir and
//! booted with `systemd-nspawn --boot` in PID, mount, UTS, IPC and network namespaces of
//! its own, never over the machine's root. The project's .deb (`scripts/check-deb` builds
//! it) is installed in it with dpkg, and the promises of corrald.service are checked with
//! systemctl, journalctl and corralctl as an administrator would, each an assertion.
//! The booted system is ended by SIGKILL to its PID 1 (from outside its PID namespace that
//! ends everything inside), and the test checks that nothing it mounted is left.
//!
//! Skipped with a message when not root, when systemd-nspawn or debootstrap is missing, or
//! when the .deb is missing or older than the corrald this test run built, unless
//! CORRAL_REQUIRE_PACKAGING_TOOLS is set (as .ci/run does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_tests::wait_for;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
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

/// Says why the test is skipped, or fails it when CORRAL_REQUIRE_PACKAGING_TOOLS is set.
fn skip(why: &str) {
    assert!(
        std::env::var_os("CORRAL_REQUIRE_PACKAGING_TOOLS").is_none(),
        "the .deb under a booted systemd: {why}"
    );
    eprintln!("SKIPPED the .deb under a booted systemd: {why}");
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The .deb to install: $CORRAL_DEB, else the one `scripts/check-deb` left in target/debian.
fn find_deb() -> Option<PathBuf> {
    if let Some(deb) = std::env::var_os("CORRAL_DEB") {
        return Some(PathBuf::from(deb));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    std::fs::read_dir(target.join("debian"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("corral_"))
                && p.extension().is_some_and(|e| e == "deb")
        })
}

/// A Debian booted under systemd-nspawn, with its own copy of the cached root.
struct Machine {
    nspawn: Child,
    /// The machine's PID 1 (systemd), as this machine's pid namespace numbers it.
    leader: i32,
    dir: tempfile::TempDir,
    name: String,
}

impl Machine {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn boot(base: &Path) -> Machine {
        let dir = tempfile::Builder::new()
            .prefix("corral-booted-")
            .tempdir_in("/var/tmp")
            .expect("temp dir");
        let root = dir.path().join("root");
        let copy = Command::new("cp")
            .arg("-a")
            .arg(base)
            .arg(&root)
            .output()
            .expect("cp");
        assert!(copy.status.success(), "copying the root: {}", show(&copy));
        let name = format!("corral-test-{}", std::process::id());
        let console = std::fs::File::create(dir.path().join("console.log")).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--quiet",
                // No machined or D-Bus on the host to register with or to make a scope.
                "--keep-unit",
                "--register=no",
                // corrald's HTTP port and anything else inside stay off the host's network.
                "--private-network",
                "--console=read-only",
                "--boot",
            ])
            .arg(format!("--machine={name}"))
            .arg("--directory")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("start systemd-nspawn");
        let mut machine = Machine {
            leader: 0,
            nspawn,
            dir,
            name,
        };
        let nspawn_pid = machine.nspawn.id();
        machine.leader = wait_for("systemd-nspawn to start the machine's systemd", || {
            if let Ok(Some(status)) = machine.nspawn.try_wait() {
                panic!("systemd-nspawn exited ({status}): {}", machine.console());
            }
            let children =
                std::fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children"))
                    .ok()?;
            let pid: i32 = children.split_whitespace().next()?.parse().ok()?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            exe.to_string_lossy().ends_with("/systemd").then_some(pid)
        });
        machine.wait(
            "the machine's systemd to listen",
            "test -S /run/systemd/private",
        );
        let state = machine.sh("timeout 240 systemctl is-system-running --wait");
        let state = text(&state.stdout);
        assert!(
            ["running", "degraded"].contains(&state.trim()),
            "the machine did not finish booting: {state}\n{}\n{}",
            text(&machine.sh("systemctl --failed --no-pager").stdout),
            machine.console()
        );
        machine
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Runs `script` with sh inside the machine (all of its namespaces, its root), as root.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg("--target")
            .arg(self.leader.to_string())
            .args(["--all", "--root", "--wd", "--"])
            .args([
                "/usr/bin/env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
            ])
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// `sh`, which must succeed; its stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the machine: {script}\n{}",
            show(&out)
        );
        text(&out.stdout)
    }

    /// Polls `script` until it succeeds (deadline: wait_for's); its stdout.
    fn wait(&self, what: &str, script: &str) -> String {
        wait_for(what, || {
            let out = self.sh(script);
            out.status.success().then(|| text(&out.stdout))
        })
    }

    /// `systemctl show -p PROPERTY --value corrald`.
    fn prop(&self, property: &str) -> String {
        self.ok(&format!("systemctl show -p {property} --value corrald"))
            .trim()
            .to_owned()
    }

    /// The pid of `unit`'s first instance while it is running.
    fn running_pid(&self, unit: &str) -> Option<u64> {
        let out = self.sh(&format!("corralctl --json status {unit}"));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let instance = &status["units"][0]["instances"][0];
        (instance["state"] == "running").then(|| instance["pid"].as_u64())?
    }

    /// Waits until `unit` runs with a pid other than `not`; that pid.
    fn wait_running(&self, unit: &str, not: Option<u64>) -> u64 {
        wait_for(&format!("{unit} to run (not as {not:?})"), || {
            self.running_pid(unit).filter(|pid| Some(*pid) != not)
        })
    }

    /// The pid of each instance of the test's units, from `corralctl status --json`.
    fn pids(&self) -> serde_json::Map<String, serde_json::Value> {
        let status: serde_json::Value =
            serde_json::from_str(&self.ok("corralctl --json status")).expect("status JSON");
        let mut pids = serde_json::Map::new();
        for unit in status["units"].as_array().into_iter().flatten() {
            if let Some(pid) = unit["instances"][0]["pid"].as_u64() {
                pids.insert(unit["name"].as_str().unwrap_or("").to_owned(), pid.into());
            }
        }
        pids
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGKILL to PID 1 of the machine's PID namespace ends every process in it.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.leader),
            nix::sys::signal::Signal::SIGKILL,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.nspawn.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.nspawn.try_wait().ok().flatten().is_none() {
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        // nspawn leaves its (empty) mount-propagation directory when /run is not a tmpfs.
        let _ = std::fs::remove_dir_all(format!("/run/systemd/nspawn/propagate/{}", self.name));
        let root = self.root();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let left: Vec<&str> = mounts
            .lines()
            .filter(|l| l.contains(&*root.to_string_lossy()))
            .collect();
        if !std::thread::panicking() {
            assert!(left.is_empty(), "mounts left behind: {left:?}");
        }
    }
}

/// A unit whose process writes `mark` to /root/order when it gets SIGTERM.
fn traps(mark: &str, extra: &str) -> String {
    format!(
        "command = [\"/bin/sh\", \"-c\", \"trap 'echo {mark} >> /root/order; exit 0' TERM; while :; do sleep 0.2; done\", \"corral-booted-test\"]\n{extra}"
    )
}

#[test]
fn the_deb_under_a_booted_systemd_keeps_the_units_promises() {
    if !nix::unistd::geteuid().is_root() {
        return skip("it needs root (debootstrap, systemd-nspawn)");
    }
    for tool in ["systemd-nspawn", "debootstrap", "nsenter"] {
        if !on_path(tool) {
            return skip(&format!(
                "`{tool}` is missing (scripts/packaging-tools installs it)"
            ));
        }
    }
    let Some(deb) = find_deb() else {
        return skip("no .deb in target/debian: run scripts/check-deb first (or set CORRAL_DEB)");
    };
    // A .deb older than the corrald this test run built may not hold the code under test.
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if std::env::var_os("CORRAL_DEB").is_none()
        && modified(&deb) < modified(&corral_tests::bin("corrald"))
    {
        return skip(&format!(
            "{} is older than target's corrald: run scripts/check-deb first",
            deb.display()
        ));
    }
    let made = Command::new(repo().join("scripts/systemd-root"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/systemd-root");
    assert!(
        made.status.success(),
        "scripts/systemd-root: {}",
        show(&made)
    );
    let base = PathBuf::from(text(&made.stdout).trim());
    eprintln!("booting {} with {}", base.display(), deb.display());
    let m = Machine::boot(&base);
    let root = m.root();

    // Units and a drop-in written before the package, as an administrator might:
    // ExecStartPost runs once systemd counts corrald as started (READY=1 for Type=notify),
    // and records whether the socket answers then, at the first try.
    std::fs::copy(&deb, root.join("root/corral.deb")).unwrap();
    let units = root.join("etc/corral/units");
    std::fs::create_dir_all(&units).unwrap();
    let unit =
        |name: &str, text: &str| std::fs::write(units.join(format!("{name}.toml")), text).unwrap();
    unit("db", &traps("db-term", ""));
    unit(
        "web",
        &traps("web-term", "after = [\"db\"]\nrequires = [\"db\"]\n"),
    );
    unit("helper", &traps("helper-term", "daemon = true\n"));
    unit(
        "job",
        "kind = \"task\"\nautostart = false\ncommand = [\"/bin/sh\", \"-c\", \"sleep 3; echo job-done >> /root/order\", \"corral-booted-test\"]\n",
    );
    let dropin = root.join("etc/systemd/system/corrald.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("test.conf"),
        "[Service]\n\
         ExecStartPost=/bin/sh -c '/usr/bin/corralctl status >/run/ready-check 2>&1; echo \"exit $?\" >>/run/ready-check'\n\
         WatchdogSec=4s\n\
         TimeoutAbortSec=5s\n",
    )
    .unwrap();

    // Install: postinst makes the group and directories, enables and starts corrald.
    m.ok("dpkg -i /root/corral.deb");
    assert_eq!(m.ok("getent group corral | cut -d: -f1").trim(), "corral");
    assert_eq!(
        m.ok("stat -c '%a %U %G' /run/corral").trim(),
        "750 root corral"
    );
    assert_eq!(
        m.ok("stat -c '%a %U %G' /run/corral/corral.sock").trim(),
        "660 root corral"
    );
    m.ok("test -d /var/lib/corral && test -d /var/log/corral");
    assert_eq!(m.ok("systemctl is-enabled corrald").trim(), "enabled");

    // Active only after READY=1, and then the socket answers.
    assert_eq!(m.prop("ActiveState"), "active");
    assert_eq!(m.prop("Type"), "notify");
    let ready = m.ok("cat /run/ready-check");
    assert!(
        ready.ends_with("exit 0\n") && ready.contains("db"),
        "{ready}"
    );
    let started: u64 = m.prop("ExecMainStartTimestampMonotonic").parse().unwrap();
    let active: u64 = m.prop("ActiveEnterTimestampMonotonic").parse().unwrap();
    assert!(started < active, "started {started}, active {active}");
    assert!(
        m.prop("StatusText")
            .contains("serving /run/corral/corral.sock with 4 unit(s)"),
        "{}",
        m.prop("StatusText")
    );

    // The journal has corrald's lines once, with the journal's timestamp only.
    let journal = m.ok("journalctl -u corrald -o cat --no-pager");
    assert!(journal.contains("corrald ready"), "{journal}");
    let stamped = |l: &str| {
        l.len() > 10
            && l.as_bytes()[4] == b'-'
            && l.as_bytes()[7] == b'-'
            && l[..4].bytes().all(|b| b.is_ascii_digit())
    };
    assert!(
        !journal.lines().any(|l| stamped(l.trim_start())),
        "a line carries a timestamp of its own: {journal}"
    );

    // The socket: a member of corral may use it, another user may not. A member who runs
    // no corrald of their own reaches the system one with plain corralctl.
    m.ok("useradd -m -G corral alice && useradd -m bob");
    let system = "CORRAL_SOCKET=/run/corral/corral.sock corralctl status";
    assert!(
        m.ok(&format!("runuser -u alice -- env {system}"))
            .contains("web")
    );
    assert!(
        m.ok("runuser -u alice -- env -u CORRAL_SOCKET -u XDG_RUNTIME_DIR corralctl status")
            .contains("web"),
        "plain corralctl of a member reaches the system corrald"
    );
    let bob = m.sh(&format!("runuser -u bob -- env {system}"));
    assert!(
        !bob.status.success(),
        "bob is not in corral: {}",
        show(&bob)
    );
    assert!(
        text(&bob.stderr).contains("ermission denied"),
        "{}",
        show(&bob)
    );

    // systemctl reload applies a changed file, and fails on a bad one, changing nothing.
    let web = m.pids()["web"].clone();
    unit(
        "web",
        &traps(
            "web-term",
            "after = [\"db\"]\nrequires = [\"db\"]\nenv = { CHANGED = \"1\" }\n",
        ),
    );
    m.ok("systemctl reload corrald");
    m.wait_running("web", web.as_u64());
    unit("broken", "comand = [\"true\"]\n");
    let bad = m.sh("systemctl reload corrald");
    assert!(
        !bad.status.success(),
        "a bad file must fail the reload: {}",
        show(&bad)
    );
    let journal = m.ok("journalctl -u corrald -o cat --no-pager");
    assert!(journal.contains("broken.toml:1:1"), "{journal}");
    assert_eq!(m.prop("ActiveState"), "active");

    // systemctl stop: daemon units first, tasks joined, then services in reverse order,
    // within TimeoutStopSec (Result=success, not timeout); nothing of ours is left.
    std::fs::remove_file(units.join("broken.toml")).unwrap();
    m.ok("corralctl start --no-wait job && rm -f /root/order");
    m.wait_running("job", None);
    m.ok("systemctl stop corrald");
    assert_eq!(m.prop("Result"), "success");
    assert_eq!(m.prop("ActiveState"), "inactive");
    let order = m.ok("cat /root/order");
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["helper-term", "job-done", "web-term", "db-term"],
        "{order}"
    );
    assert_eq!(m.ok("pgrep -fc '[c]orral-booted-test' || true").trim(), "0");

    // A bad unit file at start: corrald starts the others and says so in STATUS=.
    unit("broken", "comand = [\"true\"]\n");
    m.ok("systemctl start corrald");
    assert!(
        m.prop("StatusText").contains("1 unit file(s) NOT LOADED"),
        "{}",
        m.prop("StatusText")
    );
    let status = m.ok("corralctl status");
    assert!(
        status.contains("not-loaded") && status.contains("broken.toml:1:1"),
        "{status}"
    );
    std::fs::remove_file(units.join("broken.toml")).unwrap();
    m.ok("systemctl reload corrald");
    // STATUS= is sent before the reload is answered; systemd reads it on its own schedule.
    m.wait(
        "StatusText to drop NOT LOADED",
        "systemctl show -p StatusText --value corrald | grep -q 'with 4 unit(s)$'",
    );
    for unit in ["db", "web", "helper"] {
        m.wait_running(unit, None);
    }

    // A crash of corrald alone (`systemctl kill --kill-whom=main`, like kill -9 or the OOM
    // killer): KillMode=process leaves the rest of the cgroup alone, Restart=on-failure
    // starts corrald again; the daemon unit died with corrald, the services were adopted.
    let before = m.pids();
    let restarts: u32 = m.prop("NRestarts").parse().unwrap();
    m.ok("systemctl kill --kill-whom=main -s KILL corrald");
    m.wait(
        "systemd to start corrald again",
        &format!("test \"$(systemctl show -p NRestarts --value corrald)\" -gt {restarts} && systemctl is-active corrald && corralctl status"),
    );
    m.ok("systemctl start corrald");
    let after = m.pids();
    for service in ["db", "web"] {
        assert_eq!(
            after[service], before[service],
            "{service} was not adopted: {after:?}"
        );
    }
    let helper = before["helper"].as_u64().unwrap();
    assert!(
        !m.sh(&format!("kill -0 {helper}")).status.success(),
        "the daemon unit outlived corrald"
    );
    assert!(
        m.ok("journalctl -u corrald -o cat --no-pager")
            .contains("adopted: [")
    );

    // `systemctl kill -s KILL corrald` as typed (--kill-whom=all, its default) signals every
    // process of the cgroup, KillMode notwithstanding: the services die too, and the new
    // corrald finds them dead and starts them again by their restart policy.
    let before = m.pids();
    let restarts: u32 = m.prop("NRestarts").parse().unwrap();
    m.ok("systemctl kill -s KILL corrald");
    m.wait(
        "systemd to start corrald again",
        &format!("test \"$(systemctl show -p NRestarts --value corrald)\" -gt {restarts} && systemctl is-active corrald && corralctl status"),
    );
    m.ok("systemctl start corrald");
    for service in ["db", "web"] {
        let pid = before[service].as_u64().unwrap();
        assert!(
            !m.sh(&format!("kill -0 {pid}")).status.success(),
            "{service} survived a kill of the whole cgroup"
        );
    }
    for service in ["db", "web"] {
        m.wait_running(service, before[service].as_u64());
    }

    // WatchdogSec: a corrald that stops answering (SIGSTOP) is killed and started again,
    // and the services are adopted by the new one.
    let before = m.pids();
    let main_pid = m.prop("MainPID");
    assert!(m.prop("WatchdogUSec") != "0", "the watchdog is not on");
    m.ok(&format!("kill -STOP {main_pid}"));
    m.wait(
        "the watchdog to restart corrald",
        &format!("test \"$(systemctl show -p MainPID --value corrald)\" != {main_pid} && systemctl is-active corrald && corralctl status"),
    );
    let journal = m.ok("journalctl -u corrald --no-pager");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    let after = m.pids();
    for service in ["db", "web"] {
        assert_eq!(
            after[service], before[service],
            "{service} was not adopted: {after:?}"
        );
    }

    // The per-user unit, for a normal user with lingering on (no login needed).
    m.ok("useradd -m carol && loginctl enable-linger carol");
    let uid = m.ok("id -u carol").trim().to_owned();
    let as_carol = format!("runuser -u carol -- env XDG_RUNTIME_DIR=/run/user/{uid}");
    m.wait(
        "carol's systemd --user",
        &format!("test -S /run/user/{uid}/systemd/private"),
    );
    let enabled = m.sh(&format!("{as_carol} systemctl --user enable --now corrald"));
    assert!(
        enabled.status.success(),
        "{}\n{}",
        show(&enabled),
        text(&m.sh(&format!("journalctl --no-pager _UID={uid}")).stdout)
    );
    assert_eq!(
        m.ok(&format!("{as_carol} systemctl --user is-active corrald"))
            .trim(),
        "active"
    );
    m.ok(&format!("{as_carol} corralctl status"));
    assert_eq!(
        m.ok(&format!("stat -c %U /run/user/{uid}/corral.sock"))
            .trim(),
        "carol"
    );
    m.ok(&format!(
        "{as_carol} systemctl --user disable --now corrald"
    ));

    // dpkg --purge leaves no unit, user or directory (the unit files and the drop-in the
    // administrator added are theirs to remove, and are removed first).
    m.ok("rm -f /etc/corral/units/*.toml && rm -r /etc/systemd/system/corrald.service.d && systemctl daemon-reload");
    m.ok("dpkg --purge corral");
    for path in [
        "/lib/systemd/system/corrald.service",
        "/usr/lib/systemd/system/corrald.service",
        "/usr/lib/systemd/user/corrald.service",
        "/etc/systemd/system/multi-user.target.wants/corrald.service",
        "/etc/corral",
        "/var/lib/corral",
        "/var/log/corral",
        "/run/corral",
        "/usr/bin/corrald",
    ] {
        assert!(
            !m.sh(&format!("test -e {path}")).status.success(),
            "{path} left after purge"
        );
    }
    assert_eq!(
        m.ok("find /etc/systemd /home -name 'corrald*' | wc -l")
            .trim(),
        "0"
    );
    assert!(
        !m.sh("getent passwd corral").status.success(),
        "a corral user is left"
    );
    assert_eq!(m.ok("pgrep -xc corrald || true").trim(), "0");
    assert_eq!(
        m.ok("systemctl list-unit-files 'corrald*' --no-legend | wc -l")
            .trim(),
        "0"
    );
}
