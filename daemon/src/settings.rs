//! Resolved daemon settings: command-line flags over `corral.toml` over defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_config::DaemonConfig;

/// Everything corrald needs to know about where things live and how to behave.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory of unit files.
    pub units_dir: PathBuf,
    /// Directory of the state database.
    pub state_dir: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// Directory of instance logs.
    pub log_dir: PathBuf,
    /// HTTP status page address, if enabled.
    pub http: Option<SocketAddr>,
    /// Bearer token for the HTTP API's state-changing endpoints (none: read-only).
    pub http_token: Option<String>,
    /// Limits of the HTTP server (`[http]` max_connections, header_timeout, idle_timeout).
    pub http_limits: HttpLimits,
    /// How long running tasks are waited for at shutdown.
    pub shutdown_timeout: Duration,
    /// Stop timeout for `daemon = true` units at shutdown.
    pub daemon_grace: Duration,
    /// Largest request frame accepted.
    pub max_frame_bytes: usize,
    /// Most simultaneous socket connections (root and corrald's own user: a few more).
    pub max_connections: usize,
    /// Most simultaneous socket connections of one user other than root.
    pub max_connections_per_user: usize,
    /// A connection holding nothing is closed after this long without a request.
    pub idle_timeout: Option<Duration>,
    /// Most bytes of replies one connection may leave unread.
    pub max_unread_bytes: usize,
    /// Mode of the socket file.
    pub socket_mode: u32,
    /// Group given the socket file (members may use corral).
    pub socket_group: Option<String>,
    /// Largest queue item, bytes of JSON.
    pub max_item_bytes: usize,
    /// Queues declared in `corral.toml`, with their settings.
    pub queues: std::collections::BTreeMap<String, corral_config::QueueConfig>,
    /// The `[access]` table, if any.
    pub access: Option<corral_config::AccessConfig>,
    /// Template instances to start with corrald (`[enable]`).
    pub enable: std::collections::BTreeMap<String, Vec<String>>,
    /// Whether instances get cgroups of their own where the kernel allows.
    pub cgroups: bool,
    /// The shared PostgreSQL backend (`--backend`, `[backend]`); `None`: SQLite.
    pub backend: Option<crate::backend::BackendSettings>,
    /// With a shared backend: pool items this node runs at once (`pool_slots`).
    pub pool_slots: usize,
    /// Finished pool jobs older than this are removed (`pool_keep`).
    pub pool_keep: Duration,
}

/// What one HTTP client may hold: a connection slot, for a bounded time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most simultaneous connections (default 512).
    pub max_connections: usize,
    /// Longest wait for a request's headers (default 10 s).
    pub header_timeout: Duration,
    /// Longest time with no bytes moved either way (default 60 s).
    pub idle_timeout: Duration,
}

impl HttpLimits {
    fn resolve(file: &corral_config::HttpConfig) -> anyhow::Result<HttpLimits> {
        let limits = HttpLimits {
            max_connections: file.max_connections.unwrap_or(512),
            header_timeout: file.header_timeout.unwrap_or(Duration::from_secs(10)),
            idle_timeout: file.idle_timeout.unwrap_or(Duration::from_secs(60)),
        };
        if limits.max_connections == 0 {
            anyhow::bail!("http.max_connections must be at least 1 (or set http.enabled = false)");
        }
        if limits.header_timeout.is_zero() || limits.idle_timeout.is_zero() {
            anyhow::bail!("http.header_timeout and http.idle_timeout must be longer than 0s");
        }
        Ok(limits)
    }
}

/// Values given on the command line; each overrides the config file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--units`
    pub units_dir: Option<PathBuf>,
    /// `--state`
    pub state_dir: Option<PathBuf>,
    /// `--socket`
    pub socket: Option<PathBuf>,
    /// `--log-dir`
    pub log_dir: Option<PathBuf>,
    /// `--http`
    pub http: Option<String>,
    /// `--user`: use per-user (XDG) default paths even as root.
    pub user_mode: bool,
    /// `--backend`
    pub backend: Option<String>,
    /// `--node`
    pub node: Option<String>,
}

