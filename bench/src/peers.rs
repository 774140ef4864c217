//! Starting and talking to the systems under test: corrald, Redis, Python.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Everything the workloads run against.
pub struct Environment {
    /// corrald's socket.
    pub corral_socket: PathBuf,
    corrald: Child,
    /// Redis's socket, or why there is none.
    pub redis: Result<PathBuf, String>,
    redis_child: Option<Child>,
    /// python3 with multiprocessing, or why not.
    pub python: Result<PathBuf, String>,
    /// The bench's peer scripts.
    pub peers_dir: PathBuf,
}

pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("exe dir")?.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the workspace in the same profile first (scripts/bench does: cargo build --release --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

/// Makes `cmd`'s process get SIGTERM if the bench dies without stopping it (a server
/// started by the bench must not outlive it).
pub fn dies_with_bench(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing is allocated between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        })
    }
}

/// VmRSS of `pid` in MB (0 if it is gone).
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn wait_until(what: &str, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

impl Environment {
    /// Starts corrald and the peers that are installed, in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Environment> {
        let corral_socket = dir.join("corral.sock");
        std::fs::create_dir_all(dir.join("units"))?;
        let corrald = dies_with_bench(&mut Command::new(sibling_binary("corrald")?))
            .arg("--units")
            .arg(dir.join("units"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&corral_socket)
            .args(["--http", "off"])
            .env("CORRAL_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("starting corrald")?;
        wait_until("corrald", || {
            corral_client::Client::connect_to(&corral_socket).is_ok()
        })?;

        let (redis, redis_child) = match which("redis-server") {
            None => (
                Err("not installed (apt-get install redis-server)".to_string()),
                None,
            ),
            Some(server) => {
                let socket = dir.join("redis.sock");
                let child = dies_with_bench(&mut Command::new(server))
                    .args(["--port", "0", "--unixsocket"])
                    .arg(&socket)
                    .args([
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "everysec",
                        "--save",
                        "",
                    ])
                    .arg("--dir")
                    .arg(dir)
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting redis-server")?;
                wait_until("redis", || UnixStream::connect(&socket).is_ok())?;
                (Ok(socket), Some(child))
            }
        };
        let python = match which("python3") {
            Some(p) => Ok(p),
            None => Err("not installed (apt-get install python3)".into()),
        };
        Ok(Environment {
            corral_socket,
            corrald,
            redis,
            redis_child,
            python,
            peers_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers"),
        })
    }

    /// corrald's pid.
    pub fn corrald_pid(&self) -> u32 {
        self.corrald.id()
    }

    /// Stops everything started.
    pub fn stop(&mut self) {
        if let Ok(c) = corral_client::Client::connect_to(&self.corral_socket) {
            let _ = c.shutdown();
        }
        let _ = self.corrald.wait();
        if let Some(child) = &mut self.redis_child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal RESP client: enough for LPUSH/RPOP/INCR/SET/DEL.
pub struct Redis {
    stream: BufReader<UnixStream>,
    line: String,
}

/// A RESP reply, reduced to what the workloads look at.
#[derive(Debug, PartialEq)]
pub enum Resp {
    /// `+OK`, an integer, or a bulk string.
    Value,
    /// A nil bulk string.
    Nil,
}

impl Redis {
    /// Connects to a Redis Unix socket.
    pub fn connect(socket: &Path) -> anyhow::Result<Redis> {
        Ok(Redis {
            stream: BufReader::new(UnixStream::connect(socket)?),
            line: String::new(),
        })
    }

    /// Sends one command and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> anyhow::Result<Resp> {
        let mut frame = format!("*{}\r\n", args.len());
        for a in args {
            frame.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.stream.get_mut().write_all(frame.as_bytes())?;
        self.line.clear();
        self.stream.read_line(&mut self.line)?;
        match self.line.as_bytes().first() {
            Some(b'+') | Some(b':') => Ok(Resp::Value),
            Some(b'$') => {
                let len: i64 = self.line[1..].trim().parse()?;
                if len < 0 {
                    return Ok(Resp::Nil);
                }
                let mut buf = vec![0; len as usize + 2];
                self.stream.read_exact(&mut buf)?;
                Ok(Resp::Value)
            }
            _ => bail!("redis: {}", self.line.trim()),
        }
    }
}
