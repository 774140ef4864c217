//! Bookkeeping after every message: the tick, answering waiters, applying pending reloads,
//! timers and events.

use super::machine::Effects;
use super::*;

impl Supervisor {
    pub(super) fn on_tick(&mut self) {
        self.check_memory();
        if let Some(cg) = &self.config.cgroups {
            // A cgroup can go once its last process has left (after cgroup.kill, soon).
            let units = &self.units;
            self.cgroups_to_remove.retain(|(name, index)| {
                let running = units
                    .get(name)
                    .and_then(|e| e.instances.get(*index as usize))
                    .is_some_and(Instance::has_process);
                !running && !cg.remove(name, *index)
            });
        }
        // Only the logs of instances with a process can grow; a stopped one's log is
        // checked again once it runs.
        let files: Vec<logs::Rotation> = self
            .units
            .values()
            .flat_map(|e| {
                e.instances
                    .iter()
                    .enumerate()
                    .filter(|(_, inst)| inst.run().is_some())
                    .map(|(i, _)| logs::Rotation {
                        path: logs::log_path(&self.config.log_dir, &e.unit.name, i as u32),
                        max_size: e.unit.log_max_size,
                        keep: e.unit.log_keep,
                    })
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            logs::rotate_all(&files);
            // Hand memory freed since the last tick (a burst of spawns, a large status
            // reply) back to the system: glibc keeps freed pages otherwise, and corrald
            // is meant to stay small for months.
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim has no preconditions.
            unsafe {
                nix::libc::malloc_trim(0);
            }
        });
    }

    /// Runs after every message: starts what became startable, applies pending reload
    /// changes, answers waiters whose units settled, advances shutdown.
    pub(super) fn settle(&mut self) {
        self.pump_starts();
        self.apply_pending();
        self.start_queued_runs();
        self.pump_shutdown();
        let now = Instant::now();
        for entry in self.units.values_mut() {
            match (entry.settled(), entry.settled_at) {
                (true, None) => entry.settled_at = Some(now),
                (false, Some(_)) => entry.settled_at = None,
                _ => {}
            }
        }
        self.answer_waiters(now);
    }

    /// Answers the waiters the state now satisfies: those of `stop`, `restart` and
    /// `wait`, then those for a first pid, then those of `start --wait`. Each decision's
    /// answers are carried out before the next is decided (so the start that answers a
    /// `restart` is seen by the others).
    fn answer_waiters(&mut self, now: Instant) {
        let mut fx = Effects::new();
        self.waiters.settled(&self.units, &mut fx);
        self.apply_to_waiters(fx);
        let mut fx = Effects::new();
        self.waiters.first_pids(&self.units, &mut fx);
        self.apply_to_waiters(fx);
        let mut fx = Effects::new();
        self.waiters.started(&self.units, now, &mut fx);
        self.apply_to_waiters(fx);
    }

    pub(super) fn apply_pending(&mut self) {
        let mut to_start = Vec::new();
        let settled: Vec<String> = self
            .units
            .iter()
            .filter(|(_, e)| e.pending.is_some() && e.settled())
            .map(|(n, _)| n.clone())
            .collect();
        let applied = !settled.is_empty();
        for name in settled {
            let Some(entry) = self.units.get_mut(&name) else {
                continue;
            };
            match entry.pending.take() {
                Some(Pending::Remove) => {
                    self.units.remove(&name);
                }
                Some(Pending::Replace { unit, start }) => {
                    let mut fresh = UnitEntry::new(unit, false);
                    fresh.template = entry.template.take();
                    // Keep the history of instances that still exist.
                    for (old, new) in entry.instances.iter().zip(fresh.instances.iter_mut()) {
                        *new = old.replaced();
                    }
                    *entry = fresh;
                    if start {
                        to_start.push(name);
                    }
                }
                None => {}
            }
        }
        if applied {
            self.sync_timers();
        }
        if !to_start.is_empty() {
            if let Err(e) = self.start_units(&to_start) {
                tracing::error!("reload: {e}");
            }
        }
    }

    pub(super) fn after(&self, delay: Duration, msg: Msg) {
        crate::actor::after(&self.tx, delay, msg);
    }

    pub(super) fn event(
        &self,
        unit: &str,
        instance: Option<u32>,
        kind: &'static str,
        detail: String,
    ) {
        crate::version::state_changed();
        tracing::info!(unit, instance, kind, "{detail}");
        self.store.event(Event {
            unit: Some(unit.to_owned()),
            instance,
            kind,
            detail,
        });
    }

    pub(super) fn event_global(&self, kind: &'static str, detail: String) {
        crate::version::state_changed();
        tracing::info!(kind, "{detail}");
        self.store.event(Event {
            unit: None,
            instance: None,
            kind,
            detail,
        });
    }
}
