//! Human-friendly durations (`"1m30s"`) and sizes (`"10MiB"`).
//!
//! Config files express time spans and byte counts as strings so that the
//! unit is always explicit: a bare `restart_delay = 5` would leave the reader
//! guessing between seconds and milliseconds, so the unit-file parser rejects
//! bare integers for durations and points at these string forms instead.

use std::time::Duration;

/// Duration units, longest spelling first within each group only for
/// readability; lookup is by exact (case-sensitive) match.
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("msec", 1_000_000),
    ("s", NANOS_PER_SEC),
    ("sec", NANOS_PER_SEC),
    ("secs", NANOS_PER_SEC),
    ("second", NANOS_PER_SEC),
    ("seconds", NANOS_PER_SEC),
    ("m", 60 * NANOS_PER_SEC),
    ("min", 60 * NANOS_PER_SEC),
    ("mins", 60 * NANOS_PER_SEC),
    ("minute", 60 * NANOS_PER_SEC),
    ("minutes", 60 * NANOS_PER_SEC),
    ("h", 3600 * NANOS_PER_SEC),
    ("hr", 3600 * NANOS_PER_SEC),
    ("hour", 3600 * NANOS_PER_SEC),
    ("hours", 3600 * NANOS_PER_SEC),
    ("d", 86_400 * NANOS_PER_SEC),
    ("day", 86_400 * NANOS_PER_SEC),
    ("days", 86_400 * NANOS_PER_SEC),
];

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses a human duration such as `"500ms"`, `"10s"`, `"2m"`, `"1h"`,
/// `"1m30s"`, `"1.5s"` or `"0s"`.
///
/// A duration is one or more `NUMBER UNIT` components, optionally separated
/// by spaces (`"1m 30s"`), whose values are added. `NUMBER` is decimal and
/// may have a fractional part. Units (case-sensitive): `ns`, `us`/`µs`,
/// `ms`/`msec`, `s`/`sec`/`secs`/`second`/`seconds`,
/// `m`/`min`/`mins`/`minute`/`minutes`, `h`/`hr`/`hour`/`hours`,
/// `d`/`day`/`days`. A unit is always required, even for zero.
///
/// # Errors
///
/// Returns a human-readable message for an empty string, a missing or
/// unknown unit, a negative value or a value too large to represent.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. \"10s\" or \"500ms\"".to_owned());
    }
    if text.starts_with('-') {
        return Err(format!("durations cannot be negative: `{text}`"));
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (number, after_number) = split_number(rest)
            .ok_or_else(|| format!("invalid duration `{text}`: expected a number at `{rest}`"))?;
        let after_space = after_number.trim_start();
        let unit_len = after_space
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after_space.len());
        let (unit, tail) = after_space.split_at(unit_len);
        let scale = duration_unit(unit, number, text)?;
        let nanos = number
            .scaled(scale)
            .ok_or_else(|| format!("duration `{text}` is too large"))?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| format!("duration `{text}` is too large"))?;
        rest = tail.trim_start();
    }
    nanos_to_duration(total).ok_or_else(|| format!("duration `{text}` is too large"))
}

/// Looks up a duration unit, explaining what is wrong when it is missing or
/// unknown.
fn duration_unit(unit: &str, number: Number<'_>, whole: &str) -> Result<u128, String> {
    if unit.is_empty() {
        return Err(format!(
            "missing unit after `{}` in `{whole}`; write e.g. \"{}s\" or \"{}ms\"",
            number.text, number.text, number.text
        ));
    }
    DURATION_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, scale)| *scale)
        .ok_or_else(|| {
            format!("unknown unit `{unit}` in `{whole}`; use one of: ns, us, ms, s, m, h, d")
        })
}

fn nanos_to_duration(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    // The remainder is < 1e9 and so always fits in a u32.
    let sub = (nanos % NANOS_PER_SEC) as u32;
    Some(Duration::new(secs, sub))
}

/// Formats a duration the way [`parse_duration`] reads it back, using the
/// largest whole units: `"1m30s"`, `"100ms"`, `"0s"`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let total = d.as_nanos();
    let parts: [(&str, u128); 6] = [
        ("h", 3600 * NANOS_PER_SEC),
        ("m", 60 * NANOS_PER_SEC),
        ("s", NANOS_PER_SEC),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let mut rest = total;
    let mut out = String::new();
    for (unit, scale) in parts {
        let n = rest / scale;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            rest %= scale;
        }
    }
    out
}

