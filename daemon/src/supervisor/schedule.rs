//! Scheduled tasks: when each runs next, decided without side effects (the supervisor
//! starts the runs and arms the timers).
//!
//! Times are wall-clock (`SystemTime`), since cron patterns name clock times; the
//! supervisor re-checks at most every [`MAX_SLEEP`], so a clock that jumps (suspend,
//! NTP) delays a run by at most that much.

use std::time::{Duration, SystemTime};

use corral_config::{Schedule, When};

/// The longest a schedule timer sleeps before looking at the clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// One scheduled unit's timer.
#[derive(Debug)]
pub struct Timer {
    /// The schedule it follows (to tell a changed one at reload).
    pub schedule: Schedule,
    cron: Option<croner::Cron>,
    /// When it runs next; `None` for a pattern that never matches again.
    pub next: Option<SystemTime>,
    /// When it last started a run (from the store at corrald's start).
    pub last_run: Option<SystemTime>,
    /// A run is waiting for the current one to finish (`overlap = "queue"`).
    pub queued: bool,
    /// Bumped whenever `next` is recomputed: a timer message carrying an older one is stale.
    pub generation: u64,
}

/// What to do when corrald starts with a timer.
#[derive(Debug, PartialEq, Eq)]
pub enum AtStart {
    /// Nothing was missed (or `catch_up` is off): wait for `next`.
    Wait,
    /// A run was due while corrald was down and `catch_up` is on: run once now.
    CatchUp,
}

impl Timer {
    /// A timer for `schedule` at `now`, given when the unit last ran.
    pub fn new(
        schedule: Schedule,
        last_run: Option<SystemTime>,
        now: SystemTime,
    ) -> (Timer, AtStart) {
        let cron = match &schedule.when {
            When::Cron(pattern) => pattern.parse::<croner::Cron>().ok(),
            When::Every(_) => None,
        };
        let mut timer = Timer {
            schedule,
            cron,
            next: None,
            last_run,
            queued: false,
            generation: 0,
        };
        let missed = last_run
            .and_then(|last| timer.after(last))
            .is_some_and(|due| due <= now);
        timer.next = match (&timer.schedule.when, last_run) {
            // An interval keeps its phase from the last run when that is still ahead.
            (When::Every(_), Some(last)) => timer.after(last).filter(|&t| t > now),
            _ => None,
        }
        .or_else(|| timer.after(now));
        let start = if missed && timer.schedule.catch_up {
            AtStart::CatchUp
        } else {
            AtStart::Wait
        };
        (timer, start)
    }

    /// The first time strictly after `t` at which the schedule fires.
    pub fn after(&self, t: SystemTime) -> Option<SystemTime> {
        match &self.schedule.when {
            When::Every(every) => t.checked_add(*every),
            When::Cron(_) => {
                let cron = self.cron.as_ref()?;
                let ts = jiff::Timestamp::try_from(t).ok()?;
                let zoned = ts.to_zoned(jiff::tz::TimeZone::system());
                let next = cron.find_next_occurrence(&zoned, false).ok()?;
                Some(SystemTime::from(next.timestamp()))
            }
        }
    }

    /// The timer fired at `now`: records a run started now (when `ran`) and computes the
    /// next time.
    pub fn fired(&mut self, now: SystemTime, ran: bool) {
        if ran {
            self.last_run = Some(now);
        }
        self.next = self.after(now);
        self.generation += 1;
    }

    /// How long to sleep before looking again: until `next`, but at most [`MAX_SLEEP`];
    /// `None` when nothing is due ever again.
    pub fn sleep(&self, now: SystemTime) -> Option<Duration> {
        let next = self.next?;
        Some(
            next.duration_since(now)
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP),
        )
    }

    /// Whether the run is due at `now`.
    pub fn due(&self, now: SystemTime) -> bool {
        self.next.is_some_and(|next| next <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_config::Overlap;

    fn schedule(when: When, catch_up: bool) -> Schedule {
        Schedule {
            when,
            overlap: Overlap::Skip,
            catch_up,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn an_interval_keeps_its_phase_and_catches_up_only_when_asked() {
        let every = When::Every(Duration::from_secs(600));
        // Last ran 5 minutes ago: next in 5 minutes, nothing missed.
        let (t, start) = Timer::new(schedule(every.clone(), true), Some(at(1_000)), at(1_300));
        assert_eq!((t.next, start), (Some(at(1_600)), AtStart::Wait));
        // Last ran an hour ago: a run was missed.
        let (t, start) = Timer::new(schedule(every.clone(), true), Some(at(1_000)), at(4_600));
        assert_eq!(start, AtStart::CatchUp);
        assert_eq!(t.next, Some(at(5_200)));
        let (_, start) = Timer::new(schedule(every.clone(), false), Some(at(1_000)), at(4_600));
        assert_eq!(start, AtStart::Wait);
        // Never ran: the first run one interval from now.
        let (mut t, _) = Timer::new(schedule(every, true), None, at(100));
        assert_eq!(t.next, Some(at(700)));
        assert!(!t.due(at(699)) && t.due(at(700)));
        t.fired(at(700), true);
        assert_eq!(
            (t.last_run, t.next, t.generation),
            (Some(at(700)), Some(at(1_300)), 1)
        );
    }

    #[test]
    fn a_cron_pattern_fires_on_its_minutes() {
        let (t, _) = Timer::new(
            schedule(When::Cron("*/5 * * * *".into()), false),
            None,
            at(0),
        );
        let next = t.next.unwrap();
        let secs = next
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        // Every time zone's offset is a whole number of minutes; */5 lands on a multiple
        // of 5 minutes past the hour in any zone whose offset is one (all but a few).
        assert_eq!(secs % 60, 0);
        assert!(secs > 0 && secs <= 300, "{secs}");
        assert_eq!(t.sleep(at(0)), Some(MAX_SLEEP));
        // Missed while down, with catch_up.
        let (_, start) = Timer::new(
            schedule(When::Cron("0 * * * *".into()), true),
            Some(at(0)),
            at(7_200),
        );
        assert_eq!(start, AtStart::CatchUp);
    }
}
