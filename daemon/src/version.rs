//! The state version: bumped whenever state that the status page shows changes (an
//! instance event, a durable write, a lock or pool change). The page's event stream
//! sends a snapshot only when it moved, so an open dashboard costs an idle corrald next
//! to nothing. The owners of that state call [`state_changed`]; `http` reads it.

use std::sync::atomic::{AtomicU64, Ordering};

static STATE_VERSION: AtomicU64 = AtomicU64::new(0);

/// Marks that visible state changed.
pub fn state_changed() {
    STATE_VERSION.fetch_add(1, Ordering::Relaxed);
}

/// The current state version (see [`state_changed`]).
pub fn state_version() -> u64 {
    STATE_VERSION.load(Ordering::Relaxed)
}
