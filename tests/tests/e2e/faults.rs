//! Faults and hostile conditions: connection floods, damaged state files, a full disk,
//! processes that cannot start, clients that never read.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use corral_tests::{TestDaemon, wait_for};
use serde_json::Value;

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn raise_own_fd_limit(want: u64) -> bool {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return false;
    };
    hard >= want && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok()
}

fn hello(stream: &mut UnixStream) -> Option<Value> {
    stream
        .write_all(b"{\"id\":1,\"op\":\"hello\",\"version\":1}\n")
        .ok()?;
    let mut line = String::new();
    BufReader::new(stream.try_clone().ok()?)
        .read_line(&mut line)
        .ok()?;
    serde_json::from_str(&line).ok()
}

#[test]
fn a_connection_flood_is_refused_past_the_limit_and_leaks_no_descriptors() {
    if !raise_own_fd_limit(2200) {
        eprintln!("skipped: this test needs 2,200 open files (ulimit -Hn)");
        return;
    }
    let mut d = TestDaemon::new();
    let config = d.path("corral.toml");
    std::fs::write(&config, "max_connections = 1000\n").unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    d.start();
    let pid = d.pid();
    let baseline = open_fds(pid);
    let mut idle: Vec<UnixStream> = (0..1000)
        .map(|_| {
            let mut s = UnixStream::connect(d.socket()).unwrap();
            assert_eq!(hello(&mut s).unwrap()["result"]["protocol"], 1);
            s
        })
        .collect();
    // Root (this test, when run as root) may open 8 more, so an administrator gets in.
    let reserve = if nix::unistd::Uid::effective().is_root() {
        8
    } else {
        0
    };
    let mut extra: Vec<UnixStream> = (0..reserve)
        .map(|_| {
            let mut s = UnixStream::connect(d.socket()).unwrap();
            assert_eq!(hello(&mut s).unwrap()["result"]["protocol"], 1);
            s
        })
        .collect();
    let mut refused = 0;
    for _ in 0..1000 {
        let s = UnixStream::connect(d.socket()).unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        let reply: Value = serde_json::from_str(&line).unwrap();
        if reply["error"]["code"] == "busy" {
            refused += 1;
        }
        extra.push(s);
    }
    assert_eq!(
        refused, 1000,
        "every connection past max_connections (and root's reserve) gets a `busy` error"
    );
    // The thousand admitted clients are still served.
    assert_eq!(hello(&mut idle[999]).unwrap()["result"]["protocol"], 1);
    drop(idle);
    drop(extra);
    wait_for("corrald's descriptors to return to their baseline", || {
        (open_fds(pid) <= baseline + 2).then_some(())
    });
    d.ctl_ok(&["status"]);
}

#[test]
fn damaged_or_foreign_state_files_are_refused_and_left_untouched() {
    let mut d = TestDaemon::new();
    d.start();
    for i in 0..200 {
        d.ctl_ok(&[
            "queue",
            "put",
            "q",
            &format!("item {i} with some padding to grow the file"),
        ]);
    }
    d.ctl_ok(&["shutdown"]);
    d.wait_exit();
    let db = d.state_dir().join("state.db");
    let good = std::fs::read(&db).unwrap();
    let newer = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        std::fs::write(&path, &good).unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        std::fs::read(&path).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "random bytes",
            (0..20_000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("newer schema", newer),
    ];
    for (what, bytes) in cases {
        // A WAL left from the good run would be replayed: these files stand alone.
        for ext in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
        }
        std::fs::write(&db, &bytes).unwrap();
        let out = d
            .command()
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{what}: corrald started on a bad state file"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&db.display().to_string()), "{what}: {err}");
        assert!(
            err.contains("move") && err.contains("aside"),
            "{what}: says what to do: {err}"
        );
        assert_eq!(
            std::fs::read(&db).unwrap(),
            bytes,
            "{what}: the file was modified"
        );
    }
}

#[test]
fn processes_that_cannot_start_fail_with_the_reason_and_others_run_on() {
    let mut d = TestDaemon::new();
    let script = d.path("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    d.unit("noexec", &format!("command = [\"{}\"]\n", script.display()))
        .unit(
            "nodir",
            "command = [\"true\"]\nworking_dir = \"/nonexistent/dir\"\n",
        )
        .unit("fine", "command = [\"sleep\", \"1000\"]\n");
    if nix::unistd::Uid::effective().is_root() {
        d.unit(
            "nouser",
            "command = [\"true\"]\nuser = \"no-such-user-corral\"\n",
        );
    }
    d.start();
    let reason = |unit: &str| {
        d.wait_state(unit, "failed").instances[0]
            .reason
            .clone()
            .unwrap()
    };
    assert!(
        reason("noexec").contains("permission denied"),
        "{}",
        reason("noexec")
    );
    assert!(
        reason("nodir").contains("/nonexistent/dir"),
        "{}",
        reason("nodir")
    );
    if nix::unistd::Uid::effective().is_root() {
        assert!(
            reason("nouser").contains("no-such-user-corral"),
            "{}",
            reason("nouser")
        );
    }
    d.wait_state("fine", "running");
}

