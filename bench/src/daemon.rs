//! Supervision workloads: spawning and stopping many instances, restart latency,
//! corrald's memory, the status API with many instances, and the cost of a dashboard
//! left open. They run against a corrald of their own (HTTP on, units prepared).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_client::proto::InstanceState;

use crate::peers::{sibling_binary, wait_until};
use crate::{Report, Sample, Series};

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
    let child = Command::new(sibling_binary("corrald")?)
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

fn report(workload: &str, unit: &str, note: &str, samples: Vec<Sample>) -> Report {
    Report {
        workload: workload.into(),
        note: note.into(),
        unit: unit.into(),
        series: vec![corral(samples)],
    }
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
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

/// Every daemon workload; `quick` shrinks the sizes.
pub fn reports(dir: &Path, rounds: usize, quick: bool) -> anyhow::Result<Vec<Report>> {
    let big = if quick { 100 } else { 1000 };
    let d = start(dir, big)?;
    let client = Client::connect_to(&d.socket)?;
    let pid = d.child.id();
    let (mut up, mut down, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
    let idle0 = rss_mb(pid);
    for _ in 0..rounds {
        let t = Instant::now();
        client.start(&["spawn"])?;
        wait_until("500 instances running", || all_running(&client, "spawn"))?;
        up.push(one(500.0 / t.elapsed().as_secs_f64()));
        let t = Instant::now();
        client.stop(&["spawn"])?;
        down.push(one(500.0 / t.elapsed().as_secs_f64()));
    }
    client.start(&["victim"])?;
    wait_until("victim running", || all_running(&client, "victim"))?;
    let kills = if quick { 5 } else { 20 };
    for _ in 0..kills {
        let old = client.status(Some("victim"))?.units[0].instances[0]
            .pid
            .unwrap_or(0);
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        // Polled every 1 ms (wait_until's 20 ms would be the resolution otherwise).
        loop {
            let replaced = client.status(Some("victim")).is_ok_and(|s| {
                let i = &s.units[0].instances[0];
                i.state == InstanceState::Running && i.pid.is_some_and(|p| p != old)
            });
            if replaced {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "no replacement within 30 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    client.stop(&["victim"])?;
    client.start(&["idle200"])?;
    wait_until("200 instances running", || all_running(&client, "idle200"))?;
    let idle200 = rss_mb(pid);
    client.stop(&["idle200"])?;
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
    let mut lat = latencies.clone();
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    Ok(vec![
        report("spawn 500 instances until all running", "instances/s", "`corralctl start` of a unit with instances = 500 (`sleep`), until `status` shows all running", up),
        report("stop 500 instances", "instances/s", "`corralctl stop` (SIGTERM to each group), until all are down", down),
        Report {
            workload: "restart latency (restart_delay 1ms)".into(),
            note: "SIGKILL an instance, then poll `status` until its replacement runs; median, with p50/p99 in µs".into(),
            unit: "ms".into(),
            series: vec![corral(vec![Sample {
                value: median(latencies.clone()),
                p50_us: Some(p(0.5) * 1000.0),
                p99_us: Some(p(0.99) * 1000.0),
            }])],
        },
        report("idle RSS of corrald, 0 processes", "MB", "VmRSS after start", vec![one(idle0)]),
        report("idle RSS of corrald, 200 processes", "MB", "VmRSS with 200 instances running", vec![one(idle200)]),
        report(&format!("GET /api/status, {big} instances"), "ms", "median of sequential requests, new connection each", vec![one(median(status_ms))]),
        report(&format!("GET / (dashboard), {big} instances"), "ms", "median of sequential requests, new connection each", vec![one(median(page_ms))]),
        report("idle corrald CPU, no dashboard open", "% CPU", "corrald's CPU time over a quiet window", vec![one(cpu_idle)]),
        report("idle corrald CPU, dashboard open (SSE)", "% CPU", "the same with one /api/events client connected", vec![one(cpu_sse)]),
    ])
}
