//! HTML pages, rendered on the server (a correct snapshot with JavaScript off) and kept
//! current by `app.js` from `/api/events`. Everything shown is escaped.

use std::fmt::Write;

use std::collections::BTreeMap;

use corral_proto::{ExitStatus, InstanceStatus, JobState, PoolJob, StatusResult};
use serde_json::{Value, json};

use super::{Snapshot, UnitDetail};

use crate::procstat::ProcStat;

/// The page script: listens to `/api/events` and re-renders the tables with DOM text
/// nodes only (never `innerHTML` with data), so nothing in a name or log line runs.
pub const APP_JS: &str = include_str!("app.js");
/// The page style (light and dark).
pub const STYLE_CSS: &str = include_str!("style.css");

/// Escapes text for HTML element content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The token form, when corrald takes state-changing requests (`http.token` is set). The
/// token stays in the page script's memory: never stored, never in a URL.
fn token_form(controls: bool) -> &'static str {
    if controls {
        "<form id=\"token-form\" class=\"token\"><input type=\"password\" id=\"token\" \
         placeholder=\"http.token\" autocomplete=\"off\" aria-label=\"token\">\
         <button type=\"submit\">use token</button><span id=\"token-state\" class=\"muted\">\
         read-only</span></form>"
    } else {
        ""
    }
}

/// Buttons for a unit (disabled until a token is entered; the script enables them).
fn unit_buttons(name: &str) -> String {
    ["start", "stop", "restart"]
        .iter()
        .map(|a| {
            format!(
                "<button class=\"action\" data-unit=\"{}\" data-action=\"{a}\" disabled>{a}</button>",
                esc(name)
            )
        })
        .collect()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
         <body>{body}<script src=\"/assets/app.js\"></script></body></html>\n",
        esc(title)
    )
}

