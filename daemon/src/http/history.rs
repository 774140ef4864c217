//! What the dashboard's charts draw: a few minutes of history kept in corrald's memory.
//!
//! A `Sampler` task (started with the HTTP server) takes a `Sample` every `INTERVAL`: each
//! queue's depth and put/get rates, each unfinished pool job's progress and rate, each
//! running instance's CPU and RSS. `Recorder` keeps one bounded ring per series: at most
//! `POINTS` points (the last `WINDOW`), at most `MAX_SERIES` series, a series dropped once it
//! has had no point for a whole window. So history costs at most
//! `MAX_SERIES × POINTS × size_of::<Point>()` bytes (under 5 MB), however many queues,
//! jobs or instances come and go. Nothing is written to disk: history starts afresh with
//! corrald. `/api/history` reads it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::procstat::ProcStat;

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Points kept per series: ten minutes at `INTERVAL`.
pub const POINTS: usize = 300;
/// Series kept at most; a new series past this is not recorded (the API says so).
pub const MAX_SERIES: usize = 2048;
/// How far back history goes.
pub const WINDOW: Duration = Duration::from_secs(2 * POINTS as u64);

/// What a series describes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// `queue`, `pool` or `instance`.
    pub kind: &'static str,
    /// The queue's name, the job's id, the instance's unit.
    pub name: String,
    /// The instance's number (instances only).
    pub instance: Option<u32>,
    /// `depth`, `put_rate`, `got_rate`; `done`, `total`, `rate`; `cpu_pct`, `rss_bytes`.
    pub metric: &'static str,
}

/// One point: tenths of a second since the recorder started (13 years fit), and a value.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    t: u32,
    v: f32,
}

/// Bounded rings of points, one per `Key`.
#[derive(Debug)]
pub struct Recorder {
    /// Unix ms of `t == 0`.
    epoch_ms: i64,
    series: HashMap<Key, VecDeque<Point>>,
    /// Series that could not be recorded because `MAX_SERIES` were already kept.
    refused: u64,
}

impl Recorder {
    /// An empty history starting at `epoch_ms` (unix ms).
    pub fn new(epoch_ms: i64) -> Recorder {
        Recorder {
            epoch_ms,
            series: HashMap::new(),
            refused: 0,
        }
    }

    /// Adds one sample taken at `at_ms`, then forgets series without a point in `WINDOW`.
    pub fn record(&mut self, at_ms: i64, values: impl IntoIterator<Item = (Key, f64)>) {
        let t = ((at_ms - self.epoch_ms).max(0) / 100).min(u32::MAX as i64) as u32;
        for (key, v) in values {
            if !v.is_finite() {
                continue;
            }
            let full = self.series.len() >= MAX_SERIES;
            let ring = match self.series.get_mut(&key) {
                Some(ring) => ring,
                None if full => {
                    self.refused += 1;
                    continue;
                }
                None => self
                    .series
                    .entry(key)
                    .or_insert_with(|| VecDeque::with_capacity(8)),
            };
            if ring.len() == POINTS {
                ring.pop_front();
            }
            ring.push_back(Point { t, v: v as f32 });
        }
        let window = (WINDOW.as_millis() / 100) as u32;
        self.series
            .retain(|_, ring| ring.back().is_some_and(|p| t.saturating_sub(p.t) < window));
    }