#[test]
fn a_crash_loop_is_stopped_by_the_start_limit_without_burning_cpu() {
    let mut d = TestDaemon::new();
    d.unit(
        "looper",
        "command = [\"false\"]\nrestart = \"always\"\nrestart_delay = \"1ms\"\nrestart_delay_max = \"5ms\"\nstart_limit_burst = 50\nstart_limit_interval = \"1m\"\n",
    );
    d.start();
    let status = d.wait_state("looper", "failed");
    assert_eq!(status.instances[0].restarts, 49);
    // CPU time corrald spent on 50 starts: generous bound, a resource check not a benchmark.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    assert!(ticks < 300, "corrald used {ticks} ticks of CPU");
}

#[test]
fn a_client_that_never_reads_cannot_grow_corralds_memory() {
    let mut d = TestDaemon::new();
    d.start();
    let pid = d.pid();
    let before = rss_kb(pid);
    let stream = UnixStream::connect(d.socket()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = sent.clone();
    let flood = std::thread::spawn(move || {
        let frame = b"{\"id\":1,\"op\":\"status\"}\n";
        for _ in 0..2_000_000 {
            if writer.write_all(frame).is_err() {
                return;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // Wait until the flood is stuck: corrald stopped reading (its reply backlog is full).
    let mut last = 0;
    wait_for("the flood to be held back", || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let now = sent.load(std::sync::atomic::Ordering::Relaxed);
        let stuck = now == last && now > 0;
        last = now;
        stuck.then_some(())
    });
    assert!(
        last < 2_000_000,
        "corrald read everything without the client reading a reply"
    );
    let during = rss_kb(pid);
    assert!(
        during < before + 64 * 1024,
        "RSS grew from {before} kB to {during} kB"
    );
    // Others are still served.
    d.ctl_ok(&["status"]);
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    flood.join().unwrap();
}

#[test]
fn a_full_disk_fails_writes_clearly_and_recovers_when_space_returns() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let mut d = TestDaemon::new();
    let mount = d.state_dir();
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mount.clone());
    d.start();
    d.ctl_ok(&["queue", "put", "q", "before"]);
    // A quick run of puts whose totals are not written to the queue's row yet.
    let client = d.client();
    for i in 0..20 {
        client.queue("q").put(format!("quick {i}")).unwrap();
    }
    // Fill the disk.
    let filler = mount.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    let big = "x".repeat(100_000);
    let mut code = String::new();
    for _ in 0..50 {
        let out = d.ctl(&["--json", "queue", "put", "q", &big]);
        if !out.status.success() {
            code = String::from_utf8_lossy(&out.stderr).into_owned();
            break;
        }
    }
    assert!(
        code.contains("storage full"),
        "a write on a full disk: {code}"
    );
    // Reads still answer, and corrald is up.
    let len: Value = serde_json::from_str(&d.ctl_ok(&["--json", "queue", "len", "q"])).unwrap();
    assert!(len["depth"].as_u64().unwrap() >= 1);
    // The totals reloaded after the failed commit agree with the items on disk.
    assert_eq!(
        len["put_total"].as_u64().unwrap(),
        len["depth"].as_u64().unwrap() + len["got_total"].as_u64().unwrap(),
        "{len}"
    );
    std::fs::remove_file(&filler).unwrap();
    d.ctl_ok(&["queue", "put", "q", "after"]);
    let items = d.ctl_ok(&["queue", "get", "q", "--count", "1000"]);
    assert!(
        items.starts_with("before\nquick 0\n") && items.ends_with("after\n"),
        "{items}"
    );
}

/// Mounts a tmpfs of `size` on the test daemon's state dir; None (skip) without root.
fn small_state_disk(d: &TestDaemon, size: &str) -> Option<impl Drop + use<>> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return None;
    }
    let mount = d.state_dir();
    std::fs::create_dir_all(&mount).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return None;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    Some(Unmount(mount))
}

