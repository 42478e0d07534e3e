//! Exponential backoff with jitter, for every retry loop (connect, lock wait, lock_timeout).
//!
//! Jitter matters here: eight tasks started by one deploy must not retry in lock step.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Delays for one retry loop.
pub struct Backoff {
    next: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Backoff { next: first, max: max.max(first), rng: seed | 1 }
    }

    /// A delay between half and all of the current step; the step then doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        let spread = step.saturating_sub(half).as_micros() as u64;
        half + Duration::from_micros(if spread == 0 { 0 } else { self.random() % (spread + 1) })
    }

    /// The next delay, cut short at `deadline`; `None` once the deadline has passed. A loop
    /// that sleeps this and tries again makes its last try at the deadline itself, rather
    /// than giving up when the next full step would pass it.
    pub fn next_delay_until(&mut self, deadline: Instant) -> Option<Duration> {
        let left = deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())?;
        Some(self.next_delay().min(left))
    }

    /// xorshift64: enough to spread retries, not for anything secret.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_delay_ends_at_the_deadline() {
        let mut backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_millis(300);
        let delay = backoff.next_delay_until(deadline).expect("time is left");
        assert!(delay <= Duration::from_millis(300), "{delay:?}");
        assert_eq!(backoff.next_delay_until(Instant::now()), None);
    }

    #[test]
    fn delays_grow_within_bounds_and_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let steps = [100, 200, 400, 800, 800, 800];
        for step in steps {
            let delay = backoff.next_delay();
            assert!(
                delay >= Duration::from_millis(step / 2) && delay <= Duration::from_millis(step),
                "{delay:?} for step {step}"
            );
        }
    }
}
