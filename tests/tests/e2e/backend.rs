//! The PostgreSQL backend (`corrald --backend URL --node NAME`): each test starts its own
//! PostgreSQL cluster (`PgCluster`) and one or more real corrald nodes on it.

use std::process::Stdio;
use std::time::Duration;

use corral_client::Client;
use corral_proto::ErrorCode;
use corral_tests::{PG_PASSWORD, PgCluster, TestDaemon, wait_for};

/// A corrald node on `pg`'s database.
fn node(pg: &PgCluster, name: &str) -> TestDaemon {
    let mut d = TestDaemon::new();
    d.extra_args = vec!["--backend".into(), pg.url(), "--node".into(), name.into()];
    d.start();
    d
}

/// A corrald node on `pg`'s database with a short lease (`[backend] lease`).
fn node_with_lease(pg: &PgCluster, name: &str, lease: &str) -> TestDaemon {
    node_with_config(pg, name, &format!("[backend]\nlease = \"{lease}\"\n"))
}

/// A corrald node on `pg`'s database with this `corral.toml`, not started yet.
pub(crate) fn configured_node(pg: &PgCluster, name: &str, toml: &str) -> TestDaemon {
    let mut d = TestDaemon::new();
    let config = d.path("corral.toml");
    std::fs::write(&config, toml).unwrap();
    d.extra_args = vec![
        "--config".into(),
        config.display().to_string(),
        "--backend".into(),
        pg.url(),
        "--node".into(),
        name.into(),
    ];
    d
}

/// [`configured_node`], started.
fn node_with_config(pg: &PgCluster, name: &str, toml: &str) -> TestDaemon {
    let mut d = configured_node(pg, name, toml);
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
    assert_eq!(pg.psql("SELECT max(version) FROM corral_schema"), "7");
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

    assert_eq!(c.counters().unwrap().len(), 1, "listed");
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
    // One row per migration: each ran once.
    assert_eq!(
        pg.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM corral_schema"),
        "1,2,3,4,5,6,7"
    );
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
}

#[test]
fn a_get_blocked_on_one_node_is_woken_by_the_notification_of_a_put_on_another() {
    let Some(pg) = PgCluster::start() else { return };
    // Polling every ten minutes: within the test's deadline only LISTEN/NOTIFY can wake.
    let slow = "[backend]\npoll = \"10m\"\n";
    let a = node_with_config(&pg, "a", slow);
    let b = node_with_config(&pg, "b", slow);
    let socket = b.socket();
    let waiter = std::thread::spawn(move || {
        Client::connect_to(&socket)
            .unwrap()
            .queue("wake")
            .get::<String>(Some(Duration::from_secs(120)))
    });
    wait_for("the get on b to wait", || {
        (b.client().queue("wake").info().unwrap().waiting_getters == 1).then_some(())
    });
    a.client().queue("wake").put("hello").unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), "hello");
    assert_eq!(a.client().queue("wake").len().unwrap(), 0, "got once");
}

#[test]
fn semaphore_and_event_waits_on_one_node_are_woken_by_the_notification_of_another() {
    let Some(pg) = PgCluster::start() else { return };
    // Polling every ten minutes: within the test's deadline only LISTEN/NOTIFY can wake.
    let slow = "[backend]\npoll = \"10m\"\n";
    let a = node_with_config(&pg, "a", slow);
    let b = node_with_config(&pg, "b", slow);
    let ca = a.client();
    ca.semaphore("slots").create(0, Some(2)).unwrap();
    let socket = b.socket();
    let acquirer = std::thread::spawn(move || {
        let c = Client::connect_to(&socket).unwrap();
        c.semaphore("slots").acquire(Some(Duration::from_secs(120)))
    });
    let socket = b.socket();
    let event_waiter = std::thread::spawn(move || {
        let c = Client::connect_to(&socket).unwrap();
        c.event("ready").wait(Some(Duration::from_secs(120)))
    });
    // The line is shared: node a sees node b's waiter.
    wait_for("the acquire on b to wait", || {
        (ca.semaphore("slots").get().unwrap().waiters == 1).then_some(())
    });
    wait_for("the event wait on b to wait", || {
        let events = b.client().events().unwrap();
        events
            .iter()
            .any(|e| e.event == "ready" && e.waiters == 1)
            .then_some(())
    });
    assert_eq!(
        ca.semaphore("slots").release().unwrap(),
        0,
        "handed to b's waiter"
    );
    assert_eq!(acquirer.join().unwrap().unwrap(), 0);
    ca.event("ready").set().unwrap();
    assert!(event_waiter.join().unwrap().unwrap());
    assert_eq!(
        pg.psql("SELECT value FROM corral_semaphores WHERE name = 'slots'"),
        "0"
    );
}

