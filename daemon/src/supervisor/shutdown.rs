//! The shutdown order: what stops first, what is drained, what dies with corrald.

use super::*;

impl Supervisor {
    pub(super) fn begin_shutdown(&mut self, reply: oneshot::Sender<()>) {
        match &mut self.shutdown {
            Some(s) => s.replies.push(reply),
            None => {
                self.event_global("shutdown", "shutdown begun".into());
                self.shutdown = Some(Shutdown {
                    tasks_deadline: Instant::now() + self.config.shutdown_timeout,
                    replies: vec![reply],
                });
                let timeout = self.config.shutdown_timeout;
                self.after(timeout, Msg::Tick);
            }
        }
    }

    /// One step of the shutdown order (decided by [`machine::shutdown_step`]).
    pub(super) fn pump_shutdown(&mut self) {
        let Some(shutdown) = &self.shutdown else {
            return;
        };
        let tasks_expired = Instant::now() >= shutdown.tasks_deadline;
        let grace = self.config.daemon_grace;
        let active: Vec<Arc<Unit>> = self
            .units
            .values()
            .filter(|e| !e.settled())
            .map(|e| e.unit.clone())
            .collect();
        for (unit, timeout) in machine::shutdown_step(&active, tasks_expired, grace) {
            for index in 0..unit.instances {
                self.stop_instance(&unit, index, timeout, "shutdown");
            }
        }
        if self.units.values().all(UnitEntry::settled) {
            if let Some(shutdown) = &mut self.shutdown {
                for reply in shutdown.replies.drain(..) {
                    let _ = reply.send(());
                }
            }
        }
    }

    /// The order [`Supervisor::pump_shutdown`] would follow from the current state.
    pub(super) fn plan(&self) -> ShutdownPlan {
        let active: Vec<&UnitEntry> = self.units.values().filter(|e| !e.settled()).collect();
        let running = |e: &UnitEntry| {
            e.instances
                .iter()
                .filter(|i| i.is_active())
                .map(|i| i.index)
                .collect::<Vec<_>>()
        };
        let signal = |u: &Unit| u.stop_signal.clone();
        let mut steps = Vec::new();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for e in &active {
            let u = &e.unit;
            if u.daemon {
                let grace = self.config.daemon_grace.min(u.stop_timeout);
                steps.push(PlanStep {
                    order: 1,
                    unit: u.name.clone(),
                    instances: running(e),
                    action: "stop".into(),
                    wait_ms: None,
                    signal: signal(u),
                    kill_after_ms: grace.as_millis() as u64,
                    reason: "daemon = true: stopped at once, SIGKILL after daemon_grace".into(),
                });
                done.insert(&u.name);
            } else if u.kind == UnitKind::Task {
                steps.push(PlanStep {
                    order: 1,
                    unit: u.name.clone(),
                    instances: running(e),
                    action: "join".into(),
                    wait_ms: Some(self.config.shutdown_timeout.as_millis() as u64),
                    signal: signal(u),
                    kill_after_ms: u.stop_timeout.as_millis() as u64,
                    reason: "task: waited for up to shutdown_timeout, then stopped".into(),
                });
                done.insert(&u.name);
            }
        }
        let mut remaining: Vec<&UnitEntry> = active
            .iter()
            .copied()
            .filter(|e| !done.contains(e.unit.name.as_str()))
            .collect();
        let mut order = 2;
        while !remaining.is_empty() {
            let (now, later): (Vec<&UnitEntry>, Vec<&UnitEntry>) =
                remaining.iter().partition(|e| {
                    !active.iter().any(|other| {
                        other.unit.name != e.unit.name
                            && !done.contains(other.unit.name.as_str())
                            && (other.unit.after.contains(&e.unit.name)
                                || other.unit.requires.contains(&e.unit.name))
                    })
                });
            // A dependency cycle cannot pass validation; stop the rest together regardless.
            let now = if now.is_empty() { later.clone() } else { now };
            for e in &now {
                steps.push(PlanStep {
                    order,
                    unit: e.unit.name.clone(),
                    instances: running(e),
                    action: "stop".into(),
                    wait_ms: None,
                    signal: signal(&e.unit),
                    kill_after_ms: e.unit.stop_timeout.as_millis() as u64,
                    reason: if order == 2 {
                        "service: nothing running depends on it".into()
                    } else {
                        "service: after the units that depend on it".into()
                    },
                });
            }
            done.extend(now.iter().map(|e| e.unit.name.as_str()));
            remaining.retain(|e| !done.contains(e.unit.name.as_str()));
            order += 1;
        }
        ShutdownPlan { steps }
    }

    pub(super) fn force_kill_all(&mut self) {
        let all: Vec<(String, u32)> = self
            .units
            .values()
            .flat_map(|e| e.instances.iter().map(|i| (e.unit.name.clone(), i.index)))
            .collect();
        for (name, index) in all {
            self.decide(&name, index, |inst, _, fx| inst.force_kill(fx));
        }
    }
}
