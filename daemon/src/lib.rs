//! corrald: the corral daemon.
//!
//! Layout (see `ARCHITECTURE.md` at the repository root for the full map):
//! - [`supervisor`]: units and instances; the process thread that starts processes and reaps.
//! - [`store`]: the SQLite task (the only module that speaks SQL); [`primitives`]: the
//!   coordination state it applies operations to.
//! - [`server`]: the control socket; [`handlers`]: one module per group of operations.
//! - [`http`]: the status API.
//! - [`lifecycle`]: signals and the shutdown sequence.
//! - [`settings`]: flags over `corral.toml` over defaults.
//! - Below them all, imported by the modules above and importing none of them:
//!   [`context`] (what handlers share), [`replies`] (where a connection's replies go),
//!   [`clock`], [`version`] (the state version the dashboard follows).
//!
//! No module imports from this file: it only wires the tasks together in [`run`].

pub mod access;
pub mod actor;
pub mod backend;
pub mod clock;
pub mod context;
pub mod fds;
pub mod handlers;
pub mod http;
pub mod lifecycle;
pub mod notify;
pub mod pidwatch;
pub mod pool;
pub mod primitives;
pub mod process;
pub mod procstat;
pub mod replies;
pub mod server;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod version;

use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use context::Context;
pub use lifecycle::Lifecycle;
use process::{Owner, ProcessThread};
pub use settings::{Overrides, Settings};
use store::Store;
use supervisor::{Supervisor, SupervisorConfig};

