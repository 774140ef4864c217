//! Pool jobs across nodes: several real corrald nodes on one test PostgreSQL
//! (`PgCluster`), each claiming items of a job submitted on any of them.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use corral_tests::{PgCluster, TestDaemon, bin, free_port, group_members, http, wait_for};
use nix::sys::signal::Signal;
use serde_json::Value;

/// A node with `pool_slots = 2` and a 2 s lease (so a dead node's claims move soon).
fn node(pg: &PgCluster, name: &str) -> TestDaemon {
    let mut d = configured(pg, name);
    d.start();
    d
}

/// [`node`], not started yet.
fn configured(pg: &PgCluster, name: &str) -> TestDaemon {
    crate::backend::configured_node(pg, name, "pool_slots = 2\n[backend]\nlease = \"2s\"\n")
}

/// `pool map --json` arguments: 300 items of `sleep 0.05; echo $CORRAL_NODE N`.
fn map_args() -> Vec<String> {
    let mut args: Vec<String> = [
        "--json",
        "pool",
        "map",
        "-j",
        "6",
        "--",
        "sh",
        "-c",
        "sleep 0.05; echo $CORRAL_NODE {}",
        ":::",
    ]
    .map(String::from)
    .to_vec();
    args.extend((0..300).map(|n| n.to_string()));
    args
}

/// Checks 300 records: in input order, each once, each ok, its output naming the node
/// its record names. Returns the nodes that ran items.
fn check_records(stdout: &str) -> BTreeSet<String> {
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 300, "{stdout}");
    let mut nodes = BTreeSet::new();
    for (n, r) in records.iter().enumerate() {
        assert_eq!(r["index"], n, "results in input order: {r}");
        assert_eq!(r["ok"], true, "{r}");
        let node = r["node"].as_str().expect("the record names its node");
        assert_eq!(
            r["stdout"].as_str().unwrap(),
            format!("{node} {n}\n"),
            "CORRAL_NODE is the node of the record"
        );
        nodes.insert(node.to_string());
    }
    nodes
}

#[test]
fn three_nodes_share_a_job_and_return_its_results_in_order() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let mut b = configured(&pg, "b");
    let port = free_port();
    b.http = format!("127.0.0.1:{port}");
    b.start();
    let c = node(&pg, "c");
    let args = map_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let nodes = check_records(&a.ctl_ok(&args));
    assert_eq!(
        nodes,
        ["a", "b", "c"].map(String::from).into(),
        "every node ran some"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM corral_pool_items WHERE state = 'done' AND attempt = 1"),
        "300",
        "each item ran once"
    );

    // Any node sees the job: status, list, results.
    let status: Value =
        serde_json::from_str(&b.ctl_ok(&["--json", "pool", "status", "1"])).unwrap();
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(status["succeeded"], 300, "{status}");
    assert_eq!(status["total"], 300, "{status}");
    let shares = status["nodes"].as_array().expect("each node's share");
    let names: Vec<&str> = shares.iter().map(|s| s["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"], "{status}");
    let ran: u64 = shares
        .iter()
        .map(|s| s["succeeded"].as_u64().unwrap())
        .sum();
    assert_eq!(ran, 300, "the shares add up: {status}");
    assert!(shares.iter().all(|s| s["succeeded"].as_u64() > Some(0)));
    // The HTTP API of another node serves the database's jobs too.
    let (code, body) = http(port, "GET", "/api/pools/1", &[]);
    assert_eq!(code, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api["succeeded"], 300, "{api}");
    assert_eq!(api["nodes"].as_array().map(Vec::len), Some(3), "{api}");
    let text = c.ctl_ok(&["pool", "status", "1"]);
    assert!(text.contains("NODE") && text.contains("RUNNING"), "{text}");
    // Each node's rate: the items it finished over the job's run time.
    let seconds = (status["finished_ms"].as_i64().unwrap() - status["created_ms"].as_i64().unwrap())
        as f64
        / 1000.0;
    assert!(text.contains("ITEMS/S"), "{text}");
    for share in shares {
        let name = share["node"].as_str().unwrap();
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("a row for node {name}: {text}"));
        let rate: f64 = row.split_whitespace().last().unwrap().parse().unwrap();
        let done = share["succeeded"].as_f64().unwrap() + share["failed"].as_f64().unwrap();
        assert!(
            rate > 0.0 && (rate * seconds - done).abs() <= 0.05 * seconds + 1.0,
            "node {name}: {rate} items/s over {seconds} s for {done} items: {text}"
        );
    }
    let list = c.ctl_ok(&["pool", "list"]);
    assert!(list.contains("finished"), "{list}");
    let results: Value =
        serde_json::from_str(&c.ctl_ok(&["--json", "pool", "results", "1"])).unwrap();
    assert_eq!(results["items"].as_array().unwrap().len(), 300, "{results}");

    // What does not run across nodes yet says so, and changes nothing.
    let stream = b.ctl(&["pool", "map", "--stream", "--", "cat", ":::", "x"]);
    assert!(!stream.status.success());
    let err = String::from_utf8_lossy(&stream.stderr);
    assert!(err.contains("not supported across nodes yet"), "{err}");
    assert_eq!(pg.psql("SELECT count(*) FROM corral_pool_jobs"), "1");
}

