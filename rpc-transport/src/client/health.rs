//! Health of one server endpoint, as a plain value: events and `now` in, eligibility out.
//!
//! - A connection whose handshake completed is *connected*; only connected endpoints
//!   get calls. A frozen process cannot complete a ZMTP handshake, so a recreated
//!   connection to it stays unconnected.
//! - An attempt timeout makes the endpoint *suspect* for a penalty that doubles with
//!   each consecutive timeout (from the attempt timeout up to 16 of them); a suspect
//!   endpoint gets no calls until the penalty ends. A reply clears the strikes.
//! - A disconnect (TCP close, heartbeat timeout) makes it *down* until reconnected.

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

    /// A reply arrived from this endpoint.
    pub fn on_reply(&mut self) {
        self.strikes = 0;
        self.suspect_until = None;
    }

    /// Whether a call may be sent here at `now`.
    pub fn eligible(&self, now: Instant) -> bool {
        self.connected && self.suspect_until.is_none_or(|t| t <= now)
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

#[cfg(test)]
mod tests {
    use super::*;

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
