//! The PostgreSQL backend (`corrald --backend URL --node NAME`): each test starts its own
//! PostgreSQL cluster (`PgCluster`) and one or more real corrald nodes on it.

use std::process::Stdio;
use std::time::Duration;

use corral_client::Client;
use corral_proto::ErrorCode;
use corral_tests::{PG_PASSWORD, PgCluster, TestDaemon};

/// A corrald node on `pg`'s database.
fn node(pg: &PgCluster, name: &str) -> TestDaemon {
    let mut d = TestDaemon::new();
    d.extra_args = vec!["--backend".into(), pg.url(), "--node".into(), name.into()];
    d.start();
    d
}

/// A corrald node on `pg`'s database with a short lease (`[backend] lease`).
fn node_with_lease(pg: &PgCluster, name: &str, lease: &str) -> TestDaemon {
    let mut d = TestDaemon::new();
    let config = d.path("corral.toml");
    std::fs::write(&config, format!("[backend]\nlease = \"{lease}\"\n")).unwrap();
    d.extra_args = vec![
        "--config".into(),
        config.display().to_string(),
        "--backend".into(),
        pg.url(),
        "--node".into(),
        name.into(),
    ];
    d.start();
    d
}

/// Runs corrald with `args` and expects it to exit non-zero at start; returns stderr.
fn start_fails(args: &[&str]) -> String {
    let d = TestDaemon::new();
    let mut cmd = d.command();
    cmd.args(args).stderr(Stdio::piped());
    let out = cmd.output().expect("run corrald");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "corrald {args:?} started; stderr: {stderr}"
    );
    assert!(
        !d.socket().exists(),
        "corrald bound its socket before failing"
    );
    stderr
}

#[test]
fn a_node_migrates_the_schema_and_serves_counters_queues_and_locks() {
    let Some(pg) = PgCluster::start() else { return };
    let d = node(&pg, "a");
    assert_eq!(pg.psql("SELECT max(version) FROM corral_schema"), "1");
    assert_eq!(pg.psql("SELECT name FROM corral_nodes"), "a");

    let c = d.client();
    assert_eq!(c.counter("hits").add(5).unwrap(), 5);
    assert_eq!(c.counter("hits").add(-2).unwrap(), 3);
    assert_eq!(
        pg.psql("SELECT value FROM corral_counters WHERE name = 'hits'"),
        "3",
        "an acknowledged add is committed in PostgreSQL"
    );
    c.counter("hits").set(i64::MAX).unwrap();
    let overflow = c.counter("hits").add(1).unwrap_err();
    assert_eq!(overflow.code(), Some(ErrorCode::Overflow));
    assert_eq!(c.counter("hits").get().unwrap(), i64::MAX);

    let q = c.queue("jobs");
    assert_eq!(q.put(serde_json::json!({"n": 1})).unwrap(), 1);
    assert_eq!(q.put("two").unwrap(), 2);
    assert_eq!(
        pg.psql("SELECT count(*) FROM corral_queue_items WHERE queue = 'jobs'"),
        "2"
    );
    assert_eq!(q.len().unwrap(), 2);
    let first: serde_json::Value = q.get(None).unwrap();
    assert_eq!(first, serde_json::json!({"n": 1}), "FIFO");
    let second: String = q.get(None).unwrap();
    assert_eq!(second, "two");
    let empty = q
        .get::<serde_json::Value>(Some(Duration::ZERO))
        .unwrap_err();
    assert_eq!(empty.code(), Some(ErrorCode::Empty));

    let guard = c.lock("deploy").acquire(None).unwrap();
    let other = d.client();
    assert!(other.lock("deploy").try_acquire().unwrap().is_none());
    let first_token = guard.token();
    drop(guard);
    let again = other.lock("deploy").try_acquire().unwrap().expect("free");
    assert!(again.token() > first_token, "fencing tokens grow");

    // What the backend does not do yet is a clear error, never a wrong answer.
    let unsupported = c.counters().unwrap_err();
    assert!(
        unsupported
            .to_string()
            .contains("not supported by the PostgreSQL backend"),
        "{unsupported}"
    );
}

