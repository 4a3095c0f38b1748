//! Which endpoint an attempt goes to: power of two choices (from the aperture's
//! window when there is one), round-robin or least outstanding, among the members
//! able to take calls.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::member::Member;
use super::{aperture, balance, now_std, Balance, Inner};
use crate::socket::SplitMix64;

/// The shortest time between two looks at a quiet client's lazy aperture.
const QUIET_LOOK_MIN: Duration = Duration::from_millis(10);

impl Inner {
    /// A healthy endpoint, preferring one other than `avoid`.
    pub(super) fn pick(&self, avoid: Option<usize>) -> Option<usize> {
        // Read only when an endpoint with strikes is looked at.
        let mut now = None;
        let n = self.members.len();
        if self.config.balance == Balance::PowerOfTwoChoices {
            if let Some(w) = &self.window {
                self.tend(w, &mut now);
            }
            if let Some(i) = self.pick_two(avoid, &mut now) {
                return Some(i);
            }
            // Draws missed (few members can take calls): look at all.
        }
        let mut start = self.rr.fetch_add(1, Ordering::Relaxed);
        if self.config.balance == Balance::RoundRobin {
            // The next in turn; one that cannot take the call (removed, down,
            // avoided) passes its turn on to the next number drawn, not to the
            // member after it, which would get a double share.
            for _ in 0..n {
                let i = start % n;
                let ep = self.members.at(i);
                if Some(i) != avoid && ep.eligible(|| *now.get_or_insert_with(now_std)) {
                    return Some(i);
                }
                start = self.rr.fetch_add(1, Ordering::Relaxed);
            }
            // Drawn numbers may miss some (other callers draw too): look at all.
        }
        let mut best: Option<(usize, usize)> = None;
        let mut fallback = None;
        for k in 0..n {
            let i = (start + k) % n;
            let ep = &self.members.at(i);
            if !ep.eligible(|| *now.get_or_insert_with(now_std)) {
                continue;
            }
            if Some(i) == avoid {
                fallback = Some(i);
                continue;
            }
            match self.config.balance {
                Balance::RoundRobin => return Some(i),
                // The scan after missed draws: the least loaded that can take it.
                Balance::LeastOutstanding | Balance::PowerOfTwoChoices => {
                    let load = ep.outstanding.load(Ordering::Relaxed);
                    if best.is_none_or(|(_, l)| load < l) {
                        best = Some((i, load));
                    }
                }
            }
        }
        best.map(|(i, _)| i).or(fallback)
    }

