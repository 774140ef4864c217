//! The validated, fully-defaulted unit model.
//!
//! A [`Unit`] is what the daemon works with: every key has a concrete value,
//! `extends` has already been resolved, and every cross-unit reference has
//! been checked. The types derive `PartialEq` so that a reload can tell which
//! units changed by plain comparison.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The placeholder in `command` replaced by the instance number.
pub const INSTANCE_PLACEHOLDER: &str = "{instance}";

/// The text replaced by a template's argument (`web@.toml` started as `web@8080`).
pub const ARG_PLACEHOLDER: &str = "{arg}";

/// Splits an instance name of a template (`web@8080`) into the template's name
/// (`web@`) and the argument (`8080`); `None` for any other name.
pub fn template_of(name: &str) -> Option<(&str, &str)> {
    let at = name.find('@')?;
    let (base, arg) = (&name[..=at], &name[at + 1..]);
    (!arg.is_empty()).then_some((base, arg))
}

/// Longest accepted unit name, in bytes (names are ASCII).
pub const MAX_UNIT_NAME_LEN: usize = 128;

/// Largest accepted `instances` value.
pub const MAX_INSTANCES: u32 = 10_000;

/// Smallest accepted `log_max_size`, in bytes.
pub const MIN_LOG_MAX_SIZE: u64 = 1024;

/// What a unit is for, which also decides several defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnitKind {
    /// A long-running process (`kind = "service"`, the default): restarted
    /// on failure and started at boot by default.
    Service,
    /// A run-to-completion job (`kind = "task"`): not restarted and not
    /// started at boot by default.
    Task,
    /// A named pool (`kind = "pool"`): no instances of its own; pool jobs
    /// submitted to it by name (`corralctl pool map --pool NAME`) run its
    /// `command` with its `workers` and `mode`.
    Pool,
}

/// How a pool runs its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum PoolMode {
    /// One process per item (`"exec"`, the default).
    #[default]
    Exec,
    /// Long-lived workers reading inputs on stdin, one answer line each (`"stream"`).
    Stream,
}

impl PoolMode {
    /// Every mode with its TOML spelling.
    pub const ALL: [(PoolMode, &'static str); 2] =
        [(PoolMode::Exec, "exec"), (PoolMode::Stream, "stream")];
}

impl UnitKind {
    /// Every kind with its TOML spelling, in documentation order.
    pub const ALL: [(UnitKind, &'static str); 3] = [
        (UnitKind::Service, "service"),
        (UnitKind::Task, "task"),
        (UnitKind::Pool, "pool"),
    ];

    /// The TOML spelling: `"service"` or `"task"`.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Service => "service",
            UnitKind::Task => "task",
            UnitKind::Pool => "pool",
        }
    }

    /// The default restart policy for this kind.
    pub fn default_restart(self) -> RestartPolicy {
        match self {
            UnitKind::Service => RestartPolicy::OnFailure,
            UnitKind::Task | UnitKind::Pool => RestartPolicy::No,
        }
    }

    /// Whether units of this kind start with the daemon by default.
    pub fn default_autostart(self) -> bool {
        matches!(self, UnitKind::Service)
    }
}

/// When the daemon restarts a process that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RestartPolicy {
    /// Never restart (`"no"`).
    No,
    /// Restart after a non-zero exit or death by signal (`"on-failure"`).
    OnFailure,
    /// Restart after any exit, including success (`"always"`).
    Always,
}

