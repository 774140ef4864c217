//! Starting instances: explicit starts, dependency gating (`pump_starts`), spawning and
//! what a spawn's outcome and a process's exit lead to (the restart policy).

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
        if let Some(pool) = names
            .iter()
            .find(|n| self.units[*n].unit.kind == UnitKind::Pool)
        {
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
            let Some(entry) = self.units.get_mut(name) else {
                continue;
            };
            for inst in &mut entry.instances {
                if inst.state.is_active() {
                    continue;
                }
                // An explicit start forgives the past: counters and the start limit reset.
                inst.state = InstanceState::Starting;
                inst.reason = None;
                inst.checks.restarted_for = None;
                inst.restarts = 0;
                inst.consecutive_failures = 0;
                inst.recent_starts.clear();
                inst.pending_signal = None;
                inst.generation += 1;
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
                        .filter(|i| {
                            i.state == InstanceState::Starting
                                && i.spawn_token.is_none()
                                && i.pid.is_none()
                        })
                        .map(|i| (e.unit.name.clone(), i.index))
                })
                .collect();
            for (name, index) in waiting {
                match self.deps_ready(&name) {
                    Ok(true) => {
                        self.spawn_instance(&name, index);
                        changed = true;
                    }
                    Ok(false) => {}
                    Err(reason) => {
                        let inst = self.instance_mut(&name, index).expect("listed above");
                        inst.state = InstanceState::Failed;
                        inst.reason = Some(reason.clone());
                        self.event(&name, Some(index), "dependency_failed", reason);
                        changed = true;
                    }
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// Ok(true): may start now. Ok(false): wait. Err: a requirement failed.
    pub(super) fn deps_ready(&self, name: &str) -> Result<bool, String> {
        let unit = &self.units[name].unit;
        for dep in &unit.requires {
            let Some(d) = self.units.get(dep) else {
                return Err(format!("required unit `{dep}` does not exist"));
            };
            for i in &d.instances {
                match (d.unit.kind, i.state) {
                    (_, InstanceState::Failed) => {
                        let why = i.reason.as_ref().map(|r| format!(": {r}"));
                        return Err(format!(
                            "required unit `{dep}` failed{}",
                            why.unwrap_or_default()
                        ));
                    }
                    (UnitKind::Service, InstanceState::Running) => {}
                    (UnitKind::Task, InstanceState::Exited)
                        if i.last_exit.is_some_and(|e| e.success()) => {}
                    (UnitKind::Task, InstanceState::Exited) => {
                        return Err(format!("required task `{dep}` exited unsuccessfully"));
                    }
                    (_, s) if s.is_active() => return Ok(false),
                    (_, s) => {
                        return Err(format!("required unit `{dep}` is {}", s.as_str()));
                    }
                }
            }
        }
        for dep in unit.after.iter().filter(|d| !unit.requires.contains(d)) {
            let Some(d) = self.units.get(dep) else {
                continue;
            };
            let busy = d.instances.iter().any(|i| match i.state {
                InstanceState::Starting | InstanceState::Backoff => true,
                // "after a task" means after it has finished.
                InstanceState::Running | InstanceState::Stopping => d.unit.kind == UnitKind::Task,
                _ => false,
            });
            if busy {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub(super) fn instance_mut(&mut self, unit: &str, index: u32) -> Option<&mut Instance> {
        self.units
            .get_mut(unit)
            .and_then(|e| e.instances.get_mut(index as usize))
    }

    /// Spawns one instance now, unless its start limit is used up.
    pub(super) fn spawn_instance(&mut self, name: &str, index: u32) {
        let Some(entry) = self.units.get_mut(name) else {
            return;
        };
        let unit = entry.unit.clone();
        // Passed descriptors serve one start: corrald keeps no copy of a client's pipe
        // open once the process has it (a restart writes to the unit's log instead).
        let stdio = entry.stdio.take();
        let inst = &mut entry.instances[index as usize];
        if let Some(reason) = start_limit_hit(&unit, inst) {
            inst.state = InstanceState::Failed;
            inst.reason = Some(reason.clone());
            self.event(name, Some(index), "gave_up", reason);
            return;
        }
        inst.recent_starts.push_back(Instant::now());
        let token = self.tokens.issue((name.to_owned(), index));
        inst.state = InstanceState::Starting;
        inst.spawn_token = Some(token);
        self.checks_before_spawn(name, index);
        match self.spawn_spec(&unit, index) {
            Ok(mut spec) => {
                if let Some(fds) = stdio {
                    spec.output = Output::Passed(fds);
                }
                self.procs.spawn(token, spec)
            }
            // Fails like a spawn that failed: the restart policy decides what follows.
            Err(reason) => self.on_spawned(token, Err(reason)),
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
        if self.probe_spawned(token, &result) {
            return;
        }
        let Some((name, index)) = self.tokens.take(token) else {
            return;
        };
        let run_id = self.next_run_id;
        let Some(entry) = self.units.get_mut(&name) else {
            if let Ok(s) = result {
                kill_group(s.pid, Signal::SIGKILL);
            }
            return;
        };
        let unit = entry.unit.clone();
        let Some(inst) = entry.instances.get_mut(index as usize) else {
            return;
        };
        if inst.spawn_token != Some(token) {
            if let Ok(s) = result {
                kill_group(s.pid, Signal::SIGKILL);
            }
            return;
        }
        inst.spawn_token = None;
        match result {
            Ok(spawned) => {
                self.next_run_id += 1;
                inst.pid = Some(spawned.pid);
                inst.started = Some(Instant::now());
                inst.reason = None; // a start that failed for lack of descriptors, say
                inst.run_id = Some(run_id);
                self.by_pid.insert(spawned.pid, (name.clone(), index));
                self.store.run_started(RunStart {
                    id: run_id,
                    unit: name.clone(),
                    instance: index,
                    pid: spawned.pid,
                    start_time: spawned.start_time,
                    started_at: crate::clock::now_ms(),
                    restart_count: inst.restarts,
                    daemon: unit.daemon,
                });
                if let Some(signal) = inst.pending_signal.take() {
                    kill_group(spawned.pid, signal);
                }
                if inst.state == InstanceState::Stopping {
                    // A stop arrived while the spawn was in flight.
                    let generation = inst.generation;
                    self.signal_stop(&unit, index, spawned.pid, generation, None);
                } else {
                    self.spawn_succeeded(&name, index, spawned.pid);
                }
            }
            Err(reason)
                if inst.state != InstanceState::Stopping
                    && self.shutdown.is_none()
                    && unit.restart != RestartPolicy::No
                    && crate::fds::names_exhaustion(&reason) =>
            {
                // Not the unit's fault: retried with backoff for as long as descriptors
                // are short, and not counted against its start limit.
                inst.recent_starts.pop_back();
                let (delay, generation) = inst.back_off(&unit);
                let reason = format!("out of file descriptors: {reason}; retrying in {delay:?}");
                inst.reason = Some(reason.clone());
                self.event(&name, Some(index), "spawn_failed", reason);
                self.after(
                    delay,
                    Msg::RestartDue {
                        unit: name,
                        instance: index,
                        generation,
                    },
                );
            }
            Err(reason) => {
                let was_stopping = inst.state == InstanceState::Stopping;
                inst.state = if was_stopping {
                    InstanceState::Stopped
                } else {
                    InstanceState::Failed
                };
                inst.reason = Some(reason.clone());
                self.event(&name, Some(index), "spawn_failed", reason);
            }
        }
    }

    pub(super) fn on_exited(&mut self, pid: i32, status: ExitStatus) {
        if self.probe_exited(pid, status) {
            return;
        }
        let Some((name, index)) = self.by_pid.remove(&pid) else {
            return; // an orphaned grandchild re-parented to us: reaped, nothing to track
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
        let Some(entry) = self.units.get_mut(&name) else {
            return;
        };
        let unit = entry.unit.clone();
        let inst = &mut entry.instances[index as usize];
        if inst.pid != Some(pid) {
            return;
        }
        inst.pid = None;
        inst.last_exit = Some(status);
        // The tick checks only logs of instances with a process: check this one a last
        // time, so that a stopped instance's log is within its bound too.
        let rotation = logs::Rotation {
            path: logs::log_path(&self.config.log_dir, &name, index),
            max_size: unit.log_max_size,
            keep: unit.log_keep,
        };
        tokio::task::spawn_blocking(move || logs::rotate_all(std::slice::from_ref(&rotation)));
        let ran_for = inst.started.map_or(Duration::ZERO, |t| t.elapsed());
        if let Some(run_id) = inst.run_id.take() {
            self.store.run_ended(run_id, Some(status));
        }
        // Stopped by corrald for a failed check: restarted as after a failure.
        let failed_check = inst.checks.kill_reason.take();
        if inst.state == InstanceState::Stopping && failed_check.is_none() {
            inst.state = InstanceState::Stopped;
            inst.generation += 1;
            self.event(&name, Some(index), "stopped", status.to_string());
            return;
        }
        let restart = !shutting_down
            && match unit.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !status.success() || failed_check.is_some(),
                RestartPolicy::No => false,
            };
        if let (Some(why), false) = (&failed_check, restart) {
            inst.state = InstanceState::Failed;
            inst.generation += 1;
            self.event(&name, Some(index), "failed", format!("{status}; {why}"));
            return;
        }
        if let Some(why) = failed_check {
            // Shown as the reason while the next runs go well (a spawn clears `reason`).
            inst.checks.restarted_for = Some(why);
        }
        if !restart {
            inst.state = InstanceState::Exited;
            self.event(&name, Some(index), "exited", status.to_string());
            return;
        }
        if ran_for >= unit.restart_delay_max.max(Duration::from_secs(1)) {
            inst.consecutive_failures = 0; // it ran long enough to count as healthy
        }
        if let Some(reason) = start_limit_hit(&unit, inst) {
            inst.state = InstanceState::Failed;
            inst.reason = Some(reason.clone());
            self.event(&name, Some(index), "gave_up", format!("{status}; {reason}"));
            return;
        }
        let (delay, generation) = inst.back_off(&unit);
        self.event(
            &name,
            Some(index),
            "exited",
            format!("{status}; restarting in {delay:?}"),
        );
        self.after(
            delay,
            Msg::RestartDue {
                unit: name,
                instance: index,
                generation,
            },
        );
    }

    pub(super) fn on_restart_due(&mut self, name: &str, index: u32, generation: u64) {
        let Some(inst) = self.instance_mut(name, index) else {
            return;
        };
        if inst.generation != generation || inst.state != InstanceState::Backoff {
            return;
        }
        inst.restarts += 1;
        let restarts = inst.restarts;
        self.event(
            name,
            Some(index),
            "restarting",
            format!("restart #{restarts}"),
        );
        self.spawn_instance(name, index);
    }
}
