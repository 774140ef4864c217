//! Several nodes as real hosts: each corrald in a network namespace of its own, reaching
//! PostgreSQL over a veth pair and a bridge (`NetLab`), so a node can be killed or cut
//! off from the database while the others go on. Needs root; skipped otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_proto::ErrorCode;
use corral_tests::{NetLab, PgCluster, TestDaemon, wait_for};

/// The nodes of `lab`, one per namespace, named `node0`, `node1`, … and started, with
/// this `[backend]` table.
fn nodes(lab: &NetLab, pg: &PgCluster, n: usize, backend: &str) -> Vec<TestDaemon> {
    (0..n)
        .map(|k| {
            let mut d = lab.node(k, pg, &format!("node{k}"), &format!("[backend]\n{backend}"));
            d.start();
            d
        })
        .collect()
}

/// A lab of `n` hosts with PostgreSQL on the bridge, or `None` (printed why) to skip.
fn lab(n: usize) -> Option<(NetLab, PgCluster)> {
    let lab = NetLab::new(n)?;
    let pg = lab.postgres()?;
    Some((lab, pg))
}

#[test]
fn counters_from_three_hosts_of_ten_clients_each_are_exact() {
    let Some((lab, pg)) = lab(3) else { return };
    let nodes = nodes(&lab, &pg, 3, "");
    // Each node reaches the database from its own address, over the bridge.
    let addrs = pg.psql(
        "SELECT string_agg(DISTINCT host(client_addr), ',' ORDER BY host(client_addr))
         FROM pg_stat_activity WHERE application_name LIKE 'corrald %'",
    );
    let want: Vec<String> = (0..3).map(|k| lab.node_addr(k)).collect();
    assert_eq!(addrs, want.join(","), "one address per host");
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
        // corralctl in the node's namespace.
        assert_eq!(d.ctl_ok(&["counter", "get", "hits"]).trim(), "3000");
    }
}

