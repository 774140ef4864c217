//! The supervisor: owns every unit and instance, and is the only code that changes them.
//!
//! It is one tokio task (an actor) fed by one channel of [`Msg`]: client requests,
//! process events from the [process thread](process), and its own timers. Nothing else
//! holds instance state, so there are no locks and every transition happens in one place.
//!
//! Timers carry the instance's `generation` at the time they were armed; any transition
//! bumps it, so a stale timer (a restart delay for an instance that was stopped meanwhile)
//! is recognised and ignored.

mod adopt;
pub mod cgroup;
pub mod logs;
mod probe;
mod schedule;
mod started;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corral_config::{NotLoaded, RestartPolicy, Unit, UnitKind};
use corral_proto::{
    ErrorBody, ErrorCode, ExitStatus, InstanceExit, InstanceState, InstanceStatus, PlanStep,
    ReloadResult, ShutdownPlan, StatusResult, TimerStatus, TimersResult, UnitStatus, UnitsResult,
    WaitResult,
};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot};

pub use crate::actor::Reply;
use crate::process::{
    Output, Owner, ProcEvent, ProcessThread, SpawnSpec, Spawned, Tokens, kill_group,
};
use crate::store::{self, Event, OpenRun, RunStart, Store};
pub use started::{START_WINDOW, StartFailure};

/// Everything the supervisor task reacts to.
pub enum Msg {
    /// From the process thread.
    Proc(ProcEvent),
    /// A restart delay has passed.
    RestartDue {
        /// Unit name.
        unit: String,
        /// Instance number.
        instance: u32,
        /// Generation when armed.
        generation: u64,
    },
    /// A stop timeout has passed: SIGKILL the group.
    StopTimeout {
        /// Unit name.
        unit: String,
        /// Instance number.
        instance: u32,
        /// Generation when armed.
        generation: u64,
    },
    /// Periodic housekeeping (log rotation, shutdown deadlines).
    Tick,
    /// Nothing to do but settle: a start window has passed.
    Wake,
    /// A client request.
    Request(Request),
    /// A scheduled unit's timer: look at the clock (stale when `generation` moved on).
    ScheduleDue { unit: String, generation: u64 },
    /// Readiness, health and memory checks.
    Probe(probe::ProbeMsg),
}

/// Requests, each with its reply channel.
pub enum Request {
    /// Status of one unit or all.
    Status(Option<String>, Reply<StatusResult>),
    /// Scheduled units with their last and next runs.
    Timers(Reply<TimersResult>),
    /// Start units.
    Start(Vec<String>, Reply<UnitsResult>),
    /// Answered once every instance of the units has started or failed to (see
    /// [`START_WINDOW`]): the instances that failed, none if all started.
    Started(Vec<String>, Reply<Vec<StartFailure>>),
    /// Stop units; answered when they are down.
    Stop(Vec<String>, Reply<UnitsResult>),
    /// Stop, then start.
    Restart(Vec<String>, Reply<UnitsResult>),
    /// Answered when nothing of the unit is running or due to run.
    Wait(String, Reply<WaitResult>),
    /// Replace the unit set (already validated).
    Reload(BTreeMap<String, Unit>, Reply<ReloadResult>),
    /// Add and start a transient unit; with descriptors, they are its stdout and stderr.
    Run(Box<Unit>, Option<[OwnedFd; 2]>, Reply<String>),
    /// Log files of a unit's instances.
    LogPaths(String, Option<u32>, Reply<Vec<(u32, PathBuf)>>),
    /// Begin the shutdown sequence; answered when every instance is down.
    Shutdown(oneshot::Sender<()>),
    /// Skip the waiting of a shutdown: SIGKILL every group now.
    ForceShutdown,
    /// The unit and instance whose process group each pgid is, if any.
    WhoIs(Vec<i32>, Reply<Vec<Option<(String, u32)>>>),
    /// What a shutdown would do now.
    Plan(Reply<ShutdownPlan>),
    /// Send a signal to every running instance's group.
    Kill(Vec<String>, i32, Reply<UnitsResult>),
    /// Answered once the unit's first instance has a pid (Some) or has settled without
    /// one (None): what `run` waits for before it answers.
    FirstPid(String, Reply<Option<u32>>),
    /// The definition of a unit (used to submit to a named pool).
    Definition(String, Reply<Arc<Unit>>),
}

/// Settings the supervisor needs from the daemon configuration.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Where instance logs go.
    pub log_dir: PathBuf,
    /// The control socket, passed to instances as `CORRAL_SOCKET`.
    pub socket: PathBuf,
    /// How long running tasks are waited for at shutdown.
    pub shutdown_timeout: Duration,
    /// Stop timeout used for `daemon = true` units at shutdown.
    pub daemon_grace: Duration,
    /// Template instances started with the autostart units (`[enable]`).
    pub enable: BTreeMap<String, Vec<String>>,
    /// Instances' cgroups, where corrald can have them (else process groups alone).
    pub cgroups: Option<Arc<cgroup::Cgroups>>,
    /// One line for `status`: how instances are tracked and stopped, and why.
    pub supervision: String,
}

/// Handle used by the rest of corrald to talk to the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl SupervisorHandle {
    /// Sends a request built around a fresh reply channel and awaits the answer.
    pub async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, ErrorBody> {
        crate::actor::ask(&self.tx, |reply| Msg::Request(make(reply))).await
    }

    /// Starts shutdown and resolves when every instance is down.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Request(Request::Shutdown(tx))).is_ok() {
            let _ = rx.await;
        }
    }

    /// SIGKILLs every group (second SIGTERM during shutdown).
    pub fn force_shutdown(&self) {
        let _ = self.tx.send(Msg::Request(Request::ForceShutdown));
    }
}

fn not_found(unit: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotFound,
        format!("no unit named `{unit}` (see `corralctl status`)"),
    )
}

/// One running copy of a unit.
#[derive(Debug)]
struct Instance {
    index: u32,
    state: InstanceState,
    pid: Option<i32>,
    /// Set while a spawn request is in flight.
    spawn_token: Option<u64>,
    started: Option<Instant>,
    run_id: Option<i64>,
    restarts: u32,
    consecutive_failures: u32,
    recent_starts: VecDeque<Instant>,
    last_exit: Option<ExitStatus>,
    reason: Option<String>,
    generation: u64,
    /// A signal asked for (`kill`) while the spawn was in flight: sent once the pid is known.
    pending_signal: Option<Signal>,
    /// Readiness and health of the current run.
    checks: probe::InstanceChecks,
}

impl Instance {
    fn new(index: u32) -> Instance {
        Instance {
            index,
            state: InstanceState::Inactive,
            pid: None,
            spawn_token: None,
            started: None,
            run_id: None,
            restarts: 0,
            consecutive_failures: 0,
            recent_starts: VecDeque::new(),
            last_exit: None,
            reason: None,
            generation: 0,
            pending_signal: None,
            checks: probe::InstanceChecks::default(),
        }
    }

    /// Into `Backoff` before a restart by policy: the delay (doubled with each
    /// consecutive failure, up to the unit's max) and the generation its
    /// `Msg::RestartDue` must carry.
    fn back_off(&mut self, unit: &Unit) -> (Duration, u64) {
        let delay = backoff(
            unit.restart_delay,
            unit.restart_delay_max,
            self.consecutive_failures,
        );
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.state = InstanceState::Backoff;
        self.generation += 1;
        (delay, self.generation)
    }

    fn status(&self) -> InstanceStatus {
        InstanceStatus {
            instance: self.index,
            state: self.state,
            pid: self.pid.map(|p| p as u32),
            uptime_ms: self
                .pid
                .and(self.started)
                .map(|t| t.elapsed().as_millis() as u64),
            restarts: self.restarts,
            last_exit: self.last_exit,
            reason: self
                .reason
                .clone()
                .or_else(|| self.checks.restarted_for.clone()),
            ready: self.checks.ready.filter(|_| self.pid.is_some()),
            healthy: self.checks.healthy.filter(|_| self.pid.is_some()),
            health_failures: self.checks.health_failures,
            health_failures_total: self.checks.health_failures_total,
            check_error: self
                .checks
                .last_error
                .clone()
                .filter(|_| self.pid.is_some()),
            cgroup_cpu_usec: None,
            cgroup_memory_bytes: None,
        }
    }
}

/// What to do with a unit once all its instances have settled.
#[derive(Debug)]
enum Pending {
    /// Forget the unit (its file was removed).
    Remove,
    /// Swap in a changed definition, then start it if `start`.
    Replace { unit: Arc<Unit>, start: bool },
}

struct UnitEntry {
    unit: Arc<Unit>,
    transient: bool,
    instances: Vec<Instance>,
    pending: Option<Pending>,
    /// When the unit last settled (for pruning finished transient units).
    settled_at: Option<Instant>,
    /// For an instance unit of a template (`web@8080`): the template's name (`web@`).
    template: Option<String>,
    /// A transient unit's stdout and stderr passed by its client (instead of its log).
    stdio: Option<Arc<[OwnedFd; 2]>>,
}

