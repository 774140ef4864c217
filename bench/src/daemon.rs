//! Supervision workloads: spawning and stopping many instances, restart latency,
//! the manager's memory, the status API with many instances, and the cost of a dashboard
//! left open. They run against a corrald of their own (HTTP on, units prepared) and, for
//! the first five, against a supervisord of their own with the same programs, alternating
//! round by round.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use corral_client::Client;
use corral_client::proto::InstanceState;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::peers::{dies_with_bench, rss_mb, sibling_binary, wait_until, which};
use crate::{Report, Sample, Series};

/// How often both sides poll their manager's status while waiting for a group of
/// instances to be up or down.
const GROUP_POLL: Duration = Duration::from_millis(5);
/// How often both sides poll for the replacement of a killed instance.
const RESTART_POLL: Duration = Duration::from_millis(1);
/// Why the supervisord series is empty when it is not on PATH.
const SUPERVISORD_MISSING: &str = "not installed (pip install supervisor)";

struct Daemon {
    child: Child,
    socket: std::path::PathBuf,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(c) = Client::connect_to(&self.socket) {
            let _ = c.shutdown();
        }
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, big: usize) -> anyhow::Result<Daemon> {
    let units = dir.join("daemon-units");
    std::fs::create_dir_all(&units)?;
    let unit = |name: &str, instances: usize, extra: &str| {
        std::fs::write(
            units.join(format!("{name}.toml")),
            format!(
                "command = [\"sleep\", \"3600\"]\ninstances = {instances}\nautostart = false\nstop_timeout = \"5s\"\n{extra}"
            ),
        )
    };
    unit("spawn", 500, "")?;
    unit("idle200", 200, "")?;
    unit("many", big, "")?;
    unit(
        "victim",
        1,
        "restart_delay = \"1ms\"\nrestart_delay_max = \"1ms\"\nstart_limit_burst = 100000\n",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let socket = dir.join("daemon.sock");
    let child = dies_with_bench(&mut Command::new(sibling_binary("corrald")?))
        .arg("--units")
        .arg(&units)
        .arg("--state")
        .arg(dir.join("daemon-state"))
        .arg("--socket")
        .arg(&socket)
        .args(["--http", &format!("127.0.0.1:{port}")])
        .env("CORRAL_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    wait_until("corrald (daemon workloads)", || {
        Client::connect_to(&socket).is_ok()
    })?;
    Ok(Daemon {
        child,
        socket,
        port,
    })
}

fn all_running(client: &Client, unit: &str) -> bool {
    client.status(Some(unit)).is_ok_and(|s| {
        s.units[0]
            .instances
            .iter()
            .all(|i| i.state == InstanceState::Running)
    })
}

fn all_down(client: &Client, unit: &str) -> bool {
    client
        .status(Some(unit))
        .is_ok_and(|s| s.units[0].instances.iter().all(|i| !i.state.is_active()))
}

/// Like `wait_until`, polling every `every`.
fn poll_until(what: &str, every: Duration, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ok() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(every);
    }
    Ok(())
}

/// `corralctl start UNIT`, then `status` every `GROUP_POLL` until all `n` run; instances/s.
fn corral_spawn(client: &Client, unit: &str, n: usize) -> anyhow::Result<Sample> {
    let t = Instant::now();
    client.start(&[unit])?;
    poll_until(&format!("{n} instances running"), GROUP_POLL, || {
        all_running(client, unit)
    })?;
    Ok(one(n as f64 / t.elapsed().as_secs_f64()))
}

/// `corralctl stop UNIT` (returns once they are down), confirmed by `status`; instances/s.
fn corral_stop(client: &Client, unit: &str, n: usize) -> anyhow::Result<Sample> {
    let t = Instant::now();
    client.stop(&[unit])?;
    poll_until(&format!("{n} instances down"), GROUP_POLL, || {
        all_down(client, unit)
    })?;
    Ok(one(n as f64 / t.elapsed().as_secs_f64()))
}

