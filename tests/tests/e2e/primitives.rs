//! Queues, counters, arrays and locks: the multiprocessing seed patterns, concurrency,
//! durability across `kill -9`, connection-bound locks, bad input.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use corral_client::Client;
use corral_tests::{Backend, TestDaemon, anonymous_left, bin, make_anonymous, wait_for};
use serde_json::{Value, json};

fn code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or("<none>")
}

fn ctl_path() -> String {
    bin("corralctl").display().to_string()
}

/// The conformance suite: each named test (a function taking a [`Backend`]) runs once on
/// SQLite (`sqlite::NAME`) and once on a PostgreSQL cluster of its own (`postgres::NAME`).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(corral_tests::Backend::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(corral_tests::Backend::Postgres)
            })*
        }
    };
}

on_both_backends!(
    a_blocked_get_is_woken_by_a_put,
    a_killed_lock_holder_hands_the_lock_to_the_next_waiter,
    lock_status_names_the_supervised_holder,
    a_supervised_process_puts_on_a_queue_and_corralctl_gets_it,
    a_shared_value_incremented_by_a_process_reads_one,
    corralctl_queue_put_reads_stdin_one_item_per_line,
    three_processes_under_one_lock_never_overlap,
    fifty_clients_adding_a_thousand_times_count_exactly,
    ten_producers_and_ten_consumers_deliver_every_item_exactly_once,
    compare_and_swap_elects_one_leader_among_racing_clients,
    arrays_create_read_write_add_and_refuse_bad_input,
    twenty_clients_adding_to_one_array_element_count_exactly,
    a_bounded_queue_refuses_or_waits_when_full,
    acknowledged_gets_ack_nack_and_give_back_what_a_closed_connection_or_a_timeout_held,
    a_poison_item_goes_to_the_dead_letter_queue_after_max_deliveries,
    purge_and_delete_empty_a_queue_and_delete_ends_its_waiters,
    semaphore_waiters_are_woken_by_releases_first_come_first_served,
    a_bounded_semaphore_refuses_a_release_past_its_bound_and_bad_requests,
    event_waits_are_woken_by_set_and_answered_by_delete,
    anonymous_objects_are_deleted_once_the_last_connection_or_process_holding_them_is_gone,
    bad_input_gets_clear_errors,
    a_large_get_count_is_answered_in_pieces_of_at_most_a_mebibyte,
    a_connection_holding_a_lease_is_not_closed_as_idle_but_one_that_acked_its_lease_is,
);

fn a_supervised_process_puts_on_a_queue_and_corralctl_gets_it(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.unit(
        "worker",
        &format!(
            r#"
kind = "task"
command = ["{}", "queue", "put", "results", "Data from process"]
"#,
            ctl_path()
        ),
    );
    d.start();
    d.ctl_ok(&["start", "worker"]);
    d.ctl_ok(&["wait", "worker"]);
    assert_eq!(
        d.ctl_ok(&["queue", "get", "results"]),
        "Data from process\n"
    );
    assert_eq!(d.ctl_ok(&["queue", "len", "results"]).trim(), "0");
}

fn a_shared_value_incremented_by_a_process_reads_one(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.unit(
        "increment",
        &format!(
            "kind = \"task\"\ncommand = [\"{}\", \"counter\", \"add\", \"num\", \"1\"]\n",
            ctl_path()
        ),
    );
    d.start();
    assert_eq!(d.ctl_ok(&["counter", "get", "num"]).trim(), "0");
    d.ctl_ok(&["start", "increment"]);
    d.ctl_ok(&["wait", "increment"]);
    assert_eq!(d.ctl_ok(&["counter", "get", "num"]).trim(), "1");
}

fn three_processes_under_one_lock_never_overlap(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    let times = d.path("times");
    std::fs::create_dir(&times).unwrap();
    d.unit(
        "task",
        &format!(
            r#"
kind = "task"
instances = 3
command = ["{ctl}", "lock", "run", "printer", "--", "/bin/sh", "-c",
  "echo $(date +%s%N) enter >> {t}/{{instance}}; echo Task {{instance}} executing; sleep 0.2; echo $(date +%s%N) leave >> {t}/{{instance}}"]
"#,
            ctl = ctl_path(),
            t = times.display()
        ),
    );
    d.start();
    d.ctl_ok(&["start", "task"]);
    let waited = d.ctl_ok(&["wait", "task"]);
    assert_eq!(waited.matches("(exit 0)").count(), 3, "{waited}");
    let mut intervals = Vec::new();
    for i in 0..3 {
        assert_eq!(d.log("task", i), format!("Task {i} executing\n"));
        let text = std::fs::read_to_string(times.join(i.to_string())).unwrap();
        let stamps: Vec<u128> = text
            .lines()
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(stamps.len(), 2, "{text}");
        intervals.push((stamps[0], stamps[1]));
    }
    intervals.sort();
    for pair in intervals.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "critical sections overlap: {intervals:?}"
        );
    }
}

