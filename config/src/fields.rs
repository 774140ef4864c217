//! Typed conversion of a unit's merged entries into a [`Unit`].
//!
//! Each key has one small converter that either yields a typed value or
//! reports an error at the exact key or value and yields `None`, in which
//! case the default is kept so that conversion can go on and find the
//! remaining errors of the unit.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::DeValue;

pub(crate) mod checks;

use crate::duration::{format_duration, parse_duration, parse_size};
use crate::parse::{At, Entry, Sink, integer, type_error, type_name};
use crate::signal::{signal_name, signal_names, signal_number};
use crate::suggest::did_you_mean;
use crate::unit::{
    MAX_INSTANCES, MIN_LOG_MAX_SIZE, PoolMode, RestartPolicy, Rlimit, Rlimits, Unit, UnitKind,
};

/// A unit's keys after `extends` resolution: the last writer of each key
/// wins, except `env` and `rlimits`, which merge per variable / per limit.
pub(crate) struct Merged<'a> {
    /// The unit name.
    pub name: String,
    /// The unit's own file.
    pub file: usize,
    /// Every key, from whichever file in the chain wrote it last.
    pub entries: BTreeMap<&'static str, Entry<'a>>,
    /// Merged `env` variables.
    pub env: BTreeMap<&'a str, Entry<'a>>,
    /// Merged `rlimits` limits.
    pub rlimits: BTreeMap<&'a str, Entry<'a>>,
    /// Some file in the `extends` chain could not be used (syntax errors,
    /// unknown base, cycle), so "missing key" errors would be misleading.
    pub incomplete: bool,
}

/// Where a unit's dependencies were written, parallel to `Unit::after` and
/// `Unit::requires`, for the cross-unit checks.
#[derive(Debug, Default)]
pub(crate) struct DepSites {
    /// Position of the `after` key, if written.
    pub after_key: Option<At>,
    /// Position of the `requires` key, if written.
    pub requires_key: Option<At>,
    /// Position of each `after` element.
    pub after: Vec<At>,
    /// Position of each `requires` element.
    pub requires: Vec<At>,
}

/// Converts merged entries into a unit, reporting every invalid key.
pub(crate) fn build_unit(m: &Merged<'_>, source: PathBuf, sink: &mut Sink<'_>) -> (Unit, DepSites) {
    let get = |key: &str| m.entries.get(key);
    let kind = get("kind")
        .and_then(|e| enum_value(sink, e, "kind", "kind", &UnitKind::ALL))
        .unwrap_or(UnitKind::Service);
    let command = match get("command") {
        Some(e) => command(sink, e).unwrap_or_default(),
        None => {
            missing_command(sink, m);
            Vec::new()
        }
    };
    let mut unit = Unit::with_defaults(&m.name, source, kind, command);
    let mut sites = DepSites::default();
    for (&key, entry) in &m.entries {
        apply(&mut unit, &mut sites, key, entry, sink);
    }
    unit.env = env(sink, &m.env);
    unit.rlimits = rlimits(sink, &m.rlimits);
    unit.schedule = schedule(&unit, m, sink);
    if unit.schedule.is_some() && get("autostart").is_none() {
        // A scheduled task runs on its schedule, not also at every start of corrald.
        unit.autostart = false;
    }
    check_restart_delays(&unit, m, sink);
    (unit, sites)
}

fn missing_command(sink: &mut Sink<'_>, m: &Merged<'_>) {
    if !m.incomplete {
        sink.push(
            At {
                file: m.file,
                offset: 0,
            },
            "missing required key `command`, e.g. command = [\"/usr/bin/server\", \"--port\", \"8080\"]",
        );
    }
}

