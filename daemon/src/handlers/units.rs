//! `status`, `start`, `stop`, `restart`, `wait`, `reload` and `run`.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_config::Unit;
use corral_proto::{ErrorBody, ErrorCode, LogLine, MAX_PARENT_LABEL, Response, RunResult};

use super::{Outcome, ok};
use crate::context::Context;
use crate::replies::Replies;
use crate::supervisor::logs::{Follower, tail_lines};
use crate::supervisor::{Request, StartFailure, Transient};

/// Scheduled units with their last and next runs.
pub async fn timers(ctx: &Context) -> Outcome {
    ok(ctx.supervisor.ask(Request::Timers).await?)
}

/// Units and their instances, then the processes of running pool jobs (`pool-ID`).
pub async fn status(
    ctx: &Context,
    unit: Option<String>,
) -> Result<corral_proto::StatusResult, ErrorBody> {
    let jobs = ctx.pool.ask(crate::pool::PoolRequest::Processes).await?;
    if let Some(name) = &unit {
        if let Some(job) = jobs.iter().find(|j| &j.name == name) {
            return Ok(corral_proto::StatusResult {
                units: vec![job.clone()],
                supervision: String::new(),
            });
        }
    }
    let mut status = ctx
        .supervisor
        .ask(|r| Request::Status(unit.clone(), r))
        .await?;
    if unit.is_none() {
        status.units.extend(jobs);
    }
    Ok(status)
}

pub async fn start(ctx: &Context, units: Vec<String>) -> Outcome {
    require_units(&units)?;
    let result = ctx.supervisor.ask(|r| Request::Start(units, r)).await?;
    ctx.store.sync().await?;
    ok(result)
}

/// `start` with `wait`: answered once the instances have started, or failed to (see
/// `supervisor::started`), or after `timeout_ms`.
pub async fn start_and_wait(
    ctx: Arc<Context>,
    units: Vec<String>,
    timeout_ms: Option<u64>,
) -> Outcome {
    require_units(&units)?;
    within(timeout_ms, &units, async {
        let result = ctx
            .supervisor
            .ask(|r| Request::Start(units.clone(), r))
            .await?;
        ctx.store.sync().await?;
        started(&ctx, units.clone()).await?;
        ok(result)
    })
    .await
}

/// Runs `op`, a start that waits, giving up after `timeout_ms` with a `timeout` error.
async fn within(
    timeout_ms: Option<u64>,
    units: &[String],
    op: impl std::future::Future<Output = Outcome>,
) -> Outcome {
    let Some(ms) = timeout_ms else {
        return op.await;
    };
    tokio::time::timeout(Duration::from_millis(ms), op)
        .await
        .map_err(|_| {
            ErrorBody::new(
                ErrorCode::Timeout,
                format!(
                    "{} not started after {ms} ms; it goes on starting (see `corralctl status`)",
                    units.join(" ")
                ),
            )
        })?
}

/// Waits until every instance of `units` has started; a `failed` error naming those
/// that did not, with the last lines of their logs.
async fn started(ctx: &Context, units: Vec<String>) -> Result<(), ErrorBody> {
    let failures = ctx.supervisor.ask(|r| Request::Started(units, r)).await?;
    if failures.is_empty() {
        return Ok(());
    }
    Err(tokio::task::spawn_blocking(move || start_error(&failures))
        .await
        .map_err(|e| ErrorBody::new(ErrorCode::Internal, e.to_string()))?)
}

/// At most this many failed instances are described, each with this many log lines.
const DESCRIBED_FAILURES: usize = 5;
const LOG_LINES: usize = 10;

fn start_error(failures: &[StartFailure]) -> ErrorBody {
    let message = match failures {
        [one] => format!(
            "{}.{} did not start: {}",
            one.unit, one.instance, one.reason
        ),
        many => format!("{} instances did not start", many.len()),
    };
    let mut details = Vec::new();
    for f in failures.iter().take(DESCRIBED_FAILURES) {
        if failures.len() > 1 {
            details.push(format!("{}.{}: {}", f.unit, f.instance, f.reason));
        }
        match tail_lines(&f.log, LOG_LINES) {
            Ok(lines) if lines.is_empty() => {
                details.push(format!("{} is empty", f.log.display()));
            }
            Ok(lines) => {
                details.push(format!("last lines of {}:", f.log.display()));
                details.extend(lines.into_iter().map(|l| format!("  {l}")));
            }
            Err(e) => details.push(format!("cannot read {}: {e}", f.log.display())),
        }
    }
    if failures.len() > DESCRIBED_FAILURES {
        details.push(format!(
            "... and {} more (corralctl status)",
            failures.len() - DESCRIBED_FAILURES
        ));
    }
    ErrorBody {
        code: ErrorCode::Failed,
        message,
        details,
    }
}

