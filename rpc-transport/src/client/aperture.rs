//! The aperture: the few members of a large pool that one client calls.
//!
//! Over 300 endpoints, sixteen callers' messages each travel on a connection of their
//! own, each with its own task wake, read and write, where over 3 connections they
//! share them: 1.4-1.7x the client CPU per call in the bench, though the pick itself
//! is two draws either way. With an aperture (as Finagle's aperture balancer), power
//! of two choices draws from a window of the pool sized to the client's load instead
//! of from all of it; the other members stay connected and watched (heartbeats), ready
//! to replace one of the window that fails.
//!
//! Which members: those ranked first by a hash of their address keyed per client
//! (rendezvous hashing), among those that can take calls. Clients spread over the
//! pool, and a member that leaves, fails or joins moves one place of a window, not
//! all of it. How many: from [`Aperture::min`], one more while the window's members
//! average more than `high` calls in flight, one fewer while they average fewer than
//! `low` ([`next_size`]); looked at every [`CHECK_EVERY`] picks.
//!
//! With [`Aperture::coordinate`] (this client is number `index` of `count` alike), the
//! ranking is a ring instead of a hash: the pool's members in the order of their
//! addresses, which every client sees alike, each client's window starting
//! `index / count` of the way round and at least `1 / count` of it wide ([`ring`]), so
//! that the windows lie side by side and every member is in about as many as any
//! other (a hash leaves some members in no window and others in several).
//!
//! With [`Aperture::lazy`], only the window's members are connected: a member is
//! connected when the window takes it in (idle members are candidates too), and closed
//! once it has been out of the window, without calls in flight, for a while (so that a
//! window that breathes with the load does not reconnect at every step).
//!
//! The window is a row of member indices that picks read without a lock (a pick may
//! see a window half rewritten: every index in it is a member's, so the draw is still
//! a member of the pool); it is rewritten, under a lock that picks only try, when the
//! pool or a member's health changed ([`Window::mark_stale`]) or its size should.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How often (in picks) the window's size is looked at.
pub(crate) const CHECK_EVERY: usize = 64;

/// Settings of a client's aperture ([`ClientBuilder::aperture`](super::ClientBuilder::aperture)).
///
/// Defaults: at least 3 members, at most 256; grow past 4 calls in flight per member
/// on average, shrink below 1; every member of the pool connected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aperture {
    min: usize,
    max: usize,
    low: f64,
    high: f64,
    /// Connect only to the window; close a member this long out of it.
    linger: Option<Duration>,
    /// This client's place among its peers: number `.0` of `.1`.
    coordinate: Option<(usize, usize)>,
}

impl Default for Aperture {
    fn default() -> Aperture {
        Aperture::new()
    }
}

impl Aperture {
    /// The defaults.
    pub fn new() -> Aperture {
        Aperture {
            min: 3,
            max: 256,
            low: 1.0,
            high: 4.0,
            linger: None,
            coordinate: None,
        }
    }

    /// Fewest members the window holds (default 3; at least 2, so that power of two
    /// choices has a choice). A pool this small or smaller is drawn from whole.
    pub fn min(mut self, n: usize) -> Aperture {
        self.min = n;
        self
    }

    /// Most members the window holds (default 256).
    pub fn max(mut self, n: usize) -> Aperture {
        self.max = n;
        self
    }

    /// The load band, in calls in flight per member of the window on average: above
    /// `high` the window grows by one member, below `low` it shrinks by one (defaults
    /// 1 and 4: a few calls per connection share its reads and writes, and a window
    /// of a quiet client stays small).
    pub fn load(mut self, low: f64, high: f64) -> Aperture {
        self.low = low;
        self.high = high;
        self
    }

