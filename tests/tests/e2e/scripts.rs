//! The project's scripts: `--help` prints and does nothing else.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Runs `scripts/NAME --help` with a PATH whose package managers and build tools are
/// stand-ins that record being called, and whose peers (redis-server, supervisord,
/// chromium, ...) are absent, so a script that would install or build calls one.
fn help_of(name: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let shims = dir.path().join("bin");
    std::fs::create_dir(&shims).unwrap();
    let calls = dir.path().join("calls");
    for tool in ["apt-get", "cargo", "pip", "npm", "python3", "pyenv"] {
        let path = shims.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {}\nexit 1\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // bash, cat, dirname and id from /bin and /usr/bin; nothing else on PATH.
    let path = format!("{}:/usr/bin:/bin", shims.display());
    let out = Command::new("bash")
        .arg(repo_root().join("scripts").join(name))
        .arg("--help")
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/{name} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    (
        String::from_utf8(out.stdout).unwrap(),
        calls.lines().map(String::from).collect(),
    )
}

#[test]
fn scripts_help_installs_and_builds_nothing() {
    for script in ["bench", "test", "stress", "systemd-root"] {
        let (usage, calls) = help_of(script);
        assert!(usage.starts_with("Usage: scripts/"), "{script}: {usage}");
        assert!(calls.is_empty(), "scripts/{script} --help ran {calls:?}");
    }
}
