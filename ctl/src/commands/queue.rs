//! `queue put`, `get` (and `get --ack`, `ack`, `nack`), `len`, `list`, `purge`, `delete`,
//! `declare`.

use std::io::BufRead;
use std::process::ExitCode;

use corral_client::proto::{
    Op, QueueGetResult, QueueInfo, QueueListResult, QueuePutResult, RemovedResult,
};
use corral_client::{Client, Error, ErrorCode, Queue};
use serde_json::Value;

use super::{failed, failed_as, print_lines};
use crate::args::{Timeout, Wait, format_item, parse_item};
use crate::output::{Output, table};

pub fn put(
    client: &Client,
    out: &Output,
    name: &str,
    value: &str,
    wait: Wait,
) -> Result<ExitCode, Error> {
    let queue = client.queue(name);
    if value != "-" {
        let depth = match put_one(&queue, parse_item(value), wait) {
            Ok(depth) => depth,
            Err(e) => return full(e, name, wait),
        };
        if out.json {
            out.print_json(&QueuePutResult { depth });
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut put = 0usize;
    let mut depth = None;
    for line in std::io::stdin().lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                return Ok(failed(format!(
                    "reading stdin: {e} ({put} item(s) put before)"
                )));
            }
        };
        if line.is_empty() {
            continue;
        }
        match put_one(&queue, parse_item(&line), wait) {
            Ok(d) => {
                depth = Some(d);
                put += 1;
            }
            Err(e) => {
                if put > 0 {
                    let note = format!("{put} item(s) put before this error");
                    crate::output::print_error("partial", &note, &[]);
                }
                return full(e, name, wait);
            }
        }
    }
    if out.json {
        out.print_json(&serde_json::json!({ "put": put, "depth": depth }));
    }
    Ok(ExitCode::SUCCESS)
}

fn put_one(queue: &Queue<'_>, value: Value, wait: Wait) -> Result<usize, Error> {
    match wait {
        Wait::No => queue.try_put(value),
        Wait::For(_) | Wait::Forever => queue.put_timeout(value, wait.timeout()),
    }
}

/// Says "full" the way the user asked: `--no-wait` or `--timeout`.
fn full(e: Error, name: &str, wait: Wait) -> Result<ExitCode, Error> {
    match (e.code(), wait) {
        (Some(ErrorCode::Full | ErrorCode::Timeout), Wait::No) => {
            Ok(failed_as("full", format!("queue {name} is full")))
        }
        (Some(ErrorCode::Full | ErrorCode::Timeout), Wait::For(t)) => Ok(failed_as(
            "timeout",
            format!("queue {name}: no room within {t}"),
        )),
        _ => Err(e),
    }
}

pub fn get(
    client: &Client,
    out: &Output,
    name: &str,
    count: usize,
    wait: Wait,
) -> Result<ExitCode, Error> {
    let queue = client.queue(name);
    let result = match wait {
        Wait::No => queue.try_get_many::<Value>(count),
        Wait::For(_) | Wait::Forever => queue.get_many::<Value>(count, wait.timeout()),
    };
    let items = match result {
        Ok(items) => items,
        Err(e) => return nothing_got(name, wait, e),
    };
    if out.json {
        out.print_json(&QueueGetResult {
            items,
            leases: Vec::new(),
        });
        return Ok(ExitCode::SUCCESS);
    }
    Ok(print_lines(items.iter().map(format_item)))
}

/// A get that took nothing: an empty queue without waiting, or a wait that timed out,
/// is its own exit status; any other error is the caller's.
fn nothing_got(name: &str, wait: Wait, e: Error) -> Result<ExitCode, Error> {
    match wait {
        Wait::No if is_empty(&e) => Ok(failed_as("empty", format!("queue {name} is empty"))),
        Wait::For(t) if is_empty(&e) => Ok(failed_as(
            "timeout",
            format!("queue {name}: no item within {t}"),
        )),
        _ => Err(e),
    }
}

/// `queue get --ack`: the leases are detached, since this process exits before the
/// items are processed; the visibility timeout, `ack` or `nack` ends them.
pub fn get_ack(
    client: &Client,
    out: &Output,
    name: &str,
    count: usize,
    wait: Wait,
    visibility: Option<Timeout>,
) -> Result<ExitCode, Error> {
    let op = Op::QueueGet {
        queue: name.to_owned(),
        count,
        timeout_ms: match wait {
            Wait::For(t) => Some(t.millis()),
            Wait::Forever | Wait::No => None,
        },
        block: wait != Wait::No,
        ack: true,
        visibility_ms: visibility.map(|v| v.millis().max(1)),
        detach: true,
    };
    let result: QueueGetResult = match client.call(op) {
        Ok(result) => result,
        Err(e) => return nothing_got(name, wait, e),
    };
    if out.json {
        out.print_json(&result);
        return Ok(ExitCode::SUCCESS);
    }
    let lines = result
        .leases
        .iter()
        .zip(&result.items)
        .map(|(lease, item)| format!("{}\t{}", lease.id, format_item(item)));
    Ok(print_lines(lines.collect::<Vec<_>>()))
}

