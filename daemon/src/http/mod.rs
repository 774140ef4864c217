//! The HTTP status page, JSON API and metrics (axum).
//!
//! Every page and API answer is built from the same snapshot code as the socket's
//! `status` (so `/api/status` is what `corralctl --json status` prints). Read-only unless
//! `http.token` is set; then state-changing endpoints exist and take POST with
//! `Authorization: Bearer TOKEN` (no cookies, so no CSRF). Assets are embedded; the page
//! loads nothing from the network and shows a correct snapshot with JavaScript off, then
//! updates itself from `/api/events` (Server-Sent Events). Its charts draw
//! `/api/history` (a few minutes kept in memory by `history`); an instance's log page
//! follows `/api/logs/NAME/N` (bounded reads of the file's end, then from an offset).

mod accept;
pub mod history;
mod metrics;
mod pages;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use std::collections::BTreeMap;

use corral_proto::{
    ArrayListResult, CounterListResult, ErrorBody, ErrorCode, LockStatusResult, Op, PoolListResult,
    QueueListResult, StatusResult, UnitStatus,
};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::primitives::ConnInfo;
use crate::store::History;
use crate::supervisor::Request;

/// Binds the HTTP listener (so a bad address fails start-up, not later).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for HTTP on {addr}: {e}; choose another --http address or `--http off`"
        )
    })
}

type Shared = State<Arc<Context>>;

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
) {
    let recorder: history::Shared = Arc::new(std::sync::Mutex::new(history::Recorder::new(
        crate::clock::now_ms(),
    )));
    tokio::spawn(history::run(
        ctx.clone(),
        recorder.clone(),
        shutdown.clone(),
    ));
    let mut app = axum::Router::new()
        .route("/", get(dashboard))
        .route("/units/{name}", get(unit_page))
        .route("/units/{name}/{instance}/logs", get(log_page))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript", pages::APP_JS) }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset("text/css", pages::STYLE_CSS) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::metrics))
        .route("/api/status", get(api_status))
        .route("/api/units", get(api_units))
        .route("/api/units/{name}", get(api_unit))
        .route(
            "/api/queues",
            get(|s: Shared| primitive(s, Op::QueueList {})),
        )
        .route(
            "/api/counters",
            get(|s: Shared| primitive(s, Op::CounterList {})),
        )
        .route(
            "/api/arrays",
            get(|s: Shared| primitive(s, Op::ArrayList {})),
        )
        .route(
            "/api/locks",
            get(|s: Shared| primitive(s, Op::LockStatus { lock: None })),
        )
        .route("/api/nodes", get(api_nodes))
        .route("/api/pools", get(api_pools))
        .route("/api/pools/{id}", get(api_pool))
        .route("/api/events", get(api_events))
        .route("/api/history", get(api_history))
        .route("/api/logs/{name}/{instance}", get(api_logs));
    if ctx.settings.http_token.is_some() {
        app = app
            .route("/api/units/{name}/{action}", post(post_unit))
            .route("/api/pools/{id}/cancel", post(post_cancel))
            .route("/api/pools/{id}/remove", post(post_remove));
    }
    let limits = ctx.settings.http_limits;
    let app = app
        .fallback(|| async { error(ErrorBody::new(ErrorCode::NotFound, "no such page")) })
        .layer(Extension(recorder))
        .with_state(ctx);
    accept::serve(listener, app, limits, shutdown).await;
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A JSON error with the HTTP status that fits its code.
fn error(e: ErrorBody) -> Response {
    let status = match e.code {
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::PermissionDenied => StatusCode::UNAUTHORIZED,
        ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        Json(json!({ "code": e.code, "message": e.message })),
    )
        .into_response()
}

fn reply(result: Result<Value, ErrorBody>) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e),
    }
}

/// The units' status, exactly as the socket's `status` answers it.
pub(crate) async fn status(ctx: &Context, unit: Option<String>) -> Result<StatusResult, ErrorBody> {
    crate::handlers::units_status(ctx, unit).await
}

/// Answers a read-only coordination operation as the socket would.
async fn primitive_value(ctx: &Context, op: Op) -> Result<Value, ErrorBody> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let conn = ConnInfo {
        id: 0,
        pid: None,
        uid: None,
    };
    ctx.store.primitive(
        conn,
        op,
        Box::new(move |o| {
            let _ = tx.send(o);
        }),
    );
    rx.await
        .map_err(|_| ErrorBody::new(ErrorCode::ShuttingDown, "corrald is shutting down"))?
        .map(|reply| reply.to_value())
}

async fn primitive(State(ctx): Shared, op: Op) -> Response {
    reply(primitive_value(&ctx, op).await)
}

