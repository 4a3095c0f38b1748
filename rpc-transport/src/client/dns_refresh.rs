//! [`Refresh`]: what DNS discovery does with each answer, as a value.
//!
//! Each resolution of the pool's name ends in an answer (addresses and how long they
//! are valid), an empty answer (the name has no records now) or a failure (no server
//! answered). The policy turns that and the time into pool changes and the time of
//! the next resolution:
//! - an answer replaces the pool: new addresses are inserted, missing ones removed;
//!   the next resolution comes when the records' TTL runs out, clamped to
//!   `[min_ttl, max_ttl]` (a TTL of 0 would resolve in a tight loop; one of a day
//!   would never see a rolling deploy);
//! - a failure changes nothing (the last good set serves on, a DNS outage must not
//!   empty a healthy pool) and resolves again after `min_ttl`;
//! - an empty answer empties the pool only once it has lasted `grace` (a name
//!   briefly without records during a redeploy does not fail every call).
//!
//! No IO, no clock: the time is passed in, so tests step through hours in a loop.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::PoolChange;

/// What one resolution of the pool's name gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Endpoints (`tcp://address:port`), valid for `ttl`.
    Found {
        endpoints: BTreeSet<String>,
        ttl: Duration,
    },
    /// The name exists no more, or has no records of the kind asked.
    Empty,
    /// No answer: timeouts, refused queries, a server failure.
    Failed,
}

/// The bounds of the policy (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub grace: Duration,
}

/// The pool as DNS last said it, and since when it has said nothing.
#[derive(Debug)]
pub(crate) struct Refresh {
    bounds: Bounds,
    current: BTreeSet<String>,
    empty_since: Option<Instant>,
}

impl Refresh {
    pub fn new(bounds: Bounds) -> Refresh {
        Refresh {
            bounds,
            current: BTreeSet::new(),
            empty_since: None,
        }
    }

    /// The endpoints the pool has from DNS now.
    #[cfg(test)]
    pub fn current(&self) -> &BTreeSet<String> {
        &self.current
    }

    /// Applies `answer`, got at `now`: the pool changes to make, and when to resolve
    /// again.
    pub fn on_answer(&mut self, answer: Answer, now: Instant) -> (Vec<PoolChange>, Instant) {
        let b = self.bounds;
        match answer {
            Answer::Found { endpoints, ttl } => {
                self.empty_since = None;
                let changes = self.replace(endpoints);
                (changes, now + ttl.clamp(b.min_ttl, b.max_ttl))
            }
            Answer::Failed => (Vec::new(), now + b.min_ttl),
            Answer::Empty => {
                let since = *self.empty_since.get_or_insert(now);
                let until = since + b.grace;
                if now >= until {
                    (self.replace(BTreeSet::new()), now + b.min_ttl)
                } else {
                    // Asked again within the grace, and at its end at the latest.
                    (Vec::new(), (now + b.min_ttl).min(until))
                }
            }
        }
    }

    fn replace(&mut self, next: BTreeSet<String>) -> Vec<PoolChange> {
        let removed = self
            .current
            .difference(&next)
            .cloned()
            .map(PoolChange::Remove);
        let inserted = next
            .difference(&self.current)
            .cloned()
            .map(PoolChange::Insert);
        // Inserts first: a pool that moves to new addresses never has none.
        let changes = inserted.chain(removed).collect();
        self.current = next;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PoolChange::{Insert, Remove};

    const S: Duration = Duration::from_secs(1);

    fn bounds() -> Bounds {
        Bounds {
            min_ttl: S,
            max_ttl: 60 * S,
            grace: 10 * S,
        }
    }

    fn found(eps: &[&str], ttl: Duration) -> Answer {
        Answer::Found {
            endpoints: eps.iter().map(|e| e.to_string()).collect(),
            ttl,
        }
    }

    fn ins(e: &str) -> PoolChange {
        Insert(e.into())
    }

    fn rem(e: &str) -> PoolChange {
        Remove(e.into())
    }

    #[test]
    fn answers_become_inserts_then_removes_and_the_ttl_is_clamped() {
        let t0 = Instant::now();
        let mut r = Refresh::new(bounds());
        let (c, next) = r.on_answer(found(&["a", "b"], 30 * S), t0);
        assert_eq!((c, next), (vec![ins("a"), ins("b")], t0 + 30 * S));
        // A rolling deploy: b leaves, c comes; a TTL of 0 is resolved after min_ttl.
        let (c, next) = r.on_answer(found(&["a", "c"], Duration::ZERO), t0);
        assert_eq!((c, next), (vec![ins("c"), rem("b")], t0 + S));
        // A TTL of a day is resolved after max_ttl; nothing changed, nothing to do.
        let (c, next) = r.on_answer(found(&["a", "c"], 86_400 * S), t0);
        assert_eq!((c, next), (vec![], t0 + 60 * S));
    }

    #[test]
    fn a_failure_keeps_the_last_good_set_and_asks_again_soon() {
        let t0 = Instant::now();
        let mut r = Refresh::new(bounds());
        r.on_answer(found(&["a"], 30 * S), t0);
        for k in 1..100 {
            let now = t0 + k * S;
            assert_eq!(r.on_answer(Answer::Failed, now), (vec![], now + S));
        }
        assert_eq!(r.current().len(), 1);
    }

    #[test]
    fn an_empty_answer_empties_the_pool_only_after_the_grace() {
        let t0 = Instant::now();
        let mut r = Refresh::new(bounds());
        r.on_answer(found(&["a", "b"], 5 * S), t0);
        // Empty from t0+5 s: kept until t0+15 s, asked every second meanwhile.
        let mut now = t0 + 5 * S;
        loop {
            let (c, next) = r.on_answer(Answer::Empty, now);
            if now < t0 + 15 * S {
                assert_eq!(c, vec![], "at {:?}", now - t0);
                assert!(next <= t0 + 15 * S);
                now = next;
            } else {
                assert_eq!(c, vec![rem("a"), rem("b")]);
                break;
            }
        }
        assert_eq!(now, t0 + 15 * S);
        // Records that come back within a grace reset it.
        r.on_answer(found(&["a"], 5 * S), now);
        r.on_answer(Answer::Empty, now + 20 * S);
        r.on_answer(found(&["a"], 5 * S), now + 25 * S);
        let (c, _) = r.on_answer(Answer::Empty, now + 31 * S);
        assert_eq!(c, vec![]);
    }

    #[test]
    fn an_empty_answer_on_an_empty_pool_changes_nothing() {
        let t0 = Instant::now();
        let mut r = Refresh::new(bounds());
        assert_eq!(r.on_answer(Answer::Empty, t0).0, vec![]);
        assert_eq!(r.on_answer(Answer::Empty, t0 + 100 * S).0, vec![]);
    }
}
