//! `status`, `start`, `stop`, `restart`, `wait`, `reload`, `run`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use corral_client::proto::{
    ExitStatus, LogLine, Op, RunParent, RunResult, StatusResult, UnitStatus,
};
use corral_client::{Client, Error};

use crate::args::{Timeout, Wait};
use crate::output::{Output, human_duration, table};

pub fn status(client: &Client, out: &Output, unit: Option<&str>) -> Result<ExitCode, Error> {
    let status = client.status(unit)?;
    if out.json {
        out.print_json(&status);
    } else {
        print!("{}", status_table(&status));
    }
    Ok(ExitCode::SUCCESS)
}

fn status_table(status: &StatusResult) -> String {
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (depth, entry) in by_parent(&status.units) {
        let indent = "  ".repeat(depth);
        let unit = match entry {
            Entry::Unit(unit) => unit,
            Entry::Program(parent) => {
                rows.push(vec![
                    format!("{indent}{}", program_label(parent)),
                    "-".into(),
                    "-".into(),
                    parent.pid.map_or("-".into(), |p| p.to_string()),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "parent program of the tasks below".into(),
                ]);
                continue;
            }
        };
        let name = format!("{indent}{}", unit.name);
        if !unit.loaded {
            let first = unit.errors.first().cloned().unwrap_or_default();
            rows.push(vec![
                name.clone(),
                "-".into(),
                "not-loaded".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!(
                    "{} error(s) in its unit file, first: {first}",
                    unit.errors.len()
                ),
            ]);
            errors.extend(unit.errors.iter().cloned());
        }
        for i in &unit.instances {
            rows.push(vec![
                name.clone(),
                i.instance.to_string(),
                i.state.as_str().to_string(),
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.uptime_ms.map_or("-".into(), human_duration),
                i.restarts.to_string(),
                i.last_exit.map_or("-".into(), |e| e.to_string()),
                checks_cell(i),
                i.reason
                    .clone()
                    .or_else(|| i.check_error.as_ref().map(|e| format!("check: {e}")))
                    .unwrap_or_default(),
            ]);
        }
    }
    let mut text = table(
        &[
            "UNIT",
            "INSTANCE",
            "STATE",
            "PID",
            "UPTIME",
            "RESTARTS",
            "LAST EXIT",
            "CHECKS",
            "REASON",
        ],
        &rows,
    );
    if !errors.is_empty() {
        text.push_str("\nNot loaded: correct these unit files, then run `corralctl reload`:\n");
        for e in errors {
            text.push_str("  ");
            text.push_str(&e);
            text.push('\n');
        }
    }
    text
}

