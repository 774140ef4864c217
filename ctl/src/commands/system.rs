//! `shutdown`.

use std::process::ExitCode;

use corral_client::proto::{Op, ShutdownPlan, ShutdownProgress};
use corral_client::{Client, Error};

use crate::output::{Output, human_duration, table};

pub fn shutdown(
    client: &Client,
    out: &Output,
    no_wait: bool,
    plan: bool,
) -> Result<ExitCode, Error> {
    if plan {
        return print_plan(client, out);
    }
    let op = Op::Shutdown {
        plan: false,
        wait: !no_wait,
    };
    let result: serde_json::Value = client.call_streaming(op, |event| {
        if out.json {
            println!("{event}");
        } else if let Ok(progress) = serde_json::from_value::<ShutdownProgress>(event) {
            eprintln!("waiting for: {}", progress.waiting_for.join(" "));
        }
    })?;
    if !no_wait {
        // corrald closes every connection once it has written its state and is exiting.
        client.wait_closed()?;
    }
    if out.json {
        out.print_json(&result);
    } else if !no_wait {
        println!("corrald stopped");
    } else {
        println!("corrald is shutting down");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_plan(client: &Client, out: &Output) -> Result<ExitCode, Error> {
    let plan: ShutdownPlan = client.call(Op::Shutdown {
        plan: true,
        wait: false,
    })?;
    if out.json {
        out.print_json(&plan);
        return Ok(ExitCode::SUCCESS);
    }
    if plan.steps.is_empty() {
        println!("nothing is running: corrald would exit at once");
        return Ok(ExitCode::SUCCESS);
    }
    let ms = |v: u64| format!("{:.1}s", v as f64 / 1000.0);
    let rows: Vec<Vec<String>> = plan
        .steps
        .iter()
        .map(|s| {
            let action = match s.wait_ms {
                Some(w) => format!("join up to {}, then {}", ms(w), s.signal),
                None => s.signal.clone(),
            };
            vec![
                s.order.to_string(),
                s.unit.clone(),
                s.instances.len().to_string(),
                action,
                ms(s.kill_after_ms),
                s.reason.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["STEP", "UNIT", "RUNNING", "ACTION", "SIGKILL AFTER", "WHY"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// `corralctl nodes`: the nodes of the shared backend.
pub fn nodes(client: &Client, out: &Output) -> Result<ExitCode, Error> {
    let result = client.nodes()?;
    if out.json {
        out.print_json(&result);
        return Ok(ExitCode::SUCCESS);
    }
    let Some(backend) = &result.backend else {
        println!(
            "this corrald has no shared backend: its queues, counters and locks are its own \
             (start it with --backend postgres://USER:PASSWORD@HOST:PORT/DATABASE to share them)"
        );
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "backend {backend}, this node: {}",
        result.node.as_deref().unwrap_or("?")
    );
    print!("{}", nodes_table(&result.nodes));
    Ok(ExitCode::SUCCESS)
}

fn nodes_table(nodes: &[corral_client::proto::NodeInfo]) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                if n.alive { "alive" } else { "expired" }.to_string(),
                format!("{} ago", human_duration(n.heartbeat_age_ms)),
                human_duration(n.lease_ms),
                if n.locks.is_empty() {
                    "-".to_string()
                } else {
                    n.locks.join(",")
                },
                n.lock_waiters.to_string(),
            ]
        })
        .collect();
    table(
        &["NODE", "STATE", "HEARTBEAT", "LEASE", "LOCKS", "WAITING"],
        &rows,
    )
}
