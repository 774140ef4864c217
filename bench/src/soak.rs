//! The soak: many clients doing mixed operations for a while. Reports throughput, latency,
//! errors, lost increments and corrald's memory drift.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_client::Client;

use crate::peers::{Environment, rss_mb};
use crate::{Report, Sample, Series};

/// `clients` threads for `length`: queue put+get, counter add, lock acquire+release.
pub fn report(env: &Environment, clients: usize, length: Duration) -> anyhow::Result<Vec<Report>> {
    let pid = env.corrald_pid();
    let running = Arc::new(AtomicBool::new(true));
    let acked_adds = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (socket, running, acked_adds, errors, ops, latencies) = (
                env.corral_socket.clone(),
                running.clone(),
                acked_adds.clone(),
                errors.clone(),
                ops.clone(),
                latencies.clone(),
            );
            std::thread::spawn(move || {
                let Ok(client) = Client::connect_to(&socket) else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut lat = Vec::new();
                let mut n = 0u64;
                while running.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    let result = match (t as u64 + n) % 3 {
                        0 => client
                            .queue("soak")
                            .put(n)
                            .and_then(|_| client.queue("soak").get::<u64>(None).map(drop)),
                        1 => client.counter("soak").add(1).map(|_| {
                            acked_adds.fetch_add(1, Ordering::Relaxed);
                        }),
                        _ => client.lock("soak").acquire(None).and_then(|g| g.release()),
                    };
                    match result {
                        Ok(()) => {
                            if n % 16 == 0 {
                                lat.push(t0.elapsed().as_secs_f64() * 1e6);
                            }
                            ops.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    n += 1;
                }
                latencies.lock().unwrap().extend(lat);
            })
        })
        .collect();
    let settle = (length / 6).min(Duration::from_secs(10));
    std::thread::sleep(settle);
    let early_rss = rss_mb(pid);
    std::thread::sleep(length.saturating_sub(settle));
    running.store(false, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let took = start.elapsed();
    let late_rss = rss_mb(pid);
    let counted = Client::connect_to(&env.corral_socket)?
        .counter("soak")
        .get()? as u64;
    let acked = acked_adds.load(Ordering::Relaxed);
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
    };
    let errors = errors.load(Ordering::Relaxed);
    let name = format!("soak: {clients} clients × {}s mixed", length.as_secs());
    let one = |value| Series {
        system: "corral".into(),
        samples: vec![Sample {
            value,
            p50_us: None,
            p99_us: None,
        }],
        missing: None,
    };
    Ok(vec![
        Report {
            workload: name.clone(),
            note: format!(
                "queue put+get, counter add, lock acquire+release in turn; errors: {errors}; increments acknowledged {acked}, counted {counted} ({}); RSS after {}s {early_rss:.1} MB, at the end {late_rss:.1} MB",
                if acked == counted {
                    "none lost"
                } else {
                    "MISMATCH"
                },
                settle.as_secs()
            ),
            unit: "ops/s".into(),
            series: vec![Series {
                system: "corral".into(),
                samples: vec![Sample {
                    value: ops.load(Ordering::Relaxed) as f64 / took.as_secs_f64(),
                    p50_us: pct(0.5),
                    p99_us: pct(0.99),
                }],
                missing: (errors > 0 || acked != counted)
                    .then(|| format!("{errors} errors, {acked} acked vs {counted} counted")),
            }],
        },
        Report {
            workload: format!("{name}: RSS at the end ÷ RSS after {}s", settle.as_secs()),
            note: "memory drift under load (target: within 1.2)".into(),
            unit: "×".into(),
            series: vec![one(late_rss / early_rss.max(0.001))],
        },
    ])
}
