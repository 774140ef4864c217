//! Spanned TOML walking: turns unit-file text into raw, positioned entries.
//!
//! Nothing here uses serde for unit files. Walking the spanned document by
//! hand is what lets every mistake in a file be reported at once, each at
//! the exact key or value, instead of serde's first-error-wins.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, ConfigErrors};
use crate::suggest::did_you_mean;

/// Every key a unit file may contain, in documentation order.
pub(crate) const UNIT_KEYS: &[&str] = &[
    "kind",
    "command",
    "instances",
    "restart",
    "restart_delay",
    "restart_delay_max",
    "start_limit_burst",
    "start_limit_interval",
    "stop_signal",
    "stop_timeout",
    "daemon",
    "working_dir",
    "env",
    "env_file",
    "user",
    "group",
    "umask",
    "rlimits",
    "after",
    "requires",
    "autostart",
    "extends",
    "log_max_size",
    "log_keep",
    "workers",
    "mode",
    "schedule",
    "every",
    "overlap",
    "catch_up",
    "ready",
    "health",
    "max_memory",
    "memory_max",
    "cpu_max",
    "tasks_max",
];

/// A position in one of the files being loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    /// Index into the file list given to the loader.
    pub file: usize,
    /// Byte offset into that file's text.
    pub offset: usize,
}

/// Collects errors against the loaded files, converting byte offsets into
/// line:column as they come in.
pub(crate) struct Sink<'f> {
    files: &'f [(PathBuf, String)],
    errors: Vec<ConfigError>,
}

impl<'f> Sink<'f> {
    pub fn new(files: &'f [(PathBuf, String)]) -> Self {
        Sink {
            files,
            errors: Vec::new(),
        }
    }

    /// Records `message` at `at`.
    pub fn push(&mut self, at: At, message: impl Into<String>) {
        let (path, text) = &self.files[at.file];
        self.errors
            .push(ConfigError::at_offset(path, text, at.offset, message));
    }

    /// The source text of `span` in `file`, for quoting the user's own
    /// spelling back in a hint.
    pub fn snippet(&self, file: usize, span: Range<usize>) -> &'f str {
        self.files[file].1.get(span).unwrap_or("")
    }

    /// `Ok` when nothing was recorded, else every error sorted and deduped.
    pub fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.errors).normalize())
        }
    }
}

/// One `key = value` as written in some file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// The file the key was written in (may differ from the unit's own
    /// file when inherited through `extends`).
    pub file: usize,
    /// Span of the key.
    pub key: &'a Spanned<std::borrow::Cow<'a, str>>,
    /// The value.
    pub value: &'a Spanned<DeValue<'a>>,
}

impl<'a> Entry<'a> {
    /// Position of the key.
    pub fn key_at(&self) -> At {
        At {
            file: self.file,
            offset: self.key.span().start,
        }
    }

    /// Position of the value.
    pub fn value_at(&self) -> At {
        self.at(self.value)
    }

    /// Position of the start of `span` in this entry's file.
    pub fn at_span(&self, span: Range<usize>) -> At {
        At {
            file: self.file,
            offset: span.start,
        }
    }

    /// Position of a value nested somewhere inside this entry.
    pub fn at(&self, value: &Spanned<DeValue<'_>>) -> At {
        At {
            file: self.file,
            offset: value.span().start,
        }
    }
}

/// One unit file after syntax checking and top-level key checking.
pub(crate) struct RawUnit<'a> {
    /// The unit name (file stem).
    pub name: String,
    /// Index of the file in the loader's list.
    pub file: usize,
    /// The known keys written in this file.
    pub entries: BTreeMap<&'static str, Entry<'a>>,
    /// The file had syntax errors: its entries were dropped, because the
    /// parser's recovery guesses would only add confusing follow-on errors.
    pub broken: bool,
}

/// Parses one file, reporting every syntax error. Returns the document,
/// and whether it had syntax errors.
pub(crate) fn parse_document<'a>(
    file: usize,
    text: &'a str,
    sink: &mut Sink<'_>,
) -> (Spanned<DeTable<'a>>, bool) {
    let (table, errors) = DeTable::parse_recoverable(text);
    for err in &errors {
        let offset = err.span().map_or(0, |s| s.start);
        sink.push(At { file, offset }, first_line(err.message()));
    }
    (table, !errors.is_empty())
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message).trim_end()
}

