//! Command-line values: parsing them and printing queue items.

use std::fmt;
use std::time::Duration;

use serde_json::{Number, Value};

/// A timeout given on the command line (`--timeout`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeout(Duration);

impl Timeout {
    /// The timeout.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// As the protocol's `timeout_ms`: rounded up, so that a short timeout is not 0.
    pub fn millis(self) -> u64 {
        u64::try_from(self.0.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&corral_config::format_duration(self.0))
    }
}

const TIMEOUT_FORMS: &str = "a duration such as 5s, 500ms, 1m30s, or seconds such as 5 or 0.5";

/// Parses `--timeout`: a duration as unit files write them (`5s`, `500ms`, `1m`,
/// `1m30s`, `0s`) or a plain number of seconds (`5`, `0.25`, `0`: do not wait).
/// `NaN`, negative and infinite values are refused: leaving `--timeout` out waits as
/// long as it takes.
pub fn parse_timeout(text: &str) -> Result<Timeout, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_nan() {
            return Err(format!("expected {TIMEOUT_FORMS}, got `{text}`"));
        }
        if secs.is_infinite() && secs > 0.0 {
            return Err(format!(
                "a timeout must be finite (got `{text}`); leave --timeout out to wait as long as it takes"
            ));
        }
        if secs < 0.0 {
            return Err(format!(
                "a timeout cannot be negative (got `{text}`); use 0 not to wait at all"
            ));
        }
        // `-0` is allowed, as 0.
        return Duration::try_from_secs_f64(secs.max(0.0))
            .map(Timeout)
            .map_err(|_| format!("timeout `{text}` is too long"));
    }
    if text.starts_with('-') {
        return Err(format!(
            "a timeout cannot be negative (got `{text}`); use 0 not to wait at all"
        ));
    }
    corral_config::parse_duration(text)
        .map(Timeout)
        .map_err(|e| format!("expected {TIMEOUT_FORMS}, got `{text}`: {e}"))
}

/// Parses `--count N`: a whole number, at least 1.
pub fn parse_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of items, at least 1, got `{text}`"
        )),
    }
}

/// How long an operation may wait: from `--timeout` and `--no-wait`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Wait {
    /// As long as it takes.
    Forever,
    /// At most this long.
    For(Timeout),
    /// Not at all (`block: false`).
    No,
}

impl Wait {
    /// From the two flags (which clap makes mutually exclusive).
    pub fn new(timeout: Option<Timeout>, no_wait: bool) -> Wait {
        match (timeout, no_wait) {
            (_, true) => Wait::No,
            (Some(t), false) => Wait::For(t),
            (None, false) => Wait::Forever,
        }
    }

    /// The timeout for a blocking call (`None`: forever).
    pub fn timeout(self) -> Option<Duration> {
        match self {
            Wait::For(t) => Some(t.duration()),
            Wait::Forever | Wait::No => None,
        }
    }
}