#[test]
fn anonymous_holds_survive_kill_9_of_their_node_and_end_with_their_process() {
    use corral_proto::AnonKind;
    use std::os::unix::process::CommandExt;
    let Some(pg) = PgCluster::start() else { return };
    let mut a = node(&pg, "a");
    let b = node(&pg, "b");
    let mut program = std::process::Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    let ca = a.client();
    ca.anon_hold("s-restart", Some(program.id())).unwrap();
    ca.anon_hold("s-conn", None).unwrap();
    for (session, counter) in [("s-restart", "kept"), ("s-conn", "dropped")] {
        ca.counter(counter).add(1).unwrap();
        ca.anon_add(session, AnonKind::Counter, counter).unwrap();
    }
    drop(ca);
    wait_for("the connection's session to end", || {
        let names: Vec<_> = b.client().counters().unwrap();
        names.iter().all(|c| c.counter != "dropped").then_some(())
    });
    // kill -9 of node a and a restart: its process holder, still alive, holds on.
    a.kill9();
    a.start();
    assert_eq!(b.client().counter("kept").get().unwrap(), 1);
    assert_eq!(
        pg.psql("SELECT count(*) FROM corral_anon_holders WHERE node = 'a'"),
        "1"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(program.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    program.wait().unwrap();
    wait_for("the process's session to end", || {
        let counters = b.client().counters().unwrap();
        counters.iter().all(|c| c.counter != "kept").then_some(())
    });
}

#[test]
fn a_bounded_queue_is_never_overfilled_by_putters_on_two_nodes() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    a.client().queue("small").declare(Some(5)).unwrap();
    let mut putters = Vec::new();
    for socket in [a.socket(), b.socket()] {
        for t in 0..4 {
            let socket = socket.clone();
            putters.push(std::thread::spawn(move || {
                let c = Client::connect_to(&socket).unwrap();
                let mut accepted = 0;
                for n in 0..10 {
                    match c.queue("small").try_put(t * 100 + n) {
                        Ok(_) => accepted += 1,
                        Err(e) => assert_eq!(e.code(), Some(ErrorCode::Full), "{e}"),
                    }
                }
                accepted
            }));
        }
    }
    let accepted: usize = putters.into_iter().map(|p| p.join().unwrap()).sum();
    assert_eq!(accepted, 5, "80 tries on two nodes, room for 5");
    assert_eq!(b.client().queue("small").len().unwrap(), 5);
}

#[test]
fn an_item_leased_on_a_node_killed_with_kill_9_is_delivered_again_on_another() {
    let Some(pg) = PgCluster::start() else { return };
    let mut a = node_with_lease(&pg, "a", "1s");
    let b = node_with_lease(&pg, "b", "1s");
    let ca = a.client();
    ca.queue("jobs").put("job-1").unwrap();
    let taken = ca
        .queue("jobs")
        .get_ack::<String>(None, Duration::from_secs(3600))
        .unwrap();
    assert_eq!((taken.value.as_str(), taken.deliveries()), ("job-1", 1));
    std::mem::forget(taken);
    a.kill9();
    drop(ca);
    // b's blocked acknowledged get has it once a's lease (1 s) has expired.
    let cb = b.client();
    let again = cb
        .queue("jobs")
        .get_ack::<String>(Some(Duration::from_secs(60)), Duration::from_secs(60))
        .unwrap();
    assert_eq!((again.value.as_str(), again.deliveries()), ("job-1", 2));
    again.ack().unwrap();
    let info = cb.queue("jobs").info().unwrap();
    assert_eq!((info.depth, info.in_flight), (0, 0));
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
fn lock_waiters_on_different_nodes_are_served_first_come_first_served_when_notified() {
    let Some(pg) = PgCluster::start() else { return };
    // Polling every ten minutes: within the test's deadline only LISTEN/NOTIFY can wake.
    let slow = "[backend]\npoll = \"10m\"\n";
    let a = node_with_config(&pg, "a", slow);
    let b = node_with_config(&pg, "b", slow);
    let holder = a.client();
    let guard = holder.lock("line").acquire(None).unwrap();
    let first_token = guard.token();
    let order = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        // Waiters join the line alternately on b and a; each holds the lock briefly.
        let nodes = [&b, &a, &b, &a];
        for (i, d) in nodes.into_iter().enumerate() {
            let socket = d.socket();
            let order = &order;
            s.spawn(move || {
                let c = Client::connect_to(&socket).unwrap();
                let g = c
                    .lock("line")
                    .acquire(Some(Duration::from_secs(120)))
                    .unwrap();
                order.lock().unwrap().push((i, g.token()));
            });
            wait_for("the waiter to join the line", || {
                let waiters = a.client().lock("line").status().unwrap().waiters;
                (waiters == i + 1).then_some(())
            });
        }
        let status = b.client().lock("line").status().unwrap();
        let h = status.holder.expect("held");
        assert_eq!(h.node.as_deref(), Some("a"), "{h:?}");
        assert_eq!(h.token, first_token);
        drop(guard);
    });
    let order = order.into_inner().unwrap();
    let served: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(served, vec![0, 1, 2, 3], "FIFO across nodes: {order:?}");
    let tokens: Vec<u64> = order.iter().map(|(_, t)| *t).collect();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]) && tokens[0] > first_token,
        "tokens grow: {first_token} then {tokens:?}"
    );
}

