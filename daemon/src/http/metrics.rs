//! `/metrics` in the Prometheus text exposition format.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use corral_proto::{InstanceState, InstanceStatus, UnitStatus};

use super::Shared;
use crate::procstat::ProcStat;
use crate::store::History;

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// A signal's name (`SIGKILL`), or its number when it has none.
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map_or_else(|_| signal.to_string(), |s| s.as_str().to_string())
}

/// Clock ticks per second and the page size, for /proc figures.
fn ticks_and_page() -> (f64, u64) {
    use nix::unistd::{SysconfVar, sysconf};
    let ticks = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    (ticks, page)
}

/// CPU, memory and restarts of each instance that has a process, labelled by unit and
/// instance: its cgroup's figures where corrald has cgroups (everything the instance
/// started), else its main process's.
fn instance_series(f: &mut Family<'_>, units: &[UnitStatus]) {
    let (ticks, page) = ticks_and_page();
    let stats: Vec<(&str, String, f64, u64, u32)> = units
        .iter()
        .flat_map(|u| {
            u.instances.iter().filter_map(move |i| {
                let stat = ProcStat::read(i.pid? as i32)?;
                let cpu = i
                    .cgroup_cpu_usec
                    .map_or(stat.cpu_ticks as f64 / ticks, |us| us as f64 / 1e6);
                let rss = i.cgroup_memory_bytes.unwrap_or(stat.rss_pages * page);
                Some((
                    u.name.as_str(),
                    i.instance.to_string(),
                    cpu,
                    rss,
                    i.restarts,
                ))
            })
        })
        .collect();
    f.head(
        "corral_instance_cpu_seconds_total",
        "counter",
        "CPU time (user and system) of each running instance: its cgroup's, else its main process's.",
    );
    for (unit, index, cpu, _, _) in &stats {
        f.sample(
            "corral_instance_cpu_seconds_total",
            &[("unit", unit), ("instance", index)],
            format!("{cpu:.2}"),
        );
    }
    f.head(
        "corral_instance_resident_memory_bytes",
        "gauge",
        "Memory of each running instance: charged to its cgroup, else its main process's RSS.",
    );
    for (unit, index, _, rss, _) in &stats {
        f.sample(
            "corral_instance_resident_memory_bytes",
            &[("unit", unit), ("instance", index)],
            rss,
        );
    }
    f.head(
        "corral_instance_restarts",
        "gauge",
        "Restarts by policy of each running instance since its unit was last started.",
    );
    for (unit, index, _, _, restarts) in &stats {
        f.sample(
            "corral_instance_restarts",
            &[("unit", unit), ("instance", index)],
            restarts,
        );
    }
    check_series(f, units);
}

/// Readiness and health of each instance that has a process: `corral_instance_ready` for
/// units with `[ready]`, `corral_instance_healthy` once a `[health]` probe has run, and
/// every instance's `corral_health_failures_total`.
fn check_series(f: &mut Family<'_>, units: &[UnitStatus]) {
    let live: Vec<(&str, String, &InstanceStatus)> = units
        .iter()
        .flat_map(|u| {
            u.instances
                .iter()
                .filter(|i| i.pid.is_some())
                .map(move |i| (u.name.as_str(), i.instance.to_string(), i))
        })
        .collect();
    f.head(
        "corral_instance_ready",
        "gauge",
        "1 once the instance's [ready] check has passed, 0 while it is starting (units with [ready] only).",
    );
    for (unit, index, i) in &live {
        if let Some(ready) = i.ready {
            let labels = [("unit", *unit), ("instance", index.as_str())];
            f.sample("corral_instance_ready", &labels, u8::from(ready));
        }
    }
    f.head(
        "corral_instance_healthy",
        "gauge",
        "Outcome of the instance's last [health] probe: 1 passed, 0 failed.",
    );
    for (unit, index, i) in &live {
        if let Some(healthy) = i.healthy {
            let labels = [("unit", *unit), ("instance", index.as_str())];
            f.sample("corral_instance_healthy", &labels, u8::from(healthy));
        }
    }
    f.head(
        "corral_health_failures_total",
        "counter",
        "Failed [health] probes of each instance since corrald started.",
    );
    for (unit, index, i) in &live {
        let labels = [("unit", *unit), ("instance", index.as_str())];
        f.sample(
            "corral_health_failures_total",
            &labels,
            i.health_failures_total,
        );
    }
}

