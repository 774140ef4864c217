//! The workloads, each with its corral, Redis and multiprocessing.Manager forms.

use std::process::Command;
use std::time::{Duration, Instant};

use corral_client::Client;

use crate::peers::{Environment, Redis, Resp};
use crate::{Report, Sample, Series};

type CorralOp = fn(&Client, u64) -> anyhow::Result<()>;
type RedisOp = fn(&mut Redis, u64) -> anyhow::Result<()>;

/// What a peer that takes no part in a workload shows.
const NOT_A_PEER: &str = "— (not a peer for this workload)";

/// One workload: what it does on each system.
pub struct Workload {
    /// Name used by `--only`.
    pub name: &'static str,
    /// What one operation is and what it guarantees.
    pub note: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    corral: CorralOp,
    redis: Option<RedisOp>,
    manager: Option<&'static str>,
}

/// Every workload, in report order.
pub fn all() -> Vec<Workload> {
    vec![
        Workload {
            name: "queue put+get, 1 client",
            note: "one op = put then get of one small item, no pipelining. corral: each acknowledged put is committed to SQLite (WAL) and survives kill -9 of corrald; Redis: LPUSH+RPOP with AOF fsync every second",
            clients: 1,
            corral: |c, i| {
                let q = c.queue("bench");
                q.put(i)?;
                let _: u64 = q.get(None)?;
                Ok(())
            },
            redis: Some(|r, _| {
                r.cmd(&["LPUSH", "bench", "1"])?;
                r.cmd(&["RPOP", "bench"])?;
                Ok(())
            }),
            manager: Some("queue"),
        },
        Workload {
            name: "queue put+get, 50 clients",
            note: "as above, 50 clients on one queue; total ops/s",
            clients: 50,
            corral: |c, i| {
                let q = c.queue("bench50");
                q.put(i)?;
                let _: u64 = q.get(None)?;
                Ok(())
            },
            redis: Some(|r, _| {
                r.cmd(&["LPUSH", "bench50", "1"])?;
                r.cmd(&["RPOP", "bench50"])?;
                Ok(())
            }),
            manager: None,
        },
        Workload {
            name: "queue put+get --ack+ack, 1 client",
            note: "one op = put, acknowledged get (leased: the delivery count is committed), then ack (the item deleted): at-least-once, three commits; Redis: the reliable-queue pattern LPUSH + RPOPLPUSH to a processing list + LREM",
            clients: 1,
            corral: |c, i| {
                let q = c.queue("bench-ack");
                q.put(i)?;
                let job = q.get_ack::<u64>(None, Duration::from_secs(30))?;
                job.ack()?;
                Ok(())
            },
            redis: Some(|r, _| {
                r.cmd(&["LPUSH", "bench-ack", "1"])?;
                r.cmd(&["RPOPLPUSH", "bench-ack", "bench-ack:processing"])?;
                r.cmd(&["LREM", "bench-ack:processing", "1", "1"])?;
                Ok(())
            }),
            manager: None,
        },
        Workload {
            name: "counter add, 1 client",
            note: "one op = add 1 and read the new value; corral: durable as above; Redis: INCR; Manager: Value += 1 under Manager().Lock()",
            clients: 1,
            corral: |c, _| {
                c.counter("bench").add(1)?;
                Ok(())
            },
            redis: Some(|r, _| {
                r.cmd(&["INCR", "bench"])?;
                Ok(())
            }),
            manager: Some("counter"),
        },
        Workload {
            name: "counter add, 4 clients",
            note: "as above, 4 clients on one counter; total ops/s",
            clients: 4,
            corral: |c, _| {
                c.counter("bench4").add(1)?;
                Ok(())
            },
            redis: Some(|r, _| {
                r.cmd(&["INCR", "bench4"])?;
                Ok(())
            }),
            manager: Some("counter"),
        },
        Workload {
            name: "lock acquire+release, 1 client",
            note: "one op = acquire then release; corral: FIFO, released if the holder dies, fencing token; Redis: SET NX PX + DEL; Manager: Lock()",
            clients: 1,
            corral: |c, _| {
                c.lock("bench").acquire(None)?.release()?;
                Ok(())
            },
            redis: Some(redis_lock),
            manager: Some("lock"),
        },
        Workload {
            name: "lock acquire+release, 4 contending",
            note: "as above, 4 clients on one lock; Redis clients retry SET NX until it succeeds",
            clients: 4,
            corral: |c, _| {
                c.lock("bench4").acquire(None)?.release()?;
                Ok(())
            },
            redis: Some(redis_lock),
            manager: Some("lock"),
        },
    ]
}