/// Applies one key's value to `unit`; `kind` and `command` were handled
/// first because other defaults depend on them, and `env`/`rlimits` are
/// applied from their merged maps.
fn apply(unit: &mut Unit, sites: &mut DepSites, key: &str, e: &Entry<'_>, sink: &mut Sink<'_>) {
    match key {
        "instances" => set(&mut unit.instances, int_in(sink, e, key, 1..=MAX_INSTANCES)),
        "restart" => set(
            &mut unit.restart,
            enum_value(sink, e, key, "restart policy", &RestartPolicy::ALL),
        ),
        "restart_delay" => set(&mut unit.restart_delay, duration(sink, e, key)),
        "restart_delay_max" => set(&mut unit.restart_delay_max, duration(sink, e, key)),
        "start_limit_burst" => set(
            &mut unit.start_limit_burst,
            int_in(sink, e, key, 1..=u32::MAX),
        ),
        "start_limit_interval" => set(&mut unit.start_limit_interval, duration(sink, e, key)),
        "stop_signal" => {
            if let Some((name, number)) = stop_signal(sink, e) {
                unit.stop_signal = name;
                unit.stop_signal_number = number;
            }
        }
        "stop_timeout" => set(&mut unit.stop_timeout, duration(sink, e, key)),
        "daemon" => set(&mut unit.daemon, boolean(sink, e, key)),
        "autostart" => set(&mut unit.autostart, boolean(sink, e, key)),
        "working_dir" => unit.working_dir = working_dir(sink, e),
        "user" => unit.user = identity(sink, e, key),
        "group" => unit.group = identity(sink, e, key),
        "umask" => unit.umask = umask(sink, e),
        "after" => {
            sites.after_key = Some(e.key_at());
            (unit.after, sites.after) = unit_names(sink, e, key).into_iter().unzip();
        }
        "requires" => {
            sites.requires_key = Some(e.key_at());
            (unit.requires, sites.requires) = unit_names(sink, e, key).into_iter().unzip();
        }
        "extends" => unit.extends = string(sink, e, "a unit name", key).map(str::to_owned),
        "log_max_size" => set(&mut unit.log_max_size, log_max_size(sink, e)),
        "log_keep" => set(&mut unit.log_keep, int_in(sink, e, key, 0..=u32::MAX)),
        "memory_max" => unit.memory_max = size_at_least(sink, e, key, 1 << 20),
        "cpu_max" => unit.cpu_max = cpu_percent(sink, e),
        "tasks_max" => unit.tasks_max = int_in(sink, e, key, 1..=u32::MAX).map(u64::from),
        "workers" => unit.workers = int_in(sink, e, key, 1..=4096),
        "mode" => set(
            &mut unit.mode,
            enum_value(sink, e, key, "pool mode", &PoolMode::ALL),
        ),
        "env_file" => unit.env_files = env_files(sink, e),
        "ready" => unit.ready = checks::ready(sink, e),
        "health" => unit.health = checks::health(sink, e),
        "max_memory" => unit.max_memory = checks::memory_limit(sink, e),
        "env" | "rlimits" => require_table(sink, e, key),
        // "kind" and "command" were converted before the defaults were set.
        _ => {}
    }
}

/// Overwrites a defaulted field only when the value was valid.
fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn string<'v>(sink: &mut Sink<'_>, e: &Entry<'v>, expected: &str, key: &str) -> Option<&'v str> {
    match e.value.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        _ => {
            type_error(sink, e, e.value, expected, key);
            None
        }
    }
}