#[test]
fn a_node_killed_mid_job_loses_nothing_and_the_job_completes() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let _b = node(&pg, "b");
    let mut c = node(&pg, "c");
    let submitter = Command::new(bin("corralctl"))
        .arg("--socket")
        .arg(a.socket())
        .args(map_args())
        .env_remove("CORRAL_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run corralctl");
    wait_for("node c to have run items", || {
        let n: u64 = pg
            .psql("SELECT count(*) FROM corral_pool_items WHERE node = 'c' AND state = 'done'")
            .parse()
            .unwrap_or(0);
        (n >= 10).then_some(())
    });
    // Killed while it holds claims: frozen first (it cannot record or claim meanwhile),
    // killed once the database shows it holding items.
    wait_for("node c to be frozen holding claims", || {
        c.signal(Signal::SIGSTOP);
        let held = pg
            .psql("SELECT count(*) FROM corral_pool_items WHERE node = 'c' AND state = 'running'");
        if held != "0" {
            return Some(());
        }
        c.signal(Signal::SIGCONT);
        None
    });
    c.kill9();
    let out = submitter.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_records(&stdout);
    assert_eq!(
        pg.psql("SELECT count(*) FROM corral_pool_items WHERE job = 1 AND state = 'done'"),
        "300",
        "every result recorded once"
    );
    assert_eq!(
        pg.psql("SELECT state FROM corral_pool_jobs WHERE id = 1"),
        "finished"
    );
    // c's claims at its death were taken over as new attempts by the living nodes.
    let moved: u64 = pg
        .psql(
            "SELECT count(*) FROM corral_pool_items
             WHERE job = 1 AND attempt > 1 AND node IN ('a', 'b')",
        )
        .parse()
        .unwrap();
    assert!(moved >= 1, "no item of the killed node was claimed again");
    let status: Value =
        serde_json::from_str(&a.ctl_ok(&["--json", "pool", "status", "1"])).unwrap();
    assert_eq!(status["succeeded"], 300, "{status}");
}

#[test]
fn a_node_frozen_past_its_lease_loses_its_items_and_its_late_answers_are_discarded() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    // b takes two items that outlast its freeze; a runs the rest.
    let job: Value = serde_json::from_str(&a.ctl_ok(&[
        "--json",
        "pool",
        "map",
        "--detach",
        "-j",
        "4",
        "--",
        "sh",
        "-c",
        "sleep 0.5; echo {}",
        ":::",
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
    ]))
    .unwrap();
    assert_eq!(job["job"], 1, "{job}");
    wait_for("node b to claim items", || {
        let n: u64 = pg
            .psql("SELECT count(*) FROM corral_pool_items WHERE node = 'b' AND state = 'running'")
            .parse()
            .unwrap_or(0);
        (n >= 1).then_some(())
    });
    b.signal(Signal::SIGSTOP);
    // Past b's lease, a puts b's items back and runs them again (attempt 2).
    a.ctl_ok(&["pool", "wait", "1"]);
    b.signal(Signal::SIGCONT);
    let results: Value =
        serde_json::from_str(&a.ctl_ok(&["--json", "pool", "results", "1"])).unwrap();
    let items = results["items"].as_array().unwrap();
    assert_eq!(items.len(), 8, "{results}");
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item["stdout"], format!("{n}\n"), "{item}");
    }
    let retaken = pg.psql(
        "SELECT count(*) FROM corral_pool_items WHERE job = 1 AND attempt > 1 AND node = 'a'",
    );
    assert_ne!(retaken, "0", "b's claims were taken over");
    // b, thawed, finds its attempts superseded: nothing it answers is recorded.
    wait_for("b to discard its superseded answers", || {
        b.stderr()
            .contains("superseded attempt ended; its result is discarded")
            .then_some(())
    });
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM corral_pool_items WHERE job = 1 AND node = 'b' AND attempt > 1"
        ),
        "0"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM corral_pool_items WHERE job = 1 AND state = 'done'"),
        "8"
    );
    let status: Value =
        serde_json::from_str(&b.ctl_ok(&["--json", "pool", "status", "1"])).unwrap();
    assert_eq!(status["succeeded"], 8, "{status}");
}

