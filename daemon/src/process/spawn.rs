//! Starting a process the way `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`, a few
//! raw system calls in the child, then `execve`.
//!
//! Why not `fork`: corrald's memory is shared copy-on-write with every forked child, so
//! each fork copies page tables, flushes TLBs on both cores and then takes a page fault
//! for every page either side writes before the `exec`. Profiled while starting 500
//! instances, that was over half of corrald's CPU time. A child that shares corrald's
//! memory (CLONE_VM) while corrald's process thread waits (CLONE_VFORK) costs none of it.
//! And why not `posix_spawn` itself: it cannot set resource limits, the umask, the
//! parent-death signal or drop privileges, which instances need.
//!
//! The price is the discipline of a vfork child. It runs on a stack of its own inside
//! corrald's memory, so it must not allocate, lock, or touch anything but the prepared
//! [`Plan`]: everything (paths, argv, envp, descriptors, credentials) is made ready
//! before the clone. It makes raw system calls only; glibc's `setuid` family is avoided
//! because in a process glibc believes to be multi-threaded it signals every thread.
//! All signals are blocked around the clone and the child resets caught signals to
//! their defaults before unblocking, so no corrald handler ever runs in the child.
//! A failure before the exec is written into the plan (shared memory) and the child
//! exits 127; the caller reaps it at once and reports the step that failed.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::libc::{self, c_int, c_void};

/// Everything the child does, prepared by the parent. Read by the child through a raw
/// pointer while the parent is suspended.
struct Plan {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// The variables of the request (the rest of `envp` points into the spawner).
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    dir: Option<CString>,
    /// `cgroup.procs` files to join (write "0") before anything else.
    cgroups: Vec<CString>,
    /// Sources of descriptors 0, 1 and 2; each is 3 or higher.
    stdio: [RawFd; 3],
    umask: Option<libc::mode_t>,
    limits: Vec<(c_int, libc::rlimit)>,
    groups: Option<Vec<libc::gid_t>>,
    gid: Option<libc::gid_t>,
    uid: Option<libc::uid_t>,
    die_with_parent: bool,
    parent: libc::pid_t,
    /// Written by the child when a step fails: (step, errno).
    failure: Option<(Step, c_int)>,
}

/// The step of the child's set-up that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Joining the instance's cgroup.
    Cgroup,
    /// Connecting stdin/stdout/stderr.
    Stdio,
    /// `setsid`.
    Session,
    /// `chdir` to the working directory.
    WorkingDir,
    /// `setrlimit`.
    Rlimit,
    /// `setgroups`, `setgid` or `setuid`.
    Credentials,
    /// `PR_SET_PDEATHSIG`.
    ParentDeathSignal,
    /// `execve`.
    Exec,
}

/// Credentials to switch to in the child (already looked up).
#[derive(Debug, Default)]
pub struct Ids {
    /// Supplementary groups.
    pub groups: Option<Vec<u32>>,
    /// Primary group.
    pub gid: Option<u32>,
    /// User.
    pub uid: Option<u32>,
}

/// What to start, in the parent's terms.
pub struct Request<'a> {
    /// The program as configured (a path, or a name looked up in `PATH`).
    pub program: &'a str,
    /// Arguments after the program.
    pub args: &'a [String],
    /// Variables set on top of corrald's own environment.
    pub env: &'a BTreeMap<String, String>,
    /// Working directory.
    pub dir: Option<&'a Path>,
    /// stdin, stdout, stderr.
    pub stdio: [&'a OwnedFd; 3],
    /// File-mode creation mask.
    pub umask: Option<u32>,
    /// `(RLIMIT_*, soft, hard)`.
    pub limits: Vec<(c_int, u64, u64)>,
    /// Credentials.
    pub ids: Ids,
    /// `PR_SET_PDEATHSIG` = SIGKILL.
    pub die_with_parent: bool,
    /// `cgroup.procs` files the child joins first.
    pub cgroups: &'a [PathBuf],
}

