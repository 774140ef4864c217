//! `pool map|list|status|results|wait|cancel|rm`: parallel maps run by corrald.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use corral_client::proto::{JobState, Op, PoolItem, PoolJob, PoolListResult, PoolResults};
use corral_client::{Client, Error};

use crate::args::Timeout;
use crate::output::{Output, print_error, table};

/// Options of `pool map`.
pub struct MapArgs {
    pub pool: Option<String>,
    pub workers: Option<usize>,
    pub retries: u32,
    pub timeout: Option<Duration>,
    pub name: Option<String>,
    pub stream: bool,
    pub detach: bool,
    /// `CMD ARGS... [::: INPUTS...]`
    pub rest: Vec<String>,
}

/// Splits `CMD ARGS... ::: INPUTS...`; without `:::`, inputs are stdin's lines.
fn command_and_inputs(rest: Vec<String>) -> Result<(Vec<String>, Vec<String>), Error> {
    match rest.iter().position(|a| a == ":::") {
        Some(at) => {
            let inputs = rest[at + 1..].to_vec();
            let mut command = rest;
            command.truncate(at);
            Ok((command, inputs))
        }
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            Ok((rest, text.lines().map(str::to_owned).collect()))
        }
    }
}

fn usage(message: &str) -> Error {
    Error::Server(corral_client::proto::ErrorBody::new(
        corral_client::proto::ErrorCode::BadRequest,
        message,
    ))
}

pub fn map(client: &Client, out: &Output, args: MapArgs) -> Result<ExitCode, Error> {
    let (command, inputs) = command_and_inputs(args.rest)?;
    if command.is_empty() && args.pool.is_none() {
        return Err(usage(
            "give a command after `--`: corralctl pool map -- CMD ARGS... ::: INPUTS...",
        ));
    }
    let job: PoolJob = client.call(Op::PoolSubmit {
        name: args.name,
        pool: args.pool,
        command,
        inputs,
        workers: args.workers,
        retries: args.retries,
        timeout_ms: args.timeout.map(|t| t.as_millis().max(1) as u64),
        stream: args.stream,
        working_dir: std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
        env: Default::default(),
        cancel_on_disconnect: false,
        open: false,
        max_items_per_worker: None,
    })?;
    if args.detach {
        if out.json {
            out.print_json(&job);
        } else {
            println!("{}", job.job);
        }
        return Ok(ExitCode::SUCCESS);
    }
    follow(client, out, job)
}

/// Prints a job's items in input order as they finish, then a summary of failures.
fn follow(client: &Client, out: &Output, job: PoolJob) -> Result<ExitCode, Error> {
    let progress = Progress::start(client, job.job, job.total);
    let mut failed: Vec<PoolItem> = Vec::new();
    let stdout = std::io::stdout();
    let end: Result<PoolJob, Error> = client.call_streaming(
        Op::PoolWait {
            job: job.job,
            results: true,
            timeout_ms: None,
            from: None,
            count: None,
        },
        |event| {
            let Ok(item) = serde_json::from_value::<PoolItem>(event) else {
                return;
            };
            // Items come in input order: at least this many are done.
            let printed = item.index as u64 + 1;
            if progress.bar.position() < printed {
                progress.bar.set_position(printed);
            }
            // The bar is taken off the terminal while the item is printed, then redrawn
            // below it: item output and the bar never share a line.
            progress.bar.suspend(|| {
                let mut lock = stdout.lock();
                if out.json {
                    let _ = writeln!(lock, "{}", item_record(&item));
                } else {
                    let _ = lock.write_all(item.stdout.as_bytes());
                    if !item.stdout.is_empty() && !item.stdout.ends_with('\n') {
                        let _ = lock.write_all(b"\n");
                    }
                    let _ = lock.flush();
                    if !item.stderr.is_empty() {
                        eprint!("{}", item.stderr);
                    }
                }
                let _ = lock.flush();
            });
            if !item.ok {
                failed.push(item);
            }
        },
    );
    progress.stop();
    report(&end?, &failed)
}

/// One line of `pool map --json`.
fn item_record(item: &PoolItem) -> serde_json::Value {
    let mut record = serde_json::json!({
        "index": item.index,
        "input": item.input,
        "ok": item.ok,
        "exit": item.exit,
        "stdout": item.stdout,
        "stderr": item.stderr,
        "error": item.error,
        "truncated": item.truncated,
        "attempts": item.attempts,
        "duration_ms": item.ended_ms - item.started_ms,
    });
    // With a shared backend: the node that ran it.
    if let Some(node) = &item.node {
        record["node"] = node.as_str().into();
    }
    record
}