    /// Number of series kept.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    /// The series matching `q`, each with its points newer than `q.since_ms`, as JSON.
    pub fn query(&self, q: &Query) -> Value {
        let since = q.since_ms.map(|ms| (ms - self.epoch_ms).max(0) / 100);
        let mut out: BTreeMap<&Key, Vec<Value>> = BTreeMap::new();
        for (key, ring) in &self.series {
            if q.kind.as_deref().is_some_and(|k| k != key.kind)
                || q.name.as_deref().is_some_and(|n| n != key.name)
                || q.instance.is_some_and(|i| Some(i) != key.instance)
            {
                continue;
            }
            let points = ring
                .iter()
                .filter(|p| since.is_none_or(|s| i64::from(p.t) > s))
                .map(|p| {
                    let at = self.epoch_ms + i64::from(p.t) * 100;
                    // f32 → f64 widens exactly; round to what an f32 holds, for short JSON.
                    json!([at, (f64::from(p.v) * 1000.0).round() / 1000.0])
                })
                .collect();
            out.insert(key, points);
        }
        let series: Vec<Value> = out
            .into_iter()
            .map(|(k, points)| {
                json!({"kind": k.kind, "name": k.name, "instance": k.instance,
                       "metric": k.metric, "points": points})
            })
            .collect();
        json!({
            "interval_ms": INTERVAL.as_millis() as u64,
            "window_ms": WINDOW.as_millis() as u64,
            "max_series": MAX_SERIES,
            "refused_series": self.refused,
            "series": series,
        })
    }
}

/// Filters of `/api/history`: `?kind=queue&name=jobs&instance=0&since_ms=…`.
#[derive(Debug, Default, Deserialize)]
pub struct Query {
    /// `queue`, `pool` or `instance`.
    pub kind: Option<String>,
    /// A queue name, a job id, a unit name.
    pub name: Option<String>,
    /// An instance number.
    pub instance: Option<u32>,
    /// Only points taken after this (unix ms): what a chart that already has the rest asks.
    pub since_ms: Option<i64>,
}

/// The shared history: written by the sampler, read by `/api/history`.
pub type Shared = Arc<Mutex<Recorder>>;

/// What the previous sample saw, to turn totals into rates.
#[derive(Default)]
struct Previous {
    at_ms: i64,
    /// Queue name → (put_total, got_total).
    queues: HashMap<String, (u64, u64)>,
    /// Job id → items done.
    jobs: HashMap<u64, u64>,
    /// (unit, instance) → (pid, cpu ticks).
    cpu: HashMap<(String, u32), (u32, u64)>,
}

/// Samples every `INTERVAL` until `stop` is cancelled.
pub async fn run(ctx: Arc<Context>, history: Shared, stop: CancellationToken) {
    let mut prev = Previous::default();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let values = sample(&ctx, &mut prev).await;
        let at = prev.at_ms;
        history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(at, values);
    }
}

