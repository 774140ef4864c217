//! corral's benchmark harness: every workload run alternately on corral and on the tool
//! a user would pick instead, in one run on one machine, reported side by side.
//!
//! ```sh
//! scripts/bench            # full run (release build); `scripts/bench --quick` for a smoke run
//! ```
//!
//! It starts its own corrald (and peers) in a temp dir, on Unix sockets, and stops them at
//! the end. A peer that is not installed is reported with the command that installs it.

mod daemon;
mod floor;
mod peers;
mod pg;
mod pool;
mod pool_nodes;
mod soak;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Serialize;

/// Side-by-side benchmarks of corral.
#[derive(Debug, Parser)]
#[command(name = "corral-bench")]
struct Args {
    /// Run every workload briefly (one short round): checks the harness, not the figures.
    #[arg(long)]
    quick: bool,
    /// Only workloads whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Rounds per workload (default: 5, or 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Internal: be the round-trip floor's echo server on this socket.
    #[arg(long, value_name = "SOCKET", hide = true)]
    echo_server: Option<PathBuf>,
    /// Run the corral side of the workload named WORKLOAD (exactly, e.g. "counter add, 1
    /// client") `--count` times, one client, against the corrald already listening on
    /// `--socket`, then exit: a fixed load for profiling corrald (see `bench/callgrind`).
    #[arg(long, value_name = "WORKLOAD", requires = "socket")]
    drive: Option<String>,
    /// Operations for `--drive`.
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// corrald's socket, for `--drive`.
    #[arg(long, value_name = "SOCKET")]
    socket: Option<PathBuf>,
}

/// One measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// The figure, in the report's `unit` (each workload says what it measures).
    pub value: f64,
    /// Median latency of one operation, microseconds.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, microseconds.
    pub p99_us: Option<f64>,
}

/// Figures of one system over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// `corral`, `redis`, `mp.Manager`, ...
    pub system: String,
    /// What was measured, or why not.
    pub samples: Vec<Sample>,
    /// Set when the system could not be measured (e.g. not installed).
    pub missing: Option<String>,
}

/// An empty series of `system`, to record its rounds in.
pub fn series(system: &str) -> Series {
    Series {
        system: system.into(),
        samples: Vec::new(),
        missing: None,
    }
}

/// Adds a round's sample to `s`, or marks `s` failed with the error.
pub fn record(s: &mut Series, r: anyhow::Result<Sample>) {
    match r {
        Ok(v) => s.samples.push(v),
        Err(e) => s.missing = Some(format!("failed: {e}")),
    }
}

impl Series {
    fn median(&self) -> Option<Sample> {
        let mut s = self.samples.clone();
        if s.is_empty() {
            return None;
        }
        s.sort_by(|a, b| a.value.total_cmp(&b.value));
        Some(s[s.len() / 2])
    }

    fn spread(&self) -> Option<(f64, f64)> {
        let min = self.samples.iter().map(|s| s.value).reduce(f64::min)?;
        let max = self.samples.iter().map(|s| s.value).reduce(f64::max)?;
        Some((min, max))
    }
}