impl RestartPolicy {
    /// Every policy with its TOML spelling, in documentation order.
    pub const ALL: [(RestartPolicy, &'static str); 3] = [
        (RestartPolicy::No, "no"),
        (RestartPolicy::OnFailure, "on-failure"),
        (RestartPolicy::Always, "always"),
    ];

    /// The TOML spelling: `"no"`, `"on-failure"` or `"always"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

/// When a scheduled task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// A cron pattern (`schedule = "*/5 * * * *"`), in corrald's local time zone;
    /// validated when the unit is loaded.
    Cron(String),
    /// A fixed interval (`every = "10m"`), counted from the last run.
    Every(Duration),
}

/// What a schedule does when a run is due while the previous one still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Skip this run (`"skip"`, the default).
    Skip,
    /// Run once more as soon as the current run has finished (`"queue"`; at most one
    /// run waits).
    Queue,
    /// Start another run beside it, as a transient unit `NAME.run-N` (`"allow"`).
    Allow,
}

impl Overlap {
    /// Every choice with its TOML spelling.
    pub const ALL: [(Overlap, &'static str); 3] = [
        (Overlap::Skip, "skip"),
        (Overlap::Queue, "queue"),
        (Overlap::Allow, "allow"),
    ];

    /// The TOML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

/// A task's schedule: `schedule` or `every`, with `overlap` and `catch_up`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// When it runs.
    pub when: When,
    /// A run due while the last one still runs.
    pub overlap: Overlap,
    /// Run once at start when a run was missed while corrald was down.
    pub catch_up: bool,
}

impl Schedule {
    /// As written: `*/5 * * * *` or `every 10m`.
    pub fn describe(&self) -> String {
        match &self.when {
            When::Cron(pattern) => pattern.clone(),
            When::Every(d) => format!("every {}", crate::format_duration(*d)),
        }
    }
}

/// What a readiness (`[ready]`) or health (`[health]`) check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `exec = [...]`: a command that exits 0 (run with the instance's user, group,
    /// environment and working directory, in its own process group).
    Exec(Vec<String>),
    /// `http = "http://HOST:PORT/PATH"`: a GET answered with a 2xx status.
    Http(HttpTarget),
    /// `tcp = "HOST:PORT"`: a TCP connection is accepted.
    Tcp(String),
    /// `notify = true`: the instance sends `READY=1` to the `NOTIFY_SOCKET` corrald
    /// gives it, as under systemd (readiness only).
    Notify,
    /// `log = "REGEX"`: a line the instance writes to stdout or stderr matches the
    /// regular expression (readiness only; validated when the unit is loaded).
    Log(String),
}

impl Check {
    /// The TOML keys naming a kind of check, in documentation order.
    pub const KINDS: [&'static str; 5] = ["exec", "http", "tcp", "notify", "log"];

    /// The check with every `from` replaced by `to` (`{instance}` by the instance's number
    /// at run time, `{arg}` by a template's argument); an `http` URL is split again.
    pub fn substitute(&self, from: &str, to: &str) -> Result<Check, String> {
        let put = |s: &str| s.replace(from, to);
        Ok(match self {
            Check::Exec(argv) => Check::Exec(argv.iter().map(|a| put(a)).collect()),
            Check::Http(t) if t.url.contains(from) => {
                let url = put(&t.url);
                Check::Http(
                    HttpTarget::parse(&url)
                        .map_err(|e| format!("invalid URL `{url}` for the check: {e}"))?,
                )
            }
            Check::Tcp(addr) => Check::Tcp(put(addr)),
            other => other.clone(),
        })
    }

    /// As written, for status and events: `http http://127.0.0.1:8080/health`.
    pub fn describe(&self) -> String {
        match self {
            Check::Exec(argv) => format!("exec {}", argv.join(" ")),
            Check::Http(t) => format!("http {}", t.url),
            Check::Tcp(addr) => format!("tcp {addr}"),
            Check::Notify => "notify READY=1".to_owned(),
            Check::Log(pattern) => format!("log /{pattern}/"),
        }
    }
}

/// The target of an `http` check, split up when the unit is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The URL as written.
    pub url: String,
    /// Host name or address (without the brackets of an IPv6 address).
    pub host: String,
    /// Port; 80 when the URL gives none.
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

impl HttpTarget {
    /// Splits an `http://` URL into host, port and path.
    pub(crate) fn parse(url: &str) -> Result<HttpTarget, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(if url.starts_with("https://") {
                "https is not supported: probe the plain HTTP port, e.g. \"http://127.0.0.1:8080/health\"".to_owned()
            } else {
                format!("`{url}` does not start with http://")
            });
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) || path.contains('#') {
            return Err("the path must not contain spaces, control characters or `#`".to_owned());
        }
        if authority.contains('@') {
            return Err("user names and passwords in the URL are not supported".to_owned());
        }
        let (host, port) = if authority.ends_with(']') || !authority.contains(':') {
            let host = authority
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(authority);
            (host.to_owned(), 80)
        } else {
            host_port(authority).ok_or_else(|| format!("bad HOST:PORT `{authority}`"))?
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err("the URL has no host".to_owned());
        }
        Ok(HttpTarget {
            url: url.to_owned(),
            host,
            port,
            path,
        })
    }
}