impl UnitEntry {
    fn new(unit: Arc<Unit>, transient: bool) -> UnitEntry {
        // A pool has no instances of its own: its processes belong to its jobs.
        let count = if unit.kind == UnitKind::Pool {
            0
        } else {
            unit.instances
        };
        let instances = (0..count).map(Instance::new).collect();
        UnitEntry {
            unit,
            transient,
            instances,
            pending: None,
            settled_at: None,
            template: None,
            stdio: None,
        }
    }

    fn settled(&self) -> bool {
        self.instances.iter().all(|i| !i.state.is_active())
    }

    fn status(&self) -> UnitStatus {
        UnitStatus {
            name: self.unit.name.clone(),
            kind: kind_name(self.unit.kind).into(),
            daemon: self.unit.daemon,
            transient: self.transient,
            loaded: true,
            errors: Vec::new(),
            instances: self.instances.iter().map(Instance::status).collect(),
        }
    }
}

/// A unit file set aside for its errors, as `status` shows it: no instances.
fn not_loaded_status(bad: &NotLoaded) -> UnitStatus {
    UnitStatus {
        name: bad.name.clone(),
        kind: "unknown".into(),
        daemon: false,
        transient: false,
        loaded: false,
        errors: bad.errors.iter().map(ToString::to_string).collect(),
        instances: Vec::new(),
    }
}

fn kind_name(kind: UnitKind) -> &'static str {
    match kind {
        UnitKind::Service => "service",
        UnitKind::Task => "task",
        UnitKind::Pool => "pool",
    }
}

enum Then {
    ReplyUnits(Reply<UnitsResult>, Vec<String>),
    StartThenReply(Reply<UnitsResult>, Vec<String>),
    ReplyWait(Reply<WaitResult>),
}

/// A `start --wait`: answered once every instance of `units` has started or failed.
struct StartWaiter {
    units: Vec<String>,
    reply: Reply<Vec<StartFailure>>,
    /// Instances seen failing: a failure stands even if the restart policy runs the
    /// instance again meanwhile.
    failed: BTreeMap<(String, u32), StartFailure>,
}

/// Fires once every unit in `units` has settled.
struct Waiter {
    units: Vec<String>,
    then: Then,
}

struct Shutdown {
    tasks_deadline: Instant,
    replies: Vec<oneshot::Sender<()>>,
}

/// How many finished transient units are kept for `status` and `wait`.
const KEEP_TRANSIENT: usize = 100;

/// The supervisor's state. See the module docs.
pub struct Supervisor {
    config: SupervisorConfig,
    units: BTreeMap<String, UnitEntry>,
    by_pid: HashMap<i32, (String, u32)>,
    /// Spawns in flight: the instance each is for (`exec` probes take theirs from here too).
    tokens: Tokens<(String, u32)>,
    next_run_id: i64,
    next_transient: u64,
    waiters: Vec<Waiter>,
    pid_waiters: Vec<(String, Reply<Option<u32>>)>,
    start_waiters: Vec<StartWaiter>,
    /// When a [`Msg::Wake`] is due, if one is.
    wake_at: Option<Instant>,
    shutdown: Option<Shutdown>,
    store: Store,
    procs: ProcessThread,
    tx: mpsc::UnboundedSender<Msg>,
    /// One per unit with a `schedule` or `every`.
    timers: BTreeMap<String, schedule::Timer>,
    /// Templates (`NAME@.toml`) by name (`NAME@`): never units themselves, but the
    /// definition of their instance units, made at their first start.
    templates: BTreeMap<String, Arc<Unit>>,
    /// `exec` probes in flight and the notify socket.
    probes: probe::Probes,
    /// Instances whose cgroups are still to be removed (their last processes were
    /// killed and are leaving); tried again at each tick.
    cgroups_to_remove: BTreeSet<(String, u32)>,
    /// Unit files set aside at start for their errors, by unit name: shown by `status`
    /// as not loaded, until a reload (which takes only a set without errors) clears them.
    not_loaded: BTreeMap<String, NotLoaded>,
}