/// One sample of every series; updates `prev`.
async fn sample(ctx: &Context, prev: &mut Previous) -> Vec<(Key, f64)> {
    let now = crate::clock::now_ms();
    let secs = if prev.at_ms > 0 {
        Some(((now - prev.at_ms) as f64 / 1000.0).max(0.001))
    } else {
        None
    };
    let mut out = Vec::new();
    let key = |kind, name: &str, instance, metric| Key {
        kind,
        name: name.to_owned(),
        instance,
        metric,
    };

    let queues: Option<corral_proto::QueueListResult> =
        super::primitive_typed(ctx, corral_proto::Op::QueueList {}).await;
    let mut seen = HashMap::new();
    for q in queues.map(|q| q.queues).unwrap_or_default() {
        out.push((key("queue", &q.queue, None, "depth"), q.depth as f64));
        if let (Some(secs), Some(&(put, got))) = (secs, prev.queues.get(&q.queue)) {
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
            out.push((
                key("queue", &q.queue, None, "put_rate"),
                rate(q.put_total, put),
            ));
            out.push((
                key("queue", &q.queue, None, "got_rate"),
                rate(q.got_total, got),
            ));
        }
        seen.insert(q.queue, (q.put_total, q.got_total));
    }
    prev.queues = seen;

    let jobs = ctx.pool_list().await.map(|l| l.jobs).unwrap_or_default();
    let mut seen = HashMap::new();
    for j in jobs {
        // A finished job gets one last point, then no more.
        if j.finished_ms.is_some_and(|f| f < prev.at_ms) {
            continue;
        }
        let id = j.job.to_string();
        let done = (j.succeeded + j.failed) as u64;
        out.push((key("pool", &id, None, "done"), done as f64));
        out.push((key("pool", &id, None, "total"), j.total as f64));
        if let (Some(secs), Some(&before)) = (secs, prev.jobs.get(&j.job)) {
            out.push((
                key("pool", &id, None, "rate"),
                done.saturating_sub(before) as f64 / secs,
            ));
        }
        seen.insert(j.job, done);
    }
    prev.jobs = seen;

    let mut pids = Vec::new();
    if let Ok(status) = super::status(ctx, None).await {
        for u in status.units {
            for i in u.instances {
                if let Some(pid) = i.pid {
                    pids.push((u.name.clone(), i.instance, pid));
                }
            }
        }
    }
    // Reading /proc for every instance is blocking file I/O: off the runtime's one thread.
    let stats = tokio::task::spawn_blocking(move || {
        pids.into_iter()
            .filter_map(|(unit, n, pid)| Some((unit, n, pid, ProcStat::read(pid as i32)?)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut seen = HashMap::new();
    for (unit, n, pid, stat) in stats {
        out.push((
            key("instance", &unit, Some(n), "rss_bytes"),
            (stat.rss_pages * page_size()) as f64,
        ));
        if let (Some(secs), Some(&(was_pid, ticks))) = (secs, prev.cpu.get(&(unit.clone(), n)))
            && was_pid == pid
        {
            let used = stat.cpu_ticks.saturating_sub(ticks) as f64 / clock_ticks();
            out.push((
                key("instance", &unit, Some(n), "cpu_pct"),
                used / secs * 100.0,
            ));
        }
        seen.insert((unit, n), (pid, stat.cpu_ticks));
    }
    prev.cpu = seen;
    prev.at_ms = now;
    out
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as u64)
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(name: &str) -> Key {
        Key {
            kind: "queue",
            name: name.into(),
            instance: None,
            metric: "depth",
        }
    }

    #[test]
    fn a_series_keeps_at_most_points_newest_last() {
        let mut r = Recorder::new(0);
        for i in 0..(POINTS as i64 + 50) {
            r.record(i * 2000, [(k("q"), i as f64)]);
        }
        let v = r.query(&Query::default());
        let points = v["series"][0]["points"].as_array().unwrap();
        assert_eq!(points.len(), POINTS);
        assert_eq!(points.last().unwrap()[1], json!(POINTS as f64 + 49.0));
        assert_eq!(points[0][1], json!(50.0));
    }

    #[test]
    fn series_are_capped_and_stale_ones_forgotten() {
        let mut r = Recorder::new(0);
        r.record(0, (0..MAX_SERIES + 10).map(|i| (k(&format!("q{i}")), 1.0)));
        assert_eq!(r.series_count(), MAX_SERIES);
        assert_eq!(r.query(&Query::default())["refused_series"], json!(10));
        // One series goes on; the others get no point for a whole window and are dropped.
        let window = WINDOW.as_millis() as i64;
        r.record(window / 2, [(k("q0"), 2.0)]);
        r.record(window + 2000, [(k("q0"), 3.0)]);
        assert_eq!(r.series_count(), 1);
        let v = r.query(&Query {
            since_ms: Some(window / 2),
            ..Query::default()
        });
        assert_eq!(v["series"][0]["points"], json!([[window + 2000, 3.0]]));
    }

    #[test]
    fn queries_filter_by_kind_name_and_instance() {
        let mut r = Recorder::new(1_000);
        let inst = |n| Key {
            kind: "instance",
            name: "web".into(),
            instance: Some(n),
            metric: "cpu_pct",
        };
        r.record(3_000, [(k("q"), 1.0), (inst(0), 5.0), (inst(1), 7.0)]);
        let q = Query {
            kind: Some("instance".into()),
            instance: Some(1),
            ..Query::default()
        };
        let v = r.query(&q);
        assert_eq!(v["series"].as_array().unwrap().len(), 1);
        assert_eq!(v["series"][0]["points"], json!([[3_000, 7.0]]));
        assert_eq!(v["series"][0]["name"], json!("web"));
    }

    #[test]
    fn values_that_are_not_numbers_are_skipped() {
        let mut r = Recorder::new(0);
        r.record(0, [(k("q"), f64::NAN), (k("r"), f64::INFINITY)]);
        assert_eq!(r.series_count(), 0);
    }
}