/// `HOST:PORT` (`[V6]:PORT` for an IPv6 address): the host and the port.
pub(crate) fn host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_owned(), port))
}

/// Default `interval` of a `[ready]` check.
pub const READY_INTERVAL: Duration = Duration::from_millis(250);
/// Default `deadline` of a `[ready]` check.
pub const READY_DEADLINE: Duration = Duration::from_secs(60);
/// Default `interval` of a `[health]` check.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// Default `timeout` of one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `failures` of a `[health]` check.
pub const HEALTH_FAILURES: u32 = 3;

/// The `[ready]` table: until the check passes the instance is `starting`, units
/// `after` or `requires` it wait, and `corralctl start` waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// What is probed.
    pub check: Check,
    /// Between the end of one probe and the start of the next; default 250ms.
    pub interval: Duration,
    /// Longest one probe may take before it counts as failed; default 5s.
    pub timeout: Duration,
    /// Not ready this long after the spawn: the start failed (the instance is stopped,
    /// and its restart policy applies); default 60s.
    pub deadline: Duration,
}

/// The `[health]` table: checked while the instance runs (once it is ready).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// What is probed (`exec`, `http` or `tcp`).
    pub check: Check,
    /// Between the end of one probe and the start of the next; default 10s.
    pub interval: Duration,
    /// Longest one probe may take before it counts as failed; default 5s.
    pub timeout: Duration,
    /// Failed probes in a row after which the instance is restarted (stopped, then
    /// started again by its restart policy); default 3.
    pub failures: u32,
}

/// One resource limit, as for `setrlimit(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rlimit {
    /// The soft limit; `u64::MAX` means unlimited (`RLIM_INFINITY`).
    pub soft: u64,
    /// The hard limit; `u64::MAX` means unlimited. Always `>= soft`.
    pub hard: u64,
}

impl Rlimit {
    /// The value standing for "unlimited" (`RLIM_INFINITY` on Linux).
    pub const UNLIMITED: u64 = u64::MAX;
}

/// The `[rlimits]` table; `None` leaves the limit inherited from the daemon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Rlimits {
    /// `RLIMIT_NOFILE`: open file descriptors.
    pub nofile: Option<Rlimit>,
    /// `RLIMIT_NPROC`: processes/threads of the user.
    pub nproc: Option<Rlimit>,
    /// `RLIMIT_CORE`: core dump size in bytes.
    pub core: Option<Rlimit>,
    /// `RLIMIT_MEMLOCK`: locked memory in bytes.
    pub memlock: Option<Rlimit>,
    /// `RLIMIT_AS`: address space in bytes (`as` in TOML).
    pub r#as: Option<Rlimit>,
}

