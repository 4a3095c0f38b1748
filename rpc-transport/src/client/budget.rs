//! [`RetryBudget`]: how many resends a client makes, all calls together.
//!
//! Retries help when a few calls meet a failure; when every server is failing they
//! multiply the load on servers that are already drowning (a thousand callers with
//! three retries each make four thousand attempts). As Finagle's `RetryBudget` and
//! gRPC's retry throttling do, the client allows resends up to a fraction of its calls
//! plus a small floor per second; past that, a call fails with its last cause instead
//! of resending.
//!
//! Two buckets of tokens, a resend taking one: each call deposits `ratio` of a token
//! into the first (up to a cap, so that a long quiet spell does not bank an unbounded
//! storm); the second refills at `per_second` tokens a second, up to ten seconds'
//! worth, and starts full. The time is passed in. Deposits are one relaxed atomic
//! add; only resends take the lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Thousandths of a token.
const MILLI: u64 = 1000;

/// Seconds' worth of floor tokens the floor bucket holds, and starts with (Finagle's
/// window is 10 s): a burst of resends after a worker dies with many calls in flight
/// is let through; a storm that lasts is held to the rate.
const RESERVE_SECS: f64 = 10.0;

/// The retry budget of a client (its settings); see the module docs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    ratio: f64,
    /// `None`: no limit at all.
    per_second: Option<u32>,
}

impl Default for RetryBudget {
    /// 20% of calls plus 10 resends a second (Finagle's defaults).
    fn default() -> RetryBudget {
        RetryBudget::new(0.2, 10)
    }
}

impl RetryBudget {
    /// Resends up to `ratio` of calls (0.2: one resend per five calls) plus
    /// `per_second` a second.
    pub fn new(ratio: f64, per_second: u32) -> RetryBudget {
        RetryBudget {
            ratio: ratio.clamp(0.0, 1000.0),
            per_second: Some(per_second),
        }
    }

    /// No budget: every resend the retry policy wants is made (for tests of one
    /// server, or clients that bound retries otherwise).
    pub fn unlimited() -> RetryBudget {
        RetryBudget {
            ratio: 0.0,
            per_second: None,
        }
    }
}

/// The live budget of one client.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Tokens deposited per call, in thousandths (0.2 = 200).
    ratio_milli: u64,
    /// Most thousandths the call-funded bucket holds.
    cap_milli: u64,
    /// The call-funded bucket, in thousandths.
    deposits: AtomicU64,
    /// Floor tokens a second; `None`: no limit at all.
    per_second: Option<u32>,
    floor: Mutex<Floor>,
}

/// The floor bucket: tokens, and when it was last refilled.
#[derive(Debug)]
struct Floor {
    tokens: f64,
    at: Option<Instant>,
}

impl Budget {
    /// A full floor and no deposits yet.
    pub fn new(settings: RetryBudget) -> Budget {
        let ratio_milli = (settings.ratio * MILLI as f64) as u64;
        Budget {
            ratio_milli,
            // What 500 calls deposit: a burst of failures after a quiet spell may
            // resend that much, no more.
            cap_milli: (ratio_milli * 500).max(MILLI),
            deposits: AtomicU64::new(0),
            per_second: settings.per_second,
            floor: Mutex::new(Floor {
                tokens: f64::from(settings.per_second.unwrap_or(0)) * RESERVE_SECS,
                at: None,
            }),
        }
    }

    /// A call started: deposits its share.
    pub(crate) fn deposit(&self) {
        if self.deposits.load(Ordering::Relaxed) < self.cap_milli {
            self.deposits.fetch_add(self.ratio_milli, Ordering::Relaxed);
        }
    }

    /// A resend at `now` would be made: takes a token if the budget has one.
    pub(crate) fn try_withdraw(&self, now: Instant) -> bool {
        let Some(per_second) = self.per_second else {
            return true;
        };
        let took = self
            .deposits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                d.checked_sub(MILLI)
            });
        if took.is_ok() {
            return true;
        }
        let mut floor = lock(&self.floor);
        let elapsed = floor
            .at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let rate = f64::from(per_second);
        floor.tokens = (floor.tokens + elapsed.as_secs_f64() * rate).min(rate * RESERVE_SECS);
        floor.at = Some(now);
        if floor.tokens >= 1.0 {
            floor.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resends allowed out of `wanted`, all at `now`.
    fn allowed(b: &Budget, wanted: usize, now: Instant) -> usize {
        (0..wanted).filter(|_| b.try_withdraw(now)).count()
    }

    #[test]
    fn resends_are_a_fraction_of_calls_plus_a_floor() {
        let t0 = Instant::now();
        let b = Budget::new(RetryBudget::new(0.2, 10));
        for _ in 0..400 {
            b.deposit();
        }
        // 400 calls fund 80 resends; the floor starts with 10 seconds' worth, 100.
        assert_eq!(allowed(&b, 1000, t0), 180);
        // The floor refills at 10 a second, up to 100.
        assert_eq!(allowed(&b, 100, t0 + Duration::from_millis(500)), 5);
        assert_eq!(allowed(&b, 1000, t0 + Duration::from_secs(60)), 100);
    }

    #[test]
    fn a_quiet_spell_banks_a_bounded_number_of_resends() {
        let t0 = Instant::now();
        let b = Budget::new(RetryBudget::new(0.2, 0));
        for _ in 0..1_000_000 {
            b.deposit();
        }
        let n = allowed(&b, 10_000, t0);
        assert!((100..=101).contains(&n), "{n}");
    }

    #[test]
    fn no_budget_allows_every_resend_and_a_zero_budget_none() {
        let t0 = Instant::now();
        assert_eq!(
            allowed(&Budget::new(RetryBudget::unlimited()), 1000, t0),
            1000
        );
        let none = Budget::new(RetryBudget::new(0.0, 0));
        none.deposit();
        assert_eq!(allowed(&none, 10, t0 + Duration::from_secs(5)), 0);
    }
}
