//! The coordination workloads on the PostgreSQL backend: counter add, queue put+get and
//! lock acquire+release with 1 and 50 clients, on corrald with `--backend` (1 node, and
//! 50 clients spread over 2 nodes on one PostgreSQL), beside the bench's corrald on SQLite
//! and Redis, round by round in the same run; and `pgbench` on the same PostgreSQL server
//! (a single-row UPDATE per transaction, 50 clients) as the floor of the 50-client figures.
//!
//! The server is a `PgCluster` of the test harness (its own `initdb` in a temp dir, on
//! 127.0.0.1, `fsync=off`): skipped, saying so, where PostgreSQL is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use corral_client::Client;
use corral_tests::{PG_PASSWORD, PgCluster, pg_bin_dir};

use crate::peers::{Environment, Redis, Resp, which};
use crate::pool_nodes::{Node, start_node};
use crate::workloads::{measure, sample};
use crate::{Report, Sample, record, series};

/// Clients of the many-client workloads.
pub const CLIENTS: usize = 50;
/// The 50-client series spread over two nodes: the one `main`'s targets compare with pgbench.
pub const TWO_NODES: &str = "corral --backend, 2 nodes";
/// The single-node `--backend` series.
pub const ONE_NODE: &str = "corral --backend, 1 node";
/// The pgbench series.
pub const PGBENCH: &str = "pgbench (floor)";
/// Prefix of every workload of this section (for `--only` and the targets).
pub const PREFIX: &str = "postgres ";

/// One corral operation on the object `name`; `i` counts the client's operations.
type CorralOp = fn(&Client, &str, u64) -> anyhow::Result<()>;
/// The same on Redis.
type RedisOp = fn(&mut Redis, &str) -> anyhow::Result<()>;

struct Shape {
    name: &'static str,
    /// Whether every client has an object of its own (else all share one).
    own: bool,
    corral: CorralOp,
    redis: RedisOp,
}

fn shapes() -> [Shape; 3] {
    [
        Shape {
            name: "counter add",
            own: true,
            corral: |c, name, _| {
                c.counter(name).add(1)?;
                Ok(())
            },
            redis: |r, name| {
                r.cmd(&["INCR", name])?;
                Ok(())
            },
        },
        Shape {
            name: "queue put+get",
            own: false,
            corral: |c, name, i| {
                let q = c.queue(name);
                q.put(i)?;
                let _: u64 = q.get(None)?;
                Ok(())
            },
            redis: |r, name| {
                r.cmd(&["LPUSH", name, "1"])?;
                r.cmd(&["RPOP", name])?;
                Ok(())
            },
        },
        Shape {
            name: "lock acquire+release",
            own: true,
            corral: |c, name, _| {
                c.lock(name).acquire(None)?.release()?;
                Ok(())
            },
            redis: |r, name| {
                while r.cmd(&["SET", name, "me", "NX", "PX", "30000"])? == Resp::Nil {}
                r.cmd(&["DEL", name])?;
                Ok(())
            },
        },
    ]
}

const NOTE: &str = "one op as in the SQLite workloads of the same name (no pipelining by the client, each op waits for its answer); with 50 clients each client has a counter and a lock of its own (no row contended, like pgbench's random rows) and all share one queue. `corral --backend`: each op is one SQL statement (its own transaction) on the node's one PostgreSQL connection, answered only after it committed, so every acknowledged op is committed in PostgreSQL, seen by every node, and survives kill -9 of corrald (the bench's server runs with fsync=off: a crash of PostgreSQL's machine is not covered by these figures; pgbench below runs on the same server); corral (SQLite): committed to the node's SQLite (WAL) before the answer; Redis: AOF fsync every second, one machine";

const PGBENCH_NOTE: &str = "pgbench on the same PostgreSQL server, the floor of the 50-client figures: `pgbench -i -s 1`, then 50 clients (-j 2, -M prepared, over TCP like corrald) each running `UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :id` (a random row of 100000) as its own transaction for the window, at least 2 s (TPS without the connection time; latencies from `pgbench -l`)";

/// This section's reports; empty (said on stderr) without PostgreSQL.
pub fn reports(env: &Environment, dir: &Path, rounds: usize, window: Duration) -> Vec<Report> {
    let Some(pg) = PgCluster::start() else {
        eprintln!("postgres workloads: no PostgreSQL server (scripts/test installs it); skipped");
        return Vec::new();
    };
    let nodes: Vec<anyhow::Result<Node>> = ["pg1", "pg2"]
        .iter()
        .map(|n| start_node(dir, &pg, n))
        .collect();
    let pgbench = Pgbench::prepare(&pg, dir);
    let mut out = Vec::new();
    for shape in shapes() {
        for clients in [1, CLIENTS] {
            eprintln!("running {PREFIX}{}, {clients} client(s) ...", shape.name);
            out.push(run(&shape, clients, env, &nodes, &pgbench, rounds, window));
        }
    }
    out
}

/// Measures `op` from `clients` clients, client k on `sockets[k % len]`.
fn corral(
    shape: &Shape,
    clients: usize,
    sockets: Vec<PathBuf>,
    window: Duration,
) -> anyhow::Result<Sample> {
    let next = Arc::new(AtomicUsize::new(0));
    let (op, own, base) = (shape.corral, shape.own, shape.name.replace([' ', '+'], "-"));
    measure(clients, window, move || {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let client = Client::connect_to(&sockets[k % sockets.len()])?;
        let name = if own {
            format!("pg-{base}-{clients}-{k}")
        } else {
            format!("pg-{base}-{clients}")
        };
        Ok(move |i| op(&client, &name, i))
    })
}