async fn api_nodes(State(ctx): Shared) -> Response {
    reply(ctx.store.nodes().await.map(|r| r.to_value()))
}

async fn api_status(State(ctx): Shared) -> Response {
    reply(status(&ctx, None).await.map(|s| json!(s)))
}

async fn api_units(State(ctx): Shared) -> Response {
    reply(status(&ctx, None).await.map(|s| json!(s.units)))
}

/// One unit as `/api/units/NAME` and its page show it.
#[derive(Debug, Serialize)]
pub(crate) struct UnitDetail {
    pub unit: UnitStatus,
    /// The definition as loaded (see `config_view`), if the supervisor has it.
    pub config: Option<Value>,
    /// The latest runs (20).
    pub runs: Vec<RunView>,
    /// The last log lines of each instance.
    pub logs: BTreeMap<u32, Vec<String>>,
}

/// One process run of a unit's instance.
#[derive(Debug, Serialize)]
pub(crate) struct RunView {
    pub instance: u32,
    pub pid: i32,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub restarts: u32,
}

/// One unit: status, definition as loaded, run history, the last log lines.
pub(crate) async fn unit_detail(ctx: &Context, name: &str) -> Result<UnitDetail, ErrorBody> {
    let status = status(ctx, Some(name.to_owned())).await?;
    let unit = status
        .units
        .into_iter()
        .next()
        .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, "no such unit"))?;
    let definition = ctx
        .supervisor
        .ask(|r| Request::Definition(name.to_owned(), r))
        .await
        .ok();
    let rows = ctx
        .store
        .history(History::Runs {
            unit: name.to_owned(),
            limit: 20,
        })
        .await;
    let runs = rows
        .runs
        .into_iter()
        .map(|r| RunView {
            instance: r.instance,
            pid: r.pid,
            started_ms: r.started_ms,
            ended_ms: r.ended_ms,
            exit_code: r.exit_code,
            signal: r.signal,
            restarts: r.restarts,
        })
        .collect();
    let mut logs = BTreeMap::new();
    if let Ok(paths) = ctx
        .supervisor
        .ask(|r| Request::LogPaths(name.to_owned(), None, r))
        .await
    {
        for (instance, path) in paths {
            let lines =
                tokio::task::spawn_blocking(move || crate::supervisor::logs::tail_lines(&path, 20))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
            logs.insert(instance, lines);
        }
    }
    Ok(UnitDetail {
        unit,
        config: definition.map(|d| config_view(&d)),
        runs,
        logs,
    })
}

/// A unit's definition for display. Environment values are not shown: they may be secrets.
fn config_view(u: &corral_config::Unit) -> Value {
    json!({
        "kind": u.kind.as_str(),
        "command": u.command,
        "instances": u.instances,
        "restart": format!("{:?}", u.restart),
        "restart_delay": corral_config::format_duration(u.restart_delay),
        "restart_delay_max": corral_config::format_duration(u.restart_delay_max),
        "stop_signal": u.stop_signal,
        "stop_timeout": corral_config::format_duration(u.stop_timeout),
        "daemon": u.daemon,
        "autostart": u.autostart,
        "working_dir": u.working_dir,
        "env": u.env.keys().collect::<Vec<_>>(),
        "user": u.user,
        "group": u.group,
        "after": u.after,
        "requires": u.requires,
        "ready": u.ready.as_ref().map(|r| json!({
            "check": r.check.describe(),
            "interval": corral_config::format_duration(r.interval),
            "timeout": corral_config::format_duration(r.timeout),
            "deadline": corral_config::format_duration(r.deadline),
        })),
        "health": u.health.as_ref().map(|h| json!({
            "check": h.check.describe(),
            "interval": corral_config::format_duration(h.interval),
            "timeout": corral_config::format_duration(h.timeout),
            "failures": h.failures,
        })),
        "max_memory": u.max_memory,
        "source": u.source,
    })
}

async fn api_unit(State(ctx): Shared, Path(name): Path<String>) -> Response {
    reply(unit_detail(&ctx, &name).await.map(|d| json!(d)))
}

async fn api_pools(State(ctx): Shared) -> Response {
    reply(ctx.pool_list().await.map(|l| json!(l)))
}

async fn api_pool(State(ctx): Shared, Path(id): Path<u64>) -> Response {
    reply(ctx.pool_status(id).await.map(|j| json!(j)))
}

