//! Where queues, counters, arrays and locks live: the local SQLite state database (the
//! store task and [`crate::primitives`], the default) or a PostgreSQL database shared by
//! several corrald nodes (`corrald --backend URL`, [`pg`]).
//!
//! The seam is [`crate::store::Store`]: a store with a [`pg::Pg`] attached sends every
//! coordination operation (and each connection's end) there instead of to its SQLite
//! task; the supervisor's records (runs, events, pool jobs) stay in the node's own SQLite.

pub mod pg;
mod schema;

use std::time::Duration;

/// What `--backend`/`[backend]` resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    /// The PostgreSQL connection URI, as given (it may hold a password: print it with
    /// [`redact`]).
    pub url: String,
    /// This node's name (default: the host name).
    pub node: String,
    /// How long a node's lease lasts without a heartbeat.
    pub lease: Duration,
}

/// Default node lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The host name, the default node name (`/proc/sys/kernel/hostname`, else `localhost`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `url` with its password replaced by `***`, for messages and logs: in the URI's user
/// information (`postgres://user:secret@host`), in a `password=` parameter of the query
/// string, or in a `key=value` connection string.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let from = rest_start + colon + 1;
                out.replace_range(from..rest_start + at, "***");
            }
        }
    }
    // `password=...` in a query string or a key=value string.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let before_ok = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ');
        result.push_str(&rest[..i + "password=".len()]);
        rest = &rest[i + "password=".len()..];
        if before_ok {
            let end = rest.find(['&', ' ']).unwrap_or(rest.len());
            result.push_str("***");
            rest = &rest[end..];
        }
    }
    result.push_str(rest);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://corral:s3cr@t@db:5432/corral"),
            "postgres://corral:***@db:5432/corral"
        );
        assert_eq!(
            redact("postgres://corral@db/corral"),
            "postgres://corral@db/corral"
        );
        assert_eq!(
            redact("postgresql://db/corral?user=a&password=xyz&sslmode=disable"),
            "postgresql://db/corral?user=a&password=***&sslmode=disable"
        );
        assert_eq!(
            redact("host=db user=a password=xyz dbname=c"),
            "host=db user=a password=*** dbname=c"
        );
    }
}