#[test]
fn retries_count_attempts_across_nodes() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let _b = node(&pg, "b");
    // Each attempt outlasts a third of the lease, so each retry (claimed again in the
    // round that recorded its failure) is running when the claimer checks its claims
    // against the database: a retry it had lost track of would be put back, one
    // attempt too many.
    let out = a.ctl(&[
        "--json",
        "pool",
        "map",
        "--retries",
        "2",
        "--",
        "sh",
        "-c",
        "sleep 0.7; exit 3",
        ":::",
        "x",
        "y",
    ]);
    assert!(!out.status.success(), "failed items fail the map");
    assert_eq!(
        pg.psql("SELECT string_agg(failures::text || '/' || attempt::text, ',') FROM corral_pool_items WHERE job = 1"),
        "3/3,3/3",
        "1 attempt + 2 retries per item, wherever they ran"
    );
    let status: Value =
        serde_json::from_str(&a.ctl_ok(&["--json", "pool", "status", "1"])).unwrap();
    assert_eq!(status["failed"], 2, "{status}");
    assert_eq!(status["state"], "finished", "{status}");
}

#[test]
fn the_python_pool_maps_a_command_over_the_nodes() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let _b = node(&pg, "b");
    let script = r#"
import json, sys
from corral import Pool
with Pool(4, socket=sys.argv[1]) as p:
    out = p.map("sh -c 'sleep 0.05; echo $CORRAL_NODE {}'", range(40))
print(json.dumps(out))
try:
    with Pool(2, socket=sys.argv[1]) as p:
        p.map(abs, [-1, -2])
    print("no error")
except Exception as e:
    print("error:", e)
"#;
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/python");
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(a.socket())
        .env("PYTHONPATH", python)
        .env_remove("CORRAL_SOCKET")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let results: Vec<String> = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(results.len(), 40);
    let mut nodes = BTreeSet::new();
    for (n, r) in results.iter().enumerate() {
        let (node, value) = r.split_once(' ').expect("NODE N");
        assert_eq!(value, n.to_string(), "in input order");
        nodes.insert(node.to_string());
    }
    assert_eq!(
        nodes,
        ["a", "b"].map(String::from).into(),
        "both nodes ran some"
    );
    // The function form needs stream mode, not across nodes yet: an error that says so.
    let function = lines.next().unwrap();
    assert!(
        function.contains("not supported across nodes yet"),
        "{function}"
    );
}

#[test]
fn a_job_cancelled_from_another_node_stops_on_every_node() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    let mut args = vec![
        "--json",
        "pool",
        "map",
        "--detach",
        "-j",
        "4",
        "--",
        "sh",
        "-c",
        "sleep 30; echo {}",
        ":::",
    ];
    let inputs: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    args.extend(inputs.iter().map(String::as_str));
    a.ctl_ok(&args);
    wait_for("both nodes to run items", || {
        (pg.psql("SELECT count(DISTINCT node) FROM corral_pool_items WHERE state = 'running'")
            == "2")
            .then_some(())
    });
    let cancelled: Value =
        serde_json::from_str(&b.ctl_ok(&["--json", "pool", "cancel", "1"])).unwrap();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    // Each node kills its running items; nothing is claimed after the cancel.
    wait_for("the running items to be stopped", || {
        (pg.psql("SELECT count(*) FROM corral_pool_items WHERE state = 'running'") == "0")
            .then_some(())
    });
    assert_eq!(
        pg.psql("SELECT count(*) FROM corral_pool_items WHERE state = 'done' AND NOT ok"),
        "4",
        "the four running items ended as cancelled"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM corral_pool_items WHERE attempt = 0"),
        "16",
        "the others never started"
    );
    let wait = a.ctl(&["pool", "wait", "1"]);
    assert!(!wait.status.success(), "a cancelled job's wait says so");
    let status: Value =
        serde_json::from_str(&a.ctl_ok(&["--json", "pool", "status", "1"])).unwrap();
    assert_eq!(status["state"], "cancelled", "{status}");
    assert_eq!(status["running"], 0, "{status}");
}

