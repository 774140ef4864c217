//! Stopping instances: the stop signal to the group, then SIGKILL once the stop timeout
//! has passed.

use super::*;

impl Supervisor {
    pub(super) fn stop_unit(&mut self, name: &str, timeout: Option<Duration>, by: &str) {
        let Some(entry) = self.units.get(name) else {
            return;
        };
        let unit = entry.unit.clone();
        for index in 0..entry.instances.len() as u32 {
            self.stop_instance(&unit, index, timeout, by);
        }
    }

    pub(super) fn stop_instance(
        &mut self,
        unit: &Arc<Unit>,
        index: u32,
        timeout: Option<Duration>,
        by: &str,
    ) {
        let Some(inst) = self.instance_mut(&unit.name, index) else {
            return;
        };
        match inst.state {
            InstanceState::Running | InstanceState::Starting if inst.pid.is_some() => {
                let pid = inst.pid.expect("running instances have a pid");
                inst.state = InstanceState::Stopping;
                inst.generation += 1;
                let generation = inst.generation;
                self.event(&unit.name, Some(index), "stopping", format!("by {by}"));
                self.signal_stop(unit, index, pid, generation, timeout);
            }
            InstanceState::Starting if inst.spawn_token.is_some() => {
                // on_spawned sends the stop signal as soon as the pid is known.
                inst.state = InstanceState::Stopping;
                inst.generation += 1;
            }
            InstanceState::Starting | InstanceState::Backoff => {
                inst.state = InstanceState::Stopped;
                inst.generation += 1;
                self.event(&unit.name, Some(index), "stopped", format!("by {by}"));
            }
            // Being stopped for a failed check: now it is meant to stay down.
            InstanceState::Stopping => inst.checks.kill_reason = None,
            _ => {}
        }
    }

    /// Sends the unit's stop signal to the group and arms the SIGKILL timer.
    pub(super) fn signal_stop(
        &mut self,
        unit: &Unit,
        index: u32,
        pid: i32,
        generation: u64,
        timeout: Option<Duration>,
    ) {
        let signal = Signal::try_from(unit.stop_signal_number).unwrap_or(Signal::SIGTERM);
        let cgroups = self.config.cgroups.as_deref();
        signal_instance(cgroups, &unit.name, index, pid, signal);
        // SIGSTOPped processes would never see the signal; SIGCONT is harmless otherwise.
        signal_instance(cgroups, &unit.name, index, pid, Signal::SIGCONT);
        self.after(
            timeout.unwrap_or(unit.stop_timeout),
            Msg::StopTimeout {
                unit: unit.name.clone(),
                instance: index,
                generation,
            },
        );
    }

    pub(super) fn on_stop_timeout(&mut self, name: &str, index: u32, generation: u64) {
        let Some(inst) = self.instance_mut(name, index) else {
            return;
        };
        if inst.generation != generation || inst.state != InstanceState::Stopping {
            return;
        }
        if let Some(pid) = inst.pid {
            let cgroups = self.config.cgroups.clone();
            signal_instance(cgroups.as_deref(), name, index, pid, Signal::SIGKILL);
            let whom = if cgroups.is_some() { "cgroup" } else { "group" };
            self.event(
                name,
                Some(index),
                "killed",
                format!("stop timeout passed: SIGKILL to the {whom}"),
            );
        }
    }
}