/// The standard `process_*` metrics of Prometheus's client libraries, for corrald itself.
fn process_series(f: &mut Family<'_>) {
    let (ticks, page) = ticks_and_page();
    let me = std::process::id() as i32;
    if let Some(stat) = ProcStat::read(me) {
        f.head(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        f.sample(
            "process_cpu_seconds_total",
            &[],
            format!("{:.2}", stat.cpu_ticks as f64 / ticks),
        );
        f.head(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        f.sample("process_resident_memory_bytes", &[], stat.rss_pages * page);
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
        });
        if let Some(boot) = boot {
            f.head(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            );
            f.sample(
                "process_start_time_seconds",
                &[],
                format!("{:.2}", boot + stat.start_time as f64 / ticks),
            );
        }
    }
    let virtual_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok());
    if let Some(pages) = virtual_pages {
        f.head(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
        );
        f.sample("process_virtual_memory_bytes", &[], pages * page);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        f.head(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        // Minus the one read_dir holds.
        f.sample("process_open_fds", &[], dir.count().saturating_sub(1));
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        f.head(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        f.sample("process_max_fds", &[], soft);
    }
}

pub async fn metrics(State(ctx): Shared) -> Response {
    let snap = super::snapshot(&ctx).await;
    let exits = ctx.store.history(History::ExitCounts).await.exits;
    let mut out = String::new();
    let mut f = Family { out: &mut out };

    let units = snap.status.map(|s| s.units).unwrap_or_default();
    f.head("corral_instances", "gauge", "Unit instances by state.");
    for state in InstanceState::ALL {
        let n = units
            .iter()
            .flat_map(|u| &u.instances)
            .filter(|i| i.state == state)
            .count();
        f.sample("corral_instances", &[("state", state.as_str())], n);
    }
    f.head(
        "corral_restarts_total",
        "counter",
        "Restarts by policy, per unit (since its last explicit start).",
    );
    for u in &units {
        let restarts: u64 = u.instances.iter().map(|i| u64::from(i.restarts)).sum();
        f.sample("corral_restarts_total", &[("unit", &u.name)], restarts);
    }
    f.head(
        "corral_exits_total",
        "counter",
        "Finished process runs by exit code (empty when killed) and signal (empty when it exited).",
    );
    for (code, signal, n) in exits {
        // Both labels on every sample (empty when not applicable), so that queries can
        // match on either without a second series shape.
        let code = code.map_or(String::new(), |c| c.to_string());
        let signal = signal.map_or(String::new(), signal_name);
        f.sample(
            "corral_exits_total",
            &[("code", &code), ("signal", &signal)],
            n,
        );
    }
    instance_series(&mut f, &units);
    let queues = snap.queues.map(|q| q.queues).unwrap_or_default();
    f.head(
        "corral_queue_depth",
        "gauge",
        "Items waiting in each queue.",
    );
    for q in &queues {
        f.sample("corral_queue_depth", &[("queue", &q.queue)], q.depth);
    }
    f.head(
        "corral_queue_put_total",
        "counter",
        "Items ever put, per queue.",
    );
    for q in &queues {
        f.sample(
            "corral_queue_put_total",
            &[("queue", &q.queue)],
            q.put_total,
        );
    }
    f.head(
        "corral_queue_in_flight",
        "gauge",
        "Items handed out by acknowledged gets and not acked yet, per queue.",
    );
    for q in &queues {
        f.sample(
            "corral_queue_in_flight",
            &[("queue", &q.queue)],
            q.in_flight,
        );
    }
    f.head(
        "corral_queue_got_total",
        "counter",
        "Items ever taken, per queue.",
    );
    for q in &queues {
        f.sample(
            "corral_queue_got_total",
            &[("queue", &q.queue)],
            q.got_total,
        );
    }
    f.head(
        "corral_lock_waiters",
        "gauge",
        "Clients waiting for each lock.",
    );
    for l in snap.locks.map(|l| l.locks).unwrap_or_default() {
        f.sample("corral_lock_waiters", &[("lock", &l.lock)], l.waiters);
    }
    f.head("corral_pool_items", "gauge", "Pool job items by state.");
    for j in snap.pools.map(|p| p.jobs).unwrap_or_default() {
        let job = j.job.to_string();
        let items = [
            ("succeeded", j.succeeded),
            ("failed", j.failed),
            ("running", j.running),
            ("pending", j.pending),
        ];
        for (state, n) in items {
            f.sample(
                "corral_pool_items",
                &[("pool_job", &job), ("state", state)],
                n,
            );
        }
    }
    process_series(&mut f);
    f.head(
        "corral_uptime_seconds",
        "gauge",
        "Seconds since corrald started.",
    );
    f.sample(
        "corral_uptime_seconds",
        &[],
        format!("{:.3}", ctx.started.elapsed().as_secs_f64()),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