    /// Connects only to the window's members, instead of every member of the pool:
    /// a member is connected when the window takes it in (calls go to it once its
    /// handshake completed; until then to the rest of the window), and its
    /// connection closed once it has been out of the window for `linger` with no
    /// call in flight (looked at as calls are picked, and every half linger by the
    /// client's own task: a client that stopped calling shrinks its window to the
    /// minimum and closes the rest within about two lingers). Each server then holds
    /// connections from the clients whose window it is in, not from every client.
    ///
    /// What it costs: nothing is known of a member's health until it is connected,
    /// so a member that joins the window may turn out to be down (it is replaced as
    /// soon as connecting fails); a call waits, within its deadline, while members
    /// not yet tried remain (it fails fast, as without it, once every member was tried
    /// and refused); and [`Client::wait_healthy`](super::Client::wait_healthy) can count
    /// only connected members.
    pub fn lazy(mut self, linger: Duration) -> Aperture {
        self.linger = Some(linger);
        self
    }

    /// This client is number `index` (from 0) of `count` clients of the pool alike
    /// (a StatefulSet's ordinal and replica count, a worker number and the number of
    /// workers): the windows are cut side by side from one ring of the pool, the
    /// members in the order of their addresses, and each at least `1 / count` of it,
    /// so that every member is in about the same number of windows. Without it each
    /// client ranks the members by a hash of its own: with 100 clients of windows of
    /// 3 over 300 members, about a third of the members are in no window and some
    /// in four or more. A member that fails or leaves moves the windows by one place,
    /// as with the hash. Clients that disagree on `count`, or on the pool, still work,
    /// less evenly spread.
    pub fn coordinate(mut self, index: usize, count: usize) -> Aperture {
        self.coordinate = Some((index, count));
        self
    }

    /// How long a member out of the window stays connected, when only the window is
    /// connected ([`Aperture::lazy`]); `None`: every member is connected.
    pub fn linger(&self) -> Option<Duration> {
        self.linger
    }

    /// The most members the window holds ([`Aperture::max`]).
    pub(crate) fn max_size(&self) -> usize {
        self.max
    }

    /// What is wrong with these settings, if anything.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.min < 2 {
            return Err(format!(
                "aperture min {} is below 2: power of two choices needs two members to choose from",
                self.min
            ));
        }
        if self.max < self.min {
            return Err(format!(
                "aperture max {} is below its min {}",
                self.max, self.min
            ));
        }
        if !(self.low >= 0.0 && self.low < self.high && self.high.is_finite()) {
            return Err(format!(
                "aperture load band {}..{} is not a band: 0 <= low < high",
                self.low, self.high
            ));
        }
        if let Some((index, count)) = self.coordinate {
            if index >= count {
                return Err(format!(
                    "aperture coordinate {index} of {count}: the index counts from 0 and \
                     is below the count"
                ));
            }
        }
        Ok(())
    }
}

/// The window's next size: `size` members with `in_flight` calls in flight among them
/// all, at most `available` members able to take calls.
pub(crate) fn next_size(a: &Aperture, size: usize, in_flight: usize, available: usize) -> usize {
    let load = in_flight as f64 / size.max(1) as f64;
    let next = if load > a.high {
        size + 1
    } else if load < a.low {
        size.saturating_sub(1)
    } else {
        size
    };
    next.clamp(a.min, a.max.max(a.min))
        .min(available.max(a.min))
}

/// Of `candidates` (a rank and a member index each), the `size` of lowest rank, in
/// rank order; empty when they are `size` or fewer (the window would be all of them:
/// the whole pool is drawn from instead).
pub(crate) fn select(mut candidates: Vec<(u64, usize)>, size: usize) -> Vec<usize> {
    if candidates.len() <= size {
        return Vec::new();
    }
    candidates.select_nth_unstable(size);
    candidates.truncate(size);
    candidates.sort_unstable();
    candidates.into_iter().map(|(_, i)| i).collect()
}

