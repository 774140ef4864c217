//! The machine's floors, measured in the same run as everything else: a bare Unix-socket
//! round trip between two processes, and a bare `posix_spawn` loop. No server answers
//! faster than the first and no manager starts processes faster than the second, so
//! corral's figures are read as multiples of them (machines differ too much for absolute
//! targets).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, posix_spawnp};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;

use crate::{Report, Sample, Series};

/// Bytes per message: a small request, like a coordination op's JSON line.
const MESSAGE: usize = 64;

/// Name of the round-trip floor's report.
pub const ROUND_TRIP: &str = "floor: unix socket round trip, 1 client";
/// Name of the spawn floor's report.
pub const SPAWN: &str = "floor: posix_spawn 500 processes";

/// The echo server's side (`corral-bench --echo-server PATH`, a process of its own):
/// answers each 64-byte message with itself, one connection at a time, until killed.
pub fn echo_server(path: &Path) -> anyhow::Result<()> {
    let listener = UnixListener::bind(path)?;
    for conn in listener.incoming() {
        let mut conn = conn?;
        let mut buf = [0u8; MESSAGE];
        while conn.read_exact(&mut buf).is_ok() {
            if conn.write_all(&buf).is_err() {
                break;
            }
        }
    }
    Ok(())
}

/// Both floors, `rounds` times each.
pub fn reports(dir: &Path, rounds: usize, window: Duration) -> Vec<Report> {
    let mut echo = Series {
        system: "bare echo (two processes)".into(),
        samples: Vec::new(),
        missing: None,
    };
    let mut spawn = Series {
        system: "posix_spawn loop".into(),
        samples: Vec::new(),
        missing: None,
    };
    for _ in 0..rounds {
        match round_trips(dir, window) {
            Ok(s) => echo.samples.push(s),
            Err(e) => echo.missing = Some(format!("failed: {e}")),
        }
        match spawn_500() {
            Ok(s) => spawn.samples.push(s),
            Err(e) => spawn.missing = Some(format!("failed: {e}")),
        }
    }
    vec![
        Report {
            workload: ROUND_TRIP.into(),
            note: format!(
                "a {MESSAGE}-byte message and its echo over a Unix stream socket between this process and an echo server of its own (native code, no parsing): the round trip no server can beat here; single-client p50s are reported as multiples of it"
            ),
            unit: "round trips/s".into(),
            series: vec![echo],
        },
        Report {
            workload: SPAWN.into(),
            note: "posix_spawnp of 500 `sleep 3600` in a loop (stdio to /dev/null), until the last has been started; then killed and reaped. No process manager starts processes faster".into(),
            unit: "processes/s".into(),
            series: vec![spawn],
        },
    ]
}

fn round_trips(dir: &Path, window: Duration) -> anyhow::Result<Sample> {
    let path = dir.join(format!("echo-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--echo-server").arg(&path).stdin(Stdio::null());
    crate::peers::dies_with_bench(&mut cmd);
    let mut server = cmd.spawn()?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut conn = loop {
            match UnixStream::connect(&path) {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => anyhow::bail!("echo server did not listen: {e}"),
            }
        };
        let msg = [b'x'; MESSAGE];
        let mut buf = [0u8; MESSAGE];
        let mut lat = Vec::new();
        let end = Instant::now() + window;
        loop {
            let t0 = Instant::now();
            if t0 >= end {
                break;
            }
            conn.write_all(&msg)?;
            conn.read_exact(&mut buf)?;
            lat.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        Ok(crate::workloads::sample(lat.len() as u64, window, lat))
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&path);
    result
}

fn spawn_500() -> anyhow::Result<Sample> {
    let program = c"sleep";
    let args = [c"sleep", c"3600"];
    let env: Vec<std::ffi::CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            use std::os::unix::ffi::OsStrExt;
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            std::ffi::CString::new(kv).ok()
        })
        .collect();
    let mut actions = PosixSpawnFileActions::init()?;
    for fd in 0..3 {
        actions.add_open(
            fd,
            c"/dev/null",
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        )?;
    }
    let attr = PosixSpawnAttr::init()?;
    let mut pids = Vec::with_capacity(500);
    let t0 = Instant::now();
    let mut failure = None;
    for _ in 0..500 {
        match posix_spawnp(program, &actions, &attr, &args, &env) {
            Ok(pid) => pids.push(pid),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let elapsed = t0.elapsed();
    for &pid in &pids {
        let _ = kill(pid, Signal::SIGKILL);
    }
    for &pid in &pids {
        let _ = waitpid(pid, None);
    }
    if let Some(e) = failure {
        anyhow::bail!("posix_spawnp: {e}");
    }
    Ok(Sample {
        value: 500.0 / elapsed.as_secs_f64(),
        p50_us: None,
        p99_us: None,
    })
}