#[test]
fn a_node_that_cannot_renew_its_lease_loses_its_locks_and_says_so() {
    let Some(mut pg) = PgCluster::start() else {
        return;
    };
    let a = node_with_lease(&pg, "a", "1s");
    let b = node_with_lease(&pg, "b", "1s");
    let ca = a.client();
    let guard = ca.lock("job").acquire(None).unwrap();
    let token = guard.token();
    pg.stop();
    // A lease without renewing it: a's watchdog gives the lock up (and logs it).
    wait_for("a to give up its lock", || {
        a.stderr().contains("lock lost").then_some(())
    });
    pg.start_again();
    let cb = b.client();
    let next = wait_for("b to get the lock", || {
        let g = cb.lock("job").try_acquire().ok()??;
        Some(g.token())
    });
    assert!(next > token, "token {next} after {token}");
    let lost = guard.release().unwrap_err();
    assert_eq!(lost.code(), Some(ErrorCode::NotHeld));
    assert!(lost.to_string().contains("lost"), "{lost}");
}

#[test]
fn kill_9_of_a_node_holding_a_lock_lets_another_node_take_it_after_the_lease() {
    let Some(pg) = PgCluster::start() else { return };
    let mut a = node_with_lease(&pg, "a", "1s");
    let b = node_with_lease(&pg, "b", "1s");
    let ca = a.client();
    let guard = ca.lock("leader").acquire(None).unwrap();
    let token = guard.token();
    // Every node sees both, and what a holds.
    let nodes = b.client().nodes().unwrap();
    assert_eq!(nodes.node.as_deref(), Some("b"));
    let listed: Vec<(&str, bool, &[String])> = nodes
        .nodes
        .iter()
        .map(|n| (n.node.as_str(), n.alive, n.locks.as_slice()))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("a", true, &["leader".to_string()][..]),
            ("b", true, &[][..])
        ]
    );
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
    // corralctl nodes: a's lease has expired, b holds the lock now.
    let table = b.ctl_ok(&["nodes"]);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {table}"))
            .to_string()
    };
    assert!(row("a").contains("expired"), "{table}");
    assert!(
        row("b").contains("alive") && row("b").contains("leader"),
        "{table}"
    );
    assert!(!table.contains(PG_PASSWORD), "password hidden: {table}");
}

#[test]
fn api_nodes_and_the_dashboard_list_the_nodes() {
    let Some(pg) = PgCluster::start() else { return };
    let port = corral_tests::free_port();
    let mut a = TestDaemon::new();
    a.http = format!("127.0.0.1:{port}");
    a.extra_args = vec!["--backend".into(), pg.url(), "--node".into(), "web1".into()];
    a.start();
    let _b = node(&pg, "web2");
    let ca = a.client();
    let _guard = ca.lock("db").acquire(None).unwrap();
    let (code, body) = corral_tests::http(port, "GET", "/api/nodes", &[]);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["node"], "web1", "{v}");
    assert_eq!(v["nodes"][0]["node"], "web1", "{v}");
    assert_eq!(v["nodes"][0]["locks"], serde_json::json!(["db"]), "{v}");
    assert_eq!(v["nodes"][1]["node"], "web2", "{v}");
    assert!(!body.contains(PG_PASSWORD), "password hidden: {body}");
    let (code, page) = corral_tests::http(port, "GET", "/", &[]);
    assert_eq!(code, 200);
    assert!(page.contains("Nodes") && page.contains("web2"), "{page}");
}