pub async fn stop(ctx: Arc<Context>, units: Vec<String>) -> Outcome {
    require_units(&units)?;
    let result = ctx.supervisor.ask(|r| Request::Stop(units, r)).await?;
    ctx.store.sync().await?;
    ok(result)
}

/// Stop, then start; with `wait`, answered once started again (as [`start_and_wait`]).
pub async fn restart(
    ctx: Arc<Context>,
    units: Vec<String>,
    wait: bool,
    timeout_ms: Option<u64>,
) -> Outcome {
    require_units(&units)?;
    let timeout_ms = timeout_ms.filter(|_| wait);
    within(timeout_ms, &units, async {
        let result = ctx
            .supervisor
            .ask(|r| Request::Restart(units.clone(), r))
            .await?;
        ctx.store.sync().await?;
        if wait {
            started(&ctx, units.clone()).await?;
        }
        ok(result)
    })
    .await
}

pub async fn kill(ctx: &Context, units: Vec<String>, signal: &str) -> Outcome {
    require_units(&units)?;
    let number = corral_config::signal_number(signal).ok_or_else(|| {
        ErrorBody::new(
            ErrorCode::BadRequest,
            format!("unknown signal `{signal}`: use a name like SIGKILL or TERM, or a number"),
        )
    })?;
    let result = ctx
        .supervisor
        .ask(|r| Request::Kill(units, number, r))
        .await?;
    ctx.store.sync().await?;
    ok(result)
}

fn require_units(units: &[String]) -> Result<(), ErrorBody> {
    if units.is_empty() {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            "name at least one unit",
        ));
    }
    Ok(())
}

pub async fn wait(ctx: Arc<Context>, unit: String, timeout_ms: Option<u64>) -> Outcome {
    let wait = ctx.supervisor.ask(|r| Request::Wait(unit.clone(), r));
    let result = match timeout_ms {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), wait)
            .await
            .map_err(|_| {
                ErrorBody::new(
                    ErrorCode::Timeout,
                    format!("`{unit}` is still running after {ms} ms"),
                )
            })??,
        None => wait.await?,
    };
    // What the client is told has happened is on disk first.
    ctx.store.sync().await?;
    ok(result)
}

pub async fn reload(ctx: &Context) -> Outcome {
    let dir = ctx.settings.units_dir.clone();
    let loaded = tokio::task::spawn_blocking(move || corral_config::load_units_dir(&dir))
        .await
        .map_err(|e| ErrorBody::new(ErrorCode::Internal, format!("reload task failed: {e}")))?;
    let units = loaded.map_err(|errors| ErrorBody {
        code: ErrorCode::InvalidConfig,
        message: format!(
            "reload rejected: {} error(s) in {}; nothing was changed",
            errors.len(),
            ctx.settings.units_dir.display()
        ),
        details: errors.iter().map(|e| e.to_string()).collect(),
    })?;
    let count = units.len();
    let result = ctx.supervisor.ask(|r| Request::Reload(units, r)).await?;
    ctx.store.sync().await?;
    // Units that were not loaded at start are loaded now: systemd's STATUS= says so.
    crate::notify::notify(&format!(
        "STATUS=serving {} with {count} unit(s)",
        ctx.settings.socket.display()
    ));
    ok(result)
}

/// What `run` starts.
pub struct RunSpec {
    /// Run as this uid (a client other than root or corrald's own user).
    pub run_as: Option<u32>,
    /// Unit name (default `run-N`).
    pub name: Option<String>,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute).
    pub working_dir: Option<String>,
    /// Dies with corrald, like a `daemon = true` unit.
    pub daemon: bool,
    /// The client's descriptors for the process's stdout and stderr (instead of its log).
    pub stdio: Option<[OwnedFd; 2]>,
    /// The connection whose closing stops the unit.
    pub owner: Option<super::BoundUnits>,
    /// The program it is started for (its pid filled in from the connection if absent).
    pub parent: Option<corral_proto::RunParent>,
    /// An anonymous session the process holds from before its spawn until it exits.
    pub anon_session: Option<String>,
    /// Who asked.
    pub asker: crate::primitives::ConnInfo,
}