#[test]
fn a_put_on_host_a_is_delivered_once_to_a_get_waiting_on_host_b() {
    let Some((lab, pg)) = lab(2) else { return };
    let nodes = nodes(&lab, &pg, 2, "");
    let (a, b) = (&nodes[0], &nodes[1]);
    // A blocked `corralctl queue get` in b's namespace, waiting before the put.
    let mut getter = {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", lab.netns(1)])
            .arg(corral_tests::bin("corralctl"))
            .arg("--socket")
            .arg(b.socket())
            .args(["queue", "get", "--timeout", "120", "handoff"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    wait_for("the get on b to wait", || {
        (b.client().queue("handoff").info().unwrap().waiting_getters == 1).then_some(())
    });
    a.ctl_ok(&["queue", "put", "handoff", "from a"]);
    let out = wait_for("the get on b to answer", || getter.try_wait().unwrap())
        .success()
        .then(|| {
            let mut text = String::new();
            std::io::Read::read_to_string(getter.stdout.as_mut().unwrap(), &mut text).unwrap();
            text
        })
        .expect("the get on b succeeded");
    assert_eq!(out, "from a\n");
    // Delivered once: neither node has it any more.
    for d in [a, b] {
        assert_eq!(d.ctl_ok(&["queue", "len", "handoff"]).trim(), "0");
        let again = d.ctl(&["queue", "get", "--no-wait", "handoff"]);
        assert_eq!(again.status.code(), Some(1), "nothing left to get");
    }
}

#[test]
fn kill_9_of_the_host_holding_a_lock_hands_it_to_another_host_with_a_larger_token() {
    let Some((lab, pg)) = lab(2) else { return };
    let mut nodes = nodes(&lab, &pg, 2, "lease = \"2s\"\n");
    let ca = nodes[0].client();
    let guard = ca.lock("leader").acquire(None).unwrap();
    let token = guard.token();
    std::mem::forget(guard);
    let socket = nodes[1].socket();
    let waiter = std::thread::spawn(move || {
        let c = Client::connect_to(&socket).unwrap();
        let g = c.lock("leader").acquire(Some(Duration::from_secs(60)))?;
        let token = g.token();
        std::mem::forget(g); // node1 keeps it while the test looks
        Ok::<(Client, u64), corral_client::Error>((c, token))
    });
    wait_for("node1's acquire to wait", || {
        (nodes[1].client().lock("leader").status().unwrap().waiters == 1).then_some(())
    });
    nodes[0].kill9();
    let (_holder, next) = waiter.join().unwrap().expect("node1 gets the lock");
    assert!(next > token, "token {next} after {token}");
    assert_eq!(
        pg.psql("SELECT node FROM corral_locks WHERE name = 'leader'"),
        "node1"
    );
    // The dead host's lease expired, as corralctl nodes (in node1's namespace) says.
    let table = nodes[1].ctl_ok(&["nodes"]);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("node0"))
        .unwrap_or_else(|| panic!("no row for node0: {table}"));
    assert!(row.contains("expired"), "{table}");
}

#[test]
fn a_host_cut_off_from_the_database_loses_its_lease_tells_its_holder_and_rejoins() {
    let Some((lab, pg)) = lab(2) else { return };
    let nodes = nodes(&lab, &pg, 2, "lease = \"2s\"\n");
    let (a, b) = (&nodes[0], &nodes[1]);
    let ca = a.client();
    let guard = ca.lock("job").acquire(None).unwrap();
    let token = guard.token();
    let socket = b.socket();
    let waiter = std::thread::spawn(move || {
        let c = Client::connect_to(&socket).unwrap();
        let g = c.lock("job").acquire(Some(Duration::from_secs(120)))?;
        let token = g.token();
        std::mem::forget(g); // b keeps it while a rejoins
        Ok::<(Client, u64), corral_client::Error>((c, token))
    });
    wait_for("b's acquire to wait", || {
        (b.client().lock("job").status().unwrap().waiters == 1).then_some(())
    });
    lab.cut(0);
    // a cannot renew its lease: it gives the lock up, and b gets it.
    wait_for("a to give up its lock", || {
        a.stderr().contains("lock lost").then_some(())
    });
    let (cb, next) = waiter.join().unwrap().expect("b gets the lock");
    assert!(next > token, "token {next} after {token}");
    // a's holder is told: its release says the lock was lost with the lease.
    let lost = guard.release().unwrap_err();
    assert_eq!(lost.code(), Some(ErrorCode::NotHeld), "{lost}");
    assert!(lost.to_string().contains("lost"), "{lost}");
    // Cut off, a answers backend_unavailable, never a wrong answer.
    let down = wait_for("a to notice the database is away", || {
        match ca.counter("c").add(1) {
            Err(e) if e.code() == Some(ErrorCode::BackendUnavailable) => Some(e),
            Err(e) => panic!("only backend_unavailable while cut off: {e}"),
            Ok(_) => None,
        }
    });
    assert!(down.to_string().contains("retry later"), "{down}");

    lab.join(0);
    wait_for("a to be back", || ca.counter("c").add(1).ok());
    // a's lease is current again; b still holds the lock (a's clean-up did not touch it).
    wait_for("a's lease to be renewed", || {
        let nodes = cb.nodes().unwrap().nodes;
        nodes
            .iter()
            .find(|n| n.node == "node0")
            .is_some_and(|n| n.alive)
            .then_some(())
    });
    assert_eq!(
        pg.psql("SELECT node || ' ' || token FROM corral_locks WHERE name = 'job'"),
        format!("node1 {next}")
    );
    assert!(
        ca.lock("job").try_acquire().unwrap().is_none(),
        "b holds it"
    );
    let counted: i64 = pg
        .psql("SELECT value FROM corral_counters WHERE name = 'c'")
        .parse()
        .unwrap();
    assert!(counted >= 1, "the add after rejoining is counted");
}

/// One holding of the lock, as the holder saw it: from the grant's answer to just before
/// its release was asked for (inside the real holding, whatever the clocks).
struct Held {
    from: Instant,
    to: Instant,
    token: u64,
    node: usize,
}

#[test]
fn across_three_hosts_with_one_killed_every_acknowledged_put_is_delivered_once_and_no_two_hold_the_lock()
 {
    let Some((lab, pg)) = lab(3) else { return };
    let mut nodes = nodes(&lab, &pg, 3, "lease = \"2s\"\n");
    let sockets: Vec<_> = nodes.iter().map(|d| d.socket()).collect();
    let acked = Mutex::new(BTreeSet::new());
    let tried = Mutex::new(BTreeSet::new());
    let received = Mutex::new(Vec::new());
    let held = Mutex::new(Vec::<Held>::new());
    let (acked_adds, tried_adds) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let holdings_after = AtomicUsize::new(0);
    let killed_at = Mutex::new(None::<Instant>);
    let killed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let victim = 0;
    std::thread::scope(|s| {
        for (k, socket) in sockets.iter().enumerate() {
            for role in 0..4 {
                let (acked, tried, received, held) = (&acked, &tried, &received, &held);
                let (acked_adds, tried_adds) = (&acked_adds, &tried_adds);
                let (holdings_after, killed_at, killed, stop) =
                    (&holdings_after, &killed_at, &killed, &stop);
                s.spawn(move || {
                    let c = Client::connect_to(socket).unwrap();
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let done = match role {
                            // Producers: values of their own, recorded once acknowledged.
                            0 | 1 => {
                                let value = format!("{k}-{role}-{n}");
                                tried.lock().unwrap().insert(value.clone());
                                c.queue("work")
                                    .put(&value)
                                    .map(|_| acked.lock().unwrap().insert(value))
                                    .is_ok()
                            }
                            // A consumer: every item whose answer arrived.
                            2 => match c
                                .queue("work")
                                .get::<String>(Some(Duration::from_millis(200)))
                            {
                                Ok(v) => {
                                    received.lock().unwrap().push(v);
                                    true
                                }
                                Err(e) => e.code() == Some(ErrorCode::Empty),
                            },
                            // A locker, adding to a counter while it holds the lock.
                            _ => match c.lock("one").acquire(Some(Duration::from_secs(60))) {
                                Ok(g) => {
                                    let from = Instant::now();
                                    tried_adds.fetch_add(1, Ordering::SeqCst);
                                    if c.counter("adds").add(1).is_ok() {
                                        acked_adds.fetch_add(1, Ordering::SeqCst);
                                    }
                                    let token = g.token();
                                    let to = Instant::now();
                                    let released = g.release().is_ok();
                                    // A holder on the killed node held it at least until
                                    // the kill (its lease ran on after).
                                    let to = match *killed_at.lock().unwrap() {
                                        Some(at) if !released => to.min(at),
                                        _ => to,
                                    };
                                    held.lock().unwrap().push(Held {
                                        from,
                                        to,
                                        token,
                                        node: k,
                                    });
                                    if killed.load(Ordering::SeqCst) && k != victim {
                                        holdings_after.fetch_add(1, Ordering::SeqCst);
                                    }
                                    released
                                }
                                Err(e) => e.code() == Some(ErrorCode::Timeout),
                            },
                        };
                        if !done {
                            // Only the killed node's clients fail, and then they stop.
                            assert_eq!(k, victim, "an operation failed on a live node");
                            assert!(killed.load(Ordering::SeqCst), "failed before the kill");
                            return;
                        }
                    }
                });
            }
        }
        wait_for("some load on every node", || {
            let held = held.lock().unwrap();
            let per_node = (0..3).all(|k| held.iter().filter(|h| h.node == k).count() >= 3);
            (per_node && acked.lock().unwrap().len() >= 300).then_some(())
        });
        *killed_at.lock().unwrap() = Some(Instant::now());
        killed.store(true, Ordering::SeqCst);
        nodes[victim].kill9();
        // The others go on past the dead node's lease.
        wait_for("the lock to go round the live nodes after the kill", || {
            (holdings_after.load(Ordering::SeqCst) >= 20).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
    });
    let c = nodes[1].client();
    let mut got = received.into_inner().unwrap();
    while let Ok(items) = c
        .queue("work")
        .get_many::<String>(1000, Some(Duration::ZERO))
    {
        if items.is_empty() {
            break;
        }
        got.extend(items);
    }
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &got {
        *times.entry(v).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let tried = tried.into_inner().unwrap();
    assert!(
        times.keys().all(|v| tried.contains(*v)),
        "only values that were put"
    );
    let acked = acked.into_inner().unwrap();
    let missing: Vec<_> = acked
        .iter()
        .filter(|v| !times.contains_key(v.as_str()))
        .collect();
    // The one window: a get on the killed node that committed but whose answer never
    // left it (one consumer there).
    assert!(missing.len() <= 1, "acknowledged puts lost: {missing:?}");

    let mut held = held.into_inner().unwrap();
    held.sort_by_key(|h| h.from);
    for w in held.windows(2) {
        assert!(
            w[0].to <= w[1].from,
            "two holders at once: node{} (token {}) and node{} (token {})",
            w[0].node,
            w[0].token,
            w[1].node,
            w[1].token
        );
        assert!(w[0].token < w[1].token, "tokens grow in grant order");
    }
    let adds = c.counter("adds").get().unwrap() as usize;
    let (ok, all) = (
        acked_adds.load(Ordering::SeqCst),
        tried_adds.load(Ordering::SeqCst),
    );
    assert!(
        ok <= adds && adds <= all,
        "counter {adds}: {ok} acknowledged, {all} tried"
    );
}
