//! Picking a member for a call by power of two choices over a decaying latency.
//!
//! As tower's p2c balancer and Finagle's do: draw two members at random, score each by
//! its peak-EWMA latency times its calls in flight (plus one), and take the lower. A
//! slow or busy member loses most draws without being shut out (it still wins some,
//! so its score keeps being measured), and the pick costs the same whatever the pool's
//! size: two draws, not a scan.
//!
//! [`PeakEwma`]: a latency estimate that jumps up to a slower observation at once (a
//! worker turning slow is seen at its first slow reply) and decays toward faster ones
//! with a time constant (a worker that recovers wins its share back within seconds);
//! beside it, the plain moving average, which hedging compares with its delay (a
//! member slower than the delay on average is left out while the other of the draw
//! is not).
//! It is a pair of atomics, updated without a lock by whichever reply lands; the time
//! is passed in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How fast the estimate follows faster observations: after `DECAY`, an old peak
/// weighs `1/e`.
pub(crate) const DECAY: Duration = Duration::from_secs(5);

/// The same for the plain average, shorter: a member's first replies (cold
/// connections, often slow) stop counting within seconds, and a member left out for
/// being slower than the hedge delay is tried again about twice a second.
pub(crate) const MEAN_DECAY: Duration = Duration::from_secs(1);

/// The estimate of a member nothing has been measured of yet: a member just added is
/// tried (scored as quick), and its first replies set its latency.
const UNMEASURED_NS: f64 = 0.0;

/// A member's latency estimate.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    /// The estimate in nanoseconds, as `f64` bits.
    cost: AtomicU64,
    /// The plain moving average (no jump to peaks), in nanoseconds as `f64` bits:
    /// what a call there is expected to take, for hedging.
    mean: AtomicU64,
    /// When it was last updated, in nanoseconds of the caller's clock.
    at: AtomicU64,
}

impl Default for PeakEwma {
    fn default() -> PeakEwma {
        PeakEwma {
            cost: AtomicU64::new(UNMEASURED_NS.to_bits()),
            mean: AtomicU64::new(UNMEASURED_NS.to_bits()),
            at: AtomicU64::new(0),
        }
    }
}

