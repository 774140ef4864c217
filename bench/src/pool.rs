//! Pool workloads: corral's pool jobs against `xargs -P` and `multiprocessing.Pool`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_client::proto::{Op, PoolJob};

use crate::peers::Environment;
use crate::{Report, Sample, record, series};

fn sample(items: usize, took: Duration) -> Sample {
    Sample {
        value: items as f64 / took.as_secs_f64(),
        p50_us: None,
        p99_us: None,
    }
}

/// Runs a pool job through corrald and waits for every result; returns the wall time.
fn corral_job(
    env: &Environment,
    command: Vec<String>,
    inputs: Vec<String>,
    stream: bool,
) -> anyhow::Result<Duration> {
    timed_job(&env.corral_socket, command, inputs, 4, stream)
}

/// Submits a pool job of at most `workers` at once to the corrald at `socket` and waits
/// for every result; returns the wall time.
pub(crate) fn timed_job(
    socket: &std::path::Path,
    command: Vec<String>,
    inputs: Vec<String>,
    workers: usize,
    stream: bool,
) -> anyhow::Result<Duration> {
    let client = Client::connect_to(socket)?;
    let n = inputs.len();
    let start = Instant::now();
    let job: PoolJob = client.call(Op::PoolSubmit {
        name: Some("bench".into()),
        pool: None,
        command,
        inputs,
        workers: Some(workers),
        retries: 0,
        timeout_ms: None,
        stream,
        working_dir: None,
        env: Default::default(),
        cancel_on_disconnect: false,
        open: false,
        max_items_per_worker: None,
    })?;
    let mut received = 0;
    let end: PoolJob = client.call_streaming(
        Op::PoolWait {
            job: job.job,
            results: true,
            timeout_ms: None,
            from: None,
            count: None,
        },
        |_| received += 1,
    )?;
    let took = start.elapsed();
    anyhow::ensure!(
        end.succeeded == n && received == n,
        "job ended with {end:?}"
    );
    Ok(took)
}

/// The exec and stream pool workloads.
pub fn reports(env: &Environment, rounds: usize, quick: bool) -> Vec<Report> {
    let exec_items = if quick { 200 } else { 2000 };
    let stream_items = if quick { 5000 } else { 100_000 };
    let mut exec = (series("corral"), series("xargs -P 4"));
    let mut stream = (
        series("corral"),
        series("mp.Pool(4) chunksize=1"),
        series("mp.Pool(4) default"),
    );
    let worker = env.peers_dir.join("square_worker.py").display().to_string();
    let python = env.python.clone();
    for _ in 0..rounds {
        let inputs: Vec<String> = (0..exec_items).map(|i| i.to_string()).collect();
        record(
            &mut exec.0,
            corral_job(env, vec!["true".into()], inputs.clone(), false)
                .map(|t| sample(exec_items, t)),
        );
        record(&mut exec.1, xargs(&inputs).map(|t| sample(exec_items, t)));
        match &python {
            Ok(py) => {
                let inputs: Vec<String> = (0..stream_items).map(|i| i.to_string()).collect();
                let cmd = vec![py.display().to_string(), worker.clone()];
                record(
                    &mut stream.0,
                    corral_job(env, cmd, inputs, true).map(|t| sample(stream_items, t)),
                );
                record(&mut stream.1, mp_pool(env, py, stream_items, 1));
                record(&mut stream.2, mp_pool(env, py, stream_items, 0));
            }
            Err(why) => {
                for s in [&mut stream.0, &mut stream.1, &mut stream.2] {
                    s.missing = Some(why.clone());
                }
            }
        }
    }
    vec![
        Report {
            workload: format!("pool exec: {exec_items} × true, 4 at once"),
            note: "items/s over the whole job: corral spawns each item in its own process group, captures stdout/stderr, stores each result in SQLite and streams it back in order; xargs -P 4 -n 1 true".into(),
            unit: "items/s".into(),
            series: vec![exec.0, exec.1],
        },
        Report {
            workload: format!("pool stream: {stream_items} squares, 4 Python workers"),
            note: "items/s: corral feeds 4 long-lived Python workers over pipes (up to 64 items in flight each), stores every result and returns all in order; multiprocessing.Pool(4).map".into(),
            unit: "items/s".into(),
            series: vec![stream.0, stream.1, stream.2],
        },
    ]
}

fn xargs(inputs: &[String]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut child = Command::new("xargs")
        .args(["-P", "4", "-n", "1", "true"])
        .stdin(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(inputs.join("\n").as_bytes())?;
    anyhow::ensure!(child.wait()?.success(), "xargs failed");
    Ok(start.elapsed())
}

fn mp_pool(
    env: &Environment,
    python: &std::path::Path,
    items: usize,
    chunksize: usize,
) -> anyhow::Result<Sample> {
    let out = Command::new(python)
        .arg(env.peers_dir.join("mp_pool.py"))
        .args([items.to_string(), chunksize.to_string()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "mp_pool.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Sample {
        value: items as f64 / v["seconds"].as_f64().unwrap_or(1.0),
        p50_us: None,
        p99_us: None,
    })
}