/// `run`: start a transient task; with `wait`, stream its output and answer with its exit.
pub async fn run(ctx: Arc<Context>, id: u64, mut spec: RunSpec, wait: bool, replies: Replies) {
    let owner = spec.owner.take();
    // Held before the spawn, so that no moment exists where the process runs and holds
    // nothing (its client may die right after asking).
    let hold = match spec.anon_session.take() {
        Some(session) => match super::anon::ChildHold::take(&ctx, spec.asker, session).await {
            Ok(hold) => Some(hold),
            Err(e) => {
                replies.send(Response::err(id, e)).await;
                return;
            }
        },
        None => None,
    };
    let outcome = start_transient(&ctx, spec).await;
    let unit = match outcome {
        Ok(unit) => unit,
        Err(e) => {
            if let Some(hold) = hold {
                hold.spawned(&ctx, None).await;
            }
            replies.send(Response::err(id, e)).await;
            return;
        }
    };
    if let Some(owner) = owner {
        if !owner.add(&unit) {
            super::stop_bound(&ctx, vec![unit.clone()]);
        }
    }
    let pid = if !wait || hold.is_some() {
        // Once the process runs: its pid for the client (`Process.pid`) and the hold.
        ctx.supervisor
            .ask(|r| Request::FirstPid(unit.clone(), r))
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    if let Some(hold) = hold {
        hold.spawned(&ctx, pid).await;
    }
    if !wait {
        let result = RunResult {
            unit,
            exit: None,
            pid,
        };
        replies.send(Response::ok(id, result)).await;
        return;
    }
    let log = crate::supervisor::logs::log_path(&ctx.settings.log_dir, &unit, 0);
    let mut follower = Follower::from_start(log);
    let waited = unit.clone();
    let done = ctx.supervisor.ask(|r| Request::Wait(waited, r));
    tokio::pin!(done);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let finished = loop {
        tokio::select! {
            finished = &mut done => break finished,
            _ = tick.tick() => {
                if !send_lines(&mut follower, false, id, &replies).await { return; }
            }
            _ = replies.closed() => return,
        }
    };
    if !send_lines(&mut follower, true, id, &replies).await {
        return;
    }
    let response = match ctx.store.sync().await.and(finished) {
        Ok(result) => match result.instances.first() {
            Some(i) if i.exit.is_none() => Response::err(
                id,
                ErrorBody::new(
                    ErrorCode::Failed,
                    i.reason
                        .clone()
                        .unwrap_or_else(|| format!("`{unit}` did not run")),
                ),
            ),
            first => Response::ok(
                id,
                RunResult {
                    unit,
                    exit: first.and_then(|i| i.exit),
                    pid: None,
                },
            ),
        },
        Err(e) => Response::err(id, e),
    };
    replies.send(response).await;
}

async fn start_transient(ctx: &Context, spec: RunSpec) -> Result<String, ErrorBody> {
    let RunSpec {
        run_as,
        name,
        command,
        env,
        working_dir,
        daemon,
        stdio,
        parent,
        owner: _,
        anon_session: _,
        asker: _,
    } = spec;
    let bad = |m: String| ErrorBody::new(ErrorCode::BadRequest, m);
    if command.first().is_none_or(|p| p.is_empty()) {
        return Err(bad(
            "run needs a command: corralctl run -- PROGRAM ARGS...".into()
        ));
    }
    if let Some(n) = &name {
        if !corral_config::valid_unit_name(n) {
            return Err(bad(format!(
                "invalid unit name `{n}`: use letters, digits and `_ - . @`, not starting with `.`"
            )));
        }
    }
    if let Some(p) = parent.as_ref().filter(|p| p.label.len() > MAX_PARENT_LABEL) {
        return Err(bad(format!(
            "parent label is {} bytes; at most {MAX_PARENT_LABEL} are accepted",
            p.label.len()
        )));
    }
    // The rule unit files follow, so a name that no unit could set is refused here too.
    for (key, value) in &env {
        if let Some(problem) = corral_config::env_name_problem(key) {
            return Err(bad(format!(
                "environment variable names {problem}: `{key}`"
            )));
        }
        if value.contains('\0') {
            return Err(bad(format!(
                "environment variable `{key}`: values must not contain NUL bytes"
            )));
        }
    }
    let mut unit = Unit::transient(name.as_deref().unwrap_or(""), command);
    unit.env = env;
    unit.daemon = daemon;
    // A client other than root (or corrald's own user) runs things as itself.
    unit.user = run_as.map(|uid| uid.to_string());
    if let Some(dir) = working_dir {
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return Err(bad(format!(
                "working_dir must be absolute, got {}",
                dir.display()
            )));
        }
        unit.working_dir = Some(dir);
    }
    let unit = ctx
        .supervisor
        .ask(|r| {
            let transient = Transient {
                unit,
                stdio,
                parent,
            };
            Request::Run(Box::new(transient), r)
        })
        .await?;
    ctx.store.sync().await?;
    Ok(unit)
}

async fn send_lines(follower: &mut Follower, flush: bool, id: u64, replies: &Replies) -> bool {
    let lines = match follower.poll(flush) {
        Ok(lines) => lines,
        Err(e) => {
            tracing::warn!("reading output: {e}");
            return true;
        }
    };
    for line in lines {
        if !replies
            .send(Response::event(id, LogLine { instance: 0, line }))
            .await
        {
            return false;
        }
    }
    true
}