    /// Power of two choices: the better of two members drawn at random, each able to
    /// take the call; `None` when a few draws found none.
    fn pick_two(
        &self,
        avoid: Option<usize>,
        now: &mut Option<std::time::Instant>,
    ) -> Option<usize> {
        const DRAWS: usize = 4;
        let n = self.members.len();
        let mut ok = |i: usize| {
            Some(i) != avoid
                && self
                    .members
                    .at(i)
                    .eligible(|| *now.get_or_insert_with(now_std))
        };
        if n == 1 {
            return ok(0).then_some(0);
        }
        for _ in 0..DRAWS {
            let r = SplitMix64::new(self.rr.fetch_add(1, Ordering::Relaxed) as u64).next_u64();
            let (a, b) = match self.window.as_ref().and_then(|w| w.draw(r)) {
                Some(pair) => pair,
                None => {
                    let a = (r % n as u64) as usize;
                    (a, (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n)
                }
            };
            match (ok(a), ok(b)) {
                (true, true) => {
                    let t = self.nanos(now.unwrap_or_else(now_std));
                    let score = |i: usize| {
                        let m = self.members.at(i);
                        let load = m.outstanding.load(Ordering::Relaxed);
                        (i, balance::score(m.latency.cost(t), load))
                    };
                    let pick = balance::choose(score(a), score(b));
                    let Some(delay) = self.config.hedge else {
                        return Some(pick);
                    };
                    // Hedging: a member whose calls take longer than the hedge delay
                    // on average would have them hedged anyway, and ended late; the
                    // other takes the call. It is tried again once its estimate has
                    // decayed below the delay.
                    let other = if pick == a { b } else { a };
                    let late =
                        |i: usize| self.members.at(i).latency.mean(t) > delay.as_nanos() as f64;
                    return Some(if late(pick) && !late(other) {
                        other
                    } else {
                        pick
                    });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        None
    }

    /// Looks at the aperture's window (every few picks, and after a change): its size
    /// against the load, and its members against those able to take calls (or, with a
    /// lazy aperture, to be connected for them).
    fn tend(&self, w: &aperture::Window, now: &mut Option<std::time::Instant>) {
        if !w.wants_tending(self.rr.load(Ordering::Relaxed)) {
            return;
        }
        let t = *now.get_or_insert_with(now_std);
        self.choose_window(w, t);
        // Not before a window was chosen: another pick may be choosing the first one
        // now (an empty window would read as the whole pool, every member connected).
        if let (Some(linger), true) = (w.config().linger(), w.is_chosen()) {
            self.tend_connections(&w.members(), t, linger);
        }
    }

    /// Sizes the window to its load and chooses its members again when that or the
    /// pool changed ([`aperture::Window::tend`]); returns whether it chose again.
    fn choose_window(&self, w: &aperture::Window, t: std::time::Instant) -> bool {
        let linger = w.config().linger();
        w.tend(
            |i| self.members.at(i).outstanding.load(Ordering::Relaxed),
            || {
                self.live().map(move |(i, m)| {
                    let ok = match linger {
                        Some(_) => m.window_candidate(|| t),
                        None => m.eligible(|| t),
                    };
                    (i, m.addr.as_str(), ok)
                })
            },
        )
    }

    /// A lazy aperture's tending while no call picks (the watchdog task calls it
    /// every half linger). Picks tend the window themselves, but a client that went
    /// quiet would keep its window as the last load left it, and every connection
    /// lingering out of it, open for good. When no pick came since the last look, the
    /// window is sized to no load and the connections out of it close once they have
    /// lingered. Returns when to look next: `None` when nothing is left to close (the
    /// next call wakes the task) or there is no lazy aperture.
    pub(super) fn tend_quiet(&self, now: Instant) -> Option<Instant> {
        let w = self.window.as_ref()?;
        let linger = w.config().linger()?;
        let next = now + (linger / 2).max(QUIET_LOOK_MIN);
        let tick = self.rr.load(Ordering::Relaxed);
        if self.quiet_tick.swap(tick, Ordering::Relaxed) != tick {
            // Calls are being picked, and tend as they go.
            return Some(next);
        }
        if !w.is_chosen() {
            return None;
        }
        let t = now.into_std();
        // Each choosing shrinks an idle window by one member: down to its minimum.
        for _ in 0..w.config().max_size() {
            if !self.choose_window(w, t) {
                break;
            }
        }
        let lingering = self.tend_connections(&w.members(), t, linger);
        lingering.then_some(next)
    }

    /// A lazy aperture's connections: the window's idle members (every member, while
    /// the pool is drawn whole: `window` empty) are connected; a member out of the
    /// window for `linger`, with no call in flight, is closed. Returns whether a member
    /// out of the window is still connected (it lingers, or has calls in flight).
    fn tend_connections(&self, window: &[usize], t: std::time::Instant, linger: Duration) -> bool {
        let Some(me) = self.me.upgrade() else {
            return false;
        };
        let mut lingering = false;
        let at = self.nanos(t).saturating_add(1);
        let linger = u64::try_from(linger.as_nanos()).unwrap_or(u64::MAX);
        for (i, m) in self.live() {
            if window.is_empty() || window.contains(&i) {
                m.left_window.store(0, Ordering::Relaxed);
                if m.is_idle() && Member::wake(&me, i) {
                    tracing::debug!(endpoint = %m.addr, "connecting: in the aperture");
                }
                continue;
            }
            if m.is_idle() {
                continue;
            }
            let left = m.left_window.load(Ordering::Relaxed);
            if left == 0 {
                m.left_window.store(at, Ordering::Relaxed);
            } else if at.saturating_sub(left) >= linger
                && m.outstanding.load(Ordering::Relaxed) == 0
            {
                if let Some(closed) = m.sleep() {
                    m.left_window.store(0, Ordering::Relaxed);
                    tracing::debug!(endpoint = %m.addr, "closed: out of the aperture");
                    // An attempt that slipped onto it meanwhile fails over.
                    self.fail_in_flight(i, closed);
                    continue;
                }
            }
            lingering = true;
        }
        lingering
    }
}