impl Rlimits {
    /// The TOML names of the limits, in documentation order.
    pub const NAMES: [&'static str; 5] = ["nofile", "nproc", "core", "memlock", "as"];

    /// The slot for a TOML limit name, or `None` for an unknown name.
    pub fn slot_mut(&mut self, name: &str) -> Option<&mut Option<Rlimit>> {
        match name {
            "nofile" => Some(&mut self.nofile),
            "nproc" => Some(&mut self.nproc),
            "core" => Some(&mut self.core),
            "memlock" => Some(&mut self.memlock),
            "as" => Some(&mut self.r#as),
            _ => None,
        }
    }

    /// The limits that are set, with their TOML names.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Rlimit)> + '_ {
        let slots = [self.nofile, self.nproc, self.core, self.memlock, self.r#as];
        Self::NAMES
            .into_iter()
            .zip(slots)
            .filter_map(|(name, slot)| slot.map(|limit| (name, limit)))
    }
}

/// A validated unit: one process (or `instances` copies of it) to supervise.
///
/// See `sample-unit.toml` in this crate for every key documented in context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The unit's name: the file stem of its unit file.
    pub name: String,
    /// The unit file it was defined in; empty for a transient unit.
    pub source: PathBuf,
    /// Service or task; default service.
    pub kind: UnitKind,
    /// Program and arguments, never empty. May contain `{instance}`
    /// placeholders, kept as written; see [`Unit::argv_for`].
    pub command: Vec<String>,
    /// How many copies to run, `1..=10000`; default 1.
    pub instances: u32,
    /// Restart policy; default `on-failure` for services, `no` for tasks.
    pub restart: RestartPolicy,
    /// Delay before a restart; default 100ms. The daemon backs off from
    /// this delay up to `restart_delay_max` while the unit keeps failing.
    pub restart_delay: Duration,
    /// Upper bound of the restart back-off; default 10s, `>= restart_delay`.
    pub restart_delay_max: Duration,
    /// Starts allowed within `start_limit_interval` before the unit is
    /// marked failed; default 5, at least 1.
    pub start_limit_burst: u32,
    /// Window for `start_limit_burst`; default 10s.
    pub start_limit_interval: Duration,
    /// Canonical name of the stop signal (`"SIGTERM"`, `"SIGRTMIN+2"`);
    /// default `"SIGTERM"`.
    pub stop_signal: String,
    /// Linux number of `stop_signal`.
    pub stop_signal_number: i32,
    /// Time between the stop signal and SIGKILL; default 10s. `0s` means
    /// SIGKILL is sent right after the stop signal.
    pub stop_timeout: Duration,
    /// Python's `daemon=True`: the instance dies with corrald, at shutdown
    /// (after `daemon_grace`) and even when corrald is killed (the kernel's
    /// parent-death signal); default false.
    pub daemon: bool,
    /// Working directory, absolute; `None` keeps the daemon's.
    pub working_dir: Option<PathBuf>,
    /// Extra environment variables (merged over a base unit's on `extends`).
    pub env: BTreeMap<String, String>,
    /// Environment files read at each start (systemd's `EnvironmentFile=` syntax), in
    /// order; their variables override `env`'s.
    pub env_files: Vec<crate::EnvFile>,
    /// For a task: when corrald runs it by itself.
    pub schedule: Option<Schedule>,
    /// cgroup memory limit in bytes (`memory.max`), where cgroups are available.
    pub memory_max: Option<u64>,
    /// cgroup CPU limit, percent of one CPU (`cpu.max`).
    pub cpu_max: Option<u32>,
    /// cgroup limit on processes and threads (`pids.max`).
    pub tasks_max: Option<u64>,
    /// User to run as (name or numeric id); `None` keeps the daemon's.
    pub user: Option<String>,
    /// Group to run as (name or numeric id); `None` uses the user's
    /// primary group, or keeps the daemon's.
    pub group: Option<String>,
    /// File mode creation mask, `<= 0o777`; `None` keeps the daemon's.
    ///
    /// Written as a string of octal digits (`"022"`, `"0022"`, `"0o022"`),
    /// or as a TOML integer taken as its numeric value: `umask = 0o022` and
    /// `umask = 18` are the same mask, while `umask = 22` means `0o026`.
    pub umask: Option<u32>,
    /// Resource limits.
    pub rlimits: Rlimits,
    /// Units to start before this one (ordering only).
    pub after: Vec<String>,
    /// Units that must be running for this one to start (also ordering).
    pub requires: Vec<String>,
    /// Start when the daemon starts; default true for services, false for
    /// tasks.
    pub autostart: bool,
    /// The unit this one inherits keys from, as written.
    pub extends: Option<String>,
    /// Size in bytes at which the log file is rotated; default 10 MiB,
    /// at least 1024.
    pub log_max_size: u64,
    /// Rotated log files kept; default 5; 0 truncates without keeping any.
    pub log_keep: u32,
    /// Pools only: items at once (exec) or worker processes (stream);
    /// default: the number of CPUs.
    pub workers: Option<u32>,
    /// Pools only: exec or stream; default exec.
    pub mode: PoolMode,
    /// When an instance counts as started (`[ready]`); `None`: once spawned.
    pub ready: Option<Ready>,
    /// The periodic health check (`[health]`).
    pub health: Option<Health>,
    /// PM2's memory restart: an instance whose process group's resident memory passes
    /// this many bytes is restarted; `None`: no limit.
    pub max_memory: Option<u64>,
}

impl Unit {
    /// A unit of `kind` with every optional key at its default, for which
    /// the parser then overrides what the file sets.
    pub fn with_defaults(
        name: &str,
        source: PathBuf,
        kind: UnitKind,
        command: Vec<String>,
    ) -> Unit {
        Unit {
            name: name.to_owned(),
            source,
            kind,
            command,
            instances: 1,
            restart: kind.default_restart(),
            restart_delay: Duration::from_millis(100),
            restart_delay_max: Duration::from_secs(10),
            start_limit_burst: 5,
            start_limit_interval: Duration::from_secs(10),
            stop_signal: "SIGTERM".to_owned(),
            stop_signal_number: 15,
            stop_timeout: Duration::from_secs(10),
            daemon: false,
            working_dir: None,
            env: BTreeMap::new(),
            env_files: Vec::new(),
            schedule: None,
            memory_max: None,
            cpu_max: None,
            tasks_max: None,
            user: None,
            group: None,
            umask: None,
            rlimits: Rlimits::default(),
            after: Vec::new(),
            requires: Vec::new(),
            autostart: kind.default_autostart(),
            extends: None,
            log_max_size: 10 * 1024 * 1024,
            log_keep: 5,
            workers: None,
            mode: PoolMode::Exec,
            ready: None,
            health: None,
            max_memory: None,
        }
    }