/// Runs corrald until a shutdown completes. Start-up errors (an unreadable units
/// directory, an unusable state database, a socket in use) are returned before anything
/// is started; a unit file with errors is set aside (shown by `status` as not loaded,
/// logged, and named in systemd's `STATUS=`) and the other units run.
pub async fn run(settings: Settings, lifecycle: Lifecycle) -> anyhow::Result<()> {
    for dir in [&settings.state_dir, &settings.log_dir] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    // Held back from the start, before any client can take them (see `fds`).
    fds::refill();
    // As systemd does at boot: what is valid runs, and a typo in one file does not take
    // every other unit down with it.
    let loaded = corral_config::load_units_dir_partial(&settings.units_dir).map_err(|errors| {
        anyhow::anyhow!(
            "cannot load the unit files of {}:\n{errors}",
            settings.units_dir.display()
        )
    })?;
    for bad in &loaded.not_loaded {
        tracing::error!(
            unit = %bad.name,
            "unit file not loaded, {} error(s):\n{}",
            bad.errors.len(),
            bad.errors
        );
    }
    let not_loaded_count = loaded.not_loaded.len();
    let (units, not_loaded) = (loaded.units, loaded.not_loaded);
    let limits = primitives::Limits {
        max_item_bytes: settings.max_item_bytes,
        declared_queues: settings.queues.clone(),
    };
    let policy = access::Policy::new(settings.access.as_ref())?;
    let mut store = Store::open(&settings.db_path(), limits.clone())?;
    if let Some(backend) = settings.backend.clone() {
        store.attach(backend::pg::Pg::start(backend, limits).await?);
    }
    let units_count = units.len();
    // Orphaned grandchildren are re-parented to us, so nothing escapes reaping.
    nix::sys::prctl::set_child_subreaper(true).context("cannot become a child subreaper")?;
    let listener = server::bind(
        &settings.socket,
        settings.socket_mode,
        settings.socket_group.as_deref(),
    )?;
    let http_listener = match settings.http {
        Some(addr) => Some(http::bind(addr).await?),
        None => None,
    };
    // cgroups where the kernel lets us have them; process groups alone otherwise, said once.
    let (cgroups, supervision) = if !settings.cgroups {
        (
            None,
            "process groups (cgroups = false in corral.toml)".to_owned(),
        )
    } else {
        match supervisor::cgroup::Cgroups::detect(&settings.state_dir) {
            Ok(cg) => {
                let line = cg.describe();
                tracing::info!("{line}");
                (Some(Arc::new(cg)), line)
            }
            Err(why) => {
                let line =
                    format!("process groups: a process that calls setsid escapes its stop ({why})");
                tracing::warn!("no cgroups for instances; {line}");
                (None, line)
            }
        }
    };
    let sup_config = SupervisorConfig {
        log_dir: settings.log_dir.clone(),
        socket: settings.socket.clone(),
        shutdown_timeout: settings.shutdown_timeout,
        daemon_grace: settings.daemon_grace,
        enable: settings.enable.clone(),
        cgroups: cgroups.clone(),
        supervision,
    };
    // One process thread starts processes and reaps for everyone; each event goes to its owner.
    let (sup_tx, sup_rx) = tokio::sync::mpsc::unbounded_channel();
    let (pool_tx, pool_rx) = tokio::sync::mpsc::unbounded_channel();
    let cluster_router = Arc::new(pool::nodes::Router::default());
    let procs = {
        let (sup_tx, pool_tx) = (sup_tx.clone(), pool_tx.clone());
        let cluster_router = cluster_router.clone();
        ProcessThread::start(move |owner, event| match owner {
            Owner::Supervisor => {
                let _ = sup_tx.send(supervisor::Msg::Proc(event));
            }
            Owner::Pool => {
                let _ = pool_tx.send(pool::PoolMsg::Proc(event));
            }
            Owner::Cluster => cluster_router.route(event),
        })?
    };
    let (supervisor, sup_task) = Supervisor::start(
        sup_config,
        units,
        not_loaded,
        store.clone(),
        procs.clone(),
        (sup_tx, sup_rx),
    )
    .await?;
    let pool_paths = pool::PoolPaths {
        dir: settings.state_dir.join("pool"),
        log_dir: settings.log_dir.clone(),
        socket: settings.socket.clone(),
        keep: settings.pool_keep,
    };
    let cluster = match &settings.backend {
        Some(backend) => {
            let dir = settings
                .state_dir
                .join("pool-nodes")
                .join(std::process::id().to_string());
            let _ = std::fs::remove_dir_all(settings.state_dir.join("pool-nodes"));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let exec = pool::nodes::Executor {
                procs: procs.clone(),
                router: cluster_router,
                dir,
                socket: settings.socket.clone(),
                slots: settings.pool_slots,
                keep: settings.pool_keep,
            };
            Some(pool::nodes::ClusterPool::start(backend.clone(), exec).await?)
        }
        None => None,
    };
    let pool =
        pool::PoolManager::start(pool_paths, store.clone(), procs, (pool_tx, pool_rx)).await?;
    let ctx = Arc::new(Context {
        settings: settings.clone(),
        supervisor: supervisor.clone(),
        store: store.clone(),
        pool: pool.clone(),
        cluster: cluster.clone(),
        request_shutdown: lifecycle.shutdown.clone(),
        all_stopped: CancellationToken::new(),
        started: std::time::Instant::now(),
        policy,
    });
    let stop_serving = CancellationToken::new();
    let server_task = tokio::spawn(server::run(listener, ctx.clone(), stop_serving.clone()));
    let http_task =
        http_listener.map(|l| tokio::spawn(http::serve(l, ctx.clone(), stop_serving.clone())));
    let not_loaded_note = match not_loaded_count {
        0 => String::new(),
        n => format!("; {n} unit file(s) NOT LOADED for errors (see corralctl status)"),
    };
    notify::notify(&format!(
        "READY=1\nSTATUS=serving {} with {} unit(s){not_loaded_note}",
        settings.socket.display(),
        units_count
    ));
    notify::spawn_watchdog();
    tracing::info!(
        socket = %settings.socket.display(),
        units = %settings.units_dir.display(),
        state = %settings.state_dir.display(),
        "corrald ready"
    );
    lifecycle::serve_until_shutdown(&ctx, &lifecycle).await;

    tracing::info!("shutting down");
    notify::notify("STOPPING=1\nSTATUS=stopping units by the lifecycle rules");
    // Units and pool jobs go down side by side: running pool jobs, like tasks, are joined
    // up to shutdown_timeout; what is left of them resumes at the next start.
    let everything = async {
        tokio::join!(
            supervisor.shutdown(),
            pool.shutdown(settings.shutdown_timeout),
            async {
                if let Some(cluster) = &cluster {
                    cluster.shutdown().await;
                }
            }
        );
    };
    tokio::pin!(everything);
    tokio::select! {
        () = &mut everything => {}
        () = lifecycle.force.cancelled() => {
            tracing::warn!("second signal: killing every process group");
            supervisor.force_shutdown();
            pool.force();
            everything.await;
        }
    }
    if let Err(e) = store.sync().await {
        tracing::error!(
            "the last records before shutdown may be lost: {}",
            e.message
        );
    }
    // Let `shutdown --wait` clients hear that everything is down before connections close.
    ctx.all_stopped.cancel();
    tokio::task::yield_now().await;
    stop_serving.cancel();
    let _ = server_task.await;
    if let Some(task) = http_task {
        let _ = task.await;
    }
    if let Err(e) = store.sync().await {
        tracing::error!("the last records before exit may be lost: {}", e.message);
    }
    drop(sup_task);
    if let Some(cg) = &cgroups {
        cg.remove_all();
    }
    let _ = std::fs::remove_file(&settings.socket);
    tracing::info!("corrald stopped");
    Ok(())
}
