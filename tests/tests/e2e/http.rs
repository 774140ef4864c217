//! The HTTP status page and API against a real corrald.

use std::io::{BufRead, BufReader, Write};

use corral_tests::{TestDaemon, free_port, http, wait_for};
use serde_json::Value;

fn daemon_with_http(token: Option<&str>) -> (TestDaemon, u16) {
    let mut d = TestDaemon::new();
    let port = free_port();
    d.http = format!("127.0.0.1:{port}");
    if let Some(token) = token {
        let config = d.path("corral.toml");
        std::fs::write(&config, format!("[http]\ntoken = \"{token}\"\n")).unwrap();
        d.extra_args = vec!["--config".into(), config.display().to_string()];
    }
    (d, port)
}

fn without_uptimes(mut v: Value) -> Value {
    if let Some(units) = v["units"].as_array_mut() {
        for u in units {
            for i in u["instances"].as_array_mut().into_iter().flatten() {
                i.as_object_mut().unwrap().remove("uptime_ms");
            }
        }
    }
    v
}

#[test]
fn the_api_answers_what_corralctl_json_prints_and_follows_state() {
    let (mut d, port) = daemon_with_http(None);
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start();
    d.wait_state("svc", "running");
    let (code, body) = http(port, "GET", "/api/status", &[]);
    assert_eq!(code, 200);
    let api: Value = serde_json::from_str(&body).unwrap();
    let ctl: Value = serde_json::from_str(&d.ctl_ok(&["--json", "status"])).unwrap();
    assert_eq!(without_uptimes(api), without_uptimes(ctl));

    d.ctl_ok(&["stop", "svc"]);
    let (_, body) = http(port, "GET", "/api/units/svc", &[]);
    let unit: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(unit["unit"]["instances"][0]["state"], "stopped");
    assert_eq!(unit["config"]["command"][0], "sleep");
    assert!(!unit["runs"].as_array().unwrap().is_empty());

    let (code, body) = http(port, "GET", "/api/units/nope", &[]);
    assert_eq!(code, 404);
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["code"], "not_found");
    assert_eq!(http(port, "GET", "/healthz", &[]).0, 200);
    for path in [
        "/api/queues",
        "/api/counters",
        "/api/arrays",
        "/api/locks",
        "/api/pools",
        "/api/units",
    ] {
        let (code, body) = http(port, "GET", path, &[]);
        assert_eq!(code, 200, "{path}");
        serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn state_changes_need_the_token() {
    let (mut d, port) = daemon_with_http(Some("sekrit"));
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start();
    d.wait_state("svc", "running");
    let (code, _) = http(port, "POST", "/api/units/svc/stop", &[]);
    assert_eq!(code, 401);
    let (code, _) = http(
        port,
        "POST",
        "/api/units/svc/stop",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(code, 401);
    assert_eq!(d.status("svc").instances[0].state.as_str(), "running");
    let (code, body) = http(
        port,
        "POST",
        "/api/units/svc/stop",
        &[("Authorization", "Bearer sekrit")],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(d.status("svc").instances[0].state.as_str(), "stopped");
}

#[test]
fn without_a_token_the_api_is_read_only() {
    let (mut d, port) = daemon_with_http(None);
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start();
    d.wait_state("svc", "running");
    let (code, _) = http(
        port,
        "POST",
        "/api/units/svc/stop",
        &[("Authorization", "Bearer x")],
    );
    assert_ne!(code, 200);
    assert_eq!(d.status("svc").instances[0].state.as_str(), "running");
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused() {
    let mut d = TestDaemon::new();
    d.http = format!("0.0.0.0:{}", free_port());
    let out = d
        .command()
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allow_remote") && err.contains("token"),
        "{err}"
    );
}

#[test]
fn the_dashboard_shows_a_unit_file_not_loaded_with_its_errors() {
    let (mut d, port) = daemon_with_http(None);
    d.unit("fine", r#"command = ["sleep", "1000"]"#)
        .unit("typo", "comand = [\"sleep\", \"1000\"]\n");
    d.start();
    d.wait_state("fine", "running");
    let (code, page) = http(port, "GET", "/", &[]);
    assert_eq!(code, 200);
    assert!(page.contains("not loaded"), "{page}");
    assert!(
        page.contains("typo.toml:1:1: unknown key `comand`"),
        "{page}"
    );
    let (_, api) = http(port, "GET", "/api/status", &[]);
    let api: Value = serde_json::from_str(&api).unwrap();
    let typo = api["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "typo")
        .expect("typo in /api/status");
    assert_eq!(typo["loaded"], false);
    assert!(
        typo["errors"][0]
            .as_str()
            .unwrap()
            .contains("typo.toml:1:1")
    );
}

#[test]
fn everything_shown_is_escaped() {
    let (mut d, port) = daemon_with_http(None);
    d.unit(
        "evil",
        r#"command = ["/nonexistent/<script>alert(1)</script>"]"#,
    )
    .unit(
        "xss",
        r#"command = ["/bin/sh", "-c", "echo '<b>bold</b> & <img src=x>'; sleep 1000"]"#,
    );
    d.start();
    d.wait_state("evil", "failed");
    wait_for("the log line", || {
        d.log("xss", 0).contains("bold").then_some(())
    });
    let (_, page) = http(port, "GET", "/", &[]);
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the failure reason is shown, escaped"
    );
    assert!(
        !page.contains("<script>alert"),
        "unescaped markup on the dashboard"
    );
    let (_, unit) = http(port, "GET", "/units/xss", &[]);
    assert!(
        unit.contains("&lt;b&gt;bold&lt;/b&gt; &amp; &lt;img src=x&gt;"),
        "{unit}"
    );
    assert!(!unit.contains("<img src=x>"));
    // A unit cannot be named x<script> at all: the name is refused with the rules.
    d.unit("x<script>", r#"command = ["true"]"#);
    let out = d.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid unit name"));
}

#[test]
fn metrics_are_prometheus_text() {
    let (mut d, port) = daemon_with_http(None);
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.unit(
        "checked",
        "command = [\"sleep\", \"1000\"]\nready = { exec = [\"true\"] }\nhealth = { exec = [\"true\"], interval = \"100ms\" }\n",
    );
    d.start();
    d.wait_state("svc", "running");
    wait_for("a passed health probe", || {
        (d.status("checked").instances[0].healthy == Some(true)).then_some(())
    });
    d.ctl_ok(&["queue", "put", "jobs", "1"]);
    // One run that exits 3 and one killed by SIGKILL; a pool job.
    let _ = d.ctl(&["run", "--wait", "--", "sh", "-c", "exit 3"]);
    let _ = d.ctl(&["run", "--wait", "--", "sh", "-c", "kill -9 $$"]);
    d.ctl_ok(&["pool", "map", "-j", "1", "--", "true", ":::", "1"]);
    let (_, detail) = http(port, "GET", "/api/units/checked", &[]);
    assert!(detail.contains("\"check\":\"exec true\""), "{detail}");
    // The dashboard and the unit's page show the checks.
    for page in ["/", "/units/checked"] {
        let (_, html) = http(port, "GET", page, &[]);
        assert!(
            html.contains("<th>checks</th>") && html.contains("<td>healthy</td>"),
            "{page}: {html}"
        );
    }
    let (code, text) = http(port, "GET", "/metrics", &[]);
    assert_eq!(code, 200);
    for needle in [
        "corral_instances{state=\"running\"} 2",
        "corral_instance_ready{unit=\"checked\",instance=\"0\"} 1",
        "corral_instance_healthy{unit=\"checked\",instance=\"0\"} 1",
        "corral_health_failures_total{unit=\"checked\",instance=\"0\"} 0",
        "corral_queue_depth{queue=\"jobs\"} 1",
        "# TYPE corral_restarts_total counter",
        "corral_uptime_seconds ",
        "corral_instance_resident_memory_bytes{unit=\"svc\",instance=\"0\"} ",
        "corral_instance_cpu_seconds_total{unit=\"svc\",instance=\"0\"} ",
        "corral_exits_total{code=\"3\",signal=\"\"} 1",
        "corral_exits_total{code=\"\",signal=\"SIGKILL\"} 1",
        "corral_pool_items{pool_job=\"",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    assert!(
        !text.contains("{job="),
        "`job` is Prometheus's own label:\n{text}"
    );
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => eprintln!(
            "skipped promtool check: promtool is not installed (apt-get install prometheus)"
        ),
    }
}

#[test]
fn the_event_stream_reports_changes_without_a_reload() {
    let (mut d, port) = daemon_with_http(None);
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start();
    d.wait_state("svc", "running");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(corral_tests::DEADLINE))
        .unwrap();
    stream
        .write_all(
            b"GET /api/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
        )
        .unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut next_snapshot = || -> Value {
        loop {
            let line = lines.next().expect("stream open").expect("read");
            if let Some(data) = line.strip_prefix("data: ") {
                return serde_json::from_str(data).unwrap();
            }
        }
    };
    let first = next_snapshot();
    assert_eq!(
        first["status"]["units"][0]["instances"][0]["state"],
        "running"
    );
    d.ctl_ok(&["stop", "svc"]);
    loop {
        let snap = next_snapshot();
        if snap["status"]["units"][0]["instances"][0]["state"] == "stopped" {
            break;
        }
    }
}

#[test]
fn environment_values_are_never_shown() {
    let (mut d, port) = daemon_with_http(None);
    d.unit(
        "secretive",
        "command = [\"sleep\", \"1000\"]\nenv = { API_KEY = \"hunter2-do-not-show\" }\n",
    );
    d.start();
    d.wait_state("secretive", "running");
    for path in [
        "/",
        "/units/secretive",
        "/api/units/secretive",
        "/api/status",
        "/metrics",
    ] {
        let (_, body) = http(port, "GET", path, &[]);
        assert!(
            !body.contains("hunter2"),
            "{path} shows an environment value"
        );
    }
    let (_, unit) = http(port, "GET", "/api/units/secretive", &[]);
    assert!(
        unit.contains("API_KEY"),
        "the variable's name is shown, its value is not"
    );
    assert!(!d.ctl_ok(&["--json", "status"]).contains("hunter2"));
    assert!(
        !d.stderr().contains("hunter2"),
        "corrald's own log shows it"
    );
}

/// An HTTP daemon with `[http]` settings (TOML lines) in its corral.toml.
fn daemon_with_http_limits(settings: &str) -> (TestDaemon, u16) {
    let mut d = TestDaemon::new();
    let port = free_port();
    d.http = format!("127.0.0.1:{port}");
    let config = d.path("corral.toml");
    std::fs::write(&config, format!("[http]\n{settings}\n")).unwrap();
    d.extra_args = vec!["--config".into(), config.display().to_string()];
    (d, port)
}

/// The status code of `GET path`, or None if the connection failed or was reset.
fn try_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(corral_tests::DEADLINE)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Whether corrald closed `conn` (end of stream or reset) before the test's deadline.
fn closed_by_peer(conn: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    conn.set_read_timeout(Some(corral_tests::DEADLINE)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a 408 or similar before the close is fine
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out: still open
        }
    }
}

#[test]
fn http_connections_past_the_cap_get_503_while_the_socket_keeps_answering() {
    let (mut d, port) = daemon_with_http_limits("max_connections = 8\nheader_timeout = \"5m\"\n");
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start();
    d.wait_state("svc", "running");
    // Eight clients hold every slot: four idle, four with half a request.
    let mut held: Vec<std::net::TcpStream> = (0..8)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            if i % 2 == 1 {
                s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
            }
            s
        })
        .collect();
    // Once corrald has accepted all eight, a ninth is refused with 503 (not queued).
    wait_for("a connection past the cap to get 503", || {
        (try_status(port, "/healthz") == Some(503)).then_some(())
    });
    // Supervision and the control socket are untouched.
    assert_eq!(d.status("svc").instances[0].state.as_str(), "running");
    d.ctl_ok(&["status"]);
    // A slot freed is a slot usable.
    drop(held.pop());
    wait_for("the status page to answer again", || {
        (try_status(port, "/healthz") == Some(200)).then_some(())
    });
    drop(held);
}

#[test]
fn idle_and_half_sent_http_requests_are_closed_after_the_header_timeout() {
    let (mut d, port) = daemon_with_http_limits("max_connections = 64\nheader_timeout = \"1s\"\n");
    d.unit("svc", r#"command = ["sleep", "1000"]"#);
    d.start();
    d.wait_state("svc", "running");
    // More clients than the cap, half of them idle, half stuck in their headers.
    let mut conns: Vec<std::net::TcpStream> = (0..96)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            if i % 2 == 1 {
                s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .unwrap();
            }
            s
        })
        .collect();
    // The control socket answers meanwhile.
    d.ctl_ok(&["status"]);
    // Every one of them is closed by corrald: past the cap at once, the others when
    // their headers do not arrive in time.
    for (i, conn) in conns.iter_mut().enumerate() {
        assert!(closed_by_peer(conn), "connection {i} is still open");
    }
    // And the page answers a well-behaved client, the slots being free again.
    assert_eq!(http(port, "GET", "/healthz", &[]).0, 200);
    // A keep-alive connection that goes quiet after a response is closed as well.
    let mut keep = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_by_peer(&mut keep));
    assert_eq!(d.status("svc").instances[0].state.as_str(), "running");
}