    /// A transient unit (like `systemd-run`): kind Task, restart No, every
    /// other key at its default, and an empty `source`.
    ///
    /// The name and command are taken as given; callers validate the name
    /// with [`valid_unit_name`] first.
    pub fn transient(name: &str, command: Vec<String>) -> Unit {
        Unit::with_defaults(name, PathBuf::new(), UnitKind::Task, command)
    }

    /// Whether this unit is a template (its file is `NAME@.toml`): never started itself,
    /// but as instance units `NAME@ARG`.
    pub fn is_template(&self) -> bool {
        self.name.ends_with('@')
    }

    /// The instance unit `NAME@ARG` of this template: `{arg}` replaced by `arg` in
    /// `command`, `env` values, `working_dir`, `env_file`, `after`, `requires` and the
    /// `[ready]` and `[health]` checks.
    pub fn instantiate(&self, arg: &str) -> Result<Unit, String> {
        let name = format!("{}{arg}", self.name);
        if !self.is_template() {
            return Err(format!("`{}` is not a template (NAME@.toml)", self.name));
        }
        if arg.contains('@') || !valid_unit_name(&name) {
            return Err(format!(
                "invalid template argument `{arg}` for `{}`: {UNIT_NAME_RULES}, and one `@` at most",
                self.name
            ));
        }
        let put = |s: &str| s.replace(ARG_PLACEHOLDER, arg);
        let mut unit = self.clone();
        unit.name = name;
        unit.command = self.command.iter().map(|a| put(a)).collect();
        unit.env = self.env.iter().map(|(k, v)| (k.clone(), put(v))).collect();
        unit.working_dir = self
            .working_dir
            .as_ref()
            .map(|d| PathBuf::from(put(&d.to_string_lossy())));
        unit.env_files = self
            .env_files
            .iter()
            .map(|f| crate::EnvFile {
                path: PathBuf::from(put(&f.path.to_string_lossy())),
                optional: f.optional,
            })
            .collect();
        unit.after = self.after.iter().map(|d| put(d)).collect();
        unit.requires = self.requires.iter().map(|d| put(d)).collect();
        if let Some(ready) = &mut unit.ready {
            ready.check = ready.check.substitute(ARG_PLACEHOLDER, arg)?;
        }
        if let Some(health) = &mut unit.health {
            health.check = health.check.substitute(ARG_PLACEHOLDER, arg)?;
        }
        Ok(unit)
    }