/// Why a process could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// The program was not found (in `PATH`, or at its path).
    NotFound,
    /// The program exists but is not executable.
    NotExecutable,
    /// A step of the child's set-up failed.
    Step(Step, io::Error),
    /// The arguments or environment contain a NUL byte, or cloning failed.
    Other(io::Error),
}

/// What stays the same from one spawn to the next.
pub struct Spawner {
    /// The stack the child runs on (reused: only one child is being started at a time).
    stack: Vec<u8>,
    /// corrald's own environment (it does not change): each variable's name (None if it
    /// is not UTF-8, so no request can override it) and its `KEY=VALUE`.
    base_env: Vec<(Option<String>, CString)>,
    /// corrald's own `PATH`, for requests that do not set one.
    base_path: Vec<u8>,
    /// Programs recently found in `PATH`: (name, PATH) → (path, when). A burst of starts
    /// of one program searches `PATH` once; an entry older than [`FOUND_TTL`] is looked up
    /// again (a program may have been installed earlier in `PATH`), and so is one whose
    /// exec fails.
    found: HashMap<(String, Vec<u8>), (CString, Instant)>,
}

const STACK: usize = 128 * 1024;

/// Variables of corrald's environment that speak of corrald alone, never passed on: the
/// service manager's protocol with its own service (readiness, watchdog, socket
/// activation), whose messages from an instance would be taken as corrald's, and
/// `JOURNAL_STREAM`, which names corrald's stderr (an instance's is its log file). A unit
/// may still set any of them in its `env`.
const NOT_INHERITED: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "JOURNAL_STREAM",
];

/// How long a `PATH` lookup is reused.
const FOUND_TTL: Duration = Duration::from_secs(1);

impl Default for Spawner {
    fn default() -> Self {
        let base_env = std::env::vars_os()
            .filter(|(k, _)| k.to_str().is_none_or(|k| !NOT_INHERITED.contains(&k)))
            .filter_map(|(k, v)| {
                let name = k.to_str().map(str::to_owned);
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                Some((name, CString::new(kv).ok()?))
            })
            .collect();
        let base_path = std::env::var_os("PATH").map_or_else(
            || b"/usr/local/bin:/usr/bin:/bin".to_vec(),
            |p| p.into_vec(),
        );
        Spawner {
            stack: vec![0; STACK],
            base_env,
            base_path,
            found: HashMap::new(),
        }
    }
}

impl Spawner {
    /// Starts `req`; returns the child's pid once it has exec'd.
    pub fn spawn(&mut self, req: &Request) -> Result<i32, SpawnError> {
        let path_var = req
            .env
            .get("PATH")
            .map_or_else(|| self.base_path.clone(), |p| p.as_bytes().to_vec());
        let key = (req.program.to_owned(), path_var);
        match self.start(req, &key) {
            // A program found earlier may have moved: look again before giving up.
            Err(SpawnError::NotFound) if self.found.remove(&key).is_some() => self.start(req, &key),
            other => other,
        }
    }

