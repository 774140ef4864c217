//! Test support: [`TestDaemon`] runs the real `corrald` binary in a temp dir.
//!
//! Each daemon gets its own directory (units, state, logs, socket), is ready when its
//! socket answers `hello` (never after a fixed sleep), and is shut down on drop: SIGTERM
//! and a wait for a clean exit, then SIGKILL. Nothing is shared between tests, so they
//! run in parallel.
//!
//! The binaries are taken from the target directory this test was built into; build
//! them first (`scripts/test` does: `cargo build --workspace --bins`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_client::Client;

mod netns;
mod pg;
pub use netns::NetLab;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
pub use pg::{Backend, BackendDaemon, PG_PASSWORD, PgCluster, pg_bin_dir};

/// Generous deadline for anything a test waits for: CI runs on 2 busy cores.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Path of a binary built from this workspace.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/e2e-HASH -> target/debug/NAME
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, or run scripts/test)",
        path.display()
    );
    path
}

/// Polls `check` until it returns `Some`, failing the test with `what` after [`DEADLINE`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A corrald running in its own temp dir.
pub struct TestDaemon {
    /// The temp dir holding everything.
    pub dir: tempfile::TempDir,
    /// Extra arguments passed to corrald.
    pub extra_args: Vec<String>,
    /// `--http` value (default `off`).
    pub http: String,
    /// A program and arguments that corrald and `ctl`'s corralctl run under, which must
    /// exec them in place (`ip netns exec NS`, for [`NetLab`]); empty by default.
    pub wrapper: Vec<String>,
    child: Option<Child>,
}

impl TestDaemon {
    /// A daemon directory with no units; call [`TestDaemon::start`] after writing units.
    pub fn new() -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("corral-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("units")).expect("units dir");
        TestDaemon {
            dir,
            extra_args: Vec::new(),
            http: "off".into(),
            wrapper: Vec::new(),
            child: None,
        }
    }

    /// Writes `units/NAME.toml`.
    pub fn unit(&self, name: &str, text: &str) -> &Self {
        std::fs::write(self.units_dir().join(format!("{name}.toml")), text).expect("write unit");
        self
    }

    /// Removes `units/NAME.toml`.
    pub fn remove_unit(&self, name: &str) {
        std::fs::remove_file(self.units_dir().join(format!("{name}.toml"))).expect("remove unit");
    }

    /// The directory of unit files.
    pub fn units_dir(&self) -> PathBuf {
        self.dir.path().join("units")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The instance-log directory.
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir().join("logs")
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("corral.sock")
    }

    /// A path inside the temp dir, for files the test's processes write.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The command that starts corrald on this directory.
    pub fn command(&self) -> Command {
        let mut cmd = self.wrapped(bin("corrald"));
        cmd.arg("--units")
            .arg(self.units_dir())
            .arg("--state")
            .arg(self.state_dir())
            .arg("--socket")
            .arg(self.socket())
            .args(["--http", &self.http])
            .args(&self.extra_args)
            .env_remove("CORRAL_SOCKET")
            .env("CORRAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path("corrald.stderr"))
                    .expect("stderr file"),
            );
        cmd
    }

    /// A command for `program`, under [`TestDaemon::wrapper`] if there is one.
    fn wrapped(&self, program: PathBuf) -> Command {
        match self.wrapper.split_first() {
            None => Command::new(program),
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
        }
    }

    /// Starts corrald and waits until its socket answers `hello`.
    pub fn start(&mut self) -> &mut Self {
        self.start_with(|_| {})
    }

    /// Like [`TestDaemon::start`], with the command adjusted first (environment, limits).
    pub fn start_with(&mut self, adjust: impl FnOnce(&mut Command)) -> &mut Self {
        assert!(self.child.is_none(), "already running");
        let mut command = self.command();
        adjust(&mut command);
        let child = command.spawn().expect("spawn corrald");
        self.child = Some(child);
        let socket = self.socket();
        wait_for("corrald to answer hello", || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "corrald exited during start-up ({status}): {}",
                    self.stderr()
                );
            }
            Client::connect_to(&socket).ok()
        });
        self
    }

    /// Like [`TestDaemon::start`], with corrald's descriptor limit (soft and hard) set to
    /// `nofile`, so that tests can run it out of descriptors with few connections.
    pub fn start_with_nofile(&mut self, nofile: u64) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.start_with(move |cmd| {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        nofile,
                        nofile,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        })
    }

    /// corrald's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// What corrald wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("corrald.stderr")).unwrap_or_default()
    }

    /// A connected client.
    pub fn client(&self) -> Client {
        Client::connect_to(self.socket()).expect("connect to corrald")
    }

    /// Runs `corralctl --socket S ARGS...` and returns its output.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.wrapped(bin("corralctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .env_remove("CORRAL_SOCKET")
            .stdin(Stdio::null())
            .output()
            .expect("run corralctl")
    }

    /// Runs corralctl and asserts it succeeded; returns its stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "corralctl {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `status --json` of one unit.
    pub fn status(&self, unit: &str) -> corral_proto::UnitStatus {
        self.client()
            .status(Some(unit))
            .expect("status")
            .units
            .remove(0)
    }

    /// Waits until every instance of `unit` is in `state`; returns the unit status.
    pub fn wait_state(&self, unit: &str, state: &str) -> corral_proto::UnitStatus {
        wait_for(&format!("{unit} to be {state}"), || {
            let s = self.status(unit);
            s.instances
                .iter()
                .all(|i| i.state.as_str() == state)
                .then_some(s)
        })
    }

    /// The log file of one instance.
    pub fn log(&self, unit: &str, instance: u32) -> String {
        std::fs::read_to_string(self.log_dir().join(format!("{unit}.{instance}.log")))
            .unwrap_or_default()
    }

    /// Sends a signal to corrald.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal corrald");
    }

    /// Waits for corrald to exit and returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("corrald to exit", || child.try_wait().expect("try_wait"));
        self.child = None;
        status.code()
    }

    /// SIGKILLs corrald (as a crash would) and reaps it.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit();
    }

    /// A raw connection to the socket, for protocol-level tests.
    pub fn raw(&self) -> RawConn {
        let stream = UnixStream::connect(self.socket()).expect("connect");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        RawConn {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            stream,
        }
    }
}