/// A row of `status`: a unit, or a program that started transient units (`run` with a
/// `parent`) and is not itself an instance of a unit.
enum Entry<'a> {
    Unit(&'a UnitStatus),
    Program(&'a RunParent),
}

/// The units in `status`'s order, each transient unit moved under its parent: under the
/// unit whose instance has the parent's pid (a child's child), or under a row of the
/// parent program, after the first unit that names it. Each with its depth.
fn by_parent(units: &[UnitStatus]) -> Vec<(usize, Entry<'_>)> {
    let mut by_pid: BTreeMap<u32, usize> = BTreeMap::new();
    for (n, unit) in units.iter().enumerate() {
        for pid in unit.instances.iter().filter_map(|i| i.pid) {
            by_pid.entry(pid).or_insert(n);
        }
    }
    // Each unit's place: under a unit, under a program (by pid), or at the top.
    let mut under_unit: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut under_program: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let mut top = Vec::new();
    for (n, unit) in units.iter().enumerate() {
        match unit.parent.as_ref().and_then(|p| p.pid) {
            Some(pid) => match by_pid.get(&pid) {
                Some(&parent) if parent != n => under_unit.entry(parent).or_default().push(n),
                _ => {
                    let members = under_program.entry(pid).or_default();
                    if members.is_empty() {
                        top.push(n);
                    }
                    members.push(n);
                }
            },
            None => top.push(n),
        }
    }
    fn walk<'a>(
        units: &'a [UnitStatus],
        n: usize,
        depth: usize,
        under_unit: &BTreeMap<usize, Vec<usize>>,
        seen: &mut [bool],
        out: &mut Vec<(usize, Entry<'a>)>,
    ) {
        if std::mem::replace(&mut seen[n], true) {
            return;
        }
        out.push((depth, Entry::Unit(&units[n])));
        for &child in under_unit.get(&n).into_iter().flatten() {
            walk(units, child, depth + 1, under_unit, seen, out);
        }
    }
    let mut seen = vec![false; units.len()];
    let mut out = Vec::with_capacity(units.len());
    for n in top {
        let program = units[n].parent.as_ref().filter(|p| p.pid.is_some());
        match program.and_then(|p| Some((p, under_program.get(&p.pid?)?))) {
            Some((parent, members)) => {
                out.push((0, Entry::Program(parent)));
                for &m in members {
                    walk(units, m, 1, &under_unit, &mut seen, &mut out);
                }
            }
            None => walk(units, n, 0, &under_unit, &mut seen, &mut out),
        }
    }
    // Units whose parents are each other (a pid reused) have no top: shown at the end.
    for n in 0..units.len() {
        walk(units, n, 0, &under_unit, &mut seen, &mut out);
    }
    out
}

/// A parent program as `status` names it: its label, or its pid. A long label keeps its
/// start and its end (the program and its script's name): `python3 /home/…/job.py`.
fn program_label(parent: &RunParent) -> String {
    const HEAD: usize = 16;
    const TAIL: usize = 24;
    if parent.label.is_empty() {
        return parent.pid.map_or("?".into(), |p| format!("pid {p}"));
    }
    let chars: Vec<char> = parent.label.chars().collect();
    if chars.len() <= HEAD + 1 + TAIL {
        return parent.label.clone();
    }
    let mut short: String = chars[..HEAD].iter().collect();
    short.push('…');
    short.extend(&chars[chars.len() - TAIL..]);
    short
}

/// Readiness and health in a word: `not ready`, `ready`, `healthy`, `failing 2`, or `-`
/// for an instance without checks (or without a process).
fn checks_cell(i: &corral_client::proto::InstanceStatus) -> String {
    match (i.ready, i.healthy) {
        (_, Some(false)) => format!("failing {}", i.health_failures),
        (_, Some(true)) => "healthy".into(),
        (Some(false), None) => "not ready".into(),
        (Some(true), None) => "ready".into(),
        (None, None) => "-".into(),
    }
}

/// `start`: with `wait` other than [`Wait::No`], once the instances have started.
pub fn start(
    client: &Client,
    out: &Output,
    units: &[String],
    wait: Wait,
) -> Result<ExitCode, Error> {
    let result = match wait {
        Wait::No => client.start(&refs(units))?,
        _ => client.start_and_wait(&refs(units), wait.timeout())?,
    };
    report(out, &result, "started", &result.units)
}

pub fn stop(client: &Client, out: &Output, units: &[String]) -> Result<ExitCode, Error> {
    let result = client.stop(&refs(units))?;
    report(out, &result, "stopped", &result.units)
}

/// `restart`: with `wait` other than [`Wait::No`], once the instances have started again.
pub fn restart(
    client: &Client,
    out: &Output,
    units: &[String],
    wait: Wait,
) -> Result<ExitCode, Error> {
    let result = match wait {
        Wait::No => client.restart(&refs(units))?,
        _ => client.restart_and_wait(&refs(units), wait.timeout())?,
    };
    report(out, &result, "restarted", &result.units)
}

fn report(
    out: &Output,
    result: &impl serde::Serialize,
    verb: &str,
    units: &[String],
) -> Result<ExitCode, Error> {
    if out.json {
        out.print_json(result);
    } else {
        println!("{verb}: {}", units.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn kill(
    client: &Client,
    out: &Output,
    units: &[String],
    signal: &str,
) -> Result<ExitCode, Error> {
    let result: corral_client::proto::UnitsResult = client.call(Op::Kill {
        units: units.to_vec(),
        signal: signal.to_owned(),
    })?;
    report(out, &result, &format!("sent {signal} to"), &result.units)
}

pub fn wait(
    client: &Client,
    out: &Output,
    unit: &str,
    timeout: Option<Timeout>,
) -> Result<ExitCode, Error> {
    let timeout_ms = timeout.map(|t| t.millis());
    let result = client.wait(unit, timeout_ms)?;
    if out.json {
        out.print_json(&result);
    } else {
        for i in &result.instances {
            let exit = i.exit.map_or("never ran".into(), |e| e.to_string());
            println!("{unit}.{}: {} ({exit})", i.instance, i.state.as_str());
        }
    }
    Ok(if result.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn timers(client: &Client, out: &Output) -> Result<ExitCode, Error> {
    let result: corral_client::proto::TimersResult =
        client.call(corral_client::proto::Op::Timers {})?;
    if out.json {
        out.print_json(&result);
        return Ok(ExitCode::SUCCESS);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rows: Vec<Vec<String>> = result
        .timers
        .iter()
        .map(|t| {
            let last = t.last_run_ms.map_or("-".into(), |ms| {
                format!("{} ago", human_duration(now.saturating_sub(ms)))
            });
            let next = match t.next_run_ms {
                Some(ms) if t.queued => {
                    format!("queued; then in {}", human_duration(ms.saturating_sub(now)))
                }
                Some(ms) => format!("in {}", human_duration(ms.saturating_sub(now))),
                None => "never".into(),
            };
            vec![
                t.unit.clone(),
                t.schedule.clone(),
                t.overlap.clone(),
                last,
                next,
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["UNIT", "SCHEDULE", "OVERLAP", "LAST RUN", "NEXT RUN"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

pub fn reload(client: &Client, out: &Output) -> Result<ExitCode, Error> {
    let result = client.reload()?;
    if out.json {
        out.print_json(&result);
    } else {
        for (label, names) in [
            ("added", &result.added),
            ("removed", &result.removed),
            ("changed", &result.changed),
        ] {
            if !names.is_empty() {
                println!("{label}: {}", names.join(" "));
            }
        }
        println!("{} unit(s) unchanged", result.unchanged.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(
    client: &Client,
    out: &Output,
    name: Option<String>,
    wait: bool,
    daemon: bool,
    env: Vec<String>,
    command: Vec<String>,
) -> Result<ExitCode, Error> {
    let env = parse_env(&env)?;
    let working_dir = std::env::current_dir()
        .ok()
        .map(|d| d.display().to_string());
    let op = Op::Run {
        name,
        command,
        env,
        working_dir,
        wait,
        daemon,
        stdio_fds: false,
        stop_on_disconnect: false,
        parent: None,
        anon_session: None,
    };
    let stdout = std::io::stdout();
    let result: RunResult = client.call_streaming(op, |event| {
        if out.json {
            println!("{event}");
        } else if let Ok(line) = serde_json::from_value::<LogLine>(event) {
            let mut lock = stdout.lock();
            let _ = writeln!(lock, "{}", line.line);
        }
    })?;
    if out.json {
        out.print_json(&result);
    } else if !wait {
        println!("{}", result.unit);
    }
    Ok(match result.exit {
        None => ExitCode::SUCCESS,
        Some(exit) => exit_code_of(exit),
    })
}

/// The shell's convention: the exit code, or 128 + the signal number.
pub fn exit_code_of(exit: ExitStatus) -> ExitCode {
    match (exit.code, exit.signal) {
        (Some(code), _) => ExitCode::from(code.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        (None, None) => ExitCode::from(1),
    }
}

fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>, Error> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Server(corral_client::proto::ErrorBody::new(
                corral_client::proto::ErrorCode::BadRequest,
                format!("--env expects KEY=VALUE, got `{pair}`"),
            ))),
        })
        .collect()
}

fn refs(items: &[String]) -> Vec<&str> {
    items.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, pid: u32, parent: Option<(u32, &str)>) -> UnitStatus {
        let mut json = serde_json::json!({
            "name": name, "kind": "task", "daemon": false, "transient": parent.is_some(),
            "instances": [{"instance": 0, "state": "running", "pid": pid, "restarts": 0}],
        });
        if let Some((pid, label)) = parent {
            json["parent"] = serde_json::json!({"pid": pid, "label": label});
        }
        serde_json::from_value(json).expect("a unit status")
    }

    #[test]
    fn status_lists_children_under_their_parent() {
        let status = StatusResult {
            units: vec![
                unit("run-1", 501, Some((500, "python3 demo.py"))),
                unit("run-2", 502, Some((500, "python3 demo.py"))),
                unit("run-3", 503, Some((501, "python3 -c child"))),
                unit("run-4", 504, Some((700, ""))),
                unit("web", 100, None),
            ],
            supervision: String::new(),
        };
        let text = status_table(&status);
        let firsts: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
            .collect();
        assert_eq!(
            firsts,
            ["python3", "run-1", "run-3", "run-2", "pid", "run-4", "web"],
            "{text}"
        );
        let indents: Vec<usize> = text
            .lines()
            .skip(1)
            .map(|l| l.len() - l.trim_start().len())
            .collect();
        assert_eq!(indents, [0, 2, 4, 2, 0, 2, 0], "{text}");
        assert!(text.contains("python3 demo.py"), "{text}");
        assert!(text.contains("pid 700"), "{text}");
        let long = RunParent {
            pid: Some(1),
            label: "python3 /home/someone/projects/with/a/long/path/job.py --flag".into(),
        };
        assert_eq!(
            program_label(&long),
            "python3 /home/so…/long/path/job.py --flag"
        );
    }

    #[test]
    fn parents_of_each_other_are_still_shown() {
        let status = StatusResult {
            units: vec![
                unit("run-1", 501, Some((502, ""))),
                unit("run-2", 502, Some((501, ""))),
            ],
            supervision: String::new(),
        };
        let text = status_table(&status);
        assert!(text.contains("run-1") && text.contains("run-2"), "{text}");
    }
}
