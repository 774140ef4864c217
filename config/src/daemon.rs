//! The daemon's main config file, `corral.toml`.
//!
//! Unlike unit files, this small, flat file is read with serde: one error
//! at a time is acceptable here, and `deny_unknown_fields` still catches
//! misspelt settings. Every setting is optional because the daemon layers
//! command-line flags over this file over its built-in defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::de::DeTable;

use crate::duration::parse_duration;
use crate::error::{ConfigError, ConfigErrors};

/// The daemon's main config file `corral.toml`. All fields are optional;
/// `None` means "not set here" (the daemon then uses its flag or default).
///
/// See `packaging/corral.toml` for every setting with its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Directory of unit files (`*.toml`).
    pub units_dir: Option<PathBuf>,
    /// Directory for the daemon's persistent state.
    pub state_dir: Option<PathBuf>,
    /// Path of the control socket.
    pub socket: Option<PathBuf>,
    /// Directory for the units' log files.
    pub log_dir: Option<PathBuf>,
    /// How long shutdown waits for units to stop, as a duration string.
    #[serde(default, deserialize_with = "opt_duration")]
    pub shutdown_timeout: Option<Duration>,
    /// At shutdown, how long `daemon = true` units get between their stop
    /// signal and SIGKILL, as a duration string.
    #[serde(default, deserialize_with = "opt_duration")]
    pub daemon_grace: Option<Duration>,
    /// Largest control-protocol frame accepted, in bytes.
    pub max_frame_bytes: Option<usize>,
    /// The optional HTTP API (`[http]` table).
    #[serde(default)]
    pub http: HttpConfig,
    /// Permission bits of the control socket, written as an octal string
    /// like `"0660"` (an integer is taken as the numeric value).
    #[serde(default, deserialize_with = "opt_mode")]
    pub socket_mode: Option<u32>,
    /// Group owning the control socket.
    pub socket_group: Option<String>,
    /// Most simultaneous control connections (root and corrald's own user may open a
    /// few more).
    pub max_connections: Option<usize>,
    /// Most simultaneous control connections of one user (root and corrald's own user
    /// excepted).
    pub max_connections_per_user: Option<usize>,
    /// How long a control connection that holds nothing (no lock, no lease, no waiting request,
    /// no stream, no unread reply) may stay silent before corrald closes it; `"0s"`:
    /// never.
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Most bytes of replies one control connection may leave unread: past it corrald
    /// stops reading the connection's requests, and drops a connection that still
    /// reads nothing after `idle_timeout` or whose replies would pass the limit anyway.
    pub max_unread_bytes: Option<usize>,
    /// Largest queue item accepted, in bytes of serialized JSON.
    pub max_item_bytes: Option<usize>,
    /// Queues declared up front, by name (`[queues.NAME]` tables).
    #[serde(default)]
    pub queues: std::collections::BTreeMap<String, QueueConfig>,
    /// Who may do what over the socket (`[access]`); absent: everyone who can open the
    /// socket may do everything.
    pub access: Option<AccessConfig>,
    /// Template instances started with corrald (`[enable]`: `"web@" = ["8080", "8081"]`).
    #[serde(default, deserialize_with = "enable_table")]
    pub enable: std::collections::BTreeMap<String, Vec<String>>,
    /// Each instance in a cgroup of its own where a writable cgroup v2 hierarchy exists
    /// (default true); false keeps to process groups.
    pub cgroups: Option<bool>,
    /// Where queues, counters, arrays and locks live (`[backend]`); absent: the local
    /// SQLite state database.
    #[serde(default)]
    pub backend: BackendConfig,
    /// With a shared backend: how many pool items this node runs at once, across all
    /// jobs (default: its CPU count).
    pub pool_slots: Option<usize>,
    /// How long finished pool jobs (their results) are kept, as a duration string
    /// (default 7d): older ones are removed by corrald, as `pool rm` does.
    #[serde(default, deserialize_with = "opt_duration")]
    pub pool_keep: Option<Duration>,
}

