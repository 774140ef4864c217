//! The dashboard in a real (headless) browser: units listed, a state change shown live.
//!
//! Needs Debian's `chromium` and `tests/browser/node_modules` (playwright-core); `scripts/test`
//! installs both. Without them the test says so and passes vacuously — run scripts/test.

use std::path::PathBuf;
use std::process::Command;

use corral_tests::{TestDaemon, bin, free_port};

#[test]
fn the_dashboard_shows_a_stop_without_a_reload() {
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
    d.unit("web", r#"command = ["sleep", "1000"]"#)
        .unit("other", r#"command = ["sleep", "1000"]"#);
    d.start();
    d.wait_state("web", "running");
    let shot = d.path("dashboard.png");
    let out = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg(bin("corralctl"))
        .arg(d.socket())
        .arg("web")
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "browser check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot saved");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    // Keep the picture where a person can look at it.
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::copy(&shot, &keep);
    eprintln!("screenshot: {}", keep.display());
}
