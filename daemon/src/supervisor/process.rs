//! The process thread: the one place that forks and the one place that reaps.
//!
//! Two facts shape this module:
//! - `PR_SET_PDEATHSIG` fires when the *thread* that forked a child exits, so
//!   `daemon = true` instances must be forked by a thread that lives as long as
//!   corrald. This thread never exits.
//! - corrald is a child subreaper and reaps with `waitpid(-1)`. `std::process::Command`
//!   itself calls `waitpid(pid)` on a child whose `exec` failed; if another thread
//!   reaped that child first, std would panic. Doing spawns and reaping on the same
//!   thread rules that race out, and no tokio `process::Child` exists to race either.
//!
//! Spawn results and exit statuses leave this thread on one channel, in the order they
//! happened, so the supervisor always learns a pid before it learns that pid's exit.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use corral_config::{Rlimit, Rlimits};
use corral_proto::ExitStatus;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Gid, Pid, Uid};

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
}

/// Who a process belongs to: its spawn result and exit go to that owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A unit instance (and orphaned grandchildren, which nobody owns).
    Supervisor,
    /// A pool item or worker.
    Pool,
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
    let mut owners: HashMap<i32, Owner> = HashMap::new();
    let mut buf = [0u8; 256];
    loop {
        // Reap first: a SIGCHLD may have arrived before the handler was registered.
        reap_all(&mut owners, &events);
        while let Ok(job) = jobs.try_recv() {
            let result = spawn(&job.spec);
            if let Ok(s) = &result {
                owners.insert(s.pid, job.spec.owner);
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

fn reap_all(owners: &mut HashMap<i32, Owner>, events: &impl Fn(Owner, ProcEvent)) {
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
        let owner = owners.remove(&pid).unwrap_or(Owner::Supervisor);
        events(owner, ProcEvent::Exited { pid, status });
    }
}

/// Credentials resolved before fork: name lookups are not async-signal-safe.
struct Credentials {
    uid: Option<Uid>,
    gid: Option<Gid>,
    groups: Option<Vec<Gid>>,
}

fn resolve_credentials(spec: &SpawnSpec) -> Result<Credentials, String> {
    let mut creds = Credentials {
        uid: None,
        gid: None,
        groups: None,
    };
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
        creds.groups = Some(
            nix::unistd::getgrouplist(&cname, user.gid)
                .map_err(|e| format!("cannot list the groups of `{name}`: {e}"))?,
        );
        creds.uid = Some(user.uid);
        creds.gid = Some(user.gid);
    }
    if let Some(name) = &spec.group {
        let found = match name.parse::<u32>() {
            Ok(gid) => nix::unistd::Group::from_gid(Gid::from_raw(gid)),
            Err(_) => nix::unistd::Group::from_name(name),
        };
        let group = found
            .map_err(|e| format!("cannot look up group `{name}`: {e}"))?
            .ok_or_else(|| format!("group `{name}` does not exist"))?;
        creds.gid = Some(group.gid);
        if creds.groups.is_none() {
            creds.groups = Some(vec![group.gid]);
        }
    }
    if (creds.uid.is_some() || creds.gid.is_some()) && !Uid::effective().is_root() {
        let wanted = creds.uid.is_none_or(|u| u == Uid::effective())
            && creds.gid.is_none_or(|g| g == Gid::effective());
        if !wanted {
            return Err("`user`/`group` need corrald to run as root".into());
        }
        // Already the requested identity: nothing to change, and no privilege to do it.
        return Ok(Credentials {
            uid: None,
            gid: None,
            groups: None,
        });
    }
    Ok(creds)
}

fn spawn(spec: &SpawnSpec) -> Result<Spawned, String> {
    let (program, args) = spec.argv.split_first().ok_or("empty command")?;
    if let Some(dir) = &spec.working_dir {
        if !dir.is_dir() {
            return Err(format!("working_dir {} does not exist", dir.display()));
        }
    }
    let creds = resolve_credentials(spec)?;
    let append = |path: &PathBuf| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    let fresh = |path: &PathBuf| {
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o640)
            .open(path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))
    };
    let (stdin, stdout, stderr) = match &spec.output {
        Output::Log(path) => {
            let log = append(path)?;
            let dup = log
                .try_clone()
                .map_err(|e| format!("cannot duplicate log fd: {e}"))?;
            (Stdio::null(), Stdio::from(log), Stdio::from(dup))
        }
        Output::Files { stdout, stderr } => (
            Stdio::null(),
            Stdio::from(fresh(stdout)?),
            Stdio::from(fresh(stderr)?),
        ),
        Output::Pipes { stderr } => (Stdio::piped(), Stdio::piped(), Stdio::from(append(stderr)?)),
    };

    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(&spec.env)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    let limits = rlimit_list(&spec.rlimits);
    let umask = spec.umask;
    let die_with_parent = spec.die_with_parent;
    let plain = limits.is_empty()
        && umask.is_none()
        && creds.uid.is_none()
        && creds.gid.is_none()
        && creds.groups.is_none()
        && !die_with_parent;
    if spec.owner == Owner::Pool && plain {
        // Pool items need no set-up between fork and exec beyond a process group of their
        // own, which lets std use posix_spawn (vfork-fast) instead of fork.
        cmd.process_group(0);
        return finish_spawn(cmd, program);
    }
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes raw syscalls
    // (no allocation, no locks): setsid, umask, setrlimit, setgroups, setgid,
    // setuid, prctl, getppid, kill.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if let Some(mask) = umask {
                nix::sys::stat::umask(Mode::from_bits_truncate(mask));
            }
            for (resource, limit) in &limits {
                setrlimit(*resource, limit.soft, limit.hard)?;
            }
            if let Some(groups) = &creds.groups {
                nix::unistd::setgroups(groups)?;
            }
            if let Some(gid) = creds.gid {
                nix::unistd::setgid(gid)?;
            }
            if let Some(uid) = creds.uid {
                nix::unistd::setuid(uid)?;
            }
            // Last: a change of credentials clears the parent-death signal.
            if die_with_parent {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // corrald may have died between fork and prctl.
                if nix::unistd::getppid() != parent {
                    nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGKILL)?;
                }
            }
            Ok(())
        });
    }
    finish_spawn(cmd, program)
}

