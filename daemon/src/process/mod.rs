//! The process service, shared by the supervisor and the pool: the process thread (the
//! one place that starts processes and the one place that reaps), the spawner, group
//! signalling ([`kill_group`]) and [`Owners`], by which each owner of processes (this
//! thread, the supervisor, the pool) matches a spawn's outcome (by token) and an exit
//! (by pid) to what it started.
//!
//! Two facts shape this module:
//! - `PR_SET_PDEATHSIG` fires when the *thread* that started a child exits, so
//!   `daemon = true` instances must be started by a thread that lives as long as
//!   corrald. This thread never exits.
//! - corrald is a child subreaper and reaps with `waitpid(-1)`. A process whose set-up
//!   or exec failed must be reaped by whoever started it, before anyone else sees its
//!   exit; doing spawns and reaping on the same thread rules that race out.
//!
//! Processes are started by the `spawn` module (a vfork-style clone, not fork).
//! Spawn results and exit statuses leave this thread on one channel, in the order they
//! happened, so the supervisor always learns a pid before it learns that pid's exit.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;

use corral_config::Rlimits;
use corral_proto::ExitStatus;
use nix::libc;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid};

mod owners;
mod spawn;

use crate::procstat::process_start_time;
pub use owners::Owners;
use spawn::{SpawnError, Spawner};

/// Everything needed to start one instance.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    /// Program and arguments, placeholders already substituted.
    pub argv: Vec<String>,
    /// Variables added to corrald's own environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<PathBuf>,
    /// Where stdout and stderr go.
    pub output: Output,
    /// Who hears about this process's spawn and exit.
    pub owner: Owner,
    /// File-mode creation mask.
    pub umask: Option<u32>,
    /// Resource limits.
    pub rlimits: Rlimits,
    /// Run as this user (name).
    pub user: Option<String>,
    /// Run with this primary group (name).
    pub group: Option<String>,
    /// Die with corrald (`PR_SET_PDEATHSIG` = SIGKILL).
    pub die_with_parent: bool,
    /// `cgroup.procs` files the child joins before `exec` (empty: none).
    pub cgroups: Vec<PathBuf>,
}

/// Where a process's output goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// stdout and stderr appended to one log file (instances: it outlives corrald).
    Log(PathBuf),
    /// stdout and stderr each into its own fresh file (pool items in exec mode).
    Files {
        /// stdout file (truncated first).
        stdout: PathBuf,
        /// stderr file (truncated first).
        stderr: PathBuf,
    },
    /// stdin and stdout are pipes to corrald, stderr is appended to a log file
    /// (pool workers in stream mode).
    Pipes {
        /// stderr log file.
        stderr: PathBuf,
    },
    /// stdout and stderr are descriptors a client passed (`run` with `stdio_fds`):
    /// the process writes where its client writes, and corrald logs nothing of it.
    Passed(std::sync::Arc<[OwnedFd; 2]>),
}

/// Who a process belongs to: its spawn result and exit go to that owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A unit instance (and orphaned grandchildren, which nobody owns).
    Supervisor,
    /// A pool item or worker.
    Pool,
    /// An item of a pool job shared by the nodes of a backend (`pool::nodes`).
    Cluster,
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process-group and session id.
    pub pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22): with the pid,
    /// it identifies the process across pid reuse.
    pub start_time: u64,
    /// With [`Output::Pipes`]: the write end of its stdin and the read end of its stdout.
    pub pipes: Option<(OwnedFd, OwnedFd)>,
}

/// What the process thread reports.
#[derive(Debug)]
pub enum ProcEvent {
    /// The outcome of a [`ProcessThread::spawn`] with this token.
    Spawned {
        /// The token given to `spawn`.
        token: u64,
        /// The process, or why it could not be started.
        result: Result<Spawned, String>,
    },
    /// A child of corrald (an instance, or an orphan re-parented to us) was reaped.
    Exited {
        /// The reaped pid.
        pid: i32,
        /// How it ended.
        status: ExitStatus,
    },
}

struct Job {
    token: u64,
    spec: SpawnSpec,
}

/// Handle to the process thread.
#[derive(Clone)]
pub struct ProcessThread {
    jobs: mpsc::Sender<Job>,
    waker: std::sync::Arc<UnixStream>,
}