/// The `[backend]` table of `corral.toml`: a PostgreSQL database shared by corrald nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// PostgreSQL connection URI (`postgres://user:password@host:port/db`); absent: SQLite.
    pub url: Option<String>,
    /// This node's name among the nodes of the database (default: the host name).
    pub node: Option<String>,
    /// How long a node's lease lasts without a heartbeat, as a duration string
    /// (default 10s): past it, other nodes release its locks.
    #[serde(default, deserialize_with = "opt_duration")]
    pub lease: Option<Duration>,
    /// How often a blocked get or acquire looks again when no notification woke it, as a
    /// duration string (default 500ms): what a lost notification costs at most.
    #[serde(default, deserialize_with = "opt_duration")]
    pub poll: Option<Duration>,
}

/// The `[access]` table: who may do what. Principals are `"*"` (anyone),
/// `"user:NAME"` / `"user:UID"`, `"group:NAME"` / `"group:GID"` (primary or supplementary
/// group of the client process). Root and corrald's own user may always do everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// May start, stop, restart, reload, run, shut down, submit and cancel pool jobs.
    #[serde(default)]
    pub control: Vec<String>,
    /// May change queues, counters, arrays and locks (unless a `[[access.names]]` rule
    /// for the name says otherwise).
    #[serde(default, rename = "use")]
    pub use_: Vec<String>,
    /// May read status, logs and coordination state. Default: anyone.
    #[serde(default = "anyone")]
    pub read: Vec<String>,
    /// Rules for queue/counter/array/lock names by prefix; the longest matching prefix wins.
    #[serde(default)]
    pub names: Vec<NameRule>,
}

fn anyone() -> Vec<String> {
    vec!["*".to_owned()]
}

/// An `[[access.names]]` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameRule {
    /// Names starting with this.
    pub prefix: String,
    /// Who may change them.
    #[serde(rename = "use")]
    pub use_: Vec<String>,
}

/// A `[queues.NAME]` table of `corral.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Capacity: a `put` on a full queue waits or fails with `full`. Absent: unbounded.
    pub maxsize: Option<usize>,
    /// Deliveries by acknowledged gets after which an item returned unacked goes to the
    /// dead-letter queue. Absent: redelivered forever.
    pub max_deliveries: Option<u32>,
    /// The dead-letter queue. Absent: `NAME.dead`.
    pub dead_letter: Option<String>,
}

/// The `[http]` table of `corral.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Whether the HTTP API is served.
    pub enabled: Option<bool>,
    /// Address to listen on, `host:port`.
    pub listen: Option<String>,
    /// Whether a non-loopback `listen` address is allowed.
    pub allow_remote: Option<bool>,
    /// Bearer token required by the HTTP API.
    pub token: Option<String>,
    /// Most simultaneous HTTP connections; past it a new connection is answered 503 and
    /// closed.
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's headers (from the connection's
    /// start, or from the end of the previous response), as a duration string.
    #[serde(default, deserialize_with = "opt_duration")]
    pub header_timeout: Option<Duration>,
    /// How long a connection may move no bytes either way before it is closed, as a
    /// duration string (the event stream sends a keep-alive every 15 s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
}

/// Reads and parses the main config file at `path`.
///
/// # Errors
///
/// An unreadable file (reported without a position), or what
/// [`parse_daemon_config`] reports.
pub fn load_daemon_config(path: &Path) -> Result<DaemonConfig, ConfigErrors> {
    let text = crate::validate::read_config_file(path, "config file")?;
    parse_daemon_config(path, &text)
}

/// Parses the text of a main config file; `path` is used in errors only.
///
/// # Errors
///
/// Every syntax error, or else the first schema error (unknown setting,
/// wrong type, invalid duration or mode), each at its `line:column`.
pub fn parse_daemon_config(path: &Path, text: &str) -> Result<DaemonConfig, ConfigErrors> {
    let to_error = |err: &toml::de::Error| {
        let offset = err.span().map_or(0, |s| s.start);
        let message = err.message().lines().next().unwrap_or_default().trim_end();
        ConfigError::at_offset(path, text, offset, message)
    };
    let (document, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let errors = syntax.iter().map(to_error).collect();
        return Err(ConfigErrors(errors).normalize());
    }
    DaemonConfig::deserialize(toml::de::Deserializer::from(document))
        .map_err(|err| ConfigErrors::from(to_error(&err)))
}