fn redis_lock(r: &mut Redis, _: u64) -> anyhow::Result<()> {
    while r.cmd(&["SET", "lock", "me", "NX", "PX", "30000"])? == Resp::Nil {}
    r.cmd(&["DEL", "lock"])?;
    Ok(())
}

/// Runs the corral operation of the workload called `name` `count` times from one client
/// on `socket`: a fixed amount of work, so that profiles of corrald compare.
pub fn drive(name: &str, socket: &std::path::Path, count: u64) -> anyhow::Result<()> {
    let Some(w) = all().into_iter().find(|w| w.name == name) else {
        let names: Vec<_> = all().iter().map(|w| w.name).collect();
        anyhow::bail!("no workload is called {name:?}; there are {names:?}");
    };
    let client = Client::connect_to(socket)?;
    for i in 0..count {
        (w.corral)(&client, i)?;
    }
    Ok(())
}

/// Runs a workload `rounds` times on every system, alternating.
pub fn run(w: &Workload, env: &mut Environment, rounds: usize, window: Duration) -> Report {
    let mut corral = Series {
        system: "corral".into(),
        samples: Vec::new(),
        missing: None,
    };
    let mut redis = Series {
        system: "redis".into(),
        samples: Vec::new(),
        missing: w.redis.is_none().then(|| NOT_A_PEER.to_string()),
    };
    let mut manager = Series {
        system: "mp.Manager".into(),
        samples: Vec::new(),
        missing: w.manager.is_none().then(|| NOT_A_PEER.to_string()),
    };
    for _ in 0..rounds {
        let socket = env.corral_socket.clone();
        let op = w.corral;
        match measure(w.clients, window, move || {
            let client = Client::connect_to(&socket)?;
            Ok(move |i| op(&client, i))
        }) {
            Ok(s) => corral.samples.push(s),
            Err(e) => corral.missing = Some(format!("failed: {e}")),
        }
        if let Some(op) = w.redis {
            match &env.redis {
                Ok(socket) => {
                    let socket = socket.clone();
                    match measure(w.clients, window, move || {
                        let mut r = Redis::connect(&socket)?;
                        Ok(move |i| op(&mut r, i))
                    }) {
                        Ok(s) => redis.samples.push(s),
                        Err(e) => redis.missing = Some(format!("failed: {e}")),
                    }
                }
                Err(why) => redis.missing = Some(why.clone()),
            }
        }
        if let Some(kind) = w.manager {
            match run_manager(env, kind, w.clients, window) {
                Ok(s) => manager.samples.push(s),
                Err(e) => manager.missing = Some(e.to_string()),
            }
        }
    }
    Report {
        workload: w.name.into(),
        note: w.note.into(),
        unit: "ops/s".into(),
        series: vec![corral, redis, manager],
    }
}

/// Runs `clients` threads, each looping over the operation built by `setup` until the
/// window closes; returns total throughput and latency percentiles.
pub(crate) fn measure<F, Op>(clients: usize, window: Duration, setup: F) -> anyhow::Result<Sample>
where
    F: Fn() -> anyhow::Result<Op> + Send + Sync + Clone + 'static,
    Op: FnMut(u64) -> anyhow::Result<()>,
{
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let setup = setup.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || -> anyhow::Result<(u64, Vec<f64>)> {
                let mut op = setup()?;
                barrier.wait();
                let end = Instant::now() + window;
                let mut lat = Vec::new();
                let mut n = 0;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    op(n)?;
                    lat.push(t0.elapsed().as_secs_f64() * 1e6);
                    n += 1;
                }
                Ok((n, lat))
            })
        })
        .collect();
    let mut total = 0;
    let mut lat = Vec::new();
    for t in threads {
        let (n, l) = t.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        total += n;
        lat.extend(l);
    }
    Ok(sample(total, window, lat))
}

/// `ops` operations in `window`, with their latencies in µs: throughput, p50 and p99.
pub fn sample(ops: u64, window: Duration, mut lat: Vec<f64>) -> Sample {
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
    };
    Sample {
        value: ops as f64 / window.as_secs_f64(),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
    }
}

fn run_manager(
    env: &Environment,
    kind: &str,
    clients: usize,
    window: Duration,
) -> anyhow::Result<Sample> {
    let python = env.python.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    let out = Command::new(python)
        .arg(env.peers_dir.join("mp_manager.py"))
        .args([
            kind,
            &clients.to_string(),
            &window.as_secs_f64().to_string(),
        ])
        .output()?;
    parse_driver("mp_manager.py", out)
}

