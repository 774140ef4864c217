//! cgroups for instances, where the kernel lets corrald have them.
//!
//! With a writable cgroup v2 hierarchy (unified, or the `unified` mount of a hybrid one),
//! each instance runs in a cgroup of its own, `corral-ID/UNIT.N` below corrald's cgroup
//! (`ID` is derived from the state directory, so two corralds on one machine never share
//! one, and the next life of a corrald finds its instances' cgroups again). The child
//! joins it before `exec` (see `spawn`), so everything it starts is in it, `setsid` or
//! not, and a stop ends with `cgroup.kill`. Limits (`memory_max`, `cpu_max`, `tasks_max`)
//! use the v2 controllers where the parent delegates them, else the v1 hierarchies of a
//! hybrid system (`memory`, `cpu`, `pids`), else they are reported as not enforced.
//! Without a writable v2 hierarchy corrald falls back to process groups and says so once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_config::Unit;

/// The three limits a unit may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Controller {
    Memory,
    Cpu,
    Pids,
}

impl Controller {
    const ALL: [Controller; 3] = [Controller::Memory, Controller::Cpu, Controller::Pids];

    fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Pids => "pids",
        }
    }
}

/// Where limits of one controller are written.
#[derive(Debug, Clone)]
enum LimitsIn {
    /// The v2 cgroup itself (the controller is enabled in `corral-ID`).
    V2,
    /// A v1 hierarchy: this directory holds corrald's `corral-ID` there.
    V1(PathBuf),
}

/// corrald's cgroups: found once at start.
#[derive(Debug)]
pub struct Cgroups {
    /// `…/corral-ID` in the v2 hierarchy.
    base: PathBuf,
    /// Per controller, where its limits go (absent: not enforceable here).
    limits: BTreeMap<Controller, LimitsIn>,
}

/// What [`Cgroups::usage`] found.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    /// CPU time of all the cgroup's processes, past and present (µs).
    pub cpu_usec: Option<u64>,
    /// Memory charged to the cgroup (bytes).
    pub memory_bytes: Option<u64>,
}

/// 64-bit FNV-1a: a stable, short name for a path.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The file listing the cgroup directories of one corrald (in its state directory), so
/// that whoever cleans up after it (a test, an uninstall) can remove them.
pub const CGROUPS_FILE: &str = "cgroups";