fn duration_ms(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn exit_text(e: Option<ExitStatus>) -> String {
    match e {
        Some(ExitStatus { code: Some(c), .. }) => format!("exit {c}"),
        Some(ExitStatus {
            signal: Some(sig), ..
        }) => format!("signal {sig}"),
        _ => "-".into(),
    }
}

fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn table(id: &str, head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table id=\"{id}\"><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            // Cells are pre-escaped HTML (a state badge, a link); see `cell`.
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

fn cell(text: &str) -> String {
    esc(text)
}

/// Per-instance CPU (average since start) and memory, keyed by pid: from the instance's
/// cgroup where corrald has cgroups (everything the instance started), else the main
/// process's from /proc.
pub fn process_stats(status: &StatusResult) -> BTreeMap<u32, ProcessFigures> {
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let mut map = BTreeMap::new();
    for inst in status.units.iter().flat_map(|u| &u.instances) {
        let Some(pid) = inst.pid else {
            continue;
        };
        let Some(stat) = ProcStat::read(pid as i32) else {
            continue;
        };
        let ticks = 100.0;
        let cpu = inst
            .cgroup_cpu_usec
            .map_or(stat.cpu_ticks as f64 / ticks, |us| us as f64 / 1e6);
        let rss_bytes = inst.cgroup_memory_bytes.unwrap_or(stat.rss_pages * 4096);
        let age = (uptime - stat.start_time as f64 / ticks).max(0.001);
        let cpu_pct = (cpu / age * 1000.0).round() / 10.0;
        map.insert(pid, ProcessFigures { cpu_pct, rss_bytes });
    }
    map
}

/// One process's CPU (percent of one CPU, averaged since it started) and memory.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ProcessFigures {
    /// Percent of one CPU since the process started.
    pub cpu_pct: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

/// Readiness and health in a word (as `corralctl status` shows them): `not ready`,
/// `ready`, `healthy`, `failing N`, or `-` without checks.
fn checks_text(i: &InstanceStatus) -> String {
    match (i.ready, i.healthy) {
        (_, Some(false)) => format!("failing {}", i.health_failures),
        (_, Some(true)) => "healthy".into(),
        (Some(false), None) => "not ready".into(),
        (Some(true), None) => "ready".into(),
        (None, None) => "-".into(),
    }
}

/// After a transient unit's name: the program that started it (`run`'s `parent`).
fn parent_note(parent: Option<&corral_proto::RunParent>) -> String {
    let Some(p) = parent else {
        return String::new();
    };
    let pid = p.pid.map_or(String::new(), |pid| format!(" (pid {pid})"));
    format!(" <span class=\"muted\">of {}{pid}</span>", esc(&p.label))
}

/// The reason, or else why the last check failed.
fn reason_text(i: &InstanceStatus) -> String {
    match (&i.reason, &i.check_error) {
        (Some(reason), _) => reason.clone(),
        (None, Some(e)) => format!("check: {e}"),
        (None, None) => String::new(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// The dashboard.
pub fn dashboard(snap: &Snapshot, controls: bool) -> String {
    let mut body = format!(
        "<header><h1>corral</h1><span id=\"live\" class=\"muted\">snapshot</span>{}</header>\
         <main id=\"page\" data-page=\"dashboard\" data-controls=\"{}\">",
        token_form(controls),
        u8::from(controls)
    );
    body.push_str(
        "<section id=\"charts\" hidden><h2>Over the last minutes</h2>\
         <div id=\"queue-charts\" class=\"charts\"></div>\
         <div id=\"pool-charts\" class=\"charts\"></div></section>",
    );
    let mut rows = Vec::new();
    for u in snap.status.iter().flat_map(|s| &s.units) {
        let name = &u.name;
        if !u.loaded {
            let errors = &u.errors;
            let mut row = vec![cell(name), cell("-")];
            row.push("<span class=\"state not-loaded\">not loaded</span>".into());
            row.extend(std::iter::repeat_n(cell("-"), 7));
            row.push(cell(&errors.join("; ")));
            if controls {
                row.push(String::new());
            }
            rows.push(row);
        }
        for (n, i) in u.instances.iter().enumerate() {
            let stats = i.pid.and_then(|p| snap.processes.get(&p));
            let state = i.state.as_str();
            rows.push(vec![
                format!(
                    "<a href=\"/units/{}\">{}</a>{}",
                    esc(&urlencode(name)),
                    esc(name),
                    parent_note(u.parent.as_ref())
                ),
                cell(&i.instance.to_string()),
                format!("<span class=\"state {0}\">{0}</span>", esc(state)),
                cell(&or_dash(i.pid)),
                cell(&duration_ms(i.uptime_ms)),
                cell(&i.restarts.to_string()),
                cell(&exit_text(i.last_exit)),
                cell(&stats.map_or("-".into(), |st| format!("{}%", st.cpu_pct))),
                cell(&stats.map_or("-".into(), |st| mib(st.rss_bytes))),
                cell(&checks_text(i)),
                cell(&reason_text(i)),
            ]);
            if controls {
                // One set of buttons per unit, on its first instance's row.
                let buttons = if n == 0 {
                    unit_buttons(name)
                } else {
                    String::new()
                };
                rows.last_mut().expect("pushed").push(buttons);
            }
        }
    }
    body.push_str("<section><h2>Units</h2>");
    let mut head = vec![
        "unit",
        "instance",
        "state",
        "pid",
        "uptime",
        "restarts",
        "last exit",
        "cpu",
        "rss",
        "checks",
        "reason",
    ];
    if controls {
        head.push("actions");
    }
    body.push_str(&table("units", &head, &rows));
    body.push_str("</section>");
    // A section appears when there is something to show (the script shows it later if so).
    let section = |title: &str, id: &str, head: &[&str], rows: Vec<Vec<String>>| {
        let hidden = if rows.is_empty() { " hidden" } else { "" };
        format!(
            "<section{hidden}><h2>{}</h2>{}</section>",
            esc(title),
            table(id, head, &rows)
        )
    };
    body.push_str(&section(
        "Queues",
        "queues",
        &[
            "queue",
            "depth",
            "in flight",
            "put",
            "got",
            "put/s",
            "got/s",
            "waiting",
        ],
        snap.queues
            .iter()
            .flat_map(|q| &q.queues)
            .map(|q| {
                vec![
                    cell(&q.queue),
                    cell(&q.depth.to_string()),
                    cell(&q.in_flight.to_string()),
                    cell(&q.put_total.to_string()),
                    cell(&q.got_total.to_string()),
                    // Rates need two snapshots: the page script fills them in.
                    cell("-"),
                    cell("-"),
                    cell(&q.waiting_getters.to_string()),
                ]
            })
            .collect(),
    ));
    body.push_str(&section(
        "Counters",
        "counters",
        &["counter", "value"],
        snap.counters
            .iter()
            .flat_map(|c| &c.counters)
            .map(|c| vec![cell(&c.counter), cell(&c.value.to_string())])
            .collect(),
    ));
    body.push_str(&section(
        "Arrays",
        "arrays",
        &["array", "type", "length"],
        snap.arrays
            .iter()
            .flat_map(|a| &a.arrays)
            .map(|a| {
                vec![
                    cell(&a.array),
                    cell(&s(&json!(a.kind))),
                    cell(&a.length.to_string()),
                ]
            })
            .collect(),
    ));
    body.push_str(&section(
        "Locks",
        "locks",
        &["lock", "holder", "held for", "waiters"],
        snap.locks
            .iter()
            .flat_map(|l| &l.locks)
            .map(|l| {
                let h = l.holder.as_ref();
                let who = match h.map(|h| (&h.unit, h.pid)) {
                    Some((Some(u), _)) => format!("{u}.{}", or_dash(h.and_then(|h| h.instance))),
                    Some((None, Some(p))) => format!("pid {p}"),
                    _ => "-".into(),
                };
                vec![
                    cell(&l.lock),
                    cell(&who),
                    cell(&duration_ms(h.map(|h| h.held_ms))),
                    cell(&l.waiters.to_string()),
                ]
            })
            .collect(),
    ));
    body.push_str(&section(
        "Nodes",
        "nodes",
        &["node", "state", "heartbeat", "lease", "locks", "waiting"],
        snap.nodes
            .iter()
            .flat_map(|n| &n.nodes)
            .map(|n| {
                vec![
                    cell(&n.node),
                    cell(if n.alive { "alive" } else { "expired" }),
                    cell(&format!("{} ago", duration_ms(Some(n.heartbeat_age_ms)))),
                    cell(&duration_ms(Some(n.lease_ms))),
                    cell(&n.locks.join(", ")),
                    cell(&n.lock_waiters.to_string()),
                ]
            })
            .collect(),
    ));
    let mut pool_head = vec![
        "job", "name", "state", "progress", "ok", "failed", "running", "total", "items/s",
    ];
    if controls {
        pool_head.push("actions");
    }
    body.push_str(&section(
        "Pool jobs",
        "pools",
        &pool_head,
        snap.pools
            .iter()
            .flat_map(|p| &p.jobs)
            .map(|j| {
                let total = j.total.max(1);
                let done = j.succeeded + j.failed;
                let mut row = vec![
                    cell(&j.job.to_string()),
                    cell(j.name.as_deref().unwrap_or("-")),
                    cell(j.state.as_str()),
                    format!("<progress max=\"{total}\" value=\"{done}\"></progress>"),
                    cell(&j.succeeded.to_string()),
                    cell(&j.failed.to_string()),
                    cell(&j.running.to_string()),
                    cell(&j.total.to_string()),
                    cell(&job_rate(j)),
                ];
                if controls {
                    row.push(if j.state == JobState::Running {
                        format!(
                            "<button class=\"cancel\" data-job=\"{}\" disabled>cancel</button>",
                            j.job
                        )
                    } else {
                        String::new()
                    });
                }
                row
            })
            .collect(),
    ));
    body.push_str(&section(
        "Recent events",
        "events",
        &["unit", "event", "detail"],
        snap.events
            .iter()
            .map(|e| {
                let unit = match (&e.unit, e.instance) {
                    (Some(u), Some(i)) => format!("{u}.{i}"),
                    (Some(u), None) => u.clone(),
                    _ => "corrald".into(),
                };
                vec![cell(&unit), cell(&e.kind), cell(&e.detail)]
            })
            .collect(),
    ));
    body.push_str("</main>");
    page("corral", &body)
}

/// Items finished per second over the job's life so far.
pub fn job_rate(j: &PoolJob) -> String {
    let done = (j.succeeded + j.failed) as f64;
    let end = j.finished_ms.unwrap_or_else(crate::clock::now_ms);
    let secs = ((end - j.created_ms) as f64 / 1000.0).max(0.001);
    format!("{:.1}", done / secs)
}

fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One unit: its definition, instances, run history and last log lines.
pub fn unit(name: &str, detail: &UnitDetail, controls: bool) -> String {
    let mut body = format!(
        "<header><h1><a href=\"/\">corral</a> / {0}</h1>{1}</header>\
         <main id=\"page\" data-page=\"unit\" data-unit=\"{0}\" data-controls=\"{2}\">",
        esc(name),
        token_form(controls),
        u8::from(controls)
    );
    if controls {
        let _ = write!(
            body,
            "<section><div class=\"actions\">{}</div></section>",
            unit_buttons(name)
        );
    }
    let rows: Vec<Vec<String>> = detail
        .unit
        .instances
        .iter()
        .map(|i| {
            let state = i.state.as_str();
            vec![
                cell(&i.instance.to_string()),
                format!("<span class=\"state {0}\">{0}</span>", esc(state)),
                cell(&or_dash(i.pid)),
                cell(&duration_ms(i.uptime_ms)),
                cell(&i.restarts.to_string()),
                cell(&exit_text(i.last_exit)),
                cell(&checks_text(i)),
                cell(&reason_text(i)),
                format!(
                    "<a href=\"/units/{}/{}/logs\">follow</a>",
                    esc(&urlencode(name)),
                    i.instance
                ),
            ]
        })
        .collect();
    body.push_str("<section><h2>Instances</h2>");
    body.push_str(&table(
        "instances",
        &[
            "instance",
            "state",
            "pid",
            "uptime",
            "restarts",
            "last exit",
            "checks",
            "reason",
            "log",
        ],
        &rows,
    ));
    body.push_str(
        "<section id=\"charts\" hidden><h2>CPU and memory over the last minutes \
         <span id=\"charts-note\" class=\"muted\"></span></h2>\
         <div id=\"instance-charts\" class=\"charts\"></div></section>",
    );
    body.push_str("</section><section><h2>Definition</h2><pre id=\"config\">");
    body.push_str(&esc(
        &serde_json::to_string_pretty(&detail.config).unwrap_or_default()
    ));
    body.push_str("</pre></section>");
    let runs: Vec<Vec<String>> = detail
        .runs
        .iter()
        .map(|r| {
            let exit = match (r.exit_code, r.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ if r.ended_ms.is_none() => "running".into(),
                _ => "unknown".into(),
            };
            vec![
                cell(&r.instance.to_string()),
                cell(&r.pid.to_string()),
                cell(&exit),
                cell(&r.restarts.to_string()),
            ]
        })
        .collect();
    body.push_str("<section><h2>Run history</h2>");
    body.push_str(&table(
        "runs",
        &["instance", "pid", "ended", "restarts before"],
        &runs,
    ));
    body.push_str("</section><section><h2>Logs</h2>");
    for (instance, lines) in &detail.logs {
        let _ = write!(body, "<h3>instance {instance}</h3><pre class=\"log\">");
        for line in lines {
            body.push_str(&esc(line));
            body.push('\n');
        }
        body.push_str("</pre>");
    }
    body.push_str("</section></main>");
    page(&format!("{name} · corral"), &body)
}

/// One instance's log, followed live by the page script from `/api/logs/NAME/N`.
pub fn log(name: &str, instance: u32) -> String {
    let body = format!(
        "<header><h1><a href=\"/\">corral</a> / <a href=\"/units/{0}\">{1}</a> / {2} / log</h1>\
         <label class=\"muted\"><input type=\"checkbox\" id=\"follow\" checked> follow</label>\
         <span id=\"live\" class=\"muted\">loading</span></header>\
         <main id=\"page\" data-page=\"log\" data-unit=\"{1}\" data-instance=\"{2}\">\
         <pre id=\"log\" class=\"log follow\"></pre><noscript>This page follows the log with \
         JavaScript; without it, read <a href=\"/api/logs/{0}/{2}\">/api/logs/{1}/{2}</a>.\
         </noscript></main>",
        esc(&urlencode(name)),
        esc(name),
        instance
    );
    page(&format!("{name}.{instance} log · corral"), &body)
}

/// The page for an unknown unit.
pub fn not_found(name: &str, message: &str) -> String {
    page(
        "not found · corral",
        &format!(
            "<main><h1>{}</h1><p>{}</p><p><a href=\"/\">back</a></p></main>",
            esc(name),
            esc(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn unit_names_are_escaped_in_the_dashboard() {
        let status = json!({"units": [{"name": "x<script>", "kind": "service", "daemon": false, "transient": true, "parent": {"pid": 7, "label": "<b>prog"}, "instances": [{"instance": 0, "state": "running", "restarts": 0}]}]});
        let snap = Snapshot {
            status: Some(serde_json::from_value(status).unwrap()),
            processes: BTreeMap::new(),
            queues: None,
            counters: None,
            arrays: None,
            locks: None,
            nodes: None,
            pools: None,
            events: Vec::new(),
        };
        let html = dashboard(&snap, true);
        assert!(!html.contains("x<script>"));
        assert!(html.contains("x&lt;script&gt;"));
        assert!(html.contains("of &lt;b&gt;prog (pid 7)"), "{html}");
    }
}
