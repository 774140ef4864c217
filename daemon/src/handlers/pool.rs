//! Pool jobs: submit, wait (streaming results in input order), status, results, list, cancel,
//! remove.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corral_proto::{ErrorBody, ErrorCode, Response};
use tokio::sync::mpsc;

use super::{Outcome, ok};
use crate::context::Context;
pub use crate::pool::Wait;
use crate::pool::nodes::not_across_nodes;
use crate::pool::{JobSpec, PoolRequest};
use crate::replies::Replies;
use crate::supervisor::Request;

/// Largest job accepted, in inputs.
const MAX_INPUTS: usize = 10_000_000;

/// What `pool_submit` carries.
pub struct Submit {
    /// Run the job's processes as this uid (a non-root client's own).
    pub run_as: Option<u32>,
    /// From a named pool: its stop signal and stop timeout (ms).
    pub stop: Option<(i32, u64)>,
    pub name: Option<String>,
    pub pool: Option<String>,
    pub command: Vec<String>,
    pub inputs: Vec<String>,
    pub workers: Option<usize>,
    pub retries: u32,
    pub timeout_ms: Option<u64>,
    pub stream: bool,
    pub working_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub open: bool,
    pub max_items_per_worker: Option<u64>,
    /// The client process the job dies with: pid and start time.
    pub owner: Option<(i32, u64)>,
}

pub async fn submit(ctx: &Context, mut s: Submit) -> Outcome {
    let bad = |m: String| Err(ErrorBody::new(ErrorCode::BadRequest, m));
    if ctx.cluster.is_some() {
        if s.pool.is_some() {
            return Err(not_across_nodes("a named pool (--pool)"));
        }
        if s.stream || s.open {
            return Err(not_across_nodes("stream mode (and open jobs)"));
        }
        // The job outlives its submitter's node: the submitting connection still cancels
        // it when it closes, but no node watches a client process of another.
        s.owner = None;
    }
    if let Some(name) = s.pool.take() {
        if !s.command.is_empty() {
            return bad(format!("give either --pool {name} or a command, not both"));
        }
        let unit = ctx
            .supervisor
            .ask(|r| Request::Definition(name.clone(), r))
            .await?;
        if unit.kind != corral_config::UnitKind::Pool {
            return bad(format!(
                "`{name}` is a {}, not a pool (kind = \"pool\")",
                unit.kind.as_str()
            ));
        }
        s.command = unit.command.clone();
        s.workers = s.workers.or(unit.workers.map(|w| w as usize));
        s.stream = unit.mode == corral_config::PoolMode::Stream;
        let mut env = unit.env.clone();
        // The pool's environment files are read at each submission, as a service's are
        // at each start; the job's own variables override both.
        if !unit.env_files.is_empty() {
            let files = unit.env_files.clone();
            let read = tokio::task::spawn_blocking(move || corral_config::read_env_files(&files))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match read {
                Ok(vars) => env.extend(vars),
                Err(reason) => return bad(reason),
            }
        }
        env.extend(s.env);
        s.env = env;
        s.working_dir = unit
            .working_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .or(s.working_dir);
        s.name = s.name.or(Some(name));
        s.stop = Some((
            unit.stop_signal_number,
            unit.stop_timeout.as_millis() as u64,
        ));
    }
    if s.command.first().is_none_or(|p| p.is_empty()) {
        return bad(
            "a pool job needs a command: corralctl pool map -- PROGRAM ARGS... ::: INPUTS".into(),
        );
    }
    if s.open && !s.stream {
        return bad("only a stream-mode job can be open for more inputs".into());
    }
    if s.max_items_per_worker == Some(0) {
        return bad("max_items_per_worker must be at least 1".into());
    }
    if s.inputs.is_empty() && !s.open {
        return bad("no inputs: give them after `:::` or one per line on stdin".into());
    }
    if s.inputs.len() > MAX_INPUTS {
        return bad(format!("at most {MAX_INPUTS} inputs per job"));
    }
    if s.workers == Some(0) {
        return bad("-j/workers must be at least 1".into());
    }
    if s.stream && s.inputs.iter().any(|i| i.contains('\n')) {
        return bad("in stream mode an input is one line: inputs may not contain newlines".into());
    }
    if s.timeout_ms == Some(0) {
        return bad("a timeout must be more than 0".into());
    }
    let working_dir = s.working_dir.map(PathBuf::from);
    if working_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
        return bad("working_dir must be an absolute path".into());
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spec = JobSpec {
        command: s.command,
        stream: s.stream,
        workers: s.workers.unwrap_or(cpus),
        retries: s.retries,
        timeout_ms: s.timeout_ms,
        working_dir,
        env: s.env,
        user: s.run_as.map(|uid| uid.to_string()),
        stop_signal: s.stop.map_or(15, |(sig, _)| sig),
        stop_timeout_ms: s.stop.map_or(10_000, |(_, ms)| ms),
        open: s.open,
        max_items_per_worker: s.max_items_per_worker,
        owner: s.owner,
        released: 0,
        released_failed: 0,
    };
    let name = s.name;
    let inputs = s.inputs;
    if let Some(cluster) = &ctx.cluster {
        return ok(cluster.submit(name, spec, inputs).await?);
    }
    let job = ctx
        .pool
        .ask(|r| PoolRequest::Submit(name, Box::new(spec), inputs, r))
        .await?;
    ctx.store.sync().await?;
    ok(job)
}