fn enum_value<T: Copy>(
    sink: &mut Sink<'_>,
    e: &Entry<'_>,
    key: &str,
    noun: &str,
    all: &[(T, &'static str)],
) -> Option<T> {
    let names: Vec<&str> = all.iter().map(|(_, name)| *name).collect();
    let text = string(sink, e, &format!("one of: {}", names.join(", ")), key)?;
    if let Some((value, _)) = all.iter().find(|(_, name)| *name == text) {
        return Some(*value);
    }
    let hint = did_you_mean(text, names.iter().copied())
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default();
    let message = format!(
        "unknown {noun} `{text}`, expected one of: {}{hint}",
        names.join(", ")
    );
    sink.push(e.value_at(), message);
    None
}

fn command(sink: &mut Sink<'_>, e: &Entry<'_>) -> Option<Vec<String>> {
    let items = match e.value.get_ref() {
        DeValue::Array(items) => items,
        DeValue::String(_) => {
            sink.push(
                e.value_at(),
                "command must be an array of strings, e.g. command = [\"sleep\", \"10\"]; \
                 to run through a shell use command = [\"/bin/sh\", \"-c\", \"sleep 10 && echo done\"]",
            );
            return None;
        }
        _ => {
            type_error(sink, e, e.value, "an array of strings", "command");
            return None;
        }
    };
    if items.is_empty() {
        sink.push(
            e.value_at(),
            "`command` must not be empty: it needs at least the program to run",
        );
        return None;
    }
    let args = string_items(sink, e, items, "command")?;
    if args[0].is_empty() {
        sink.push(
            e.at(&items[0]),
            "the program (first element of `command`) must not be empty",
        );
        return None;
    }
    Some(args)
}

/// Every element as a string; errors at each bad element. `None` if any
/// element was bad.
fn string_items(
    sink: &mut Sink<'_>,
    e: &Entry<'_>,
    items: &[Spanned<DeValue<'_>>],
    key: &str,
) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match item.get_ref() {
            DeValue::String(s) if s.contains('\0') => {
                sink.push(
                    e.at(item),
                    format!("`{key}` arguments must not contain NUL bytes"),
                );
                ok = false;
            }
            DeValue::String(s) => out.push(s.to_string()),
            _ => {
                type_error(sink, e, item, "only strings", key);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn int_in(
    sink: &mut Sink<'_>,
    e: &Entry<'_>,
    key: &str,
    range: RangeInclusive<u32>,
) -> Option<u32> {
    let Some(n) = integer(e.value.get_ref()) else {
        let hint = quoted_number_hint(e.value.get_ref());
        type_error(sink, e, e.value, &format!("an integer{hint}"), key);
        return None;
    };
    match u32::try_from(n) {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            let message = if *range.end() == u32::MAX {
                format!("`{key}` must be at least {}, found {n}", range.start())
            } else {
                format!(
                    "`{key}` must be between {} and {}, found {n}",
                    range.start(),
                    range.end()
                )
            };
            sink.push(e.value_at(), message);
            None
        }
    }
}

/// A hint for `"5"` where `5` was meant.
fn quoted_number_hint(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(s) if s.trim().parse::<i64>().is_ok() => " (remove the quotes)",
        _ => "",
    }
}

fn boolean(sink: &mut Sink<'_>, e: &Entry<'_>, key: &str) -> Option<bool> {
    match e.value.get_ref() {
        DeValue::Boolean(b) => Some(*b),
        DeValue::String(s) if matches!(s.as_ref(), "true" | "false") => {
            sink.push(
                e.value_at(),
                format!("expected a boolean for `{key}`, found a string; write {key} = {s} without quotes"),
            );
            None
        }
        _ => {
            type_error(sink, e, e.value, "a boolean (true or false)", key);
            None
        }
    }
}

fn duration(sink: &mut Sink<'_>, e: &Entry<'_>, key: &str) -> Option<Duration> {
    const EXPECTED: &str = "a duration string like \"10s\" or \"500ms\"";
    match e.value.get_ref() {
        DeValue::String(s) => match parse_duration(s) {
            Ok(d) => Some(d),
            Err(err) => {
                sink.push(e.value_at(), format!("invalid duration for `{key}`: {err}"));
                None
            }
        },
        DeValue::Integer(_) | DeValue::Float(_) => {
            let written = sink.snippet(e.file, e.value.span());
            sink.push(
                e.value_at(),
                format!(
                    "expected {EXPECTED} for `{key}`, found {}; write {key} = \"{written}s\" for seconds",
                    type_name(e.value.get_ref())
                ),
            );
            None
        }
        _ => {
            type_error(sink, e, e.value, EXPECTED, key);
            None
        }
    }
}

fn stop_signal(sink: &mut Sink<'_>, e: &Entry<'_>) -> Option<(String, i32)> {
    let number = match e.value.get_ref() {
        DeValue::String(s) => match signal_number(s) {
            Some(n) => n,
            None => {
                unknown_signal(sink, e, s);
                return None;
            }
        },
        DeValue::Integer(_) => {
            let n = integer(e.value.get_ref()).unwrap_or(0);
            match i32::try_from(n) {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => {
                    sink.push(
                        e.value_at(),
                        format!("signal numbers must be between 1 and 64, found {n}"),
                    );
                    return None;
                }
            }
        }
        _ => {
            type_error(
                sink,
                e,
                e.value,
                "a signal name like \"SIGTERM\" or a number",
                "stop_signal",
            );
            return None;
        }
    };
    match signal_name(number) {
        Some(name) => Some((name, number)),
        None => {
            sink.push(
                e.value_at(),
                format!("signal {number} is reserved by the C library and cannot be used"),
            );
            None
        }
    }
}

fn unknown_signal(sink: &mut Sink<'_>, e: &Entry<'_>, written: &str) {
    let upper = written.trim().to_ascii_uppercase();
    let prefixed = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let names: Vec<String> = signal_names().collect();
    let hint = did_you_mean(&prefixed, names.iter().map(String::as_str))
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default();
    sink.push(
        e.value_at(),
        format!("unknown signal `{written}` for `stop_signal`{hint}"),
    );
}

fn working_dir(sink: &mut Sink<'_>, e: &Entry<'_>) -> Option<PathBuf> {
    let dir = string(sink, e, "an absolute path", "working_dir")?;
    if dir.contains('\0') {
        sink.push(e.value_at(), "`working_dir` must not contain NUL bytes");
        return None;
    }
    if !dir.starts_with('/') {
        sink.push(
            e.value_at(),
            format!("`working_dir` must be an absolute path, found `{dir}`"),
        );
        return None;
    }
    Some(PathBuf::from(dir))
}

/// `user` / `group`: a name or numeric id, always written as a string.
fn identity(sink: &mut Sink<'_>, e: &Entry<'_>, key: &str) -> Option<String> {
    if let DeValue::Integer(_) = e.value.get_ref() {
        let written = sink.snippet(e.file, e.value.span());
        sink.push(
            e.value_at(),
            format!("expected a string for `{key}`, found an integer; quote numeric ids: {key} = \"{written}\""),
        );
        return None;
    }
    let name = string(sink, e, "a name or numeric id as a string", key)?;
    if name.is_empty() || name.contains('\0') {
        sink.push(
            e.value_at(),
            format!("`{key}` must be a non-empty name without NUL bytes"),
        );
        return None;
    }
    Some(name.to_owned())
}

/// `umask`: an octal string (`"022"`, `"0022"`, `"0o022"`), or an integer
/// taken as its numeric value (so `0o022` and `18` are the same mask).
fn umask(sink: &mut Sink<'_>, e: &Entry<'_>) -> Option<u32> {
    let value = match e.value.get_ref() {
        DeValue::String(s) => {
            let digits = s.strip_prefix("0o").unwrap_or(s);
            let valid = !digits.is_empty() && digits.len() <= 4;
            match u32::from_str_radix(digits, 8) {
                Ok(n) if valid => i128::from(n),
                _ => {
                    sink.push(
                        e.value_at(),
                        format!("invalid umask `{s}`: expected octal digits like \"022\""),
                    );
                    return None;
                }
            }
        }
        DeValue::Integer(_) => integer(e.value.get_ref()).unwrap_or(-1),
        _ => {
            type_error(sink, e, e.value, "an octal string like \"022\"", "umask");
            return None;
        }
    };
    match u32::try_from(value) {
        Ok(n) if n <= 0o777 => Some(n),
        _ => {
            let shown = sink.snippet(e.file, e.value.span());
            sink.push(
                e.value_at(),
                format!("umask must be between 0 and 0777, found {shown}"),
            );
            None
        }
    }
}

/// `after` / `requires`: the names with the position of each.
fn unit_names(sink: &mut Sink<'_>, e: &Entry<'_>, key: &str) -> Vec<(String, At)> {
    let items = match e.value.get_ref() {
        DeValue::Array(items) => items,
        DeValue::String(s) => {
            sink.push(
                e.value_at(),
                format!("expected an array of unit names for `{key}`, found a string; write {key} = [\"{s}\"]"),
            );
            return Vec::new();
        }
        _ => {
            type_error(sink, e, e.value, "an array of unit names", key);
            return Vec::new();
        }
    };
    let mut names = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item.get_ref() {
            DeValue::String(s) => names.push((s.to_string(), e.at(item))),
            _ => type_error(sink, e, item, "only unit names (strings)", key),
        }
    }
    names
}

fn log_max_size(sink: &mut Sink<'_>, e: &Entry<'_>) -> Option<u64> {
    size_at_least(sink, e, "log_max_size", MIN_LOG_MAX_SIZE)
}

/// A size: a string with a suffix (`"10M"`) or a number of bytes, at least `min`.
fn size_at_least(sink: &mut Sink<'_>, e: &Entry<'_>, key: &str, min: u64) -> Option<u64> {
    let size = match e.value.get_ref() {
        DeValue::String(s) => match parse_size(s) {
            Ok(n) => n,
            Err(err) => {
                sink.push(e.value_at(), format!("invalid size for `{key}`: {err}"));
                return None;
            }
        },
        DeValue::Integer(_) => {
            let n = integer(e.value.get_ref()).unwrap_or(-1);
            u64::try_from(n).unwrap_or(0)
        }
        _ => {
            type_error(
                sink,
                e,
                e.value,
                "a size like \"10M\" or a number of bytes",
                key,
            );
            return None;
        }
    };
    if size < min {
        let shown = sink.snippet(e.file, e.value.span());
        sink.push(
            e.value_at(),
            format!("`{key}` must be at least {min} bytes, found {shown}"),
        );
        return None;
    }
    Some(size)
}

/// `cpu_max`: a percentage of one CPU, `"50%"` (more than 100% for several CPUs).
fn cpu_percent(sink: &mut Sink<'_>, e: &Entry<'_>) -> Option<u32> {
    let text = string(sink, e, "a percentage of one CPU like \"50%\"", "cpu_max")?;
    match text
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<u32>().ok())
    {
        Some(pct) if (1..=100_000).contains(&pct) => Some(pct),
        _ => {
            sink.push(
                e.value_at(),
                format!("`cpu_max` is a percentage of one CPU from 1% (\"50%\", or \"200%\" for two CPUs), found `{text}`"),
            );
            None
        }
    }
}

fn require_table(sink: &mut Sink<'_>, e: &Entry<'_>, key: &str) {
    if !matches!(e.value.get_ref(), DeValue::Table(_)) {
        type_error(sink, e, e.value, "a table", key);
    }
}

fn env(sink: &mut Sink<'_>, vars: &BTreeMap<&str, Entry<'_>>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (&name, e) in vars {
        let name_ok = env_name(sink, name, e);
        if let Some(value) = env_value(sink, name, e) {
            if name_ok {
                out.insert(name.to_owned(), value);
            }
        }
    }
    out
}

/// `schedule` or `every`, with `overlap` and `catch_up`: only for tasks, one of the two.
fn schedule(unit: &Unit, m: &Merged<'_>, sink: &mut Sink<'_>) -> Option<crate::Schedule> {
    let get = |key: &str| m.entries.get(key);
    let cron = get("schedule");
    let every = get("every");
    if let (Some(_), Some(e)) = (cron, every) {
        sink.push(
            e.key_at(),
            "give either `schedule` (a cron pattern) or `every` (an interval), not both",
        );
        return None;
    }
    let Some(e) = cron.or(every) else {
        for key in ["overlap", "catch_up"] {
            if let Some(e) = get(key) {
                sink.push(
                    e.key_at(),
                    format!("`{key}` applies to scheduled tasks: add `schedule` or `every`"),
                );
            }
        }
        return None;
    };
    let key = if cron.is_some() { "schedule" } else { "every" };
    if unit.kind != UnitKind::Task {
        sink.push(
            e.key_at(),
            format!(
                "`{key}` needs kind = \"task\" (this unit is a {}): a schedule starts a run that ends",
                unit.kind.as_str()
            ),
        );
        return None;
    }
    let when = if cron.is_some() {
        let pattern = string(sink, e, "a cron pattern", key)?;
        if let Err(err) = pattern.parse::<croner::Cron>() {
            sink.push(
                e.value_at(),
                format!("invalid cron pattern `{pattern}`: {err}; e.g. schedule = \"*/5 * * * *\" (minute hour day-of-month month day-of-week)"),
            );
            return None;
        }
        crate::When::Cron(pattern.to_owned())
    } else {
        let d = duration(sink, e, key)?;
        if d < Duration::from_secs(1) {
            sink.push(e.value_at(), "`every` must be at least 1s");
            return None;
        }
        crate::When::Every(d)
    };
    let overlap = match get("overlap") {
        Some(o) => enum_value(sink, o, "overlap", "overlap", &crate::Overlap::ALL)?,
        None => crate::Overlap::Skip,
    };
    let catch_up = match get("catch_up") {
        Some(c) => boolean(sink, c, "catch_up")?,
        None => false,
    };
    Some(crate::Schedule {
        when,
        overlap,
        catch_up,
    })
}

/// `env_file`: one path or an array of them, each absolute, `-` before an optional one.
fn env_files(sink: &mut Sink<'_>, e: &Entry<'_>) -> Vec<crate::EnvFile> {
    let written: Vec<(String, At)> = match e.value.get_ref() {
        DeValue::String(s) => vec![(s.to_string(), e.value_at())],
        DeValue::Array(items) => {
            let Some(paths) = string_items(sink, e, items, "env_file") else {
                return Vec::new();
            };
            paths
                .into_iter()
                .zip(items.iter().map(|i| e.at(i)))
                .collect()
        }
        _ => {
            type_error(sink, e, e.value, "a path or an array of paths", "env_file");
            return Vec::new();
        }
    };
    written
        .into_iter()
        .filter_map(|(path, at)| match crate::EnvFile::parse(&path) {
            Ok(f) => Some(f),
            Err(problem) => {
                sink.push(at, format!("`env_file` entries {problem}"));
                None
            }
        })
        .collect()
}

fn env_name(sink: &mut Sink<'_>, name: &str, e: &Entry<'_>) -> bool {
    let Some(problem) = crate::env_name_problem(name) else {
        return true;
    };
    sink.push(
        e.key_at(),
        format!("environment variable names {problem}: `{name}`"),
    );
    false
}

fn env_value(sink: &mut Sink<'_>, name: &str, e: &Entry<'_>) -> Option<String> {
    match e.value.get_ref() {
        DeValue::String(s) if s.contains('\0') => {
            sink.push(
                e.value_at(),
                format!("environment variable `{name}` must not contain NUL bytes"),
            );
            None
        }
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
            let written = sink.snippet(e.file, e.value.span());
            sink.push(
                e.value_at(),
                format!(
                    "environment variable `{name}` must be a string, found {}; quote it: {name} = \"{written}\"",
                    type_name(e.value.get_ref())
                ),
            );
            None
        }
        _ => {
            type_error(sink, e, e.value, "a string", &format!("env.{name}"));
            None
        }
    }
}

