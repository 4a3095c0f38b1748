//! The reply cache: a retried request id gets the first execution's reply, and an id
//! still running is not started again. Bounded in entries, in bytes and in age.
//!
//! Finished ids live in two generations, each a hash map from id to the place of its
//! reply in the generation's list: new replies go to the young one; when it holds half
//! of a bound (half the entries, half the bytes, or its first reply is half the age
//! old), the old generation ends and the young one becomes it. Nothing is evicted one
//! entry at a time: an eviction order and a look-up per eviction into a table of
//! 10,000 entries cost the server a cache miss or two per request. An
//! ended generation's map is emptied at once (its entries are plain values), its
//! replies (those not acknowledged) are let go of two at each look at the cache (a
//! request's start and its end), so that no request pays for thousands of them.
//! Every finished reply is kept for at least half of each bound and never beyond one.
//! Running ids are in a map of their own, as small as the requests running.

use std::time::{Duration, Instant};

use rpc_core::{IdMap, RequestId};

use crate::message::Outgoing;

/// What to do with an incoming request id.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<W> {
    /// First time seen: run it (the caller is recorded as a waiter).
    Run,
    /// Running now: the caller was added to its waiters; do not run it again.
    Joined,
    /// Finished: answer the caller (handed back) with these reply frames.
    Cached(Outgoing, W),
    /// Finished, and its caller has acknowledged the reply: this is a stale copy of
    /// a request whose call is over; it is neither run nor answered.
    Acked,
    /// Running or finished as another method: the id is reused (a client's bug, or a
    /// forgery); the request is refused, neither run nor answered from the cache.
    Conflict(W),
}

/// A finished id, in its generation's map: where its reply is in the generation's
/// list, or that the reply was acknowledged. Nothing to drop: a map of them is
/// emptied at once.
#[derive(Clone, Copy)]
enum Finished {
    /// Where its reply is, and the method's tag (see [`ReplyCache::begin_tagged`]).
    Done(u32, u32),
    /// The reply acknowledged by its client (let go of): the id is kept so that a
    /// stale copy of the request does not run again.
    Acked,
}

/// The callers waiting for one reply (the first without an allocation).
pub(crate) struct Waiters<W> {
    first: Option<W>,
    more: Vec<W>,
    /// The method's tag.
    tag: u32,
}

impl<W> Waiters<W> {
    fn none() -> Waiters<W> {
        Waiters {
            first: None,
            more: Vec::new(),
            tag: 0,
        }
    }
}

impl<W> IntoIterator for Waiters<W> {
    type Item = W;
    type IntoIter = std::iter::Chain<std::option::IntoIter<W>, std::vec::IntoIter<W>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.more)
    }
}

/// The finished ids of one generation.
#[derive(Default)]
struct Generation {
    map: IdMap<Finished>,
    /// Its replies in the order they were kept; `None` once acknowledged.
    replies: Vec<Option<Outgoing>>,
    /// Bytes of the replies held.
    bytes: usize,
    /// When it ages, from its first reply on (none while empty).
    ages: Option<Ages>,
}

/// The moments a generation ages at, reckoned once from its first reply (a comparison
/// per request instead of a time difference; `None`: never, for an age too long to
/// add to the clock).
#[derive(Clone, Copy)]
struct Ages {
    /// Half the cache's age after its first reply: the young generation turns old.
    turn: Option<Instant>,
    /// The whole age after it: the old generation ends.
    end: Option<Instant>,
}

impl Generation {
    /// The reply of a finished id of this generation (none once acknowledged).
    fn reply(&self, f: Finished) -> Option<&Outgoing> {
        match f {
            Finished::Done(i, _) => self.replies.get(i as usize)?.as_ref(),
            Finished::Acked => None,
        }
    }

    /// Lets go of the reply of `id` if it is here; returns whether the id is here.
    fn ack(&mut self, id: RequestId) -> bool {
        let Some(f) = self.map.get_mut(&id) else {
            return false;
        };
        if let Finished::Done(i, _) = *f {
            if let Some(r) = self.replies.get_mut(i as usize).and_then(Option::take) {
                self.bytes -= r.byte_len();
            }
            *f = Finished::Acked;
        }
        true
    }
}

