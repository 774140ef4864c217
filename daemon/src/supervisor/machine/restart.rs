//! What an exit leads to: the restart policy, the backoff before a restart and the
//! start limit; and the restart when its timer fires.

use std::time::{Duration, Instant};

use corral_config::{RestartPolicy, Unit};
use corral_proto::ExitStatus;

use super::{Effect, Effects, Instance, State, Timer};

impl Instance {
    /// The backoff delay before the next restart: doubled with each consecutive failure,
    /// up to the unit's max.
    pub(super) fn next_delay(&self, unit: &Unit) -> Duration {
        backoff(
            unit.restart_delay,
            unit.restart_delay_max,
            self.consecutive_failures,
        )
    }

    /// Into `Backoff` for `delay`, with `event`; arms the restart.
    pub(super) fn back_off(
        &mut self,
        delay: Duration,
        now: Instant,
        event: (&'static str, String),
        fx: &mut Effects,
    ) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let until = now + delay;
        self.transition(State::Backoff { until }, Some(event), fx);
        let generation = self.generation;
        fx.push(Effect::Timer {
            delay,
            timer: Timer::Restart { generation },
        });
    }

    /// `Some(reason)` when starting at `now` would exceed the unit's start limit; starts
    /// older than the limit's interval are forgotten.
    pub(in crate::supervisor) fn start_limit_hit(
        &mut self,
        unit: &Unit,
        now: Instant,
    ) -> Option<String> {
        while self
            .recent_starts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > unit.start_limit_interval)
        {
            self.recent_starts.pop_front();
        }
        (self.recent_starts.len() >= unit.start_limit_burst as usize).then(|| {
            format!(
                "start limit hit: {} starts within {:?}; `corralctl start {}` tries again",
                self.recent_starts.len(),
                unit.start_limit_interval,
                unit.name
            )
        })
    }

    /// Process `pid` of this instance ended with `status` at `now`: applies the restart
    /// policy, the backoff and the start limit. A check's `kill_reason` makes the exit
    /// count as a failure. Whether `pid` was this instance's process.
    pub(in crate::supervisor) fn exited(
        &mut self,
        unit: &Unit,
        pid: i32,
        status: ExitStatus,
        shutting_down: bool,
        now: Instant,
        fx: &mut Effects,
    ) -> bool {
        let Some(run) = self.run().filter(|r| r.pid == pid) else {
            return false;
        };
        self.last_exit = Some(status);
        fx.push(Effect::RunEnded {
            run: run.id,
            status,
        });
        let ran_for = now.saturating_duration_since(run.since);
        // Stopped by corrald for a failed check: restarted as after a failure.
        let failed_check = self.checks.kill_reason.take();
        let stopping = matches!(self.state, State::Stopping { .. });
        if stopping && failed_check.is_none() {
            self.transition(State::Stopped, Some(("stopped", status.to_string())), fx);
            return true;
        }
        let restart = !shutting_down
            && match unit.restart {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => !status.success() || failed_check.is_some(),
                RestartPolicy::No => false,
            };
        if let (Some(why), false) = (&failed_check, restart) {
            let detail = format!("{status}; {why}");
            self.transition(State::Failed, Some(("failed", detail)), fx);
            return true;
        }
        if let Some(why) = failed_check {
            // Shown as the reason while the next runs go well (a spawn clears `reason`).
            self.checks.restarted_for = Some(why);
        }
        if !restart {
            self.transition(State::Exited, Some(("exited", status.to_string())), fx);
            return true;
        }
        if ran_for >= unit.restart_delay_max.max(Duration::from_secs(1)) {
            self.consecutive_failures = 0; // it ran long enough to count as healthy
        }
        if let Some(reason) = self.start_limit_hit(unit, now) {
            self.reason = Some(reason.clone());
            let detail = format!("{status}; {reason}");
            self.transition(State::Failed, Some(("gave_up", detail)), fx);
            return true;
        }
        let delay = self.next_delay(unit);
        let detail = format!("{status}; restarting in {delay:?}");
        self.back_off(delay, now, ("exited", detail), fx);
        true
    }

    /// A restart timer fired: spawns again with `token` if it is still due (the
    /// generation has not moved on). Whether the token is in use.
    pub(in crate::supervisor) fn restart_due(
        &mut self,
        unit: &Unit,
        generation: u64,
        now: Instant,
        token: u64,
        fx: &mut Effects,
    ) -> bool {
        if self.generation != generation || !matches!(self.state, State::Backoff { .. }) {
            return false;
        }
        self.restarts += 1;
        fx.push(Effect::Event {
            kind: "restarting",
            detail: format!("restart #{}", self.restarts),
        });
        self.spawn(unit, now, token, fx)
    }
}

/// `base * 2^failures`, capped at `max`.
pub(in crate::supervisor) fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}