#[test]
fn without_a_backend_corralctl_nodes_says_there_is_none() {
    let mut d = TestDaemon::new();
    d.start();
    let out = d.ctl_ok(&["nodes"]);
    assert!(out.contains("no shared backend"), "{out}");
    assert!(d.client().nodes().unwrap().nodes.is_empty());
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

#[test]
fn postgresql_restarted_under_load_loses_nothing_acknowledged_and_service_resumes() {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let Some(mut pg) = PgCluster::start() else {
        return;
    };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    let acked_puts = Mutex::new(BTreeSet::new());
    let tried_puts = Mutex::new(BTreeSet::new());
    let (acked_adds, tried_adds) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let acked_total = AtomicUsize::new(0);
    let restarted = AtomicBool::new(false);
    std::thread::scope(|s| {
        for (t, d) in [&a, &b, &a, &b].into_iter().enumerate() {
            let socket = d.socket();
            let (acked_puts, tried_puts) = (&acked_puts, &tried_puts);
            let (acked_adds, tried_adds) = (&acked_adds, &tried_adds);
            let (acked_total, restarted) = (&acked_total, &restarted);
            s.spawn(move || {
                let c = Client::connect_to(&socket).unwrap();
                let mut after_restart = 0;
                let mut attempt = 0u64;
                let started = std::time::Instant::now();
                // Each attempt puts a value of its own, so a put that committed but whose
                // answer was lost shows up as tried, never as a duplicate.
                while after_restart < 20 {
                    assert!(
                        started.elapsed() < Duration::from_secs(120),
                        "service did not resume after the restart"
                    );
                    attempt += 1;
                    let value = format!("{t}-{attempt}");
                    tried_puts.lock().unwrap().insert(value.clone());
                    tried_adds.fetch_add(1, Ordering::SeqCst);
                    let put = c.queue("load").put(&value);
                    let add = c.counter("load").add(1);
                    for result in [put.as_ref().err(), add.as_ref().err()]
                        .into_iter()
                        .flatten()
                    {
                        assert_eq!(
                            result.code(),
                            Some(ErrorCode::BackendUnavailable),
                            "only backend_unavailable while the server restarts: {result}"
                        );
                    }
                    if put.is_ok() {
                        acked_puts.lock().unwrap().insert(value);
                        acked_total.fetch_add(1, Ordering::SeqCst);
                    }
                    if add.is_ok() {
                        acked_adds.fetch_add(1, Ordering::SeqCst);
                    }
                    if put.is_err() || add.is_err() {
                        // Back off while the server is away, as a client would.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    if restarted.load(Ordering::SeqCst) && put.is_ok() && add.is_ok() {
                        after_restart += 1;
                    }
                }
            });
        }
        wait_for("some load before the restart", || {
            (acked_total.load(Ordering::SeqCst) >= 40).then_some(())
        });
        pg.restart();
        restarted.store(true, Ordering::SeqCst);
    });
    let acked = acked_puts.into_inner().unwrap();
    let tried = tried_puts.into_inner().unwrap();
    let c = b.client();
    let mut got: Vec<String> = Vec::new();
    while let Ok(items) = c
        .queue("load")
        .get_many::<String>(1000, Some(Duration::ZERO))
    {
        if items.is_empty() {
            break;
        }
        got.extend(items);
    }
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "no item delivered twice");
    let missing: Vec<_> = acked.difference(&got_set).collect();
    assert!(missing.is_empty(), "acknowledged puts lost: {missing:?}");
    assert!(got_set.is_subset(&tried), "only items that were put");
    let total = c.counter("load").get().unwrap() as usize;
    let (ok, tried_n) = (
        acked_adds.load(Ordering::SeqCst),
        tried_adds.load(Ordering::SeqCst),
    );
    assert!(
        ok <= total && total <= tried_n,
        "counter {total}: between {ok} acknowledged and {tried_n} tried adds"
    );
}
