//! Health of one server endpoint, as a plain value: events and `now` in, eligibility out.
//!
//! - A connection whose handshake completed is *connected*; only connected endpoints
//!   get calls. A frozen process cannot complete a ZMTP handshake, so a recreated
//!   connection to it stays unconnected.
//! - An attempt timeout makes the endpoint *suspect* for a penalty that doubles with
//!   each consecutive timeout (from the attempt timeout up to 16 of them); a suspect
//!   endpoint gets no calls until the penalty ends. A reply clears the strikes.
//! - A disconnect (TCP close, heartbeat timeout) makes it *down* until reconnected.
//!
//! Whether an attempt timeout is a stall at all is [`judge_stall`]'s call: one stall of
//! one connection is one strike, however many attempts it timed out, and a connection
//! that still speaks has not stalled.

use std::time::{Duration, Instant};

/// Where an endpoint stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// No handshaken connection yet (first connect, or after a recreation).
    Connecting,
    /// Connected and answering.
    Healthy,
    /// Connected, but an attempt timed out recently: no calls until `until`.
    Suspect {
        /// End of the penalty.
        until: Instant,
    },
    /// The connection was lost; reconnecting with backoff.
    Down,
    /// Not connected on purpose: outside the window of a lazy aperture
    /// ([`Aperture::lazy`](super::Aperture::lazy)), connected when the window takes it
    /// in.
    Idle,
}

/// The health policy of one endpoint.
#[derive(Debug, Clone)]
pub struct Health {
    connected: bool,
    ever_connected: bool,
    suspect_until: Option<Instant>,
    strikes: u32,
}

/// Most doublings of the suspect penalty.
const MAX_STRIKES: u32 = 4;

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// A new endpoint, connecting.
    pub fn new() -> Health {
        Health {
            connected: false,
            ever_connected: false,
            suspect_until: None,
            strikes: 0,
        }
    }

    /// The handshake of a connection completed.
    pub fn on_connected(&mut self) {
        self.connected = true;
        self.ever_connected = true;
    }

    /// The connection was lost (or closed to be recreated).
    pub fn on_disconnected(&mut self) {
        self.connected = false;
    }

    /// An attempt timed out: suspect for `base * 2^strikes`.
    pub fn on_timeout(&mut self, now: Instant, base: Duration) {
        let penalty = base * (1u32 << self.strikes.min(MAX_STRIKES));
        self.strikes = self.strikes.saturating_add(1);
        self.suspect_until = Some(now + penalty);
    }

    /// A call timed out on a connection that is alive (it brings heartbeats or other
    /// replies): the server is slow, not gone. Suspect for `base` (unless it already
    /// is for longer), without a strike: new calls go elsewhere for a while, and
    /// the calls on its connection go on.
    pub fn on_slow(&mut self, now: Instant, base: Duration) {
        let until = now + base;
        if self.suspect_until.is_none_or(|t| t < until) {
            self.suspect_until = Some(until);
        }
    }

    /// Stalls since the last reply (each one doubled the penalty).
    pub fn strikes(&self) -> u32 {
        self.strikes
    }

    /// A reply arrived from this endpoint.
    pub fn on_reply(&mut self) {
        self.strikes = 0;
        self.suspect_until = None;
    }

    /// Whether a call may be sent here at `now`.
    pub fn eligible(&self, now: Instant) -> bool {
        self.connected && self.suspect_until.is_none_or(|t| t <= now)
    }

    /// Whether a connection is up (handshake completed).
    pub fn connected(&self) -> bool {
        self.connected
    }

    /// Connected with no strikes: eligible whatever the time.
    pub fn clear(&self) -> bool {
        self.connected && self.suspect_until.is_none()
    }

    /// When a connected but suspect endpoint becomes eligible again, if that is
    /// after `now`.
    pub fn eligible_at(&self, now: Instant) -> Option<Instant> {
        self.suspect_until.filter(|t| self.connected && *t > now)
    }

    /// The state, for display and counters.
    pub fn state(&self, now: Instant) -> HealthState {
        match (self.connected, self.suspect_until) {
            (true, Some(until)) if until > now => HealthState::Suspect { until },
            (true, _) => HealthState::Healthy,
            (false, _) if self.ever_connected => HealthState::Down,
            (false, _) => HealthState::Connecting,
        }
    }
}