fn fifty_clients_adding_a_thousand_times_count_exactly(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let socket = d.socket();
    std::thread::scope(|s| {
        for _ in 0..50 {
            let socket = socket.clone();
            s.spawn(move || {
                let client = Client::connect_to(&socket).unwrap();
                let counter = client.counter("hits");
                for _ in 0..1000 {
                    counter.add(1).unwrap();
                }
            });
        }
    });
    assert_eq!(d.client().counter("hits").get().unwrap(), 50_000);
}

fn ten_producers_and_ten_consumers_deliver_every_item_exactly_once(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let socket = d.socket();
    let received: Vec<Vec<i64>> = std::thread::scope(|s| {
        let consumers: Vec<_> = (0..10)
            .map(|_| {
                let socket = socket.clone();
                s.spawn(move || {
                    let client = Client::connect_to(&socket).unwrap();
                    let queue = client.queue("work");
                    let mut got = Vec::new();
                    loop {
                        let item: i64 = queue.get(Some(Duration::from_secs(30))).unwrap();
                        if item < 0 {
                            return got;
                        }
                        got.push(item);
                    }
                })
            })
            .collect();
        let producers: Vec<_> = (0..10)
            .map(|p| {
                let socket = socket.clone();
                s.spawn(move || {
                    let client = Client::connect_to(&socket).unwrap();
                    let queue = client.queue("work");
                    for i in 0..1000 {
                        queue.put(p * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let client = Client::connect_to(&socket).unwrap();
        for _ in 0..10 {
            client.queue("work").put(-1).unwrap();
        }
        consumers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let all: Vec<i64> = received.iter().flatten().copied().collect();
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 10_000, "some item was delivered twice or lost");
    assert_eq!(distinct, (0..10_000).collect());
    // FIFO per queue: each consumer saw each producer's items in increasing order.
    for got in &received {
        for p in 0..10 {
            let mine: Vec<i64> = got.iter().copied().filter(|i| i / 1000 == p).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "out of order: {mine:?}"
            );
        }
    }
}

fn a_blocked_get_is_woken_by_a_put(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let socket = d.socket();
    let getter = std::thread::spawn(move || {
        let client = Client::connect_to(&socket).unwrap();
        client
            .queue("wake")
            .get::<String>(Some(Duration::from_secs(60)))
            .unwrap()
    });
    wait_for("the getter to wait", || {
        let list = d.client().queues().unwrap();
        list.iter()
            .any(|q| q.queue == "wake" && q.waiting_getters == 1)
            .then_some(())
    });
    d.client().queue("wake").put("hello").unwrap();
    assert_eq!(getter.join().unwrap(), "hello");
}

fn a_bounded_queue_refuses_or_waits_when_full(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let client = d.client();
    let q = client.queue("small");
    q.declare(Some(2)).unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    let err = q.try_put(3).unwrap_err();
    assert_eq!(err.server().unwrap().code, corral_proto::ErrorCode::Full);
    let socket = d.socket();
    let putter = std::thread::spawn(move || {
        let client = Client::connect_to(&socket).unwrap();
        client
            .queue("small")
            .put_timeout(3, Some(Duration::from_secs(60)))
            .unwrap()
    });
    wait_for("the putter to wait", || {
        let list = client.queues().unwrap();
        list.iter()
            .any(|q| q.queue == "small" && q.waiting_putters == 1)
            .then_some(())
    });
    assert_eq!(q.get::<i64>(None).unwrap(), 1);
    assert_eq!(putter.join().unwrap(), 2);
    assert_eq!(q.get_many::<i64>(10, None).unwrap(), vec![2, 3]);
}

fn a_killed_lock_holder_hands_the_lock_to_the_next_waiter(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    // A process group of its own, so that the test can kill corralctl and the `sleep` it
    // runs together, and nothing else.
    let mut holder = std::process::Command::new(bin("corralctl"))
        .arg("--socket")
        .arg(d.socket())
        .args(["lock", "run", "L", "--", "sleep", "1000"])
        .process_group(0)
        .spawn()
        .unwrap();
    let first_token = wait_for("corralctl to hold the lock", || {
        let info = d.client().lock("L").status().unwrap();
        info.holder.map(|h| h.token)
    });
    let socket = d.socket();
    let waiter = std::thread::spawn(move || {
        let client = Client::connect_to(&socket).unwrap();
        let guard = client
            .lock("L")
            .acquire(Some(Duration::from_secs(60)))
            .unwrap();
        guard.token()
    });
    wait_for("the waiter to queue", || {
        (d.client().lock("L").status().unwrap().waiters == 1).then_some(())
    });
    // SIGKILL to corralctl and its child: no chance to release.
    let group = nix::unistd::Pid::from_raw(holder.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
    holder.wait().unwrap();
    let second_token = waiter.join().unwrap();
    assert!(second_token > first_token);
    wait_for("the holder's sleep to be gone", || {
        corral_tests::group_members(group.as_raw())
            .is_empty()
            .then_some(())
    });
}

fn lock_status_names_the_supervised_holder(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.unit(
        "holder",
        &format!(
            "command = [\"{}\", \"lock\", \"run\", \"db\", \"--\", \"sleep\", \"1000\"]\n",
            ctl_path()
        ),
    );
    d.start();
    let holder = wait_for("the unit to hold the lock", || {
        d.client().lock("db").status().unwrap().holder
    });
    assert_eq!(holder.unit.as_deref(), Some("holder"));
    assert_eq!(holder.instance, Some(0));
    let table = d.ctl_ok(&["lock", "status"]);
    assert!(
        table.contains("db") && table.contains("holder.0"),
        "{table}"
    );
    let client = d.client();
    let busy = client.lock("db").try_acquire().unwrap();
    assert!(busy.is_none());
    d.ctl_ok(&["stop", "holder"]);
    // The release happens when corrald sees the holder's connection close, which may come
    // just after `stop` has answered (another connection, another task).
    let _guard = wait_for("the lock released when its holder's process died", || {
        client.lock("db").try_acquire().unwrap()
    });
}

#[test]
fn acknowledged_state_survives_kill_9_of_corrald() {
    let mut d = TestDaemon::new();
    d.start();
    let token_before;
    {
        let client = d.client();
        let q = client.queue("durable");
        for i in 0..100 {
            q.put(json!({ "n": i })).unwrap();
        }
        let _: Value = q.get(None).unwrap(); // item 0 handed out: gone for good
        client.counter("kept").add(41).unwrap();
        client.counter("kept").add(1).unwrap();
        client
            .array("arr")
            .create_f64(3, Some(&[1.5, 2.5, 3.5]))
            .unwrap();
        client.array("arr").add_f64(2, 1.0).unwrap();
        token_before = client.lock("l").acquire(None).unwrap().token();
    }
    d.kill9();
    d.start();
    let client = d.client();
    let items: Vec<Value> = client.queue("durable").get_many(1000, None).unwrap();
    let expected: Vec<Value> = (1..100).map(|i| json!({ "n": i })).collect();
    assert_eq!(items, expected);
    assert_eq!(client.counter("kept").get().unwrap(), 42);
    assert_eq!(client.array("arr").get_f64(2).unwrap(), 4.5);
    let token_after = client.lock("l").acquire(None).unwrap().token();
    assert!(
        token_after > token_before,
        "fencing tokens grow across restarts"
    );
    let listed = d.ctl_ok(&["queue", "list"]);
    assert!(listed.contains("durable"), "{listed}");
}

#[test]
fn queue_totals_survive_a_clean_restart_and_items_stay_exact_after_kill_9() {
    // A queue's totals are written lazily (at most a second behind); its items never are.
    let mut d = TestDaemon::new();
    d.start();
    {
        let client = d.client();
        let q = client.queue("jobs");
        for i in 0..3 {
            q.put(json!(i)).unwrap();
        }
        let _: Value = q.get(None).unwrap();
    }
    d.ctl_ok(&["shutdown"]);
    assert_eq!(d.wait_exit(), Some(0));
    d.start();
    let info = d.client().queue("jobs").info().unwrap();
    assert_eq!((info.depth, info.put_total, info.got_total), (2, 3, 1));
    {
        let client = d.client();
        let q = client.queue("jobs");
        q.put(json!(3)).unwrap();
        q.put(json!(4)).unwrap();
        let _: Value = q.get(None).unwrap();
    }
    d.kill9();
    d.start();
    let client = d.client();
    let q = client.queue("jobs");
    let info = q.info().unwrap();
    assert_eq!(info.depth, 3);
    assert!((3..=5).contains(&info.put_total), "{info:?}");
    assert!((1..=2).contains(&info.got_total), "{info:?}");
    // New items go after the ones that survived.
    q.put(json!(5)).unwrap();
    let items: Vec<Value> = q.get_many(10, None).unwrap();
    assert_eq!(items, vec![json!(2), json!(3), json!(4), json!(5)]);
}

fn bad_input_gets_clear_errors(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let mut c = d.raw();
    let cases = [
        (
            r#"{"id":1,"op":"counter_add","counter":"c","delta":"one"}"#,
            "bad_request",
        ),
        (
            r#"{"id":2,"op":"queue_get","queue":"q","timeout_ms":-1}"#,
            "bad_request",
        ),
        (
            r#"{"id":3,"op":"queue_get","queue":"q","block":false}"#,
            "empty",
        ),
        (
            r#"{"id":4,"op":"queue_get","queue":"q","count":0}"#,
            "bad_request",
        ),
        (
            r#"{"id":5,"op":"queue_put","queue":"../etc","value":1}"#,
            "bad_request",
        ),
        (r#"{"id":6,"op":"lock_release","lock":"never"}"#, "not_held"),
        (r#"{"id":7,"op":"array_get","array":"none"}"#, "not_found"),
        (
            r#"{"id":8,"op":"array_create","array":"a","kind":"i64","length":2}"#,
            "<none>",
        ),
        (
            r#"{"id":9,"op":"array_set","array":"a","index":5,"value":1}"#,
            "out_of_range",
        ),
        (
            r#"{"id":10,"op":"array_set","array":"a","index":0,"value":1.5}"#,
            "type_mismatch",
        ),
        (
            r#"{"id":11,"op":"array_create","array":"a","kind":"f64","length":2}"#,
            "type_mismatch",
        ),
        (
            r#"{"id":12,"op":"counter_set","counter":"c","value":9223372036854775807}"#,
            "<none>",
        ),
        (
            r#"{"id":13,"op":"counter_add","counter":"c","delta":1}"#,
            "overflow",
        ),
        (
            r#"{"id":14,"op":"queue_declare","queue":"z","maxsize":0}"#,
            "bad_request",
        ),
        (
            r#"{"id":15,"op":"counter_add","counter":"c","delta":1e400}"#,
            "bad_request",
        ),
    ];
    for (request, expected) in cases {
        let reply = c.roundtrip(request);
        assert_eq!(code(&reply), expected, "{request} -> {reply}");
    }
    // An unknown queue is an empty one.
    let len = c.roundtrip(r#"{"id":20,"op":"queue_len","queue":"never-used"}"#);
    assert_eq!(len["result"]["depth"], 0);
    // Items over max_item_bytes (256 KiB by default) are refused whole.
    let big = format!(
        r#"{{"id":21,"op":"queue_put","queue":"q","value":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    assert_eq!(code(&c.roundtrip(&big)), "too_large");
    assert_eq!(
        c.roundtrip(r#"{"id":22,"op":"queue_len","queue":"q"}"#)["result"]["depth"],
        0
    );
    // The CLI refuses a negative timeout as a usage error.
    let out = d.ctl(&["queue", "get", "q", "--timeout", "-1"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn corralctl_queue_put_reads_stdin_one_item_per_line(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let mut child = std::process::Command::new(bin("corralctl"))
        .arg("--socket")
        .arg(d.socket())
        .args(["queue", "put", "lines", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"plain text\n{\"k\": 1}\n42\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let out = d.ctl_ok(&["queue", "get", "lines", "--count", "10"]);
    assert_eq!(out, "plain text\n{\"k\":1}\n42\n");
    let json: Value =
        serde_json::from_str(&d.ctl_ok(&["--json", "counter", "add", "n", "-5"])).unwrap();
    assert_eq!(json["value"], -5);
}

fn compare_and_swap_elects_one_leader_among_racing_clients(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let socket = d.socket();
    // Ten clients race to swap the never-set counter (0) to their own number: one wins.
    let racers: Vec<_> = (1..=10)
        .map(|me| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let client = Client::connect_to(&socket).unwrap();
                client.counter("leader").compare_and_swap(0, me).unwrap()
            })
        })
        .collect();
    let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    let winners: Vec<_> = results.iter().filter(|r| r.swapped).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let leader = winners[0].value;
    for r in &results {
        assert_eq!(
            r.value, leader,
            "every loser is told the winner: {results:?}"
        );
    }
    let c = d.client();
    assert_eq!(c.counter("leader").get().unwrap(), leader);
    let wrong = c
        .counter("leader")
        .compare_and_swap(leader + 1, 99)
        .unwrap();
    assert!(!wrong.swapped);
    assert_eq!(wrong.value, leader);
    // A counter never set is 0: only `expected: 0` swaps it, and a refused swap makes none.
    assert!(!c.counter("fresh").compare_and_swap(5, 6).unwrap().swapped);
    assert!(c.counters().unwrap().iter().all(|v| v.counter != "fresh"));
    assert!(c.counter("leader").delete().unwrap());
    assert!(!c.counter("leader").delete().unwrap());
    assert_eq!(c.counter("leader").get().unwrap(), 0);
    assert_eq!(
        d.ctl_ok(&["counter", "cas", "leader", "0", "7"]).trim(),
        "7"
    );
}

fn arrays_create_read_write_add_and_refuse_bad_input(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let c = d.client();
    let temps = c.array("temps");
    let made = temps.create_f64(3, Some(&[1.5, -2.0, 0.0])).unwrap();
    assert_eq!(made.length, 3);
    assert_eq!(temps.get_f64(1).unwrap(), -2.0);
    assert_eq!(temps.add_f64(1, 0.5).unwrap(), -1.5);
    temps.set_f64(2, 4.25).unwrap();
    let all = temps.get_all().unwrap();
    let values: Vec<f64> = all.values.iter().map(|n| n.as_f64().unwrap()).collect();
    assert_eq!(values, vec![1.5, -1.5, 4.25]);
    // Creating again with the same shape keeps the values; another shape is refused.
    assert_eq!(temps.create_f64(3, None).unwrap().values, all.values);
    let err = temps.create_i64(3, None).unwrap_err();
    assert_eq!(
        err.code(),
        Some(corral_proto::ErrorCode::TypeMismatch),
        "{err}"
    );

    let hits = c.array("hits");
    hits.create_i64(4, None).unwrap();
    assert_eq!(hits.add_i64(3, 5).unwrap(), 5);
    hits.set_i64(0, i64::MAX).unwrap();
    let err = hits.add_i64(0, 1).unwrap_err();
    assert_eq!(err.code(), Some(corral_proto::ErrorCode::Overflow), "{err}");
    assert_eq!(
        hits.get_i64(0).unwrap(),
        i64::MAX,
        "an overflow changes nothing"
    );
    let slice = hits.get_slice(2, 2).unwrap();
    assert_eq!(slice.offset, 2);
    assert_eq!(slice.length, 4);
    assert_eq!(slice.values, vec![serde_json::Number::from(0), 5.into()]);

    let mut raw = d.raw();
    let cases = [
        (
            r#"{"id":1,"op":"array_set","array":"hits","index":4,"value":1}"#,
            "out_of_range",
        ),
        (
            r#"{"id":2,"op":"array_set","array":"hits","index":0,"value":1.5}"#,
            "type_mismatch",
        ),
        (r#"{"id":3,"op":"array_get","array":"none"}"#, "not_found"),
        (
            r#"{"id":4,"op":"array_get","array":"hits","offset":5}"#,
            "out_of_range",
        ),
        (
            r#"{"id":5,"op":"array_create","array":"z","kind":"i64","length":0}"#,
            "bad_request",
        ),
        (
            r#"{"id":6,"op":"array_create","array":"z","kind":"i64","length":2,"values":[1]}"#,
            "bad_request",
        ),
        (
            r#"{"id":7,"op":"array_add","array":"temps","index":0,"delta":1e308}"#,
            "<none>",
        ),
        (
            r#"{"id":8,"op":"array_add","array":"temps","index":0,"delta":1e308}"#,
            "overflow",
        ),
    ];
    for (request, expected) in cases {
        let reply = raw.roundtrip(request);
        assert_eq!(code(&reply), expected, "{request} -> {reply}");
    }
    let names: Vec<_> = c.arrays().unwrap().into_iter().map(|a| a.array).collect();
    assert_eq!(names, vec!["hits", "temps"]);
    assert!(hits.delete().unwrap());
    assert!(!hits.delete().unwrap());
    let err = hits.get_i64(0).unwrap_err();
    assert_eq!(err.code(), Some(corral_proto::ErrorCode::NotFound), "{err}");
}

fn twenty_clients_adding_to_one_array_element_count_exactly(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    d.client().array("tally").create_i64(2, None).unwrap();
    let socket = d.socket();
    let adders: Vec<_> = (0..20)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let client = Client::connect_to(&socket).unwrap();
                for _ in 0..50 {
                    client.array("tally").add_i64(1, 1).unwrap();
                }
            })
        })
        .collect();
    for a in adders {
        a.join().unwrap();
    }
    let client = d.client();
    let tally = client.array("tally");
    assert_eq!(tally.get_i64(1).unwrap(), 1000);
    assert_eq!(tally.get_i64(0).unwrap(), 0);
}

fn acknowledged_gets_ack_nack_and_give_back_what_a_closed_connection_or_a_timeout_held(
    backend: Backend,
) {
    use corral_proto::ErrorCode;
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let c = d.client();
    let q = c.queue("jobs");
    for v in ["a", "b", "c", "d"] {
        q.put(v).unwrap();
    }
    let minute = Duration::from_secs(60);
    let a = q.get_ack::<String>(None, minute).unwrap();
    assert_eq!((a.value.as_str(), a.deliveries()), ("a", 1));
    let info = q.info().unwrap();
    assert_eq!((info.depth, info.in_flight), (3, 1));
    // A nack puts it back at the head at once, for a second delivery under a new lease.
    let first_lease = a.id();
    a.nack().unwrap();
    let a = q.get_ack::<String>(None, minute).unwrap();
    assert_eq!((a.value.as_str(), a.deliveries()), ("a", 2));
    assert_ne!(a.id(), first_lease);
    let stale = q.ack(&[first_lease]).unwrap_err();
    assert_eq!(stale.code(), Some(ErrorCode::NotHeld), "{stale}");
    // Acking several leases is all or nothing.
    let b = q.get_ack::<String>(None, minute).unwrap();
    assert_eq!(b.value, "b");
    let err = q
        .ack(&[a.id(), b.id(), a.id() + b.id() + 1000])
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotHeld), "{err}");
    assert_eq!(q.info().unwrap().in_flight, 2, "nothing was acked");
    assert_eq!(q.ack(&[a.id(), b.id(), b.id()]).unwrap(), 2);
    let info = q.info().unwrap();
    assert_eq!((info.depth, info.in_flight), (2, 0));
    // A connection that closes gives its leased items back, at their place.
    {
        let other = d.client();
        let taken = other.queue("jobs").get_ack::<String>(None, minute).unwrap();
        assert_eq!(taken.value, "c");
    }
    wait_for("the closed connection's item to come back", || {
        (q.info().unwrap().depth == 2).then_some(())
    });
    let c_again = q.get_ack::<String>(None, minute).unwrap();
    assert_eq!((c_again.value.as_str(), c_again.deliveries()), ("c", 2));
    // A lease whose visibility timeout passes is delivered again (to a blocked get).
    let short = q
        .get_ack::<String>(None, Duration::from_millis(200))
        .unwrap();
    assert_eq!(short.value, "d");
    let again = q
        .get_ack::<String>(Some(Duration::from_secs(60)), minute)
        .unwrap();
    assert_eq!((again.value.as_str(), again.deliveries()), ("d", 2));
    let late = short.ack().unwrap_err();
    assert_eq!(late.code(), Some(ErrorCode::NotHeld), "{late}");
    again.ack().unwrap();
    c_again.ack().unwrap();
    let info = q.info().unwrap();
    assert_eq!((info.depth, info.in_flight), (0, 0));
    // Bad requests are refused as on every backend.
    let mut raw = d.raw();
    let cases = [
        (
            r#"{"id":1,"op":"queue_ack","queue":"jobs","ids":[]}"#,
            "bad_request",
        ),
        (
            r#"{"id":2,"op":"queue_get","queue":"jobs","visibility_ms":5}"#,
            "bad_request",
        ),
        (
            r#"{"id":3,"op":"queue_get","queue":"jobs","ack":true,"visibility_ms":0}"#,
            "bad_request",
        ),
        (
            r#"{"id":4,"op":"queue_nack","queue":"jobs","ids":[123456789]}"#,
            "not_held",
        ),
    ];
    for (request, expected) in cases {
        let reply = raw.roundtrip(request);
        assert_eq!(code(&reply), expected, "{request} -> {reply}");
    }
}

fn a_poison_item_goes_to_the_dead_letter_queue_after_max_deliveries(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    // A queue declared in corral.toml, with a dead-letter queue of its own.
    std::fs::write(
        d.path("corral.toml"),
        "[queues.configured]\nmax_deliveries = 1\ndead_letter = \"configured-failed\"\n",
    )
    .unwrap();
    let config = d.path("corral.toml").display().to_string();
    d.extra_args.extend(["--config".into(), config]);
    d.start();
    let c = d.client();
    let q = c.queue("work");
    let info = q.declare_dead_letter(None, Some(2), None).unwrap();
    assert_eq!(info.max_deliveries, Some(2));
    assert_eq!(info.dead_letter.as_deref(), Some("work.dead"));
    q.put("poison").unwrap();
    q.put("fine").unwrap();
    let minute = Duration::from_secs(60);
    for n in 1..=2 {
        let got = q.get_ack::<String>(None, minute).unwrap();
        assert_eq!((got.value.as_str(), got.deliveries()), ("poison", n));
        got.nack().unwrap();
    }
    // Delivered twice and returned: in the dead-letter queue, not back.
    let next = q.get_ack::<String>(None, minute).unwrap();
    assert_eq!(next.value, "fine");
    next.ack().unwrap();
    assert_eq!(q.info().unwrap().depth, 0);
    let dead = c.queue("work.dead");
    assert_eq!(dead.get::<String>(None).unwrap(), "poison");
    // The declared queue's item, its lease passing once, is dead-lettered.
    let configured = c.queue("configured");
    assert_eq!(configured.info().unwrap().max_deliveries, Some(1));
    configured.put(7).unwrap();
    let _lost = configured
        .get_ack::<u32>(None, Duration::from_millis(100))
        .unwrap();
    let failed: u32 = c
        .queue("configured-failed")
        .get(Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(failed, 7);
    assert_eq!(configured.info().unwrap().in_flight, 0);
}

fn purge_and_delete_empty_a_queue_and_delete_ends_its_waiters(backend: Backend) {
    use corral_proto::ErrorCode;
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let c = d.client();
    let q = c.queue("old");
    for n in 0..3 {
        q.put(n).unwrap();
    }
    let leased = q.get_ack::<i64>(None, Duration::from_secs(60)).unwrap();
    assert_eq!(q.purge().unwrap(), 3, "waiting and in-flight items");
    let info = q.info().unwrap();
    assert_eq!((info.depth, info.in_flight), (0, 0));
    let err = leased.ack().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotHeld), "{err}");
    // A getter blocked on a queue that is deleted is told so.
    let socket = d.socket();
    let getter = std::thread::spawn(move || {
        let client = Client::connect_to(&socket).unwrap();
        client
            .queue("old")
            .get::<i64>(Some(Duration::from_secs(60)))
            .unwrap_err()
    });
    wait_for("the getter to wait", || {
        (q.info().unwrap().waiting_getters == 1).then_some(())
    });
    assert!(q.delete().unwrap());
    let err = getter.join().unwrap();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    assert!(!q.delete().unwrap());
    assert!(c.queues().unwrap().iter().all(|i| i.queue != "old"));
}

fn semaphore_waiters_are_woken_by_releases_first_come_first_served(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let client = d.client();
    let sem = client.semaphore("fifo");
    assert_eq!(sem.create(1, None).unwrap().value, 1);
    assert_eq!(sem.acquire(None).unwrap(), 0);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for n in 0..3 {
        let socket = d.socket();
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let client = Client::connect_to(&socket).unwrap();
            client
                .semaphore("fifo")
                .acquire(Some(Duration::from_secs(120)))
                .unwrap();
            tx.send(n).unwrap();
            // Hold the connection until told, as a permit is not bound to it anyway.
        }));
        wait_for("the waiter to queue", || {
            (sem.get().unwrap().waiters == n + 1).then_some(())
        });
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        // The permit goes to the first waiter, not to the free count.
        assert_eq!(sem.release().unwrap(), 0);
        order.push(rx.recv_timeout(Duration::from_secs(60)).unwrap());
    }
    assert_eq!(order, vec![0, 1, 2]);
    for t in threads {
        t.join().unwrap();
    }
    let value = sem.get().unwrap();
    assert_eq!((value.value, value.waiters), (0, 0));
    sem.release().unwrap();
    assert_eq!(sem.get().unwrap().value, 1);
    // A waiter whose wait times out leaves the line.
    assert!(sem.try_acquire().unwrap());
    let err = sem.acquire(Some(Duration::from_millis(50))).unwrap_err();
    assert_eq!(err.code(), Some(corral_proto::ErrorCode::Timeout), "{err}");
    assert_eq!(sem.get().unwrap().waiters, 0);
    // A semaphore deleted under a waiter ends its wait with not_found.
    let socket = d.socket();
    let waiter = std::thread::spawn(move || {
        let client = Client::connect_to(&socket).unwrap();
        client
            .semaphore("fifo")
            .acquire(Some(Duration::from_secs(120)))
            .unwrap_err()
    });
    wait_for("the waiter to queue", || {
        (sem.get().unwrap().waiters == 1).then_some(())
    });
    assert!(sem.delete().unwrap());
    let err = waiter.join().unwrap();
    assert_eq!(err.code(), Some(corral_proto::ErrorCode::NotFound), "{err}");
    assert!(client.semaphores().unwrap().is_empty());
}

fn a_bounded_semaphore_refuses_a_release_past_its_bound_and_bad_requests(backend: Backend) {
    use corral_proto::ErrorCode;
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let client = d.client();
    let sem = client.semaphore("bounded");
    sem.create(1, Some(1)).unwrap();
    let err = sem.release().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Overflow), "{err}");
    assert!(sem.try_acquire().unwrap());
    assert!(!sem.try_acquire().unwrap(), "no permit left");
    sem.release().unwrap();
    // Created again with the same bound: left as it is; with another bound: refused.
    assert_eq!(sem.create(0, Some(1)).unwrap().value, 1);
    let err = sem.create(1, None).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TypeMismatch), "{err}");
    let err = client.semaphore("never").acquire(None).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    let err = client.semaphore("never").release().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    let err = client.semaphore("x").create(3, Some(2)).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    let listed: Vec<_> = client
        .semaphores()
        .unwrap()
        .into_iter()
        .map(|s| (s.semaphore, s.value, s.bound))
        .collect();
    assert_eq!(listed, vec![("bounded".to_string(), 1, Some(1))]);
}

fn event_waits_are_woken_by_set_and_answered_by_delete(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let client = d.client();
    let event = client.event("go");
    assert!(!event.is_set().unwrap());
    assert!(!event.wait(Some(Duration::from_millis(20))).unwrap());
    let mut waiters = Vec::new();
    for _ in 0..2 {
        let socket = d.socket();
        waiters.push(std::thread::spawn(move || {
            let client = Client::connect_to(&socket).unwrap();
            client.event("go").wait(Some(Duration::from_secs(120)))
        }));
    }
    wait_for("both waiters to wait", || {
        let e = client.events().unwrap();
        e.iter()
            .any(|e| e.event == "go" && e.waiters == 2)
            .then_some(())
    });
    event.set().unwrap();
    for w in waiters {
        assert!(w.join().unwrap().unwrap());
    }
    assert!(event.wait(None).unwrap(), "a set event does not block");
    event.clear().unwrap();
    assert!(!event.is_set().unwrap());
    // A waiter of an event that is deleted is answered: not set.
    let socket = d.socket();
    let waiter = std::thread::spawn(move || {
        let client = Client::connect_to(&socket).unwrap();
        client.event("go").wait(Some(Duration::from_secs(120)))
    });
    wait_for("the waiter to wait", || {
        let e = client.events().unwrap();
        e.iter()
            .any(|e| e.event == "go" && e.waiters == 1)
            .then_some(())
    });
    assert!(event.delete().unwrap());
    assert!(!waiter.join().unwrap().unwrap());
    assert!(!event.delete().unwrap());
}

fn anonymous_objects_are_deleted_once_the_last_connection_or_process_holding_them_is_gone(
    backend: Backend,
) {
    use corral_proto::{AnonKind, ErrorCode};
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let session = "s-0123456789abcdef";
    let mut program = std::process::Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap();
    {
        // Two holders: this connection, which closes first, and a process.
        let client = d.client();
        client.anon_hold(session, None).unwrap();
        let held = client.anon_hold(session, Some(program.id())).unwrap();
        assert_eq!(held.holders, 2);
        make_anonymous(&client, session);
    }
    let client = d.client();
    assert_eq!(anonymous_left(&client), 5, "the process still holds them");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(program.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    program.wait().unwrap();
    wait_for("the anonymous objects to be removed", || {
        (anonymous_left(&client) == 0).then_some(())
    });
    // A session held by a connection alone ends with it.
    {
        let holder = d.client();
        holder.anon_hold("s-two", None).unwrap();
        holder.counter("anon-two").add(1).unwrap();
        holder
            .anon_add("s-two", AnonKind::Counter, "anon-two")
            .unwrap();
    }
    wait_for("the connection's object to be removed", || {
        let counters = client.counters().unwrap();
        counters
            .iter()
            .all(|c| c.counter != "anon-two")
            .then_some(())
    });
    let err = client
        .anon_add("nobody-holds-this", AnonKind::Queue, "q")
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    let err = client.anon_hold("bad token!", None).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    // A named object is untouched.
    client.counter("named").add(1).unwrap();
    assert_eq!(client.counter("named").get().unwrap(), 1);
}

fn a_large_get_count_is_answered_in_pieces_of_at_most_a_mebibyte(backend: Backend) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    d.start();
    let mut c = d.raw();
    let item = "x".repeat(200_000);
    for id in 1..=12 {
        let put = json!({"id": id, "op": "queue_put", "queue": "q", "value": item});
        assert!(c.roundtrip(&put.to_string()).get("result").is_some());
    }
    // 1 MiB of items per reply: five of these (200,002 bytes of JSON each), then the
    // rest; acknowledged gets alike.
    let sizes: Vec<usize> = [
        r#"{"id":20,"op":"queue_get","queue":"q","count":1000}"#,
        r#"{"id":21,"op":"queue_get","queue":"q","count":1000,"ack":true}"#,
        r#"{"id":22,"op":"queue_get","queue":"q","count":1000}"#,
    ]
    .iter()
    .map(|request| {
        let reply = c.roundtrip(request);
        reply["result"]["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{reply}"))
            .len()
    })
    .collect();
    assert_eq!(sizes, vec![5, 5, 2]);
}

