//! The dashboard in a real (headless) browser: a state change shown live, the charts, the
//! controls with a token, an instance's log followed live.
//!
//! Needs Debian's `chromium` and `tests/browser/node_modules` (playwright-core); `scripts/test`
//! installs both. Without them the test says so and passes vacuously — run scripts/test.

use std::path::PathBuf;
use std::process::Command;

use corral_tests::{TestDaemon, bin, free_port};

#[test]
fn the_dashboard_draws_charts_takes_controls_with_the_token_and_follows_a_log() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !PathBuf::from(&chromium).exists()
        || !browser_dir.join("node_modules/playwright-core").exists()
    {
        eprintln!(
            "skipped: needs {chromium} and tests/browser/node_modules (scripts/test installs them)"
        );
        return;
    }
    let mut d = TestDaemon::new();
    let port = free_port();
    d.http = format!("127.0.0.1:{port}");
    let token = "browser-test-token";
    let config = d.path("corral.toml");
    std::fs::write(&config, format!("[http]\ntoken = \"{token}\"\n")).unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    d.unit("web", r#"command = ["sleep", "1000"]"#).unit(
        "talker",
        r#"command = ["sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.3; done"]"#,
    );
    d.start();
    d.wait_state("web", "running");
    d.wait_state("talker", "running");
    let shots = d.path("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg(bin("corralctl"))
        .arg(d.socket())
        .arg(token)
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "browser check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Keep the pictures where a person can look at them.
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for name in ["dashboard.png", "unit.png", "log.png"] {
        let png = std::fs::read(shots.join(name)).expect("screenshot saved");
        assert!(png.starts_with(b"\x89PNG"), "{name} is not a PNG");
        let _ = std::fs::copy(shots.join(name), keep.join(name));
        eprintln!("screenshot: {}", keep.join(name).display());
    }
}