/// Whether `now` is at or past `t` (never, for none).
fn reached(t: Option<Instant>, now: Instant) -> bool {
    t.is_some_and(|t| now >= t)
}

/// Replies of an ended generation let go of at each look at the cache (a request's
/// start and its end); 5,000 unacknowledged replies dropped at once held the cache's
/// lock ~0.4 ms.
const LET_GO_PER_LOOK: usize = 2;

/// Bounded reply cache keyed by request id. `W` is whatever identifies a caller waiting
/// for the reply (its envelope and connection).
pub(crate) struct ReplyCache<W> {
    running: IdMap<Waiters<W>>,
    young: Generation,
    old: Generation,
    /// The replies of the generation that ended last, let go of a few at each look
    /// (counted in the bytes held until then).
    ended: Vec<Option<Outgoing>>,
    ended_bytes: usize,
    max_entries: usize,
    max_age: Duration,
    max_bytes: usize,
}

impl<W> ReplyCache<W> {
    /// A cache of at most `max_entries` finished replies, each kept at most `max_age`,
    /// holding at most `max_bytes` of reply data (a larger single reply is not kept).
    pub fn new(max_entries: usize, max_age: Duration, max_bytes: usize) -> ReplyCache<W> {
        ReplyCache {
            running: IdMap::default(),
            young: Generation::default(),
            old: Generation::default(),
            ended: Vec::new(),
            ended_bytes: 0,
            max_entries,
            max_age,
            max_bytes,
        }
    }

    /// Looks `id` up for a request from `waiter` arriving at `now`.
    #[cfg(test)]
    pub fn begin(&mut self, id: RequestId, waiter: W, now: Instant) -> Lookup<W> {
        self.begin_tagged(id, 0, waiter, now)
    }

    /// Looks `id` up for a request of the method whose tag is `tag` (a hash of its
    /// name) from `waiter` arriving at `now`: an id running or finished as another
    /// method is a [`Lookup::Conflict`].
    pub fn begin_tagged(&mut self, id: RequestId, tag: u32, waiter: W, now: Instant) -> Lookup<W> {
        self.age(now);
        if let Some(w) = self.running.get_mut(&id) {
            if w.tag != tag {
                return Lookup::Conflict(waiter);
            }
            w.more.push(waiter);
            return Lookup::Joined;
        }
        let (young, old) = (&self.young, &self.old);
        let finished = match young.map.get(&id) {
            Some(f) => Some((*f, young)),
            None => old.map.get(&id).map(|f| (*f, old)),
        };
        match finished {
            Some((Finished::Done(_, t), _)) if t != tag => Lookup::Conflict(waiter),
            Some((f, g)) => match g.reply(f) {
                Some(reply) => Lookup::Cached(reply.clone(), waiter),
                None => Lookup::Acked,
            },
            None => {
                let waiters = Waiters {
                    first: Some(waiter),
                    more: Vec::new(),
                    tag,
                };
                self.running.insert(id, waiters);
                Lookup::Run
            }
        }
    }

    /// Records the reply of `id`; returns the callers waiting for it, and the reply to
    /// send them: the kept one, or the reply given back when it is not kept.
    pub fn finish(
        &mut self,
        id: RequestId,
        reply: Outgoing,
        now: Instant,
    ) -> (Waiters<W>, Result<&Outgoing, Outgoing>) {
        let waiters = self.running.remove(&id).unwrap_or_else(Waiters::none);
        let tag = waiters.tag;
        self.age(now);
        let size = reply.byte_len();
        if self.max_entries == 0 || size > self.max_bytes {
            return (waiters, Err(reply));
        }
        let young = &self.young;
        let full = young.map.len() >= (self.max_entries / 2).max(1)
            || (young.bytes > 0 && young.bytes + size > self.max_bytes / 2);
        if full {
            self.turn();
        }
        let (y, o) = (&self.young, &self.old);
        if y.map.len() + o.map.len() + 1 > self.max_entries
            || y.bytes + o.bytes + size > self.max_bytes
        {
            self.end_old();
        }
        // Replies of an ended generation count until let go of: at once when the
        // bytes allow no more.
        if self.bytes() + size > self.max_bytes {
            self.let_go_all();
        }
        let young = &mut self.young;
        let Ok(i) = u32::try_from(young.replies.len()) else {
            return (waiters, Err(reply));
        };
        young.bytes += size;
        let max_age = self.max_age;
        young.ages.get_or_insert_with(|| Ages {
            turn: now.checked_add(max_age / 2),
            end: now.checked_add(max_age),
        });
        // An id runs once: it is in no generation yet.
        young.map.insert(id, Finished::Done(i, tag));
        young.replies.push(Some(reply));
        let Some(Some(kept)) = young.replies.last() else {
            unreachable!("just stored")
        };
        (waiters, Ok(kept))
    }