#[test]
fn a_client_that_stops_reading_is_closed_after_the_idle_timeout() {
    let (mut d, port) = daemon_with_http_limits("header_timeout = \"5m\"\nidle_timeout = \"1s\"\n");
    d.start();
    let conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // Pipelined requests whose answers are never read: once the socket buffers are full,
    // corrald's writes stop moving, and only the idle timeout ends the connection.
    let mut writer = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let request = b"GET /assets/app.js HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..1_000_000 {
            if writer.write_all(request).is_err() {
                return true; // closed by corrald
            }
        }
        false
    });
    wait_for(
        "corrald to close the connection that stopped reading",
        || sender.is_finished().then_some(()),
    );
    assert!(
        sender.join().unwrap(),
        "all requests were written: nothing stopped them"
    );
    assert_eq!(http(port, "GET", "/healthz", &[]).0, 200);
    drop(conn);
}

/// The series of `/api/history` matching `metric`, as (at_ms, value) points.
fn series(port: u16, query: &str, metric: &str) -> Vec<(i64, f64)> {
    let (code, body) = http(port, "GET", &format!("/api/history?{query}"), &[]);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["metric"] == metric)
        .flat_map(|s| s["points"].as_array().unwrap().clone())
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

#[test]
fn history_records_queue_depth_and_rates_and_an_instances_cpu_and_memory() {
    let (mut d, port) = daemon_with_http(None);
    // A busy loop, so its CPU is well above zero; the shell's RSS is never zero.
    d.unit("spin", r#"command = ["sh", "-c", "while :; do :; done"]"#);
    d.start();
    d.wait_state("spin", "running");
    for i in 0..5 {
        d.ctl_ok(&["queue", "put", "jobs", &i.to_string()]);
    }
    // Depth 5 is recorded; then, after more puts, a put rate above zero.
    wait_for("depth 5 in the history", || {
        series(port, "kind=queue&name=jobs", "depth")
            .iter()
            .any(|&(_, v)| v == 5.0)
            .then_some(())
    });
    for i in 0..20 {
        d.ctl_ok(&["queue", "put", "jobs", &i.to_string()]);
    }
    wait_for("a put rate above zero", || {
        series(port, "kind=queue&name=jobs", "put_rate")
            .iter()
            .any(|&(_, v)| v > 0.0)
            .then_some(())
    });
    let cpu = wait_for("the spinning instance's CPU", || {
        let points = series(port, "kind=instance&name=spin&instance=0", "cpu_pct");
        points.iter().any(|&(_, v)| v > 10.0).then_some(points)
    });
    let rss = series(port, "kind=instance&name=spin", "rss_bytes");
    assert!(
        rss.iter().all(|&(_, v)| v > 0.0) && !rss.is_empty(),
        "{rss:?}"
    );
    // since_ms gives only newer points.
    let last = cpu.last().unwrap().0;
    assert!(
        series(
            port,
            &format!("kind=instance&name=spin&since_ms={last}"),
            "cpu_pct"
        )
        .iter()
        .all(|&(at, _)| at > last)
    );
    // Another kind's filter sees none of these; a bad query is a JSON error.
    assert!(series(port, "kind=pool", "depth").is_empty());
    let (code, body) = http(port, "GET", "/api/history?instance=x", &[]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"code\""), "{body}");
}