/// `kills` times: SIGKILL the victim, then `status` every `RESTART_POLL` until a new
/// process runs; milliseconds per kill.
fn corral_restarts(client: &Client, kills: usize) -> anyhow::Result<Vec<f64>> {
    let mut ms = Vec::new();
    for _ in 0..kills {
        let old = client.status(Some("victim"))?.units[0].instances[0]
            .pid
            .context("victim has no pid")?;
        let t = Instant::now();
        kill(Pid::from_raw(old as i32), Signal::SIGKILL)?;
        poll_until("the victim's replacement", RESTART_POLL, || {
            client.status(Some("victim")).is_ok_and(|s| {
                let i = &s.units[0].instances[0];
                i.state == InstanceState::Running && i.pid.is_some_and(|p| p != old)
            })
        })?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(ms)
}

/// One round of restart latencies: the median, with p50/p99 in µs.
fn latency_sample(mut ms: Vec<f64>) -> Sample {
    ms.sort_by(f64::total_cmp);
    let p = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    Sample {
        value: ms[ms.len() / 2],
        p50_us: Some(p(0.5) * 1000.0),
        p99_us: Some(p(0.99) * 1000.0),
    }
}

/// The peer driver: bench/peers/supervisor_driver.py, one process for the whole section,
/// taking a command per line and answering with one JSON line (it does the timing).
struct Driver {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: PathBuf,
}

impl Driver {
    /// Reads the next JSON line; `{"error": ...}` becomes an error.
    fn read(&mut self) -> anyhow::Result<serde_json::Value> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            anyhow::bail!("supervisor_driver.py exited: {}", err.trim());
        }
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if let Some(e) = v["error"].as_str() {
            anyhow::bail!("{e}");
        }
        Ok(v)
    }

    fn cmd(&mut self, line: &str) -> anyhow::Result<serde_json::Value> {
        let stdin = self.stdin.as_mut().context("driver closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        self.read()
    }

    /// Runs a `spawn`/`stop` command for `n` processes of `group`; instances/s.
    fn group(&mut self, op: &str, group: &str, n: usize) -> anyhow::Result<Sample> {
        let v = self.cmd(&format!("{op} {group} {n} {}", GROUP_POLL.as_millis()))?;
        let secs = v["seconds"].as_f64().context("no seconds")?;
        Ok(one(n as f64 / secs))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
        }
        let _ = self.child.wait();
    }
}