impl PeakEwma {
    /// A reply took `rtt`, seen at `now_ns` (nanoseconds on a clock of the caller's).
    pub fn observe(&self, rtt: Duration, now_ns: u64) {
        let rtt = rtt.as_nanos() as f64;
        let cost = f64::from_bits(self.cost.load(Ordering::Relaxed));
        let mean = f64::from_bits(self.mean.load(Ordering::Relaxed));
        let at = self.at.swap(now_ns, Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(at) as f64;
        let w = (-elapsed / DECAY.as_nanos() as f64).exp();
        let wm = (-elapsed / MEAN_DECAY.as_nanos() as f64).exp();
        let next_mean = mean * wm + rtt * (1.0 - wm);
        let (next, next_mean) = match at {
            0 => (rtt, rtt),
            _ if rtt > cost => (rtt, next_mean),
            _ => (cost * w + rtt * (1.0 - w), next_mean),
        };
        self.cost.store(next.to_bits(), Ordering::Relaxed);
        self.mean.store(next_mean.to_bits(), Ordering::Relaxed);
    }

    /// Forgets the estimate (a new connection: whatever made the old one slow, a
    /// stall or a restart, says nothing of it), so that the member is tried again
    /// and its next replies measure it.
    pub fn reset(&self) {
        self.cost.store(UNMEASURED_NS.to_bits(), Ordering::Relaxed);
        self.mean.store(UNMEASURED_NS.to_bits(), Ordering::Relaxed);
        self.at.store(0, Ordering::Relaxed);
    }

    /// The estimate at `now_ns`, in nanoseconds: it decays toward zero while nothing is
    /// observed, so that a member shunned for being slow is tried again.
    pub fn cost(&self, now_ns: u64) -> f64 {
        self.decayed(&self.cost, DECAY, now_ns)
    }

    /// The plain average at `now_ns`, in nanoseconds, decaying (with [`MEAN_DECAY`])
    /// as [`cost`](Self::cost) does: what a call is expected to take (the peak
    /// estimate rides on the slowest recent reply).
    pub fn mean(&self, now_ns: u64) -> f64 {
        self.decayed(&self.mean, MEAN_DECAY, now_ns)
    }

    fn decayed(&self, value: &AtomicU64, decay: Duration, now_ns: u64) -> f64 {
        let v = f64::from_bits(value.load(Ordering::Relaxed));
        let at = self.at.load(Ordering::Relaxed);
        let elapsed = now_ns.saturating_sub(at) as f64;
        v * (-elapsed / decay.as_nanos() as f64).exp()
    }
}

/// The score of a member: lower is better.
pub(crate) fn score(cost_ns: f64, in_flight: usize) -> f64 {
    // A nanosecond floor, so that in-flight calls count for unmeasured members too.
    (cost_ns + 1.0) * (in_flight as f64 + 1.0)
}

/// Of two candidates `(index, score)`, the one to call.
pub(crate) fn choose(a: (usize, f64), b: (usize, f64)) -> usize {
    if b.1 < a.1 {
        b.0
    } else {
        a.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_slower_reply_is_seen_at_once_and_a_faster_one_gradually() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(2), 1);
        assert_eq!(e.cost(1), 2.0 * MS as f64);
        // A peak: taken at once.
        e.observe(Duration::from_millis(20), 2);
        assert_eq!(e.cost(2), 20.0 * MS as f64);
        // Faster replies: the estimate moves toward them with the decay.
        let one_second = 2 + 1000 * MS;
        e.observe(Duration::from_millis(2), one_second);
        let c = e.cost(one_second) / MS as f64;
        assert!(c > 15.0 && c < 20.0, "{c}");
        let mut t = one_second;
        for _ in 0..40 {
            t += 1000 * MS;
            e.observe(Duration::from_millis(2), t);
        }
        let c = e.cost(t) / MS as f64;
        assert!((2.0..2.1).contains(&c), "{c}");
    }

    #[test]
    fn the_mean_does_not_jump_to_a_peak() {
        let e = PeakEwma::default();
        let mut t = 1;
        for _ in 0..1000 {
            t += MS;
            e.observe(Duration::from_millis(3), t);
        }
        // One reply of 50 ms among replies of 3 ms, a millisecond apart.
        t += MS;
        e.observe(Duration::from_millis(50), t);
        assert_eq!(e.cost(t), 50.0 * MS as f64);
        let mean = e.mean(t) / MS as f64;
        assert!((3.0..3.1).contains(&mean), "{mean}");
        // A member seen slow for seconds is slow on average too.
        for _ in 0..10 {
            t += 1000 * MS;
            e.observe(Duration::from_millis(20), t);
        }
        let mean = e.mean(t) / MS as f64;
        assert!(mean > 15.0, "{mean}");
    }

    #[test]
    fn an_estimate_left_alone_decays_so_the_member_is_tried_again() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(20), 1);
        let later = 1 + 60 * 1000 * MS;
        assert!(e.cost(later) < 0.01 * MS as f64);
        // A new connection forgets it at once.
        e.observe(Duration::from_millis(200), later);
        e.reset();
        assert_eq!(e.cost(later), 0.0);
    }

    #[test]
    fn the_lower_score_wins_and_load_counts() {
        let fast = score(2.0 * MS as f64, 0);
        let slow = score(20.0 * MS as f64, 0);
        assert_eq!(choose((0, slow), (1, fast)), 1);
        assert_eq!(choose((1, fast), (0, slow)), 1);
        // A fast member with many calls in flight loses to an idle slower one.
        let busy = score(2.0 * MS as f64, 15);
        assert_eq!(choose((0, busy), (1, slow)), 1);
        // Unmeasured members are scored by their calls in flight.
        assert!(score(0.0, 0) < score(0.0, 1));
    }
}
