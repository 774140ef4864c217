//! Stopping instances: the stop signal to the group, then SIGKILL once the stop timeout
//! has passed (decided by [`Instance::stop`] and [`Instance::stop_timeout`]).

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
        self.decide(&unit.name, index, |inst, unit, fx| {
            inst.stop(unit, timeout, by, fx);
        });
    }

    pub(super) fn on_stop_timeout(&mut self, name: &str, index: u32, generation: u64) {
        let whom = if self.config.cgroups.is_some() {
            "cgroup"
        } else {
            "group"
        };
        self.decide(name, index, |inst, _, fx| {
            inst.stop_timeout(generation, whom, fx);
        });
    }
}
