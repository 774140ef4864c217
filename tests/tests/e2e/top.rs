//! `corralctl top`: one frame with --once, and the live view in a tmux pane (refreshing,
//! q to quit).

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_tests::{TestDaemon, bin, wait_for};

fn daemon() -> TestDaemon {
    let mut d = TestDaemon::new();
    d.unit("web", "command = [\"sleep\", \"1000\"]\ninstances = 2")
        .unit("broken", "command = [\"false\"]\nrestart = \"no\"");
    d.start();
    d.wait_state("web", "running");
    d.ctl_ok(&["queue", "put", "jobs", "1"]);
    d.ctl_ok(&["queue", "put", "jobs", "2"]);
    d.ctl_ok(&["queue", "put", "jobs", "3"]);
    d.ctl_ok(&[
        "pool", "map", "--detach", "-j", "1", "--name", "slow", "--", "sleep", "30", ":::", "1",
        "2",
    ]);
    d
}

/// The first line of `screen` (split in words, table borders dropped) with `word` at
/// position `at`.
fn row_at<'a>(screen: &'a str, at: usize, word: &str) -> Option<Vec<&'a str>> {
    screen.lines().find_map(|l| {
        let words: Vec<&str> = l
            .split(|c: char| c.is_whitespace() || c == '│')
            .filter(|w| !w.is_empty())
            .collect();
        (words.get(at) == Some(&word)).then_some(words)
    })
}

/// The line that starts with `first`.
fn row<'a>(screen: &'a str, first: &str) -> Option<Vec<&'a str>> {
    row_at(screen, 0, first)
}

#[test]
fn once_prints_units_queues_and_pool_jobs_as_text() {
    let d = daemon();
    // web's two instances and the pool job's item (its process runs as unit pool-1).
    let frame = wait_for("three of four instances running in the frame", || {
        let frame = d.ctl_ok(&["top", "--once"]);
        frame.contains("3/4 instances running").then_some(frame)
    });
    assert!(!frame.contains('\x1b'), "escape codes in --once:\n{frame}");
    let web = row(&frame, "web").unwrap_or_else(|| panic!("no web row:\n{frame}"));
    assert_eq!(&web[1..3], ["0", "running"], "{frame}");
    // The second instance's row has no unit name: it starts with its number.
    assert!(
        row_at(&frame, 1, "running").is_some_and(|r| r[0] == "1"),
        "{frame}"
    );
    assert!(row(&frame, "broken").is_some(), "{frame}");
    let jobs = row(&frame, "jobs").unwrap_or_else(|| panic!("no queue row:\n{frame}"));
    assert_eq!(jobs[1], "3", "depth: {frame}");
    let slow = row_at(&frame, 1, "slow").unwrap();
    assert_eq!(&slow[2..4], ["running", "0/2"], "{frame}");
    // Without a terminal and without --once, top says what to do instead.
    let out = d.ctl(&["top"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--once"));
    let out = d.ctl(&["--json", "top", "--once"]);
    assert_eq!(out.status.code(), Some(1));
    let out = d.ctl(&["top", "--interval", "1ms"]);
    assert_eq!(out.status.code(), Some(2));
    // Not joined at shutdown for the rest of its 30 s.
    d.ctl_ok(&["pool", "cancel", "1"]);
}

/// A tmux server of this test's own (its socket in the test's temp dir), killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn have_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn top_refreshes_live_in_a_terminal_and_q_quits() {
    if !have_tmux() {
        eprintln!("skipped: needs tmux (scripts/test installs it)");
        return;
    }
    let d = daemon();
    let tmux = Tmux {
        socket: d.path("tmux.sock"),
    };
    let command = format!(
        "{} --socket {} top --interval 200ms; echo top-exited-$?; sleep 1000",
        shell_quote(&bin("corralctl")),
        shell_quote(&d.socket())
    );
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "110",
        "-y",
        "30",
        "sh",
        "-c",
        &command,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A frame may be captured half drawn: wait for a whole one.
    wait_for(
        "top drawing web running, the queue at 3 and its footer",
        || {
            let s = tmux.screen();
            (row(&s, "web")?.contains(&"running")
                && row(&s, "jobs")?[1] == "3"
                && s.contains("q quit"))
            .then_some(())
        },
    );
    // A change shows without touching the terminal: the refresh redraws it.
    d.ctl_ok(&["stop", "web"]);
    d.ctl_ok(&["queue", "get", "jobs"]);
    wait_for("web shown stopped and the queue at 2", || {
        let s = tmux.screen();
        (row(&s, "web")?.contains(&"stopped") && row(&s, "jobs")?[1] == "2").then_some(())
    });
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let after = wait_for("top to exit on q", || {
        let s = tmux.screen();
        s.contains("top-exited-").then_some(s)
    });
    assert!(after.contains("top-exited-0"), "{after}");
    // The terminal was given back: the alternate screen is gone.
    assert!(!after.contains("q quit"), "{after}");
    d.ctl_ok(&["pool", "cancel", "1"]);
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}
