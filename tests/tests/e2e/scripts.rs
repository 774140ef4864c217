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

/// Runs `DIR/NAME --help` (DIR: `scripts` or `bench`) with a PATH whose package managers and build tools are
/// stand-ins that record being called, and whose peers (redis-server, supervisord,
/// chromium, ...) are absent, so a script that would install or build calls one.
fn help_of(folder: &str, name: &str) -> (String, Vec<String>) {
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
    let script = repo_root().join(folder).join(name);
    let first = std::fs::read_to_string(&script).unwrap();
    // A Python script runs on the machine's python3 (the stand-in is for scripts that
    // would call it to install something).
    let interpreter = if first.starts_with("#!/usr/bin/env python3") {
        "/usr/bin/python3"
    } else {
        "bash"
    };
    let out = Command::new(interpreter)
        .arg(&script)
        .arg("--help")
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{folder}/{name} --help: {}",
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
    // Every script in scripts/ (not its lib/), so a new one is checked too.
    let mut scripts: Vec<String> = std::fs::read_dir(repo_root().join("scripts"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.file_name().into_string().unwrap())
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 8, "{scripts:?}");
    for script in &scripts {
        let (usage, calls) = help_of("scripts", script);
        assert!(usage.starts_with("Usage: scripts/"), "{script}: {usage}");
        assert!(calls.is_empty(), "scripts/{script} --help ran {calls:?}");
    }
}

#[test]
fn bench_scripts_help_prints_usage_and_starts_nothing() {
    // The executable files of bench/ (callgrind, schedwait): without --help they start a
    // corrald and drive it, so --help must stop before that.
    let mut scripts: Vec<String> = std::fs::read_dir(repo_root().join("bench"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| {
            let meta = entry.metadata().unwrap();
            meta.is_file() && meta.permissions().mode() & 0o111 != 0
        })
        .map(|entry| entry.file_name().into_string().unwrap())
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 2, "{scripts:?}");
    for script in &scripts {
        let (usage, calls) = help_of("bench", script);
        assert!(
            usage.starts_with(&format!("Usage: bench/{script}")),
            "{script}: {usage}"
        );
        assert!(calls.is_empty(), "bench/{script} --help ran {calls:?}");
    }
}
