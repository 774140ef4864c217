//! The supervisor: owns every unit and instance, and is the only code that changes them.
//!
//! It is one tokio task (an actor) fed by one channel of [`Msg`]: client requests,
//! process events from the [process thread](crate::process), and its own timers. Nothing else
//! holds instance state, so there are no locks and every transition happens in one place.
//!
//! What happens to an instance is decided by the state machine in `machine.rs` (states
//! that carry their data, decisions that return effects); `effects.rs` carries the effects
//! out. The files beside this one follow the actor's concerns: `start.rs` (starts,
//! dependency gating, spawn outcomes, exits), `stop.rs`, `reload.rs` (and transient
//! units), `timers.rs` (scheduled units), `shutdown.rs` (the shutdown order), `settle.rs`
//! (the bookkeeping after every message), `probe.rs` (readiness, health, memory),
//! `adopt.rs` (recovery after a crash).
//!
//! Timers carry the instance's `generation` at the time they were armed; every
//! transition bumps it, so a stale timer (a restart delay for an instance that was stopped
//! meanwhile) is recognised and ignored.

mod adopt;
pub mod cgroup;
mod effects;
pub mod logs;
mod machine;
mod probe;
mod reload;
mod schedule;
mod settle;
mod shutdown;
mod start;
mod started;
mod stop;
mod timers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corral_config::{NotLoaded, Unit, UnitKind};
use corral_proto::{
    ErrorBody, ErrorCode, ExitStatus, PlanStep, ReloadResult, RunParent, ShutdownPlan,
    StatusResult, TimerStatus, TimersResult, UnitStatus, UnitsResult, WaitResult,
};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};

pub use crate::actor::Reply;
use crate::process::{
    Output, Owner, Owners, ProcEvent, ProcessThread, SpawnSpec, Spawned, kill_group,
};
use crate::store::{self, Event, Store};
use effects::signal_instance;
use machine::{Instance, SpawnOutcome, State, Wait, WaiterId, Waiters};
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
    Run(Box<Transient>, Reply<String>),
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
    /// A transient unit's parent program (`run`'s `parent`), for `status`.
    parent: Option<RunParent>,
}

/// A transient unit to add and start ([`Request::Run`]).
pub struct Transient {
    /// Its definition (an empty name: `run-N`).
    pub unit: Unit,
    /// Its stdout and stderr, passed by the client (instead of its log file).
    pub stdio: Option<[OwnedFd; 2]>,
    /// The program it was started for.
    pub parent: Option<RunParent>,
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
            parent: None,
        }
    }

    fn settled(&self) -> bool {
        self.instances.iter().all(|i| !i.is_active())
    }

    fn status(&self) -> UnitStatus {
        UnitStatus {
            name: self.unit.name.clone(),
            kind: kind_name(self.unit.kind).into(),
            daemon: self.unit.daemon,
            transient: self.transient,
            loaded: true,
            errors: Vec::new(),
            parent: self.parent.clone(),
            instances: {
                let now = Instant::now();
                self.instances.iter().map(|i| i.status(now)).collect()
            },
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
        parent: None,
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

/// What a process of the supervisor (or its spawn in flight) is for.
#[derive(Debug)]
enum Proc {
    /// Instance `index` of unit `unit`.
    Instance { unit: String, index: u32 },
    /// An `exec` probe: its state is in [`probe::Probes`], by this token.
    Probe { token: u64 },
}

/// The reply channel of a waiting request ([`machine::Waiters`] holds what it waits for).
enum WaiterReply {
    /// `stop` and `restart`.
    Units(Reply<UnitsResult>),
    /// `wait`.
    Exits(Reply<WaitResult>),
    /// `run`'s first pid.
    Pid(Reply<Option<u32>>),
    /// `start --wait`.
    Started(Reply<Vec<StartFailure>>),
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
    /// What each spawn in flight and each process is for: an instance or an `exec` probe.
    owners: Owners<Proc>,
    next_run_id: i64,
    next_transient: u64,
    /// Requests answered by a later change of state: what each waits for.
    waiters: Waiters,
    /// Their reply channels, by waiter.
    replies: HashMap<WaiterId, WaiterReply>,
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
            owners: Owners::default(),
            next_run_id,
            next_transient: 1,
            waiters: Waiters::default(),
            replies: HashMap::new(),
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
                Ok(()) => {
                    let failed = BTreeMap::new();
                    let wait = Wait::Started { units, failed };
                    self.wait_for(wait, WaiterReply::Started(reply));
                }
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
                self.wait_for(Wait::Stopped(units), WaiterReply::Units(reply));
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
                self.wait_for(Wait::Restart(units), WaiterReply::Units(reply));
            }
            Request::Wait(unit, reply) => {
                if !self.units.contains_key(&unit) {
                    let _ = reply.send(Err(self.unknown(&unit)));
                    return;
                }
                self.wait_for(Wait::Settled(unit), WaiterReply::Exits(reply));
            }
            Request::Reload(units, reply) => {
                let _ = reply.send(self.refuse_if_shutting_down().map(|()| self.reload(units)));
            }
            Request::Run(transient, reply) => {
                let _ = reply.send(
                    self.refuse_if_shutting_down()
                        .and_then(|()| self.run(*transient)),
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
                    for name in &units {
                        let count = self.units.get(name).map_or(0, |e| e.instances.len());
                        for index in 0..count as u32 {
                            self.decide(name, index, |inst, _, fx| inst.kill(signal, fx));
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
                    self.wait_for(Wait::FirstPid(unit), WaiterReply::Pid(reply));
                }
            }
            Request::Plan(reply) => {
                let _ = reply.send(Ok(self.plan()));
            }
            Request::WhoIs(pgids, reply) => {
                let owners = pgids.iter().map(|p| self.instance_of(*p)).collect();
                let _ = reply.send(Ok(owners));
            }
        }
    }

    /// The unit and instance whose process `pid` is, if it is an instance's.
    fn instance_of(&self, pid: i32) -> Option<(String, u32)> {
        match self.owners.pid(pid)? {
            Proc::Instance { unit, index } => Some((unit.clone(), *index)),
            Proc::Probe { .. } => None,
        }
    }

    /// Keeps a request waiting for `wait`; [`Waiters`] decides when it is answered.
    fn wait_for(&mut self, wait: Wait, reply: WaiterReply) {
        let id = self.waiters.add(wait);
        self.replies.insert(id, reply);
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
}
