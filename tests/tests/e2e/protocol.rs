//! The socket protocol: framing, errors, pipelining, hostile input.

use corral_tests::TestDaemon;
use serde_json::json;

fn code(reply: &serde_json::Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<none>")
}

#[test]
fn hello_reports_the_protocol_and_rejects_other_versions() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    let ok = c.roundtrip(r#"{"id":1,"op":"hello","version":1}"#);
    assert_eq!(ok["id"], 1);
    assert_eq!(ok["result"]["protocol"], 1);
    let bad = c.roundtrip(r#"{"id":2,"op":"hello","version":99}"#);
    assert_eq!(code(&bad), "unsupported_version");
}

#[test]
fn bad_frames_get_error_replies_and_the_connection_keeps_working() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    assert_eq!(code(&c.roundtrip("this is not json")), "bad_request");
    c.send(b"\xff\xfe\x00garbage\n");
    assert_eq!(code(&c.recv().unwrap()), "bad_request");
    let unknown = c.roundtrip(r#"{"id":5,"op":"frobnicate"}"#);
    assert_eq!(unknown["id"], 5, "the id of a bad request is echoed");
    assert_eq!(code(&unknown), "unknown_op");
    let shape = c.roundtrip(r#"{"id":6,"op":"start","units":"not-a-list"}"#);
    assert_eq!(code(&shape), "bad_request");
    assert_eq!(code(&c.roundtrip(r#"[1,2,3]"#)), "bad_request");
    let huge = c.roundtrip(r#"{"id":18446744073709551616,"op":"status"}"#);
    assert_eq!(code(&huge), "bad_request");
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(code(&c.roundtrip(&nested)), "bad_request");
    let missing = c.roundtrip(r#"{"id":7,"op":"status","unit":"nope"}"#);
    assert_eq!(code(&missing), "not_found");
    // Still serving on the same connection.
    let status = c.roundtrip(r#"{"id":8,"op":"status"}"#);
    assert_eq!(status["id"], 8);
    assert!(status["result"]["units"].is_array());
}

#[test]
fn an_oversized_frame_is_refused_and_the_next_one_served() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    let big = format!(
        r#"{{"id":1,"op":"status","unit":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    c.send(big.as_bytes());
    c.send(b"\n");
    assert_eq!(code(&c.recv().unwrap()), "frame_too_large");
    let next = c.roundtrip(r#"{"id":2,"op":"status"}"#);
    assert_eq!(next["id"], 2);
    assert!(next.get("result").is_some(), "{next}");
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    let mut batch = String::new();
    for id in 1..=500 {
        batch.push_str(&json!({"id": id, "op": "status"}).to_string());
        batch.push('\n');
    }
    c.send(batch.as_bytes());
    for id in 1..=500 {
        assert_eq!(c.recv().unwrap()["id"], id);
    }
}

#[test]
fn a_client_vanishing_mid_frame_does_not_disturb_others() {
    let mut d = TestDaemon::new();
    d.start();
    {
        let mut half = d.raw();
        half.send(br#"{"id":1,"op":"sta"#);
    } // dropped: disconnect mid-frame
    {
        let mut waiting = d.raw();
        d.unit("t", "kind = \"task\"\ncommand = [\"sleep\", \"1000\"]\n");
        waiting.roundtrip(r#"{"id":1,"op":"reload"}"#);
        waiting.roundtrip(r#"{"id":2,"op":"start","units":["t"]}"#);
        waiting.send(b"{\"id\":3,\"op\":\"wait\",\"unit\":\"t\"}\n");
    } // dropped while a wait is pending
    let mut c = d.raw();
    let ok = c.roundtrip(r#"{"id":9,"op":"hello","version":1}"#);
    assert_eq!(ok["result"]["protocol"], 1);
    d.ctl_ok(&["stop", "t"]);
}

#[test]
fn a_long_operation_does_not_block_the_requests_behind_it() {
    let mut d = TestDaemon::new();
    d.unit("t", "kind = \"task\"\ncommand = [\"sleep\", \"1000\"]\n");
    d.start();
    d.ctl_ok(&["start", "t"]);
    let mut c = d.raw();
    c.send(
        b"{\"id\":1,\"op\":\"wait\",\"unit\":\"t\"}\n{\"id\":2,\"op\":\"status\",\"unit\":\"t\"}\n",
    );
    let first = c.recv().unwrap();
    assert_eq!(first["id"], 2, "status answered while wait is pending");
    d.ctl_ok(&["stop", "t"]);
    let second = c.recv().unwrap();
    assert_eq!(second["id"], 1);
    assert_eq!(second["result"]["instances"][0]["state"], "stopped");
}

#[test]
fn wait_with_a_timeout_gives_a_timeout_error() {
    let mut d = TestDaemon::new();
    d.unit("t", "kind = \"task\"\ncommand = [\"sleep\", \"1000\"]\n");
    d.start();
    d.ctl_ok(&["start", "t"]);
    let out = d.ctl(&["wait", "t", "--timeout", "0.2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("still running"));
    d.ctl_ok(&["stop", "t"]);
}

#[test]
fn logs_follow_streams_new_lines() {
    let mut d = TestDaemon::new();
    let trigger = d.path("go");
    d.unit(
        "talker",
        &format!(
            r#"command = ["/bin/sh", "-c", "echo first; while [ ! -e {} ]; do sleep 0.05; done; echo second; sleep 1000"]"#,
            trigger.display()
        ),
    );
    d.start();
    corral_tests::wait_for("first line", || {
        d.log("talker", 0).contains("first").then_some(())
    });
    let mut c = d.raw();
    c.send(b"{\"id\":4,\"op\":\"logs\",\"unit\":\"talker\",\"lines\":5,\"follow\":true}\n");
    let tail = c.recv().unwrap();
    assert_eq!(tail["event"]["line"], "first");
    std::fs::write(&trigger, "").unwrap();
    let next = c.recv().unwrap();
    assert_eq!(next["id"], 4);
    assert_eq!(next["event"]["line"], "second");
}

/// `run` with `stdio_fds`: the two descriptors sent with the request are the process's
/// stdout and stderr; a request without them is refused; `stop_on_disconnect` stops the
/// process when the connection closes.
#[test]
fn run_writes_to_passed_descriptors_and_stops_when_its_connection_closes() {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    c.roundtrip(r#"{"id":1,"op":"hello","version":1}"#);
    let out_path = d.path("passed-out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let request = json!({
        "id": 2,
        "op": "run",
        "command": ["sh", "-c", "echo to-stdout; echo to-stderr >&2; exec sleep 600"],
        "stdio_fds": true,
        "stop_on_disconnect": true,
    })
    .to_string()
        + "\n";
    let fds = [out.as_raw_fd(), out.as_raw_fd()];
    let sent = sendmsg::<UnixAddr>(
        c.stream.as_raw_fd(),
        &[IoSlice::new(request.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(sent, request.len());
    drop(out);
    let reply = c.recv().unwrap();
    let unit = reply["result"]["unit"].as_str().unwrap().to_owned();
    let pid = reply["result"]["pid"].as_i64().unwrap() as i32;
    corral_tests::wait_for("the output in the passed file", || {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        (text.contains("to-stdout") && text.contains("to-stderr")).then_some(())
    });
    assert_eq!(d.log(&unit, 0), "", "nothing goes to corrald's log");

    let refused = c.roundtrip(r#"{"id":3,"op":"run","command":["true"],"stdio_fds":true}"#);
    assert_eq!(code(&refused), "bad_request");
    assert!(corral_tests::alive(pid));

    drop(c);
    corral_tests::wait_for("the process to be stopped", || {
        (!corral_tests::alive(pid)).then_some(())
    });
    let status = d.wait_state(&unit, "stopped");
    assert!(status.instances[0].last_exit.is_some(), "{status:?}");
}

/// `run` with `parent`: the transient unit keeps the program that made it (its pid
/// defaults to the asking process), and `corralctl status` lists it under that program,
/// a child's child under the child; a label over the limit is refused.
#[test]
fn run_keeps_its_parent_and_status_lists_children_under_it() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    let first = json!({
        "id": 1, "op": "run", "command": ["sleep", "600"], "stop_on_disconnect": true,
        "parent": {"label": "python3 demo.py"},
    });
    let first = c.roundtrip(&first.to_string());
    let child = first["result"]["unit"].as_str().unwrap().to_owned();
    let child_pid = first["result"]["pid"].as_u64().unwrap();
    let nested = json!({
        "id": 2, "op": "run", "command": ["sleep", "600"], "stop_on_disconnect": true,
        "parent": {"pid": child_pid, "label": "Process-1"},
    });
    let second = c.roundtrip(&nested.to_string());
    let grandchild = second["result"]["unit"].as_str().unwrap().to_owned();
    let unrelated = d.ctl_ok(&["run", "--name", "alone", "--", "sleep", "600"]);
    assert!(unrelated.contains("alone"), "{unrelated}");

    let status = d.status(&child);
    let parent = status.parent.expect("the parent is kept");
    assert_eq!(parent.pid, Some(std::process::id()), "the asker's pid");
    assert_eq!(parent.label, "python3 demo.py");
    assert_eq!(
        d.status(&grandchild).parent.unwrap().pid,
        Some(child_pid as u32)
    );
    assert!(d.status("alone").parent.is_none());

    let table = d.ctl_ok(&["status"]);
    let lines: Vec<&str> = table.lines().collect();
    let at = |name: &str| {
        lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
    };
    let program = lines
        .iter()
        .position(|l| l.starts_with("python3 demo.py"))
        .unwrap_or_else(|| panic!("no row for the parent program in\n{table}"));
    assert!(
        lines[program].contains(&std::process::id().to_string()),
        "{table}"
    );
    assert_eq!(at(&child), program + 1, "{table}");
    assert_eq!(at(&grandchild), program + 2, "{table}");
    assert!(lines[at(&child)].starts_with("  "), "{table}");
    assert!(lines[at(&grandchild)].starts_with("    "), "{table}");
    assert!(!lines[at("alone")].starts_with(' '), "{table}");

    let long = json!({
        "id": 3, "op": "run", "command": ["true"],
        "parent": {"label": "x".repeat(corral_proto::MAX_PARENT_LABEL + 1)},
    });
    assert_eq!(code(&c.roundtrip(&long.to_string())), "bad_request");
    d.ctl_ok(&["stop", "alone"]);
}

/// `run` with `anon_session`: the process holds the session from before its spawn, so
/// the session's objects stay while it runs after every other holder is gone, and are
/// removed once it exits.
#[test]
fn run_holds_the_anonymous_session_for_the_process() {
    let mut d = TestDaemon::new();
    d.start();
    let session = "s-run-0123456789abcdef";
    let mut parent = d.raw();
    parent.roundtrip(&json!({"id": 1, "op": "anon_hold", "session": session}).to_string());
    parent.roundtrip(r#"{"id":2,"op":"queue_declare","queue":"anon-q"}"#);
    let added = parent.roundtrip(
        &json!({"id": 3, "op": "anon_add", "session": session, "kind": "queue", "name": "anon-q"})
            .to_string(),
    );
    assert_eq!(added["result"]["holders"], 1, "{added}");
    let run = json!({
        "id": 4, "op": "run", "command": ["sleep", "600"], "anon_session": session,
    });
    let reply = parent.roundtrip(&run.to_string());
    let unit = reply["result"]["unit"].as_str().unwrap().to_owned();
    let pid = reply["result"]["pid"].as_i64().expect("a pid") as i32;
    drop(parent);

    // The parent's hold ends with its connection; the child's stays.
    let mut other = d.raw();
    let held = |c: &mut corral_tests::RawConn| {
        let add = json!({"id": 5, "op": "anon_add", "session": session, "kind": "queue", "name": "anon-q"});
        c.roundtrip(&add.to_string())
    };
    corral_tests::wait_for("the parent's hold to end", || {
        (held(&mut other)["result"]["holders"] == 1).then_some(())
    });
    let info = other.roundtrip(r#"{"id":6,"op":"queue_put","queue":"anon-q","value":1}"#);
    assert!(
        info.get("result").is_some(),
        "the queue is still there: {info}"
    );

    d.ctl_ok(&["stop", &unit]);
    assert!(!corral_tests::alive(pid));
    corral_tests::wait_for("the session's queue to be removed", || {
        let list = d.ctl_ok(&["queue", "list"]);
        (!list.contains("anon-q")).then_some(())
    });
    assert_eq!(
        code(&held(&mut other)),
        "not_found",
        "the session has ended"
    );

    // A session nobody else holds: the process alone keeps it.
    let run = json!({
        "id": 7, "op": "run", "command": ["sleep", "600"], "anon_session": "s-alone-0123456789",
    });
    let reply = other.roundtrip(&run.to_string());
    let unit = reply["result"]["unit"].as_str().unwrap().to_owned();
    let add = json!({"id": 8, "op": "anon_add", "session": "s-alone-0123456789", "kind": "counter", "name": "c"});
    assert_eq!(other.roundtrip(&add.to_string())["result"]["holders"], 1);
    let bad = json!({"id": 9, "op": "run", "command": ["true"], "anon_session": "bad token!"});
    assert_eq!(code(&other.roundtrip(&bad.to_string())), "bad_request");
    d.ctl_ok(&["stop", &unit]);
}

/// After a `kill -9` of corrald, the next corrald stops a `run` task it finds (it is no
/// longer configured), and the anonymous session that task held ends with it: nothing is
/// left behind.
#[test]
fn a_run_task_found_after_a_kill_9_of_corrald_is_stopped_and_its_session_ends() {
    let mut d = TestDaemon::new();
    d.start();
    let session = "s-run-restart-0123456789";
    let pid = {
        let mut c = d.raw();
        c.roundtrip(&json!({"id": 1, "op": "anon_hold", "session": session}).to_string());
        c.roundtrip(r#"{"id":2,"op":"counter_add","counter":"c-run","delta":1}"#);
        let add = json!({"id": 3, "op": "anon_add", "session": session, "kind": "counter", "name": "c-run"});
        assert!(c.roundtrip(&add.to_string()).get("result").is_some());
        let run =
            json!({"id": 4, "op": "run", "command": ["sleep", "600"], "anon_session": session});
        let reply = c.roundtrip(&run.to_string());
        reply["result"]["pid"].as_i64().expect("a pid") as i32
    };
    d.kill9();
    assert!(
        corral_tests::alive(pid),
        "a task that is not a daemon outlives corrald"
    );
    d.start();
    corral_tests::wait_for("the task to be stopped", || {
        (!corral_tests::alive(pid)).then_some(())
    });
    let client = d.client();
    corral_tests::wait_for("the session to end with its task", || {
        let counters = client.counters().unwrap();
        (!counters.iter().any(|c| c.counter == "c-run")).then_some(())
    });
}
