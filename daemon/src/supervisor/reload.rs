//! Reload (changed units replaced once they have settled) and transient `run` units.

use super::machine::ReloadAction;
use super::*;

impl Supervisor {
    pub(super) fn reload(&mut self, new: BTreeMap<String, Unit>) -> ReloadResult {
        let mut result = ReloadResult {
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            unchanged: Vec::new(),
        };
        // A reload is only ever given a set without errors: every file is loaded now.
        self.not_loaded.clear();
        let (templates, new): (BTreeMap<_, _>, BTreeMap<_, _>) =
            new.into_iter().partition(|(_, u)| u.is_template());
        self.reload_templates(templates, &mut result);
        let old: Vec<String> = self
            .units
            .iter()
            .filter(|(_, e)| !e.transient && e.template.is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for name in old.iter().filter(|n| !new.contains_key(*n)) {
            self.stop_unit(name, None, "reload");
            if let Some(entry) = self.units.get_mut(name) {
                entry.pending = Some(Pending::Remove);
            }
            result.removed.push(name.clone());
        }
        let mut to_start = Vec::new();
        for (name, unit) in new {
            let unit = Arc::new(unit);
            let action = self
                .units
                .get(&name)
                .map(|e| machine::reload_action(e, &unit));
            match action {
                Some(ReloadAction::Unchanged) => result.unchanged.push(name),
                Some(ReloadAction::Replace { restart }) => {
                    self.replace(&name, unit, restart);
                    result.changed.push(name);
                }
                None => {
                    if unit.autostart {
                        to_start.push(name.clone());
                    }
                    self.units.insert(name.clone(), UnitEntry::new(unit, false));
                    result.added.push(name);
                }
            }
        }
        self.event_global("reload", format!("{result:?}"));
        self.apply_pending();
        self.sync_timers();
        if let Err(e) = self.start_units(&to_start) {
            tracing::error!("reload: {e}");
        }
        result
    }

    /// Reload of the templates: the instance units of a removed template are stopped and
    /// removed, those of a changed one are made again from it (and restarted if they
    /// were running).
    pub(super) fn reload_templates(
        &mut self,
        new: BTreeMap<String, Unit>,
        result: &mut ReloadResult,
    ) {
        for name in self.templates.keys() {
            if !new.contains_key(name) {
                result.removed.push(name.clone());
            }
        }
        for (name, t) in &new {
            match self.templates.get(name) {
                None => result.added.push(name.clone()),
                Some(old) if **old == *t => result.unchanged.push(name.clone()),
                Some(_) => result.changed.push(name.clone()),
            }
        }
        self.templates = new.into_iter().map(|(n, u)| (n, Arc::new(u))).collect();
        let instances: Vec<(String, String)> = self
            .units
            .iter()
            .filter_map(|(n, e)| Some((n.clone(), e.template.clone()?)))
            .collect();
        for (name, base) in instances {
            let remade = corral_config::template_of(&name)
                .zip(self.templates.get(&base))
                .and_then(|((_, arg), t)| t.instantiate(arg).ok());
            let Some(entry) = self.units.get_mut(&name) else {
                continue;
            };
            match remade {
                None => {
                    entry.pending = Some(Pending::Remove);
                    self.stop_unit(&name, None, "reload");
                    result.removed.push(name);
                }
                Some(unit) => match machine::reload_action(entry, &unit) {
                    ReloadAction::Unchanged => result.unchanged.push(name),
                    ReloadAction::Replace { restart } => {
                        self.replace(&name, Arc::new(unit), restart);
                        result.changed.push(name);
                    }
                },
            }
        }
    }

    /// Swaps in a changed definition of `name` once the unit has settled; with
    /// `restart`, it is stopped first and started again with it.
    fn replace(&mut self, name: &str, unit: Arc<Unit>, restart: bool) {
        if let Some(entry) = self.units.get_mut(name) {
            entry.pending = Some(Pending::Replace {
                unit,
                start: restart,
            });
        }
        if restart {
            self.stop_unit(name, None, "reload");
        }
    }

    pub(super) fn run(&mut self, transient: Transient) -> Result<String, ErrorBody> {
        let Transient {
            mut unit,
            stdio,
            parent,
        } = transient;
        if unit.name.is_empty() {
            while self
                .units
                .contains_key(&format!("run-{}", self.next_transient))
            {
                self.next_transient += 1;
            }
            unit.name = format!("run-{}", self.next_transient);
            self.next_transient += 1;
        }
        let name = unit.name.clone();
        match self.units.get(&name) {
            Some(e) if !e.transient || !e.settled() => {
                return Err(ErrorBody::new(
                    ErrorCode::Failed,
                    format!("a unit named `{name}` already exists; choose another --name"),
                ));
            }
            _ => {}
        }
        // A reused name must not replay an earlier run's output to `run --wait`.
        let log = logs::log_path(&self.config.log_dir, &name, 0);
        if let Err(e) = std::fs::File::create(&log) {
            tracing::warn!("cannot truncate {}: {e}", log.display());
        }
        let mut entry = UnitEntry::new(Arc::new(unit), true);
        entry.stdio = stdio.map(Arc::new);
        entry.parent = parent;
        self.units.insert(name.clone(), entry);
        self.start_units(std::slice::from_ref(&name))?;
        self.prune_transient();
        Ok(name)
    }

    pub(super) fn prune_transient(&mut self) {
        let mut finished: Vec<(Instant, String)> = self
            .units
            .values()
            .filter(|e| e.transient && e.settled())
            .filter_map(|e| e.settled_at.map(|t| (t, e.unit.name.clone())))
            .collect();
        if finished.len() > KEEP_TRANSIENT {
            finished.sort();
            for (_, name) in &finished[..finished.len() - KEEP_TRANSIENT] {
                self.units.remove(name);
            }
        }
    }
}