#[test]
fn a_wrong_url_refused_credentials_or_no_server_stop_corrald_with_the_url_and_a_fix() {
    let Some(pg) = PgCluster::start() else { return };

    let bad = start_fails(&["--backend", "postgres://corral:hunter2@db:notaport/x"]);
    assert!(bad.contains("invalid backend URL"), "{bad}");
    assert!(bad.contains("postgres://corral:***@db:notaport/x"), "{bad}");
    assert!(!bad.contains("hunter2"), "password shown: {bad}");

    let refused = start_fails(&["--backend", &pg.url_with("postgres", "wrong-secret")]);
    assert!(refused.contains("refused the connection"), "{refused}");
    assert!(refused.contains("check the user, password"), "{refused}");
    assert!(
        !refused.contains("wrong-secret"),
        "password shown: {refused}"
    );

    let no_db = start_fails(&["--backend", &pg.url().replace("/postgres", "/nosuchdb")]);
    assert!(no_db.contains("nosuchdb"), "{no_db}");
    assert!(!no_db.contains(PG_PASSWORD), "password shown: {no_db}");

    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:{port}/postgres");
    let down = start_fails(&["--backend", &url]);
    assert!(down.contains("cannot reach PostgreSQL"), "{down}");
    assert!(down.contains("check that the server is running"), "{down}");
    assert!(!down.contains(PG_PASSWORD), "password shown: {down}");
}

#[test]
fn a_node_older_than_the_schema_refuses_to_start() {
    let Some(pg) = PgCluster::start() else { return };
    drop(node(&pg, "a"));
    pg.psql("INSERT INTO corral_schema (version) VALUES (99)");
    let err = start_fails(&["--backend", &pg.url(), "--node", "b"]);
    assert!(err.contains("schema is version 99"), "{err}");
    assert!(err.contains("upgrade corrald"), "{err}");
    assert!(!err.contains(PG_PASSWORD), "password shown: {err}");
}