fn a_connection_holding_a_lease_is_not_closed_as_idle_but_one_that_acked_its_lease_is(
    backend: Backend,
) {
    let Some(mut d) = backend.daemon() else {
        return;
    };
    std::fs::write(d.path("corral.toml"), "idle_timeout = \"1s\"\n").unwrap();
    let config = d.path("corral.toml").display().to_string();
    d.extra_args.extend(["--config".into(), config]);
    d.start();
    d.client().queue("q").put(1).unwrap();
    d.client().queue("q").put(2).unwrap();
    let get = r#"{"id":1,"op":"queue_get","queue":"q","ack":true,"visibility_ms":60000}"#;
    let mut holder = d.raw();
    let leased = holder.roundtrip(get);
    assert!(leased.get("result").is_some(), "{leased}");
    let mut done = d.raw();
    let leased = done.roundtrip(get);
    let id = leased["result"]["leases"][0]["id"]
        .as_u64()
        .expect("a lease");
    let acked = done.roundtrip(&format!(
        r#"{{"id":2,"op":"queue_ack","queue":"q","ids":[{id}]}}"#
    ));
    assert!(acked.get("result").is_some(), "{acked}");
    // The one whose lease is over is closed as idle; the holder is served on.
    assert!(done.recv().is_none(), "an idle connection is closed");
    let again = holder.roundtrip(r#"{"id":3,"op":"hello","version":1}"#);
    assert_eq!(again["id"], 3);
}