/// One workload's results.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Workload name.
    pub workload: String,
    /// What one operation is, and what corral guarantees while doing it.
    pub note: String,
    /// Unit of the figures: `ops/s`, `items/s`, `ms`, `MB`, ... (for `ms`, lower is better).
    pub unit: String,
    /// corral first, then the peers.
    pub series: Vec<Series>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.echo_server {
        return floor::echo_server(path);
    }
    if let (Some(name), Some(socket)) = (&args.drive, &args.socket) {
        return workloads::drive(name, socket, args.count);
    }
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 5 });
    let window = if args.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(2)
    };
    let dir = tempfile::Builder::new().prefix("corral-bench-").tempdir()?;
    let mut env = peers::Environment::start(dir.path())?;
    let mut reports = Vec::new();
    // Always: every other figure is read against them.
    eprintln!("measuring the machine's floors ...");
    reports.extend(floor::reports(dir.path(), rounds, window));
    for workload in workloads::all() {
        if args
            .only
            .as_deref()
            .is_some_and(|o| !workload.name.contains(o))
        {
            continue;
        }
        eprintln!("running {} ...", workload.name);
        reports.push(workloads::run(&workload, &mut env, rounds, window));
    }
    let wanted = |group: &str| wanted_group(&args.only, group);
    if wanted("python") {
        eprintln!("running the Python client's workloads ...");
        reports.extend(workloads::python_reports(&env, rounds, window));
    }
    // `--only drop-in` (or `python`) runs these.
    if wanted("python drop-in") {
        eprintln!("running the multiprocessing drop-in workloads ...");
        reports.extend(workloads::dropin_reports(&env, rounds));
    }
    if wanted("daemon") {
        eprintln!("running daemon workloads ...");
        reports.extend(daemon::reports(dir.path(), rounds, args.quick)?);
    }
    if wanted("soak") {
        let (clients, length) = if args.quick {
            (20, Duration::from_secs(2))
        } else {
            (200, Duration::from_secs(60))
        };
        eprintln!("running the soak ({clients} clients) ...");
        reports.extend(soak::report(&env, clients, length)?);
    }
    if wanted("postgres") {
        eprintln!("running the coordination workloads on the PostgreSQL backend ...");
        reports.extend(pg::reports(&env, dir.path(), rounds, window));
    }
    if wanted("pool") {
        eprintln!("running pool workloads ...");
        reports.extend(pool::reports(&env, rounds, args.quick));
        eprintln!("running pool workloads across nodes ...");
        reports.extend(pool_nodes::report(dir.path(), rounds, args.quick));
    }
    env.stop();
    print!("{}", markdown(&reports, rounds, window));
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&reports)?)?;
    }
    // A peer may be missing; corral itself must not fail.
    if let Some(r) = reports.iter().find(|r| r.series[0].missing.is_some()) {
        anyhow::bail!(
            "corral failed in `{}`: {}",
            r.workload,
            r.series[0].missing.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// Whether `--only` selects the workloads of `group`.
fn wanted_group(only: &Option<String>, group: &str) -> bool {
    only.as_deref()
        .is_none_or(|o| group.contains(o) || o.contains(group))
}

/// The median of `system` in the workload whose name starts with `workload`.
fn median_of(reports: &[Report], workload: &str, system: &str) -> Option<f64> {
    reports
        .iter()
        .find(|r| r.workload.starts_with(workload))?
        .series
        .iter()
        .find(|s| s.system.starts_with(system))?
        .median()
        .map(|m| m.value)
}

/// The median p50 (µs) of `system` in the workload whose name starts with `workload`.
fn p50_of(reports: &[Report], workload: &str, system: &str) -> Option<f64> {
    reports
        .iter()
        .find(|r| r.workload.starts_with(workload))?
        .series
        .iter()
        .find(|s| s.system.starts_with(system))?
        .median()?
        .p50_us
}

/// Each performance target (the latest performance issue's, and the earlier ones still in
/// force), with "met", "missed" or why it was not measured. Targets are ratios against a
/// peer or the machine's floor measured in the same run: machines differ too much for
/// absolute figures.
fn targets(reports: &[Report]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut check = |target: String, figures: Option<(f64, bool)>| {
        let verdict = match figures {
            Some((_, true)) => "met".to_string(),
            Some((_, false)) => "**missed**".to_string(),
            None => "not measured".to_string(),
        };
        let shown = figures.map_or(String::new(), |(v, _)| format!(" (measured {v:.2})"));
        out.push((format!("{target}{shown}"), verdict));
    };
    let corral = |w: &str| median_of(reports, w, "corral");
    let ratio = |w: &str, peer: &str| Some(corral(w)? / median_of(reports, w, peer)?);
    let floor_us = p50_of(reports, floor::ROUND_TRIP, "bare echo");
    // Round trips per operation: put then get; add; acquire then release.
    for (w, trips) in [
        ("queue put+get, 1 client", 2.0),
        ("counter add, 1 client", 1.0),
        ("lock acquire+release, 1 client", 2.0),
    ] {
        check(
            format!("{w}: corral ÷ Redis ≥ 1"),
            ratio(w, "redis").map(|r| (r, r >= 1.0)),
        );
        let multiple = p50_of(reports, w, "corral")
            .zip(floor_us)
            .map(|(p50, floor)| p50 / trips / floor);
        check(
            format!("{w}: p50 per round trip ÷ the socket floor's p50 ≤ 2.5"),
            multiple.map(|m| (m, m <= 2.5)),
        );
    }
    for w in ["counter add, 4 clients", "queue put+get, 50 clients"] {
        check(
            format!("{w}: corral ÷ Redis ≥ 1"),
            ratio(w, "redis").map(|r| (r, r >= 1.0)),
        );
    }
    for shape in ["counter add", "queue put+get", "lock acquire+release"] {
        let w = format!("{}{shape}, {} clients", pg::PREFIX, pg::CLIENTS);
        let r = median_of(reports, &w, pg::TWO_NODES)
            .zip(median_of(reports, &w, pg::PGBENCH))
            .map(|(c, f)| c / f);
        check(
            format!("{w}: {} ÷ pgbench's TPS ≥ 0.5", pg::TWO_NODES),
            r.map(|r| (r, r >= 0.5)),
        );
    }
    check(
        "counter add, 4 clients: corral ÷ mp.Manager ≥ 10".into(),
        ratio("counter add, 4 clients", "mp.Manager").map(|r| (r, r >= 10.0)),
    );
    for w in ["python queue put+get", "python lock acquire+release"] {
        check(
            format!("{w}: corral's Python client ÷ mp.Manager ≥ 2"),
            ratio(w, "mp.Manager").map(|r| (r, r >= 2.0)),
        );
    }
    check(
        "pool stream: corral ÷ mp.Pool(4) chunksize 1 ≥ 5".into(),
        ratio("pool stream", "mp.Pool(4) chunksize=1").map(|r| (r, r >= 5.0)),
    );
    let spawn = corral("spawn 500");
    check(
        "spawn 500: corral ÷ supervisord ≥ 6".into(),
        spawn
            .zip(median_of(reports, "spawn 500", "supervisord"))
            .map(|(c, s)| (c / s, c / s >= 6.0)),
    );
    check(
        "spawn 500: corral ÷ the posix_spawn floor ≥ 0.5".into(),
        spawn
            .zip(median_of(reports, floor::SPAWN, "posix_spawn"))
            .map(|(c, f)| (c / f, c / f >= 0.5)),
    );
    check(
        "restart latency p50 < 20 ms".into(),
        corral("restart latency").map(|v| (v, v < 20.0)),
    );
    check(
        "pool exec: time ÷ xargs' time ≤ 1.2".into(),
        corral("pool exec")
            .zip(median_of(reports, "pool exec", "xargs"))
            .map(|(c, x)| (x / c, x / c <= 1.2)),
    );
    // Times in ms: corral's over multiprocessing's, lower is better.
    check(
        "python drop-in Pool(4).map: corral's time ÷ multiprocessing's ≤ 3".into(),
        ratio("python drop-in Pool(4).map", "multiprocessing").map(|r| (r, r <= 3.0)),
    );
    check(
        "python drop-in Process start+join: corral's time ÷ multiprocessing spawn's ≤ 1.5".into(),
        ratio("python drop-in Process start+join", "multiprocessing").map(|r| (r, r <= 1.5)),
    );
    check(
        "idle RSS with 200 processes < 10 MB".into(),
        corral("idle RSS, 200 processes").map(|v| (v, v < 10.0)),
    );
    out
}

fn figure(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn markdown(reports: &[Report], rounds: usize, window: Duration) -> String {
    let mut out = format!(
        "\n{rounds} round(s) of {:?} per system, alternating; figures are medians (min–max over rounds).\n\n",
        window
    );
    out.push_str("| workload | system | figure | spread | p50 µs | p99 µs | corral ÷ this |\n|---|---|---:|---:|---:|---:|---:|\n");
    for r in reports {
        let corral = r.series.first().and_then(Series::median);
        for s in &r.series {
            let Some(m) = s.median() else {
                out.push_str(&format!(
                    "| {} | {} | {} | | | | |\n",
                    r.workload,
                    s.system,
                    s.missing.as_deref().unwrap_or("no data")
                ));
                continue;
            };
            let (lo, hi) = s.spread().unwrap_or((m.value, m.value));
            let ratio = corral.map_or(String::new(), |c| format!("{:.2}×", c.value / m.value));
            let us = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0}"));
            out.push_str(&format!(
                "| {} | {} | {} {} | {}–{} | {} | {} | {} |\n",
                r.workload,
                s.system,
                figure(m.value),
                r.unit,
                figure(lo),
                figure(hi),
                us(m.p50_us),
                us(m.p99_us),
                ratio
            ));
        }
    }
    out.push_str("\nTargets (issue figures for a 2-core machine; `--quick` runs are too short to judge):\n\n");
    for (target, verdict) in targets(reports) {
        out.push_str(&format!("- {verdict}: {target}\n"));
    }
    out.push_str("\nNotes:\n");
    for r in reports {
        out.push_str(&format!("- {}: {}\n", r.workload, r.note));
    }
    out
}
