//! When a started instance counts as started: what `start --wait` waits for.
//!
//! corrald has no readiness checks (yet), so "started" means the process was spawned and
//! did not exit within [`START_WINDOW`] (like supervisord's `startsecs`); a task may also
//! have exited with code 0 by then. Anything else that happens first is a failed start:
//! the command could not be spawned, the process exited (even if its restart policy
//! will run it again), a requirement failed, or the instance was stopped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_config::UnitKind;
use corral_proto::InstanceState;

use super::Instance;

/// How long a process must run before its start counts as a success.
pub const START_WINDOW: Duration = Duration::from_secs(1);

/// One instance that failed to start, as the `start` waiter reports it.
#[derive(Debug, Clone)]
pub struct StartFailure {
    /// Unit name.
    pub unit: String,
    /// Instance number.
    pub instance: u32,
    /// Why, e.g. `exit 1 within 1s of starting` or the spawn error.
    pub reason: String,
    /// The instance's log file, whose last lines say more.
    pub log: PathBuf,
}

/// Where one instance is on its way to having started.
#[derive(Debug, PartialEq)]
pub(super) enum Progress {
    /// Started (see the module docs).
    Done,
    /// Not yet; look again by this time, if known (else at its next transition).
    Pending(Option<Instant>),
    /// It will not start by itself: why.
    Failed(String),
}

/// Where `inst`, an instance of a unit of `kind`, is on its way to having started.
pub(super) fn progress(kind: UnitKind, inst: &Instance, now: Instant) -> Progress {
    let window = humanize(START_WINDOW);
    let exit = inst
        .last_exit
        .map_or_else(|| "exited".to_owned(), |e| format!("exited ({e})"));
    match inst.state {
        InstanceState::Running => match inst.started {
            Some(t) if now.duration_since(t) >= START_WINDOW => Progress::Done,
            Some(t) => Progress::Pending(Some(t + START_WINDOW)),
            None => Progress::Pending(None),
        },
        InstanceState::Starting => Progress::Pending(None),
        InstanceState::Exited
            if kind == UnitKind::Task && inst.last_exit.is_some_and(|e| e.success()) =>
        {
            Progress::Done
        }
        InstanceState::Exited if kind == UnitKind::Task => Progress::Failed(exit),
        InstanceState::Exited => Progress::Failed(format!(
            "{exit} within {window} of starting; a service is expected to keep running"
        )),
        InstanceState::Backoff => Progress::Failed(format!(
            "{exit} within {window} of starting; corrald restarts it by its restart policy"
        )),
        InstanceState::Failed => {
            Progress::Failed(inst.reason.clone().unwrap_or_else(|| "failed".to_owned()))
        }
        InstanceState::Stopping | InstanceState::Stopped | InstanceState::Inactive => {
            Progress::Failed("stopped before it had started".to_owned())
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