/// The Python client (`clients/python`) against `multiprocessing.Manager()`, one client
/// each: what a Python program sees, interpreter and all.
pub fn python_reports(env: &Environment, rounds: usize, window: Duration) -> Vec<Report> {
    [
        ("python queue put+get, 1 client", "queue", "one op = Queue.put then Queue.get of a small int, from Python: corral's client (each put durable in SQLite) against a Manager().Queue()"),
        ("python lock acquire+release, 1 client", "lock", "one op = Lock.acquire then release, from Python: corral's client against a Manager().Lock()"),
    ]
    .into_iter()
    .map(|(name, kind, note)| {
        let mut corral = Series {
            system: "corral (Python client)".into(),
            samples: Vec::new(),
            missing: None,
        };
        let mut manager = Series {
            system: "mp.Manager".into(),
            samples: Vec::new(),
            missing: None,
        };
        for _ in 0..rounds {
            match run_python(env, "corral_py.py", kind, window) {
                Ok(s) => corral.samples.push(s),
                Err(e) => corral.missing = Some(e.to_string()),
            }
            match run_manager(env, kind, 1, window) {
                Ok(s) => manager.samples.push(s),
                Err(e) => manager.missing = Some(e.to_string()),
            }
        }
        Report {
            workload: name.into(),
            note: note.into(),
            unit: "ops/s".into(),
            series: vec![corral, manager],
        }
    })
    .collect()
}

/// The multiprocessing drop-in (`bench/peers/dropin.py`): `Pool(4).map(square,
/// range(100_000))` and the start + join of a trivial `Process`, corral's client against
/// multiprocessing (the spawn context for `Process`), best of `rounds` each, in one run.
pub fn dropin_reports(env: &Environment, rounds: usize) -> Vec<Report> {
    [
        ("python drop-in Pool(4).map(square, range(100000))", "map", "one op = a whole map with default chunks: corral's Pool (a stream-mode pool job of python workers started by corrald for the map) against multiprocessing.Pool(4) (forked workers); target: within 3x"),
        ("python drop-in Process start+join", "process", "one op = Process(target=nothing).start() then join(): corral (corrald starts python -c corral._child with the pickled object) against multiprocessing's spawn context; target: within 1.5x"),
    ]
    .into_iter()
    .map(|(name, kind, note)| {
        let mut corral = Series {
            system: "corral (Python client)".into(),
            samples: Vec::new(),
            missing: None,
        };
        let mut mp = Series {
            system: "multiprocessing".into(),
            samples: Vec::new(),
            missing: None,
        };
        match run_dropin(env, kind, rounds.max(1)) {
            Ok((ours, theirs)) => {
                corral.samples.push(ms_sample(ours));
                mp.samples.push(ms_sample(theirs));
            }
            Err(e) => {
                corral.missing = Some(e.to_string());
                mp.missing = Some(e.to_string());
            }
        }
        Report {
            workload: name.into(),
            note: note.into(),
            unit: "ms".into(),
            series: vec![corral, mp],
        }
    })
    .collect()
}

fn ms_sample(ms: f64) -> Sample {
    Sample {
        value: ms,
        p50_us: None,
        p99_us: None,
    }
}

fn run_dropin(env: &Environment, kind: &str, repeats: usize) -> anyhow::Result<(f64, f64)> {
    let python = env.python.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    let out = Command::new(python)
        .arg(env.peers_dir.join("dropin.py"))
        .args([kind, &repeats.to_string()])
        .env("CORRAL_SOCKET", &env.corral_socket)
        .output()?;
    if !out.status.success() {
        anyhow::bail!("dropin.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let get = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| anyhow::anyhow!("dropin.py printed no {k}"))
    };
    Ok((get("corral_ms")?, get("multiprocessing_ms")?))
}

fn run_python(
    env: &Environment,
    script: &str,
    kind: &str,
    window: Duration,
) -> anyhow::Result<Sample> {
    let python = env.python.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    let out = Command::new(python)
        .arg(env.peers_dir.join(script))
        .args([kind, "1", &window.as_secs_f64().to_string()])
        .env("CORRAL_SOCKET", &env.corral_socket)
        .output()?;
    parse_driver(script, out)
}

/// One driver's JSON line: `{"ops", "seconds", "p50_us", "p99_us"}`.
fn parse_driver(script: &str, out: std::process::Output) -> anyhow::Result<Sample> {
    if !out.status.success() {
        anyhow::bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ops = v["ops"].as_f64().unwrap_or(0.0);
    let secs = v["seconds"].as_f64().unwrap_or(1.0);
    Ok(Sample {
        value: ops / secs,
        p50_us: v["p50_us"].as_f64(),
        p99_us: v["p99_us"].as_f64(),
    })
}
