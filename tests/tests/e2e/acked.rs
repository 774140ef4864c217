//! Acknowledged queue gets (at-least-once): leases, ack, nack, redelivery on disconnect and
//! on a passed visibility timeout, dead-lettering, and `kill -9` of corrald with items in
//! flight.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_client::{Client, ErrorCode};
use corral_tests::{TestDaemon, wait_for};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);

fn lease_line(line: &str) -> (u64, String) {
    let (id, item) = line
        .trim_end()
        .split_once('\t')
        .unwrap_or_else(|| panic!("`queue get --ack` prints ID<TAB>ITEM, got {line:?}"));
    (id.parse().expect("lease id"), item.to_owned())
}

#[test]
fn an_acked_item_is_removed_for_good() {
    let mut d = TestDaemon::new();
    d.start();
    let client = d.client();
    let q = client.queue("jobs");
    q.put("a").unwrap();
    q.put("b").unwrap();
    let job = q.get_ack::<String>(None, LONG).unwrap();
    assert_eq!(job.value, "a");
    assert_eq!(job.deliveries(), 1);
    let info = q.info().unwrap();
    assert_eq!((info.depth, info.in_flight), (1, 1), "{info:?}");
    let id = job.id();
    assert_eq!(job.ack().unwrap(), "a");
    let info = q.info().unwrap();
    assert_eq!((info.depth, info.in_flight), (1, 0), "{info:?}");
    assert_eq!(info.got_total, 1);
    // A second ack of the same lease changes nothing.
    let err = q.ack(&[id]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotHeld), "{err}");
    // Closing the consumer's connection after the ack brings nothing back.
    drop(client);
    let client = d.client();
    let q = client.queue("jobs");
    let rest: Vec<String> = q.try_get_many(10).unwrap();
    assert_eq!(rest, ["b"]);
}

#[test]
fn a_consumer_that_disconnects_gives_its_item_back_with_two_deliveries() {
    let mut d = TestDaemon::new();
    d.start();
    let producer = d.client();
    producer.queue("jobs").put(json!({"job": 1})).unwrap();
    producer.queue("jobs").put(json!({"job": 2})).unwrap();
    {
        let consumer = d.client();
        let job = consumer.queue("jobs").get_ack::<Value>(None, LONG).unwrap();
        assert_eq!(job.value, json!({"job": 1}));
        assert_eq!(job.deliveries(), 1);
        // The consumer goes away without an ack: its connection closes.
    }
    let other = d.client();
    // corrald returns the lease once it has seen the connection close.
    wait_for("the lease to be returned", || {
        (other.queue("jobs").info().unwrap().in_flight == 0).then_some(())
    });
    let job = other
        .queue("jobs")
        .get_ack::<Value>(Some(LONG), LONG)
        .unwrap();
    assert_eq!(
        job.value,
        json!({"job": 1}),
        "back at the head of the queue"
    );
    assert_eq!(job.deliveries(), 2);
    job.ack().unwrap();
    let next = other.queue("jobs").get_ack::<Value>(None, LONG).unwrap();
    assert_eq!(
        (next.value.clone(), next.deliveries()),
        (json!({"job": 2}), 1)
    );
}

#[test]
fn a_killed_consumer_process_gives_its_item_back() {
    // A real consumer process: a Python worker leasing an item, then SIGKILLed.
    let mut d = TestDaemon::new();
    d.start();
    let client = d.client();
    client.queue("work").put("payload").unwrap();
    let marker = d.path("leased");
    let script = format!(
        "import socket, json, os\n\
         s = socket.socket(socket.AF_UNIX); s.connect({sock:?})\n\
         f = s.makefile('rw')\n\
         f.write(json.dumps({{'id': 1, 'op': 'hello', 'version': 1}}) + '\\n'); f.flush(); f.readline()\n\
         f.write(json.dumps({{'id': 2, 'op': 'queue_get', 'queue': 'work', 'ack': True}}) + '\\n'); f.flush()\n\
         open({marker:?}, 'w').write(f.readline())\n\
         import time\n\
         while True: time.sleep(1)\n",
        sock = d.socket().display().to_string(),
        marker = marker.display().to_string(),
    );
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .spawn()
        .expect("python3");
    let reply = wait_for("the worker to lease the item", || {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|s| s.ends_with('\n'))
    });
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["result"]["items"], json!(["payload"]), "{reply}");
    assert_eq!(client.queue("work").info().unwrap().in_flight, 1);
    child.kill().unwrap();
    child.wait().unwrap();
    let job = client
        .queue("work")
        .get_ack::<String>(Some(LONG), LONG)
        .unwrap();
    assert_eq!((job.value.as_str(), job.deliveries()), ("payload", 2));
}