/// `queue ack` (`done`) and `queue nack`.
pub fn ack(
    client: &Client,
    out: &Output,
    name: &str,
    ids: &[u64],
    done: bool,
) -> Result<ExitCode, Error> {
    let queue = client.queue(name);
    let result = if done {
        queue.ack(ids)
    } else {
        queue.nack(ids)
    };
    match result {
        Ok(count) => {
            if out.json {
                out.print_json(&corral_client::proto::QueueAckResult { count });
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.code() == Some(ErrorCode::NotHeld) => Ok(failed_as(
            "not_held",
            e.to_string() + "; get the item again with `corralctl queue get --ack`",
        )),
        Err(e) => Err(e),
    }
}
fn is_empty(e: &Error) -> bool {
    matches!(e.code(), Some(ErrorCode::Empty | ErrorCode::Timeout))
}

pub fn len(client: &Client, out: &Output, name: &str) -> Result<ExitCode, Error> {
    let info = client.queue(name).info()?;
    if out.json {
        out.print_json(&info);
    } else {
        println!("{}", info.depth);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(client: &Client, out: &Output) -> Result<ExitCode, Error> {
    let queues = client.queues()?;
    if out.json {
        out.print_json(&QueueListResult { queues });
    } else {
        print!("{}", list_table(&queues));
    }
    Ok(ExitCode::SUCCESS)
}

fn list_table(queues: &[QueueInfo]) -> String {
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            vec![
                q.queue.clone(),
                q.depth.to_string(),
                q.in_flight.to_string(),
                q.maxsize.map_or("-".into(), |m| m.to_string()),
                q.put_total.to_string(),
                q.got_total.to_string(),
                waiting(q),
            ]
        })
        .collect();
    table(
        &[
            "QUEUE",
            "DEPTH",
            "IN FLIGHT",
            "MAXSIZE",
            "PUT",
            "GOT",
            "WAITING",
        ],
        &rows,
    )
}

/// Clients blocked on the queue: `2 get`, `1 put`, `2 get 1 put`, or `-`.
fn waiting(q: &QueueInfo) -> String {
    let mut parts = Vec::new();
    if q.waiting_getters > 0 {
        parts.push(format!("{} get", q.waiting_getters));
    }
    if q.waiting_putters > 0 {
        parts.push(format!("{} put", q.waiting_putters));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

pub fn purge(client: &Client, out: &Output, name: &str) -> Result<ExitCode, Error> {
    let removed = client.queue(name).purge()?;
    if out.json {
        out.print_json(&RemovedResult { removed });
    } else {
        println!("purged {removed} item(s) from queue {name}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn delete(client: &Client, out: &Output, name: &str) -> Result<ExitCode, Error> {
    let existed = client.queue(name).delete()?;
    if out.json {
        out.print_json(&RemovedResult {
            removed: usize::from(existed),
        });
    } else if existed {
        println!("deleted queue {name}");
    } else {
        println!("no queue {name}: nothing deleted");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn declare(
    client: &Client,
    out: &Output,
    name: &str,
    maxsize: Option<usize>,
    max_deliveries: Option<u32>,
    dead_letter: Option<&str>,
) -> Result<ExitCode, Error> {
    let info = client
        .queue(name)
        .declare_dead_letter(maxsize, max_deliveries, dead_letter)?;
    if out.json {
        out.print_json(&info);
    } else {
        let capacity = info
            .maxsize
            .map_or("unbounded".into(), |m| format!("maxsize {m}"));
        let dead = match (info.max_deliveries, &info.dead_letter) {
            (Some(n), Some(q)) => format!(", to {q} after {n} deliveries"),
            _ => String::new(),
        };
        println!("queue {name}: {capacity}{dead}, {} item(s)", info.depth);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(getters: usize, putters: usize) -> QueueInfo {
        QueueInfo {
            queue: "jobs".into(),
            depth: 3,
            in_flight: 0,
            maxsize: None,
            max_deliveries: None,
            dead_letter: None,
            put_total: 10,
            got_total: 7,
            waiting_getters: getters,
            waiting_putters: putters,
        }
    }

    #[test]
    fn waiting_column_names_both_sides() {
        assert_eq!(waiting(&info(0, 0)), "-");
        assert_eq!(waiting(&info(2, 0)), "2 get");
        assert_eq!(waiting(&info(0, 1)), "1 put");
        assert_eq!(waiting(&info(2, 1)), "2 get 1 put");
    }

    #[test]
    fn list_table_shows_capacity() {
        let mut bounded = info(0, 0);
        bounded.queue = "b".into();
        bounded.maxsize = Some(5);
        bounded.in_flight = 2;
        let t = list_table(&[info(1, 0), bounded]);
        assert_eq!(
            t,
            "QUEUE  DEPTH  IN FLIGHT  MAXSIZE  PUT  GOT  WAITING\n\
             jobs   3      0          -        10   7    1 get\n\
             b      3      2          5        10   7    -\n"
        );
    }
}