/// Everything the dashboard shows, typed; serialized at the edge (the page's
/// `/api/events` stream) as the JSON object `app.js` reads. A part that could not be
/// read is `null`.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    pub status: Option<StatusResult>,
    /// CPU and memory of each instance's process, by pid.
    pub processes: BTreeMap<u32, pages::ProcessFigures>,
    pub queues: Option<QueueListResult>,
    pub counters: Option<CounterListResult>,
    pub arrays: Option<ArrayListResult>,
    pub locks: Option<LockStatusResult>,
    /// The nodes of the shared backend (`corrald --backend`).
    pub nodes: Option<corral_proto::NodesResult>,
    pub pools: Option<PoolListResult>,
    /// The latest events (15).
    pub events: Vec<SnapshotEvent>,
}

/// One event of the event log, as the dashboard shows it.
#[derive(Debug, Serialize)]
pub(crate) struct SnapshotEvent {
    pub at_ms: i64,
    pub unit: Option<String>,
    pub instance: Option<u32>,
    pub kind: String,
    pub detail: String,
}

/// A read-only coordination operation's result, typed.
async fn primitive_typed<T: serde::de::DeserializeOwned>(ctx: &Context, op: Op) -> Option<T> {
    let value = primitive_value(ctx, op).await.ok()?;
    serde_json::from_value(value).ok()
}

/// Everything the dashboard shows (see [`Snapshot`]).
pub(crate) async fn snapshot(ctx: &Context) -> Snapshot {
    let status = status(ctx, None).await.ok();
    let queues = primitive_typed(ctx, Op::QueueList {}).await;
    let counters = primitive_typed(ctx, Op::CounterList {}).await;
    let arrays = primitive_typed(ctx, Op::ArrayList {}).await;
    let locks = primitive_typed(ctx, Op::LockStatus { lock: None }).await;
    let nodes = ctx
        .store
        .nodes()
        .await
        .ok()
        .and_then(|r| serde_json::from_str(r.json()).ok());
    let pools = ctx.pool_list().await.ok();
    let rows = ctx
        .store
        .history(History::Events {
            unit: None,
            limit: 15,
        })
        .await;
    let events = rows
        .events
        .into_iter()
        .map(|e| SnapshotEvent {
            at_ms: e.at_ms,
            unit: e.unit,
            instance: e.instance,
            kind: e.kind,
            detail: e.detail,
        })
        .collect();
    let processes = status
        .as_ref()
        .map(pages::process_stats)
        .unwrap_or_default();
    Snapshot {
        status,
        processes,
        queues,
        counters,
        arrays,
        locks,
        nodes,
        pools,
        events,
    }
}

async fn api_events(
    State(ctx): Shared,
) -> Sse<impl futures_core::Stream<Item = Result<Event, Infallible>>> {
    // A snapshot when something changed, checked once a second: cheap for an idle corrald.
    let stream = async_stream(ctx);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

fn async_stream(ctx: Arc<Context>) -> impl futures_core::Stream<Item = Result<Event, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    tokio::spawn(async move {
        // A snapshot when visible state changed (checked each second), and every 15 s
        // regardless so uptimes and CPU figures stay fresh.
        let mut sent: Option<(u64, std::time::Instant)> = None;
        loop {
            let version = crate::version::state_version();
            let due =
                sent.is_none_or(|(v, at)| v != version || at.elapsed() >= Duration::from_secs(15));
            if due {
                sent = Some((version, std::time::Instant::now()));
                let snap = snapshot(&ctx).await;
                let data = serde_json::to_string(&snap).unwrap_or_else(|_| "null".into());
                let event = Event::default().event("snapshot").data(data);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = tx.closed() => return,
            }
        }
    });
    tokio_stream_from(rx)
}

/// Adapts a channel to the `Stream` that `Sse` wants.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
) -> impl futures_core::Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)))
}

async fn dashboard(State(ctx): Shared) -> Html<String> {
    let controls = ctx.settings.http_token.is_some();
    Html(pages::dashboard(&snapshot(&ctx).await, controls))
}

async fn unit_page(State(ctx): Shared, Path(name): Path<String>) -> Response {
    let controls = ctx.settings.http_token.is_some();
    match unit_detail(&ctx, &name).await {
        Ok(detail) => Html(pages::unit(&name, &detail, controls)).into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            Html(pages::not_found(&name, &e.message)),
        )
            .into_response(),
    }
}

/// `/api/history?kind=&name=&instance=&since_ms=`: the charts' series.
async fn api_history(
    Extension(recorder): Extension<history::Shared>,
    query: Result<Query<history::Query>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return error(ErrorBody::new(
            ErrorCode::BadRequest,
            "bad query: use kind=queue|pool|instance, name=NAME, instance=N, since_ms=UNIX_MS",
        ));
    };
    let value = recorder
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .query(&query);
    Json(value).into_response()
}

/// Most bytes one `/api/logs` answer reads from a log file.
pub const LOG_READ_MAX: usize = 64 * 1024;