/// `pool_append`: a batch of inputs for an open job, run as `run_as` (the submitter's uid).
pub async fn append(
    ctx: &Context,
    job: u64,
    run_as: Option<u32>,
    inputs: Vec<String>,
    release_before: Option<usize>,
) -> Outcome {
    if ctx.cluster.is_some() {
        return Err(not_across_nodes("an open job (pool_append)"));
    }
    if inputs.iter().any(|i| i.contains('\n')) {
        return Err(ErrorBody::new(
            ErrorCode::BadRequest,
            "in stream mode an input is one line: inputs may not contain newlines",
        ));
    }
    let user = run_as.map(|uid| uid.to_string());
    let batch = ctx
        .pool
        .ask(|r| PoolRequest::Append(job, user, inputs, release_before, r))
        .await?;
    ctx.store.sync().await?;
    ok(batch)
}

/// `pool_close`: an open job takes no more inputs.
pub async fn close(ctx: &Context, job: u64) -> Outcome {
    if ctx.cluster.is_some() {
        return Err(not_across_nodes("an open job (pool_close)"));
    }
    let job = ctx.pool.ask(|r| PoolRequest::Close(job, r)).await?;
    ctx.store.sync().await?;
    ok(job)
}

/// Waits for a job; with `results`, streams each item as an event, in input order.
/// `pool_wait`: the job's end (and, with `results`, each item's result as an event), or a
/// `timeout` error once `timeout` has passed (the job runs on).
pub async fn wait(
    ctx: Arc<Context>,
    id: u64,
    target: Wait,
    results: bool,
    timeout: Option<Duration>,
    replies: Replies,
) {
    let job = target.job;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let events = results.then_some(tx);
    let pool = ctx.pool.clone();
    let cluster = ctx.cluster.clone();
    let done = async move {
        match cluster {
            Some(cluster) => cluster.wait(target, events).await,
            None => {
                pool.ask(move |r| PoolRequest::Wait(target, events, r))
                    .await
            }
        }
    };
    tokio::pin!(done);
    let expired = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    let outcome = loop {
        tokio::select! {
            biased;
            Some(item) = rx.recv() => {
                if !replies.send_frame(id, corral_proto::event_frame(id, &item)).await {
                    return;
                }
            }
            outcome = &mut done => break outcome,
            () = replies.closed() => return,
            () = &mut expired => {
                let after = corral_config::format_duration(timeout.unwrap_or_default());
                let e = ErrorBody::new(
                    ErrorCode::Timeout,
                    format!("pool job {job} is still running after {after}"),
                );
                replies.send(Response::err(id, e)).await;
                return;
            }
        }
    };
    // Items sent before the job's end are still queued: deliver them first.
    while let Ok(item) = rx.try_recv() {
        if !replies
            .send_frame(id, corral_proto::event_frame(id, &item))
            .await
        {
            return;
        }
    }
    let response = match ctx.store.sync().await.and(outcome) {
        Ok(job) => Response::ok(id, job),
        Err(e) => Response::err(id, e),
    };
    replies.send(response).await;
}

pub async fn status(ctx: &Context, job: u64) -> Outcome {
    if let Some(cluster) = &ctx.cluster {
        return ok(cluster.status_by_node(job).await?);
    }
    ok(ctx.pool.ask(|r| PoolRequest::Status(job, r)).await?)
}

pub async fn results(ctx: &Context, job: u64) -> Outcome {
    if let Some(cluster) = &ctx.cluster {
        return ok(cluster.results(job).await?);
    }
    ok(ctx.pool.ask(|r| PoolRequest::Results(job, r)).await?)
}

pub async fn list(ctx: &Context) -> Outcome {
    if let Some(cluster) = &ctx.cluster {
        return ok(cluster.list().await?);
    }
    ok(ctx.pool.ask(PoolRequest::List).await?)
}

pub async fn cancel(ctx: &Context, job: u64) -> Outcome {
    if let Some(cluster) = &ctx.cluster {
        return ok(cluster.cancel(job).await?);
    }
    let job = ctx.pool.ask(|r| PoolRequest::Cancel(job, r)).await?;
    ctx.store.sync().await?;
    ok(job)
}

/// `pool_remove`: a finished job and its items are removed (from the database too);
/// a running one is refused.
pub async fn remove(ctx: &Context, job: u64) -> Outcome {
    ok(ctx.pool_remove(job).await?)
}
