//! Relaxed atomic counters, for the statistics of the client and the server.

use std::sync::atomic::{AtomicU64, Ordering};

/// Adds one.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Reads the current value.
pub(crate) fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
