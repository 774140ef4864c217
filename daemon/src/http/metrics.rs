//! `/metrics` in the Prometheus text exposition format.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::Shared;
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

pub async fn metrics(State(ctx): Shared) -> Response {
    let snap = super::snapshot(&ctx).await;
    let exits = ctx.store.history(History::ExitCounts).await.exits;
    let mut out = String::new();
    let mut f = Family { out: &mut out };

    let units = snap["status"]["units"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let states = [
        "inactive", "starting", "running", "backoff", "stopping", "stopped", "exited", "failed",
    ];
    f.head("corral_instances", "gauge", "Unit instances by state.");
    for state in states {
        let n = units
            .iter()
            .flat_map(|u| u["instances"].as_array().cloned().unwrap_or_default())
            .filter(|i| i["state"] == state)
            .count();
        f.sample("corral_instances", &[("state", state)], n);
    }
    f.head(
        "corral_restarts_total",
        "counter",
        "Restarts by policy, per unit (since its last explicit start).",
    );
    for u in &units {
        let restarts: u64 = u["instances"]
            .as_array()
            .map(|is| is.iter().filter_map(|i| i["restarts"].as_u64()).sum())
            .unwrap_or(0);
        f.sample(
            "corral_restarts_total",
            &[("unit", u["name"].as_str().unwrap_or(""))],
            restarts,
        );
    }
    f.head(
        "corral_exits_total",
        "counter",
        "Finished process runs by exit code or signal.",
    );
    for (code, signal, n) in exits {
        let (key, value) = match (code, signal) {
            (Some(c), _) => ("code", c.to_string()),
            (None, Some(s)) => ("signal", s.to_string()),
            (None, None) => ("code", "unknown".to_string()),
        };
        f.sample("corral_exits_total", &[(key, &value)], n);
    }
    let queues = snap["queues"]["queues"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    f.head(
        "corral_queue_depth",
        "gauge",
        "Items waiting in each queue.",
    );
    for q in &queues {
        f.sample(
            "corral_queue_depth",
            &[("queue", q["queue"].as_str().unwrap_or(""))],
            &q["depth"],
        );
    }
    f.head(
        "corral_queue_put_total",
        "counter",
        "Items ever put, per queue.",
    );
    for q in &queues {
        f.sample(
            "corral_queue_put_total",
            &[("queue", q["queue"].as_str().unwrap_or(""))],
            &q["put_total"],
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
            &[("queue", q["queue"].as_str().unwrap_or(""))],
            &q["got_total"],
        );
    }
    f.head(
        "corral_lock_waiters",
        "gauge",
        "Clients waiting for each lock.",
    );
    for l in snap["locks"]["locks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        f.sample(
            "corral_lock_waiters",
            &[("lock", l["lock"].as_str().unwrap_or(""))],
            &l["waiters"],
        );
    }
    f.head("corral_pool_items", "gauge", "Pool job items by state.");
    for j in snap["pools"]["jobs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let job = j["job"].to_string();
        for state in ["succeeded", "failed", "running", "pending"] {
            f.sample(
                "corral_pool_items",
                &[("job", &job), ("state", state)],
                &j[state],
            );
        }
    }
    f.head(
        "corral_resident_memory_bytes",
        "gauge",
        "corrald's resident set size.",
    );
    f.sample(
        "corral_resident_memory_bytes",
        &[],
        super::pages::own_rss_bytes(),
    );
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
    let _ = Value::Null;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
