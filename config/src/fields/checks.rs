//! `[ready]`, `[health]` and `max_memory`: when an instance counts as started, when it
//! counts as sick, and how much memory it may use.

use std::time::Duration;

use toml::de::DeValue;

use super::{boolean, duration, int_in, string, string_items, type_error};
use crate::duration::parse_size;
use crate::parse::{Entry, Sink};
use crate::suggest::did_you_mean;
use crate::unit::{
    Check, HEALTH_FAILURES, HEALTH_INTERVAL, Health, HttpTarget, PROBE_TIMEOUT, READY_DEADLINE,
    READY_INTERVAL, Ready, host_port,
};

const READY_KEYS: &[&str] = &[
    "exec", "http", "tcp", "notify", "log", "interval", "timeout", "deadline",
];
const HEALTH_KEYS: &[&str] = &["exec", "http", "tcp", "interval", "timeout", "failures"];

/// The keys of one check table, each as an [`Entry`] of its own (so that the usual
/// converters report at the nested key or value).
fn table_entries<'a>(
    sink: &mut Sink<'_>,
    e: &Entry<'a>,
    what: &str,
    valid: &[&'static str],
) -> Option<Vec<(&'static str, Entry<'a>)>> {
    let DeValue::Table(table) = e.value.get_ref() else {
        type_error(
            sink,
            e,
            e.value,
            &format!("a table, e.g. [{what}] with tcp = \"127.0.0.1:8080\""),
            what,
        );
        return None;
    };
    let mut out = Vec::new();
    for (key, value) in table.iter() {
        let name = key.get_ref().as_ref();
        let entry = Entry {
            file: e.file,
            key,
            value,
        };
        match valid.iter().find(|k| **k == name) {
            Some(known) => out.push((*known, entry)),
            None => {
                let hint = match did_you_mean(name, valid.iter().copied()) {
                    Some(h) => format!(", did you mean `{h}`?"),
                    None => format!("; valid keys are: {}", valid.join(", ")),
                };
                let extra = if what == "health" && matches!(name, "notify" | "log") {
                    " (`notify` and `log` are readiness checks only)"
                } else {
                    ""
                };
                sink.push(
                    entry.key_at(),
                    format!("unknown key `{name}` in `[{what}]`{extra}{hint}"),
                );
            }
        }
    }
    Some(out)
}

