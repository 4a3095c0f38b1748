//! Reconnect delays: exponential backoff with jitter, the random source passed in.

use std::time::Duration;

/// A small, seedable random source (SplitMix64); deterministic for a given seed, so
/// tests of backoff and scheduling are repeatable.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// A generator seeded from the process's hasher randomness and a counter.
    pub fn from_entropy() -> SplitMix64 {
        use std::hash::{BuildHasher, RandomState};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        SplitMix64(RandomState::new().hash_one(n))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// Exponential backoff: each delay doubles up to `max`; each is drawn uniformly from
/// the upper half of its nominal value ("equal jitter"), so that many clients that lost
/// the same server do not reconnect in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
    rng: SplitMix64,
}

impl Backoff {
    /// Backoff from `base` doubling to `max`.
    pub fn new(base: Duration, max: Duration, rng: SplitMix64) -> Backoff {
        let max = max.max(base);
        Backoff {
            base,
            max,
            current: base,
            rng,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = nominal / 2;
        let jitter = self.rng.below(half.as_micros() as u64 + 1);
        half + Duration::from_micros(jitter)
    }

    /// Back to the first delay (after a connection succeeded).
    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_stay_within_bounds_and_grow(seed in any::<u64>(), base_ms in 1u64..500, factor in 1u32..64) {
            let base = Duration::from_millis(base_ms);
            let max = base * factor;
            let mut b = Backoff::new(base, max, SplitMix64::new(seed));
            let mut nominal = base;
            for _ in 0..20 {
                let d = b.next_delay();
                prop_assert!(d >= nominal / 2 && d <= nominal, "{d:?} vs {nominal:?}");
                nominal = (nominal * 2).min(max);
            }
            b.reset();
            prop_assert!(b.next_delay() <= base);
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let mk = || {
            Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(5),
                SplitMix64::new(7),
            )
        };
        let (mut a, mut b) = (mk(), mk());
        for _ in 0..10 {
            assert_eq!(a.next_delay(), b.next_delay());
        }
    }
}