/// `?offset=N`: where the previous answer's `next` said to go on.
#[derive(serde::Deserialize)]
struct LogQuery {
    offset: Option<u64>,
}

/// The log file of one instance, path checked with the supervisor.
async fn instance_log(
    ctx: &Context,
    name: &str,
    instance: u32,
) -> Result<std::path::PathBuf, ErrorBody> {
    let paths = ctx
        .supervisor
        .ask(|r| Request::LogPaths(name.to_owned(), Some(instance), r))
        .await?;
    paths
        .into_iter()
        .find(|(n, _)| *n == instance)
        .map(|(_, p)| p)
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::NotFound,
                format!("unit `{name}` has no instance {instance}"),
            )
        })
}

/// `/api/logs/NAME/N?offset=`: complete lines from `offset` (or the file's last
/// `LOG_READ_MAX` bytes without one), and the `next` offset to ask for. A file shorter
/// than `offset` (rotated) is read again from its end, with `reset: true`.
async fn api_logs(
    State(ctx): Shared,
    Path((name, instance)): Path<(String, String)>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let Ok(instance) = instance.parse::<u32>() else {
        return error(ErrorBody::new(
            ErrorCode::NotFound,
            format!("`{instance}` is not an instance number"),
        ));
    };
    let Ok(Query(query)) = query else {
        return error(ErrorBody::new(
            ErrorCode::BadRequest,
            "bad query: offset must be a byte offset (the `next` of the previous answer)",
        ));
    };
    let path = match instance_log(&ctx, &name, instance).await {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    let read = tokio::task::spawn_blocking(move || {
        crate::supervisor::logs::read_chunk(&path, query.offset, LOG_READ_MAX)
    })
    .await;
    match read {
        Ok(Ok(c)) => Json(json!({
            "unit": name, "instance": instance, "start": c.start, "next": c.next,
            "size": c.size, "reset": c.reset, "more": c.next < c.size && !c.lines.is_empty(),
            "lines": c.lines,
        }))
        .into_response(),
        Ok(Err(e)) => error(ErrorBody::new(
            ErrorCode::Internal,
            format!("cannot read the log of {name}.{instance}: {e}"),
        )),
        Err(e) => error(ErrorBody::new(ErrorCode::Internal, e.to_string())),
    }
}

async fn log_page(State(ctx): Shared, Path((name, instance)): Path<(String, String)>) -> Response {
    let found = match instance.parse::<u32>() {
        Ok(n) => instance_log(&ctx, &name, n).await.map(|_| n),
        Err(_) => Err(ErrorBody::new(
            ErrorCode::NotFound,
            format!("`{instance}` is not an instance number"),
        )),
    };
    match found {
        Ok(n) => Html(pages::log(&name, n)).into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            Html(pages::not_found(&name, &e.message)),
        )
            .into_response(),
    }
}

fn authorized(ctx: &Context, headers: &HeaderMap) -> Result<(), ErrorBody> {
    let want = ctx.settings.http_token.as_deref().unwrap_or_default();
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), want.as_bytes()) => Ok(()),
        _ => Err(ErrorBody::new(
            ErrorCode::PermissionDenied,
            "this endpoint needs `Authorization: Bearer TOKEN` with the http.token of corral.toml",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn post_unit(
    State(ctx): Shared,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    if let Err(e) = authorized(&ctx, &headers) {
        return error(e);
    }
    let units = vec![name];
    let result = match action.as_str() {
        "start" => ctx.supervisor.ask(|r| Request::Start(units, r)).await,
        "stop" => ctx.supervisor.ask(|r| Request::Stop(units, r)).await,
        "restart" => ctx.supervisor.ask(|r| Request::Restart(units, r)).await,
        other => Err(ErrorBody::new(
            ErrorCode::NotFound,
            format!("no action `{other}`: use start, stop or restart"),
        )),
    };
    let synced = ctx.store.sync().await;
    let result = result.and_then(|r| synced.map(|()| r));
    reply(result.map(|r| json!(r)))
}

/// `corralctl pool rm ID`: a finished or cancelled job is removed, a running one refused.
async fn post_remove(State(ctx): Shared, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(e) = authorized(&ctx, &headers) {
        return error(e);
    }
    reply(ctx.pool_remove(id).await.map(|j| json!(j)))
}

async fn post_cancel(State(ctx): Shared, headers: HeaderMap, Path(id): Path<u64>) -> Response {
    if let Err(e) = authorized(&ctx, &headers) {
        return error(e);
    }
    let result = ctx.pool_cancel(id).await;
    let synced = ctx.store.sync().await;
    let result = result.and_then(|j| synced.map(|()| j));
    reply(result.map(|j| json!(j)))
}