    /// The client of `id` has its reply: the reply is let go of (its bytes leave the
    /// count at once), the id stays until its generation ends. Unknown or running ids
    /// are left alone.
    pub fn ack(&mut self, id: RequestId) {
        let _ = self.young.ack(id) || self.old.ack(id);
    }

    /// Forgets a running id that will not run after all (refused for overload);
    /// returns its waiters.
    pub fn abandon(&mut self, id: RequestId) -> Waiters<W> {
        self.running.remove(&id).unwrap_or_else(Waiters::none)
    }

    /// Ends the generations past their age: the young one at half the age (so that
    /// each reply is kept at least half of it), the old one at the whole. Lets go of
    /// a few replies of the generation that ended last.
    fn age(&mut self, now: Instant) {
        if self.young.ages.is_some_and(|a| reached(a.turn, now)) {
            self.turn();
        }
        if self.old.ages.is_some_and(|a| reached(a.end, now)) {
            self.end_old();
        }
        for _ in 0..LET_GO_PER_LOOK {
            match self.ended.pop() {
                Some(r) => self.ended_bytes -= r.map_or(0, |r| r.byte_len()),
                None => break,
            }
        }
    }

    /// The old generation ends; the young one becomes it.
    fn turn(&mut self) {
        self.end_old();
        std::mem::swap(&mut self.young, &mut self.old);
    }

    /// The old generation ends: its ids are forgotten at once, its replies are let
    /// go of a few at each look (what is left of the generation before goes now). Its
    /// memory is kept for the next generation.
    fn end_old(&mut self) {
        self.let_go_all();
        let old = &mut self.old;
        std::mem::swap(&mut old.replies, &mut self.ended);
        self.ended_bytes = old.bytes;
        old.map.clear();
        old.bytes = 0;
        old.ages = None;
    }

    /// Lets go at once of the replies of the generation that ended last.
    fn let_go_all(&mut self) {
        self.ended.clear();
        self.ended_bytes = 0;
    }

    /// Bytes of finished replies held.
    pub fn bytes(&self) -> usize {
        self.young.bytes + self.old.bytes + self.ended_bytes
    }

