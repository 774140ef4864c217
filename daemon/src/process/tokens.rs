//! Spawn tokens: how an owner of processes (the supervisor, the pool) matches the outcome
//! of a spawn ([`ProcEvent::Spawned`](super::ProcEvent)) to what it asked to start.

use std::collections::HashMap;

/// Tokens handed to [`ProcessThread::spawn`](super::ProcessThread::spawn), each with what
/// its owner started it for. Tokens are never reused, so a late outcome of a spawn its
/// owner forgot finds nothing (and the owner kills what was started).
#[derive(Debug)]
pub struct Tokens<T> {
    next: u64,
    waiting: HashMap<u64, T>,
}

impl<T> Default for Tokens<T> {
    fn default() -> Self {
        Tokens {
            next: 1,
            waiting: HashMap::new(),
        }
    }
}

impl<T> Tokens<T> {
    /// A new token, remembered with `what` until [`take`](Tokens::take).
    pub fn issue(&mut self, what: T) -> u64 {
        let token = self.fresh();
        self.waiting.insert(token, what);
        token
    }

    /// A new token whose purpose the owner keeps elsewhere (an `exec` probe, say): unique
    /// among this owner's tokens all the same.
    pub fn fresh(&mut self) -> u64 {
        let token = self.next;
        self.next += 1;
        token
    }

    /// What `token` was issued for, forgetting it; `None` for a token not (or no longer) known.
    pub fn take(&mut self, token: u64) -> Option<T> {
        self.waiting.remove(&token)
    }

    /// Whether no spawn is in flight.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_taken_once() {
        let mut tokens = Tokens::default();
        let a = tokens.issue("a");
        let b = tokens.fresh();
        let c = tokens.issue("c");
        assert!(a != b && b != c && a != c);
        assert_eq!(tokens.take(c), Some("c"));
        assert_eq!(tokens.take(c), None);
        assert_eq!(tokens.take(b), None);
        assert!(!tokens.is_empty());
        assert_eq!(tokens.take(a), Some("a"));
        assert!(tokens.is_empty());
    }
}
