//! Who each process is for: how an owner of processes (the process thread, the
//! supervisor, the pool) matches a spawn's outcome ([`ProcEvent::Spawned`](super::ProcEvent))
//! and an exit ([`ProcEvent::Exited`](super::ProcEvent)) to what it started.

use std::collections::HashMap;

/// What each spawn in flight (by token) and each process (by pid) is for. Tokens are
/// handed to [`ProcessThread::spawn`](super::ProcessThread::spawn) and never reused, so a
/// late outcome of a spawn its owner forgot finds nothing (and the owner kills what was
/// started); a pid is known from its spawn's outcome until its exit.
#[derive(Debug)]
pub struct Owners<T> {
    next: u64,
    spawning: HashMap<u64, T>,
    running: HashMap<i32, T>,
}

impl<T> Default for Owners<T> {
    fn default() -> Self {
        Owners {
            next: 1,
            spawning: HashMap::new(),
            running: HashMap::new(),
        }
    }
}

impl<T> Owners<T> {
    /// A new token for a spawn, remembered with `what` until [`spawned`](Owners::spawned).
    pub fn issue(&mut self, what: T) -> u64 {
        let token = self.next;
        self.next += 1;
        self.spawning.insert(token, what);
        token
    }

    /// A new token for a spawn, remembered with what `what` makes of it (for an owner
    /// that names the token in its own records).
    pub fn issue_with(&mut self, what: impl FnOnce(u64) -> T) -> u64 {
        let token = self.next;
        self.next += 1;
        self.spawning.insert(token, what(token));
        token
    }

    /// The spawn of `token` has an outcome: what it was for, forgetting the token; `None`
    /// for a token not (or no longer) known.
    pub fn spawned(&mut self, token: u64) -> Option<T> {
        self.spawning.remove(&token)
    }

    /// Process `pid` is for `what`, until [`exited`](Owners::exited).
    pub fn running(&mut self, pid: i32, what: T) {
        self.running.insert(pid, what);
    }

    /// What process `pid` is for, if it is known.
    pub fn pid(&self, pid: i32) -> Option<&T> {
        self.running.get(&pid)
    }

    /// Process `pid` ended (or is given up): what it was for, forgetting it.
    pub fn exited(&mut self, pid: i32) -> Option<T> {
        self.running.remove(&pid)
    }

    /// Whether a spawn is in flight.
    pub fn spawning(&self) -> bool {
        !self.spawning.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_taken_once() {
        let mut owners = Owners::default();
        let a = owners.issue("a");
        let b = owners.issue("b");
        assert_ne!(a, b);
        assert_eq!(owners.spawned(b), Some("b"));
        assert_eq!(owners.spawned(b), None);
        assert!(owners.spawning());
        assert_eq!(owners.spawned(a), Some("a"));
        assert!(!owners.spawning());
        // A token given up is not issued again.
        assert!(owners.issue("c") > b);
    }

    #[test]
    fn a_pid_is_known_until_its_exit() {
        let mut owners = Owners::default();
        owners.running(7, "a");
        assert_eq!(owners.pid(7), Some(&"a"));
        assert_eq!(owners.pid(8), None);
        assert_eq!(owners.exited(7), Some("a"));
        assert_eq!(owners.exited(7), None);
        assert_eq!(owners.pid(7), None);
    }
}
