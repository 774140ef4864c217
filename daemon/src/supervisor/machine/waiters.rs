//! The requests answered by a later change of state, and which of them a state
//! satisfies: `stop` and `restart` (once their units are down), `wait` (once its unit has
//! settled), the first pid `run` waits for, and `start --wait` (once every instance has
//! started or failed to).
//!
//! [`Waiters`] holds what each waits for, as data; the reply channels stay with the
//! actor, by [`WaiterId`]. Each decision here answers the waiters a state satisfies with
//! [`Effect::ReplyTo`], which the actor carries out like any other effect (sending the
//! [`Answer`] on the waiter's channel).

use std::collections::BTreeMap;
use std::time::Instant;

use corral_proto::{ErrorBody, ErrorCode, InstanceExit, WaitResult};

use super::super::UnitEntry;
use super::super::started::{self, Progress};
use super::{Effect, Effects, Timer};

/// Names one waiter, for as long as it waits.
pub(in crate::supervisor) type WaiterId = u64;

/// What a waiter waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::supervisor) enum Wait {
    /// `stop`: every unit settled; answered with their names.
    Stopped(Vec<String>),
    /// `restart`: every unit settled (its stop is over); then they are started.
    Restart(Vec<String>),
    /// `wait`: the unit settled; answered with how its instances ended.
    Settled(String),
    /// `run`: the unit's first instance has a process, or has settled without one.
    FirstPid(String),
    /// `start --wait`: every instance of `units` has started or failed to. `failed` holds
    /// the failures seen so far, by unit and instance: a failure stands even if the
    /// restart policy runs the instance again meanwhile.
    Started {
        units: Vec<String>,
        failed: BTreeMap<(String, u32), String>,
    },
}

/// The answer to a waiter, as data: what the actor sends on its reply channel.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::supervisor) enum Answer {
    /// `stop`: these units are down.
    Units(Vec<String>),
    /// `restart`: these units are down; start them, then answer with what started (or
    /// why nothing could).
    StartUnits(Vec<String>),
    /// `wait`: how the unit's instances ended, or why there is nothing to say.
    Exits(Result<WaitResult, ErrorBody>),
    /// `run`: the first instance's pid, none if it settled without a process.
    Pid(Option<u32>),
    /// `start --wait`: the instances that failed to start (unit, instance, why), none if
    /// all started.
    Started(Vec<(String, u32, String)>),
}

/// Every waiting request, in the order they came.
#[derive(Debug, Default)]
pub(in crate::supervisor) struct Waiters {
    next: WaiterId,
    waiting: Vec<(WaiterId, Wait)>,
}

impl Waiters {
    /// Adds a waiter; its id names it in the [`Effect::ReplyTo`] that answers it.
    pub(in crate::supervisor) fn add(&mut self, wait: Wait) -> WaiterId {
        self.next += 1;
        self.waiting.push((self.next, wait));
        self.next
    }

    /// How many wait.
    #[cfg(test)]
    pub(in crate::supervisor) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Answers the waiters of `stop`, `restart` and `wait` whose units have all settled
    /// (a unit removed meanwhile counts as settled), oldest first.
    pub(in crate::supervisor) fn settled(
        &mut self,
        units: &BTreeMap<String, UnitEntry>,
        fx: &mut Effects,
    ) {
        let all_settled = |names: &[String]| {
            names
                .iter()
                .all(|u| units.get(u).is_none_or(UnitEntry::settled))
        };
        self.answer(fx, |wait| match wait {
            Wait::Stopped(names) if all_settled(names) => Some(Answer::Units(names.clone())),
            Wait::Restart(names) if all_settled(names) => Some(Answer::StartUnits(names.clone())),
            Wait::Settled(name) if all_settled(std::slice::from_ref(name)) => {
                Some(Answer::Exits(exits(units, name)))
            }
            _ => None,
        });
    }

    /// Answers the waiters for a first pid whose unit's first instance has a process or
    /// has settled without one (or whose unit is gone), oldest first.
    pub(in crate::supervisor) fn first_pids(
        &mut self,
        units: &BTreeMap<String, UnitEntry>,
        fx: &mut Effects,
    ) {
        self.answer(fx, |wait| {
            let Wait::FirstPid(name) = wait else {
                return None;
            };
            let first = units.get(name).and_then(|e| e.instances.first());
            match first {
                Some(i) if i.run().is_none() && i.is_active() => None,
                _ => Some(Answer::Pid(first.and_then(|i| i.pid()).map(|p| p as u32))),
            }
        });
    }

    /// Follows the `start --wait` waiters at `now`: records the failures their instances
    /// show, answers those whose instances have all started or failed, and arms a
    /// [`Timer::Wake`] for the earliest start window still running.
    pub(in crate::supervisor) fn started(
        &mut self,
        units: &BTreeMap<String, UnitEntry>,
        now: Instant,
        fx: &mut Effects,
    ) {
        let mut wake: Option<Instant> = None;
        self.answer(fx, |wait| {
            let Wait::Started {
                units: names,
                failed,
            } = wait
            else {
                return None;
            };
            let mut pending = false;
            for name in names.iter() {
                let Some(entry) = units.get(name) else {
                    failed
                        .entry((name.clone(), 0))
                        .or_insert_with(|| "the unit was removed (reload)".into());
                    continue;
                };
                for inst in &entry.instances {
                    let key = (name.clone(), inst.index);
                    if failed.contains_key(&key) {
                        continue;
                    }
                    let has_ready = entry.unit.ready.is_some();
                    match started::progress(entry.unit.kind, has_ready, inst, now) {
                        Progress::Done => {}
                        Progress::Pending(at) => {
                            pending = true;
                            if let Some(at) = at {
                                wake = Some(wake.map_or(at, |w| w.min(at)));
                            }
                        }
                        Progress::Failed(reason) => {
                            failed.insert(key, reason);
                        }
                    }
                }
            }
            (!pending).then(|| {
                let failed = std::mem::take(failed);
                Answer::Started(
                    failed
                        .into_iter()
                        .map(|((u, i), why)| (u, i, why))
                        .collect(),
                )
            })
        });
        if let Some(at) = wake {
            fx.push(Effect::Timer {
                delay: at.saturating_duration_since(now),
                timer: Timer::Wake { at },
            });
        }
    }

    /// Answers, oldest first, each waiter `decide` has an answer for; the others wait on.
    fn answer(&mut self, fx: &mut Effects, mut decide: impl FnMut(&mut Wait) -> Option<Answer>) {
        self.waiting
            .retain_mut(|(waiter, wait)| match decide(wait) {
                Some(answer) => {
                    fx.push(Effect::ReplyTo {
                        waiter: *waiter,
                        answer,
                    });
                    false
                }
                None => true,
            });
    }
}

/// What `wait` answers for unit `name`: how each of its instances ended.
fn exits(units: &BTreeMap<String, UnitEntry>, name: &str) -> Result<WaitResult, ErrorBody> {
    let Some(entry) = units.get(name) else {
        return Err(ErrorBody::new(
            ErrorCode::NotFound,
            format!("unit `{name}` was removed while waiting"),
        ));
    };
    Ok(WaitResult {
        unit: name.to_owned(),
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
    })
}
