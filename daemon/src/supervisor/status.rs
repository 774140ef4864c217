//! What the supervisor reports: `status` of units and instances (and of unit files set
//! aside for their errors), the error for a name that is not a unit, and log paths.

use super::*;

pub(super) fn not_found(unit: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::NotFound,
        format!("no unit named `{unit}` (see `corralctl status`)"),
    )
}

impl UnitEntry {
    pub(super) fn status(&self) -> UnitStatus {
        UnitStatus {
            name: self.unit.name.clone(),
            kind: kind_name(self.unit.kind).into(),
            daemon: self.unit.daemon,
            transient: self.transient,
            loaded: true,
            errors: Vec::new(),
            parent: self.parent.clone(),
            instances: {
                let now = Instant::now();
                self.instances.iter().map(|i| i.status(now)).collect()
            },
        }
    }
}

/// A unit file set aside for its errors, as `status` shows it: no instances.
fn not_loaded_status(bad: &NotLoaded) -> UnitStatus {
    UnitStatus {
        name: bad.name.clone(),
        kind: "unknown".into(),
        daemon: false,
        transient: false,
        loaded: false,
        errors: bad.errors.iter().map(ToString::to_string).collect(),
        parent: None,
        instances: Vec::new(),
    }
}

fn kind_name(kind: UnitKind) -> &'static str {
    match kind {
        UnitKind::Service => "service",
        UnitKind::Task => "task",
        UnitKind::Pool => "pool",
    }
}

impl Supervisor {
    pub(super) fn status(&self, unit: Option<&str>) -> Result<StatusResult, ErrorBody> {
        let units = match unit {
            Some(name) => match (self.units.get(name), self.not_loaded.get(name)) {
                (Some(entry), _) => vec![entry.status()],
                (None, Some(bad)) => vec![not_loaded_status(bad)],
                (None, None) => return Err(self.unknown(name)),
            },
            None => self
                .units
                .values()
                .map(UnitEntry::status)
                .chain(self.not_loaded.values().map(not_loaded_status))
                .collect(),
        };
        let mut units = units;
        if let Some(cg) = &self.config.cgroups {
            for unit in &mut units {
                for inst in unit.instances.iter_mut().filter(|i| i.pid.is_some()) {
                    let usage = cg.usage(&unit.name, inst.instance);
                    inst.cgroup_cpu_usec = usage.cpu_usec;
                    inst.cgroup_memory_bytes = usage.memory_bytes;
                }
            }
        }
        Ok(StatusResult {
            units,
            supervision: self.config.supervision.clone(),
        })
    }

    /// The error for a unit name that is not a unit: one whose file was not loaded for
    /// its errors says so, with them; any other name is not found.
    pub(super) fn unknown(&self, name: &str) -> ErrorBody {
        let base = corral_config::template_of(name).map(|(base, _)| base);
        let bad = self
            .not_loaded
            .get(name)
            .or_else(|| base.and_then(|b| self.not_loaded.get(b)));
        match bad {
            Some(bad) => ErrorBody {
                code: ErrorCode::InvalidConfig,
                message: format!(
                    "unit `{}` is not loaded: {} has errors; correct it, then run `corralctl reload`",
                    bad.name,
                    bad.file.display()
                ),
                details: bad.errors.iter().map(ToString::to_string).collect(),
            },
            None => not_found(name),
        }
    }

    pub(super) fn log_paths(
        &self,
        unit: &str,
        instance: Option<u32>,
    ) -> Result<Vec<(u32, PathBuf)>, ErrorBody> {
        let entry = self.units.get(unit).ok_or_else(|| self.unknown(unit))?;
        let count = entry.unit.instances;
        if let Some(i) = instance {
            if i >= count {
                return Err(ErrorBody::new(
                    ErrorCode::NotFound,
                    format!(
                        "unit `{unit}` has {count} instance(s), numbered from 0; there is no instance {i}"
                    ),
                ));
            }
        }
        Ok((0..count)
            .filter(|i| instance.is_none_or(|want| want == *i))
            .map(|i| (i, logs::log_path(&self.config.log_dir, unit, i)))
            .collect())
    }
}