fn rlimits(sink: &mut Sink<'_>, limits: &BTreeMap<&str, Entry<'_>>) -> Rlimits {
    let mut out = Rlimits::default();
    for (&name, e) in limits {
        let parsed = rlimit(sink, name, e);
        match out.slot_mut(name) {
            Some(slot) => *slot = parsed.or(*slot),
            None => {
                let hint = match did_you_mean(name, Rlimits::NAMES) {
                    Some(h) => format!(", did you mean `{h}`?"),
                    None => format!("; valid limits are: {}", Rlimits::NAMES.join(", ")),
                };
                sink.push(e.key_at(), format!("unknown resource limit `{name}`{hint}"));
            }
        }
    }
    out
}

/// One limit: `N`, `"unlimited"`, or `{ soft = …, hard = … }`.
fn rlimit(sink: &mut Sink<'_>, name: &str, e: &Entry<'_>) -> Option<Rlimit> {
    let what = format!("rlimits.{name}");
    let DeValue::Table(table) = e.value.get_ref() else {
        let n = limit_value(sink, e, e.value, &what)?;
        return Some(Rlimit { soft: n, hard: n });
    };
    let mut soft = None;
    let mut hard = None;
    let mut bad = false;
    for (key, value) in table.iter() {
        let slot = match key.get_ref().as_ref() {
            "soft" => &mut soft,
            "hard" => &mut hard,
            other => {
                let hint = match did_you_mean(other, ["soft", "hard"]) {
                    Some(h) => format!(", did you mean `{h}`?"),
                    None => "; expected `soft` and `hard`".to_owned(),
                };
                sink.push(
                    e.at_span(key.span()),
                    format!("unknown key `{other}` in `{what}`{hint}"),
                );
                bad = true;
                continue;
            }
        };
        *slot = limit_value(sink, e, value, &format!("{what}.{}", key.get_ref()));
        bad |= slot.is_none();
    }
    if bad {
        return None;
    }
    let (Some(soft), Some(hard)) = (soft, hard) else {
        sink.push(
            e.value_at(),
            format!("`{what}` needs both `soft` and `hard`, e.g. {{ soft = 1024, hard = 4096 }}"),
        );
        return None;
    };
    if soft > hard {
        sink.push(
            e.value_at(),
            format!("the soft limit is greater than the hard limit in `{what}`"),
        );
        return None;
    }
    Some(Rlimit { soft, hard })
}