impl ProcessThread {
    /// Starts the thread. Events go to `events` with the owner of the process concerned.
    pub fn start(
        events: impl Fn(Owner, ProcEvent) + Send + 'static,
    ) -> std::io::Result<ProcessThread> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGCHLD, wake_tx.try_clone()?)?;
        let (jobs, job_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("corral-process".into())
            .spawn(move || run(wake_rx, job_rx, events))?;
        Ok(ProcessThread {
            jobs,
            waker: std::sync::Arc::new(wake_tx),
        })
    }

    /// Asks the thread to start a process; the outcome arrives as [`ProcEvent::Spawned`].
    pub fn spawn(&self, token: u64, spec: SpawnSpec) {
        if self.jobs.send(Job { token, spec }).is_ok() {
            self.wake();
        }
    }

    fn wake(&self) {
        // A full socket buffer means a wake-up is already pending, so WouldBlock is fine.
        match (&*self.waker).write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => tracing::error!("cannot wake the process thread: {e}"),
        }
    }
}

fn run(mut wake_rx: UnixStream, jobs: mpsc::Receiver<Job>, events: impl Fn(Owner, ProcEvent)) {
    let mut owners: Owners<Owner> = Owners::default();
    let mut starter = match Starter::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("process thread cannot open /dev/null: {e}");
            return;
        }
    };
    let mut buf = [0u8; 256];
    loop {
        // Reap first: a SIGCHLD may have arrived before the handler was registered.
        reap_all(&mut owners, &events);
        while let Ok(job) = jobs.try_recv() {
            let result = starter.spawn(&job.spec);
            if let Ok(s) = &result {
                owners.running(s.pid, job.spec.owner);
            }
            events(
                job.spec.owner,
                ProcEvent::Spawned {
                    token: job.token,
                    result,
                },
            );
        }
        match wake_rx.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!("process thread cannot wait for work: {e}");
                return;
            }
        }
    }
}

fn reap_all(owners: &mut Owners<Owner>, events: &impl Fn(Owner, ProcEvent)) {
    loop {
        let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (
                pid,
                ExitStatus {
                    code: Some(code),
                    signal: None,
                },
            ),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (
                pid,
                ExitStatus {
                    code: None,
                    signal: Some(sig as i32),
                },
            ),
            Ok(WaitStatus::StillAlive) => return,
            Ok(_) => continue, // stopped/continued: not an exit
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return, // ECHILD: no children at all
        };
        let pid = pid.as_raw();
        let owner = owners.exited(pid).unwrap_or(Owner::Supervisor);
        events(owner, ProcEvent::Exited { pid, status });
    }
}

/// The credentials to switch to, looked up before the clone: name lookups are not
/// async-signal-safe.
fn resolve_credentials(spec: &SpawnSpec) -> Result<spawn::Ids, String> {
    let mut ids = spawn::Ids::default();
    if let Some(name) = &spec.user {
        let found = match name.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(Uid::from_raw(uid)),
            Err(_) => nix::unistd::User::from_name(name),
        };
        let user = found
            .map_err(|e| format!("cannot look up user `{name}`: {e}"))?
            .ok_or_else(|| format!("user `{name}` does not exist"))?;
        let cname =
            CString::new(user.name.as_str()).map_err(|_| format!("bad user name `{name}`"))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map_err(|e| format!("cannot list the groups of `{name}`: {e}"))?;
        ids.groups = Some(groups.into_iter().map(Gid::as_raw).collect());
        ids.uid = Some(user.uid.as_raw());
        ids.gid = Some(user.gid.as_raw());
    }
    if let Some(name) = &spec.group {
        let found = match name.parse::<u32>() {
            Ok(gid) => nix::unistd::Group::from_gid(Gid::from_raw(gid)),
            Err(_) => nix::unistd::Group::from_name(name),
        };
        let group = found
            .map_err(|e| format!("cannot look up group `{name}`: {e}"))?
            .ok_or_else(|| format!("group `{name}` does not exist"))?;
        ids.gid = Some(group.gid.as_raw());
        ids.groups.get_or_insert_with(|| vec![group.gid.as_raw()]);
    }
    if (ids.uid.is_some() || ids.gid.is_some()) && !Uid::effective().is_root() {
        let wanted = ids.uid.is_none_or(|u| u == Uid::effective().as_raw())
            && ids.gid.is_none_or(|g| g == Gid::effective().as_raw());
        if !wanted {
            return Err("`user`/`group` need corrald to run as root".into());
        }
        // Already the requested identity: nothing to change, and no privilege to do it.
        return Ok(spawn::Ids::default());
    }
    Ok(ids)
}

/// State of the process thread kept between spawns.
struct Starter {
    spawner: Spawner,
    devnull: OwnedFd,
}