    fn start(&mut self, req: &Request, key: &(String, Vec<u8>)) -> Result<i32, SpawnError> {
        let path = match self.found.get(key) {
            Some((p, when)) if when.elapsed() < FOUND_TTL => p.clone(),
            _ => {
                let p = resolve(req.program, OsStr::from_bytes(&key.1))?;
                if !req.program.contains('/') {
                    if self.found.len() > 1000 {
                        self.found.clear();
                    }
                    self.found.insert(key.clone(), (p.clone(), Instant::now()));
                }
                p
            }
        };
        let cstr = |b: &[u8]| CString::new(b).map_err(|e| SpawnError::Other(io::Error::other(e)));
        let argv: Vec<CString> = std::iter::once(req.program.as_bytes())
            .chain(req.args.iter().map(|a| a.as_bytes()))
            .map(cstr)
            .collect::<Result<_, _>>()?;
        let extra: Vec<CString> = req
            .env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
            .collect::<Result<_, _>>()?;
        // Descriptors 0-2 are the targets; a source among them would be overwritten
        // before it is copied, so such a source is first moved above 2.
        let mut moved = Vec::new();
        let mut stdio = [0; 3];
        for (slot, fd) in stdio.iter_mut().zip(req.stdio) {
            let raw = fd.as_raw_fd();
            *slot = if raw > 2 {
                raw
            } else {
                let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
                    .map_err(|e| SpawnError::Other(e.into()))?;
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
                let copy = unsafe { OwnedFd::from_raw_fd(copy) };
                let raw = copy.as_raw_fd();
                moved.push(copy);
                raw
            };
        }
        let ptrs = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let envp_ptrs: Vec<*const libc::c_char> = self
            .base_env
            .iter()
            .filter(|(name, _)| name.as_ref().is_none_or(|n| !req.env.contains_key(n)))
            .map(|(_, kv)| kv.as_ptr())
            .chain(extra.iter().map(|kv| kv.as_ptr()))
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let mut plan = Plan {
            path,
            argv_ptrs: ptrs(&argv),
            _argv: argv,
            envp_ptrs,
            _envp: extra,
            dir: req
                .dir
                .map(|d| cstr(d.as_os_str().as_bytes()))
                .transpose()?,
            cgroups: req
                .cgroups
                .iter()
                .map(|p| cstr(p.as_os_str().as_bytes()))
                .collect::<Result<_, _>>()?,
            stdio,
            umask: req.umask.map(|m| m as libc::mode_t),
            limits: req
                .limits
                .iter()
                .map(|&(r, soft, hard)| {
                    (
                        r,
                        libc::rlimit {
                            rlim_cur: soft,
                            rlim_max: hard,
                        },
                    )
                })
                .collect(),
            groups: req.ids.groups.clone(),
            gid: req.ids.gid,
            uid: req.ids.uid,
            die_with_parent: req.die_with_parent,
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            failure: None,
        };
        // SAFETY: see the module's documentation. The plan and the stack outlive the
        // child's use of them: CLONE_VFORK suspends this thread until the child has
        // exec'd or exited. All signals are blocked meanwhile so that none of corrald's
        // handlers runs on the child's side.
        let pid = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let top = self.stack.as_mut_ptr().add(self.stack.len());
            let top = top.sub(top as usize % 16);
            let pid = libc::clone(
                child,
                top.cast::<c_void>(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&raw mut plan).cast::<c_void>(),
            );
            let clone_error = io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            if pid < 0 {
                return Err(SpawnError::Other(clone_error));
            }
            pid
        };
        drop(moved);
        if let Some((step, errno)) = plan.failure {
            // The child has exited (127); reap it here, before anyone else sees it.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            let e = io::Error::from_raw_os_error(errno);
            return Err(match (step, e.kind()) {
                (Step::Exec, io::ErrorKind::NotFound) => SpawnError::NotFound,
                (Step::Exec, io::ErrorKind::PermissionDenied) => SpawnError::NotExecutable,
                _ => SpawnError::Step(step, e),
            });
        }
        Ok(pid)
    }
}

/// The program's path: as given if it contains a `/`, else the first executable regular
/// file of that name in `path` (the child's `PATH`, searched as `execvp` would).
fn resolve(program: &str, path: &OsStr) -> Result<CString, SpawnError> {
    let found = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|e| SpawnError::Other(io::Error::other(e)))
    };
    if program.contains('/') {
        return found(Path::new(program));
    }
    if program.is_empty() {
        return Err(SpawnError::NotFound);
    }
    let mut seen = false;
    for dir in std::env::split_paths(path) {
        let candidate: PathBuf = dir.join(program);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        seen = true;
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok() {
            return found(&candidate);
        }
    }
    Err(if seen {
        SpawnError::NotExecutable
    } else {
        SpawnError::NotFound
    })
}