fn limit_value(
    sink: &mut Sink<'_>,
    e: &Entry<'_>,
    value: &Spanned<DeValue<'_>>,
    what: &str,
) -> Option<u64> {
    match value.get_ref() {
        DeValue::String(s) if s == "unlimited" || s == "infinity" => Some(Rlimit::UNLIMITED),
        DeValue::Integer(_) => match integer(value.get_ref()).map(u64::try_from) {
            Some(Ok(n)) => Some(n),
            _ => {
                sink.push(e.at(value), format!("`{what}` must not be negative"));
                None
            }
        },
        _ => {
            type_error(
                sink,
                e,
                value,
                "a non-negative integer or \"unlimited\"",
                what,
            );
            None
        }
    }
}

/// The back-off cannot start above its own ceiling. The error goes where
/// the user can act: on `restart_delay_max` if written, else on
/// `restart_delay`.
fn check_restart_delays(unit: &Unit, m: &Merged<'_>, sink: &mut Sink<'_>) {
    if unit.restart_delay_max >= unit.restart_delay {
        return;
    }
    let delay = format_duration(unit.restart_delay);
    let max = format_duration(unit.restart_delay_max);
    let (entry, message) = match (
        m.entries.get("restart_delay_max"),
        m.entries.get("restart_delay"),
    ) {
        (Some(e), _) => (
            e,
            format!("`restart_delay_max` ({max}) must not be less than `restart_delay` ({delay})"),
        ),
        (None, Some(e)) => (
            e,
            format!(
                "`restart_delay` ({delay}) is greater than the default `restart_delay_max` ({max}); set restart_delay_max too"
            ),
        ),
        (None, None) => return,
    };
    sink.push(entry.value_at(), message);
}
