//! One module per group of operations, mirroring `daemon/src/handlers/`.

pub mod array;
pub mod counter;
pub mod lock;
pub mod logs;
pub mod pool;
pub mod queue;
pub mod sync;
pub mod system;
pub mod top;
pub mod units;

use std::io::Write;
use std::process::ExitCode;

/// Prints `message` as corralctl's error and returns exit code 1 (the operation failed).
pub fn failed(message: impl std::fmt::Display) -> ExitCode {
    failed_as("failed", message)
}

/// [`failed`] with an error code for `--json` (`empty`, `full`, `timeout`, `locked`).
pub fn failed_as(code: &str, message: impl std::fmt::Display) -> ExitCode {
    crate::output::print_error(code, &message.to_string(), &[]);
    ExitCode::from(1)
}

/// Prints lines to stdout. A write error (e.g. a closed pipe) is reported, not a panic:
/// what was taken from corrald to be printed may be lost, and the exit code says so.
pub fn print_lines(lines: impl IntoIterator<Item = String>) -> ExitCode {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    for line in lines {
        if let Err(e) = writeln!(lock, "{line}") {
            return failed(format!("writing to stdout: {e}"));
        }
    }
    match lock.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(format!("writing to stdout: {e}")),
    }
}
