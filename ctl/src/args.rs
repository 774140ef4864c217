//! Command-line values: parsing them and printing queue items.

use std::fmt;
use std::time::Duration;

use serde_json::{Number, Value};

/// A timeout given on the command line, in seconds: finite and non-negative, or
/// infinite (`inf`: wait forever).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(f64);

impl Seconds {
    /// The timeout, or `None` for one too long to be a [`Duration`] (i.e. forever).
    pub fn duration(self) -> Option<Duration> {
        Duration::try_from_secs_f64(self.0).ok()
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} s", self.0)
    }
}

/// Parses `--timeout SECONDS`: `5`, `0.25`, `0` (do not wait), `inf` (wait forever).
pub fn parse_timeout(text: &str) -> Result<Seconds, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of seconds such as 5 or 0.5, got `{text}`"))?;
    if secs.is_nan() {
        return Err(format!(
            "expected a number of seconds such as 5 or 0.5, got `{text}`"
        ));
    }
    if secs < 0.0 {
        return Err(format!(
            "a timeout cannot be negative (got {text}); use 0 not to wait at all"
        ));
    }
    // `-0` is allowed, but printed as 0.
    Ok(Seconds(if secs == 0.0 { 0.0 } else { secs }))
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
    For(Seconds),
    /// Not at all (`block: false`).
    No,
}

impl Wait {
    /// From the two flags (which clap makes mutually exclusive).
    pub fn new(timeout: Option<Seconds>, no_wait: bool) -> Wait {
        match (timeout, no_wait) {
            (_, true) => Wait::No,
            (Some(t), false) if t.duration().is_some() => Wait::For(t),
            _ => Wait::Forever,
        }
    }

    /// The timeout for a blocking call (`None`: forever).
    pub fn timeout(self) -> Option<Duration> {
        match self {
            Wait::For(t) => t.duration(),
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
    fn timeouts_are_non_negative_seconds() {
        assert_eq!(
            parse_timeout("2.5").unwrap().duration(),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_timeout("0").unwrap().duration(), Some(Duration::ZERO));
        assert_eq!(parse_timeout("-0").unwrap().to_string(), "0 s");
        assert_eq!(
            parse_timeout("1e-3").unwrap().duration(),
            Some(Duration::from_millis(1))
        );
        assert_eq!(parse_timeout("inf").unwrap().duration(), None);
        assert_eq!(parse_timeout("1e300").unwrap().duration(), None);
        assert_eq!(parse_timeout("2").unwrap().to_string(), "2 s");
        assert_eq!(parse_timeout("0.5").unwrap().to_string(), "0.5 s");
    }

    #[test]
    fn bad_timeouts_say_why() {
        assert!(
            parse_timeout("-1")
                .unwrap_err()
                .contains("cannot be negative")
        );
        assert!(
            parse_timeout("-inf")
                .unwrap_err()
                .contains("cannot be negative")
        );
        assert!(
            parse_timeout("NaN")
                .unwrap_err()
                .contains("number of seconds")
        );
        assert!(parse_timeout("5s").unwrap_err().contains("got `5s`"));
        assert!(parse_timeout("").is_err());
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
        assert_eq!(Wait::new(parse_timeout("inf").ok(), false), Wait::Forever);
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
