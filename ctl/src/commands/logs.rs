//! `logs`.

use std::io::Write;
use std::process::ExitCode;

use corral_client::proto::{LogLine, LogsResult, Op};
use corral_client::{Client, Error};

use crate::output::Output;

pub fn logs(
    client: &Client,
    out: &Output,
    unit: &str,
    lines: usize,
    follow: bool,
    instance: Option<u32>,
) -> Result<ExitCode, Error> {
    // Tag lines with their instance only when they can come from several.
    let tagged = instance.is_none()
        && client
            .status(Some(unit))?
            .units
            .first()
            .is_some_and(|u| u.instances.len() > 1);
    let stdout = std::io::stdout();
    let print = |line: &LogLine| {
        let mut lock = stdout.lock();
        let _ = if out.json {
            writeln!(lock, "{}", serde_json::to_string(line).expect("serializes"))
        } else if tagged {
            writeln!(lock, "[{}] {}", line.instance, line.line)
        } else {
            writeln!(lock, "{}", line.line)
        };
        let _ = lock.flush();
    };
    let op = Op::Logs {
        unit: unit.to_owned(),
        instance,
        lines,
        follow,
    };
    let result: LogsResult = client.call_streaming(op, |event| {
        if let Ok(line) = serde_json::from_value::<LogLine>(event) {
            print(&line);
        }
    })?;
    for line in &result.lines {
        print(line);
    }
    Ok(ExitCode::SUCCESS)
}