/// Ranks of the pool's `members` (index, address, may be in the window) on the ring
/// of client `index` of `count`: the members in the order of their addresses, ranked
/// from `index / count` of the way round; those that may not be in the window are
/// left out after their places were counted (a member that fails moves the windows
/// after it by one place, not all of them).
pub(crate) fn ring(
    members: &[(usize, &str, bool)],
    index: usize,
    count: usize,
) -> Vec<(u64, usize)> {
    let mut order: Vec<&(usize, &str, bool)> = members.iter().collect();
    order.sort_unstable_by(|a, b| a.1.cmp(b.1));
    let n = order.len();
    let start = index * n / count.max(1);
    order
        .iter()
        .enumerate()
        .filter(|(_, m)| m.2)
        .map(|(p, m)| (((p + n - start) % n.max(1)) as u64, m.0))
        .collect()
}

/// One client's window over its pool.
pub(crate) struct Window {
    config: Aperture,
    /// The per-client key of the ranking hash.
    keys: std::hash::RandomState,
    /// Member indices; the first `len` are the window.
    slots: Box<[AtomicUsize]>,
    /// Members in the window; 0 or 1: the whole pool is drawn from.
    len: AtomicUsize,
    /// The size it is meant to have.
    size: AtomicUsize,
    /// Members able to take calls at the last choosing (what the window can grow to).
    available: AtomicUsize,
    /// Fewest members the window holds for its share of the ring
    /// ([`Aperture::coordinate`]; 0 without it).
    share: AtomicUsize,
    /// The pool or a member's health changed since the window was chosen.
    stale: AtomicBool,
    /// Chosen at least once: before, an empty window is no decision (not "the whole
    /// pool"), which a lazy aperture must not connect.
    chosen: AtomicBool,
    /// Held while choosing.
    choosing: Mutex<()>,
}

impl Window {
    /// An empty window (the whole pool, until the first pick chooses).
    pub fn new(config: Aperture) -> Window {
        Window {
            config,
            keys: std::hash::RandomState::new(),
            slots: (0..config.max).map(|_| AtomicUsize::new(0)).collect(),
            len: AtomicUsize::new(0),
            size: AtomicUsize::new(config.min),
            available: AtomicUsize::new(usize::MAX),
            share: AtomicUsize::new(0),
            stale: AtomicBool::new(true),
            chosen: AtomicBool::new(false),
            choosing: Mutex::new(()),
        }
    }

    /// Two distinct members of the window from the random `r`, or `None` when the
    /// whole pool is drawn from.
    pub fn draw(&self, r: u64) -> Option<(usize, usize)> {
        let k = self.len.load(Ordering::Acquire).min(self.slots.len());
        if k < 2 {
            return None;
        }
        let a = (r % k as u64) as usize;
        let b = (a + 1 + ((r >> 32) % (k as u64 - 1)) as usize) % k;
        let at = |j: usize| self.slots[j].load(Ordering::Relaxed);
        Some((at(a), at(b)))
    }

    /// The pool or a member's health changed: choose again at the next pick.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// Whether the pick numbered `tick` should call [`tend`](Self::tend).
    pub fn wants_tending(&self, tick: usize) -> bool {
        tick.is_multiple_of(CHECK_EVERY) || self.stale.load(Ordering::Relaxed)
    }

    /// The members of the window now (empty: the whole pool).
    pub fn members(&self) -> Vec<usize> {
        let k = self.len.load(Ordering::Acquire).min(self.slots.len());
        (0..k)
            .map(|j| self.slots[j].load(Ordering::Relaxed))
            .collect()
    }

    /// Whether it was chosen at least once (until then [`members`](Self::members) is
    /// empty without meaning the whole pool).
    pub fn is_chosen(&self) -> bool {
        self.chosen.load(Ordering::Acquire)
    }

    /// The settings it was made with.
    pub fn config(&self) -> &Aperture {
        &self.config
    }