/// The one check of a table: exactly one of `exec`, `http`, `tcp`, `notify`, `log`.
fn check(
    sink: &mut Sink<'_>,
    e: &Entry<'_>,
    what: &str,
    entries: &[(&'static str, Entry<'_>)],
    kinds: &[&str],
) -> Option<Check> {
    let given: Vec<&(&str, Entry<'_>)> = entries
        .iter()
        .filter(|(k, _)| Check::KINDS.contains(k))
        .collect();
    let list = kinds.join(", ");
    match given.as_slice() {
        [] => {
            sink.push(
                e.key_at(),
                format!("`[{what}]` needs one check: one of {list}, e.g. tcp = \"127.0.0.1:8080\""),
            );
            None
        }
        [(key, entry)] => one_check(sink, entry, &format!("{what}.{key}"), key),
        [_, (key, entry), ..] => {
            sink.push(
                entry.key_at(),
                format!("`[{what}]` takes exactly one check ({list}); remove `{key}` or the other"),
            );
            None
        }
    }
}

fn one_check(sink: &mut Sink<'_>, e: &Entry<'_>, what: &str, kind: &str) -> Option<Check> {
    match kind {
        "exec" => {
            let DeValue::Array(items) = e.value.get_ref() else {
                type_error(
                    sink,
                    e,
                    e.value,
                    "an array of strings, e.g. [\"pg_isready\"]",
                    what,
                );
                return None;
            };
            let argv = string_items(sink, e, items, what)?;
            if argv.first().is_none_or(String::is_empty) {
                sink.push(
                    e.value_at(),
                    format!("`{what}` needs at least the program to run"),
                );
                return None;
            }
            Some(Check::Exec(argv))
        }
        "http" => {
            let url = string(sink, e, "a URL like \"http://127.0.0.1:8080/health\"", what)?;
            match HttpTarget::parse(&filled(url)).map(|t| HttpTarget {
                url: url.to_owned(),
                ..t
            }) {
                Ok(t) => Some(Check::Http(t)),
                Err(problem) => {
                    sink.push(e.value_at(), format!("invalid URL for `{what}`: {problem}"));
                    None
                }
            }
        }
        "tcp" => {
            let addr = string(sink, e, "an address like \"127.0.0.1:5432\"", what)?;
            match host_port(&filled(addr)) {
                Some(_) => Some(Check::Tcp(addr.to_owned())),
                None => {
                    sink.push(
                        e.value_at(),
                        format!("invalid address `{addr}` for `{what}`: expected HOST:PORT, e.g. \"127.0.0.1:5432\" or \"[::1]:5432\""),
                    );
                    None
                }
            }
        }
        "notify" => match boolean(sink, e, what)? {
            true => Some(Check::Notify),
            false => {
                sink.push(
                    e.value_at(),
                    format!("`{what}` can only be true; remove `[ready]` for no readiness check"),
                );
                None
            }
        },
        "log" => {
            let pattern = string(sink, e, "a regular expression", what)?;
            if let Err(err) = regex::Regex::new(pattern) {
                let first = err.to_string();
                let last = first.lines().last().unwrap_or("").trim();
                sink.push(
                    e.value_at(),
                    format!("invalid regular expression for `{what}`: {last}"),
                );
                return None;
            }
            Some(Check::Log(pattern.to_owned()))
        }
        _ => None,
    }
}

/// `text` with `{instance}` and `{arg}` filled in with a number, as they will be at run
/// time, for checking what the address or URL will look like.
fn filled(text: &str) -> String {
    text.replace(crate::INSTANCE_PLACEHOLDER, "0")
        .replace(crate::ARG_PLACEHOLDER, "1")
}

fn timing(sink: &mut Sink<'_>, e: &Entry<'_>, what: &str) -> Option<Duration> {
    let d = duration(sink, e, what)?;
    if d < Duration::from_millis(10) {
        sink.push(e.value_at(), format!("`{what}` must be at least 10ms"));
        return None;
    }
    Some(d)
}

/// `[ready]`.
pub(crate) fn ready(sink: &mut Sink<'_>, e: &Entry<'_>) -> Option<Ready> {
    let entries = table_entries(sink, e, "ready", READY_KEYS)?;
    let check = check(sink, e, "ready", &entries, &Check::KINDS);
    let mut ready = Ready {
        check: check.clone().unwrap_or(Check::Notify),
        interval: READY_INTERVAL,
        timeout: PROBE_TIMEOUT,
        deadline: READY_DEADLINE,
    };
    let mut ok = check.is_some();
    for (key, entry) in &entries {
        let what = format!("ready.{key}");
        let slot = match *key {
            "interval" => &mut ready.interval,
            "timeout" => &mut ready.timeout,
            "deadline" => &mut ready.deadline,
            _ => continue,
        };
        match timing(sink, entry, &what) {
            Some(d) => *slot = d,
            None => ok = false,
        }
    }
    ok.then_some(ready)
}

/// `[health]`.
pub(crate) fn health(sink: &mut Sink<'_>, e: &Entry<'_>) -> Option<Health> {
    let entries = table_entries(sink, e, "health", HEALTH_KEYS)?;
    let check = check(sink, e, "health", &entries, &["exec", "http", "tcp"]);
    let mut health = Health {
        check: check.clone().unwrap_or(Check::Notify),
        interval: HEALTH_INTERVAL,
        timeout: PROBE_TIMEOUT,
        failures: HEALTH_FAILURES,
    };
    let mut ok = check.is_some();
    for (key, entry) in &entries {
        let what = format!("health.{key}");
        match *key {
            "interval" | "timeout" => match timing(sink, entry, &what) {
                Some(d) if *key == "interval" => health.interval = d,
                Some(d) => health.timeout = d,
                None => ok = false,
            },
            "failures" => match int_in(sink, entry, &what, 1..=1000) {
                Some(n) => health.failures = n,
                None => ok = false,
            },
            _ => {}
        }
    }
    ok.then_some(health)
}

/// `max_memory`: a size like `"200M"` or a number of bytes, at least 1 MiB.
pub(crate) fn memory_limit(sink: &mut Sink<'_>, e: &Entry<'_>) -> Option<u64> {
    let size = match e.value.get_ref() {
        DeValue::String(s) => match parse_size(s) {
            Ok(n) => n,
            Err(err) => {
                sink.push(
                    e.value_at(),
                    format!("invalid size for `max_memory`: {err}"),
                );
                return None;
            }
        },
        DeValue::Integer(_) => {
            let n = crate::parse::integer(e.value.get_ref()).unwrap_or(-1);
            u64::try_from(n).unwrap_or(0)
        }
        _ => {
            type_error(
                sink,
                e,
                e.value,
                "a size like \"200M\" or a number of bytes",
                "max_memory",
            );
            return None;
        }
    };
    if size < 1 << 20 {
        let shown = sink.snippet(e.file, e.value.span());
        sink.push(
            e.value_at(),
            format!("`max_memory` must be at least 1M (1048576 bytes), found {shown}"),
        );
        return None;
    }
    Some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            host_port("127.0.0.1:5432"),
            Some(("127.0.0.1".into(), 5432))
        );
        assert_eq!(host_port("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(host_port("localhost:1"), Some(("localhost".into(), 1)));
        for bad in [
            "127.0.0.1",
            ":80",
            "a:0",
            "a:65536",
            "::1:80",
            "a b:1",
            "a:x",
        ] {
            assert_eq!(host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn urls() {
        let t = HttpTarget::parse("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/health?x=1")
        );
        let t = HttpTarget::parse("http://example.test").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("example.test", 80, "/")
        );
        let t = HttpTarget::parse("http://[::1]:81?q").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 81, "/?q")
        );
        assert!(
            HttpTarget::parse("https://x/")
                .unwrap_err()
                .contains("https is not supported")
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://a:b/",
            "http://u@h/",
            "http://h/a b",
        ] {
            assert!(HttpTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