#[test]
fn the_log_api_reads_the_end_then_follows_from_the_offset() {
    let (mut d, port) = daemon_with_http(None);
    // 3,000 lines of about 40 bytes: far more than one read.
    d.unit(
        "talker",
        r#"command = ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo \"line $i of the first burst, padded out\"; i=$((i+1)); done; exec sleep 1000"]"#,
    );
    d.start();
    d.wait_state("talker", "running");
    let get = |query: &str| -> Value {
        let (code, body) = http(port, "GET", &format!("/api/logs/talker/0{query}"), &[]);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let first = wait_for("the whole first burst", || {
        let v = get("");
        (v["lines"].as_array()?.last()? == "line 2999 of the first burst, padded out").then_some(v)
    });
    // Only the end was read: a bounded piece starting at a line, not the whole file.
    let lines = first["lines"].as_array().unwrap();
    assert!(lines.len() < 3000, "{} lines", lines.len());
    assert!(
        lines[0].as_str().unwrap().starts_with("line "),
        "{:?}",
        lines[0]
    );
    let size = first["size"].as_u64().unwrap();
    assert!(size - first["start"].as_u64().unwrap() <= 64 * 1024);
    assert_eq!(first["next"].as_u64(), Some(size));
    // From the start, a reader goes on with `next` until `more` is false, and sees it all.
    let mut offset = 0;
    let mut all = Vec::new();
    loop {
        let v = get(&format!("?offset={offset}"));
        all.extend(v["lines"].as_array().unwrap().iter().cloned());
        offset = v["next"].as_u64().unwrap();
        if v["more"] == false {
            break;
        }
    }
    assert_eq!(all.len(), 3000);
    assert_eq!(all[1234], "line 1234 of the first burst, padded out");
    // At the end, nothing new; a bad offset or instance is a JSON error, not a panic.
    assert!(
        get(&format!("?offset={offset}"))["lines"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (code, _) = http(port, "GET", "/api/logs/talker/0?offset=-1", &[]);
    assert_eq!(code, 400);
    let (code, body) = http(port, "GET", "/api/logs/talker/7", &[]);
    assert_eq!(code, 404, "{body}");
    let (code, _) = http(port, "GET", "/api/logs/nope/0", &[]);
    assert_eq!(code, 404);
    // The page that follows it exists for the instance, and escapes the unit's name.
    let (code, body) = http(port, "GET", "/units/talker/0/logs", &[]);
    assert_eq!(code, 200);
    assert!(body.contains("data-page=\"log\""), "{body}");
}

/// A transient unit's parent program (`run`'s `parent`) is in `/api/status` and beside the
/// unit's name on the dashboard.
#[test]
fn the_api_and_the_dashboard_name_a_tasks_parent_program() {
    let (mut d, port) = daemon_with_http(None);
    d.start();
    let mut c = d.raw();
    let run = serde_json::json!({
        "id": 1, "op": "run", "command": ["sleep", "600"], "stop_on_disconnect": true,
        "parent": {"pid": 4242, "label": "python3 <demo>.py"},
    });
    let reply = c.roundtrip(&run.to_string());
    let unit = reply["result"]["unit"].as_str().unwrap().to_owned();
    let (_, body) = http(port, "GET", "/api/status", &[]);
    let api: Value = serde_json::from_str(&body).unwrap();
    let listed = api["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == unit.as_str())
        .unwrap_or_else(|| panic!("{unit} in {api}"))
        .clone();
    assert_eq!(listed["parent"]["pid"], 4242, "{listed}");
    assert_eq!(listed["parent"]["label"], "python3 <demo>.py", "{listed}");
    let (code, page) = http(port, "GET", "/", &[]);
    assert_eq!(code, 200);
    assert!(
        page.contains("of python3 &lt;demo&gt;.py (pid 4242)"),
        "the dashboard names the parent: {page}"
    );
}

#[test]
fn a_finished_pool_job_is_removed_through_the_api_and_a_running_one_refused() {
    let (mut d, port) = daemon_with_http(Some("sekrit"));
    d.start();
    let go = d.path("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo {{}}",
        go.display()
    );
    let job = d.ctl_ok(&[
        "pool", "map", "--detach", "--", "sh", "-c", &script, ":::", "a",
    ]);
    assert_eq!(job.trim(), "1");
    let auth = [("Authorization", "Bearer sekrit")];
    assert_eq!(http(port, "POST", "/api/pools/1/remove", &[]).0, 401);
    let (code, body) = http(port, "POST", "/api/pools/1/remove", &auth);
    assert_ne!(code, 200, "{body}");
    assert!(body.contains("pool job 1 is still running"), "{body}");
    assert_eq!(http(port, "GET", "/api/pools/1", &[]).0, 200);
    std::fs::write(&go, "").unwrap();
    d.ctl_ok(&["pool", "wait", "1"]);
    let (code, body) = http(port, "POST", "/api/pools/1/remove", &auth);
    assert_eq!(code, 200, "{body}");
    let removed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(removed["job"], 1, "{body}");
    assert_eq!(removed["state"], "finished", "{body}");
    let (code, body) = http(port, "GET", "/api/pools/1", &[]);
    assert_eq!(code, 404, "{body}");
    let (code, _) = http(port, "POST", "/api/pools/1/remove", &auth);
    assert_eq!(code, 404);
}