#[test]
fn a_node_that_stops_puts_its_items_back_at_once_and_the_job_completes() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let mut b = node(&pg, "b");
    let mut args = vec![
        "--json",
        "pool",
        "map",
        "--detach",
        "-j",
        "4",
        "--",
        "sh",
        "-c",
        "sleep 0.3; echo {}",
        ":::",
    ];
    let inputs: Vec<String> = (0..30).map(|n| n.to_string()).collect();
    args.extend(inputs.iter().map(String::as_str));
    a.ctl_ok(&args);
    wait_for("node b to run items", || {
        (pg.psql("SELECT count(*) FROM corral_pool_items WHERE node = 'b' AND state = 'running'")
            != "0")
            .then_some(())
    });
    b.signal(Signal::SIGTERM);
    assert_eq!(b.wait_exit(), Some(0));
    assert_eq!(
        pg.psql("SELECT count(*) FROM corral_pool_items WHERE node = 'b' AND state = 'running'"),
        "0",
        "b put its claims back as it stopped, without waiting for its lease"
    );
    a.ctl_ok(&["pool", "wait", "1"]);
    let results: Value =
        serde_json::from_str(&a.ctl_ok(&["--json", "pool", "results", "1"])).unwrap();
    let items = results["items"].as_array().unwrap();
    assert_eq!(items.len(), 30, "{results}");
    for (n, item) in items.iter().enumerate() {
        assert_eq!(item["ok"], true, "{item}");
        assert_eq!(item["stdout"], format!("{n}\n"), "{item}");
    }
}

#[test]
fn pool_rm_and_pool_keep_remove_finished_jobs_from_the_database() {
    let Some(pg) = PgCluster::start() else { return };
    let a = node(&pg, "a");
    let b = node(&pg, "b");
    let go = a.path("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo {{}}",
        go.display()
    );
    let job = a
        .ctl_ok(&[
            "pool", "map", "--detach", "--", "sh", "-c", &script, ":::", "1", "2", "3",
        ])
        .trim()
        .to_owned();
    assert_eq!(job, "1");
    let refused = b.ctl(&["pool", "rm", "1"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("pool job 1 is still running"), "{stderr}");
    std::fs::write(&go, "").unwrap();
    b.ctl_ok(&["pool", "wait", "1"]);
    let removed = b.ctl_ok(&["pool", "rm", "1"]);
    assert!(
        removed.contains("pool job 1 removed (finished: 3 ok"),
        "{removed}"
    );
    assert_eq!(
        pg.psql("SELECT (SELECT count(*) FROM corral_pool_jobs)::text || '/' || (SELECT count(*) FROM corral_pool_items)::text"),
        "0/0",
        "the job and its items are gone from the database"
    );
    let gone = a.ctl(&["pool", "status", "1"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no pool job 1"));
    // A node with a short pool_keep removes finished jobs, whoever ran them.
    let mut c = crate::backend::configured_node(
        &pg,
        "c",
        "pool_slots = 2\npool_keep = \"1s\"\n[backend]\nlease = \"2s\"\n",
    );
    c.start();
    a.ctl_ok(&["pool", "map", "--", "true", ":::", "x", "y"]);
    wait_for("node c removes the finished job", || {
        (pg.psql("SELECT count(*) FROM corral_pool_jobs") == "0").then_some(())
    });
    assert_eq!(pg.psql("SELECT count(*) FROM corral_pool_items"), "0");
}

#[test]
fn a_node_killed_with_kill_9_leaves_no_item_process_running() {
    let Some(pg) = PgCluster::start() else { return };
    let mut a = node(&pg, "a");
    let b = node(&pg, "b");
    let go = a.path("go");
    let dir = a.path("");
    // Each item's shell writes its pid (its process group's id) and waits in a child
    // process (`sleep`), as a real command's children would; for 30 s at most, so a
    // failed run of this test leaves nothing behind for long.
    let script = format!(
        "echo $$ >> {dir}/pids.$CORRAL_NODE; i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; \
         do sleep 0.05; i=$((i+1)); done; echo {{}}",
        dir = dir.display(),
        go = go.display()
    );
    let job = a
        .ctl_ok(&[
            "pool", "map", "--detach", "-j", "4", "--", "sh", "-c", &script, ":::", "0", "1", "2",
            "3",
        ])
        .trim()
        .to_owned();
    let groups = |node: &str| -> Vec<i32> {
        std::fs::read_to_string(dir.join(format!("pids.{node}")))
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    wait_for("both nodes to run two items", || {
        (groups("a").len() == 2 && groups("b").len() == 2).then_some(())
    });
    let on_a = groups("a");
    assert!(on_a.iter().all(|g| !group_members(*g).is_empty()));
    a.kill9();
    wait_for("the killed node's item processes to be gone", || {
        on_a.iter()
            .all(|g| group_members(*g).is_empty())
            .then_some(())
    });
    for g in groups("b") {
        assert!(!group_members(g).is_empty(), "node b's item {g} runs on");
    }
    // Node b takes the items over once a's lease expires, and the job completes.
    std::fs::write(&go, "").unwrap();
    b.ctl_ok(&["pool", "wait", &job]);
    assert_eq!(b.ctl_ok(&["pool", "results", &job]), "0\n1\n2\n3\n");
}