#[test]
fn a_burst_of_large_items_does_not_grow_the_wal_past_its_size_bound() {
    let mut d = TestDaemon::new();
    // 16 MiB of disk; the burst moves 30 MB through the WAL (each item put, then got).
    let Some(_unmount) = small_state_disk(&d, "16m") else {
        return;
    };
    d.start();
    let pairs = 150;
    let item = "x".repeat(200_000);
    let mut conn = d.raw();
    let mut writer = conn.stream.try_clone().unwrap();
    // Pipelined, so the commands reach the store together, as a burst of clients would.
    let sender = std::thread::spawn(move || {
        for i in 0..pairs {
            let put = format!(
                "{{\"id\":{},\"op\":\"queue_put\",\"queue\":\"burst\",\"value\":\"{item}\"}}\n",
                2 * i
            );
            let get = format!(
                "{{\"id\":{},\"op\":\"queue_get\",\"queue\":\"burst\"}}\n",
                2 * i + 1
            );
            writer.write_all(put.as_bytes()).unwrap();
            writer.write_all(get.as_bytes()).unwrap();
        }
    });
    let mut errors = Vec::new();
    for _ in 0..2 * pairs {
        let reply = conn.recv().expect("a reply");
        if reply.get("error").is_some() {
            errors.push(reply["error"].to_string());
        }
    }
    sender.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} failed, first: {}",
        errors.len(),
        errors[0]
    );
    // The WAL file keeps the largest size it reached (up to journal_size_limit): bounded
    // by the 4 MiB checkpoint threshold plus one batch of at most 4 MiB of items.
    let wal = std::fs::metadata(d.state_dir().join("state.db-wal")).map_or(0, |m| m.len());
    assert!(wal < 12 << 20, "the WAL grew to {wal} bytes");
    let len: Value = serde_json::from_str(&d.ctl_ok(&["--json", "queue", "len", "burst"])).unwrap();
    assert_eq!(len["put_total"], pairs, "{len}");
    assert_eq!(len["depth"], 0, "{len}");
}

#[test]
fn kill_9_under_load_loses_nothing_that_was_acknowledged() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let mut d = TestDaemon::new();
    d.start();
    let socket = d.socket();
    let acked_puts = Arc::new(Mutex::new(Vec::<u64>::new()));
    let received = Arc::new(Mutex::new(Vec::<u64>::new()));
    let acked_adds = Arc::new(Mutex::new(0u64));
    let attempted_adds = Arc::new(Mutex::new(0u64));
    let running = Arc::new(AtomicBool::new(true));
    let mut threads = Vec::new();
    for t in 0..20u64 {
        let (socket, acked_puts, received, acked_adds, attempted_adds, running) = (
            socket.clone(),
            acked_puts.clone(),
            received.clone(),
            acked_adds.clone(),
            attempted_adds.clone(),
            running.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let Ok(client) = corral_client::Client::connect_to(&socket) else {
                return;
            };
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                let result = match t % 4 {
                    // Producers: every acknowledged put is recorded.
                    0 | 1 => {
                        let id = t * 1_000_000 + n;
                        client
                            .queue("load")
                            .put(id)
                            .map(|_| acked_puts.lock().unwrap().push(id))
                    }
                    // Consumers: every item whose reply arrived is recorded.
                    2 => client
                        .queue("load")
                        .get::<u64>(Some(std::time::Duration::from_millis(50)))
                        .map(|id| received.lock().unwrap().push(id))
                        .or_else(|e| {
                            if e.code() == Some(corral_proto::ErrorCode::Empty) {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        }),
                    // Adders and lockers.
                    _ => {
                        *attempted_adds.lock().unwrap() += 1;
                        client
                            .counter("adds")
                            .add(1)
                            .map(|_| *acked_adds.lock().unwrap() += 1)
                            .and_then(|()| client.lock("l").acquire(None).and_then(|g| g.release()))
                    }
                };
                if result.is_err() {
                    return; // corrald is gone
                }
                n += 1;
            }
        }));
    }
    wait_for("some load", || {
        (acked_puts.lock().unwrap().len() > 500).then_some(())
    });
    d.kill9();
    running.store(false, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    d.start();
    let client = d.client();
    let left: Vec<u64> = client
        .queue("load")
        .get_many(1_000_000, Some(std::time::Duration::from_millis(1)))
        .unwrap_or_default();
    let received = received.lock().unwrap().clone();
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for id in left.iter().chain(&received) {
        *seen.entry(*id).or_default() += 1;
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "an item was delivered twice"
    );
    let acked = acked_puts.lock().unwrap().clone();
    let missing: Vec<&u64> = acked.iter().filter(|id| !seen.contains_key(id)).collect();
    // The documented window: a get committed just before the kill whose reply never
    // arrived. At most one per consumer thread (5 of them).
    assert!(
        missing.len() <= 5,
        "{} acknowledged items are gone: {missing:?}",
        missing.len()
    );
    let adds = client.counter("adds").get().unwrap() as u64;
    let (acked_adds, attempted) = (*acked_adds.lock().unwrap(), *attempted_adds.lock().unwrap());
    assert!(
        adds >= acked_adds && adds <= attempted,
        "counter {adds}, acknowledged {acked_adds}, attempted {attempted}"
    );
    assert!(
        client.lock("l").status().unwrap().holder.is_none(),
        "no lock survives a restart"
    );
}

