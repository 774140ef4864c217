//! Configuration for **corral**, a Linux process manager: the schema,
//! parsing and validation of unit files and of the daemon's main config.
//!
//! This crate is pure: it reads text (or, for the `load_*` helpers, files)
//! and returns validated values. It never spawns processes or opens sockets.
//!
//! # Unit files
//!
//! Each file `UNITS_DIR/NAME.toml` defines the unit `NAME` (see
//! [`valid_unit_name`]). [`load_units_dir`] and [`load_units`] parse every
//! file, resolve `extends`, apply defaults and check cross-unit references,
//! returning either every [`Unit`] or **every** error found, across all
//! files, each as `file:line:column: message`:
//!
//! ```
//! use std::path::PathBuf;
//! let files = vec![
//!     (PathBuf::from("units/web.toml"), "command = [\"web\", \"--port\", \"80{instance}\"]\ninstances = 2\n".to_owned()),
//!     (PathBuf::from("units/bad.toml"), "comand = [\"x\"]\n".to_owned()),
//! ];
//! let errors = corral_config::load_units(&files).unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "units/bad.toml:1:1: missing required key `command`, e.g. command = [\"/usr/bin/server\", \"--port\", \"8080\"]\n\
//!      units/bad.toml:1:1: unknown key `comand`, did you mean `command`?"
//! );
//!
//! let units = corral_config::load_units(&files[..1]).unwrap();
//! assert_eq!(units["web"].argv_for(1), ["web", "--port", "801"]);
//! ```
//!
//! The file `sample-unit.toml` next to this crate's manifest documents every
//! key. Durations are strings (`"500ms"`, `"1m30s"`, see [`parse_duration`])
//! and sizes are integers or strings (`"10M"`, see [`parse_size`]).
//!
//! ## `extends`
//!
//! `extends = "base"` makes a unit inherit every key written in `base.toml`
//! (recursively), with its own keys overriding. `env` and `rlimits` merge
//! per variable / per limit; every other key is replaced whole. Errors in
//! inherited keys point into the file where the key was written.
//!
//! ## Dependencies
//!
//! `after` and `requires` name other units. Unknown names, self-references
//! and cycles (over both kinds of edges together) are errors.
//!
//! # Main config
//!
//! [`load_daemon_config`] reads `corral.toml` into a [`DaemonConfig`] whose
//! settings are all optional; see `packaging/corral.toml` in the repository.

mod daemon;
mod duration;
mod envfile;
mod error;
mod fields;
mod parse;
mod signal;
mod suggest;
mod unit;
mod validate;

pub use daemon::{
    AccessConfig, BackendConfig, DaemonConfig, HttpConfig, NameRule, QueueConfig,
    load_daemon_config, parse_daemon_config,
};
pub use duration::{format_duration, parse_duration, parse_size};
pub use envfile::{EnvFile, MAX_ENV_FILE, env_name_problem, parse_env_file, read_env_files};
pub use error::{ConfigError, ConfigErrors};
pub use signal::{signal_name, signal_number};
pub use unit::{
    ARG_PLACEHOLDER, Check, HEALTH_FAILURES, HEALTH_INTERVAL, Health, HttpTarget,
    INSTANCE_PLACEHOLDER, MAX_INSTANCES, MAX_UNIT_NAME_LEN, MIN_LOG_MAX_SIZE, Overlap,
    PROBE_TIMEOUT, PoolMode, READY_DEADLINE, READY_INTERVAL, Ready, RestartPolicy, Rlimit, Rlimits,
    Schedule, UNIT_NAME_RULES, Unit, UnitKind, When, template_of, valid_unit_name,
};
pub use validate::{
    MAX_CONFIG_FILE, NotLoaded, PartialUnits, load_units, load_units_dir, load_units_dir_partial,
};

/// Every key a unit file may contain, in documentation order.
pub const UNIT_KEYS: &[&str] = parse::UNIT_KEYS;