impl Supervisor {
    /// Creates the supervisor and its process thread, and spawns its task.
    /// Autostart units are started at once; `not_loaded` are the unit files set aside
    /// for their errors, shown by `status`.
    pub async fn start(
        config: SupervisorConfig,
        units: BTreeMap<String, Unit>,
        not_loaded: Vec<NotLoaded>,
        store: Store,
        procs: ProcessThread,
        (tx, mut rx): (mpsc::UnboundedSender<Msg>, mpsc::UnboundedReceiver<Msg>),
    ) -> std::io::Result<(SupervisorHandle, tokio::task::JoinHandle<()>)> {
        let next_run_id = store.max_run_id().await + 1;
        let (templates, units): (BTreeMap<_, _>, BTreeMap<_, _>) =
            units.into_iter().partition(|(_, u)| u.is_template());
        let mut sup = Supervisor {
            config,
            units: units
                .into_values()
                .map(|u| (u.name.clone(), UnitEntry::new(Arc::new(u), false)))
                .collect(),
            templates: templates
                .into_iter()
                .map(|(name, u)| (name, Arc::new(u)))
                .collect(),
            by_pid: HashMap::new(),
            tokens: Tokens::default(),
            next_run_id,
            next_transient: 1,
            waiters: Vec::new(),
            pid_waiters: Vec::new(),
            start_waiters: Vec::new(),
            wake_at: None,
            shutdown: None,
            store,
            procs,
            tx: tx.clone(),
            timers: BTreeMap::new(),
            probes: probe::Probes::new(tx.clone()),
            cgroups_to_remove: BTreeSet::new(),
            not_loaded: not_loaded
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect(),
        };
        // When each scheduled unit last ran, for `catch_up` (and for an interval's phase).
        let mut last_runs = BTreeMap::new();
        for entry in sup.units.values().filter(|e| e.unit.schedule.is_some()) {
            let name = entry.unit.name.clone();
            let runs = sup
                .store
                .history(store::History::Runs {
                    unit: name.clone(),
                    limit: 1,
                })
                .await
                .runs;
            if let Some(run) = runs.first() {
                let at = SystemTime::UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(run.started_ms).unwrap_or(0));
                last_runs.insert(name, at);
            }
        }
        let ticker = tx.clone();
        tokio::spawn(async move {
            // Log rotation is checked every few seconds: a stat per instance log.
            let mut every = tokio::time::interval(Duration::from_secs(3));
            loop {
                every.tick().await;
                if ticker.send(Msg::Tick).is_err() {
                    return;
                }
            }
        });
        let previous_life = sup.store.open_runs().await;
        let task = tokio::spawn(async move {
            sup.recover(previous_life);
            sup.checks_after_recovery();
            sup.start_autostart();
            sup.start_timers(&last_runs);
            while let Some(msg) = rx.recv().await {
                sup.handle(msg);
                sup.settle();
            }
        });
        Ok((SupervisorHandle { tx }, task))
    }

    /// Adopts the live instances of corrald's previous life, records the dead ones, and
    /// starts again what their restart policy says (see [`adopt`]).
    fn recover(&mut self, runs: Vec<OpenRun>) {
        let (mut adopted, mut dead, mut restart, mut stray) = (vec![], vec![], vec![], vec![]);
        for run in runs {
            let label = format!("{}.{} (pid {})", run.unit, run.instance, run.pid);
            let pidfd = adopt::open_if_same(run.pid, run.start_time);
            let slot = self
                .units
                .get_mut(&run.unit)
                .and_then(|e| e.instances.get_mut(run.instance as usize));
            match (slot, pidfd) {
                (Some(inst), Some(fd)) if inst.pid.is_none() => {
                    inst.state = InstanceState::Running;
                    inst.pid = Some(run.pid);
                    inst.run_id = Some(run.id);
                    inst.restarts = run.restart_count;
                    let age = Duration::from_millis(
                        (crate::clock::now_ms() - run.started_at).max(0) as u64,
                    );
                    inst.started = Instant::now().checked_sub(age).or(Some(Instant::now()));
                    self.by_pid
                        .insert(run.pid, (run.unit.clone(), run.instance));
                    adopt::watch(fd, run.pid, self.tx.clone());
                    adopted.push(label);
                }
                (_, Some(_)) => {
                    // Alive, but its unit (or that instance) is no longer configured.
                    let cgroups = self.config.cgroups.as_deref();
                    signal_instance(cgroups, &run.unit, run.instance, run.pid, Signal::SIGTERM);
                    self.store.run_ended(run.id, None);
                    stray.push(label);
                }
                (slot, None) => {
                    self.store.run_ended(run.id, None);
                    dead.push(label);
                    let Some(inst) = slot else { continue };
                    inst.last_exit = Some(ExitStatus {
                        code: None,
                        signal: None,
                    });
                    inst.restarts = run.restart_count;
                    let entry = &self.units[&run.unit];
                    let again = matches!(
                        entry.unit.restart,
                        RestartPolicy::Always | RestartPolicy::OnFailure
                    );
                    let inst = &mut self.units.get_mut(&run.unit).expect("looked up").instances
                        [run.instance as usize];
                    if again {
                        restart.push(run.unit.clone());
                    } else {
                        inst.state = InstanceState::Exited;
                    }
                }
            }
        }
        if adopted.is_empty() && dead.is_empty() && stray.is_empty() {
            return;
        }
        restart.sort();
        restart.dedup();
        self.event_global(
            "recovered",
            format!(
                "adopted: [{}]; found dead: [{}]; restarting: [{}]; stopped, no longer configured: [{}]",
                adopted.join(", "),
                dead.join(", "),
                restart.join(", "),
                stray.join(", ")
            ),
        );
        if let Err(e) = self.start_units(&restart) {
            tracing::error!("recovery: {e}");
        }
    }

    fn start_autostart(&mut self) {
        let mut names: Vec<String> = self
            .units
            .values()
            .filter(|e| e.unit.autostart && e.unit.kind != UnitKind::Pool)
            .map(|e| e.unit.name.clone())
            .collect();
        for (template, args) in &self.config.enable {
            if !self.templates.contains_key(template) {
                let detail = format!(
                    "[enable] names `{template}`, but the units directory has no template {template}.toml"
                );
                tracing::error!("{detail}");
                self.event_global("enable_failed", detail);
                continue;
            }
            names.extend(args.iter().map(|arg| format!("{template}{arg}")));
        }
        if let Err(e) = self.start_units(&names) {
            tracing::error!("autostart: {e}");
        }
        self.settle();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Proc(ProcEvent::Spawned { token, result }) => self.on_spawned(token, result),
            Msg::Proc(ProcEvent::Exited { pid, status }) => self.on_exited(pid, status),
            Msg::RestartDue {
                unit,
                instance,
                generation,
            } => self.on_restart_due(&unit, instance, generation),
            Msg::StopTimeout {
                unit,
                instance,
                generation,
            } => self.on_stop_timeout(&unit, instance, generation),
            Msg::Tick => self.on_tick(),
            Msg::Wake => {
                if self.wake_at.is_some_and(|t| t <= Instant::now()) {
                    self.wake_at = None;
                }
            }
            Msg::Request(req) => self.on_request(req),
            Msg::ScheduleDue { unit, generation } => self.on_schedule_due(&unit, generation),
            Msg::Probe(msg) => self.on_probe(msg),
        }
    }

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Status(unit, reply) => {
                let _ = reply.send(self.status(unit.as_deref()));
            }
            Request::Timers(reply) => {
                let _ = reply.send(Ok(self.timers_status()));
            }
            Request::Start(units, reply) => {
                let _ = reply
                    .send(self.refuse_if_shutting_down().and_then(|()| {
                        self.start_units(&units).map(|units| UnitsResult { units })
                    }));
            }
            Request::Started(units, reply) => match self.check_known(&units) {
                Ok(()) => self.start_waiters.push(StartWaiter {
                    units,
                    reply,
                    failed: BTreeMap::new(),
                }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::Stop(units, reply) => {
                if let Err(e) = self.check_known(&units) {
                    let _ = reply.send(Err(e));
                    return;
                }
                for name in &units {
                    self.stop_unit(name, None, "request");
                }
                self.waiters.push(Waiter {
                    units: units.clone(),
                    then: Then::ReplyUnits(reply, units),
                });
            }
            Request::Restart(units, reply) => {
                if let Err(e) = self
                    .refuse_if_shutting_down()
                    .and_then(|()| self.check_known(&units))
                {
                    let _ = reply.send(Err(e));
                    return;
                }
                for name in &units {
                    self.stop_unit(name, None, "restart");
                }
                self.waiters.push(Waiter {
                    units: units.clone(),
                    then: Then::StartThenReply(reply, units),
                });
            }
            Request::Wait(unit, reply) => {
                if !self.units.contains_key(&unit) {
                    let _ = reply.send(Err(self.unknown(&unit)));
                    return;
                }
                self.waiters.push(Waiter {
                    units: vec![unit],
                    then: Then::ReplyWait(reply),
                });
            }
            Request::Reload(units, reply) => {
                let _ = reply.send(self.refuse_if_shutting_down().map(|()| self.reload(units)));
            }
            Request::Run(unit, stdio, reply) => {
                let _ = reply.send(
                    self.refuse_if_shutting_down()
                        .and_then(|()| self.run(*unit, stdio)),
                );
            }
            Request::LogPaths(unit, instance, reply) => {
                let _ = reply.send(self.log_paths(&unit, instance));
            }
            Request::Shutdown(reply) => self.begin_shutdown(reply),
            Request::ForceShutdown => self.force_kill_all(),
            Request::Definition(name, reply) => {
                let unit = self.units.get(&name).map(|e| e.unit.clone());
                let _ = reply.send(unit.ok_or_else(|| self.unknown(&name)));
            }
            Request::Kill(units, signal, reply) => {
                let _ = reply.send(self.check_known(&units).map(|()| {
                    let signal = Signal::try_from(signal).unwrap_or(Signal::SIGKILL);
                    let cgroups = self.config.cgroups.clone();
                    for name in &units {
                        let entry = self.units.get_mut(name).expect("checked");
                        for inst in &mut entry.instances {
                            match inst.pid {
                                Some(pid) => signal_instance(
                                    cgroups.as_deref(),
                                    name,
                                    inst.index,
                                    pid,
                                    signal,
                                ),
                                None if inst.spawn_token.is_some() => {
                                    inst.pending_signal = Some(signal);
                                }
                                None => {}
                            }
                        }
                        self.event(name, None, "killed", format!("{signal} by request"));
                    }
                    UnitsResult { units }
                }));
            }
            Request::FirstPid(unit, reply) => {
                if !self.units.contains_key(&unit) {
                    let _ = reply.send(Err(self.unknown(&unit)));
                } else {
                    self.pid_waiters.push((unit, reply));
                }
            }
            Request::Plan(reply) => {
                let _ = reply.send(Ok(self.plan()));
            }
            Request::WhoIs(pgids, reply) => {
                let owners = pgids.iter().map(|p| self.by_pid.get(p).cloned()).collect();
                let _ = reply.send(Ok(owners));
            }
        }
    }

    fn refuse_if_shutting_down(&self) -> Result<(), ErrorBody> {
        match self.shutdown {
            Some(_) => Err(ErrorBody::new(
                ErrorCode::ShuttingDown,
                "corrald is shutting down and takes no new work",
            )),
            None => Ok(()),
        }
    }

    fn check_known(&self, units: &[String]) -> Result<(), ErrorBody> {
        match units.iter().find(|u| !self.units.contains_key(*u)) {
            Some(u) => Err(self.unknown(u)),
            None => Ok(()),
        }
    }

    /// Makes the instance unit `name` (`web@8080`) of its template if it does not exist
    /// yet; nothing for other names.
    fn instantiate(&mut self, name: &str) -> Result<(), ErrorBody> {
        if self.units.contains_key(name) {
            return Ok(());
        }
        let Some((base, arg)) = corral_config::template_of(name) else {
            return Ok(());
        };
        let Some(template) = self.templates.get(base) else {
            return Ok(());
        };
        let unit = template
            .instantiate(arg)
            .map_err(|m| ErrorBody::new(ErrorCode::BadRequest, m))?;
        let mut entry = UnitEntry::new(Arc::new(unit), false);
        entry.template = Some(base.to_owned());
        self.units.insert(name.to_owned(), entry);
        self.event(
            name,
            None,
            "instantiated",
            format!("from the template {base}"),
        );
        Ok(())
    }

    fn status(&self, unit: Option<&str>) -> Result<StatusResult, ErrorBody> {
        let units = match unit {
            Some(name) => match (self.units.get(name), self.not_loaded.get(name)) {
                (Some(entry), _) => vec![entry.status()],
                (None, Some(bad)) => vec![not_loaded_status(bad)],
                (None, None) => return Err(self.unknown(name)),
            },
            None => self
                .units
                .values()
                .map(UnitEntry::status)
                .chain(self.not_loaded.values().map(not_loaded_status))
                .collect(),
        };
        let mut units = units;
        if let Some(cg) = &self.config.cgroups {
            for unit in &mut units {
                for inst in unit.instances.iter_mut().filter(|i| i.pid.is_some()) {
                    let usage = cg.usage(&unit.name, inst.instance);
                    inst.cgroup_cpu_usec = usage.cpu_usec;
                    inst.cgroup_memory_bytes = usage.memory_bytes;
                }
            }
        }
        Ok(StatusResult {
            units,
            supervision: self.config.supervision.clone(),
        })
    }

    /// The error for a unit name that is not a unit: one whose file was not loaded for
    /// its errors says so, with them; any other name is not found.
    fn unknown(&self, name: &str) -> ErrorBody {
        let base = corral_config::template_of(name).map(|(base, _)| base);
        let bad = self
            .not_loaded
            .get(name)
            .or_else(|| base.and_then(|b| self.not_loaded.get(b)));
        match bad {
            Some(bad) => ErrorBody {
                code: ErrorCode::InvalidConfig,
                message: format!(
                    "unit `{}` is not loaded: {} has errors; correct it, then run `corralctl reload`",
                    bad.name,
                    bad.file.display()
                ),
                details: bad.errors.iter().map(ToString::to_string).collect(),
            },
            None => not_found(name),
        }
    }

    fn log_paths(
        &self,
        unit: &str,
        instance: Option<u32>,
    ) -> Result<Vec<(u32, PathBuf)>, ErrorBody> {
        let entry = self.units.get(unit).ok_or_else(|| self.unknown(unit))?;
        let count = entry.unit.instances;
        if let Some(i) = instance {
            if i >= count {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!(
                        "unit `{unit}` has {count} instance(s), numbered from 0; there is no instance {i}"
                    ),
                ));
            }
        }
        Ok((0..count)
            .filter(|i| instance.is_none_or(|want| want == *i))
            .map(|i| (i, logs::log_path(&self.config.log_dir, unit, i)))
            .collect())
    }

    // ----- starting -----

    /// Starts the named units and, recursively, what they require. Returns every unit acted on.
    fn start_units(&mut self, names: &[String]) -> Result<Vec<String>, ErrorBody> {
        if let Some(t) = names.iter().find(|n| self.templates.contains_key(*n)) {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "`{t}` is a template: start one of its instances, e.g. `corralctl start {t}main` ({{arg}} becomes `main`)"
                ),
            ));
        }
        for name in names {
            self.instantiate(name)?;
        }
        self.check_known(names)?;
        if let Some(pool) = names
            .iter()
            .find(|n| self.units[*n].unit.kind == UnitKind::Pool)
        {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "`{pool}` is a pool: submit work to it with `corralctl pool map --pool {pool} ::: INPUTS...`"
                ),
            ));
        }
        let mut closure = BTreeSet::new();
        let mut todo: Vec<String> = names.to_vec();
        while let Some(name) = todo.pop() {
            if !closure.insert(name.clone()) {
                continue;
            }
            // A required instance of a template is made when it is first needed.
            self.instantiate(&name)?;
            if let Some(entry) = self.units.get(&name) {
                todo.extend(entry.unit.requires.iter().cloned());
            }
        }
        for name in &closure {
            let Some(entry) = self.units.get_mut(name) else {
                continue;
            };
            for inst in &mut entry.instances {
                if inst.state.is_active() {
                    continue;
                }
                // An explicit start forgives the past: counters and the start limit reset.
                inst.state = InstanceState::Starting;
                inst.reason = None;
                inst.checks.restarted_for = None;
                inst.restarts = 0;
                inst.consecutive_failures = 0;
                inst.recent_starts.clear();
                inst.pending_signal = None;
                inst.generation += 1;
            }
        }
        self.pump_starts();
        Ok(closure.into_iter().collect())
    }

    /// Spawns every instance waiting in `Starting` whose dependencies are ready, and fails
    /// those whose requirements failed. Repeats until nothing changes.
    fn pump_starts(&mut self) {
        loop {
            let mut changed = false;
            let waiting: Vec<(String, u32)> = self
                .units
                .values()
                .flat_map(|e| {
                    e.instances
                        .iter()
                        .filter(|i| {
                            i.state == InstanceState::Starting
                                && i.spawn_token.is_none()
                                && i.pid.is_none()
                        })
                        .map(|i| (e.unit.name.clone(), i.index))
                })
                .collect();
            for (name, index) in waiting {
                match self.deps_ready(&name) {
                    Ok(true) => {
                        self.spawn_instance(&name, index);
                        changed = true;
                    }
                    Ok(false) => {}
                    Err(reason) => {
                        let inst = self.instance_mut(&name, index).expect("listed above");
                        inst.state = InstanceState::Failed;
                        inst.reason = Some(reason.clone());
                        self.event(&name, Some(index), "dependency_failed", reason);
                        changed = true;
                    }
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// Ok(true): may start now. Ok(false): wait. Err: a requirement failed.
    fn deps_ready(&self, name: &str) -> Result<bool, String> {
        let unit = &self.units[name].unit;
        for dep in &unit.requires {
            let Some(d) = self.units.get(dep) else {
                return Err(format!("required unit `{dep}` does not exist"));
            };
            for i in &d.instances {
                match (d.unit.kind, i.state) {
                    (_, InstanceState::Failed) => {
                        let why = i.reason.as_ref().map(|r| format!(": {r}"));
                        return Err(format!(
                            "required unit `{dep}` failed{}",
                            why.unwrap_or_default()
                        ));
                    }
                    (UnitKind::Service, InstanceState::Running) => {}
                    (UnitKind::Task, InstanceState::Exited)
                        if i.last_exit.is_some_and(|e| e.success()) => {}
                    (UnitKind::Task, InstanceState::Exited) => {
                        return Err(format!("required task `{dep}` exited unsuccessfully"));
                    }
                    (_, s) if s.is_active() => return Ok(false),
                    (_, s) => {
                        return Err(format!("required unit `{dep}` is {}", s.as_str()));
                    }
                }
            }
        }
        for dep in unit.after.iter().filter(|d| !unit.requires.contains(d)) {
            let Some(d) = self.units.get(dep) else {
                continue;
            };
            let busy = d.instances.iter().any(|i| match i.state {
                InstanceState::Starting | InstanceState::Backoff => true,
                // "after a task" means after it has finished.
                InstanceState::Running | InstanceState::Stopping => d.unit.kind == UnitKind::Task,
                _ => false,
            });
            if busy {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn instance_mut(&mut self, unit: &str, index: u32) -> Option<&mut Instance> {
        self.units
            .get_mut(unit)
            .and_then(|e| e.instances.get_mut(index as usize))
    }

    /// Spawns one instance now, unless its start limit is used up.
    fn spawn_instance(&mut self, name: &str, index: u32) {
        let Some(entry) = self.units.get_mut(name) else {
            return;
        };
        let unit = entry.unit.clone();
        // Passed descriptors serve one start: corrald keeps no copy of a client's pipe
        // open once the process has it (a restart writes to the unit's log instead).
        let stdio = entry.stdio.take();
        let inst = &mut entry.instances[index as usize];
        if let Some(reason) = start_limit_hit(&unit, inst) {
            inst.state = InstanceState::Failed;
            inst.reason = Some(reason.clone());
            self.event(name, Some(index), "gave_up", reason);
            return;
        }
        inst.recent_starts.push_back(Instant::now());
        let token = self.tokens.issue((name.to_owned(), index));
        inst.state = InstanceState::Starting;
        inst.spawn_token = Some(token);
        self.checks_before_spawn(name, index);
        match self.spawn_spec(&unit, index) {
            Ok(mut spec) => {
                if let Some(fds) = stdio {
                    spec.output = Output::Passed(fds);
                }
                self.procs.spawn(token, spec)
            }
            // Fails like a spawn that failed: the restart policy decides what follows.
            Err(reason) => self.on_spawned(token, Err(reason)),
        }
    }

    /// What to start for one instance. The environment files are read here, at each
    /// start, so a changed file takes effect at the next start without a reload; one
    /// that is missing (and not optional) or malformed fails the start.
    fn spawn_spec(&self, unit: &Unit, index: u32) -> Result<SpawnSpec, String> {
        let mut env = unit.env.clone();
        if !unit.env_files.is_empty() {
            env.extend(corral_config::read_env_files(&unit.env_files)?);
        }
        self.check_env(unit, &mut env);
        env.insert(
            "CORRAL_SOCKET".into(),
            self.config.socket.display().to_string(),
        );
        env.insert("CORRAL_UNIT".into(), unit.name.clone());
        env.insert("CORRAL_INSTANCE".into(), index.to_string());
        let cgroups = match &self.config.cgroups {
            Some(cg) => {
                let (join, unenforced) = cg.prepare(unit, index)?;
                if !unenforced.is_empty() {
                    tracing::warn!(
                        "{}.{index}: {} not enforced: no such controller is available to corrald",
                        unit.name,
                        unenforced.join(", ")
                    );
                }
                join
            }
            None => Vec::new(),
        };
        Ok(SpawnSpec {
            argv: unit.argv_for(index),
            env,
            working_dir: unit.working_dir.clone(),
            output: Output::Log(logs::log_path(&self.config.log_dir, &unit.name, index)),
            owner: Owner::Supervisor,
            umask: unit.umask,
            rlimits: corral_config::Rlimits {
                nofile: unit.rlimits.nofile.or_else(|| {
                    crate::fds::INHERITED_NOFILE
                        .get()
                        .filter(|(soft, hard)| soft < hard)
                        .map(|&(soft, hard)| corral_config::Rlimit { soft, hard })
                }),
                ..unit.rlimits
            },
            user: unit.user.clone(),
            group: unit.group.clone(),
            die_with_parent: unit.daemon,
            cgroups,
        })
    }

    fn on_spawned(&mut self, token: u64, result: Result<Spawned, String>) {
        if self.probe_spawned(token, &result) {
            return;
        }
        let Some((name, index)) = self.tokens.take(token) else {
            return;
        };
        let run_id = self.next_run_id;
        let Some(entry) = self.units.get_mut(&name) else {
            if let Ok(s) = result {
                kill_group(s.pid, Signal::SIGKILL);
            }
            return;
        };
        let unit = entry.unit.clone();
        let Some(inst) = entry.instances.get_mut(index as usize) else {
            return;
        };
        if inst.spawn_token != Some(token) {
            if let Ok(s) = result {
                kill_group(s.pid, Signal::SIGKILL);
            }
            return;
        }
        inst.spawn_token = None;
        match result {
            Ok(spawned) => {
                self.next_run_id += 1;
                inst.pid = Some(spawned.pid);
                inst.started = Some(Instant::now());
                inst.reason = None; // a start that failed for lack of descriptors, say
                inst.run_id = Some(run_id);
                self.by_pid.insert(spawned.pid, (name.clone(), index));
                self.store.run_started(RunStart {
                    id: run_id,
                    unit: name.clone(),
                    instance: index,
                    pid: spawned.pid,
                    start_time: spawned.start_time,
                    started_at: crate::clock::now_ms(),
                    restart_count: inst.restarts,
                    daemon: unit.daemon,
                });
                if let Some(signal) = inst.pending_signal.take() {
                    kill_group(spawned.pid, signal);
                }
                if inst.state == InstanceState::Stopping {
                    // A stop arrived while the spawn was in flight.
                    let generation = inst.generation;
                    self.signal_stop(&unit, index, spawned.pid, generation, None);
                } else {
                    self.spawn_succeeded(&name, index, spawned.pid);
                }
            }
            Err(reason)
                if inst.state != InstanceState::Stopping
                    && self.shutdown.is_none()
                    && unit.restart != RestartPolicy::No
                    && crate::fds::names_exhaustion(&reason) =>
            {
                // Not the unit's fault: retried with backoff for as long as descriptors
                // are short, and not counted against its start limit.
                inst.recent_starts.pop_back();
                let (delay, generation) = inst.back_off(&unit);
                let reason = format!("out of file descriptors: {reason}; retrying in {delay:?}");
                inst.reason = Some(reason.clone());
                self.event(&name, Some(index), "spawn_failed", reason);
                self.after(
                    delay,
                    Msg::RestartDue {
                        unit: name,
                        instance: index,
                        generation,
                    },
                );
            }
            Err(reason) => {
                let was_stopping = inst.state == InstanceState::Stopping;
                inst.state = if was_stopping {
                    InstanceState::Stopped
                } else {
                    InstanceState::Failed
                };
                inst.reason = Some(reason.clone());
                self.event(&name, Some(index), "spawn_failed", reason);
            }
        }
    }

    fn on_exited(&mut self, pid: i32, status: ExitStatus) {
        if self.probe_exited(pid, status) {
            return;
        }
        let Some((name, index)) = self.by_pid.remove(&pid) else {
            return; // an orphaned grandchild re-parented to us: reaped, nothing to track
        };
        // The group (and the cgroup) outlives its leader only by accident: clear out what
        // is left of it, `setsid` or not.
        signal_instance(
            self.config.cgroups.as_deref(),
            &name,
            index,
            pid,
            Signal::SIGKILL,
        );
        if self.config.cgroups.is_some() {
            self.cgroups_to_remove.insert((name.clone(), index));
        }
        let shutting_down = self.shutdown.is_some();
        let Some(entry) = self.units.get_mut(&name) else {
            return;
        };
        let unit = entry.unit.clone();
        let inst = &mut entry.instances[index as usize];
        if inst.pid != Some(pid) {
            return;
        }
        inst.pid = None;
        inst.last_exit = Some(status);
        // The tick checks only logs of instances with a process: check this one a last
        // time, so that a stopped instance's log is within its bound too.
        let rotation = logs::Rotation {
            path: logs::log_path(&self.config.log_dir, &name, index),
            max_size: unit.log_max_size,
            keep: unit.log_keep,
        };
        tokio::task::spawn_blocking(move || logs::rotate_all(std::slice::from_ref(&rotation)));
        let ran_for = inst.started.map_or(Duration::ZERO, |t| t.elapsed());
        if let Some(run_id) = inst.run_id.take() {
            self.store.run_ended(run_id, Some(status));
        }
        // Stopped by corrald for a failed check: restarted as after a failure.
        let failed_check = inst.checks.kill_reason.take();
        if inst.state == InstanceState::Stopping && failed_check.is_none() {
            inst.state = InstanceState::Stopped;
            inst.generation += 1;
            self.event(&name, Some(index), "stopped", status.to_string());
            return;
        }
        let restart = !shutting_down
            && match unit.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !status.success() || failed_check.is_some(),
                RestartPolicy::No => false,
            };
        if let (Some(why), false) = (&failed_check, restart) {
            inst.state = InstanceState::Failed;
            inst.generation += 1;
            self.event(&name, Some(index), "failed", format!("{status}; {why}"));
            return;
        }
        if let Some(why) = failed_check {
            // Shown as the reason while the next runs go well (a spawn clears `reason`).
            inst.checks.restarted_for = Some(why);
        }
        if !restart {
            inst.state = InstanceState::Exited;
            self.event(&name, Some(index), "exited", status.to_string());
            return;
        }
        if ran_for >= unit.restart_delay_max.max(Duration::from_secs(1)) {
            inst.consecutive_failures = 0; // it ran long enough to count as healthy
        }
        if let Some(reason) = start_limit_hit(&unit, inst) {
            inst.state = InstanceState::Failed;
            inst.reason = Some(reason.clone());
            self.event(&name, Some(index), "gave_up", format!("{status}; {reason}"));
            return;
        }
        let (delay, generation) = inst.back_off(&unit);
        self.event(
            &name,
            Some(index),
            "exited",
            format!("{status}; restarting in {delay:?}"),
        );
        self.after(
            delay,
            Msg::RestartDue {
                unit: name,
                instance: index,
                generation,
            },
        );
    }

    fn on_restart_due(&mut self, name: &str, index: u32, generation: u64) {
        let Some(inst) = self.instance_mut(name, index) else {
            return;
        };
        if inst.generation != generation || inst.state != InstanceState::Backoff {
            return;
        }
        inst.restarts += 1;
        let restarts = inst.restarts;
        self.event(
            name,
            Some(index),
            "restarting",
            format!("restart #{restarts}"),
        );
        self.spawn_instance(name, index);
    }

    // ----- stopping -----

    fn stop_unit(&mut self, name: &str, timeout: Option<Duration>, by: &str) {
        let Some(entry) = self.units.get(name) else {
            return;
        };
        let unit = entry.unit.clone();
        for index in 0..entry.instances.len() as u32 {
            self.stop_instance(&unit, index, timeout, by);
        }
    }

    fn stop_instance(&mut self, unit: &Arc<Unit>, index: u32, timeout: Option<Duration>, by: &str) {
        let Some(inst) = self.instance_mut(&unit.name, index) else {
            return;
        };
        match inst.state {
            InstanceState::Running | InstanceState::Starting if inst.pid.is_some() => {
                let pid = inst.pid.expect("running instances have a pid");
                inst.state = InstanceState::Stopping;
                inst.generation += 1;
                let generation = inst.generation;
                self.event(&unit.name, Some(index), "stopping", format!("by {by}"));
                self.signal_stop(unit, index, pid, generation, timeout);
            }
            InstanceState::Starting if inst.spawn_token.is_some() => {
                // on_spawned sends the stop signal as soon as the pid is known.
                inst.state = InstanceState::Stopping;
                inst.generation += 1;
            }
            InstanceState::Starting | InstanceState::Backoff => {
                inst.state = InstanceState::Stopped;
                inst.generation += 1;
                self.event(&unit.name, Some(index), "stopped", format!("by {by}"));
            }
            // Being stopped for a failed check: now it is meant to stay down.
            InstanceState::Stopping => inst.checks.kill_reason = None,
            _ => {}
        }
    }

    /// Sends the unit's stop signal to the group and arms the SIGKILL timer.
    fn signal_stop(
        &mut self,
        unit: &Unit,
        index: u32,
        pid: i32,
        generation: u64,
        timeout: Option<Duration>,
    ) {
        let signal = Signal::try_from(unit.stop_signal_number).unwrap_or(Signal::SIGTERM);
        let cgroups = self.config.cgroups.as_deref();
        signal_instance(cgroups, &unit.name, index, pid, signal);
        // SIGSTOPped processes would never see the signal; SIGCONT is harmless otherwise.
        signal_instance(cgroups, &unit.name, index, pid, Signal::SIGCONT);
        self.after(
            timeout.unwrap_or(unit.stop_timeout),
            Msg::StopTimeout {
                unit: unit.name.clone(),
                instance: index,
                generation,
            },
        );
    }

    fn on_stop_timeout(&mut self, name: &str, index: u32, generation: u64) {
        let Some(inst) = self.instance_mut(name, index) else {
            return;
        };
        if inst.generation != generation || inst.state != InstanceState::Stopping {
            return;
        }
        if let Some(pid) = inst.pid {
            let cgroups = self.config.cgroups.clone();
            signal_instance(cgroups.as_deref(), name, index, pid, Signal::SIGKILL);
            let whom = if cgroups.is_some() { "cgroup" } else { "group" };
            self.event(
                name,
                Some(index),
                "killed",
                format!("stop timeout passed: SIGKILL to the {whom}"),
            );
        }
    }

    // ----- reload and transient units -----

    fn reload(&mut self, new: BTreeMap<String, Unit>) -> ReloadResult {
        let mut result = ReloadResult {
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            unchanged: Vec::new(),
        };
        // A reload is only ever given a set without errors: every file is loaded now.
        self.not_loaded.clear();
        let (templates, new): (BTreeMap<_, _>, BTreeMap<_, _>) =
            new.into_iter().partition(|(_, u)| u.is_template());
        self.reload_templates(templates, &mut result);
        let old: Vec<String> = self
            .units
            .iter()
            .filter(|(_, e)| !e.transient && e.template.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for name in old.iter().filter(|n| !new.contains_key(*n)) {
            self.stop_unit(name, None, "reload");
            self.units.get_mut(name).expect("listed").pending = Some(Pending::Remove);
            result.removed.push(name.clone());
        }
        let mut to_start = Vec::new();
        for (name, unit) in new {
            let unit = Arc::new(unit);
            match self.units.get_mut(&name) {
                Some(entry) if !entry.transient && *entry.unit == *unit => {
                    result.unchanged.push(name);
                }
                Some(entry) => {
                    let was_active = !entry.settled();
                    entry.pending = Some(Pending::Replace {
                        unit,
                        start: was_active,
                    });
                    if was_active {
                        self.stop_unit(&name, None, "reload");
                    }
                    result.changed.push(name);
                }
                None => {
                    if unit.autostart {
                        to_start.push(name.clone());
                    }
                    self.units.insert(name.clone(), UnitEntry::new(unit, false));
                    result.added.push(name);
                }
            }
        }
        self.event_global("reload", format!("{result:?}"));
        self.apply_pending();
        self.sync_timers();
        if let Err(e) = self.start_units(&to_start) {
            tracing::error!("reload: {e}");
        }
        result
    }

    /// Reload of the templates: the instance units of a removed template are stopped and
    /// removed, those of a changed one are made again from it (and restarted if they
    /// were running).
    fn reload_templates(&mut self, new: BTreeMap<String, Unit>, result: &mut ReloadResult) {
        for name in self.templates.keys() {
            if !new.contains_key(name) {
                result.removed.push(name.clone());
            }
        }
        for (name, t) in &new {
            match self.templates.get(name) {
                None => result.added.push(name.clone()),
                Some(old) if **old == *t => result.unchanged.push(name.clone()),
                Some(_) => result.changed.push(name.clone()),
            }
        }
        self.templates = new.into_iter().map(|(n, u)| (n, Arc::new(u))).collect();
        let instances: Vec<(String, String)> = self
            .units
            .iter()
            .filter_map(|(n, e)| Some((n.clone(), e.template.clone()?)))
            .collect();
        for (name, base) in instances {
            let remade = corral_config::template_of(&name)
                .zip(self.templates.get(&base))
                .and_then(|((_, arg), t)| t.instantiate(arg).ok());
            let entry = self.units.get_mut(&name).expect("listed");
            match remade {
                None => {
                    entry.pending = Some(Pending::Remove);
                    self.stop_unit(&name, None, "reload");
                    result.removed.push(name);
                }
                Some(unit) if unit == *entry.unit => result.unchanged.push(name),
                Some(unit) => {
                    let was_active = !entry.settled();
                    entry.pending = Some(Pending::Replace {
                        unit: Arc::new(unit),
                        start: was_active,
                    });
                    if was_active {
                        self.stop_unit(&name, None, "reload");
                    }
                    result.changed.push(name);
                }
            }
        }
    }

    fn run(&mut self, mut unit: Unit, stdio: Option<[OwnedFd; 2]>) -> Result<String, ErrorBody> {
        if unit.name.is_empty() {
            while self
                .units
                .contains_key(&format!("run-{}", self.next_transient))
            {
                self.next_transient += 1;
            }
            unit.name = format!("run-{}", self.next_transient);
            self.next_transient += 1;
        }
        let name = unit.name.clone();
        match self.units.get(&name) {
            Some(e) if !e.transient || !e.settled() => {
                return Err(ErrorBody::new(
                    ErrorCode::Failed,
                    format!("a unit named `{name}` already exists; choose another --name"),
                ));
            }
            _ => {}
        }
        // A reused name must not replay an earlier run's output to `run --wait`.
        let log = logs::log_path(&self.config.log_dir, &name, 0);
        if let Err(e) = std::fs::File::create(&log) {
            tracing::warn!("cannot truncate {}: {e}", log.display());
        }
        let mut entry = UnitEntry::new(Arc::new(unit), true);
        entry.stdio = stdio.map(Arc::new);
        self.units.insert(name.clone(), entry);
        self.start_units(std::slice::from_ref(&name))?;
        self.prune_transient();
        Ok(name)
    }

    fn prune_transient(&mut self) {
        let mut finished: Vec<(Instant, String)> = self
            .units
            .values()
            .filter(|e| e.transient && e.settled())
            .filter_map(|e| e.settled_at.map(|t| (t, e.unit.name.clone())))
            .collect();
        if finished.len() > KEEP_TRANSIENT {
            finished.sort();
            for (_, name) in &finished[..finished.len() - KEEP_TRANSIENT] {
                self.units.remove(name);
            }
        }
    }

    // ----- schedules -----

    /// Creates the timers of every scheduled unit at corrald's start, and runs once each
    /// one with `catch_up` whose run was missed while corrald was down.
    fn start_timers(&mut self, last_runs: &BTreeMap<String, SystemTime>) {
        let now = SystemTime::now();
        let scheduled: Vec<(String, corral_config::Schedule)> = self
            .units
            .values()
            .filter_map(|e| Some((e.unit.name.clone(), e.unit.schedule.clone()?)))
            .collect();
        for (name, sched) in scheduled {
            let (timer, at_start) = schedule::Timer::new(sched, last_runs.get(&name).copied(), now);
            self.timers.insert(name.clone(), timer);
            if at_start == schedule::AtStart::CatchUp {
                self.event(
                    &name,
                    None,
                    "schedule_catch_up",
                    "missed while corrald was down".into(),
                );
                let ran = self.fire_schedule(&name);
                if ran {
                    if let Some(t) = self.timers.get_mut(&name) {
                        t.last_run = Some(now);
                    }
                }
            }
            self.arm_timer(&name);
        }
        self.settle();
    }

    /// After a reload: a new or changed schedule gets a new timer (keeping when the unit
    /// last ran); a unit that lost its schedule loses its timer.
    fn sync_timers(&mut self) {
        let now = SystemTime::now();
        let wanted: BTreeMap<String, corral_config::Schedule> = self
            .units
            .values()
            .filter(|e| !e.transient && e.pending.is_none())
            .filter_map(|e| Some((e.unit.name.clone(), e.unit.schedule.clone()?)))
            .collect();
        self.timers.retain(|name, _| wanted.contains_key(name));
        for (name, sched) in wanted {
            if self.timers.get(&name).is_some_and(|t| t.schedule == sched) {
                continue;
            }
            let old = self.timers.remove(&name);
            let (mut timer, _) =
                schedule::Timer::new(sched, old.as_ref().and_then(|t| t.last_run), now);
            timer.generation = old.map_or(0, |t| t.generation + 1);
            self.timers.insert(name.clone(), timer);
            self.arm_timer(&name);
        }
    }

    fn arm_timer(&self, name: &str) {
        let Some(timer) = self.timers.get(name) else {
            return;
        };
        if let Some(delay) = timer.sleep(SystemTime::now()) {
            self.after(
                delay,
                Msg::ScheduleDue {
                    unit: name.to_owned(),
                    generation: timer.generation,
                },
            );
        }
    }

    fn on_schedule_due(&mut self, name: &str, generation: u64) {
        let now = SystemTime::now();
        let Some(timer) = self.timers.get(name) else {
            return;
        };
        if timer.generation != generation {
            return;
        }
        if !timer.due(now) {
            self.arm_timer(name);
            return;
        }
        let ran = self.fire_schedule(name);
        if let Some(timer) = self.timers.get_mut(name) {
            timer.fired(now, ran);
        }
        self.arm_timer(name);
    }

    /// Starts a scheduled run of `name` unless its overlap rule says otherwise; whether
    /// a run was started.
    fn fire_schedule(&mut self, name: &str) -> bool {
        if self.shutdown.is_some() {
            return false;
        }
        let Some(entry) = self.units.get(name) else {
            return false;
        };
        let unit = entry.unit.clone();
        let Some(sched) = &unit.schedule else {
            return false;
        };
        if entry.pending.is_some() {
            return false; // being replaced by a reload: the new definition's timer takes over
        }
        if entry.settled() {
            self.event(name, None, "scheduled", sched.describe());
            return match self.start_units(&[name.to_owned()]) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!("scheduled run of {name}: {e}");
                    false
                }
            };
        }
        match sched.overlap {
            corral_config::Overlap::Skip => {
                self.event(
                    name,
                    None,
                    "schedule_skipped",
                    "the last run is still running".into(),
                );
                false
            }
            corral_config::Overlap::Queue => {
                if let Some(t) = self.timers.get_mut(name) {
                    t.queued = true;
                }
                self.event(
                    name,
                    None,
                    "schedule_queued",
                    "runs when the last run has finished".into(),
                );
                false
            }
            corral_config::Overlap::Allow => {
                let mut copy = (*unit).clone();
                copy.schedule = None;
                copy.name = String::new();
                let mut n = 1;
                while self.units.contains_key(&format!("{name}.run-{n}")) {
                    n += 1;
                }
                copy.name = format!("{name}.run-{n}");
                self.event(
                    name,
                    None,
                    "scheduled",
                    format!(
                        "{} beside the running one, as {}",
                        sched.describe(),
                        copy.name
                    ),
                );
                match self.run(copy, None) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!("scheduled run of {name}: {e}");
                        false
                    }
                }
            }
        }
    }

    /// Starts the queued run of each unit whose last run has finished.
    fn start_queued_runs(&mut self) {
        if self.shutdown.is_some() || !self.timers.values().any(|t| t.queued) {
            return;
        }
        let ready: Vec<String> = self
            .timers
            .iter()
            .filter(|(name, t)| t.queued && self.units.get(*name).is_some_and(UnitEntry::settled))
            .map(|(name, _)| name.clone())
            .collect();
        for name in ready {
            if let Some(t) = self.timers.get_mut(&name) {
                t.queued = false;
                t.last_run = Some(SystemTime::now());
            }
            self.event(&name, None, "scheduled", "the queued run".into());
            if let Err(e) = self.start_units(std::slice::from_ref(&name)) {
                tracing::warn!("queued run of {name}: {e}");
            }
        }
    }

    fn timers_status(&self) -> TimersResult {
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        TimersResult {
            timers: self
                .timers
                .iter()
                .map(|(name, t)| TimerStatus {
                    unit: name.clone(),
                    schedule: t.schedule.describe(),
                    overlap: t.schedule.overlap.as_str().to_owned(),
                    catch_up: t.schedule.catch_up,
                    last_run_ms: t.last_run.map(ms),
                    next_run_ms: t.next.map(ms),
                    queued: t.queued,
                })
                .collect(),
        }
    }

    // ----- shutdown -----

    fn begin_shutdown(&mut self, reply: oneshot::Sender<()>) {
        match &mut self.shutdown {
            Some(s) => s.replies.push(reply),
            None => {
                self.event_global("shutdown", "shutdown begun".into());
                self.shutdown = Some(Shutdown {
                    tasks_deadline: Instant::now() + self.config.shutdown_timeout,
                    replies: vec![reply],
                });
                let timeout = self.config.shutdown_timeout;
                self.after(timeout, Msg::Tick);
            }
        }
    }

    /// One step of the shutdown order: daemon units at once (with `daemon_grace`), tasks
    /// once they finish or the deadline passes; then services, each once nothing that
    /// depends on it is still active (reverse dependency order).
    fn pump_shutdown(&mut self) {
        let Some(shutdown) = &self.shutdown else {
            return;
        };
        let tasks_expired = Instant::now() >= shutdown.tasks_deadline;
        let grace = self.config.daemon_grace;
        let active: Vec<Arc<Unit>> = self
            .units
            .values()
            .filter(|e| !e.settled())
            .map(|e| e.unit.clone())
            .collect();
        // Services go last: tasks may still need them, and daemon units die first.
        let first_phase_busy = active.iter().any(|u| u.daemon || u.kind == UnitKind::Task);
        for unit in &active {
            let go = if unit.daemon {
                Some(Some(grace.min(unit.stop_timeout)))
            } else if unit.kind == UnitKind::Task {
                tasks_expired.then_some(None)
            } else {
                let has_active_dependent = active.iter().any(|other| {
                    other.name != unit.name
                        && (other.after.contains(&unit.name) || other.requires.contains(&unit.name))
                });
                (!first_phase_busy && !has_active_dependent).then_some(None)
            };
            if let Some(timeout) = go {
                for index in 0..unit.instances {
                    self.stop_instance(unit, index, timeout, "shutdown");
                }
            }
        }
        if self.units.values().all(UnitEntry::settled) {
            let shutdown = self.shutdown.as_mut().expect("checked above");
            for reply in shutdown.replies.drain(..) {
                let _ = reply.send(());
            }
        }
    }

    /// The order [`Supervisor::pump_shutdown`] would follow from the current state.
    fn plan(&self) -> ShutdownPlan {
        let active: Vec<&UnitEntry> = self.units.values().filter(|e| !e.settled()).collect();
        let running = |e: &UnitEntry| {
            e.instances
                .iter()
                .filter(|i| i.state.is_active())
                .map(|i| i.index)
                .collect::<Vec<_>>()
        };
        let signal = |u: &Unit| u.stop_signal.clone();
        let mut steps = Vec::new();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for e in &active {
            let u = &e.unit;
            if u.daemon {
                let grace = self.config.daemon_grace.min(u.stop_timeout);
                steps.push(PlanStep {
                    order: 1,
                    unit: u.name.clone(),
                    instances: running(e),
                    action: "stop".into(),
                    wait_ms: None,
                    signal: signal(u),
                    kill_after_ms: grace.as_millis() as u64,
                    reason: "daemon = true: stopped at once, SIGKILL after daemon_grace".into(),
                });
                done.insert(&u.name);
            } else if u.kind == UnitKind::Task {
                steps.push(PlanStep {
                    order: 1,
                    unit: u.name.clone(),
                    instances: running(e),
                    action: "join".into(),
                    wait_ms: Some(self.config.shutdown_timeout.as_millis() as u64),
                    signal: signal(u),
                    kill_after_ms: u.stop_timeout.as_millis() as u64,
                    reason: "task: waited for up to shutdown_timeout, then stopped".into(),
                });
                done.insert(&u.name);
            }
        }
        let mut remaining: Vec<&UnitEntry> = active
            .iter()
            .copied()
            .filter(|e| !done.contains(e.unit.name.as_str()))
            .collect();
        let mut order = 2;
        while !remaining.is_empty() {
            let (now, later): (Vec<&UnitEntry>, Vec<&UnitEntry>) =
                remaining.iter().partition(|e| {
                    !active.iter().any(|other| {
                        other.unit.name != e.unit.name
                            && !done.contains(other.unit.name.as_str())
                            && (other.unit.after.contains(&e.unit.name)
                                || other.unit.requires.contains(&e.unit.name))
                    })
                });
            // A dependency cycle cannot pass validation; stop the rest together regardless.
            let now = if now.is_empty() { later.clone() } else { now };
            for e in &now {
                steps.push(PlanStep {
                    order,
                    unit: e.unit.name.clone(),
                    instances: running(e),
                    action: "stop".into(),
                    wait_ms: None,
                    signal: signal(&e.unit),
                    kill_after_ms: e.unit.stop_timeout.as_millis() as u64,
                    reason: if order == 2 {
                        "service: nothing running depends on it".into()
                    } else {
                        "service: after the units that depend on it".into()
                    },
                });
            }
            done.extend(now.iter().map(|e| e.unit.name.as_str()));
            remaining.retain(|e| !done.contains(e.unit.name.as_str()));
            order += 1;
        }
        ShutdownPlan { steps }
    }

    fn force_kill_all(&mut self) {
        let cgroups = self.config.cgroups.clone();
        for entry in self.units.values_mut() {
            for inst in &mut entry.instances {
                if let Some(pid) = inst.pid {
                    let name = &entry.unit.name;
                    signal_instance(cgroups.as_deref(), name, inst.index, pid, Signal::SIGKILL);
                    inst.state = InstanceState::Stopping;
                } else if inst.state.is_active() {
                    inst.state = InstanceState::Stopped;
                }
                inst.generation += 1;
            }
        }
    }

    // ----- bookkeeping after every message -----

    fn on_tick(&mut self) {
        self.check_memory();
        if let Some(cg) = &self.config.cgroups {
            // A cgroup can go once its last process has left (after cgroup.kill, soon).
            let units = &self.units;
            self.cgroups_to_remove.retain(|(name, index)| {
                let running = units
                    .get(name)
                    .and_then(|e| e.instances.get(*index as usize))
                    .is_some_and(|i| i.pid.is_some() || i.spawn_token.is_some());
                !running && !cg.remove(name, *index)
            });
        }
        // Only the logs of instances with a process can grow; a stopped one's log is
        // checked again once it runs.
        let files: Vec<logs::Rotation> = self
            .units
            .values()
            .flat_map(|e| {
                e.instances
                    .iter()
                    .enumerate()
                    .filter(|(_, inst)| inst.pid.is_some())
                    .map(|(i, _)| logs::Rotation {
                        path: logs::log_path(&self.config.log_dir, &e.unit.name, i as u32),
                        max_size: e.unit.log_max_size,
                        keep: e.unit.log_keep,
                    })
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            logs::rotate_all(&files);
            // Hand memory freed since the last tick (a burst of spawns, a large status
            // reply) back to the system: glibc keeps freed pages otherwise, and corrald
            // is meant to stay small for months.
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim has no preconditions.
            unsafe {
                nix::libc::malloc_trim(0);
            }
        });
    }

    /// Runs after every message: starts what became startable, applies pending reload
    /// changes, answers waiters whose units settled, advances shutdown.
    fn settle(&mut self) {
        self.pump_starts();
        self.apply_pending();
        self.start_queued_runs();
        self.pump_shutdown();
        let now = Instant::now();
        for entry in self.units.values_mut() {
            match (entry.settled(), entry.settled_at) {
                (true, None) => entry.settled_at = Some(now),
                (false, Some(_)) => entry.settled_at = None,
                _ => {}
            }
        }
        let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| {
                w.units
                    .iter()
                    .all(|u| self.units.get(u).is_none_or(UnitEntry::settled))
            });
        self.waiters = waiting;
        for waiter in ready {
            self.fire(waiter);
        }
        let units = &self.units;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pid_waiters)
            .into_iter()
            .partition(|(unit, _)| {
                units
                    .get(unit)
                    .and_then(|e| e.instances.first())
                    .is_none_or(|i| i.pid.is_some() || !i.state.is_active())
            });
        self.pid_waiters = waiting;
        for (unit, reply) in ready {
            let pid = self
                .units
                .get(&unit)
                .and_then(|e| e.instances.first())
                .and_then(|i| i.pid)
                .map(|p| p as u32);
            let _ = reply.send(Ok(pid));
        }
        self.answer_start_waiters(now);
    }

    /// Answers the `start --wait` waiters whose instances have all started or failed;
    /// arms a [`Msg::Wake`] for the earliest start window still running.
    fn answer_start_waiters(&mut self, now: Instant) {
        if self.start_waiters.is_empty() {
            return;
        }
        let mut wake: Option<Instant> = None;
        let mut waiting = Vec::new();
        for mut waiter in std::mem::take(&mut self.start_waiters) {
            let mut pending = false;
            for name in &waiter.units {
                let Some(entry) = self.units.get(name) else {
                    waiter
                        .failed
                        .entry((name.clone(), 0))
                        .or_insert_with(|| StartFailure {
                            unit: name.clone(),
                            instance: 0,
                            reason: "the unit was removed (reload)".into(),
                            log: logs::log_path(&self.config.log_dir, name, 0),
                        });
                    continue;
                };
                for inst in &entry.instances {
                    let key = (name.clone(), inst.index);
                    if waiter.failed.contains_key(&key) {
                        continue;
                    }
                    match started::progress(entry.unit.kind, entry.unit.ready.is_some(), inst, now)
                    {
                        started::Progress::Done => {}
                        started::Progress::Pending(at) => {
                            pending = true;
                            if let Some(at) = at {
                                wake = Some(wake.map_or(at, |w| w.min(at)));
                            }
                        }
                        started::Progress::Failed(reason) => {
                            let log = logs::log_path(&self.config.log_dir, name, inst.index);
                            waiter.failed.insert(
                                key,
                                StartFailure {
                                    unit: name.clone(),
                                    instance: inst.index,
                                    reason,
                                    log,
                                },
                            );
                        }
                    }
                }
            }
            if pending {
                waiting.push(waiter);
            } else {
                let _ = waiter.reply.send(Ok(waiter.failed.into_values().collect()));
            }
        }
        self.start_waiters = waiting;
        if let Some(at) = wake {
            if self.wake_at.is_none_or(|w| w > at) {
                self.wake_at = Some(at);
                self.after(at.saturating_duration_since(now), Msg::Wake);
            }
        }
    }

    fn apply_pending(&mut self) {
        let mut to_start = Vec::new();
        let settled: Vec<String> = self
            .units
            .iter()
            .filter(|(_, e)| e.pending.is_some() && e.settled())
            .map(|(n, _)| n.clone())
            .collect();
        let applied = !settled.is_empty();
        for name in settled {
            let entry = self.units.get_mut(&name).expect("listed");
            match entry.pending.take() {
                Some(Pending::Remove) => {
                    self.units.remove(&name);
                }
                Some(Pending::Replace { unit, start }) => {
                    let mut fresh = UnitEntry::new(unit, false);
                    fresh.template = entry.template.take();
                    // Keep the history of instances that still exist.
                    for (old, new) in entry.instances.drain(..).zip(fresh.instances.iter_mut()) {
                        new.last_exit = old.last_exit;
                        new.state = old.state;
                        new.reason = old.reason;
                    }
                    *entry = fresh;
                    if start {
                        to_start.push(name);
                    }
                }
                None => {}
            }
        }
        if applied {
            self.sync_timers();
        }
        if !to_start.is_empty() {
            if let Err(e) = self.start_units(&to_start) {
                tracing::error!("reload: {e}");
            }
        }
    }

    fn fire(&mut self, waiter: Waiter) {
        match waiter.then {
            Then::ReplyUnits(reply, units) => {
                let _ = reply.send(Ok(UnitsResult { units }));
            }
            Then::StartThenReply(reply, units) => {
                let _ = reply.send(
                    self.refuse_if_shutting_down()
                        .and_then(|()| self.start_units(&units))
                        .map(|units| UnitsResult { units }),
                );
            }
            Then::ReplyWait(reply) => {
                let name = &waiter.units[0];
                let result = match self.units.get(name) {
                    Some(entry) => Ok(WaitResult {
                        unit: name.clone(),
                        instances: entry
                            .instances
                            .iter()
                            .map(|i| InstanceExit {
                                instance: i.index,
                                state: i.state,
                                exit: i.last_exit,
                                reason: i.reason.clone(),
                            })
                            .collect(),
                    }),
                    None => Err(ErrorBody::new(
                        ErrorCode::NotFound,
                        format!("unit `{name}` was removed while waiting"),
                    )),
                };
                let _ = reply.send(result);
            }
        }
    }

    fn after(&self, delay: Duration, msg: Msg) {
        crate::actor::after(&self.tx, delay, msg);
    }

    fn event(&self, unit: &str, instance: Option<u32>, kind: &'static str, detail: String) {
        crate::version::state_changed();
        tracing::info!(unit, instance, kind, "{detail}");
        self.store.event(Event {
            unit: Some(unit.to_owned()),
            instance,
            kind,
            detail,
        });
    }

    fn event_global(&self, kind: &'static str, detail: String) {
        crate::version::state_changed();
        tracing::info!(kind, "{detail}");
        self.store.event(Event {
            unit: None,
            instance: None,
            kind,
            detail,
        });
    }
}

