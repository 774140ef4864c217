//! Bounds on what one client may take from corrald over the control socket: reply bytes,
//! connections per user, idle connections, half-closed connections, and requests whose
//! arguments are wrong.

use corral_tests::{TestDaemon, TestUser, wait_for};

fn code(reply: &serde_json::Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<none>")
}

fn message(reply: &serde_json::Value) -> &str {
    reply["error"]["message"].as_str().unwrap_or("<none>")
}

#[test]
fn a_bad_enum_value_is_a_bad_argument_naming_the_field_and_the_accepted_values() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    let reply = c.roundtrip(r#"{"id":3,"op":"array_create","array":"a","kind":"i32","length":4}"#);
    assert_eq!(reply["id"], 3);
    assert_eq!(code(&reply), "bad_request", "{reply}");
    let text = message(&reply);
    for part in ["`kind`", "`i32`", "`i64`", "`f64`"] {
        assert!(text.contains(part), "{text} should name {part}");
    }
    // An op that really is unknown is still `unknown_op`.
    let unknown = c.roundtrip(r#"{"id":4,"op":"array_crate","array":"a"}"#);
    assert_eq!(code(&unknown), "unknown_op", "{unknown}");
}

#[test]
fn an_op_that_is_not_a_string_is_reported_as_such() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    let reply = c.roundtrip(r#"{"id":5,"op":7}"#);
    assert_eq!(code(&reply), "bad_request", "{reply}");
    assert!(message(&reply).contains("`op` must be a string"), "{reply}");
    let missing = c.roundtrip(r#"{"id":6}"#);
    assert_eq!(code(&missing), "bad_request", "{missing}");
    assert!(message(&missing).contains("no `op`"), "{missing}");
}

#[test]
fn run_refuses_environment_names_that_unit_files_refuse() {
    let mut d = TestDaemon::new();
    d.start();
    let mut c = d.raw();
    for (id, name, problem) in [
        (1, "A=B", "must not contain `=`"),
        (2, "", "must not be empty"),
    ] {
        let request = serde_json::json!({
            "id": id, "op": "run", "command": ["true"], "env": { name: "x" }
        });
        let reply = c.roundtrip(&request.to_string());
        assert_eq!(code(&reply), "bad_request", "{reply}");
        assert!(message(&reply).contains(problem), "{reply}");
    }
    // Nothing was started.
    let status = c.roundtrip(r#"{"id":9,"op":"status"}"#);
    assert_eq!(status["result"]["units"], serde_json::json!([]), "{status}");
    // A good name still runs.
    let ok = c.roundtrip(r#"{"id":10,"op":"run","command":["true"],"env":{"GOOD":"1"}}"#);
    assert!(ok.get("result").is_some(), "{ok}");
}

/// A client of another user, in Python (runs as any user, unlike this test binary):
/// `idle N` opens N connections, says hello on each and prints how many were served;
/// `flood FRAME` sends FRAME until corrald stops reading, prints `stuck`, then waits
/// for corrald to drop the connection and prints `dropped`. Both then wait for stdin
/// to close.
const PEER: &str = r#"
import json, select, socket, sys
path, mode = sys.argv[1], sys.argv[2]
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s
if mode == "idle":
    conns, served = [], 0
    for _ in range(int(sys.argv[3])):
        s = connect()
        s.sendall(b'{"id":1,"op":"hello","version":1}\n')
        reply = json.loads(s.makefile().readline())
        served += "result" in reply
        conns.append(s)
    print("served", served, flush=True)
else:
    s = connect()
    s.settimeout(3)
    frame = (sys.argv[3] + "\n").encode()
    try:
        while True:
            s.sendall(frame)
    except socket.timeout:
        pass
    print("stuck", flush=True)
    p = select.poll()
    p.register(s, select.POLLHUP | select.POLLERR | select.POLLRDHUP)
    print("dropped" if p.poll(120000) else "still open", flush=True)
sys.stdin.read()
"#;

/// A running [`PEER`], stopped on drop.
struct Peer {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Peer {
    fn start(user: &TestUser, d: &TestDaemon, args: &[&str]) -> Peer {
        let mut child = user
            .command("/usr/bin/python3")
            .arg("-c")
            .arg(PEER)
            .arg(d.socket())
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Peer { child, out }
    }

    /// The next line the peer prints.
    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon whose socket anyone may open, with `config` in its corral.toml.
fn open_daemon(config: &str) -> TestDaemon {
    use std::os::unix::fs::PermissionsExt;
    let mut d = TestDaemon::new();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = d.path("corral.toml");
    std::fs::write(&path, format!("socket_mode = \"0666\"\n{config}")).unwrap();
    d.extra_args = vec!["--config".into(), path.display().to_string()];
    d.start();
    d
}

fn status_key(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn users() -> Option<(TestUser, TestUser)> {
    let users = TestUser::create().zip(TestUser::create());
    if users.is_none() {
        eprintln!("skipped: needs root and useradd");
    }
    users
}

#[test]
fn idle_clients_of_one_user_cannot_lock_out_root_and_the_next_one_sees_busy() {
    let Some((user, _)) = users() else { return };
    let d = open_daemon("max_connections = 10\nmax_connections_per_user = 100\n");
    let mut idle = Peer::start(&user, &d, &["idle", "10"]);
    assert_eq!(idle.line(), "served 10");
    // Root still gets in, past the limit.
    let status = d.ctl(&["status"]);
    assert!(status.status.success(), "{status:?}");
    // The user's next client is told why, every time, with the documented exit code.
    for attempt in 0..10 {
        let out = user.ctl(&d, &["status"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "attempt {attempt}: {err}");
        assert!(
            err.contains("busy") || err.contains("max_connections"),
            "{err}"
        );
    }
    drop(idle);
    wait_for("the user's connections to be let go", || {
        user.ctl(&d, &["status"]).status.success().then_some(())
    });
}

#[test]
fn one_user_cannot_take_more_than_its_share_of_connections() {
    let Some((greedy, other)) = users() else {
        return;
    };
    let d = open_daemon("max_connections = 50\nmax_connections_per_user = 4\n");
    let mut idle = Peer::start(&greedy, &d, &["idle", "6"]);
    assert_eq!(idle.line(), "served 4", "the fifth and sixth are refused");
    let out = greedy.ctl(&d, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("max_connections_per_user"), "{err}");
    // Another user, and root, are served.
    let theirs = other.ctl(&d, &["status"]);
    assert!(theirs.status.success(), "{theirs:?}");
    d.ctl_ok(&["status"]);
}

#[test]
fn an_idle_connection_is_closed_but_one_holding_a_lock_or_waiting_is_not() {
    let d = open_daemon("idle_timeout = \"1s\"\n");
    let mut idle = d.raw();
    idle.roundtrip(r#"{"id":1,"op":"hello","version":1}"#);
    let mut holder = d.raw();
    let granted = holder.roundtrip(r#"{"id":1,"op":"lock_acquire","lock":"L"}"#);
    assert!(granted.get("result").is_some(), "{granted}");
    let mut waiter = d.raw();
    waiter.send(b"{\"id\":7,\"op\":\"queue_get\",\"queue\":\"q\"}\n");
    // The idle one is closed (it held nothing)...
    assert!(idle.recv().is_none(), "an idle connection is closed");
    // ...while the lock holder and the waiter, as old, are served on.
    let again = holder.roundtrip(r#"{"id":2,"op":"hello","version":1}"#);
    assert_eq!(again["id"], 2);
    d.ctl_ok(&["queue", "put", "q", "\"job\""]);
    let item = waiter.recv().expect("the waiting get is answered");
    assert_eq!(item["id"], 7);
    assert_eq!(item["result"]["items"], serde_json::json!(["job"]));
}

#[test]
fn a_half_closed_connection_still_gets_its_queue_item_and_its_lock() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::Shutdown;
    let mut d = TestDaemon::new();
    d.start();
    let read_reply = |stream: &std::os::unix::net::UnixStream| {
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).expect("a reply before the close")
    };
    // A blocking get, then the client's end of stream (what `printf ... | socat` does).
    let mut getter = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    getter
        .set_read_timeout(Some(corral_tests::DEADLINE))
        .unwrap();
    getter
        .write_all(b"{\"id\":1,\"op\":\"queue_get\",\"queue\":\"q\"}\n")
        .unwrap();
    getter.shutdown(Shutdown::Write).unwrap();
    // A lock held elsewhere, and a half-closed acquire waiting for it.
    let mut holder = d.raw();
    let held = holder.roundtrip(r#"{"id":1,"op":"lock_acquire","lock":"L"}"#);
    assert!(held.get("result").is_some(), "{held}");
    let mut acquirer = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    acquirer
        .set_read_timeout(Some(corral_tests::DEADLINE))
        .unwrap();
    acquirer
        .write_all(b"{\"id\":2,\"op\":\"lock_acquire\",\"lock\":\"L\"}\n")
        .unwrap();
    acquirer.shutdown(Shutdown::Write).unwrap();
    wait_for("both requests to be waiting", || {
        let q: serde_json::Value =
            serde_json::from_str(&d.ctl_ok(&["--json", "queue", "len", "q"])).ok()?;
        let l: serde_json::Value =
            serde_json::from_str(&d.ctl_ok(&["--json", "lock", "status", "L"])).ok()?;
        let lock_waiting = l.to_string().contains("\"waiters\":1");
        (q["waiting_getters"] == 1 && lock_waiting).then_some(())
    });
    d.ctl_ok(&["queue", "put", "q", "42"]);
    let item = read_reply(&getter);
    assert_eq!(item["id"], 1);
    assert_eq!(item["result"]["items"], serde_json::json!([42]));
    holder.roundtrip(r#"{"id":2,"op":"lock_release","lock":"L"}"#);
    let grant = read_reply(&acquirer);
    assert_eq!(grant["id"], 2);
    assert!(grant["result"]["token"].is_u64(), "{grant}");
    // Once answered, the connection closes, and with it the lock goes.
    let mut rest = String::new();
    assert_eq!(BufReader::new(&acquirer).read_line(&mut rest).unwrap(), 0);
    let mut next = d.raw();
    let free = next.roundtrip(r#"{"id":3,"op":"lock_acquire","lock":"L","block":false}"#);
    assert!(free.get("result").is_some(), "{free}");
}

#[test]
fn a_closed_connection_takes_no_item_it_was_waiting_for() {
    use std::io::Write;
    let mut d = TestDaemon::new();
    d.start();
    let mut getter = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    getter
        .write_all(b"{\"id\":1,\"op\":\"queue_get\",\"queue\":\"q\"}\n")
        .unwrap();
    let getters = || -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&d.ctl_ok(&["--json", "queue", "len", "q"]))
            .unwrap()["waiting_getters"]
            .clone()
    };
    wait_for("the get to wait", || (getters() == 1).then_some(()));
    drop(getter);
    wait_for("the waiter to go with its connection", || {
        (getters() == 0).then_some(())
    });
    d.ctl_ok(&["queue", "put", "q", "42"]);
    let len: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["--json", "queue", "len", "q"])).unwrap();
    assert_eq!(len["depth"], 1, "{len}");
}

#[test]
fn a_client_that_reads_no_big_replies_is_paused_then_dropped_and_corrald_stays_small() {
    let Some((reader, _)) = users() else { return };
    // The flooding user may only read.
    let d = open_daemon("idle_timeout = \"2s\"\n[access]\nread = [\"*\"]\n");
    d.ctl_ok(&[
        "array", "create", "big", "--type", "i64", "--len", "1048576",
    ]);
    let pid = d.pid();
    // One reply carries at most 65,536 elements; the whole array is refused, saying how.
    let mut c = d.raw();
    let whole = c.roundtrip(r#"{"id":1,"op":"array_get","array":"big"}"#);
    assert_eq!(code(&whole), "too_large", "{whole}");
    assert!(message(&whole).contains("65536"), "{whole}");
    assert!(message(&whole).contains("offset"), "{whole}");
    let slice =
        c.roundtrip(r#"{"id":2,"op":"array_get","array":"big","offset":1048000,"length":65536}"#);
    assert_eq!(slice["result"]["offset"], 1048000);
    assert_eq!(slice["result"]["length"], 1048576);
    assert_eq!(slice["result"]["values"].as_array().unwrap().len(), 576);
    // Slices of the largest size, asked for and never read.
    let mut flood = Peer::start(
        &reader,
        &d,
        &[
            "flood",
            r#"{"id":3,"op":"array_get","array":"big","offset":0,"length":65536}"#,
        ],
    );
    assert_eq!(flood.line(), "stuck", "corrald stops reading the flood");
    d.ctl_ok(&["status"]);
    assert_eq!(flood.line(), "dropped", "then drops the connection");
    let peak_kb = status_key(pid, "VmHWM:");
    assert!(peak_kb < 300 * 1024, "corrald's peak RSS was {peak_kb} kB");
    // The whole array still reads, in slices, through corralctl.
    let all = d.ctl_ok(&["array", "get", "big"]);
    assert_eq!(all.split_whitespace().count(), 1_048_576);
}