impl Starter {
    fn new() -> std::io::Result<Starter> {
        Ok(Starter {
            spawner: Spawner::default(),
            devnull: OpenOptions::new().read(true).open("/dev/null")?.into(),
        })
    }

    fn spawn(&mut self, spec: &SpawnSpec) -> Result<Spawned, String> {
        let (program, args) = spec.argv.split_first().ok_or("empty command")?;
        if let Some(dir) = &spec.working_dir {
            if !dir.is_dir() {
                return Err(format!("working_dir {} does not exist", dir.display()));
            }
        }
        let ids = resolve_credentials(spec)?;
        // Instance logs are appended to; a pool item's output files start empty.
        // Descriptors held back for this (see `fds`): clients holding every other one
        // must not stop an instance from being restarted.
        crate::fds::refill();
        let open = |path: &PathBuf, append: bool| {
            crate::fds::with_reserve(|| {
                OpenOptions::new()
                    .create(true)
                    .append(append)
                    .write(true)
                    .truncate(!append)
                    .mode(0o640)
                    .open(path)
            })
            .map(OwnedFd::from)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
        };
        let append = |path: &PathBuf| open(path, true);
        let fresh = |path: &PathBuf| open(path, false);
        let pipe = || {
            crate::fds::with_reserve(|| {
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
            })
            .map_err(|e| format!("cannot create a pipe: {e}"))
        };
        // (child's stdin, stdout, stderr) and, for pipes, the parent's ends.
        let (stdin, stdout, stderr, ours) = match &spec.output {
            Output::Log(path) => {
                let log = append(path)?;
                let dup = crate::fds::with_reserve(|| log.try_clone())
                    .map_err(|e| format!("cannot duplicate log fd: {e}"))?;
                (None, log, dup, None)
            }
            Output::Files { stdout, stderr } => (None, fresh(stdout)?, fresh(stderr)?, None),
            Output::Passed(fds) => {
                let copy = |fd: &OwnedFd| {
                    fd.try_clone()
                        .map_err(|e| format!("cannot duplicate a passed descriptor: {e}"))
                };
                (None, copy(&fds[0])?, copy(&fds[1])?, None)
            }
            Output::Pipes { stderr } => {
                let (child_in, our_in) = pipe()?;
                let (our_out, child_out) = pipe()?;
                (
                    Some(child_in),
                    child_out,
                    append(stderr)?,
                    Some((our_in, our_out)),
                )
            }
        };
        let request = spawn::Request {
            program,
            args,
            env: &spec.env,
            dir: spec.working_dir.as_deref(),
            stdio: [stdin.as_ref().unwrap_or(&self.devnull), &stdout, &stderr],
            umask: spec.umask,
            limits: rlimit_list(&spec.rlimits),
            ids,
            die_with_parent: spec.die_with_parent,
            cgroups: &spec.cgroups,
        };
        let pid = self
            .spawner
            .spawn(&request)
            .map_err(|e| describe_spawn_error(program, e))?;
        // Only instances are adopted after a restart, by pid and start time.
        let start_time = match spec.owner {
            Owner::Supervisor => process_start_time(pid).unwrap_or(0),
            Owner::Pool | Owner::Cluster => 0,
        };
        Ok(Spawned {
            pid,
            start_time,
            pipes: ours,
        })
    }
}

fn describe_spawn_error(program: &str, e: SpawnError) -> String {
    match e {
        SpawnError::NotFound => format!("command not found: {program}"),
        SpawnError::NotExecutable => format!("permission denied executing {program}"),
        SpawnError::Step(step, e) => format!("cannot start {program}: {step:?} failed: {e}"),
        SpawnError::Other(e) => format!("cannot start {program}: {e}"),
    }
}

fn rlimit_list(limits: &Rlimits) -> Vec<(libc::c_int, u64, u64)> {
    [
        (libc::RLIMIT_NOFILE, limits.nofile),
        (libc::RLIMIT_NPROC, limits.nproc),
        (libc::RLIMIT_CORE, limits.core),
        (libc::RLIMIT_MEMLOCK, limits.memlock),
        (libc::RLIMIT_AS, limits.r#as),
    ]
    .into_iter()
    .filter_map(|(resource, limit)| limit.map(|l| (resource as libc::c_int, l.soft, l.hard)))
    .collect()
}

/// Sends `signal` to a whole process group; a group that is already gone is not an error.
pub fn kill_group(pgid: i32, signal: Signal) {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!("killpg({pgid}, {signal}): {e}"),
    }
}