/// `Some(reason)` when starting now would exceed the unit's start limit.
fn start_limit_hit(unit: &Unit, inst: &mut Instance) -> Option<String> {
    let now = Instant::now();
    while inst
        .recent_starts
        .front()
        .is_some_and(|t| now.duration_since(*t) > unit.start_limit_interval)
    {
        inst.recent_starts.pop_front();
    }
    (inst.recent_starts.len() >= unit.start_limit_burst as usize).then(|| {
        format!(
            "start limit hit: {} starts within {:?}; `corralctl start {}` tries again",
            inst.recent_starts.len(),
            unit.start_limit_interval,
            unit.name
        )
    })
}

/// `base * 2^failures`, capped at `max`.
fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// Sends `signal` to an instance's process group and, in cgroup mode, to every process
/// of its cgroup (those that left the group with `setsid` too); SIGKILL there is
/// `cgroup.kill`, which no process can escape by forking.
fn signal_instance(
    cgroups: Option<&cgroup::Cgroups>,
    unit: &str,
    index: u32,
    pid: i32,
    signal: Signal,
) {
    kill_group(pid, signal);
    let Some(cg) = cgroups else { return };
    if signal == Signal::SIGKILL {
        cg.kill(unit, index);
        return;
    }
    for member in cg.pids(unit, index) {
        match nix::sys::signal::kill(Pid::from_raw(member), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => tracing::warn!("kill({member}, {signal}): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(ms(100), ms(1000), 0), ms(100));
        assert_eq!(backoff(ms(100), ms(1000), 1), ms(200));
        assert_eq!(backoff(ms(100), ms(1000), 3), ms(800));
        assert_eq!(backoff(ms(100), ms(1000), 4), ms(1000));
        assert_eq!(backoff(ms(100), ms(1000), 200), ms(1000));
    }
}
