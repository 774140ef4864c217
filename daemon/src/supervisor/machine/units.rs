//! The decisions over units rather than one instance: dependency gating, what a reload
//! does with a unit it still has, and the shutdown order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use corral_config::{Unit, UnitKind};
use corral_proto::InstanceState;

use super::super::UnitEntry;

/// Whether unit `name` may start: Ok(true) now, Ok(false) not yet (what it requires or
/// comes after is still on its way), Err when a requirement failed.
pub(in crate::supervisor) fn deps_ready(
    units: &BTreeMap<String, UnitEntry>,
    name: &str,
) -> Result<bool, String> {
    let Some(unit) = units.get(name).map(|e| &e.unit) else {
        return Err(format!("unit `{name}` does not exist"));
    };
    for dep in &unit.requires {
        let Some(d) = units.get(dep) else {
            return Err(format!("required unit `{dep}` does not exist"));
        };
        for i in &d.instances {
            match (d.unit.kind, i.wire_state()) {
                (_, InstanceState::Failed) => {
                    let why = i.reason.as_ref().map(|r| format!(": {r}"));
                    return Err(format!(
                        "required unit `{dep}` failed{}",
                        why.unwrap_or_default()
                    ));
                }
                (UnitKind::Service, InstanceState::Running) => {}
                (UnitKind::Task, InstanceState::Exited)
                    if i.last_exit.is_some_and(|e| e.success()) => {}
                (UnitKind::Task, InstanceState::Exited) => {
                    return Err(format!("required task `{dep}` exited unsuccessfully"));
                }
                (_, s) if s.is_active() => return Ok(false),
                (_, s) => {
                    return Err(format!("required unit `{dep}` is {}", s.as_str()));
                }
            }
        }
    }
    for dep in unit.after.iter().filter(|d| !unit.requires.contains(d)) {
        let Some(d) = units.get(dep) else {
            continue;
        };
        let busy = d.instances.iter().any(|i| match i.wire_state() {
            InstanceState::Starting | InstanceState::Backoff => true,
            // "after a task" means after it has finished.
            InstanceState::Running | InstanceState::Stopping => d.unit.kind == UnitKind::Task,
            _ => false,
        });
        if busy {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What a reload does with a unit it still has, by its old entry and new definition.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::supervisor) enum ReloadAction {
    /// The same definition: nothing.
    Unchanged,
    /// A changed definition, swapped in once the unit has settled; if it was active,
    /// it is stopped first and started again with the new definition.
    Replace { restart: bool },
}

/// How a reload treats `entry` given its new definition `unit`.
pub(in crate::supervisor) fn reload_action(entry: &UnitEntry, unit: &Unit) -> ReloadAction {
    if !entry.transient && *entry.unit == *unit {
        ReloadAction::Unchanged
    } else {
        ReloadAction::Replace {
            restart: !entry.settled(),
        }
    }
}

/// One step of the shutdown order over the units still `active`: which to stop now, each
/// with its stop timeout (`None`: the unit's own). Daemon units at once (with `grace`),
/// tasks once they finish or `tasks_expired`; then services, each once nothing that
/// depends on it is still active (reverse dependency order).
pub(in crate::supervisor) fn shutdown_step(
    active: &[Arc<Unit>],
    tasks_expired: bool,
    grace: Duration,
) -> Vec<(Arc<Unit>, Option<Duration>)> {
    // Services go last: tasks may still need them, and daemon units die first.
    let first_phase_busy = active.iter().any(|u| u.daemon || u.kind == UnitKind::Task);
    let mut stop = Vec::new();
    for unit in active {
        let go = if unit.daemon {
            Some(Some(grace.min(unit.stop_timeout)))
        } else if unit.kind == UnitKind::Task {
            tasks_expired.then_some(None)
        } else {
            let has_active_dependent = active.iter().any(|other| {
                other.name != unit.name
                    && (other.after.contains(&unit.name) || other.requires.contains(&unit.name))
            });
            (!first_phase_busy && !has_active_dependent).then_some(None)
        };
        if let Some(timeout) = go {
            stop.push((unit.clone(), timeout));
        }
    }
    stop
}
