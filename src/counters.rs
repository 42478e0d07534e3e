//! What a run counts on its way, for the metrics of its result event: connection attempts,
//! time spent waiting for the advisory lock, and `lock_timeout` retries. Process-wide
//! counters: the layers that count (db, migrate) know nothing of the result event, and the
//! targets of a fan-out run add up into the run's totals.

use std::sync::atomic::{AtomicU64, Ordering};

static CONNECT_ATTEMPTS: AtomicU64 = AtomicU64::new(0);
static LOCK_WAIT_MS: AtomicU64 = AtomicU64::new(0);
static LOCK_RETRIES: AtomicU64 = AtomicU64::new(0);

/// A connection attempt was made (each retry counts).
pub fn connect_attempt() {
    CONNECT_ATTEMPTS.fetch_add(1, Ordering::Relaxed);
}

/// The advisory lock was waited for this long (acquired or given up on).
pub fn lock_waited(ms: u64) {
    LOCK_WAIT_MS.fetch_add(ms, Ordering::Relaxed);
}

/// A statement that hit `lock_timeout` is retried.
pub fn lock_retry() {
    LOCK_RETRIES.fetch_add(1, Ordering::Relaxed);
}

/// The counts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub connect_attempts: u64,
    pub lock_wait_ms: u64,
    pub lock_retries: u64,
}

pub fn read() -> Counts {
    Counts {
        connect_attempts: CONNECT_ATTEMPTS.load(Ordering::Relaxed),
        lock_wait_ms: LOCK_WAIT_MS.load(Ordering::Relaxed),
        lock_retries: LOCK_RETRIES.load(Ordering::Relaxed),
    }
}