#[test]
fn the_write_ahead_log_stays_bounded_under_steady_writes() {
    let mut d = TestDaemon::new();
    d.start();
    let socket = d.socket();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let socket = socket.clone();
            s.spawn(move || {
                let client = corral_client::Client::connect_to(&socket).unwrap();
                for _ in 0..5000 {
                    client.counter("steady").add(1).unwrap();
                }
            });
        }
    });
    assert_eq!(d.client().counter("steady").get().unwrap(), 20_000);
    // 20,000 commits of at least one 4 KiB page each would be 80 MB of WAL unchecked.
    let wal = std::fs::metadata(d.state_dir().join("state.db-wal")).map_or(0, |m| m.len());
    assert!(wal < 16 << 20, "the WAL grew to {wal} bytes");
}

#[test]
fn out_of_descriptors_a_crash_loop_is_retried_and_not_failed_for_good() {
    let mut d = TestDaemon::new();
    d.unit(
        "crashy",
        "command = [\"sh\", \"-c\", \"echo crash; exit 1\"]\nrestart = \"always\"\nrestart_delay = \"50ms\"\nrestart_delay_max = \"200ms\"\nstart_limit_burst = 100000\nstart_limit_interval = \"1s\"\n",
    );
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start_with_nofile(64);
    let svc = d.wait_state("svc", "running").instances[0].pid;
    // Clients take every descriptor corrald has (max_connections is far above 64): the
    // crash loop spends the reserve on its log file, then its starts fail for lack of
    // descriptors.
    let flood: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(d.socket()).unwrap())
        .collect();
    wait_for("a start to fail for lack of descriptors", || {
        d.stderr()
            .contains("out of file descriptors: cannot open")
            .then_some(())
    });
    // Before that, the reserve opened log files that could not have been opened otherwise.
    assert!(d.stderr().contains("using the reserve"), "{}", d.stderr());
    drop(flood);
    // Once descriptors are back, the unit is restarted by its policy: never `failed`.
    let restarts = d.status("crashy").instances[0].restarts;
    wait_for("crashy to be restarted again", || {
        let s = d.status("crashy");
        let i = &s.instances[0];
        assert_ne!(i.state.as_str(), "failed", "{:?}", i.reason);
        (i.restarts > restarts + 2).then_some(())
    });
    assert_eq!(d.status("svc").instances[0].pid, svc);
    assert!(d.log("crashy", 0).contains("crash"));
}

#[test]
fn out_of_descriptors_root_still_gets_a_connection_from_the_reserve() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root to run the clients as another user");
        return;
    }
    let mut d = TestDaemon::new();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = d.path("corral.toml");
    std::fs::write(&config, "socket_mode = \"0666\"\n").unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start_with_nofile(64);
    d.wait_state("svc", "running");
    // The checkout may not be reachable by another user (a clone in a 0700 directory):
    // they run a copy of corralctl from the test's own directory. The copy is written by
    // a child process (`cp`), never by this one: a file this process had open for writing
    // could be inherited by a child another test thread forks at that moment, and
    // executing the copy while that child has not yet exec'd fails with ETXTBSY ("Text
    // file busy"); O_CLOEXEC closes it only at the child's exec.
    let ctl = d.path("corralctl");
    let copied = std::process::Command::new("cp")
        .arg(corral_tests::bin("corralctl"))
        .arg(&ctl)
        .status()
        .unwrap();
    assert!(copied.success(), "cp corralctl: {copied}");
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another user's clients, each waiting on a queue, hold every descriptor.
    struct Clients(Vec<std::process::Child>);
    impl Drop for Clients {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let clients = Clients(
        (0..80)
            .map(|i| {
                std::process::Command::new(&ctl)
                    .arg("--socket")
                    .arg(d.socket())
                    .args(["queue", "get", &format!("wait{i}")])
                    .uid(65534)
                    .gid(65534)
                    .current_dir("/")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let pid = d.pid();
    wait_for("corrald to run out of descriptors", || {
        (open_fds(pid) >= 64).then_some(())
    });
    // Root is let in from the reserve, and sees the service running.
    let out = d.ctl_ok(&["status"]);
    assert!(out.contains("svc") && out.contains("running"), "{out}");
    assert!(
        d.stderr().contains("let in from the reserve"),
        "{}",
        d.stderr()
    );
    drop(clients);
    wait_for("descriptors to come back", || {
        (open_fds(pid) < 32).then_some(())
    });
    d.ctl_ok(&["status"]);
}
