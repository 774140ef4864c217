//! Linux signal names and numbers.
//!
//! The crate is deliberately free of `libc`/`nix`, so it carries its own
//! table. The numbers are the Linux generic ones (x86, x86-64, arm, arm64,
//! riscv); the daemon passes [`crate::Unit::stop_signal_number`] straight to
//! `kill(2)`.

/// Standard signals as `(name without "SIG", Linux number)`.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// First real-time signal as seen by programs (glibc and musl reserve the
/// kernel's 32 and 33 for their own use).
const SIGRTMIN: i32 = 34;
/// Last real-time signal on Linux.
const SIGRTMAX: i32 = 64;

/// Returns the Linux number of a signal.
///
/// Accepts, case-insensitively, a name with or without the `SIG` prefix
/// (`"TERM"`, `"SIGTERM"`, `"sigterm"`), real-time signals written
/// `RTMIN+n` / `RTMAX-n` (with or without `SIG`), and decimal numbers
/// `1..=64` (`"15"`). Returns `None` for anything else.
pub fn signal_number(name: &str) -> Option<i32> {
    let trimmed = name.trim();
    if let Ok(n) = trimmed.parse::<i32>() {
        return (1..=SIGRTMAX).contains(&n).then_some(n);
    }
    let upper = trimmed.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(n) = realtime_number(bare) {
        return Some(n);
    }
    SIGNALS
        .iter()
        .find(|(sig, _)| *sig == bare)
        .map(|(_, n)| *n)
}

/// Parses `RTMIN`, `RTMIN+n`, `RTMAX`, `RTMAX-n` (already upper-cased,
/// without `SIG`) into a number within the real-time range.
fn realtime_number(bare: &str) -> Option<i32> {
    let n = if let Some(rest) = bare.strip_prefix("RTMIN") {
        SIGRTMIN + offset(rest, '+')?
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        SIGRTMAX - offset(rest, '-')?
    } else {
        return None;
    };
    (SIGRTMIN..=SIGRTMAX).contains(&n).then_some(n)
}

/// `""` → 0, `"+3"` (with `sign` = '+') → 3.
fn offset(rest: &str, sign: char) -> Option<i32> {
    if rest.is_empty() {
        return Some(0);
    }
    rest.strip_prefix(sign)?.parse().ok()
}

/// Returns the canonical name of a signal number: `"SIGTERM"` for 15,
/// `"SIGRTMIN+2"` for 36; `None` outside `1..=64` and for 32 and 33, which
/// the C library reserves and which therefore have no usable name.
pub fn signal_name(number: i32) -> Option<String> {
    if let Some((name, _)) = SIGNALS.iter().find(|(_, n)| *n == number) {
        return Some(format!("SIG{name}"));
    }
    if (SIGRTMIN..=SIGRTMAX).contains(&number) {
        return Some(format!("SIGRTMIN+{}", number - SIGRTMIN));
    }
    None
}

/// Every standard signal name, `SIG`-prefixed, in number order; used for
/// did-you-mean suggestions.
pub(crate) fn signal_names() -> impl Iterator<Item = String> {
    SIGNALS.iter().map(|(name, _)| format!("SIG{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        let cases: &[(&str, Option<i32>)] = &[
            ("TERM", Some(15)),
            ("SIGTERM", Some(15)),
            ("sigterm", Some(15)),
            ("Term", Some(15)),
            ("HUP", Some(1)),
            ("KILL", Some(9)),
            ("SIGUSR1", Some(10)),
            ("WINCH", Some(28)),
            ("SYS", Some(31)),
            ("STKFLT", Some(16)),
            ("15", Some(15)),
            ("64", Some(64)),
            ("RTMIN", Some(34)),
            ("SIGRTMIN+3", Some(37)),
            ("rtmax-1", Some(63)),
            ("RTMIN+31", None),
            ("0", None),
            ("65", None),
            ("-1", None),
            ("SIGFOO", None),
            ("", None),
            ("SIG", None),
        ];
        for (name, want) in cases {
            assert_eq!(signal_number(name), *want, "{name}");
        }
    }

    #[test]
    fn canonical_names() {
        assert_eq!(signal_name(15).as_deref(), Some("SIGTERM"));
        assert_eq!(signal_name(1).as_deref(), Some("SIGHUP"));
        assert_eq!(signal_name(36).as_deref(), Some("SIGRTMIN+2"));
        assert_eq!(signal_name(32), None);
        assert_eq!(signal_name(0), None);
        assert_eq!(signal_name(65), None);
        for n in (1..=31).chain(34..=64) {
            let name = signal_name(n).unwrap();
            assert_eq!(signal_number(&name), Some(n), "{name}");
        }
    }
}
