//! Printing: tables and text for people, JSON with `--json`.

use std::sync::atomic::{AtomicBool, Ordering};

use corral_client::Error;
use serde::Serialize;

/// Whether errors are printed as JSON (`--json`); set once at start.
static JSON_ERRORS: AtomicBool = AtomicBool::new(false);

/// Prints every later error as JSON (with `--json`).
pub fn set_json_errors(on: bool) {
    JSON_ERRORS.store(on, Ordering::Relaxed);
}

/// Prints an error on stderr: `corralctl: MESSAGE` and each detail on its own indented
/// line; with `--json`, one line `{"code": CODE, "message": MESSAGE, "details": [...]}`
/// (`details` only if there are any). `code` is corrald's error code for its errors
/// (`not_found`, `failed`, `timeout`, ...), else one of corralctl's own: `usage`,
/// `unreachable`, `connection_lost`, `protocol`, `encode`, `decode`.
pub fn print_error(code: &str, message: &str, details: &[String]) {
    if JSON_ERRORS.load(Ordering::Relaxed) {
        /// The same shape as corrald's error bodies, in this order.
        #[derive(Serialize)]
        struct JsonError<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            details: &'a [String],
        }
        let body = JsonError {
            code,
            message,
            details,
        };
        eprintln!(
            "{}",
            serde_json::to_string(&body).expect("strings serialize")
        );
    } else {
        eprintln!("corralctl: {message}");
        for line in details {
            eprintln!("  {line}");
        }
    }
}

/// Prints a usage error (exit code 2): clap's style, or JSON with `--json`.
pub fn print_usage_error(message: &str) {
    if JSON_ERRORS.load(Ordering::Relaxed) {
        print_error("usage", message.trim_end(), &[]);
    } else {
        eprintln!("error: {message}\n\nFor more information, try '--help'.");
    }
}

/// The code, message and details [`print_error`] shows for a client error.
pub fn describe(e: &Error) -> (String, String, Vec<String>) {
    let code = match e {
        Error::Server(body) => {
            return (
                serde_json::to_value(body.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "failed".into()),
                body.message.clone(),
                body.details.clone(),
            );
        }
        Error::Connect { .. } => "unreachable",
        Error::Io(_) => "connection_lost",
        Error::Protocol(_) => "protocol",
        Error::Encode(_) => "encode",
        Error::Decode { .. } => "decode",
    };
    // Further lines of the message (e.g. how to start corrald) are its details.
    let text = e.to_string();
    let mut lines = text.lines();
    let message = lines.next().unwrap_or_default().to_owned();
    let details = lines.map(|l| l.trim().to_owned()).collect();
    (code.into(), message, details)
}

/// How results are printed.
pub struct Output {
    /// Print JSON.
    pub json: bool,
}

impl Output {
    /// Prints `value` as one JSON document.
    pub fn print_json(&self, value: &impl Serialize) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("results serialize")
        );
    }
}

/// Formats a duration given in milliseconds the way `ps` users expect: 4s, 3m12s, 2h05m, 3d04h.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Left-aligned columns separated by two spaces, the last column unpadded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_ps() {
        assert_eq!(human_duration(4_999), "4s");
        assert_eq!(human_duration(192_000), "3m12s");
        assert_eq!(human_duration(7_500_000), "2h05m");
        assert_eq!(human_duration(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