fn finish_spawn(mut cmd: Command, program: &str) -> Result<Spawned, String> {
    let mut child = cmd.spawn().map_err(|e| describe_spawn_error(program, &e))?;
    let pid = child.id() as i32;
    let pipes = match (child.stdin.take(), child.stdout.take()) {
        (Some(stdin), Some(stdout)) => Some((OwnedFd::from(stdin), OwnedFd::from(stdout))),
        _ => None,
    };
    // Dropping a std Child neither kills nor reaps it; this thread reaps.
    drop(child);
    let start_time = process_start_time(pid).unwrap_or(0);
    Ok(Spawned {
        pid,
        start_time,
        pipes,
    })
}

fn describe_spawn_error(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::NotFound => format!("command not found: {program}"),
        ErrorKind::PermissionDenied => format!("permission denied executing {program}"),
        _ => format!("cannot start {program}: {e}"),
    }
}

fn rlimit_list(limits: &Rlimits) -> Vec<(Resource, Rlimit)> {
    [
        (Resource::RLIMIT_NOFILE, limits.nofile),
        (Resource::RLIMIT_NPROC, limits.nproc),
        (Resource::RLIMIT_CORE, limits.core),
        (Resource::RLIMIT_MEMLOCK, limits.memlock),
        (Resource::RLIMIT_AS, limits.r#as),
    ]
    .into_iter()
    .filter_map(|(resource, limit)| limit.map(|l| (resource, l)))
    .collect()
}

/// The start time of `pid` in clock ticks since boot, from `/proc/PID/stat`.
pub fn process_start_time(pid: i32) -> Option<u64> {
    ProcStat::read(pid).map(|s| s.start_time)
}

/// The fields of `/proc/PID/stat` that corrald uses. The one parser of that file.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    /// State letter (`Z` for a zombie).
    pub state: char,
    /// Process group.
    pub pgrp: i32,
    /// User and system CPU time, clock ticks.
    pub cpu_ticks: u64,
    /// Start time, clock ticks since boot.
    pub start_time: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
}

impl ProcStat {
    /// Reads `/proc/PID/stat`; None if the process is gone.
    pub fn read(pid: i32) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        // `f[0]` is field 3 (state): pgrp is field 5, utime 14, stime 15, starttime 22, rss 24.
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        Some(ProcStat {
            state: f.first()?.chars().next()?,
            pgrp: f.get(2)?.parse().ok()?,
            cpu_ticks: num(11)? + num(12)?,
            start_time: num(19)?,
            rss_pages: num(21)?,
        })
    }
}