/// Collects the known top-level keys of a parsed document, reporting
/// unknown keys (with a suggestion) and dates anywhere in known values.
pub(crate) fn collect_entries<'a>(
    name: &str,
    file: usize,
    table: &'a DeTable<'a>,
    broken: bool,
    sink: &mut Sink<'_>,
) -> RawUnit<'a> {
    let mut entries = BTreeMap::new();
    if !broken {
        for (key, value) in table.iter() {
            let entry = Entry { file, key, value };
            match UNIT_KEYS.iter().find(|k| **k == key.get_ref().as_ref()) {
                Some(known) => {
                    report_dates(&entry, value, sink);
                    entries.insert(*known, entry);
                }
                None => sink.push(
                    entry.key_at(),
                    unknown_key_message(key.get_ref(), UNIT_KEYS),
                ),
            }
        }
    }
    RawUnit {
        name: name.to_owned(),
        file,
        entries,
        broken,
    }
}

/// ``unknown key `comand`, did you mean `command`?``, or the list of valid
/// keys when nothing is close.
pub(crate) fn unknown_key_message(key: &str, valid: &[&str]) -> String {
    match did_you_mean(key, valid.iter().copied()) {
        Some(hint) => format!("unknown key `{key}`, did you mean `{hint}`?"),
        None => format!("unknown key `{key}`; valid keys are: {}", valid.join(", ")),
    }
}

/// The message for a date or time where none can be.
pub(crate) const DATE_MESSAGE: &str = "dates are not valid here";

/// Reports every date or time nested anywhere inside `value`.
fn report_dates(entry: &Entry<'_>, value: &Spanned<DeValue<'_>>, sink: &mut Sink<'_>) {
    match value.get_ref() {
        DeValue::Datetime(_) => sink.push(entry.at(value), DATE_MESSAGE),
        DeValue::Array(items) => {
            for item in items.iter() {
                report_dates(entry, item, sink);
            }
        }
        DeValue::Table(table) => {
            for (_, item) in table.iter() {
                report_dates(entry, item, sink);
            }
        }
        _ => {}
    }
}

/// "a string", "an integer", … for "found …" messages.
pub(crate) fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The value of a TOML integer, whatever its radix; `None` only when it
/// does not fit in an `i128`, which TOML's 64-bit integers always do.
pub(crate) fn integer(value: &DeValue<'_>) -> Option<i128> {
    match value {
        DeValue::Integer(int) => i128::from_str_radix(int.as_str(), int.radix()).ok(),
        _ => None,
    }
}

/// Reports "expected {expected} for `{what}`, found {type}" at `value`.
///
/// Dates get the dedicated date message instead: it is the same message
/// [`collect_entries`] already emitted at that spot, so it is deduplicated.
pub(crate) fn type_error(
    sink: &mut Sink<'_>,
    entry: &Entry<'_>,
    value: &Spanned<DeValue<'_>>,
    expected: &str,
    what: &str,
) {
    let message = match value.get_ref() {
        DeValue::Datetime(_) => DATE_MESSAGE.to_owned(),
        other => format!(
            "expected {expected} for `{what}`, found {}",
            type_name(other)
        ),
    };
    sink.push(entry.at(value), message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (usize, Vec<String>) {
        let files = vec![(PathBuf::from("t.toml"), text.to_owned())];
        let mut sink = Sink::new(&files);
        let (doc, broken) = parse_document(0, &files[0].1, &mut sink);
        let raw = collect_entries("t", 0, doc.get_ref(), broken, &mut sink);
        let count = raw.entries.len();
        let errors = match sink.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        };
        (count, errors)
    }

    #[test]
    fn known_and_unknown_keys() {
        let (count, errors) = run("command = [\"x\"]\ncomand = 1\nzzz = 2\n");
        assert_eq!(count, 1);
        assert_eq!(
            errors[0],
            "t.toml:2:1: unknown key `comand`, did you mean `command`?"
        );
        assert!(
            errors[1].starts_with("t.toml:3:1: unknown key `zzz`; valid keys are: kind, command,")
        );
    }

    #[test]
    fn syntax_errors_drop_entries() {
        let (count, errors) = run("command = [\"x\"]\nkind = \n");
        assert_eq!(count, 0);
        assert!(errors[0].starts_with("t.toml:2:"), "{errors:?}");
    }

    #[test]
    fn nested_dates_are_reported() {
        let (_, errors) = run("command = [\"x\", 1979-05-27]\n[env]\nA = 07:32:00\n");
        assert_eq!(
            errors,
            [
                "t.toml:1:17: dates are not valid here",
                "t.toml:3:5: dates are not valid here"
            ]
        );
    }
}