/// A queue item from the command line: JSON if `text` is valid JSON (`42`, `true`,
/// `{"a":1}`, `"quoted"`), else `text` itself as a JSON string.
pub fn parse_item(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// How `queue get` prints an item: a string as its raw text, anything else as compact
/// JSON.
pub fn format_item(item: &Value) -> String {
    match item {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An array element from the command line: an `i64`, else a finite float.
pub fn parse_number(text: &str) -> Result<Number, String> {
    let text = text.trim();
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Number::from(i));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| format!("expected an integer or a finite number, got `{text}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_json_when_they_parse_as_json() {
        assert_eq!(parse_item("42"), json!(42));
        assert_eq!(parse_item("-1.5"), json!(-1.5));
        assert_eq!(parse_item("true"), json!(true));
        assert_eq!(parse_item("null"), json!(null));
        assert_eq!(parse_item(r#"{"a": [1, 2]}"#), json!({"a": [1, 2]}));
        assert_eq!(parse_item(r#""42""#), json!("42"));
        assert_eq!(parse_item(" 7 "), json!(7));
    }

    #[test]
    fn other_values_are_strings() {
        assert_eq!(parse_item("Data from process"), json!("Data from process"));
        assert_eq!(parse_item(""), json!(""));
        assert_eq!(parse_item("{not json"), json!("{not json"));
        assert_eq!(parse_item("NaN"), json!("NaN"));
        assert_eq!(parse_item("1 2"), json!("1 2"));
        assert_eq!(parse_item("-"), json!("-"));
    }

    #[test]
    fn strings_print_raw_and_the_rest_as_compact_json() {
        assert_eq!(
            format_item(&json!("Data from process")),
            "Data from process"
        );
        assert_eq!(format_item(&json!("")), "");
        assert_eq!(format_item(&json!("say \"hi\"")), "say \"hi\"");
        assert_eq!(format_item(&json!(42)), "42");
        assert_eq!(format_item(&json!(null)), "null");
        assert_eq!(format_item(&json!({"a": [1, "x"]})), r#"{"a":[1,"x"]}"#);
        assert_eq!(format_item(&json!(["a"])), r#"["a"]"#);
    }

    #[test]
    fn put_then_get_round_trips_text() {
        for text in ["Data from process", "42", "{\"a\":1}", "plain"] {
            assert_eq!(format_item(&parse_item(text)), text);
        }
    }

    #[test]
    fn timeouts_are_seconds_or_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_timeout("2.5").unwrap().duration(), ms(2500));
        assert_eq!(parse_timeout("0").unwrap().duration(), Duration::ZERO);
        assert_eq!(parse_timeout("-0").unwrap().to_string(), "0s");
        assert_eq!(parse_timeout("1e-3").unwrap().duration(), ms(1));
        assert_eq!(parse_timeout("5s").unwrap().duration(), ms(5000));
        assert_eq!(parse_timeout("500ms").unwrap().duration(), ms(500));
        assert_eq!(parse_timeout("1m").unwrap().duration(), ms(60_000));
        assert_eq!(parse_timeout(" 1m30s ").unwrap().duration(), ms(90_000));
        assert_eq!(parse_timeout("0s").unwrap().duration(), Duration::ZERO);
        assert_eq!(parse_timeout("2").unwrap().to_string(), "2s");
        assert_eq!(parse_timeout("0.5").unwrap().to_string(), "500ms");
    }

    #[test]
    fn bad_timeouts_say_why() {
        for negative in ["-1", "-0.5", "-inf", "-5s"] {
            let e = parse_timeout(negative).unwrap_err();
            assert!(e.contains("cannot be negative"), "{negative}: {e}");
        }
        for nan in ["NaN", "nan", "-NaN"] {
            let e = parse_timeout(nan).unwrap_err();
            assert!(e.contains("such as 5s"), "{nan}: {e}");
        }
        for infinite in ["inf", "infinity", "+inf"] {
            let e = parse_timeout(infinite).unwrap_err();
            assert!(e.contains("must be finite"), "{infinite}: {e}");
        }
        assert!(parse_timeout("1e300").unwrap_err().contains("too long"));
        let e = parse_timeout("5 parsecs").unwrap_err();
        assert!(
            e.contains("got `5 parsecs`") && e.contains("unknown unit"),
            "{e}"
        );
        assert!(parse_timeout("").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn counts_are_at_least_one() {
        assert_eq!(parse_count("3"), Ok(3));
        assert!(parse_count("0").unwrap_err().contains("at least 1"));
        assert!(parse_count("-1").is_err());
        assert!(parse_count("x").is_err());
    }

    #[test]
    fn wait_modes() {
        let t = parse_timeout("3").unwrap();
        assert_eq!(Wait::new(None, false), Wait::Forever);
        assert_eq!(Wait::new(Some(t), false), Wait::For(t));
        assert_eq!(
            Wait::new(Some(t), false).timeout(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(Wait::new(None, true), Wait::No);
        assert_eq!(Wait::new(None, false).timeout(), None);
    }

    #[test]
    fn numbers_are_integers_or_finite_floats() {
        assert_eq!(parse_number("-3").unwrap(), Number::from(-3));
        assert!(parse_number("-3").unwrap().is_i64());
        assert_eq!(parse_number("2.5").unwrap().as_f64(), Some(2.5));
        assert!(parse_number("2.5").unwrap().is_f64());
        assert!(parse_number("inf").is_err());
        assert!(parse_number("NaN").is_err());
        assert!(parse_number("x").is_err());
    }
}
