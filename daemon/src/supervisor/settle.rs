//! Bookkeeping after every message: the tick, answering waiters, applying pending reloads,
//! timers and events.

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
        let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| {
                w.units
                    .iter()
                    .all(|u| self.units.get(u).is_none_or(UnitEntry::settled))
            });
        self.waiters = waiting;
        for waiter in ready {
            self.fire(waiter);
        }
        let units = &self.units;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pid_waiters)
            .into_iter()
            .partition(|(unit, _)| {
                units
                    .get(unit)
                    .and_then(|e| e.instances.first())
                    .is_none_or(|i| i.run().is_some() || !i.is_active())
            });
        self.pid_waiters = waiting;
        for (unit, reply) in ready {
            let pid = self
                .units
                .get(&unit)
                .and_then(|e| e.instances.first())
                .and_then(Instance::pid)
                .map(|p| p as u32);
            let _ = reply.send(Ok(pid));
        }
        self.answer_start_waiters(now);
    }

    /// Answers the `start --wait` waiters whose instances have all started or failed;
    /// arms a [`Msg::Wake`] for the earliest start window still running.
    pub(super) fn answer_start_waiters(&mut self, now: Instant) {
        if self.start_waiters.is_empty() {
            return;
        }
        let mut wake: Option<Instant> = None;
        let mut waiting = Vec::new();
        for mut waiter in std::mem::take(&mut self.start_waiters) {
            let mut pending = false;
            for name in &waiter.units {
                let Some(entry) = self.units.get(name) else {
                    waiter
                        .failed
                        .entry((name.clone(), 0))
                        .or_insert_with(|| StartFailure {
                            unit: name.clone(),
                            instance: 0,
                            reason: "the unit was removed (reload)".into(),
                            log: logs::log_path(&self.config.log_dir, name, 0),
                        });
                    continue;
                };
                for inst in &entry.instances {
                    let key = (name.clone(), inst.index);
                    if waiter.failed.contains_key(&key) {
                        continue;
                    }
                    match started::progress(entry.unit.kind, entry.unit.ready.is_some(), inst, now)
                    {
                        started::Progress::Done => {}
                        started::Progress::Pending(at) => {
                            pending = true;
                            if let Some(at) = at {
                                wake = Some(wake.map_or(at, |w| w.min(at)));
                            }
                        }
                        started::Progress::Failed(reason) => {
                            let log = logs::log_path(&self.config.log_dir, name, inst.index);
                            waiter.failed.insert(
                                key,
                                StartFailure {
                                    unit: name.clone(),
                                    instance: inst.index,
                                    reason,
                                    log,
                                },
                            );
                        }
                    }
                }
            }
            if pending {
                waiting.push(waiter);
            } else {
                let _ = waiter.reply.send(Ok(waiter.failed.into_values().collect()));
            }
        }
        self.start_waiters = waiting;
        if let Some(at) = wake {
            if self.wake_at.is_none_or(|w| w > at) {
                self.wake_at = Some(at);
                self.after(at.saturating_duration_since(now), Msg::Wake);
            }
        }
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
            let entry = self.units.get_mut(&name).expect("listed");
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

    pub(super) fn fire(&mut self, waiter: Waiter) {
        match waiter.then {
            Then::ReplyUnits(reply, units) => {
                let _ = reply.send(Ok(UnitsResult { units }));
            }
            Then::StartThenReply(reply, units) => {
                let _ = reply.send(
                    self.refuse_if_shutting_down()
                        .and_then(|()| self.start_units(&units))
                        .map(|units| UnitsResult { units }),
                );
            }
            Then::ReplyWait(reply) => {
                let name = &waiter.units[0];
                let result = match self.units.get(name) {
                    Some(entry) => Ok(WaitResult {
                        unit: name.clone(),
                        instances: entry
                            .instances
                            .iter()
                            .map(|i| InstanceExit {
                                instance: i.index,
                                state: i.wire_state(),
                                exit: i.last_exit,
                                reason: i.reason.clone(),
                            })
                            .collect(),
                    }),
                    None => Err(ErrorBody::new(
                        ErrorCode::NotFound,
                        format!("unit `{name}` was removed while waiting"),
                    )),
                };
                let _ = reply.send(result);
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