    /// Finished replies held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.map.len() + self.old.map.len()
    }

    /// Panics unless the byte counts and the bounds agree with the entries, every
    /// finished id's reply is in its generation's list, and an id is in one place at
    /// most.
    #[cfg(test)]
    fn check(&self) {
        let sum = |list: &[Option<Outgoing>]| -> usize {
            list.iter().flatten().map(Outgoing::byte_len).sum()
        };
        for g in [&self.young, &self.old] {
            assert_eq!(sum(&g.replies), g.bytes, "byte count");
            assert_eq!(g.map.is_empty(), g.ages.is_none(), "start of a generation");
            let mut listed = 0;
            for f in g.map.values() {
                if let Finished::Done(i, _) = f {
                    assert!(g.replies[*i as usize].is_some(), "a reply let go of early");
                    listed += 1;
                }
            }
            assert_eq!(
                listed,
                g.replies.iter().flatten().count(),
                "replies not listed"
            );
        }
        assert_eq!(sum(&self.ended), self.ended_bytes, "bytes of the ended one");
        for id in self.young.map.keys() {
            assert!(!self.old.map.contains_key(id), "in both generations");
        }
        for id in self.running.keys() {
            assert!(
                !self.young.map.contains_key(id) && !self.old.map.contains_key(id),
                "running and finished"
            );
        }
        assert!(
            self.bytes() <= self.max_bytes,
            "{} bytes held",
            self.bytes()
        );
        assert!(
            self.len() <= self.max_entries,
            "{} entries held",
            self.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn all<W>(w: Waiters<W>) -> Vec<W> {
        w.into_iter().collect()
    }

    fn out(frames: Vec<Bytes>) -> Outgoing {
        Outgoing { frames, joined: 1 }
    }

    fn env(n: u8) -> Vec<Bytes> {
        vec![Bytes::from(vec![n]), Bytes::new()]
    }

    #[test]
    fn an_id_reused_with_another_method_conflicts_running_or_finished() {
        let t0 = Instant::now();
        let mut c: ReplyCache<u8> = ReplyCache::new(10, Duration::from_secs(60), 1 << 20);
        let id = RequestId::new();
        assert_eq!(c.begin_tagged(id, 1, 10, t0), Lookup::Run);
        assert_eq!(
            c.begin_tagged(id, 2, 11, t0),
            Lookup::Conflict(11),
            "running"
        );
        assert_eq!(c.begin_tagged(id, 1, 12, t0), Lookup::Joined);
        let (waiters, kept) = c.finish(id, out(vec![Bytes::from_static(b"r")]), t0);
        assert!(kept.is_ok());
        assert_eq!(all(waiters), [10, 12]);
        assert_eq!(
            c.begin_tagged(id, 2, 13, t0),
            Lookup::Conflict(13),
            "finished"
        );
        assert!(matches!(
            c.begin_tagged(id, 1, 14, t0),
            Lookup::Cached(_, 14)
        ));
    }

    #[test]
    fn runs_once_and_answers_repeats_from_cache() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(10, Duration::from_secs(60), 1 << 20);
        let id = RequestId::new();
        assert_eq!(c.begin(id, env(1), t0), Lookup::Run);
        assert_eq!(c.begin(id, env(2), t0), Lookup::Joined);
        let reply = out(vec![Bytes::from_static(b"h"), Bytes::from_static(b"b")]);
        let (waiters, sent) = c.finish(id, reply.clone(), t0);
        assert_eq!(sent, Ok(&reply), "the kept reply is the one to send");
        assert_eq!(all(waiters), vec![env(1), env(2)]);
        assert_eq!(c.begin(id, env(3), t0), Lookup::Cached(reply, env(3)));
    }

    #[test]
    fn bounded_in_entries_and_age() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(4, Duration::from_secs(10), 1 << 20);
        let ids: Vec<RequestId> = (0..5).map(|_| RequestId::new()).collect();
        for id in &ids {
            assert_eq!(c.begin(*id, env(0), t0), Lookup::Run);
            assert!(c.finish(*id, out(vec![]), t0).1.is_ok(), "kept");
            c.check();
        }
        // Generations of two: the first two went with theirs.
        assert_eq!(c.len(), 3);
        for id in &ids[2..] {
            assert!(matches!(c.begin(*id, env(0), t0), Lookup::Cached(..)));
        }
        assert_eq!(c.begin(ids[0], env(0), t0), Lookup::Run, "oldest evicted");
        // At half the age the young generation (ids[4], from t0) turns old, ending the
        // one before it; at the whole age it ends too.
        let half = t0 + Duration::from_secs(5);
        assert!(matches!(
            c.begin(ids[2], env(0), half - Duration::from_millis(1)),
            Lookup::Cached(..)
        ));
        assert_eq!(
            c.begin(ids[2], env(0), half),
            Lookup::Run,
            "older generation ended"
        );
        assert!(matches!(c.begin(ids[4], env(0), half), Lookup::Cached(..)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(c.begin(ids[4], env(0), later), Lookup::Run, "expired");
        c.check();
    }

    #[test]
    fn an_age_too_long_for_the_clock_never_ends_a_generation() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(10, Duration::MAX, 1 << 20);
        let id = RequestId::new();
        assert_eq!(c.begin(id, env(0), t0), Lookup::Run);
        assert!(c.finish(id, out(vec![]), t0).1.is_ok());
        let later = t0 + Duration::from_secs(365 * 24 * 3600);
        assert!(matches!(c.begin(id, env(0), later), Lookup::Cached(..)));
        c.check();
    }

    #[test]
    fn an_ended_generation_is_let_go_of_a_few_replies_per_request() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(10, Duration::from_secs(60), 1 << 20);
        let reply = || out(vec![Bytes::from(vec![7u8; 100])]);
        let ids: Vec<RequestId> = (0..11).map(|_| RequestId::new()).collect();
        for id in &ids {
            c.begin(*id, env(0), t0);
            assert!(c.finish(*id, reply(), t0).1.is_ok());
            c.check();
        }
        // The eleventh reply ended the generation of the first five: their ids are
        // gone, their bytes still held until let go of, two at each look.
        assert_eq!((c.len(), c.ended.len(), c.bytes()), (6, 5, 1100));
        assert_eq!(c.begin(ids[0], env(0), t0), Lookup::Run);
        assert_eq!((c.ended.len(), c.bytes()), (3, 900));
        c.begin(RequestId::new(), env(0), t0);
        c.begin(RequestId::new(), env(0), t0);
        assert_eq!((c.ended.len(), c.bytes()), (0, 600));
        c.check();
    }

    #[test]
    fn the_newest_half_of_the_bound_is_always_kept() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(10, Duration::from_secs(60), 1 << 20);
        let ids: Vec<RequestId> = (0..100).map(|_| RequestId::new()).collect();
        for (n, id) in ids.iter().enumerate() {
            assert_eq!(c.begin(*id, env(0), t0), Lookup::Run);
            assert!(c.finish(*id, out(vec![]), t0).1.is_ok());
            c.check();
            for recent in &ids[n.saturating_sub(4)..=n] {
                assert!(
                    matches!(c.begin(*recent, env(0), t0), Lookup::Cached(..)),
                    "one of the five newest replies was let go of after {n}"
                );
            }
        }
        assert_eq!(c.begin(ids[89], env(0), t0), Lookup::Run, "older than ten");
    }

    #[test]
    fn bounded_in_bytes() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(100, Duration::from_secs(10), 1000);
        let big = |n: usize| out(vec![Bytes::from(vec![0u8; n])]);
        let ids: Vec<RequestId> = (0..4).map(|_| RequestId::new()).collect();
        for id in &ids[..3] {
            c.begin(*id, env(0), t0);
            assert!(c.finish(*id, big(400), t0).1.is_ok(), "kept");
        }
        assert_eq!(
            (c.len(), c.bytes()),
            (2, 800),
            "oldest evicted to stay under 1000 bytes"
        );
        c.begin(ids[3], env(0), t0);
        let (waiters, sent) = c.finish(ids[3], big(5000), t0);
        assert_eq!(sent, Err(big(5000)), "not kept: given back to be sent");
        assert_eq!(all(waiters), vec![env(0)]);
        assert_eq!(c.bytes(), 800, "a reply larger than the bound is not kept");
        assert_eq!(c.begin(ids[3], env(0), t0), Lookup::Run);
    }

    #[test]
    fn an_acknowledged_reply_is_let_go_of_but_its_id_never_runs_again() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(2, Duration::from_secs(10), 1 << 20);
        let id = RequestId::new();
        c.begin(id, env(1), t0);
        let reply = out(vec![Bytes::from(vec![1u8; 300])]);
        assert!(c.finish(id, reply, t0).1.is_ok());
        assert_eq!(c.bytes(), 300);
        c.ack(id);
        assert_eq!((c.len(), c.bytes()), (1, 0), "bytes freed, id kept");
        assert_eq!(
            c.begin(id, env(2), t0),
            Lookup::Acked,
            "not run, not answered"
        );
        // Acks of unknown or running ids change nothing.
        let running = RequestId::new();
        assert_eq!(c.begin(running, env(3), t0), Lookup::Run);
        c.ack(running);
        c.ack(RequestId::new());
        assert_eq!(c.begin(running, env(4), t0), Lookup::Joined);
        let (waiters, _) = c.finish(running, out(vec![]), t0);
        assert_eq!(all(waiters), vec![env(3), env(4)]);
        // Acknowledged ids are evicted like the others (bounded in entries).
        let third = RequestId::new();
        c.begin(third, env(5), t0);
        assert!(c.finish(third, out(vec![]), t0).1.is_ok());
        assert_eq!(c.len(), 2);
        assert_eq!(c.begin(id, env(6), t0), Lookup::Run, "oldest evicted");
    }

    /// What the cache may say about an id, by the operations made on it.
    #[derive(Clone, Debug, PartialEq)]
    enum Model {
        Absent,
        Running(Vec<u32>),
        Done(Outgoing),
        Acked,
    }

    #[test]
    fn random_operations_agree_with_a_model_of_the_cache() {
        // Twelve ids, small bounds, time moving by random steps: eviction happens
        // often. The model knows everything but eviction, so the cache may only differ
        // by having let go of a finished id (never of a running one).
        let mut rng = crate::socket::SplitMix64::new(0x5eed_dedc);
        let mut below = move |n: u64| rng.below(n);
        let ids: Vec<RequestId> = (0..12).map(|_| RequestId::new()).collect();
        let mut model = vec![Model::Absent; ids.len()];
        let mut c: ReplyCache<u32> = ReplyCache::new(5, Duration::from_millis(50), 2000);
        let mut now = Instant::now();
        let mut next_waiter = 0u32;
        let (mut runs, mut cached, mut evicted) = (0, 0, 0);
        for step in 0..20_000 {
            now += Duration::from_millis(below(4));
            let k = below(ids.len() as u64) as usize;
            let id = ids[k];
            match below(4) {
                0 | 1 => {
                    next_waiter += 1;
                    let got = c.begin(id, next_waiter, now);
                    model[k] = match (&model[k], got) {
                        (Model::Running(w), Lookup::Joined) => {
                            let mut w = w.clone();
                            w.push(next_waiter);
                            Model::Running(w)
                        }
                        (Model::Done(r), Lookup::Cached(got, w)) => {
                            assert_eq!((&got, w), (r, next_waiter), "step {step}");
                            cached += 1;
                            Model::Done(r.clone())
                        }
                        (Model::Acked, Lookup::Acked) => Model::Acked,
                        (m, Lookup::Run) => {
                            assert!(
                                !matches!(m, Model::Running(_)),
                                "step {step}: a running id ran again"
                            );
                            evicted += usize::from(*m != Model::Absent);
                            runs += 1;
                            Model::Running(vec![next_waiter])
                        }
                        (m, got) => panic!("step {step}: {m:?} answered {got:?}"),
                    };
                }
                2 => {
                    if let Model::Running(w) = &model[k] {
                        let size = below(900) as usize;
                        let reply = out(vec![Bytes::from(vec![k as u8; size])]);
                        let (waiters, kept) = c.finish(id, reply.clone(), now);
                        assert_eq!(all(waiters), *w, "step {step}: waiters");
                        model[k] = match kept {
                            Ok(r) => {
                                assert_eq!(*r, reply);
                                Model::Done(reply)
                            }
                            Err(r) => {
                                assert_eq!(r, reply);
                                Model::Absent
                            }
                        };
                    } else if below(8) == 0 {
                        c.ack(id);
                        if matches!(model[k], Model::Done(_)) {
                            model[k] = Model::Acked;
                        }
                    }
                }
                _ => {
                    if matches!(model[k], Model::Running(_)) && below(4) == 0 {
                        let Model::Running(w) = std::mem::replace(&mut model[k], Model::Absent)
                        else {
                            unreachable!()
                        };
                        assert_eq!(all(c.abandon(id)), w, "step {step}: abandoned");
                    } else {
                        c.ack(id);
                        if matches!(model[k], Model::Done(_)) {
                            model[k] = Model::Acked;
                        }
                    }
                }
            }
            c.check();
        }
        // Every way was taken, many times.
        assert!(
            runs > 1000 && cached > 1000 && evicted > 500,
            "{runs} {cached} {evicted}"
        );
    }

    #[test]
    fn abandoned_ids_can_run_later() {
        let t0 = Instant::now();
        let mut c = ReplyCache::new(3, Duration::from_secs(10), 1 << 20);
        let id = RequestId::new();
        assert_eq!(c.begin(id, env(1), t0), Lookup::Run);
        assert_eq!(all(c.abandon(id)), vec![env(1)]);
        assert_eq!(c.begin(id, env(1), t0), Lookup::Run);
    }
}