/// Parses a byte size such as `"512K"`, `"10M"`, `"1G"`, `"10MiB"`,
/// `"500kB"` or `"4096"`.
///
/// Suffixes are case-insensitive:
/// - none or `B`: bytes;
/// - `K`, `M`, `G`, `T` and `KiB`, `MiB`, `GiB`, `TiB`: powers of **1024**;
/// - `kB`, `MB`, `GB`, `TB`: powers of **1000** (the SI meaning).
///
/// The number may have a fractional part (`"1.5M"`); the result is rounded
/// down to whole bytes. Spaces between number and suffix are allowed.
///
/// # Errors
///
/// Returns a human-readable message for an empty or malformed string, an
/// unknown suffix, a negative value, or a size that does not fit in a `u64`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty size; write e.g. \"10M\" or \"512K\"".to_owned());
    }
    if text.starts_with('-') {
        return Err(format!("sizes cannot be negative: `{text}`"));
    }
    let (number, rest) =
        split_number(text).ok_or_else(|| format!("invalid size `{text}`: expected a number"))?;
    let suffix = rest.trim_start();
    let scale = size_suffix(suffix)
        .ok_or_else(|| format!("unknown size suffix `{suffix}` in `{text}`; use one of: B, K, M, G, T (1024-based), KiB, MiB, GiB, TiB (1024-based), kB, MB, GB, TB (1000-based)"))?;
    number
        .scaled(scale)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("size `{text}` is too large"))
}

fn size_suffix(suffix: &str) -> Option<u128> {
    let lower = suffix.to_ascii_lowercase();
    let scale = match lower.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    Some(scale)
}

/// A decimal number as written: integer digits and optional fraction digits.
#[derive(Clone, Copy)]
struct Number<'a> {
    text: &'a str,
    int: &'a str,
    frac: &'a str,
}

impl Number<'_> {
    /// `self * scale`, exact for the integer part and rounded down for the
    /// fraction; `None` on overflow.
    fn scaled(self, scale: u128) -> Option<u128> {
        let int: u128 = if self.int.is_empty() {
            0
        } else {
            self.int.parse().ok()?
        };
        let whole = int.checked_mul(scale)?;
        // More than 18 fraction digits cannot matter at nanosecond/byte
        // precision, and capping keeps 10^len inside u128.
        let frac = &self.frac[..self.frac.len().min(18)];
        if frac.is_empty() {
            return Some(whole);
        }
        let numerator: u128 = frac.parse().ok()?;
        let denominator = 10u128.pow(frac.len() as u32);
        whole.checked_add(numerator.checked_mul(scale)? / denominator)
    }
}

/// Splits a leading decimal number (`12`, `1.5`, `.5`) off `s`.
fn split_number(s: &str) -> Option<(Number<'_>, &str)> {
    let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let int = &s[..int_len];
    let after_int = &s[int_len..];
    let (frac, rest) = match after_int.strip_prefix('.') {
        Some(tail) => {
            let frac_len = tail
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(tail.len());
            (&tail[..frac_len], &tail[frac_len..])
        }
        None => ("", after_int),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let text = &s[..s.len() - rest.len()];
    Some((Number { text, int, frac }, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_table() {
        let cases: &[(&str, Duration)] = &[
            ("500ms", ms(500)),
            ("10s", ms(10_000)),
            ("2m", ms(120_000)),
            ("1h", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("1m 30s", ms(90_000)),
            ("1.5s", ms(1_500)),
            (".5s", ms(500)),
            ("0s", ms(0)),
            ("0ms", ms(0)),
            ("1d", ms(86_400_000)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("10 sec", ms(10_000)),
            ("5minutes", ms(300_000)),
            ("1h2m3s4ms", ms(3_723_004)),
            ("  3s  ", ms(3_000)),
            ("0.001s", ms(1)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn duration_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "empty duration"),
            ("10", "missing unit after `10` in `10`; write e.g. \"10s\""),
            ("1m30", "missing unit after `30`"),
            ("-1s", "cannot be negative"),
            ("10x", "unknown unit `x`"),
            ("10S", "unknown unit `S`"),
            ("s", "expected a number"),
            ("1.s.", "expected a number"),
            ("99999999999999999999999h", "too large"),
        ];
        for (text, want) in cases {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [ms(0), ms(100), ms(1_500), ms(90_000), ms(3_723_004)] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(ms(90_000)), "1m30s");
        assert_eq!(format_duration(ms(100)), "100ms");
        assert_eq!(format_duration(Duration::from_nanos(1_001)), "1us1ns");
    }

    #[test]
    fn sizes_table() {
        let cases: &[(&str, u64)] = &[
            ("4096", 4096),
            ("100B", 100),
            ("512K", 512 * 1024),
            ("512k", 512 * 1024),
            ("10M", 10 << 20),
            ("1G", 1 << 30),
            ("2T", 2 << 40),
            ("10MiB", 10 << 20),
            ("10mib", 10 << 20),
            ("1KiB", 1024),
            ("3GiB", 3 << 30),
            ("500kB", 500_000),
            ("500KB", 500_000),
            ("2MB", 2_000_000),
            ("1GB", 1_000_000_000),
            ("1.5M", 3 << 19),
            ("1.5 K", 1536),
            ("0", 0),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
    }

    #[test]
    fn size_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "empty size"),
            ("-1K", "cannot be negative"),
            ("10X", "unknown size suffix `X`"),
            ("10 MiBs", "unknown size suffix"),
            ("K", "expected a number"),
            ("99999999999T", "too large"),
        ];
        for (text, want) in cases {
            let err = parse_size(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