#[test]
fn nodes_starting_together_migrate_once() {
    let Some(pg) = PgCluster::start() else { return };
    let nodes: Vec<TestDaemon> = std::thread::scope(|s| {
        let handles: Vec<_> = ["a", "b", "c"]
            .into_iter()
            .map(|n| {
                let pg = &pg;
                s.spawn(move || node(pg, n))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(pg.psql("SELECT count(*) FROM corral_schema"), "1");
    assert_eq!(
        pg.psql("SELECT string_agg(name, ',' ORDER BY name) FROM corral_nodes"),
        "a,b,c"
    );
    drop(nodes);
}

#[test]
fn counters_from_three_nodes_of_ten_clients_each_are_exact() {
    let Some(pg) = PgCluster::start() else { return };
    let nodes = [node(&pg, "a"), node(&pg, "b"), node(&pg, "c")];
    std::thread::scope(|s| {
        for d in &nodes {
            for _ in 0..10 {
                let socket = d.socket();
                s.spawn(move || {
                    let client = Client::connect_to(&socket).unwrap();
                    for _ in 0..100 {
                        client.counter("hits").add(1).unwrap();
                    }
                });
            }
        }
    });
    for d in &nodes {
        assert_eq!(d.client().counter("hits").get().unwrap(), 3_000);
    }
}

#[test]
fn a_put_on_one_node_is_got_once_on_another_and_wakes_a_blocked_get() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    let items = 200;
    for i in 0..items {
        a.client().queue("work").put(i).unwrap();
    }
    // Two getters on each node race for the items: each is delivered exactly once.
    let got: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|d| {
                let socket = d.socket();
                s.spawn(move || {
                    let client = Client::connect_to(&socket).unwrap();
                    let mut mine = Vec::new();
                    while let Ok(v) = client.queue("work").get::<i64>(Some(Duration::ZERO)) {
                        mine.push(v);
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..items).collect::<Vec<_>>(), "each item once");

    // A get blocked on B is answered by a put on A.
    let socket = b.socket();
    let waiter = std::thread::spawn(move || {
        Client::connect_to(&socket)
            .unwrap()
            .queue("wake")
            .get::<String>(Some(Duration::from_secs(60)))
    });
    std::thread::sleep(Duration::from_millis(200)); // let the get start waiting
    a.client().queue("wake").put("hello").unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), "hello");
}

#[test]
fn a_lock_held_on_one_node_is_refused_on_another_until_released() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    let ca = a.client();
    let guard = ca.lock("db").acquire(None).unwrap();
    let cb = b.client();
    assert!(cb.lock("db").try_acquire().unwrap().is_none());
    let timeout = cb
        .lock("db")
        .acquire(Some(Duration::from_millis(300)))
        .unwrap_err();
    assert_eq!(timeout.code(), Some(ErrorCode::Timeout));
    let token = guard.token();
    // The holder's connection closes: its lock is released, and a waiter on b gets it.
    let socket = b.socket();
    let waiter = std::thread::spawn(move || {
        let c = Client::connect_to(&socket).unwrap();
        let g = c.lock("db").acquire(Some(Duration::from_secs(60)))?;
        Ok::<u64, corral_client::Error>(g.token())
    });
    std::mem::forget(guard);
    drop(ca);
    let next = waiter.join().unwrap().unwrap();
    assert!(next > token, "token {next} after {token}");
}

#[test]
fn kill_9_of_a_node_holding_a_lock_lets_another_node_take_it_after_the_lease() {
    let Some(pg) = PgCluster::start() else { return };
    let mut a = node_with_lease(&pg, "a", "1s");
    let b = node_with_lease(&pg, "b", "1s");
    let ca = a.client();
    let guard = ca.lock("leader").acquire(None).unwrap();
    let token = guard.token();
    std::mem::forget(guard);
    a.kill9();
    drop(ca);
    // b waits for the lock: it is released once a's lease (1 s) has expired.
    let cb = b.client();
    let grant = cb
        .lock("leader")
        .acquire(Some(Duration::from_secs(60)))
        .unwrap();
    assert!(
        grant.token() > token,
        "token {} after {token}",
        grant.token()
    );
    assert_eq!(
        pg.psql("SELECT node FROM corral_locks WHERE name = 'leader'"),
        "b"
    );
}

#[test]
fn postgresql_down_answers_backend_unavailable_while_units_keep_running_then_service_resumes() {
    let Some(mut pg) = PgCluster::start() else {
        return;
    };
    let mut d = TestDaemon::new();
    d.unit("svc", "command = [\"sleep\", \"1000\"]\n");
    d.extra_args = vec!["--backend".into(), pg.url(), "--node".into(), "a".into()];
    d.start();
    let before = d.wait_state("svc", "running");
    let pid = before.instances[0].pid;
    d.ctl_ok(&["queue", "put", "q", "1"]);

    pg.stop();
    let out = d.ctl(&["--json", "queue", "put", "q", "2"]);
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("one JSON error");
    assert_eq!(err["code"], "backend_unavailable", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("retry later"),
        "{err}"
    );
    assert!(!err["message"].as_str().unwrap().contains(PG_PASSWORD));
    let plain = d.ctl(&["counter", "add", "c", "1"]);
    assert!(!plain.status.success());
    // Supervision goes on without the database.
    let during = d.status("svc");
    assert_eq!(during.instances[0].state.as_str(), "running");
    assert_eq!(during.instances[0].pid, pid);

    pg.start_again();
    corral_tests::wait_for("the backend to come back", || {
        d.ctl(&["queue", "put", "q", "3"])
            .status
            .success()
            .then_some(())
    });
    // Nothing acknowledged was lost; nothing refused was stored.
    assert_eq!(d.ctl_ok(&["queue", "get", "q"]).trim(), "1");
    assert_eq!(d.ctl_ok(&["queue", "get", "q"]).trim(), "3");
    assert_eq!(d.status("svc").instances[0].pid, pid);
}
