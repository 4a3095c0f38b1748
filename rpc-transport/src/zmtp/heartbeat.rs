//! ZMTP 3.1 heartbeats: when to PING, and when a silent peer counts as dead.
//!
//! Rules (RFC 37, and libzmq's `stream_engine_base`): any incoming traffic is a sign of
//! life. After we send a PING, the peer has `timeout` to send anything at all. A peer's
//! PING with a non-zero TTL asks us to close if we hear nothing from it within the TTL.

use std::time::{Duration, Instant};

use super::ZmtpError;

/// Heartbeat settings of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Time between our PINGs (libzmq's `ZMQ_HEARTBEAT_IVL`).
    pub interval: Duration,
    /// How long after a PING the peer may stay silent (`ZMQ_HEARTBEAT_TIMEOUT`).
    pub timeout: Duration,
    /// TTL we ask the peer to apply to us (`ZMQ_HEARTBEAT_TTL`), rounded down to tenths
    /// of a second; zero for none.
    pub ttl: Duration,
}

impl HeartbeatConfig {
    /// A config with `interval`, a timeout of the same length and a TTL of three intervals.
    pub fn every(interval: Duration) -> HeartbeatConfig {
        HeartbeatConfig {
            interval,
            timeout: interval,
            ttl: interval * 3,
        }
    }

    /// The TTL field of our PINGs, in tenths of a second.
    pub fn ttl_deciseconds(&self) -> u16 {
        u16::try_from(self.ttl.as_millis() / 100).unwrap_or(u16::MAX)
    }
}

/// Heartbeat timers of one connection.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    config: Option<HeartbeatConfig>,
    next_ping: Option<Instant>,
    /// Set when we sent a PING and have heard nothing since.
    answer_by: Option<Instant>,
    /// Set from a peer PING's TTL; cleared by any traffic.
    peer_ttl_by: Option<Instant>,
}

impl Heartbeat {
    /// Timers that start running at `now` (no PINGs when `config` is `None`).
    pub fn start(config: Option<HeartbeatConfig>, now: Instant) -> Heartbeat {
        Heartbeat {
            config,
            next_ping: config.map(|c| now + c.interval),
            answer_by: None,
            peer_ttl_by: None,
        }
    }

    /// Records incoming traffic.
    pub fn on_traffic(&mut self) {
        self.answer_by = None;
        self.peer_ttl_by = None;
    }

    /// Records a PING from the peer with its TTL.
    pub fn on_ping(&mut self, ttl_ds: u16, now: Instant) {
        if ttl_ds > 0 && self.peer_ttl_by.is_none() {
            self.peer_ttl_by = Some(now + Duration::from_millis(u64::from(ttl_ds) * 100));
        }
    }

    /// The next instant at which [`Heartbeat::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_ping, self.answer_by, self.peer_ttl_by]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances the timers to `now`. Returns the TTL of a PING to send, if one is due,
    /// or an error when the peer has been silent too long.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<Option<u16>, ZmtpError> {
        if self.answer_by.is_some_and(|t| t <= now) || self.peer_ttl_by.is_some_and(|t| t <= now) {
            return Err(ZmtpError::HeartbeatTimeout);
        }
        let Some(cfg) = self.config else {
            return Ok(None);
        };
        match self.next_ping {
            Some(t) if t <= now => {
                self.next_ping = Some(now + cfg.interval);
                if self.answer_by.is_none() {
                    self.answer_by = Some(now + cfg.timeout);
                }
                Ok(Some(cfg.ttl_deciseconds()))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_on_interval_and_times_out_when_silent() {
        let t0 = Instant::now();
        let cfg = HeartbeatConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(250),
            ttl: Duration::from_millis(1000),
        };
        let mut hb = Heartbeat::start(Some(cfg), t0);
        assert_eq!(hb.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        assert_eq!(hb.handle_timeout(t0 + Duration::from_millis(50)), Ok(None));
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(hb.handle_timeout(t1), Ok(Some(10)));
        // Traffic arrives: no timeout pending.
        hb.on_traffic();
        let t2 = t1 + Duration::from_millis(100);
        assert_eq!(hb.handle_timeout(t2), Ok(Some(10)));
        // Silence from now on: PINGs continue until 250 ms after the first unanswered one.
        assert_eq!(
            hb.handle_timeout(t2 + Duration::from_millis(100)),
            Ok(Some(10))
        );
        assert_eq!(
            hb.handle_timeout(t2 + Duration::from_millis(250)),
            Err(ZmtpError::HeartbeatTimeout)
        );
    }

    #[test]
    fn peer_ttl_is_enforced_and_reset_by_traffic() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::start(None, t0);
        assert_eq!(hb.poll_timeout(), None);
        hb.on_ping(5, t0);
        assert_eq!(hb.poll_timeout(), Some(t0 + Duration::from_millis(500)));
        hb.on_traffic();
        assert_eq!(hb.poll_timeout(), None);
        hb.on_ping(5, t0);
        assert_eq!(
            hb.handle_timeout(t0 + Duration::from_millis(500)),
            Err(ZmtpError::HeartbeatTimeout)
        );
    }
}