#[test]
fn an_item_whose_lease_passes_is_delivered_again() {
    let mut d = TestDaemon::new();
    d.start();
    let slow = d.client();
    slow.queue("jobs").put("slow job").unwrap();
    let first = slow
        .queue("jobs")
        .get_ack::<String>(None, Duration::from_millis(300))
        .unwrap();
    // The slow consumer keeps its connection open, but lets the lease pass.
    let other = d.client();
    let second = other
        .queue("jobs")
        .get_ack::<String>(Some(LONG), LONG)
        .unwrap();
    assert_eq!(second.value, "slow job");
    assert_eq!(second.deliveries(), 2);
    let err = first.ack().unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotHeld), "{err}");
    assert!(err.to_string().contains("not held"), "{err}");
    second.ack().unwrap();
    let info = other.queue("jobs").info().unwrap();
    assert_eq!((info.depth, info.in_flight), (0, 0), "{info:?}");
}

#[test]
fn nack_returns_the_item_to_the_head_at_once_and_corralctl_acks_by_id() {
    let mut d = TestDaemon::new();
    d.start();
    d.ctl_ok(&["queue", "put", "jobs", "first"]);
    d.ctl_ok(&["queue", "put", "jobs", "second"]);
    // corralctl's leases outlive the command; `queue ack` ends them from another one.
    let (id, item) = lease_line(&d.ctl_ok(&["queue", "get", "jobs", "--ack"]));
    assert_eq!(item, "first");
    let listed = d.ctl_ok(&["queue", "list"]);
    assert!(listed.contains("IN FLIGHT"), "{listed}");
    d.ctl_ok(&["queue", "nack", "jobs", &id.to_string()]);
    let out = d.ctl_ok(&["--json", "queue", "get", "jobs", "--ack", "--no-wait"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["items"],
        json!(["first"]),
        "nacked item is at the head: {v}"
    );
    assert_eq!(v["leases"][0]["deliveries"], 2, "{v}");
    let id2 = v["leases"][0]["id"].as_u64().unwrap();
    assert_ne!(id, id2, "each delivery has its own lease");
    // The old lease is over.
    let stale = d.ctl(&["queue", "ack", "jobs", &id.to_string()]);
    assert_eq!(stale.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(stderr.contains("not held"), "{stderr}");
    d.ctl_ok(&["queue", "ack", "jobs", &id2.to_string()]);
    assert_eq!(d.ctl_ok(&["queue", "get", "jobs"]), "second\n");
    let info: Value = serde_json::from_str(&d.ctl_ok(&["--json", "queue", "len", "jobs"])).unwrap();
    assert_eq!(
        (info["depth"].as_u64(), info["in_flight"].as_u64()),
        (Some(0), Some(0))
    );
}

#[test]
fn a_poison_item_goes_to_the_dead_letter_queue_after_max_deliveries() {
    let mut d = TestDaemon::new();
    d.start();
    let declared = d.ctl_ok(&["queue", "declare", "jobs", "--max-deliveries", "3"]);
    assert!(declared.contains("jobs.dead"), "{declared}");
    let client = d.client();
    let q = client.queue("jobs");
    q.put("poison").unwrap();
    q.put("fine").unwrap();
    for n in 1..=3 {
        let job = q.get_ack::<String>(None, LONG).unwrap();
        assert_eq!((job.value.as_str(), job.deliveries()), ("poison", n));
        job.nack().unwrap();
    }
    // Delivered 3 times, returned 3 times: dead-lettered, and the next item is served.
    let dead = client.queue("jobs.dead");
    assert_eq!(dead.len().unwrap(), 1);
    let next = q.get_ack::<String>(None, LONG).unwrap();
    assert_eq!(next.value, "fine");
    next.ack().unwrap();
    assert_eq!(dead.try_get::<String>().unwrap(), "poison");

    // A named dead-letter queue, set in corral.toml, reached by a lease passing.
    let mut d = TestDaemon::new();
    std::fs::write(
        d.path("corral.toml"),
        "[queues.work]\nmax_deliveries = 1\ndead_letter = \"work-failed\"\n",
    )
    .unwrap();
    d.extra_args.extend([
        "--config".into(),
        d.path("corral.toml").display().to_string(),
    ]);
    d.start();
    let client = d.client();
    let info = client.queue("work").info().unwrap();
    assert_eq!(info.max_deliveries, Some(1), "{info:?}");
    client.queue("work").put(7).unwrap();
    let _lost = client
        .queue("work")
        .get_ack::<u32>(None, Duration::from_millis(100))
        .unwrap();
    let failed: u32 = client.queue("work-failed").get(Some(LONG)).unwrap();
    assert_eq!(failed, 7);
    assert_eq!(client.queue("work").info().unwrap().in_flight, 0);
}

#[test]
fn items_in_flight_at_kill_9_come_back_and_acked_ones_never_do() {
    let mut d = TestDaemon::new();
    d.start();
    {
        let client = d.client();
        let q = client.queue("jobs");
        for i in 0..4 {
            q.put(i).unwrap();
        }
        let done = q.get_ack::<u32>(None, LONG).unwrap();
        assert_eq!(done.ack().unwrap(), 0);
        let in_flight = q.get_ack::<u32>(None, LONG).unwrap();
        assert_eq!(in_flight.value, 1);
        std::mem::forget(in_flight);
        d.kill9();
    }
    d.start();
    let client = d.client();
    let q = client.queue("jobs");
    let info = q.info().unwrap();
    assert_eq!((info.depth, info.in_flight), (3, 0), "{info:?}");
    let again = q.get_ack::<u32>(None, LONG).unwrap();
    assert_eq!((again.value, again.deliveries()), (1, 2));
    again.ack().unwrap();
    let rest: Vec<u32> = q.try_get_many(10).unwrap();
    assert_eq!(rest, [2, 3], "the acked item 0 never comes back");
}

/// What the consumers saw, for the checks after the run.
#[derive(Default)]
struct Seen {
    /// Every delivery: value, delivery count.
    deliveries: Vec<(String, u32)>,
    /// Values whose ack was answered with success.
    acked: Vec<String>,
    /// Values whose ack got no answer (corrald was killed meanwhile).
    unknown: Vec<String>,
}

fn connect(socket: &PathBuf, stop: &AtomicBool) -> Option<Client> {
    loop {
        if let Ok(c) = Client::connect_to(socket) {
            return Some(c);
        }
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_put_and_redelivers_only_unacked_items() {
    const PRODUCERS: usize = 2;
    const PER_PRODUCER: usize = 400;
    const CONSUMERS: usize = 3;
    let mut d = TestDaemon::new();
    d.start();
    let socket = d.socket();
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Seen::default()));

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let socket = socket.clone();
            let stop = Arc::new(AtomicBool::new(false));
            std::thread::spawn(move || {
                // (value, whether corrald acknowledged the put)
                let mut puts = Vec::new();
                let mut client = connect(&socket, &stop).unwrap();
                for i in 0..PER_PRODUCER {
                    let value = format!("p{p}-{i}");
                    match client.queue("load").put(&value) {
                        Ok(_) => puts.push((value, true)),
                        Err(_) => {
                            puts.push((value, false));
                            client = connect(&socket, &stop).unwrap();
                        }
                    }
                    if i % 8 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                puts
            })
        })
        .collect();

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let socket = socket.clone();
            let stop = stop.clone();
            let seen = seen.clone();
            let acked_count = acked_count.clone();
            std::thread::spawn(move || {
                let Some(mut client) = connect(&socket, &stop) else {
                    return;
                };
                while !stop.load(Ordering::SeqCst) {
                    let job = match client
                        .queue("load")
                        .get_ack::<String>(Some(Duration::from_millis(200)), LONG)
                    {
                        Ok(job) => job,
                        Err(e) if e.code() == Some(ErrorCode::Empty) => continue,
                        Err(_) => {
                            let Some(c) = connect(&socket, &stop) else {
                                return;
                            };
                            client = c;
                            continue;
                        }
                    };
                    let value = job.value.clone();
                    seen.lock()
                        .unwrap()
                        .deliveries
                        .push((value.clone(), job.deliveries()));
                    std::thread::sleep(Duration::from_millis(1)); // "processing"
                    match job.ack() {
                        Ok(_) => {
                            seen.lock().unwrap().acked.push(value);
                            acked_count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => {
                            assert_ne!(
                                e.code(),
                                Some(ErrorCode::NotHeld),
                                "a lease of a live connection ended before its visibility: {e}"
                            );
                            seen.lock().unwrap().unknown.push(value);
                            let Some(c) = connect(&socket, &stop) else {
                                return;
                            };
                            client = c;
                        }
                    }
                }
            })
        })
        .collect();

    wait_for("consumers to ack 150 items", || {
        (acked_count.load(Ordering::SeqCst) >= 150).then_some(())
    });
    // One item certainly in flight at the kill: leased here and never acked.
    let holder = d.client();
    let held = holder
        .queue("load")
        .get_ack::<String>(Some(LONG), LONG)
        .unwrap();
    let held_value = held.value.clone();
    std::mem::forget(held);
    d.kill9();
    drop(holder);
    d.start();

    let puts: Vec<(String, bool)> = producers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    let client = d.client();
    wait_for("the queue to drain", || {
        let info = client.queue("load").info().ok()?;
        (info.depth == 0 && info.in_flight == 0).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for c in consumers {
        c.join().unwrap();
    }

    let seen = seen.lock().unwrap();
    let confirmed: BTreeSet<&String> = puts.iter().filter(|(_, ok)| *ok).map(|(v, _)| v).collect();
    let attempted: BTreeSet<&String> = puts.iter().map(|(v, _)| v).collect();
    assert!(confirmed.len() > PRODUCERS * PER_PRODUCER - 2 * PRODUCERS);
    let mut delivered: BTreeMap<&String, Vec<u32>> = BTreeMap::new();
    for (v, n) in &seen.deliveries {
        delivered.entry(v).or_default().push(*n);
    }
    let mut acked: BTreeMap<&String, usize> = BTreeMap::new();
    for v in &seen.acked {
        *acked.entry(v).or_default() += 1;
    }
    let unknown: BTreeSet<&String> = seen.unknown.iter().collect();
    // Nothing appears that nobody put.
    for v in delivered.keys() {
        assert!(attempted.contains(v), "delivered {v}, never put");
    }
    // No acknowledged put is lost: each was acked (once), or its ack's reply was lost to the
    // kill (the ack was then committed: the item never came back).
    for v in &confirmed {
        assert!(
            delivered.contains_key(v),
            "acknowledged put {v} never delivered"
        );
        match acked.get(v) {
            Some(1) => {}
            Some(n) => panic!("{v} acked {n} times"),
            None => assert!(unknown.contains(v), "acknowledged put {v} never acked"),
        }
    }
    assert!(
        unknown.len() <= CONSUMERS,
        "at most one ack per consumer in flight at the kill: {unknown:?}"
    );
    // Duplicates only for unacked deliveries: an item delivered again was not acked
    // before, so its successful ack (if any) is its last delivery, and delivery counts
    // grow by one each time.
    for (v, counts) in &delivered {
        let expected: Vec<u32> = (1..=counts.len() as u32).collect();
        let mut sorted = counts.clone();
        sorted.sort_unstable();
        if counts.len() > 1 {
            assert!(
                sorted.windows(2).all(|w| w[0] < w[1]),
                "{v} delivered twice with the same count: {counts:?}"
            );
        }
        // A count can be skipped only by a delivery whose reply the kill swallowed.
        assert!(
            sorted.last() <= Some(&(expected.len() as u32 + 1)),
            "{v}: deliveries {counts:?}"
        );
    }
    let redelivered = delivered.values().filter(|c| c.len() > 1).count();
    eprintln!(
        "{} acknowledged puts, {} deliveries, {redelivered} items delivered again, {} acks unanswered at the kill",
        confirmed.len(),
        seen.deliveries.len(),
        unknown.len()
    );
    let again = &delivered[&held_value];
    assert!(
        again.iter().any(|&n| n >= 2),
        "the item in flight at the kill was delivered again: {again:?}"
    );
    assert_eq!(acked.get(&held_value), Some(&1));
}
