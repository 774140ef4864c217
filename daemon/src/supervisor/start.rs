//! Starting instances: explicit starts, dependency gating (`pump_starts`), spawning and
//! the outcomes of spawns and exits, handed to the state machine (`Instance::spawn`,
//! `spawned` in `machine.rs`; `exited`, `restart_due` in `machine/restart.rs`, where the
//! restart policy is).

use super::*;

impl Supervisor {
    /// Starts the named units and, recursively, what they require. Returns every unit acted on.
    pub(super) fn start_units(&mut self, names: &[String]) -> Result<Vec<String>, ErrorBody> {
        if let Some(t) = names.iter().find(|n| self.templates.contains_key(*n)) {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "`{t}` is a template: start one of its instances, e.g. `corralctl start {t}main` ({{arg}} becomes `main`)"
                ),
            ));
        }
        for name in names {
            self.instantiate(name)?;
        }
        self.check_known(names)?;
        if let Some(pool) = names.iter().find(|n| {
            self.units
                .get(*n)
                .is_some_and(|e| e.unit.kind == UnitKind::Pool)
        }) {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "`{pool}` is a pool: submit work to it with `corralctl pool map --pool {pool} ::: INPUTS...`"
                ),
            ));
        }
        let mut closure = BTreeSet::new();
        let mut todo: Vec<String> = names.to_vec();
        while let Some(name) = todo.pop() {
            if !closure.insert(name.clone()) {
                continue;
            }
            // A required instance of a template is made when it is first needed.
            self.instantiate(&name)?;
            if let Some(entry) = self.units.get(&name) {
                todo.extend(entry.unit.requires.iter().cloned());
            }
        }
        for name in &closure {
            let count = self.units.get(name).map_or(0, |e| e.instances.len() as u32);
            for index in 0..count {
                self.decide(name, index, |inst, _, fx| inst.start(fx));
            }
        }
        self.pump_starts();
        Ok(closure.into_iter().collect())
    }

    /// Spawns every instance waiting in `Starting` whose dependencies are ready, and fails
    /// those whose requirements failed. Repeats until nothing changes.
    pub(super) fn pump_starts(&mut self) {
        loop {
            let mut changed = false;
            let waiting: Vec<(String, u32)> = self
                .units
                .values()
                .flat_map(|e| {
                    e.instances
                        .iter()
                        .filter(|i| i.state == State::Waiting)
                        .map(|i| (e.unit.name.clone(), i.index))
                })
                .collect();
            for (name, index) in waiting {
                match machine::deps_ready(&self.units, &name) {
                    Ok(true) => {
                        self.spawn_instance(&name, index);
                        changed = true;
                    }
                    Ok(false) => {}
                    Err(reason) => {
                        self.decide(&name, index, |inst, _, fx| {
                            inst.dependency_failed(reason, fx);
                        });
                        changed = true;
                    }
                }
            }
            if !changed {
                return;
            }
        }
    }

    pub(super) fn instance_mut(&mut self, unit: &str, index: u32) -> Option<&mut Instance> {
        self.units
            .get_mut(unit)
            .and_then(|e| e.instances.get_mut(index as usize))
    }

    /// Spawns one instance now, unless its start limit is used up.
    pub(super) fn spawn_instance(&mut self, name: &str, index: u32) {
        let unit = name.to_owned();
        let token = self.owners.issue(Proc::Instance { unit, index });
        let now = Instant::now();
        let used = self.decide(name, index, |inst, unit, fx| {
            inst.spawn(unit, now, token, fx)
        });
        if used != Some(true) {
            self.owners.spawned(token);
        }
    }

    /// What to start for one instance. The environment files are read here, at each
    /// start, so a changed file takes effect at the next start without a reload; one
    /// that is missing (and not optional) or malformed fails the start.
    pub(super) fn spawn_spec(&self, unit: &Unit, index: u32) -> Result<SpawnSpec, String> {
        let mut env = unit.env.clone();
        if !unit.env_files.is_empty() {
            env.extend(corral_config::read_env_files(&unit.env_files)?);
        }
        self.check_env(unit, &mut env);
        env.insert(
            "CORRAL_SOCKET".into(),
            self.config.socket.display().to_string(),
        );
        env.insert("CORRAL_UNIT".into(), unit.name.clone());
        env.insert("CORRAL_INSTANCE".into(), index.to_string());
        let cgroups = match &self.config.cgroups {
            Some(cg) => {
                let (join, unenforced) = cg.prepare(unit, index)?;
                if !unenforced.is_empty() {
                    tracing::warn!(
                        "{}.{index}: {} not enforced: no such controller is available to corrald",
                        unit.name,
                        unenforced.join(", ")
                    );
                }
                join
            }
            None => Vec::new(),
        };
        Ok(SpawnSpec {
            argv: unit.argv_for(index),
            env,
            working_dir: unit.working_dir.clone(),
            output: Output::Log(logs::log_path(&self.config.log_dir, &unit.name, index)),
            owner: Owner::Supervisor,
            umask: unit.umask,
            rlimits: corral_config::Rlimits {
                nofile: unit.rlimits.nofile.or_else(|| {
                    crate::fds::INHERITED_NOFILE
                        .get()
                        .filter(|(soft, hard)| soft < hard)
                        .map(|&(soft, hard)| corral_config::Rlimit { soft, hard })
                }),
                ..unit.rlimits
            },
            user: unit.user.clone(),
            group: unit.group.clone(),
            die_with_parent: unit.daemon,
            cgroups,
        })
    }

    pub(super) fn on_spawned(&mut self, token: u64, result: Result<Spawned, String>) {
        let (name, index) = match self.owners.spawned(token) {
            Some(Proc::Instance { unit, index }) => (unit, index),
            Some(Proc::Probe { .. }) => return self.probe_spawned(token, result),
            None => return,
        };
        let pid = result.as_ref().ok().map(|s| s.pid);
        let outcome = SpawnOutcome {
            token,
            result: result.map(|s| (s.pid, s.start_time)),
            run_id: self.next_run_id,
            shutting_down: self.shutdown.is_some(),
            now: Instant::now(),
            wall_ms: crate::clock::now_ms(),
        };
        let decided = self.decide(&name, index, |inst, unit, fx| {
            inst.spawned(unit, outcome, fx);
        });
        if decided.is_none() {
            // Its unit was removed meanwhile.
            if let Some(pid) = pid {
                kill_group(pid, Signal::SIGKILL);
            }
        }
    }

    pub(super) fn on_exited(&mut self, pid: i32, status: ExitStatus) {
        let (name, index) = match self.owners.exited(pid) {
            Some(Proc::Instance { unit, index }) => (unit, index),
            Some(Proc::Probe { token }) => return self.probe_exited(token, pid, status),
            // An orphaned grandchild re-parented to us: reaped, nothing to track.
            None => return,
        };
        // The group (and the cgroup) outlives its leader only by accident: clear out what
        // is left of it, `setsid` or not.
        signal_instance(
            self.config.cgroups.as_deref(),
            &name,
            index,
            pid,
            Signal::SIGKILL,
        );
        if self.config.cgroups.is_some() {
            self.cgroups_to_remove.insert((name.clone(), index));
        }
        let shutting_down = self.shutdown.is_some();
        let now = Instant::now();
        self.decide(&name, index, |inst, unit, fx| {
            inst.exited(unit, pid, status, shutting_down, now, fx)
        });
    }

    pub(super) fn on_restart_due(&mut self, name: &str, index: u32, generation: u64) {
        let unit = name.to_owned();
        let token = self.owners.issue(Proc::Instance { unit, index });
        let now = Instant::now();
        let used = self.decide(name, index, |inst, unit, fx| {
            inst.restart_due(unit, generation, now, token, fx)
        });
        if used != Some(true) {
            self.owners.spawned(token);
        }
    }
}