/// The child: set-up, then exec. Runs on the spawner's stack in corrald's memory.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `Plan`, alive and untouched while the parent waits.
    let plan = unsafe { &mut *arg.cast::<Plan>() };
    // SAFETY: only raw system calls on prepared data (see the module's documentation).
    let (step, errno) = unsafe { set_up_and_exec(plan) };
    // Volatile: the parent reads it after the child is gone, which the compiler cannot see.
    // SAFETY: `plan` is valid for writes (see above).
    unsafe { std::ptr::write_volatile(&raw mut plan.failure, Some((step, errno))) };
    // SAFETY: _exit is async-signal-safe and runs no atexit handlers of corrald's.
    unsafe { libc::_exit(127) }
}

/// Returns only on failure: the step and its errno.
unsafe fn set_up_and_exec(plan: &Plan) -> (Step, c_int) {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY (whole function): raw system calls on memory prepared by the parent.
    unsafe {
        // No handler of corrald's may run here: caught signals go back to their default
        // (ignored ones stay ignored, as across any exec), and SIGPIPE, which the Rust
        // runtime ignores, to its default as std::process::Command does.
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if sig == libc::SIGPIPE || old.sa_sigaction != libc::SIG_IGN {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        // Into the instance's cgroup before anything it starts can exist.
        for procs in &plan.cgroups {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return (Step::Cgroup, errno());
            }
            let written = libc::write(fd, c"0".as_ptr().cast(), 1);
            let e = errno();
            libc::close(fd);
            if written != 1 {
                return (Step::Cgroup, e);
            }
        }
        for (target, &source) in plan.stdio.iter().enumerate() {
            if libc::dup2(source, target as c_int) < 0 {
                return (Step::Stdio, errno());
            }
        }
        if libc::setsid() < 0 {
            return (Step::Session, errno());
        }
        if let Some(dir) = &plan.dir {
            if libc::chdir(dir.as_ptr()) != 0 {
                return (Step::WorkingDir, errno());
            }
        }
        if let Some(mask) = plan.umask {
            libc::umask(mask);
        }
        for (resource, limit) in &plan.limits {
            if libc::setrlimit(*resource as _, limit) != 0 {
                return (Step::Rlimit, errno());
            }
        }
        if let Some(groups) = &plan.groups {
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
                return (Step::Credentials, errno());
            }
        }
        if let Some(gid) = plan.gid {
            if libc::syscall(libc::SYS_setgid, gid) != 0 {
                return (Step::Credentials, errno());
            }
        }
        if let Some(uid) = plan.uid {
            if libc::syscall(libc::SYS_setuid, uid) != 0 {
                return (Step::Credentials, errno());
            }
        }
        // Last: a change of credentials clears the parent-death signal.
        if plan.die_with_parent {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return (Step::ParentDeathSignal, errno());
            }
            // corrald may have died before the prctl.
            if libc::getppid() != plan.parent {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(
            plan.path.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        (Step::Exec, errno())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::Pid;

    fn null() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn start(
        program: &str,
        args: &[&str],
        dir: Option<&Path>,
        limits: Vec<(c_int, u64, u64)>,
        out: &OwnedFd,
    ) -> Result<i32, SpawnError> {
        let (stdin, err) = (null(), null());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = BTreeMap::from([("CORRAL_TEST".to_string(), "yes".to_string())]);
        Spawner::default().spawn(&Request {
            program,
            args: &args,
            env: &env,
            dir,
            stdio: [&stdin, out, &err],
            umask: Some(0o077),
            limits,
            ids: Ids::default(),
            die_with_parent: false,
            cgroups: &[],
        })
    }

    fn exit_code(pid: i32) -> i32 {
        match waitpid(Pid::from_raw(pid), None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn runs_the_program_with_its_environment_directory_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out");
        let out: OwnedFd = std::fs::File::create(&out_path).unwrap().into();
        let pid = start(
            "sh",
            &["-c", "echo $CORRAL_TEST; pwd; umask; ulimit -n; exit 3"],
            Some(dir.path()),
            vec![(libc::RLIMIT_NOFILE as c_int, 77, 77)],
            &out,
        )
        .unwrap();
        assert_eq!(exit_code(pid), 3);
        let text = std::fs::read_to_string(&out_path).unwrap();
        let dir = dir.path().canonicalize().unwrap();
        assert_eq!(text, format!("yes\n{}\n0077\n77\n", dir.display()));
    }

    #[test]
    fn a_source_among_descriptors_0_to_2_is_moved_before_it_is_copied() {
        // The test's own stdout (descriptor 1) as the child's stderr: copied in order
        // 0, 1, 2, it would be overwritten by the child's stdout before reaching 2.
        // SAFETY: descriptor 1 stays open; ManuallyDrop keeps it from being closed here.
        let stdout = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(1) });
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("seen");
        let out: OwnedFd = std::fs::File::create(&seen).unwrap().into();
        let stdin = null();
        let args = vec!["-c".to_string(), "readlink /proc/$$/fd/2".to_string()];
        let pid = Spawner::default()
            .spawn(&Request {
                program: "sh",
                args: &args,
                env: &BTreeMap::new(),
                dir: None,
                stdio: [&stdin, &out, &stdout],
                umask: None,
                limits: vec![],
                ids: Ids::default(),
                die_with_parent: false,
                cgroups: &[],
            })
            .unwrap();
        assert_eq!(exit_code(pid), 0);
        let ours = std::fs::read_link("/proc/self/fd/1").unwrap();
        let theirs = std::fs::read_to_string(&seen).unwrap();
        assert_eq!(theirs.trim_end(), ours.to_str().unwrap());
    }

    #[test]
    fn a_program_found_in_path_is_looked_up_again_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let script = |dir: &Path, code: i32| {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join("corral-test-prog");
            std::fs::write(&path, format!("#!/bin/sh\nexit {code}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let env = BTreeMap::from([(
            "PATH".to_string(),
            format!("{}:{}", a.display(), b.display()),
        )]);
        let (stdin, out, err) = (null(), null(), null());
        let mut spawner = Spawner::default();
        let mut run = || {
            let pid = spawner.spawn(&Request {
                program: "corral-test-prog",
                args: &[],
                env: &env,
                dir: None,
                stdio: [&stdin, &out, &err],
                umask: None,
                limits: vec![],
                ids: Ids::default(),
                die_with_parent: false,
                cgroups: &[],
            });
            pid.map(exit_code)
        };
        let first = script(&a, 3);
        assert_eq!(run().unwrap(), 3);
        // Moved to the next directory of PATH within the reuse window: found there.
        std::fs::remove_file(first).unwrap();
        script(&b, 4);
        assert_eq!(run().unwrap(), 4);
    }

    #[test]
    fn each_failure_names_the_step_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let out = null();
        assert!(matches!(
            start("no-such-program-here", &[], None, vec![], &out),
            Err(SpawnError::NotFound)
        ));
        assert!(matches!(
            start("/nonexistent/program", &[], None, vec![], &out),
            Err(SpawnError::NotFound)
        ));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "not a program").unwrap();
        assert!(matches!(
            start(plain.to_str().unwrap(), &[], None, vec![], &out),
            Err(SpawnError::NotExecutable)
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            start("true", &[], Some(&missing), vec![], &out),
            Err(SpawnError::Step(Step::WorkingDir, _))
        ));
        // A soft limit above the hard one is refused by setrlimit.
        assert!(matches!(
            start(
                "true",
                &[],
                None,
                vec![(libc::RLIMIT_NOFILE as c_int, 10, 5)],
                &out
            ),
            Err(SpawnError::Step(Step::Rlimit, _))
        ));
    }
}