fn run(
    shape: &Shape,
    clients: usize,
    env: &Environment,
    nodes: &[anyhow::Result<Node>],
    pgbench: &Result<Pgbench, String>,
    rounds: usize,
    window: Duration,
) -> Report {
    let many = clients > 1;
    let mut two = series(TWO_NODES);
    let mut one = series(ONE_NODE);
    let mut sqlite = series("corral (SQLite)");
    let mut redis = series("redis");
    let mut floor = series(PGBENCH);
    let socket = |n: usize| match &nodes[n] {
        Ok(node) => Ok(node.socket.clone()),
        Err(e) => Err(format!("node {} did not start: {e}", n + 1)),
    };
    for _ in 0..rounds {
        if many {
            match (socket(0), socket(1)) {
                (Ok(a), Ok(b)) => record(&mut two, corral(shape, clients, vec![a, b], window)),
                (Err(e), _) | (_, Err(e)) => two.missing = Some(e),
            }
        }
        match socket(0) {
            Ok(a) => record(&mut one, corral(shape, clients, vec![a], window)),
            Err(e) => one.missing = Some(e),
        }
        record(
            &mut sqlite,
            corral(shape, clients, vec![env.corral_socket.clone()], window),
        );
        match &env.redis {
            Ok(path) => {
                let (path, op, own) = (path.clone(), shape.redis, shape.own);
                let base = format!("pg-{}-{clients}", shape.name.replace([' ', '+'], "-"));
                let next = Arc::new(AtomicUsize::new(0));
                record(
                    &mut redis,
                    measure(clients, window, move || {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let mut r = Redis::connect(&path)?;
                        let name = if own {
                            format!("{base}-{k}")
                        } else {
                            base.clone()
                        };
                        Ok(move |_| op(&mut r, &name))
                    }),
                );
            }
            Err(why) => redis.missing = Some(why.clone()),
        }
        if many {
            match pgbench {
                Ok(p) => record(&mut floor, p.run(clients, window)),
                Err(why) => floor.missing = Some(why.clone()),
            }
        }
    }
    let mut all = if many {
        vec![two, one, sqlite, redis, floor]
    } else {
        vec![one, sqlite, redis]
    };
    // A node that failed to start is corral's failure: it must come first (main fails).
    all.sort_by_key(|s| !s.system.starts_with("corral") || s.missing.is_none());
    Report {
        workload: format!(
            "{PREFIX}{}, {clients} client{}",
            shape.name,
            if many { "s" } else { "" }
        ),
        note: if many {
            format!("{NOTE}. {PGBENCH_NOTE}")
        } else {
            NOTE.into()
        },
        unit: "ops/s".into(),
        series: all,
    }
}

/// pgbench against the cluster, its tables made (`pgbench -i`).
struct Pgbench {
    program: PathBuf,
    port: u16,
    logs: PathBuf,
    script: PathBuf,
}

impl Pgbench {
    fn prepare(pg: &PgCluster, dir: &Path) -> Result<Pgbench, String> {
        let program = pg_bin_dir()
            .map(|d| d.join("pgbench"))
            .filter(|p| p.exists())
            .or_else(|| which("pgbench"))
            .ok_or("pgbench not installed (apt-get install postgresql-client)")?;
        let logs = dir.join("pgbench");
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        let script = logs.join("update.sql");
        std::fs::write(
            &script,
            "\\set id random(1, 100000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :id;\n",
        )
        .map_err(|e| e.to_string())?;
        let p = Pgbench {
            program,
            port: pg.port,
            logs,
            script,
        };
        let out = p
            .command()
            .args(["-i", "-q", "-s", "1"])
            .output()
            .map_err(|e| format!("pgbench: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pgbench -i failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(p)
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.current_dir(&self.logs)
            .env("PGPASSWORD", PG_PASSWORD)
            .env("PGDATABASE", "postgres")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string());
        c
    }

    /// One run of `clients` clients for `window` (whole seconds, at least two: the 50
    /// SCRAM logins over TCP come out of pgbench's `-T`, and on a busy machine can take a
    /// whole second): TPS with the transactions' latencies.
    fn run(&self, clients: usize, window: Duration) -> anyhow::Result<Sample> {
        for e in std::fs::read_dir(&self.logs)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("tx.") {
                std::fs::remove_file(e.path())?;
            }
        }
        let secs = window.as_secs().max(2);
        let out = self
            .command()
            .args(["-n", "-M", "prepared", "-j", "2", "-l", "--log-prefix=tx"])
            .arg(format!("-c{clients}"))
            .arg(format!("-T{secs}"))
            .arg("-f")
            .arg(&self.script)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        // "tps = 1234.567890 (without initial connection time)"
        let tps: f64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no tps in pgbench's output: {stdout}"))?;
        // Each log line: client transaction latency_us script epoch_s epoch_us.
        let mut lat = Vec::new();
        for e in std::fs::read_dir(&self.logs)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("tx.") {
                for line in std::fs::read_to_string(e.path())?.lines() {
                    if let Some(us) = line.split(' ').nth(2).and_then(|v| v.parse::<f64>().ok()) {
                        lat.push(us);
                    }
                }
            }
        }
        let mut s = sample(lat.len() as u64, Duration::from_secs(secs), lat);
        s.value = tps;
        Ok(s)
    }
}