/// Default paths for a system service (root) or a user session.
struct Defaults {
    config: PathBuf,
    units_dir: PathBuf,
    state_dir: PathBuf,
    socket: PathBuf,
    log_dir: Option<PathBuf>,
}

fn defaults(user_mode: bool) -> Defaults {
    if !user_mode && nix::unistd::Uid::effective().is_root() {
        return Defaults {
            config: "/etc/corral/corral.toml".into(),
            units_dir: "/etc/corral/units".into(),
            state_dir: "/var/lib/corral".into(),
            socket: "/run/corral/corral.sock".into(),
            log_dir: Some("/var/log/corral".into()),
        };
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let xdg = |var: &str, fallback: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(fallback))
    };
    let config_home = xdg("XDG_CONFIG_HOME", ".config").join("corral");
    let state_dir = xdg("XDG_STATE_HOME", ".local/state").join("corral");
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir.clone());
    Defaults {
        config: config_home.join("corral.toml"),
        units_dir: config_home.join("units"),
        state_dir,
        socket: runtime.join("corral.sock"),
        log_dir: None,
    }
}

/// The config file to read: the one named, else the default one if it exists.
pub fn config_path(explicit: Option<&Path>, user_mode: bool) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_owned()),
        None => Some(defaults(user_mode).config).filter(|p| p.exists()),
    }
}