impl Cgroups {
    /// Finds a writable v2 hierarchy and makes corrald's `corral-ID` in it; `Err` says why
    /// not (corrald then uses process groups alone).
    pub fn detect(state_dir: &Path) -> Result<Cgroups, String> {
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let v2_path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("no cgroup v2 hierarchy (no 0:: line in /proc/self/cgroup)")?;
        let mount = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .map(PathBuf::from)
            .find(|m| m.join("cgroup.procs").exists() && m.join("cgroup.subtree_control").exists())
            .ok_or("no cgroup v2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified")?;
        let id = format!(
            "corral-{:016x}",
            fnv(state_dir.as_os_str().as_encoded_bytes())
        );
        let base = mount.join(v2_path.trim_start_matches('/')).join(&id);
        std::fs::create_dir_all(&base)
            .map_err(|e| format!("cannot create {}: {e}", base.display()))?;
        if !base.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&base);
            return Err(format!(
                "{} has no cgroup.kill (Linux 5.14 or later is needed)",
                base.display()
            ));
        }
        let mut dirs = vec![base.clone()];
        let mut limits = BTreeMap::new();
        // v2 controllers, where the parent hands them down.
        let available =
            std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        for c in Controller::ALL {
            if available.split_whitespace().any(|a| a == c.name())
                && std::fs::write(
                    base.join("cgroup.subtree_control"),
                    format!("+{}", c.name()),
                )
                .is_ok()
            {
                limits.insert(c, LimitsIn::V2);
            }
        }
        // v1 hierarchies of a hybrid system for the rest.
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, names, path) = (parts.next(), parts.next(), parts.next());
            let (Some(names), Some(path)) = (names, path) else {
                continue;
            };
            for c in Controller::ALL {
                if limits.contains_key(&c) || !names.split(',').any(|n| n == c.name()) {
                    continue;
                }
                let root = Path::new("/sys/fs/cgroup").join(names);
                let dir = root.join(path.trim_start_matches('/')).join(&id);
                if std::fs::create_dir_all(&dir).is_ok() {
                    dirs.push(dir.clone());
                    limits.insert(c, LimitsIn::V1(dir));
                }
            }
        }
        let listing: String = dirs.iter().map(|d| format!("{}\n", d.display())).collect();
        let _ = std::fs::write(state_dir.join(CGROUPS_FILE), listing);
        Ok(Cgroups { base, limits })
    }

    /// One line for the log and `status`: where instances' cgroups are, and which limits
    /// can be enforced.
    pub fn describe(&self) -> String {
        let limits: Vec<String> = self
            .limits
            .iter()
            .map(|(c, at)| match at {
                LimitsIn::V2 => format!("{} (v2)", c.name()),
                LimitsIn::V1(_) => format!("{} (v1)", c.name()),
            })
            .collect();
        format!(
            "cgroups: each instance in its own cgroup under {}; limits: {}",
            self.base.display(),
            if limits.is_empty() {
                "none enforceable".into()
            } else {
                limits.join(", ")
            }
        )
    }

    fn leaf(unit: &str, instance: u32) -> String {
        format!("{unit}.{instance}")
    }

    /// The instance's v2 cgroup.
    pub fn dir(&self, unit: &str, instance: u32) -> PathBuf {
        self.base.join(Self::leaf(unit, instance))
    }

    /// Makes the instance's cgroups and writes its limits; returns the `cgroup.procs`
    /// files the child joins before `exec`, and the limits that cannot be enforced here.
    pub fn prepare(
        &self,
        unit: &Unit,
        instance: u32,
    ) -> Result<(Vec<PathBuf>, Vec<&'static str>), String> {
        let dir = self.dir(&unit.name, instance);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut join = vec![dir.join("cgroup.procs")];
        let mut unenforced = Vec::new();
        let wanted = [
            (
                Controller::Memory,
                unit.memory_max.map(|m| (m.to_string(), m.to_string())),
            ),
            (
                Controller::Cpu,
                unit.cpu_max.map(|pct| {
                    // Per 100 ms period: "50%" is 50 ms of CPU time in each.
                    let quota = u64::from(pct) * 1000;
                    (format!("{quota} 100000"), quota.to_string())
                }),
            ),
            (
                Controller::Pids,
                unit.tasks_max.map(|n| (n.to_string(), n.to_string())),
            ),
        ];
        for (c, value) in wanted {
            let Some((v2_value, v1_value)) = value else {
                continue;
            };
            let result = match self.limits.get(&c) {
                None => {
                    unenforced.push(c.name());
                    continue;
                }
                Some(LimitsIn::V2) => {
                    let file = match c {
                        Controller::Memory => "memory.max",
                        Controller::Cpu => "cpu.max",
                        Controller::Pids => "pids.max",
                    };
                    std::fs::write(dir.join(file), &v2_value).map_err(|e| (file, e))
                }
                Some(LimitsIn::V1(root)) => {
                    let leaf = root.join(Self::leaf(&unit.name, instance));
                    std::fs::create_dir_all(&leaf)
                        .map_err(|e| ("directory", e))
                        .and_then(|()| {
                            let (file, value) = match c {
                                Controller::Memory => ("memory.limit_in_bytes", v1_value),
                                Controller::Cpu => {
                                    let _ =
                                        std::fs::write(leaf.join("cpu.cfs_period_us"), "100000");
                                    ("cpu.cfs_quota_us", v1_value)
                                }
                                Controller::Pids => ("pids.max", v1_value),
                            };
                            std::fs::write(leaf.join(file), value).map_err(|e| (file, e))
                        })
                        .map(|()| join.push(leaf.join("cgroup.procs")))
                }
            };
            if let Err((file, e)) = result {
                return Err(format!(
                    "cannot set {} ({file}) for {}.{instance}: {e}",
                    c.name(),
                    unit.name
                ));
            }
        }
        Ok((join, unenforced))
    }

    /// The pids in the instance's cgroup (every process it started, `setsid` or not).
    pub fn pids(&self, unit: &str, instance: u32) -> Vec<i32> {
        std::fs::read_to_string(self.dir(unit, instance).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// CPU and memory of everything in the instance's cgroup, as far as the kernel
    /// accounts for them here: CPU from v2 `cpu.stat` (always there), memory from v2
    /// `memory.current` or the v1 memory controller's `memory.usage_in_bytes`.
    pub fn usage(&self, unit: &str, instance: u32) -> Usage {
        let dir = self.dir(unit, instance);
        let cpu_usec = std::fs::read_to_string(dir.join("cpu.stat"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse().ok())
            });
        let read_u64 =
            |p: PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
        let memory_bytes = match self.limits.get(&Controller::Memory) {
            Some(LimitsIn::V2) => read_u64(dir.join("memory.current")),
            Some(LimitsIn::V1(root)) => read_u64(
                root.join(Self::leaf(unit, instance))
                    .join("memory.usage_in_bytes"),
            ),
            None => None,
        };
        Usage {
            cpu_usec,
            memory_bytes,
        }
    }

    /// SIGKILL to every process in the instance's cgroup.
    pub fn kill(&self, unit: &str, instance: u32) {
        let file = self.dir(unit, instance).join("cgroup.kill");
        if let Err(e) = std::fs::write(&file, "1") {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot write {}: {e}", file.display());
            }
        }
    }

    /// Removes the instance's (empty) cgroups; false while processes are still leaving.
    pub fn remove(&self, unit: &str, instance: u32) -> bool {
        let mut done = remove_dir(&self.dir(unit, instance));
        for at in self.limits.values() {
            if let LimitsIn::V1(root) = at {
                done &= remove_dir(&root.join(Self::leaf(unit, instance)));
            }
        }
        done
    }

    /// At shutdown: removes every empty instance cgroup, then corrald's own `corral-ID`
    /// directories if they are empty. A cgroup that still holds a process (an instance
    /// left running by the lifecycle rules) stays, for the next corrald to find.
    pub fn remove_all(&self) {
        let roots =
            std::iter::once(&self.base).chain(self.limits.values().filter_map(|at| match at {
                LimitsIn::V1(root) => Some(root),
                LimitsIn::V2 => None,
            }));
        for root in roots {
            if let Ok(leaves) = std::fs::read_dir(root) {
                for leaf in leaves.flatten().filter(|l| l.path().is_dir()) {
                    let _ = std::fs::remove_dir(leaf.path());
                }
            }
            let _ = std::fs::remove_dir(root);
        }
    }
}

fn remove_dir(dir: &Path) -> bool {
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_differ_per_state_dir() {
        assert_eq!(fnv(b"/var/lib/corral"), fnv(b"/var/lib/corral"));
        assert_ne!(fnv(b"/var/lib/corral"), fnv(b"/tmp/x"));
    }
}
