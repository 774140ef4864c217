//! `max_memory`: every tick the resident memory of each instance's process group is
//! measured off the supervisor's thread and compared with the limit.

use super::io::group_rss;
use super::{Msg, ProbeMsg, State, Supervisor};

impl Supervisor {
    /// Every tick: measures the memory of instances with `max_memory`, off the
    /// supervisor's thread; the result comes back as [`ProbeMsg::Memory`].
    pub(in crate::supervisor) fn check_memory(&self) {
        let groups: Vec<(String, u32, i64, i32)> = self
            .units
            .values()
            .filter(|e| e.unit.max_memory.is_some())
            .flat_map(|e| {
                e.instances.iter().filter_map(|i| {
                    let run = i.run()?;
                    Some((e.unit.name.clone(), i.index, run.id, run.pid))
                })
            })
            .collect();
        if groups.is_empty() {
            return;
        }
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let rss = group_rss(groups.iter().map(|g| g.3));
            let measured = groups
                .into_iter()
                .map(|(unit, index, run, pgid)| {
                    (unit, index, run, rss.get(&pgid).copied().unwrap_or(0))
                })
                .collect();
            let _ = tx.send(Msg::Probe(ProbeMsg::Memory(measured)));
        });
    }

    pub(super) fn on_memory(&mut self, groups: Vec<(String, u32, i64, u64)>) {
        for (name, index, run, bytes) in groups {
            let Some(entry) = self.units.get(&name) else {
                continue;
            };
            let Some(limit) = entry.unit.max_memory else {
                continue;
            };
            let Some(inst) = entry.instances.get(index as usize) else {
                continue;
            };
            let live = matches!(inst.state, State::Running { .. } | State::Starting { .. });
            if inst.run_id() != Some(run) || !live || inst.checks.kill_reason.is_some() {
                continue;
            }
            if bytes > limit {
                let reason = format!(
                    "memory: its process group's resident memory {} passed max_memory {}",
                    mib(bytes),
                    mib(limit)
                );
                self.fail_instance(&name, index, "memory_limit", reason);
            }
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