/// A supervisord of the bench's own, in `DIR/supervisord`, with programs equivalent to
/// corrald's units; SIGTERMed (it stops its children first) when dropped.
struct Supervisord {
    child: Child,
    /// supervisord's own pid, as it reports it (`supervisord` may be a wrapper, e.g. a
    /// pyenv shim; here it execs, so both pids are the same).
    pid: u32,
    driver: Option<Driver>,
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        self.driver.take();
        let pids: Vec<u32> = if self.pid != 0 && self.pid != self.child.id() {
            vec![self.child.id(), self.pid]
        } else {
            vec![self.child.id()]
        };
        for &p in &pids {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGTERM);
        }
        // supervisord stops every program (SIGTERM, up to stopwaitsecs = 5) and exits.
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                // Do not leave its `sleep`s behind.
                let orphans: Vec<i32> = pids.iter().flat_map(|&p| children_of(p)).collect();
                let _ = self.child.kill();
                for &p in &pids {
                    let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
                }
                for p in orphans {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
    }
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit (supervisord inherits it:
/// 500 children hold a pipe or two and a log file each); returns the new limit.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

fn supervisord_conf(sdir: &Path, minfds: u64) -> String {
    let d = sdir.display();
    let program = |name: &str, numprocs: usize| {
        format!(
            "[program:{name}]\ncommand=sleep 3600\nnumprocs={numprocs}\nprocess_name=%(program_name)s_%(process_num)d\n\
             autostart=false\nstartsecs=0\nstopwaitsecs=5\nstopasgroup=true\nredirect_stderr=true\n\n"
        )
    };
    format!(
        "[unix_http_server]\nfile={d}/supervisor.sock\nchmod=0700\n\n\
         [supervisord]\nlogfile={d}/supervisord.log\nloglevel=warn\npidfile={d}/supervisord.pid\n\
         childlogdir={d}\nminfds={minfds}\nnodaemon=true\n\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
         {}{}\
         [program:victim]\ncommand=sleep 3600\nnumprocs=1\nprocess_name=%(program_name)s\nautostart=false\n\
         autorestart=true\nstartsecs=0\nstartretries=100000\nstopwaitsecs=5\nstopasgroup=true\nredirect_stderr=true\n",
        program("spawn", 500),
        program("idle200", 200),
    )
}

impl Supervisord {
    /// Starts supervisord and the driver, or says why not (`not installed ...`,
    /// `failed: ...`).
    fn start(dir: &Path) -> Result<Supervisord, String> {
        let (Some(supervisord), Some(_)) = (which("supervisord"), which("supervisorctl")) else {
            return Err(SUPERVISORD_MISSING.into());
        };
        let Some(python) = which("python3") else {
            return Err("python3 not installed (the supervisord driver needs it)".into());
        };
        Supervisord::start_with(dir, &supervisord, &python).map_err(|e| format!("failed: {e:#}"))
    }

    fn start_with(dir: &Path, supervisord: &Path, python: &Path) -> anyhow::Result<Supervisord> {
        let sdir = dir.join("supervisord");
        std::fs::create_dir_all(&sdir)?;
        // 500 programs hold ~1,500 fds (a pipe end each for stdin and stdout, a log file);
        // supervisord closes every fd below minfds in each child, so no higher than needed.
        let minfds = raise_nofile().min(2048);
        let conf = sdir.join("supervisord.conf");
        std::fs::write(&conf, supervisord_conf(&sdir, minfds))?;
        let socket = sdir.join("supervisor.sock");
        let out = sdir.join("supervisord.out");
        let log = std::fs::File::create(&out)?;
        let mut cmd = Command::new(supervisord);
        cmd.arg("-n")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // If the bench dies without dropping the guard, supervisord still gets SIGTERM and
        // stops its programs.
        dies_with_bench(&mut cmd);
        let child = cmd.spawn().context("starting supervisord")?;
        let mut sup = Supervisord {
            pid: child.id(),
            child,
            driver: None,
        };
        let t = Instant::now();
        while !socket.exists() {
            if let Some(status) = sup.child.try_wait()? {
                anyhow::bail!(
                    "supervisord exited ({status}): {}",
                    std::fs::read_to_string(&out).unwrap_or_default().trim()
                );
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "no supervisord socket after 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let stderr = sdir.join("driver.err");
        let mut child = Command::new(python)
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/supervisor_driver.py"))
            .arg(&socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .context("starting supervisor_driver.py")?;
        let mut driver = Driver {
            stdin: child.stdin.take(),
            stdout: BufReader::new(child.stdout.take().context("driver stdout")?),
            child,
            stderr,
        };
        let hello = driver.read();
        sup.driver = Some(driver);
        if let Some(pid) = hello?["pid"].as_u64() {
            sup.pid = pid as u32;
        }
        Ok(sup)
    }

    fn driver(&mut self) -> &mut Driver {
        self.driver
            .as_mut()
            .expect("driver is set while supervisord runs")
    }
}

/// Runs `f` on the supervisord if it is up; a failure is recorded in `series` and ends
/// the peer (its guard stops it), so later steps report the same reason.
fn on_peer<T>(
    peer: &mut Result<Supervisord, String>,
    series: &mut Series,
    took: &mut Duration,
    f: impl FnOnce(&mut Supervisord) -> anyhow::Result<T>,
) -> Option<T> {
    let sup = match peer {
        Ok(sup) => sup,
        Err(why) => {
            series.missing.get_or_insert_with(|| why.clone());
            return None;
        }
    };
    let t = Instant::now();
    let r = f(sup);
    *took += t.elapsed();
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let why = format!("failed: {e:#}");
            eprintln!("supervisord: {why}");
            series.missing = Some(why.clone());
            *peer = Err(why);
            None
        }
    }
}

fn one(value: f64) -> Sample {
    Sample {
        value,
        p50_us: None,
        p99_us: None,
    }
}

fn corral(samples: Vec<Sample>) -> Series {
    Series {
        system: "corral".into(),
        samples,
        missing: None,
    }
}

fn supervisord_series() -> Series {
    Series {
        system: "supervisord".into(),
        samples: Vec::new(),
        missing: None,
    }
}

/// A report of corral and supervisord.
fn versus(workload: &str, unit: &str, note: &str, ours: Vec<Sample>, peer: Series) -> Report {
    Report {
        workload: workload.into(),
        note: note.into(),
        unit: unit.into(),
        series: vec![corral(ours), peer],
    }
}

fn report(workload: &str, unit: &str, note: &str, samples: Vec<Sample>) -> Report {
    Report {
        workload: workload.into(),
        note: note.into(),
        unit: unit.into(),
        series: vec![corral(samples)],
    }
}

/// CPU seconds (user + system) used by `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (n(11) + n(12)) / 100.0
}

fn get_ms(port: u16, path: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    anyhow::ensure!(body.starts_with(b"HTTP/1.1 200"), "GET {path} failed");
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// corrald's RSS with 200 instances running; then supervisord's, into `series`.
fn rss_with_200(
    client: &Client,
    pid: u32,
    peer: &mut Result<Supervisord, String>,
    series: &mut Series,
    took: &mut Duration,
) -> anyhow::Result<Sample> {
    corral_spawn(client, "idle200", 200)?;
    let mb = rss_mb(pid);
    client.stop(&["idle200"])?;
    if let Some(mb) = on_peer(peer, series, took, |s| {
        s.driver().group("spawn", "idle200", 200)?;
        let mb = rss_mb(s.pid);
        s.driver().group("stop", "idle200", 200)?;
        Ok(mb)
    }) {
        series.samples.push(one(mb));
    }
    Ok(one(mb))
}

/// Every daemon workload; `quick` shrinks the sizes.
pub fn reports(dir: &Path, rounds: usize, quick: bool) -> anyhow::Result<Vec<Report>> {
    let big = if quick { 100 } else { 1000 };
    let d = start(dir, big)?;
    let client = Client::connect_to(&d.socket)?;
    let pid = d.child.id();
    let idle0 = rss_mb(pid);

    // supervisord, with the same programs; every step alternates with corral's.
    let mut took = Duration::ZERO;
    let t = Instant::now();
    let mut peer = Supervisord::start(dir);
    took += t.elapsed();
    let mut sv_up = supervisord_series();
    let mut sv_down = supervisord_series();
    let mut sv_restart = supervisord_series();
    let mut sv_idle0 = supervisord_series();
    let mut sv_idle200 = supervisord_series();
    let mut sv_idle200_after = supervisord_series();
    if let Some(mb) = on_peer(&mut peer, &mut sv_idle0, &mut took, |s| Ok(rss_mb(s.pid))) {
        sv_idle0.samples.push(one(mb));
    }

    // Memory first, in a fresh manager; again at the end, after the spawn rounds.
    let idle200 = rss_with_200(&client, pid, &mut peer, &mut sv_idle200, &mut took)?;

    let (mut up, mut down, mut restarts) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        up.push(corral_spawn(&client, "spawn", 500)?);
        down.push(corral_stop(&client, "spawn", 500)?);
        if let Some(x) = on_peer(&mut peer, &mut sv_up, &mut took, |s| {
            s.driver().group("spawn", "spawn", 500)
        }) {
            sv_up.samples.push(x);
        }
        if let Some(x) = on_peer(&mut peer, &mut sv_down, &mut took, |s| {
            s.driver().group("stop", "spawn", 500)
        }) {
            sv_down.samples.push(x);
        }
    }

    let kills = if quick { 5 } else { 20 };
    client.start(&["victim"])?;
    wait_until("victim running", || all_running(&client, "victim"))?;
    on_peer(&mut peer, &mut sv_restart, &mut took, |s| {
        s.driver().cmd("start victim:victim").map(drop)
    });
    for _ in 0..rounds {
        restarts.push(latency_sample(corral_restarts(&client, kills)?));
        if let Some(ms) = on_peer(&mut peer, &mut sv_restart, &mut took, |s| {
            let v = s.driver().cmd(&format!(
                "restart victim:victim {kills} {}",
                RESTART_POLL.as_millis()
            ))?;
            v["ms"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(serde_json::Value::as_f64)
                        .collect::<Option<Vec<f64>>>()
                })
                .filter(|ms| !ms.is_empty())
                .context("no latencies")
        }) {
            sv_restart.samples.push(latency_sample(ms));
        }
    }
    client.stop(&["victim"])?;
    on_peer(&mut peer, &mut sv_restart, &mut took, |s| {
        s.driver().cmd("stopone victim:victim").map(drop)
    });

    let idle200_after = rss_with_200(&client, pid, &mut peer, &mut sv_idle200_after, &mut took)?;
    let t = Instant::now();
    drop(peer);
    took += t.elapsed();
    eprintln!("  (supervisord side: {:.1} s)", took.as_secs_f64());

    client.start(&["many"])?;
    wait_until("many instances running", || all_running(&client, "many"))?;
    let n = if quick { 3 } else { 20 };
    let status_ms: Vec<f64> = (0..n)
        .map(|_| get_ms(d.port, "/api/status"))
        .collect::<anyhow::Result<_>>()?;
    let page_ms: Vec<f64> = (0..n)
        .map(|_| get_ms(d.port, "/"))
        .collect::<anyhow::Result<_>>()?;
    client.stop(&["many"])?;
    // The dashboard left open: corrald's CPU while idle, without and with an SSE client.
    let window = Duration::from_secs(if quick { 1 } else { 5 });
    let idle_cpu = |with_client: bool| -> anyhow::Result<f64> {
        let _sse = if with_client {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port))?;
            write!(s, "GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
            Some(s)
        } else {
            None
        };
        std::thread::sleep(Duration::from_millis(300));
        let (c0, t0) = (cpu_seconds(pid), Instant::now());
        std::thread::sleep(window);
        Ok((cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64() * 100.0)
    };
    let cpu_idle = idle_cpu(false)?;
    let cpu_sse = idle_cpu(true)?;
    let group_note = |what: &str| {
        format!(
            "{what}; both sides poll their manager's status every {} ms. \
             supervisord (numprocs, startsecs = 0 so RUNNING means spawned, stopasgroup, \
             stdout+stderr to one log file per process like corral) is driven over XML-RPC on its \
             unix socket by one long-lived bench/peers/supervisor_driver.py, which times itself",
            GROUP_POLL.as_millis()
        )
    };
    Ok(vec![
        versus(
            "spawn 500 instances until all running",
            "instances/s",
            &group_note(
                "corral: `start` of a unit with instances = 500 (`sleep 3600`), until `status` shows all running (running = the process is spawned and alive); supervisord: `startProcessGroup(wait=True)`, until `getAllProcessInfo` shows all 500 RUNNING",
            ),
            up,
            sv_up,
        ),
        versus(
            "stop 500 instances",
            "instances/s",
            &group_note(
                "corral: `stop` (SIGTERM to each process group; returns once they are down), confirmed by `status`; supervisord: `stopProcessGroup(wait=True)`, until all 500 are STOPPED. supervisord's figure is bimodal: its event loop sleeps in poll() for up to 1 s and SIGCHLD does not wake it, so if the last children cannot be reaped yet in the loop iteration that saw their pipes close, the reply waits for the next 1 s tick",
            ),
            down,
            sv_down,
        ),
        versus(
            "restart latency (restart_delay 1ms)",
            "ms",
            &format!(
                "SIGKILL the one instance, then poll status every {} ms until a new pid is running (corral: `status`, restart_delay = 1ms; supervisord: `getProcessInfo`, autorestart = true, startsecs = 0, no delay); {kills} kills a round, the round's median, with p50/p99 in µs. supervisord advances its state machine only when its event loop wakes (on I/O, else once a second), so here the polling keeps it moving",
                RESTART_POLL.as_millis()
            ),
            restarts,
            sv_restart,
        ),
        versus(
            "idle RSS, 0 processes",
            "MB",
            "VmRSS of the manager (corrald; supervisord, a Python process) as soon as it answers, nothing started",
            vec![one(idle0)],
            sv_idle0,
        ),
        versus(
            "idle RSS, 200 processes",
            "MB",
            "VmRSS of the manager, freshly started, with 200 `sleep` instances running, as soon as status shows all running",
            vec![idle200],
            sv_idle200,
        ),
        versus(
            "idle RSS, 200 processes, after the rounds above",
            "MB",
            "the same, measured again after the spawn/stop rounds and the restarts (memory the manager kept from them)",
            vec![idle200_after],
            sv_idle200_after,
        ),
        report(
            &format!("GET /api/status, {big} instances"),
            "ms",
            "median of sequential requests, new connection each",
            vec![one(median(status_ms))],
        ),
        report(
            &format!("GET / (dashboard), {big} instances"),
            "ms",
            "median of sequential requests, new connection each",
            vec![one(median(page_ms))],
        ),
        report(
            "idle corrald CPU, no dashboard open",
            "% CPU",
            "corrald's CPU time over a quiet window",
            vec![one(cpu_idle)],
        ),
        report(
            "idle corrald CPU, dashboard open (SSE)",
            "% CPU",
            "the same with one /api/events client connected",
            vec![one(cpu_sse)],
        ),
    ])
}