fn report(job: &PoolJob, failed: &[PoolItem]) -> Result<ExitCode, Error> {
    if job.state == JobState::Cancelled {
        let message = format!(
            "pool job {} was cancelled: {} of {} items done",
            job.job,
            job.succeeded + job.failed,
            job.total
        );
        print_error("cancelled", &message, &[]);
        return Ok(ExitCode::from(1));
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut details: Vec<String> = failed
        .iter()
        .take(20)
        .map(|item| {
            let why = match (&item.error, item.exit) {
                (Some(e), _) => e.clone(),
                (None, Some(exit)) => exit.to_string(),
                (None, None) => "failed".into(),
            };
            format!("item {} (input {:?}): {why}", item.index, item.input)
        })
        .collect();
    if failed.len() > 20 {
        details.push(format!(
            "... and {} more (corralctl --json pool results {})",
            failed.len() - 20,
            job.job
        ));
    }
    let message = format!("{} of {} items failed:", failed.len(), job.total);
    print_error("failed", &message, &details);
    Ok(ExitCode::from(1))
}

/// The progress bar of `pool map` on stderr (hidden unless stderr is a terminal), fed by
/// a thread asking corrald for the job's counts on a connection of its own.
struct Progress {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(client: &Client, job: u64, total: usize) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                stop,
                thread: None,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        // The counts come first; what does not fit the terminal's width is cut from the
        // end of the message, so the line never wraps (the bar is left out when narrow).
        let width = console::Term::stderr().size().1;
        let template = if width >= 60 {
            "{bar:24} {pos}/{len} {wide_msg}"
        } else {
            "{pos}/{len} {wide_msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("a valid template")
                .progress_chars("#>-"),
        );
        let flag = stop.clone();
        let socket = client.socket().to_owned();
        let shown = bar.clone();
        let thread = std::thread::spawn(move || {
            let Ok(client) = Client::connect_to(&socket) else {
                return;
            };
            let began = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(info) = client.call::<PoolJob>(Op::PoolStatus { job }) {
                    let done = info.succeeded + info.failed;
                    let rate = done as f64 / began.elapsed().as_secs_f64().max(0.001);
                    let eta = if rate > 0.0 {
                        format!("{:.0}s", (total.saturating_sub(done)) as f64 / rate)
                    } else {
                        "?".into()
                    };
                    if shown.position() < done as u64 {
                        shown.set_position(done as u64);
                    }
                    shown.set_message(format!(
                        "done, {} failed, {} running, {rate:.0}/s, ETA {eta}",
                        info.failed, info.running
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Progress {
            bar,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and takes the bar off the terminal.
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

pub fn list(client: &Client, out: &Output) -> Result<ExitCode, Error> {
    let result: PoolListResult = client.call(Op::PoolList {})?;
    if out.json {
        out.print_json(&result);
    } else {
        print!("{}", job_table(&result.jobs));
    }
    Ok(ExitCode::SUCCESS)
}

fn job_table(jobs: &[PoolJob]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.job.to_string(),
                j.name.clone().unwrap_or_else(|| "-".into()),
                j.mode.clone(),
                j.state.to_string(),
                j.succeeded.to_string(),
                j.failed.to_string(),
                j.running.to_string(),
                j.pending.to_string(),
                j.total.to_string(),
                j.command.join(" "),
            ]
        })
        .collect();
    table(
        &[
            "JOB", "NAME", "MODE", "STATE", "OK", "FAILED", "RUNNING", "PENDING", "TOTAL",
            "COMMAND",
        ],
        &rows,
    )
}

pub fn status(client: &Client, out: &Output, job: u64) -> Result<ExitCode, Error> {
    let info: PoolJob = client.call(Op::PoolStatus { job })?;
    if out.json {
        out.print_json(&info);
    } else {
        print!("{}", job_table(std::slice::from_ref(&info)));
        if !info.nodes.is_empty() {
            let seconds = run_seconds(&info);
            let rows: Vec<Vec<String>> = info
                .nodes
                .iter()
                .map(|n| {
                    let done = (n.succeeded + n.failed) as f64;
                    vec![
                        n.node.clone(),
                        n.running.to_string(),
                        n.succeeded.to_string(),
                        n.failed.to_string(),
                        format!("{:.1}", done / seconds),
                    ]
                })
                .collect();
            println!();
            print!(
                "{}",
                table(&["NODE", "RUNNING", "OK", "FAILED", "ITEMS/S"], &rows)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How long a job has run, in seconds: from its submission to its end, or to now (a
/// node's rate is the items it finished over this time).
fn run_seconds(info: &PoolJob) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let end = info.finished_ms.unwrap_or(now);
    (end - info.created_ms).max(1) as f64 / 1000.0
}

pub fn results(client: &Client, out: &Output, job: u64) -> Result<ExitCode, Error> {
    let result: PoolResults = client.call(Op::PoolResults { job })?;
    if out.json {
        out.print_json(&result);
    } else {
        for item in &result.items {
            print!("{}", item.stdout);
            if !item.stdout.is_empty() && !item.stdout.ends_with('\n') {
                println!();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn wait(
    client: &Client,
    out: &Output,
    job: u64,
    timeout: Option<Timeout>,
) -> Result<ExitCode, Error> {
    let info: PoolJob = client.call(Op::PoolWait {
        job,
        results: false,
        timeout_ms: timeout.map(|t| t.millis()),
        from: None,
        count: None,
    })?;
    if out.json {
        out.print_json(&info);
    } else {
        println!(
            "pool job {}: {} ({} ok, {} failed of {})",
            info.job, info.state, info.succeeded, info.failed, info.total
        );
    }
    Ok(if info.state == JobState::Finished && info.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn remove(client: &Client, out: &Output, job: u64) -> Result<ExitCode, Error> {
    let info: PoolJob = client.call(Op::PoolRemove { job })?;
    if out.json {
        out.print_json(&info);
    } else {
        println!(
            "pool job {} removed ({}: {} ok, {} failed of {})",
            info.job, info.state, info.succeeded, info.failed, info.total
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn cancel(client: &Client, out: &Output, job: u64) -> Result<ExitCode, Error> {
    let info: PoolJob = client.call(Op::PoolCancel { job })?;
    if out.json {
        out.print_json(&info);
    } else {
        println!("pool job {} cancelled", info.job);
    }
    Ok(ExitCode::SUCCESS)
}