impl Default for TestDaemon {
    fn default() -> Self {
        TestDaemon::new()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.stop_for_drop();
        self.remove_cgroups();
    }
}

impl TestDaemon {
    fn stop_for_drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGTERM); // second signal: force
        std::thread::sleep(Duration::from_millis(500));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The cgroups this test's corrald made (listed in its state directory's `cgroups`
    /// file): whatever is still in them is killed (`cgroup.kill`) and they are removed,
    /// so that a test leaves nothing behind on the machine, even after a `kill -9`.
    fn remove_cgroups(&self) {
        let Ok(listing) = std::fs::read_to_string(self.state_dir().join("cgroups")) else {
            return;
        };
        for base in listing.lines().map(PathBuf::from) {
            let leaves: Vec<PathBuf> = std::fs::read_dir(&base)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default();
            for leaf in leaves.iter().chain(std::iter::once(&base)) {
                let _ = std::fs::write(leaf.join("cgroup.kill"), "1");
                let start = Instant::now();
                while std::fs::remove_dir(leaf).is_err()
                    && leaf.exists()
                    && start.elapsed() < Duration::from_secs(10)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// A system user for a test (made with `useradd`, so the test must run as root),
/// removed on drop.
pub struct TestUser {
    /// Its login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl TestUser {
    /// A new user, or `None` when not root or `useradd` is missing (the test then skips).
    pub fn create() -> Option<TestUser> {
        if !nix::unistd::Uid::effective().is_root() {
            return None;
        }
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "corral-t{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .status()
            .ok()?;
        if !made.success() {
            return None;
        }
        let user = nix::unistd::User::from_name(&name).ok()??;
        Some(TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// A command that runs `program` as this user (through `setpriv`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid",
                &self.uid.to_string(),
                "--regid",
                &self.gid.to_string(),
                "--clear-groups",
            ])
            .arg(program)
            .current_dir("/");
        command
    }

    /// Runs corralctl as this user.
    pub fn ctl(&self, d: &TestDaemon, args: &[&str]) -> Output {
        self.command(bin("corralctl"))
            .arg("--socket")
            .arg(d.socket())
            .args(args)
            .output()
            .expect("setpriv")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// A raw line-oriented connection to corrald.
pub struct RawConn {
    /// Write side.
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl RawConn {
    /// Sends bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads one reply line as JSON (None at end of stream).
    pub fn recv(&mut self) -> Option<serde_json::Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("reply is JSON")),
            Err(e) => panic!("reading reply: {e}"),
        }
    }

    /// Sends one JSON request line and reads one reply.
    pub fn roundtrip(&mut self, request: &str) -> serde_json::Value {
        self.send(format!("{request}\n").as_bytes());
        self.recv().expect("a reply")
    }
}

/// Every live process whose process-group id is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    all_procs()
        .into_iter()
        .filter(|p| p.pgrp == pgid)
        .map(|p| p.pid)
        .collect()
}

/// One line of `/proc/PID/stat`, the fields tests need.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    /// Pid.
    pub pid: i32,
    /// State letter (`Z` for zombies).
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
}

/// Every process on the machine.
pub fn all_procs() -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_info)
        .collect()
}

/// `/proc/PID/stat` of one process, if it exists.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcInfo {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    proc_info(pid).is_some_and(|p| p.state != 'Z')
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A minimal HTTP/1.1 request over a fresh connection: (status, body).
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Makes an anonymous object of every kind (queue `anon-q`, counter `anon-c`, array
/// `anon-a`, semaphore `anon-s`, event `anon-e`), each tied to `session`.
pub fn make_anonymous(client: &Client, session: &str) {
    use corral_proto::AnonKind;
    client.queue("anon-q").put(serde_json::json!(1)).unwrap();
    client.counter("anon-c").add(1).unwrap();
    client.array("anon-a").create_f64(2, None).unwrap();
    client.semaphore("anon-s").create(1, None).unwrap();
    client.event("anon-e").set().unwrap();
    for (kind, name) in [
        (AnonKind::Queue, "anon-q"),
        (AnonKind::Counter, "anon-c"),
        (AnonKind::Array, "anon-a"),
        (AnonKind::Semaphore, "anon-s"),
        (AnonKind::Event, "anon-e"),
    ] {
        client.anon_add(session, kind, name).unwrap();
    }
}

/// How many of the objects of [`make_anonymous`] still exist.
pub fn anonymous_left(client: &Client) -> usize {
    let queues = client.queues().unwrap();
    let counters = client.counters().unwrap();
    let arrays = client.arrays().unwrap();
    let sems = client.semaphores().unwrap();
    let events = client.events().unwrap();
    usize::from(queues.iter().any(|q| q.queue == "anon-q"))
        + usize::from(counters.iter().any(|c| c.counter == "anon-c"))
        + usize::from(arrays.iter().any(|a| a.array == "anon-a"))
        + usize::from(sems.iter().any(|s| s.semaphore == "anon-s"))
        + usize::from(events.iter().any(|e| e.event == "anon-e"))
}