/// `[enable]`: each key a template's name (ending in `@`), each value the arguments of
/// the instances to start.
fn enable_table<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, D::Error> {
    let table = std::collections::BTreeMap::<String, Vec<String>>::deserialize(de)?;
    for (template, args) in &table {
        if !template.ends_with('@') || !crate::valid_unit_name(template) {
            return Err(serde::de::Error::custom(format!(
                "`{template}` is not a template name: [enable] keys name templates, e.g. \"web@\" = [\"8080\"] for units/web@.toml"
            )));
        }
        for arg in args {
            let name = format!("{template}{arg}");
            if arg.is_empty() || arg.contains('@') || !crate::valid_unit_name(&name) {
                return Err(serde::de::Error::custom(format!(
                    "invalid argument `{arg}` for `{template}`: {}",
                    crate::UNIT_NAME_RULES
                )));
            }
        }
    }
    Ok(table)
}

/// A duration written as a human string (`"30s"`); bare numbers are
/// refused because their unit would be a guess.
fn opt_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    let text = StringOrInt::deserialize(de)?;
    match text {
        StringOrInt::String(s) => parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
        StringOrInt::Int(n) => Err(serde::de::Error::custom(format!(
            "expected a duration string like \"10s\" or \"500ms\", found an integer; write \"{n}s\" for seconds"
        ))),
    }
}

/// A file mode: an octal string (`"0660"`, `"660"`, `"0o660"`), or an
/// integer taken as its numeric value (`0o660`); at most `0o777`.
fn opt_mode<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    let value = match StringOrInt::deserialize(de)? {
        StringOrInt::String(s) => parse_octal_mode(&s).map_err(serde::de::Error::custom)?,
        StringOrInt::Int(n) => u32::try_from(n).unwrap_or(u32::MAX),
    };
    if value > 0o777 {
        return Err(serde::de::Error::custom(format!(
            "file mode must be at most 0777, found {value:o} (octal)"
        )));
    }
    Ok(Some(value))
}

/// Parses `"0660"`, `"660"` or `"0o660"` as octal.
pub(crate) fn parse_octal_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!(
            "invalid mode `{s}`: expected octal digits like \"0660\""
        ));
    }
    u32::from_str_radix(digits, 8).map_err(|e| e.to_string())
}

/// Accepts either form so the helpers above can explain what is wrong
/// with an integer instead of failing with serde's generic type error.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a string")]
enum StringOrInt {
    String(String),
    Int(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal_mode("0660"), Ok(0o660));
        assert_eq!(parse_octal_mode("660"), Ok(0o660));
        assert_eq!(parse_octal_mode("0o600"), Ok(0o600));
        assert!(parse_octal_mode("0689").is_err());
        assert!(parse_octal_mode("").is_err());
        assert!(parse_octal_mode("rw").is_err());
    }

    #[test]
    fn backend_table() {
        let text = "[backend]\nurl = \"postgres://corral@db:5432/corral\"\nnode = \"a\"\nlease = \"4s\"\npoll = \"1s\"\n";
        let c = parse_daemon_config(Path::new("corral.toml"), text).unwrap();
        assert_eq!(
            c.backend.url.as_deref(),
            Some("postgres://corral@db:5432/corral")
        );
        assert_eq!(c.backend.node.as_deref(), Some("a"));
        assert_eq!(c.backend.lease, Some(Duration::from_secs(4)));
        assert_eq!(c.backend.poll, Some(Duration::from_secs(1)));
        let bad = "[backend]\nurl = \"postgres://x\"\nleese = \"4s\"\n";
        let e = parse_daemon_config(Path::new("corral.toml"), bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("corral.toml:3:1"), "{e}");
        assert!(e.contains("leese"), "{e}");
    }
}