    /// Resizes the window by its load (`in_flight(i)`: calls in flight at member `i`)
    /// and, when that or the pool changed, chooses its members again from `pool`
    /// (each member with its address and whether it may be in the window: able to
    /// take calls). Does nothing while another pick is at it. Returns whether it chose
    /// again (then [`members`](Self::members) may differ; empty: the whole pool).
    pub fn tend<'a, C>(&self, in_flight: impl Fn(usize) -> usize, pool: impl FnOnce() -> C) -> bool
    where
        C: Iterator<Item = (usize, &'a str, bool)>,
    {
        let Ok(_choosing) = self.choosing.try_lock() else {
            return false;
        };
        let k = self.len.load(Ordering::Acquire).min(self.slots.len());
        let busy: usize = self.slots[..k]
            .iter()
            .map(|i| in_flight(i.load(Ordering::Relaxed)))
            .sum();
        let size = self.size.load(Ordering::Relaxed);
        let stale = self.stale.swap(false, Ordering::Relaxed);
        let available = self.available.load(Ordering::Relaxed);
        let share = self.share.load(Ordering::Relaxed);
        let next = next_size(&self.config, k.max(size), busy, available).max(share);
        // Most lookings change nothing: no scan of the pool then.
        if next == size && !stale {
            return false;
        }
        let members: Vec<(usize, &str, bool)> = pool().collect();
        let ranked: Vec<(u64, usize)> = match self.config.coordinate {
            Some((index, count)) => {
                let share = members.len().div_ceil(count.max(1)).min(self.config.max);
                self.share.store(share, Ordering::Relaxed);
                ring(&members, index, count)
            }
            None => members
                .iter()
                .filter(|m| m.2)
                .map(|&(i, addr, _)| (self.keys.hash_one(addr), i))
                .collect(),
        };
        let next = next.max(self.share.load(Ordering::Relaxed));
        self.available.store(ranked.len(), Ordering::Relaxed);
        let next = next.min(ranked.len().max(self.config.min));
        self.size.store(next, Ordering::Relaxed);
        let chosen = select(ranked, next);
        for (slot, i) in self.slots.iter().zip(&chosen) {
            slot.store(*i, Ordering::Relaxed);
        }
        self.len.store(chosen.len(), Ordering::Release);
        self.chosen.store(true, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_grows_with_load_and_shrinks_without() {
        let a = Aperture::new();
        // 16 callers over 3: more than 4 each, one more member.
        assert_eq!(next_size(&a, 3, 16, 300), 4);
        assert_eq!(next_size(&a, 4, 16, 300), 4);
        // A quiet client: back to the minimum, never below.
        assert_eq!(next_size(&a, 8, 1, 300), 7);
        assert_eq!(next_size(&a, 3, 0, 300), 3);
        // Never more than can take calls, nor than the maximum.
        assert_eq!(next_size(&a, 5, 100, 5), 5);
        assert_eq!(next_size(&a.max(6), 6, 1000, 300), 6);
    }

    #[test]
    fn the_lowest_ranked_are_chosen_and_a_small_pool_is_drawn_whole() {
        let c = vec![(50, 0), (10, 1), (40, 2), (20, 3), (30, 4)];
        assert_eq!(select(c.clone(), 3), vec![1, 3, 4]);
        assert!(select(c.clone(), 5).is_empty());
        assert!(select(c, 9).is_empty());
    }

    #[test]
    fn a_member_leaving_moves_one_place() {
        let w = Window::new(Aperture::new());
        let addrs: Vec<String> = (0..50).map(|i| format!("tcp://10.0.0.{i}:5555")).collect();
        let all = || addrs.iter().enumerate().map(|(i, a)| (i, a.as_str(), true));
        assert!(!w.is_chosen() && w.members().is_empty());
        w.tend(|_| 0, all);
        assert!(w.is_chosen());
        let before = w.members();
        assert_eq!(before.len(), 3);
        // One of them can no longer take calls: one other member takes its place.
        let gone = before[1];
        w.mark_stale();
        w.tend(|_| 0, || all().map(|(i, a, _)| (i, a, i != gone)));
        let after = w.members();
        assert_eq!(after.len(), 3);
        assert!(!after.contains(&gone));
        let kept = before.iter().filter(|i| after.contains(i)).count();
        assert_eq!(kept, 2, "{before:?} -> {after:?}");
        // Draws are of the window, two distinct members.
        for r in 0..100u64 {
            let (a, b) = w.draw(r.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap();
            assert!(a != b && after.contains(&a) && after.contains(&b));
        }
    }

    #[test]
    fn load_grows_the_window_at_a_tending_and_a_small_pool_has_none() {
        let w = Window::new(Aperture::new());
        let addrs: Vec<String> = (0..50).map(|i| format!("tcp://10.0.0.{i}:5555")).collect();
        let all = || addrs.iter().enumerate().map(|(i, a)| (i, a.as_str(), true));
        w.tend(|_| 0, all);
        // Six calls in flight at each member: over the band.
        w.tend(|_| 6, all);
        assert_eq!(w.members().len(), 4);
        let few = || {
            addrs
                .iter()
                .take(3)
                .enumerate()
                .map(|(i, a)| (i, a.as_str(), true))
        };
        w.mark_stale();
        w.tend(|_| 0, few);
        assert!(w.members().is_empty());
        assert_eq!(w.draw(7), None);
    }

    /// The windows of `count` clients over `addrs`, each chosen once; `down`: members
    /// that may not be in a window.
    fn windows(addrs: &[String], count: usize, ring: bool, down: &[usize]) -> Vec<Vec<usize>> {
        (0..count)
            .map(|index| {
                let mut a = Aperture::new();
                if ring {
                    a = a.coordinate(index, count);
                }
                let w = Window::new(a);
                let pool = addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (i, a.as_str(), !down.contains(&i)));
                w.tend(|_| 0, || pool);
                w.members()
            })
            .collect()
    }

    /// How many windows each member is in.
    fn coverage(n: usize, windows: &[Vec<usize>]) -> Vec<usize> {
        let mut c = vec![0; n];
        for w in windows {
            for &i in w {
                c[i] += 1;
            }
        }
        c
    }

    #[test]
    fn coordinated_windows_lie_side_by_side_on_the_ring() {
        let addrs: Vec<String> = (0..30).map(|i| format!("tcp://10.0.0.{i}:5555")).collect();
        // Ten clients of a pool of thirty: windows of three, every member in one.
        let ten = windows(&addrs, 10, true, &[]);
        assert!(ten.iter().all(|w| w.len() == 3), "{ten:?}");
        assert_eq!(coverage(30, &ten), vec![1; 30]);
        // Ten clients ranking by their own hashes leave members out (and double up
        // others): what the ring is for.
        let hashed = windows(&addrs, 10, false, &[]);
        assert!(coverage(30, &hashed).contains(&0), "{hashed:?}");
        // Four clients: each window a quarter of the ring (8 of 30), every member in
        // one or two.
        let four = windows(&addrs, 4, true, &[]);
        assert!(four.iter().all(|w| w.len() == 8), "{four:?}");
        assert!(coverage(30, &four).iter().all(|c| (1..=2).contains(c)));
        // A member of one window fails: that window takes the next member of the
        // ring, the windows before it stay as they were.
        let gone = ten[4][1];
        let after = windows(&addrs, 10, true, &[gone]);
        assert!(!after[4].contains(&gone));
        assert_eq!(after[4].len(), 3);
        assert_eq!(after[4].iter().filter(|i| ten[4].contains(i)).count(), 2);
        assert_eq!(after[..4], ten[..4]);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        assert!(Aperture::new().check().is_ok());
        let e = Aperture::new().min(1).check().unwrap_err();
        assert!(e.contains("below 2"), "{e}");
        let e = Aperture::new().min(8).max(4).check().unwrap_err();
        assert!(e.contains("below its min"), "{e}");
        let e = Aperture::new().load(2.0, 1.0).check().unwrap_err();
        assert!(e.contains("not a band"), "{e}");
        let e = Aperture::new().coordinate(3, 3).check().unwrap_err();
        assert!(e.contains("coordinate 3 of 3"), "{e}");
        assert!(Aperture::new().coordinate(2, 3).check().is_ok());
    }
}
