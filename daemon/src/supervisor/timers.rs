//! Scheduled units (`schedule`/`every`): arming their timers, firing them, `overlap`.

use super::*;

impl Supervisor {
    /// Creates the timers of every scheduled unit at corrald's start, and runs once each
    /// one with `catch_up` whose run was missed while corrald was down.
    pub(super) fn start_timers(&mut self, last_runs: &BTreeMap<String, SystemTime>) {
        let now = SystemTime::now();
        let scheduled: Vec<(String, corral_config::Schedule)> = self
            .units
            .values()
            .filter_map(|e| Some((e.unit.name.clone(), e.unit.schedule.clone()?)))
            .collect();
        for (name, sched) in scheduled {
            let (timer, at_start) = schedule::Timer::new(sched, last_runs.get(&name).copied(), now);
            self.timers.insert(name.clone(), timer);
            if at_start == schedule::AtStart::CatchUp {
                self.event(
                    &name,
                    None,
                    "schedule_catch_up",
                    "missed while corrald was down".into(),
                );
                let ran = self.fire_schedule(&name);
                if ran {
                    if let Some(t) = self.timers.get_mut(&name) {
                        t.last_run = Some(now);
                    }
                }
            }
            self.arm_timer(&name);
        }
        self.settle();
    }

    /// After a reload: a new or changed schedule gets a new timer (keeping when the unit
    /// last ran); a unit that lost its schedule loses its timer.
    pub(super) fn sync_timers(&mut self) {
        let now = SystemTime::now();
        let wanted: BTreeMap<String, corral_config::Schedule> = self
            .units
            .values()
            .filter(|e| !e.transient && e.pending.is_none())
            .filter_map(|e| Some((e.unit.name.clone(), e.unit.schedule.clone()?)))
            .collect();
        self.timers.retain(|name, _| wanted.contains_key(name));
        for (name, sched) in wanted {
            if self.timers.get(&name).is_some_and(|t| t.schedule == sched) {
                continue;
            }
            let old = self.timers.remove(&name);
            let (mut timer, _) =
                schedule::Timer::new(sched, old.as_ref().and_then(|t| t.last_run), now);
            timer.generation = old.map_or(0, |t| t.generation + 1);
            self.timers.insert(name.clone(), timer);
            self.arm_timer(&name);
        }
    }

    pub(super) fn arm_timer(&self, name: &str) {
        let Some(timer) = self.timers.get(name) else {
            return;
        };
        if let Some(delay) = timer.sleep(SystemTime::now()) {
            self.after(
                delay,
                Msg::ScheduleDue {
                    unit: name.to_owned(),
                    generation: timer.generation,
                },
            );
        }
    }

    pub(super) fn on_schedule_due(&mut self, name: &str, generation: u64) {
        let now = SystemTime::now();
        let Some(timer) = self.timers.get(name) else {
            return;
        };
        if timer.generation != generation {
            return;
        }
        if !timer.due(now) {
            self.arm_timer(name);
            return;
        }
        let ran = self.fire_schedule(name);
        if let Some(timer) = self.timers.get_mut(name) {
            timer.fired(now, ran);
        }
        self.arm_timer(name);
    }

    /// Starts a scheduled run of `name` unless its overlap rule says otherwise; whether
    /// a run was started.
    pub(super) fn fire_schedule(&mut self, name: &str) -> bool {
        if self.shutdown.is_some() {
            return false;
        }
        let Some(entry) = self.units.get(name) else {
            return false;
        };
        let unit = entry.unit.clone();
        let Some(sched) = &unit.schedule else {
            return false;
        };
        if entry.pending.is_some() {
            return false; // being replaced by a reload: the new definition's timer takes over
        }
        if entry.settled() {
            self.event(name, None, "scheduled", sched.describe());
            return match self.start_units(&[name.to_owned()]) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!("scheduled run of {name}: {e}");
                    false
                }
            };
        }
        match sched.overlap {
            corral_config::Overlap::Skip => {
                self.event(
                    name,
                    None,
                    "schedule_skipped",
                    "the last run is still running".into(),
                );
                false
            }
            corral_config::Overlap::Queue => {
                if let Some(t) = self.timers.get_mut(name) {
                    t.queued = true;
                }
                self.event(
                    name,
                    None,
                    "schedule_queued",
                    "runs when the last run has finished".into(),
                );
                false
            }
            corral_config::Overlap::Allow => {
                let mut copy = (*unit).clone();
                copy.schedule = None;
                copy.name = String::new();
                let mut n = 1;
                while self.units.contains_key(&format!("{name}.run-{n}")) {
                    n += 1;
                }
                copy.name = format!("{name}.run-{n}");
                self.event(
                    name,
                    None,
                    "scheduled",
                    format!(
                        "{} beside the running one, as {}",
                        sched.describe(),
                        copy.name
                    ),
                );
                match self.run(Transient {
                    unit: copy,
                    stdio: None,
                    parent: None,
                }) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!("scheduled run of {name}: {e}");
                        false
                    }
                }
            }
        }
    }

    /// Starts the queued run of each unit whose last run has finished.
    pub(super) fn start_queued_runs(&mut self) {
        if self.shutdown.is_some() || !self.timers.values().any(|t| t.queued) {
            return;
        }
        let ready: Vec<String> = self
            .timers
            .iter()
            .filter(|(name, t)| t.queued && self.units.get(*name).is_some_and(UnitEntry::settled))
            .map(|(name, _)| name.clone())
            .collect();
        for name in ready {
            if let Some(t) = self.timers.get_mut(&name) {
                t.queued = false;
                t.last_run = Some(SystemTime::now());
            }
            self.event(&name, None, "scheduled", "the queued run".into());
            if let Err(e) = self.start_units(std::slice::from_ref(&name)) {
                tracing::warn!("queued run of {name}: {e}");
            }
        }
    }

    pub(super) fn timers_status(&self) -> TimersResult {
        let ms = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        };
        TimersResult {
            timers: self
                .timers
                .iter()
                .map(|(name, t)| TimerStatus {
                    unit: name.clone(),
                    schedule: t.schedule.describe(),
                    overlap: t.schedule.overlap.as_str().to_owned(),
                    catch_up: t.schedule.catch_up,
                    last_run_ms: t.last_run.map(ms),
                    next_run_ms: t.next.map(ms),
                    queued: t.queued,
                })
                .collect(),
        }
    }
}