impl Settings {
    /// Merges flags over the config file over defaults, and makes every path absolute
    /// (instances run in other directories and get the socket path in their environment).
    pub fn resolve(flags: &Overrides, file: &DaemonConfig) -> anyhow::Result<Settings> {
        let d = defaults(flags.user_mode);
        let pick = |flag: &Option<PathBuf>, conf: &Option<PathBuf>, default: PathBuf| {
            let chosen = flag.clone().or_else(|| conf.clone()).unwrap_or(default);
            std::path::absolute(&chosen).unwrap_or(chosen)
        };
        let state_given = flags.state_dir.is_some() || file.state_dir.is_some();
        let state_dir = pick(&flags.state_dir, &file.state_dir, d.state_dir);
        // A state dir chosen by hand (a demo, a test) keeps the logs beside it.
        let log_default = match d.log_dir {
            Some(dir) if !state_given => dir,
            _ => state_dir.join("logs"),
        };
        let http_enabled = file.http.enabled.unwrap_or(true) || flags.http.is_some();
        let http = match flags.http.clone().or_else(|| file.http.listen.clone()) {
            _ if !http_enabled => None,
            Some(s) if s == "off" || s == "none" => None,
            Some(s) => Some(parse_addr(&s)?),
            None => Some(parse_addr("127.0.0.1:8787")?),
        };
        if let Some(addr) = http {
            let remote_ok = file.http.allow_remote.unwrap_or(false)
                && file.http.token.as_ref().is_some_and(|t| !t.is_empty());
            if !addr.ip().is_loopback() && !remote_ok {
                anyhow::bail!(
                    "refusing to serve HTTP on {addr}, which is not a loopback address: set http.allow_remote = true and an http.token in corral.toml, or listen on 127.0.0.1"
                );
            }
        }
        for (name, q) in &file.queues {
            crate::primitives::check_name("queue", name)
                .and_then(|()| {
                    crate::primitives::check_dead_letter(
                        name,
                        q.max_deliveries,
                        q.dead_letter.as_deref(),
                    )
                })
                .map_err(|e| anyhow::anyhow!("[queues.{name}] in corral.toml: {}", e.message))?;
        }
        Ok(Settings {
            units_dir: pick(&flags.units_dir, &file.units_dir, d.units_dir),
            socket: pick(&flags.socket, &file.socket, d.socket),
            log_dir: pick(&flags.log_dir, &file.log_dir, log_default),
            state_dir,
            http,
            http_token: file.http.token.clone().filter(|t| !t.is_empty()),
            http_limits: HttpLimits::resolve(&file.http)?,
            shutdown_timeout: file.shutdown_timeout.unwrap_or(Duration::from_secs(30)),
            daemon_grace: file.daemon_grace.unwrap_or(Duration::from_secs(1)),
            max_frame_bytes: file
                .max_frame_bytes
                .unwrap_or(corral_proto::DEFAULT_MAX_FRAME),
            max_connections: file.max_connections.unwrap_or(1024),
            max_connections_per_user: file.max_connections_per_user.unwrap_or(256),
            idle_timeout: Some(file.idle_timeout.unwrap_or(Duration::from_secs(600)))
                .filter(|t| !t.is_zero()),
            // One reply of the largest size must fit.
            max_unread_bytes: file
                .max_unread_bytes
                .unwrap_or(16 << 20)
                .max(corral_proto::MAX_REPLY_BYTES),
            socket_mode: file.socket_mode.unwrap_or(0o660),
            socket_group: file
                .socket_group
                .clone()
                .or_else(|| default_socket_group(flags.user_mode)),
            max_item_bytes: file.max_item_bytes.unwrap_or(256 * 1024),
            queues: file.queues.clone(),
            access: file.access.clone(),
            enable: file.enable.clone(),
            cgroups: file.cgroups.unwrap_or(true),
            backend: resolve_backend(flags, &file.backend)?,
            pool_slots: match file.pool_slots {
                Some(0) => {
                    anyhow::bail!("pool_slots must be at least 1 (the default is the CPU count)")
                }
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            pool_keep: match file.pool_keep {
                Some(d) if d.is_zero() => anyhow::bail!(
                    "pool_keep must be more than 0 (how long finished pool jobs are kept; the default is 7d)"
                ),
                Some(d) => d,
                None => Duration::from_secs(7 * 86_400),
            },
        })
    }

    /// The state database file.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }
}

fn resolve_backend(
    flags: &Overrides,
    file: &corral_config::BackendConfig,
) -> anyhow::Result<Option<crate::backend::BackendSettings>> {
    let Some(url) = flags.backend.clone().or_else(|| file.url.clone()) else {
        if flags.node.is_some() {
            anyhow::bail!("--node names this node of a shared backend: give --backend URL too");
        }
        return Ok(None);
    };
    let node = flags
        .node
        .clone()
        .or_else(|| file.node.clone())
        .unwrap_or_else(crate::backend::host_name);
    if node.is_empty() || node.len() > 200 || node.chars().any(char::is_control) {
        anyhow::bail!(
            "invalid node name {node:?}: give a non-empty name of at most 200 characters (--node NAME)"
        );
    }
    let lease = file.lease.unwrap_or(crate::backend::DEFAULT_LEASE);
    if lease < Duration::from_millis(300) {
        anyhow::bail!("backend.lease must be at least 300ms (the default is 10s)");
    }
    let poll = file.poll.unwrap_or(crate::backend::DEFAULT_POLL);
    if poll < Duration::from_millis(10) {
        anyhow::bail!("backend.poll must be at least 10ms (the default is 500ms)");
    }
    Ok(Some(crate::backend::BackendSettings {
        url,
        node,
        lease,
        poll,
    }))
}

fn parse_addr(s: &str) -> anyhow::Result<SocketAddr> {
    s.parse().map_err(|_| {
        anyhow::anyhow!(
            "invalid HTTP address `{s}`: expected IP:PORT like 127.0.0.1:8787, or `off`"
        )
    })
}

/// As a system service, the socket belongs to the `corral` group when that group exists
/// (the package creates it), so its members may use corral.
fn default_socket_group(user_mode: bool) -> Option<String> {
    let system = !user_mode && nix::unistd::Uid::effective().is_root();
    let exists = || matches!(nix::unistd::Group::from_name("corral"), Ok(Some(_)));
    (system && exists()).then(|| "corral".to_owned())
}