/// What an attempt timeout says about the connection the attempt was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// That connection was already recreated (for this stall or another): nothing to do.
    Recreated,
    /// Something arrived on it since the attempt was written (a reply, a heartbeat):
    /// the server is alive and only the call was slow. The connection is kept.
    Alive,
    /// Nothing arrived since: the connection is recreated and the endpoint struck.
    Silent,
}

/// Judges an attempt timeout: the attempt was written to connection generation
/// `sent_generation` after `sent_reads` reads had brought bytes there; the endpoint is at
/// `generation` now, whose connection has made `reads` such reads (`None`: closed).
pub(crate) fn judge_stall(
    sent_generation: u64,
    sent_reads: u64,
    generation: u64,
    reads: Option<u64>,
) -> Stall {
    if generation != sent_generation {
        Stall::Recreated
    } else if reads.is_some_and(|r| r != sent_reads) {
        Stall::Alive
    } else {
        Stall::Silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_judged_once_per_connection() {
        // Sent on generation 3 after 10 reads.
        let rows = [
            ((3, Some(10)), Stall::Silent),
            ((3, Some(11)), Stall::Alive),
            ((3, None), Stall::Silent),
            // Another attempt of the same stall, after the first recreated it.
            ((4, Some(0)), Stall::Recreated),
            ((4, Some(10)), Stall::Recreated),
        ];
        for ((generation, reads), want) in rows {
            assert_eq!(
                judge_stall(3, 10, generation, reads),
                want,
                "{generation} {reads:?}"
            );
        }
    }

    #[test]
    fn eight_attempts_of_one_stall_are_one_strike() {
        // As `Client` applies it: only a silent judgement strikes, then recreates.
        let t0 = Instant::now();
        let base = Duration::from_millis(100);
        let mut h = Health::new();
        h.on_connected();
        let mut generation = 1;
        for _ in 0..8 {
            if judge_stall(1, 5, generation, Some(5)) == Stall::Silent {
                h.on_timeout(t0, base);
                generation += 1;
            }
        }
        assert_eq!(h.strikes(), 1);
        assert!(h.eligible(t0 + base));
    }

    #[test]
    fn lifecycle() {
        let t0 = Instant::now();
        let base = Duration::from_millis(100);
        let mut h = Health::new();
        assert_eq!(h.state(t0), HealthState::Connecting);
        assert!(!h.eligible(t0));
        h.on_connected();
        assert!(h.eligible(t0));
        h.on_timeout(t0, base);
        assert_eq!(h.state(t0), HealthState::Suspect { until: t0 + base });
        assert!(!h.eligible(t0 + base / 2));
        assert!(h.eligible(t0 + base));
        // A second timeout doubles the penalty; a reply forgives.
        h.on_timeout(t0, base);
        assert!(!h.eligible(t0 + base));
        assert!(h.eligible(t0 + base * 2));
        h.on_reply();
        h.on_timeout(t0, base);
        assert!(h.eligible(t0 + base));
        h.on_disconnected();
        assert_eq!(h.state(t0), HealthState::Down);
        assert!(!h.eligible(t0 + base * 100));
    }

    #[test]
    fn a_slow_server_is_suspect_for_one_attempt_timeout_without_a_strike() {
        let t0 = Instant::now();
        let base = Duration::from_millis(100);
        let mut h = Health::new();
        h.on_connected();
        for _ in 0..5 {
            h.on_slow(t0, base);
        }
        assert_eq!(h.strikes(), 0);
        assert!(!h.eligible(t0 + base / 2));
        assert!(h.eligible(t0 + base), "no doubling");
        // A longer penalty already running is kept.
        h.on_timeout(t0, base);
        h.on_timeout(t0, base);
        h.on_slow(t0, base);
        assert!(!h.eligible(t0 + base * 3 / 2));
    }

    #[test]
    fn penalty_is_capped() {
        let t0 = Instant::now();
        let base = Duration::from_millis(10);
        let mut h = Health::new();
        h.on_connected();
        for _ in 0..100 {
            h.on_timeout(t0, base);
        }
        assert!(h.eligible(t0 + base * 16));
    }
}