    /// The argv for instance `instance`, with every `{instance}` replaced by
    /// the number (instances are numbered from 0).
    pub fn argv_for(&self, instance: u32) -> Vec<String> {
        let number = instance.to_string();
        self.command
            .iter()
            .map(|arg| arg.replace(INSTANCE_PLACEHOLDER, &number))
            .collect()
    }
}

/// Whether `name` is a valid unit name: 1 to 128 ASCII letters, digits,
/// `_`, `-`, `.` or `@`, not starting with `.` (which also rules out `.`
/// and `..`).
///
/// Names become file names (`NAME.toml`, log files) and command-line
/// arguments, so path separators, whitespace, NUL and non-ASCII are refused.
pub fn valid_unit_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_UNIT_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}

/// Explains the rules of [`valid_unit_name`], for error messages.
pub const UNIT_NAME_RULES: &str = "unit names must be 1 to 128 characters long, contain only ASCII letters, digits, `_`, `-`, `.` and `@`, and not start with `.`";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        let long = "a".repeat(128);
        let too_long = "a".repeat(129);
        for good in [
            "web", "a", "web-1", "db_main", "worker@3", "v1.2", "A9", &long,
        ] {
            assert!(valid_unit_name(good), "{good:?}");
        }
        for bad in [
            "", ".", "..", ".hidden", "a/b", "/", "a b", "a\0b", "\0", "é", "a:b", "a\n", &too_long,
        ] {
            assert!(!valid_unit_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn transient_defaults() {
        let u = Unit::transient("once", vec!["true".into()]);
        assert_eq!(u.kind, UnitKind::Task);
        assert_eq!(u.restart, RestartPolicy::No);
        assert!(!u.autostart);
        assert_eq!(u.source, PathBuf::new());
        assert_eq!(u.instances, 1);
        assert_eq!(u.stop_signal, "SIGTERM");
        assert_eq!(u.stop_signal_number, 15);
        assert_eq!(u.log_max_size, 10 << 20);
    }

    #[test]
    fn argv_substitutes_every_placeholder() {
        let u = Unit::transient(
            "w",
            vec![
                "worker".into(),
                "--id={instance}".into(),
                "{instance}-{instance}".into(),
                "plain".into(),
            ],
        );
        assert_eq!(u.argv_for(7), ["worker", "--id=7", "7-7", "plain"]);
    }

    #[test]
    fn rlimits_iter_and_slots() {
        let mut r = Rlimits::default();
        *r.slot_mut("as").unwrap() = Some(Rlimit { soft: 1, hard: 2 });
        assert!(r.slot_mut("bogus").is_none());
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            [("as", Rlimit { soft: 1, hard: 2 })]
        );
    }
}
